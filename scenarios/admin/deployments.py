"""Deployments: progress by outcome, per-entity results, Retry failed entities and Roll back deployment."""

from __future__ import annotations

import contextlib
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from actions.models import ActionStatus, ActionType
from actions.services.rollback_preview import rollback_deadline_text, rollback_preview
from budgetradar.admin_base import (
    BLUE,
    DATE_FILTER,
    EMPTY,
    GREY,
    RED,
    ReadOnlyAdminMixin,
    TenantScopedHistoryAdmin,
    admin_link,
    badge,
    confirmation_close,
    confirmation_get,
    confirmation_open,
    denied,
    format_money,
)
from budgetradar.errors import DomainError
from budgetradar.words import error_label
from observability.selectors import watch_status_for_deployment
from safety.gate import actions_preflight_preview, latest_preflight, preflights_prefetch
from scenarios.admin.presentation import (
    ACTIVE_DEPLOYMENT,
    DEPLOYMENT_TONES,
    FIELD_LABELS,
    REFRESH_SECONDS,
    RESULT_TONES,
    RESULTS_PAGE_SIZE,
    TARGET_FIELDS,
    deployment_counts,
    page_number,
    person_name,
    progress_segments,
)
from scenarios.models import (
    Deployment,
    DeploymentResult,
    PreflightRun,
)
from scenarios.services.deploy import deployment_retry_failed, deployment_rollback

# Deployments ---------------------------------------------------------------------------------------


def _state_text(values: dict | None, currency: str) -> dict[str, str]:
    values = values or {}
    return {
        field: (format_money(values[field], currency) if field != "status" else str(values[field]))
        for field in TARGET_FIELDS
        if values.get(field) not in (None, "")
    }


def result_row(result: DeploymentResult) -> dict[str, Any]:
    """One entity's result: ``Daily budget: 100.00 EUR → 150.00 EUR`` for the fields that differ."""
    entity = result.entity
    currency = entity.connection.currency
    before, after = _state_text(result.before, currency), _state_text(result.after, currency)
    changes = [
        (FIELD_LABELS[field], before.get(field, EMPTY), after.get(field, EMPTY))
        for field in TARGET_FIELDS
        if before.get(field) != after.get(field)
    ]
    return {
        "result": result,
        "entity": entity,
        "status": badge(result.get_status_display(), RESULT_TONES.get(result.status, GREY)),
        "changes": changes,
        "retryable": {True: "yes", False: "no"}.get(result.retryable, EMPTY),
        "action_type": ActionType(result.action_type).label if result.action_type in ActionType.values else EMPTY,
        "error": error_label(result.error_code) if result.error_code else "",
    }


class RetryForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput)


class DeploymentRollbackForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput)
    reason = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Recorded in each action's history and execution log.",
    )


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdminMixin, TenantScopedHistoryAdmin):
    """Dry runs and live pushes: per-entity results, progress, retry and roll back."""

    list_display = ["number", "mode_badge", "status_badge", "scenario", "counts", "requested_by", "created_at"]
    list_display_links = ["number"]
    list_select_related = ["scenario", "requested_by"]
    list_filter = ["mode", "status", "scenario", "requested_by", DATE_FILTER]
    search_fields = ["=id", "scenario__name", "idempotency_key", "preflight__run_id"]
    search_help_text = "Search by deployment id, scenario name, idempotency key or preflight run id."
    fields = [
        "mode_badge",
        "status_badge",
        "scenario_link",
        "preflight_link",
        "override_link",
        "retry_of_link",
        "requester",
        "idempotency_key",
        "created_at",
        "prepared_at",
        "started_at",
        "finished_at",
    ]
    readonly_fields = fields

    @admin.display(description="#", ordering="id")
    def number(self, deployment: Deployment) -> str:
        return f"#{deployment.pk}"

    @admin.display(description="Mode", ordering="mode")
    def mode_badge(self, deployment: Deployment):
        return badge(deployment.get_mode_display(), RED if deployment.mode == Deployment.Mode.LIVE else BLUE)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, deployment: Deployment):
        return badge(deployment.get_status_display(), DEPLOYMENT_TONES.get(deployment.status, GREY))

    @admin.display(description="Results")
    def counts(self, deployment: Deployment) -> str:
        return deployment_counts(deployment)

    @admin.display(description="Scenario")
    def scenario_link(self, deployment: Deployment):
        return admin_link(deployment.scenario)

    @admin.display(description="Preflight")
    def preflight_link(self, deployment: Deployment):
        return admin_link(deployment.preflight, deployment.preflight.run_id)

    @admin.display(description="Override")
    def override_link(self, deployment: Deployment):
        override = deployment.override
        if override is None:
            return EMPTY
        return format_html(
            "{} by {}, approved by {}",
            admin_link(override, override.reason),
            override.requested_by,
            override.approved_by,
        )

    @admin.display(description="Requested by")
    def requester(self, deployment: Deployment) -> str:
        return person_name(deployment.requested_by)

    @admin.display(description="Retry of")
    def retry_of_link(self, deployment: Deployment):
        return admin_link(deployment.retry_of)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/retry/", view(self.retry_view), name="scenarios_deployment_retry"),
            path("<path:object_id>/rollback/", view(self.rollback_view), name="scenarios_deployment_rollback"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        deployment = self.get_object(request, object_id)
        preparing = deployment.prepared_at is None and deployment.status in ACTIVE_DEPLOYMENT
        results = deployment.results.select_related("entity__connection", "action").order_by("id")
        page = Paginator(results, RESULTS_PAGE_SIZE).get_page(page_number(request, "results_page"))
        settled = deployment.total - deployment.pending
        rolling_back = deployment.actions.filter(status=ActionStatus.ROLLING_BACK).count()
        extra_context = {
            **(extra_context or {}),
            "deployment": deployment,
            "results": [result_row(r) for r in page.object_list],
            "results_page": page,
            "active": deployment.status in ACTIVE_DEPLOYMENT or bool(rolling_back),
            "rolling_back": rolling_back,
            "preparing": preparing,
            "preparing_text": _preparing_text(deployment) if preparing else "",
            "refresh_seconds": REFRESH_SECONDS,
            "settled": settled,
            "progress": round(100 * settled / deployment.total) if deployment.total else 100,
            "segments": progress_segments(deployment),
            "buttons": self._buttons(request, deployment),
            "watches": watch_status_for_deployment(deployment),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _buttons(self, request: HttpRequest, deployment: Deployment) -> list[dict[str, str]]:
        buttons = []
        retryable = deployment.mode == Deployment.Mode.LIVE and (deployment.failed or deployment.stale)
        if request.user.has_perm("scenarios.deploy_live") and deployment.scenario_id and retryable:
            buttons.append({"name": "retry", "label": "Retry failed entities", "url": self._url("retry", deployment)})
        if (
            request.user.has_perm("scenarios.rollback_deployment")
            and deployment.mode == Deployment.Mode.LIVE
            and _rollbackable(deployment).exists()
        ):
            buttons.append(
                {"name": "rollback", "label": "Roll back deployment", "url": self._url("rollback", deployment)}
            )
        return buttons

    def _url(self, name: str, deployment: Deployment) -> str:
        return reverse(f"admin:scenarios_deployment_{name}", args=[deployment.pk])

    def _deployment_for(self, request: HttpRequest, object_id: str, perm: str) -> Deployment:
        deployment = self.get_object(request, object_id)
        if not request.user.has_perm(perm):
            raise denied(request.user, perm)
        return deployment

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the failed and stale entities that a new deployment would retry. POST: do it once."""
        deployment = self._deployment_for(request, object_id, "scenarios.deploy_live")
        if request.method == "POST":
            form = RetryForm(request.POST)
            pending = confirmation_get(request, request.POST.get("token", "")) if form.is_valid() else None
            if pending is None or pending.get("deployment") != deployment.pk:
                messages.warning(request, "That confirmation has expired; nothing was retried. Open it again.")
                return HttpResponseRedirect(self._url("change", deployment))
            if pending["result"] is not None:  # a second submit shows the first outcome
                return HttpResponseRedirect(reverse("admin:scenarios_deployment_change", args=[pending["result"]]))
            try:
                retry = deployment_retry_failed(deployment=deployment, actor=request.user)
            except DomainError as exc:
                messages.error(request, f"Deployment #{deployment.pk} was not retried: {exc.message}")
                return HttpResponseRedirect(self._url("change", deployment))
            confirmation_close(request, form.cleaned_data["token"], retry.pk)
            worker = (
                " A worker reads their live values first; this page follows its progress."
                if not retry.prepared_at
                else ""
            )
            messages.success(
                request, f"Deployment #{retry.pk} retries the failed entities of #{deployment.pk}.{worker}"
            )
            return HttpResponseRedirect(self._url("change", retry))
        failed = deployment.results.filter(
            status__in=[DeploymentResult.Status.FAILED, DeploymentResult.Status.STALE]
        ).select_related("entity__connection", "action")
        token = confirmation_open(request, {"operation": "retry", "deployment": deployment.pk})
        context = self._confirm_context(request, deployment, "Retry the failed entities of")
        context.update(
            rows=[result_row(r) for r in failed],
            form=RetryForm(initial={"token": token}),
            consequence="A new preflight reads these entities' live values now; a new live deployment of just them "
            "is created (with its own idempotency key) and handed to the engine. Entities that succeeded are "
            "not touched again. Guardrails apply to the new preflight.",
            submit="Yes, retry these entities",
        )
        return TemplateResponse(request, "admin/scenarios/deployment/confirm.html", context)

    def rollback_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the succeeded actions that would go back to their before-values. POST: do it."""
        deployment = self._deployment_for(request, object_id, "scenarios.rollback_deployment")
        if request.method == "POST":
            form = DeploymentRollbackForm(request.POST)
            pending = confirmation_get(request, request.POST.get("token", "")) if form.is_valid() else None
            if pending is None or pending.get("deployment") != deployment.pk:
                messages.warning(request, "That confirmation has expired; nothing was rolled back. Open it again.")
                return HttpResponseRedirect(self._url("change", deployment))
            if pending["result"] is None:
                try:
                    deployment_rollback(deployment=deployment, actor=request.user, reason=form.cleaned_data["reason"])
                except DomainError as exc:
                    messages.error(request, f"Deployment #{deployment.pk} was not rolled back: {exc.message}")
                    return HttpResponseRedirect(self._url("change", deployment))
                confirmation_close(request, form.cleaned_data["token"], deployment.pk)
                messages.success(
                    request, f"Rollback of deployment #{deployment.pk} queued; the workers restore the before-values."
                )
            return HttpResponseRedirect(self._url("change", deployment))
        actions = _live_rollback_previews(deployment, request.user)
        token = confirmation_open(request, {"operation": "rollback", "deployment": deployment.pk})
        context = self._confirm_context(request, deployment, "Roll back")
        context.update(
            action_rows=[_rollback_row(a, run) for a, run in actions],
            form=DeploymentRollbackForm(initial={"token": token}),
            consequence="Each succeeded action goes back to the value its entity had before the deployment. A "
            "worker reads each entity first: one changed since the deployment is not overwritten (its rollback "
            "fails with the reason; an admin may override drift on the action's own page). Rollback instructions "
            f"are valid for {settings.ROLLBACK_VALID_HOURS} hours after execution.",
            submit="Yes, roll back the deployment",
        )
        return TemplateResponse(request, "admin/scenarios/deployment/confirm.html", context)

    def _confirm_context(self, request: HttpRequest, deployment: Deployment, verb: str) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{verb} deployment #{deployment.pk}?",
            "deployment": deployment,
            "back_url": self._url("change", deployment),
        }


def _preparing_text(deployment: Deployment) -> str:
    """What the worker of a deployment waiting for it is doing: reading the live values
    (a large dry run or retry has its preflight run by the worker), validating on the
    platforms (dry run), or creating the actions and per-entity results (live)."""
    preflight = deployment.preflight
    dry_run = deployment.mode == Deployment.Mode.DRY_RUN
    if preflight.status in (PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING):
        return format_html(
            "A worker is reading the live values of this {}'s entities ({} of {} read), then {}",
            "dry run" if dry_run else "deployment",
            preflight.entities_read,
            preflight.entities_total,
            "the platforms' validate-only calls" if dry_run else "its actions and per-entity results",
        )
    changed = int(((preflight.payload or {}).get("summary") or {}).get("changed", 0))
    if dry_run:
        return format_html("A worker is asking the platforms to validate this dry run's changes ({} changed)", changed)
    return format_html(
        "A worker is creating this deployment's actions and per-entity results ({} changed entities)", changed
    )


def _rollbackable(deployment: Deployment) -> QuerySet:
    return deployment.actions.filter(
        status__in=[ActionStatus.SUCCEEDED, ActionStatus.PARTIALLY_EXECUTED], rollback_deadline__gte=timezone.now()
    ).exclude(rollback_params=None)


def _live_rollback_previews(deployment: Deployment, user) -> list[tuple[Any, Any]]:
    """The deployment's rollbackable actions, each with the preview of the gate's rollback
    preflight that read its live value (outside any transaction; one read per connection,
    fresh stored runs reused, nothing stored: the page is a GET), so the confirmation shows
    "live now" and any drift before anyone confirms."""

    actions = list(
        _rollbackable(deployment).select_related("entity", "connection").prefetch_related(preflights_prefetch())
    )
    runs = {}
    with contextlib.suppress(DomainError):  # refused: rows say "last known"; the worker still reads first
        runs = actions_preflight_preview(actions=actions, actor=user, rollback=True)
    return [(a, runs.get(a.pk) or latest_preflight(a)) for a in actions]


def _rollback_row(action, run) -> dict[str, Any]:

    preview = rollback_preview(action, run)
    return {
        "action": action,
        "change": preview.change_text(),
        "deadline": rollback_deadline_text(action),
        "warning": preview.drift_warning(),
    }
