"""Admin for recommendations, actions, jobs and the execution log.

Approve, reject, cancel, execute and roll back are offered as object buttons and bulk
actions. Each goes to a confirmation page that lists exactly what will happen to every
selected action — done or skipped, and why — and only its POST calls the services
(never the FSM transition: django-fsm-2's admin buttons do not re-check permissions). The
confirmation is single-use and answered with a redirect, so a double click or a reload
cannot apply anything twice. Nothing here is editable directly: actions change only
through services, and the execution log is evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.views.decorators.http import require_POST
from django_fsm import can_proceed

from actions.changes import ParamsError, target_values
from actions.models import (
    IN_MOTION,
    Action,
    ActionExecutionLog,
    ActionJob,
    ActionStatus,
    JobStatus,
    LogEvent,
    Recommendation,
)
from actions.selectors import (
    TIMELINE_ORDER,
    action_status_phrase,
    action_wait_state,
    actions_needing_attention,
    log_request_id,
    log_wait_text,
)
from actions.services.execution import ALREADY_UNDERWAY, action_execute_request
from actions.services.lifecycle import BulkResult, action_approve, action_cancel, action_reject, actions_apply_bulk
from actions.services.recommendation_params import PARAM_VALUE_NAMES, params_from_values
from actions.services.recommendations import RecommendationInput, recommendations_create
from actions.services.rollback import action_rollback_request
from actions.services.rollback_preview import FIELD_LABELS, rollback_deadline_text, rollback_preview
from actions.services.rollback_preview import show_value as _show
from actions.services.verification import same_value
from budgetradar.admin_base import (
    AMBER,
    BLUE,
    DATE_FILTER,
    EMPTY,
    GREEN,
    GREY,
    RED,
    ReadOnlyAdminMixin,
    TenantOwnedForm,
    TenantScopedAdmin,
    TenantScopedHistoryAdmin,
    admin_link,
    badge,
    confirmation_close,
    confirmation_get,
    confirmation_open,
    denied,
    pretty_json,
)
from budgetradar.entitlements import month_start
from budgetradar.errors import DomainError, InvalidState
from budgetradar.models import Tenant
from budgetradar.timefmt import format_time
from budgetradar.words import actor_display, error_label
from platforms.models import PlatformConnection, PlatformEntity
from platforms.types import Field
from safety.gate import (
    action_preflight_request,
    actions_preflight,
    gate_recommendation,
    latest_preflight,
    preflight_summary,
    preflights_prefetch,
)
from safety.overrides import action_override_request, override_approve
from safety.schedule import when_it_runs
from scenarios.models import GuardrailOverride, PreflightRun
from scenarios.services.guardrails import CRITICAL, policies_for

STATUS_TONES = {
    ActionStatus.PENDING_APPROVAL: AMBER,
    ActionStatus.APPROVED: BLUE,
    ActionStatus.REJECTED: GREY,
    ActionStatus.CANCELLED: GREY,
    ActionStatus.QUEUED: BLUE,
    ActionStatus.EXECUTING: BLUE,
    ActionStatus.SUCCEEDED: GREEN,
    ActionStatus.FAILED: RED,
    ActionStatus.PARTIALLY_EXECUTED: RED,
    ActionStatus.ROLLING_BACK: AMBER,
    ActionStatus.ROLLED_BACK: GREY,
    ActionStatus.ROLLBACK_FAILED: RED,
}
JOB_TONES = {
    JobStatus.QUEUED: BLUE,
    JobStatus.RUNNING: BLUE,
    JobStatus.SUCCEEDED: GREEN,
    JobStatus.PARTIALLY_SUCCEEDED: AMBER,
    JobStatus.FAILED: RED,
    JobStatus.CANCELLED: GREY,
}
EVENT_TONES = {
    LogEvent.SUCCEEDED: GREEN,
    LogEvent.APPROVED: GREEN,
    LogEvent.ROLLBACK_SUCCEEDED: GREEN,
    LogEvent.FAILED: RED,
    LogEvent.ROLLBACK_FAILED: RED,
    LogEvent.STALE: RED,
    LogEvent.REJECTED: GREY,
    LogEvent.CANCELLED: GREY,
    LogEvent.RETRYING: AMBER,
    LogEvent.PARKED: AMBER,
    LogEvent.AWAITING_RECONCILIATION: AMBER,
    LogEvent.ROLLBACK_STARTED: AMBER,
}
# Everything a page about actions shows, fetched with the actions (never one query per row).
# How often an action's page reloads itself while a worker is moving the action on.
REFRESH_SECONDS = 5
ACTION_RELATED = ["tenant__plan", "entity", "connection", "proposed_by", "approved_by"]


def status_badge(action: Action):
    return badge(action.get_status_display(), STATUS_TONES.get(action.status, GREY))


# Describing a change ------------------------------------------------------------------------


def _targets(action_type: str, params: dict) -> dict[Field, Any]:
    """The values an action sets; empty (never an error page) for malformed params."""
    try:
        return target_values(action_type, params or {})
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return {}


def describe_change(
    action_type: str, params: dict, entity: PlatformEntity, currency: str, seen: dict | None = None
) -> str:
    """``Daily budget: 100.00 EUR → 120.00 EUR`` for each field the change sets.

    The current value is the one recorded in ``seen`` (before-state or approval
    baseline) when there is one, else the synced mirror.
    """
    parts = []
    for field, target in _targets(action_type, params).items():
        if field in (Field.TARGETING, Field.SCHEDULE):
            parts.append(f"Replace {FIELD_LABELS[field].lower()}")
            continue
        current = (seen or {}).get(field.value, getattr(entity, field.value, None))
        parts.append(f"{FIELD_LABELS[field]}: {_show(field, current, currency)} → {_show(field, target, currency)}")
    return "; ".join(parts) or f"Params: {params}"


def action_change(action: Action) -> str:
    seen = action.before_state or action.baseline_state
    return describe_change(action.action_type, action.params, action.entity, action.connection.currency, seen)


def rollback_change(action: Action) -> str:
    """``Daily budget: live now 150.00 EUR → will restore 100.00 EUR`` from the action's latest
    rollback preflight (the last known value when there is none)."""
    return rollback_preview(action, latest_preflight(action)).change_text()


def rollback_drift_warning(action: Action) -> str:
    """Why a rollback may be refused for drift ("" when the live value is still BudgetRadar's)."""
    return rollback_preview(action, latest_preflight(action)).drift_warning()


# The safety gate on an action's page ----------------------------------------------------------

SEVERITY_TONES = {"warning": AMBER, CRITICAL: RED}


def breach_pill(breach: dict) -> str:
    return badge(breach.get("severity", ""), SEVERITY_TONES.get(breach.get("severity"), GREY))


def when_texts(actions: list[Action]) -> dict[int, str]:
    """What will happen to each action and when (one policy query per tenant)."""
    now = timezone.now()
    texts: dict[int, str] = {}
    by_tenant: dict[int, list[Action]] = {}
    for action in actions:
        by_tenant.setdefault(action.tenant_id, []).append(action)
    for group in by_tenant.values():
        policies = policies_for(tenant=group[0].tenant, connections={a.connection for a in group})
        for action in group:
            texts[action.pk] = when_it_runs(action, policy=policies[action.connection_id], now=now)
    return texts


def _change_text(change: dict) -> str:
    text = f"{change['label'].lower()} {change['before'] or EMPTY} → {change['after'] or EMPTY}"
    if change["unit"]:
        text += f" {change['unit']}"
    pct = change["percent_delta"]
    if pct:
        text += f" ({'' if pct.startswith('-') else '+'}{pct}%)"
    return text


def gate_summary(action: Action) -> str:
    """``Preflight pf-…: daily budget 91.00 → 910.00 EUR (+900.00%); 1 critical breach``."""
    summary = preflight_summary(latest_preflight(action))
    if summary is None:
        return "No preflight yet: the gate runs one when the action is approved or executed."
    if summary["status"] != PreflightRun.Status.SUCCEEDED:
        return f"Preflight {summary['run_id']} {summary['status']}: {summary['error'] or 'not finished'}"
    changes = "; ".join(
        f"{c['label'].lower()} {c['before'] or EMPTY} → {c['after'] or EMPTY}"
        + (f" {c['unit']}" if c["unit"] else "")
        + (
            f" ({'+' if not c['percent_delta'].startswith('-') else ''}{c['percent_delta']}%)"
            if c["percent_delta"]
            else ""
        )
        for c in summary["changes"]
    )
    critical = sum(1 for b in summary["breaches"] if b["severity"] == CRITICAL)
    warnings = len(summary["breaches"]) - critical
    verdict = f"{critical} critical, {warnings} warning breach{'es' if warnings != 1 else ''}"
    return f"Preflight {summary['run_id']}: {changes or 'no change'}; {verdict}."


# Read-only inlines ----------------------------------------------------------------------------


class ReadOnlyInline(admin.TabularInline):
    """An inline that lists rows and never offers to add, change or delete them."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RelatedActionsInline(ReadOnlyInline):
    """Actions linked to the page's object, newest first."""

    model = Action
    fields = ["action", "status_badge", "change_summary", "proposed_by", "approved_by", "created_at"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related(*ACTION_RELATED)

    @admin.display(description="Action")
    def action(self, action: Action):
        return admin_link(action, f"#{action.pk} {action.get_action_type_display()}")

    @admin.display(description="Status")
    def status_badge(self, action: Action):
        return status_badge(action)

    @admin.display(description="Change")
    def change_summary(self, action: Action) -> str:
        return action_change(action)


class RecommendationActionsInline(RelatedActionsInline):
    fk_name = "recommendation"
    verbose_name_plural = "Action proposed by this recommendation"


class JobActionsInline(RelatedActionsInline):
    fk_name = "job"
    verbose_name_plural = "Actions in this job"


class ExecutionLogInline(ReadOnlyInline):
    """The action's timeline: every event, attempt, wait and platform call, newest first,
    each at its moment in the account's zone."""

    model = ActionExecutionLog
    fk_name = "action"
    verbose_name_plural = "Timeline (execution log, newest first)"
    fields = ["when", "event_badge", "actor_name", "message", "wait", "error_summary", "request_id"]
    readonly_fields = fields
    ordering = list(TIMELINE_ORDER)
    show_change_link = True
    template = "admin/actions/action/timeline_inline.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("action__connection")

    @admin.display(description="When")
    def when(self, entry: ActionExecutionLog) -> str:
        return format_time(entry.created_at, entry.action.connection.time_zone)

    @admin.display(description="By")
    def actor_name(self, entry: ActionExecutionLog) -> str:
        return actor_display(entry.actor)

    @admin.display(description="Event")
    def event_badge(self, entry: ActionExecutionLog):
        return badge(entry.get_event_display(), EVENT_TONES.get(entry.event, BLUE))

    @admin.display(description="Wait")
    def wait(self, entry: ActionExecutionLog) -> str:
        return log_wait_text(entry) or EMPTY

    @admin.display(description="Platform request id")
    def request_id(self, entry: ActionExecutionLog) -> str:
        return log_request_id(entry) or EMPTY

    @admin.display(description="Error")
    def error_summary(self, entry: ActionExecutionLog) -> str:
        if not entry.error:
            return EMPTY
        if isinstance(entry.error, dict):
            return Truncator(entry.error.get("message") or entry.error.get("code") or entry.error).chars(160)
        return Truncator(entry.error).chars(160)


# Recommendations ------------------------------------------------------------------------------


def _money_field(label: str) -> forms.DecimalField:
    """An amount; its sign, size and precision are judged by the params service, not here."""
    return forms.DecimalField(label=label, required=False)


class RecommendationForm(TenantOwnedForm):
    """A new recommendation from typed values per action type (never hand-typed JSON),
    validated with the same rules as the API (the params and the safety gate's value
    sanity), so a refused value is an error on the field it is about."""

    budget_type = forms.ChoiceField(
        label="Budget",
        required=False,
        choices=[("daily", "Daily budget"), ("lifetime", "Lifetime budget")],
        initial="daily",
    )
    new_budget = _money_field("New budget")
    budget_change_pct = forms.DecimalField(
        label="Or change by (%)",
        required=False,
        min_value=Decimal("-99"),
        max_value=Decimal("1000"),
        decimal_places=2,
        help_text="Percent of the current budget, e.g. 20 or -15; instead of a new budget.",
    )
    new_bid = _money_field("New bid")
    daily_budget = _money_field("Daily budget")
    lifetime_budget = _money_field("Lifetime budget")
    bid = _money_field("Bid")
    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "Leave as it is"), ("active", "Active"), ("paused", "Paused")]
    )
    replacement = forms.JSONField(
        label="New targeting or schedule",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Only for Update targeting and Update schedule: the platform's structure, replacing the current one.",
    )

    class Meta:
        model = Recommendation
        fields = ["entity", "action_type", "rationale"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        currencies = sorted(
            PlatformConnection.objects.filter(tenant=self.owner_tenant).values_list("currency", flat=True).distinct()
            if self.owner_tenant is not None
            else []
        )
        unit = f"in the account's currency ({', '.join(currencies)})" if currencies else "in the account's currency"
        for name in ("new_budget", "new_bid", "daily_budget", "lifetime_budget", "bid"):
            self.fields[name].help_text = f"Amount {unit}."

    def clean(self) -> dict:
        cleaned = super().clean()
        entity, action_type = cleaned.get("entity"), cleaned.get("action_type")
        if entity is None or not action_type or self.errors:
            return cleaned
        try:
            cleaned["params"] = params_from_values(action_type, cleaned, entity=entity)
            gate_recommendation(entity=entity, action_type=action_type, params=cleaned["params"])
        except ParamsError as exc:
            field = exc.field.split(".")[0]
            self.add_error(field if field in self.fields else None, self._worded(exc.message))
        return cleaned

    def _worded(self, message: str) -> str:
        """The service's message with its param names replaced by the form's labels."""
        for param, name in sorted(PARAM_VALUE_NAMES.items(), key=lambda item: -len(item[0])):
            message = message.replace(param, str(self.fields[name].label))
        return message


@admin.register(Recommendation)
class RecommendationAdmin(TenantScopedAdmin):
    """Proposed changes. Adding one creates its action, pending approval; recommendations
    are not edited afterwards (the action carries the change)."""

    form = RecommendationForm
    list_display = ["created_at", "entity", "action_type", "change_summary", "source", "created_by", "action_status"]
    list_select_related = ["entity__connection", "created_by"]
    list_filter = ["action_type", "source", "entity__connection", DATE_FILTER]
    search_fields = ["entity__name", "entity__external_id", "rationale", "source"]
    autocomplete_fields = ["entity"]
    readonly_fields = ["source", "created_by", "created_at"]
    inlines = [RecommendationActionsInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("actions")

    def get_fieldsets(self, request: HttpRequest, obj: Recommendation | None = None):
        if obj is not None:
            shown = ["entity", "action_type", "params", "rationale", "source", "created_by", "created_at"]
            return [(None, {"fields": shown})]
        return [
            (None, {"fields": ["entity", "action_type", "rationale"]}),
            ("Adjust budget", {"fields": ["budget_type", "new_budget", "budget_change_pct"]}),
            ("Adjust bid", {"fields": ["new_bid"]}),
            ("Apply values (any of them)", {"fields": ["daily_budget", "lifetime_budget", "bid", "status"]}),
            ("Update targeting or schedule", {"fields": ["replacement"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Recommendation | None = None) -> list[str]:
        return [*self.readonly_fields, "params"] if obj is not None else self.readonly_fields

    def get_inlines(self, request: HttpRequest, obj: Recommendation | None) -> list:
        return self.inlines if obj is not None else []

    def has_change_permission(self, request: HttpRequest, obj: Recommendation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Recommendation | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Recommendation, form: forms.ModelForm, change: bool) -> None:
        """Create through the service, so the admin and the API create the same rows."""
        item = RecommendationInput(
            entity_id=obj.entity_id,
            action_type=obj.action_type,
            params=form.cleaned_data["params"],
            rationale=obj.rationale,
        )
        [created] = recommendations_create(tenant=obj.entity.tenant, actor=request.user, items=[item])
        # The admin logs and redirects to ``obj``; point it at the row the service created.
        obj.pk, obj.tenant_id, obj.created_at = created.pk, created.tenant_id, created.created_at
        obj.params = created.params

    def response_add(self, request: HttpRequest, obj: Recommendation, post_url_continue: str | None = None):
        """Say what happens next (the action waits for approval) and open the action."""
        action = obj.actions.order_by("pk").first()
        if action is None:
            return super().response_add(request, obj, post_url_continue)
        change = describe_change(action.action_type, action.params, action.entity, action.connection.currency)
        messages.success(
            request,
            f"Recommendation added: action #{action.pk} ({change}) needs approval before anything changes "
            "on the platform.",
        )
        if "_addanother" in request.POST:
            return HttpResponseRedirect(request.path)
        return HttpResponseRedirect(reverse("admin:actions_action_change", args=[action.pk]))

    @admin.display(description="Change")
    def change_summary(self, recommendation: Recommendation) -> str:
        entity = recommendation.entity
        return describe_change(recommendation.action_type, recommendation.params, entity, entity.connection.currency)

    @admin.display(description="Action")
    def action_status(self, recommendation: Recommendation):
        actions = recommendation.actions.all()  # prefetched
        return format_html_join(" ", "{}", ((admin_link(a, status_badge(a)),) for a in actions)) or EMPTY


# Approve / reject / cancel / execute / roll back -------------------------------------------


def _execute(*, action: Action, actor) -> Action:
    """The execute button. The service quietly returns an action that is already underway
    (right for API retries); a person pressing the button is told instead."""
    if action.status in ALREADY_UNDERWAY:
        raise InvalidState(f"Action #{action.pk} {action_status_phrase(action)}; it was already sent to the engine.")
    return action_execute_request(action=action, actor=actor)


@dataclass(frozen=True)
class Operation:
    """One lifecycle operation as the admin offers it.

    ``options`` are the service's keyword arguments the confirmation form asks for.
    """

    name: str
    label: str
    past: str
    perm: str
    transition: str
    service: Callable[..., Action]
    reason_required: bool
    consequence: str
    options: tuple[str, ...] = ("reason",)

    def possible(self, action: Action) -> bool:
        return can_proceed(getattr(action, self.transition))


OPERATIONS = {
    op.name: op
    for op in [
        Operation(
            name="approve",
            label="Approve",
            past="approved",
            perm="actions.approve_action",
            transition="approve",
            service=action_approve,
            reason_required=False,
            consequence="Approved actions run when their execution policy says (each row below says when: at "
            "once, in the next change window, or once someone presses Execute); the execution engine then "
            "changes the live ad account and confirms each change by reading the platform back. Every approval "
            "counts towards the plan's monthly limit.",
        ),
        Operation(
            name="reject",
            label="Reject",
            past="rejected",
            perm="actions.reject_action",
            transition="reject",
            service=action_reject,
            reason_required=True,
            consequence="Rejected actions are closed and never executed; the reason is recorded in their history.",
        ),
        Operation(
            name="cancel",
            label="Cancel",
            past="cancelled",
            perm="actions.cancel_action",
            transition="cancel",
            service=action_cancel,
            reason_required=False,
            consequence="Cancelled actions are closed and never executed, including approved or queued ones "
            "that no worker has started yet.",
        ),
        Operation(
            name="execute",
            label="Execute now",
            past="queued for execution",
            perm="actions.execute_action",
            transition="enqueue",
            service=_execute,
            reason_required=False,
            options=(),
            consequence="Each action is queued now and a worker changes the live ad account. The worker first "
            "reads the entity: if its live value differs from the value seen at approval (shown below as "
            "the value before the arrow), the action is marked stale and nothing is sent. Otherwise the new "
            "value is applied and confirmed by reading the platform back; rollback instructions are kept for "
            "24 hours.",
        ),
        Operation(
            name="rollback",
            label="Roll back",
            past="queued for rollback",
            perm="actions.rollback_action",
            transition="start_rollback",
            service=action_rollback_request,
            reason_required=False,
            options=("reason", "override_drift"),
            consequence="Each action is rolled back by a worker to the value the entity had before execution "
            "(the last known live value → the value it goes back to, below). The worker reads the entity "
            "first: if it changed since execution, the rollback is refused rather than overwrite that "
            "change, unless the drift check is overridden with a reason. Removed entities cannot be rolled "
            "back.",
        ),
    ]
}


class OperationForm(forms.Form):
    """What a confirmation asks: a reason or note, and for rollbacks the drift override
    (offered only to those whose role allows it)."""

    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=1000)
    override_drift = forms.BooleanField(
        required=False,
        label="Override the drift check",
        help_text="Roll back even if the entity changed since execution, overwriting that change. Needs a reason.",
    )

    def __init__(self, *args: Any, operation: Operation, user, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.operation = operation
        if "reason" not in operation.options:
            del self.fields["reason"]
        else:
            field = self.fields["reason"]
            field.required = operation.reason_required
            field.label = "Reason" if operation.reason_required else "Note (optional)"
            if "override_drift" in operation.options:
                field.label = "Reason (required to override the drift check)"
            field.help_text = "Recorded in each action's history and execution log."
        if "override_drift" not in operation.options or not user.has_perm("actions.override_rollback_drift"):
            del self.fields["override_drift"]

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("override_drift") and not (cleaned.get("reason") or "").strip():
            self.add_error("reason", "A reason is required to override the drift check.")
        return cleaned

    def options(self) -> dict[str, Any]:
        """The service's keyword arguments."""
        defaults = {"reason": "", "override_drift": False}
        return {name: self.cleaned_data.get(name, defaults[name]) for name in self.operation.options}


def preview(operation: Operation, ids: list[int], actor) -> dict[int, BulkResult]:
    """What ``operation`` would do to each action, without doing it.

    Runs the real service in a transaction that is then rolled back, so the preview
    applies exactly the service's rules (role, state, four-eyes, the plan's remaining
    monthly quota as earlier rows use it up, an open circuit, an expired rollback) and
    cannot drift from them. Services keep side effects in ``transaction.on_commit`` hooks
    (DESIGN §3), which the rollback discards.
    """
    options = {"reason": "(preview)" if operation.reason_required else "", "override_drift": False}
    with transaction.atomic():
        actions = list(Action.objects.filter(pk__in=ids).select_related(*ACTION_RELATED).order_by("pk"))
        results = actions_apply_bulk(
            actions=actions,
            actor=actor,
            operation=operation.service,
            **{name: options[name] for name in operation.options},
        )
        transaction.set_rollback(True)
    return {result.action.pk: result for result in results}


def approval_notes(tenants: set[Tenant]) -> list[str]:
    """Per tenant in the selection: its four-eyes rule, its execution policy and what is
    left of its monthly quota."""
    notes = []
    for tenant in sorted(tenants, key=lambda t: t.name):
        if tenant.four_eyes_required:
            notes.append(
                f"Four-eyes approval is on for {tenant.name}: nobody may approve an action they proposed "
                "(or a scenario's action they created or last changed)."
            )
        else:
            notes.append(f"Four-eyes approval is off for {tenant.name}: proposers may approve their own actions.")
        notes.append(
            f"{tenant.name}'s execution policy: {tenant.get_execution_mode_display().lower()} (a connection may set "
            "its own); each row below says when the action will run."
        )
        notes.append(
            "Every approval passes the safety gate: a one-entity preflight reads the entity now, and a critical "
            "guardrail breach is refused unless a second person approved an override."
        )
        plan = tenant.plan
        if plan.actions_enabled and plan.actions_per_month is not None:
            used = Action.objects.filter(tenant=tenant, approved_at__gte=month_start(tenant)).count()
            notes.append(
                f"{tenant.name}'s {plan.name} plan allows {plan.actions_per_month} approved actions a month: "
                f"{used} used, {max(plan.actions_per_month - used, 0)} left."
            )
    return notes


def action_row(action: Action, operation: Operation | None = None, **extra: Any) -> dict[str, Any]:
    """One action as the confirmation and result pages list it; a rollback shows its own
    change (live value back to the before-value), its deadline and any drift seen."""
    if operation is not None and operation.name == "rollback":
        rollback = rollback_preview(action, latest_preflight(action))
        return {
            "action": action,
            "change": rollback.change_text(),
            "deadline": rollback_deadline_text(action),
            "warning": rollback.drift_warning(),
            "status": status_badge(action),
            **extra,
        }
    return {"action": action, "change": action_change(action), "status": status_badge(action), **extra}


class AttentionFilter(admin.SimpleListFilter):
    """Actions a person may want to look at: parked, being reconciled, or stuck."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin):
        return [
            ("parked", "Waiting for a later attempt"),
            ("reconciling", "Awaiting reconciliation"),
            ("stuck", f"Blocking its entity over {settings.ENGINE_STUCK_AFTER_MINUTES} minutes"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return actions_needing_attention(queryset, self.value()) if self.value() else queryset


@admin.register(Action)
class ActionAdmin(TenantScopedHistoryAdmin):
    """Every change to every entity, with its lifecycle, state, errors and timeline."""

    list_display = [
        "number",
        "status_badge",
        "entity_display",
        "platform",
        "action_type",
        "change_summary",
        "proposed_by",
        "approved_by",
        "created_at",
        "approved_at",
    ]
    list_display_links = ["number"]
    list_select_related = ["entity", "connection", "proposed_by", "approved_by"]
    list_filter = ["status", AttentionFilter, "platform", "action_type", "connection", DATE_FILTER]
    search_fields = ["=id", "entity__name", "entity__external_id"]
    search_help_text = "Search by action id, entity name or platform id."
    actions = ["approve_selected", "reject_selected", "cancel_selected", "execute_selected", "rollback_selected"]
    inlines = [ExecutionLogInline]
    readonly_fields = [
        "status_badge",
        "entity_link",
        "connection",
        "platform",
        "action_type",
        "change_summary",
        "params_display",
        "rationale",
        "proposer",
        "approver",
        "decided_reason",
        "state_table",
        "before_after",
        "when_display",
        "gate_display",
        "rollback_deadline_display",
        "rollback_display",
        "rollback_requester",
        "rollback_reason",
        "rollback_override_drift",
        "error_kind",
        "error_message",
        "error_retryable",
        "error_hint",
        "waiting_display",
        "job",
        "deployment_link",
        "attempts",
        "idempotency_key",
        "created_at",
        "approved_at",
        "queued_at",
        "started_at",
        "finished_at",
        "rolled_back_at",
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Action | None = None):
        fieldsets = [
            (
                None,
                {"fields": ["status_badge", "entity_link", "connection", "platform", "action_type", "change_summary"]},
            ),
            (
                "Why and who",
                {"fields": ["rationale", "params_display", "proposer", "approver", "decided_reason"]},
            ),
            ("Safety gate", {"fields": ["when_display", "gate_display"]}),
            (
                "State and rollback",
                {
                    "fields": [
                        "before_after",
                        "state_table",
                        "rollback_deadline_display",
                        "rollback_display",
                        "rollback_requester",
                        "rollback_reason",
                        "rollback_override_drift",
                    ]
                },
            ),
            ("Execution", {"fields": ["waiting_display", "job", "deployment_link", "attempts", "idempotency_key"]}),
            (
                "Timing",
                {"fields": ["created_at", "approved_at", "queued_at", "started_at", "finished_at", "rolled_back_at"]},
            ),
        ]
        if obj is not None and obj.error_code:
            fieldsets.insert(1, ("Error", {"fields": ["error_kind", "error_message", "error_retryable", "error_hint"]}))
        if obj is None or not obj.rollback_override_drift:  # only worth a line when someone did override
            for _name, options in fieldsets:
                options["fields"] = [f for f in options["fields"] if f != "rollback_override_drift"]
        return fieldsets

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related(*ACTION_RELATED, "recommendation", "rollback_requested_by")

    # Actions change only through services.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Action | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Action | None = None) -> bool:
        return False

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("actions.approve_action")

    def has_reject_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("actions.reject_action")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("actions.cancel_action")

    def has_execute_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("actions.execute_action")

    def has_rollback_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("actions.rollback_action")

    # Columns and read-only fields ---------------------------------------------------------

    @admin.display(description="Error")
    def error_kind(self, action: Action) -> str:
        return error_label(action.error_code) if action.error_code else EMPTY

    @admin.display(description="Waiting for")
    def waiting_display(self, action: Action) -> str:
        return action_wait_state(action) or "—"

    @admin.display(description="#", ordering="id")
    def number(self, action: Action) -> str:
        return f"#{action.pk}"

    @admin.display(description="Status", ordering="status")
    def status_badge(self, action: Action):
        return status_badge(action)

    @admin.display(description="Entity", ordering="entity__name")
    def entity_display(self, action: Action):
        entity = action.entity
        return format_html('{}<div class="help">{} {}</div>', entity.name, entity.entity_type, entity.external_id)

    @admin.display(description="Entity")
    def entity_link(self, action: Action):
        entity = action.entity
        return format_html("{} ({} {})", admin_link(entity, entity.name), entity.entity_type, entity.external_id)

    @admin.display(description="Change")
    def change_summary(self, action: Action) -> str:
        return action_change(action)

    @admin.display(description="Params")
    def params_display(self, action: Action):
        return pretty_json(action.params)

    @admin.display(description="What will happen")
    def when_display(self, action: Action) -> str:
        return when_texts([action])[action.pk] or EMPTY

    @admin.display(description="Guardrails")
    def gate_display(self, action: Action) -> str:
        return gate_summary(action)

    @admin.display(description="Rationale")
    def rationale(self, action: Action) -> str:
        return action.recommendation.rationale if action.recommendation and action.recommendation.rationale else EMPTY

    # People are shown by name: links would lead tenant members to the user admin they may not see.
    @admin.display(description="Proposed by")
    def proposer(self, action: Action) -> str:
        return str(action.proposed_by or "an optimizer")

    @admin.display(description="Approved by")
    def approver(self, action: Action) -> str:
        return str(action.approved_by or EMPTY)

    @admin.display(description="Rollback requested by")
    def rollback_requester(self, action: Action) -> str:
        return str(action.rollback_requested_by or EMPTY)

    @admin.display(description="Rollback instructions")
    def rollback_display(self, action: Action):
        return pretty_json(action.rollback_params)

    @admin.display(description="Before → after")
    def before_after(self, action: Action):
        """``Daily budget: 100.00 EUR → 150.00 EUR`` per field, once the action ran: the value
        captured just before the change and the value read back after it."""
        before, after = action.before_state or {}, action.after_state or {}
        if not before and not after:
            return "Not executed yet."
        currency = action.connection.currency
        fields = [f for f in Field if f.value in before or f.value in after]
        lines = [
            (
                FIELD_LABELS[f],
                _show(f, before.get(f.value), currency),
                _show(f, after.get(f.value), currency),
                "" if same_value(f, before.get(f.value), after.get(f.value)) else " br-changed",
            )
            for f in fields
            if f in _targets(action.action_type, action.params)
            or not same_value(f, before.get(f.value), after.get(f.value))
        ]
        if not lines:
            return "No field changed."
        return format_html_join(
            "",
            '<div class="br-before-after{}"><strong>{}:</strong> {} → {}</div>',
            ((changed, label, old, new) for label, old, new, changed in lines),
        )

    @admin.display(description="Deployment")
    def deployment_link(self, action: Action):
        """The scenario deployment this action belongs to, if any."""
        if action.deployment_id is None:
            return EMPTY
        url = reverse("admin:scenarios_deployment_change", args=[action.deployment_id])
        return format_html('<a href="{}">Deployment #{}</a>', url, action.deployment_id)

    @admin.display(description="Rollback")
    def rollback_deadline_display(self, action: Action) -> str:
        return rollback_deadline_text(action)

    @admin.display(description="Values")
    def state_table(self, action: Action):
        """Approval baseline, before, after (read back) and target of each field, side by side."""
        currency = action.connection.currency
        targets = _targets(action.action_type, action.params)
        states = [action.baseline_state or {}, action.before_state or {}, action.after_state or {}]
        fields = [f for f in Field if f in targets or any(f.value in state for state in states)]
        if not fields:
            return EMPTY
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    FIELD_LABELS[f],
                    *(_show(f, state.get(f.value), currency) for state in states),
                    _show(f, targets.get(f), currency),
                )
                for f in fields
            ),
        )
        return format_html(
            '<table class="br-state"><thead><tr><th>Field</th><th>Seen at approval</th><th>Before</th>'
            "<th>After (read back)</th><th>Target</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    # Object buttons -----------------------------------------------------------------------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        action = self.get_object(request, object_id)
        buttons = [
            {"name": op.name, "label": op.label, "url": self._url(op.name, action.pk)}
            for op in OPERATIONS.values()
            if op.possible(action) and request.user.has_perm(op.perm)
        ]
        extra_context = {
            **(extra_context or {}),
            "operation_buttons": buttons,
            "gate": self._gate(request, action),
            # Only while a worker moves it on; a settled action's page stays put.
            "in_motion": action is not None and action.status in IN_MOTION,
            "refresh_seconds": REFRESH_SECONDS,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _gate(self, request: HttpRequest, action: Action) -> dict[str, Any]:
        """The action's latest one-entity preflight, its breaches and overrides, and what the
        user may do about them (run a preflight, request or approve an override)."""
        user = request.user
        summary = preflight_summary(latest_preflight(action))
        critical = [b for b in (summary or {}).get("breaches", []) if b["severity"] == CRITICAL]
        overrides = (summary or {}).get("overrides", [])
        may_override = user.has_perm("scenarios.override_guardrail")
        return {
            "summary": summary,
            "breaches": [(breach_pill(b), b["message"]) for b in (summary or {}).get("breaches", [])],
            "critical": len(critical),
            "pending": [
                {**o, "can_approve": may_override and o["requested_by"] != user.get_username()}
                for o in overrides
                if o["approved_at"] is None
            ],
            "approved": [o for o in overrides if o["approved_at"] is not None],
            "can_preflight": user.has_perm("scenarios.run_preflight"),
            "can_request_override": may_override and bool(critical),
            "preflight_url": self._url("preflight", action.pk),
            "override_url": self._url("override_request", action.pk),
        }

    def get_urls(self):
        view = self.admin_site.admin_view
        name = self._url_name
        return [
            # Before the operations: "<id>/override/<n>/approve/" would otherwise match "approve".
            path(
                "<path:object_id>/override/<int:override_id>/approve/",
                view(self.override_approve_view),
                name=name("override_approve"),
            ),
            path("<path:object_id>/override/", view(self.override_request_view), name=name("override_request")),
            path("<path:object_id>/preflight/", view(self.preflight_view), name=name("preflight")),
            *(
                path(f"<path:object_id>/{op}/", view(self.operation_view), {"operation": op}, name=name(op))
                for op in OPERATIONS
            ),
            path("confirm/<str:token>/", view(self.confirm_view), name=name("confirm")),
            path("confirm/<str:token>/result/", view(self.result_view), name=name("result")),
            *super().get_urls(),
        ]

    @staticmethod
    def _url_name(suffix: str) -> str:
        return f"actions_action_{suffix}"

    def _url(self, suffix: str, *args: Any) -> str:
        return reverse(f"admin:{self._url_name(suffix)}", args=args)

    # The safety gate's buttons ------------------------------------------------------------

    @method_decorator(require_POST)
    def preflight_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """Run the action's one-entity preflight now (of its rollback once it ran)."""
        action = self.get_object(request, object_id)
        try:
            run = action_preflight_request(action=action, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"The preflight of action #{action.pk} was refused: {exc.message}")
        else:
            level = (
                messages.WARNING
                if run.has_critical or run.status != PreflightRun.Status.SUCCEEDED
                else messages.SUCCESS
            )
            messages.add_message(request, level, gate_summary(Action.objects.get(pk=action.pk)))
        return HttpResponseRedirect(self._url("change", action.pk) + "#safety-gate")

    @method_decorator(require_POST)
    def override_request_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """Ask to override the critical breaches of the action's latest preflight."""
        action = self.get_object(request, object_id)
        shown = request.POST.get("preflight", "")
        latest = latest_preflight(action)
        if latest is None or latest.run_id != shown:
            messages.error(
                request, "The preflight changed meanwhile; review the new one before requesting an override."
            )
        else:
            try:
                action_override_request(action=action, actor=request.user, reason=request.POST.get("reason", ""))
            except DomainError as exc:
                messages.error(request, f"The override was not requested: {exc.message}")
            else:
                messages.success(
                    request,
                    f"Override of {latest.run_id} requested. Another person with the override permission must "
                    "approve it.",
                )
        return HttpResponseRedirect(self._url("change", action.pk) + "#safety-gate")

    @method_decorator(require_POST)
    def override_approve_view(self, request: HttpRequest, object_id: str, override_id: int) -> HttpResponseRedirect:
        """The second person approves an override of this action's breaches."""
        action = self.get_object(request, object_id)
        override = (
            GuardrailOverride.objects.filter(pk=override_id, preflight__action=action)
            .select_related("tenant", "preflight__action", "requested_by")
            .first()
        )
        if override is None:
            messages.error(request, "That override no longer exists.")
        else:
            try:
                override_approve(override=override, actor=request.user)
            except DomainError as exc:
                messages.error(request, f"The override was not approved: {exc.message}")
            else:
                messages.success(request, f"Override of {override.preflight.run_id} approved.")
        return HttpResponseRedirect(self._url("change", action.pk) + "#safety-gate")

    # Bulk actions -------------------------------------------------------------------------

    @admin.action(description="Approve selected actions", permissions=["approve"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._start(request, "approve", list(queryset.values_list("pk", flat=True)), bulk=True)

    @admin.action(description="Reject selected actions", permissions=["reject"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._start(request, "reject", list(queryset.values_list("pk", flat=True)), bulk=True)

    @admin.action(description="Cancel selected actions", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._start(request, "cancel", list(queryset.values_list("pk", flat=True)), bulk=True)

    @admin.action(description="Execute selected actions now", permissions=["execute"])
    def execute_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._start(request, "execute", list(queryset.values_list("pk", flat=True)), bulk=True)

    @admin.action(description="Roll back selected actions", permissions=["rollback"])
    def rollback_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._start(request, "rollback", list(queryset.values_list("pk", flat=True)), bulk=True)

    # Confirmation flow ----------------------------------------------------------------------

    def operation_view(self, request: HttpRequest, object_id: str, operation: str) -> HttpResponseRedirect:
        """The object button: open a confirmation for this one action."""
        action = self.get_object(request, object_id)
        return self._start(request, operation, [action.pk], bulk=False)

    def _start(self, request: HttpRequest, operation: str, ids: list[int], *, bulk: bool) -> HttpResponseRedirect:
        op = self._operation_for(request, operation)
        token = confirmation_open(request, {"operation": op.name, "ids": ids, "bulk": bulk})
        return HttpResponseRedirect(self._url("confirm", token))

    def _operation_for(self, request: HttpRequest, name: str) -> Operation:
        op = OPERATIONS[name]
        if not request.user.has_perm(op.perm):
            raise denied(request.user, op.perm)
        return op

    def confirm_view(self, request: HttpRequest, token: str) -> HttpResponse:
        """GET: what will happen to each action. POST: do it, once, then redirect."""
        pending = confirmation_get(request, token)
        if pending is None:
            messages.warning(request, "That confirmation has expired. Select the actions again.")
            return HttpResponseRedirect(self._url("changelist"))
        op = self._operation_for(request, pending["operation"])
        if pending["result"] is not None:
            return self._after(request, token, pending)  # a second submit shows the first outcome
        actions = list(self.get_queryset(request).filter(pk__in=pending["ids"]).order_by("pk"))
        if request.method != "POST":
            self._preflight_for(op, actions, request.user)
        form = OperationForm(request.POST if request.method == "POST" else None, operation=op, user=request.user)
        if request.method == "POST" and form.is_valid():
            results = actions_apply_bulk(actions=actions, actor=request.user, operation=op.service, **form.options())
            outcome = [{"id": r.action.pk, "done": r.done, "reason": r.reason} for r in results]
            confirmation_close(request, token, outcome)
            return self._after(request, token, {**pending, "result": outcome}, report=True)
        return self._render_confirmation(request, op, actions, form, bulk=pending["bulk"])

    @staticmethod
    def _preflight_for(op: Operation, actions: list[Action], user) -> None:
        """Before showing what approve, execute or roll back will do, the gate's one-entity
        preflights (outside any transaction; fresh ones are reused), so the page and the
        confirmation judge what the person sees."""
        if op.name not in ("approve", "execute", "rollback"):
            return
        judged = [a for a in actions if op.possible(a)]
        try:
            actions_preflight(actions=judged, actor=user, rollback=op.name == "rollback")
        except DomainError:
            return  # the preview reports the refusal for each action

    def _render_confirmation(
        self, request: HttpRequest, op: Operation, actions: list[Action], form: OperationForm, *, bulk: bool
    ) -> TemplateResponse:
        outcomes = preview(op, [a.pk for a in actions], request.user)
        ids = [a.pk for a in actions]
        actions = list(
            self.get_queryset(request).filter(pk__in=ids).prefetch_related(preflights_prefetch()).order_by("pk")
        )
        when = when_texts(actions) if op.name == "approve" else {}
        rows = [
            action_row(
                a,
                op,
                will_apply=outcomes[a.pk].done,
                reason=outcomes[a.pk].reason,
                when=when.get(a.pk, "") if outcomes[a.pk].done else "",
                gate=gate_summary(a) if op.name in ("approve", "execute", "rollback") else "",
            )
            for a in actions
        ]
        single = None if bulk or not actions else actions[0]
        count = sum(row["will_apply"] for row in rows)
        subject = f"action #{single.pk}" if single else f"{len(actions)} action{'s' if len(actions) != 1 else ''}"
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{op.label} {subject}?",
            "operation": op,
            "rows": rows,
            "will_apply": count,
            "notes": approval_notes({a.tenant for a in actions}) if op.name == "approve" else [],
            "form": form,
            "single": single,
            "back_url": self._url("change", single.pk) if single else self._url("changelist"),
        }
        return TemplateResponse(request, "admin/actions/action/confirm_operation.html", context)

    def _after(self, request: HttpRequest, token: str, pending: dict, *, report: bool = False) -> HttpResponseRedirect:
        """Where a submitted confirmation leads: the action page with a message for one
        action, the result page for a bulk run."""
        if pending["bulk"]:
            return HttpResponseRedirect(self._url("result", token))
        if not pending["result"]:
            messages.warning(request, "That action is no longer visible to you; nothing was done.")
            return HttpResponseRedirect(self._url("changelist"))
        [outcome] = pending["result"]
        op = OPERATIONS[pending["operation"]]
        if report and outcome["done"]:
            messages.success(request, f"Action #{outcome['id']} was {op.past}.")
        elif report:
            messages.error(request, f"Action #{outcome['id']} was not {op.past}: {outcome['reason']}")
        return HttpResponseRedirect(self._url("change", outcome["id"]))

    def result_view(self, request: HttpRequest, token: str) -> HttpResponse:
        """What a bulk run did: each action done or skipped, with the reason."""
        pending = confirmation_get(request, token)
        if pending is None or pending["result"] is None:
            return HttpResponseRedirect(self._url("changelist"))
        op = OPERATIONS[pending["operation"]]
        ids = [r["id"] for r in pending["result"]]
        actions = self.get_queryset(request).prefetch_related(preflights_prefetch()).in_bulk(ids)
        rows = [
            action_row(actions[r["id"]], op, done=r["done"], reason=r["reason"])
            for r in pending["result"]
            if r["id"] in actions
        ]
        done = sum(r["done"] for r in rows)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{op.label}: {done} {op.past}, {len(rows) - done} skipped",
            "operation": op,
            "rows": rows,
            "done": done,
            "skipped": len(rows) - done,
        }
        return TemplateResponse(request, "admin/actions/action/operation_result.html", context)


# Jobs and the execution log -------------------------------------------------------------------


@admin.register(ActionJob)
class ActionJobAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """Batches of actions run by the workers, with progress and the lease of the worker running it."""

    list_display = [
        "number",
        "kind",
        "connection",
        "status_badge",
        "total",
        "succeeded",
        "failed",
        "parked",
        "round_trips",
        "worker",
        "lease_expires_at",
        "created_at",
        "finished_at",
    ]
    list_display_links = ["number"]
    list_select_related = ["connection"]
    list_filter = ["kind", "status", "connection", DATE_FILTER]
    search_fields = ["=id", "claimed_by", "connection__name"]
    inlines = [JobActionsInline]

    @admin.display(description="#", ordering="id")
    def number(self, job: ActionJob) -> str:
        return f"#{job.pk}"

    @admin.display(description="Worker", ordering="claimed_by")
    def worker(self, job: ActionJob) -> str:
        return actor_display(job.claimed_by) if job.claimed_by else EMPTY

    @admin.display(description="Status", ordering="status")
    def status_badge(self, job: ActionJob):
        return badge(job.get_status_display(), JOB_TONES.get(job.status, GREY))


@admin.register(ActionExecutionLog)
class ActionExecutionLogAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """The append-only evidence of every event and platform call. Nobody can add,
    change or delete a row here, superusers included."""

    list_display = ["created_at", "event_badge", "action_link", "job", "actor_name", "summary", "request_id"]
    list_select_related = ["action__entity", "job__connection"]
    list_filter = ["event", "action__platform", DATE_FILTER]
    search_fields = ["=action__id", "message", "actor", "platform_request_id"]
    list_per_page = 100
    ordering = list(TIMELINE_ORDER)
    fields = [
        "created_at",
        "event_badge",
        "action_link",
        "job",
        "actor_name",
        "message",
        "request_id",
        "request_display",
        "response_display",
        "snapshot_display",
        "error_display",
    ]

    @admin.display(description="Event", ordering="event")
    def event_badge(self, entry: ActionExecutionLog):
        return badge(entry.get_event_display(), EVENT_TONES.get(entry.event, BLUE))

    @admin.display(description="Action", ordering="action")
    def action_link(self, entry: ActionExecutionLog):
        action = entry.action
        return admin_link(action, f"#{action.pk} on {action.entity.name}") if action else EMPTY

    @admin.display(description="By", ordering="actor")
    def actor_name(self, entry: ActionExecutionLog) -> str:
        return actor_display(entry.actor)

    @admin.display(description="Platform request id", ordering="platform_request_id")
    def request_id(self, entry: ActionExecutionLog) -> str:
        return log_request_id(entry) or EMPTY

    @admin.display(description="Message")
    def summary(self, entry: ActionExecutionLog) -> str:
        return Truncator(entry.message).chars(100) or EMPTY

    @admin.display(description="Request")
    def request_display(self, entry: ActionExecutionLog):
        return pretty_json(entry.request)

    @admin.display(description="Response")
    def response_display(self, entry: ActionExecutionLog):
        return pretty_json(entry.response)

    @admin.display(description="State snapshot")
    def snapshot_display(self, entry: ActionExecutionLog):
        return pretty_json(entry.state_snapshot)

    @admin.display(description="Error")
    def error_display(self, entry: ActionExecutionLog):
        return pretty_json(entry.error)
