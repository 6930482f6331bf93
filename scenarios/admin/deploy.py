"""The scenario page's buttons: Preflight, Dry run, Deploy live with its confirmation
(diff, breaches, override state, a fresh idempotency key) and the override requests and
approvals it offers. Every button calls a service and turns its refusal into a message."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from budgetradar.admin_base import scope_for_user
from budgetradar.errors import DomainError
from safety.gate import deploy_blocking, deploy_four_eyes_refusal, deploy_plans
from safety.overrides import override_approve, override_approve_refusal, override_request
from scenarios.admin.diff import diff_context
from scenarios.admin.presentation import deployment_counts, page_number
from scenarios.models import Deployment, GuardrailOverride, PreflightRun, Scenario
from scenarios.selectors import deploy_confirmation_is_stale, latest_scenario_preflight, next_step, preflight_freshness
from scenarios.services.adpush import scenario_preflight_request
from scenarios.services.deploy import deployment_create
from scenarios.services.preflight import breach_counts


class ScenarioDeployMixin:
    """The buttons of ``ScenarioAdmin`` (its ``_scenario_for``, ``_change_url`` and ``admin_site``)."""

    @method_decorator(require_POST)
    def preflight_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """Read the live state of the scenario's entities and store the diff."""
        scenario = self._scenario_for(request, object_id, "scenarios.run_preflight")
        try:
            run = scenario_preflight_request(scenario=scenario, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"The preflight of {scenario.name} failed: {exc.message}")
        else:
            if run.status == PreflightRun.Status.QUEUED:
                messages.info(
                    request,
                    f"Preflight {run.run_id} of {run.entities_total} entities runs in a worker; its page shows "
                    "the progress and then the diff.",
                )
                return HttpResponseRedirect(reverse("admin:scenarios_preflightrun_change", args=[run.pk]))
            summary = (run.payload or {}).get("summary") or {}
            critical, warning = breach_counts(run)
            level = messages.WARNING if critical else messages.SUCCESS
            messages.add_message(
                request,
                level,
                f"Preflight {run.run_id}: {summary.get('changed', 0)} of {summary.get('entities', 0)} entities "
                f"change; {critical} critical and {warning} warning guardrail breaches.",
            )
        return HttpResponseRedirect(self._change_url(scenario, "#preflight"))

    @method_decorator(require_POST)
    def dry_run_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """A fresh preflight plus the platforms' validate-only calls; nothing changes."""
        scenario = self._scenario_for(request, object_id, "scenarios.deploy_dry_run")
        key = request.POST.get("idempotency_key") or str(uuid.uuid4())
        try:
            result = deployment_create(scenario=scenario, actor=request.user, mode="dry_run", idempotency_key=key)
        except DomainError as exc:
            messages.error(request, f"The dry run of {scenario.name} was refused: {exc.message}")
            return HttpResponseRedirect(self._change_url(scenario))
        deployment = Deployment.objects.get(tenant=scenario.tenant, pk=result.response["id"])
        if deployment.prepared_at is None:
            messages.success(
                request,
                f"Dry run #{deployment.pk} of {scenario.name} runs in a worker: it reads the live values and asks "
                "the platforms to validate the changes; this page follows its progress. Nothing changes on the "
                "platforms.",
            )
        else:
            messages.success(
                request,
                f"Dry run #{deployment.pk}: {deployment_counts(deployment)}. Nothing was changed on the platforms.",
            )
        return HttpResponseRedirect(reverse("admin:scenarios_deployment_change", args=[deployment.pk]))

    def deploy_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the confirmation (diff, breaches, totals, override state, a fresh key).
        POST: deploy once per key; a repeated key returns the same deployment."""
        scenario = self._scenario_for(request, object_id, "scenarios.deploy_live")
        latest = latest_scenario_preflight(scenario, succeeded=True)
        if request.method == "POST":
            return self._deploy(request, scenario, latest)
        if latest is None:
            messages.error(request, f"Scenario {scenario.name} has no successful preflight yet; run a preflight first.")
            return HttpResponseRedirect(self._change_url(scenario))
        return self._render_deploy(request, scenario, latest)

    def _render_deploy(self, request: HttpRequest, scenario: Scenario, run: PreflightRun) -> TemplateResponse:

        user = request.user
        overrides = list(run.overrides.select_related("requested_by", "approved_by").order_by("-created_at"))
        approved = next((o for o in overrides if o.approved), None)
        pending = [o for o in overrides if o.pending]
        may_override = user.has_perm("scenarios.override_guardrail")
        blocking = deploy_blocking(run)
        blocked = bool(blocking) and approved is None
        four_eyes = deploy_four_eyes_refusal(scenario=scenario, actor=user)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Deploy {scenario.name} live?",
            "scenario": scenario,
            "diff": diff_context(run, page=page_number(request, "diff_page")),
            "freshness": preflight_freshness(run, scenario),
            "idempotency_key": str(uuid.uuid4()),
            "blocked": blocked,
            "approved_override": approved,
            "pending_overrides": [
                {"override": o, "can_approve": not override_approve_refusal(override=o, actor=user)} for o in pending
            ],
            "can_request_override": may_override and bool(blocking) and approved is None and not pending,
            "plans": [(name, plan.sentence()) for name, plan in deploy_plans(run)],
            "four_eyes": four_eyes.message if four_eyes is not None else "",
            "rollback_hours": settings.ROLLBACK_VALID_HOURS,
            "back_url": self._change_url(scenario),
        }
        return TemplateResponse(request, "admin/scenarios/scenario/deploy_confirm.html", context)

    def _deploy(self, request: HttpRequest, scenario: Scenario, latest: PreflightRun | None) -> HttpResponseRedirect:
        key = request.POST.get("idempotency_key", "")
        confirmed = request.POST.get("preflight", "")
        override = request.POST.get("override", "")
        if deploy_confirmation_is_stale(scenario, latest, idempotency_key=key, confirmed_preflight=confirmed):
            # The page showed another diff than the one a deploy would use now.
            messages.error(
                request,
                "A newer preflight exists than the one you confirmed; review its diff and confirm again.",
            )
            return HttpResponseRedirect(reverse("admin:scenarios_scenario_deploy", args=[scenario.pk]))
        try:
            result = deployment_create(
                scenario=scenario,
                actor=request.user,
                mode="live",
                idempotency_key=key,
                override_id=int(override) if override.isdigit() else None,
            )
        except DomainError as exc:
            messages.error(request, f"{scenario.name} was not deployed: {exc.message}")
            return HttpResponseRedirect(self._change_url(scenario))
        deployment = Deployment.objects.get(tenant=scenario.tenant, pk=result.response["id"])
        if result.replayed:
            messages.info(request, f"This confirmation was already submitted: deployment #{deployment.pk} is below.")
        else:
            messages.success(
                request,
                f"Deployment #{deployment.pk} is {deployment.get_status_display().lower()}: "
                f"{deployment_counts(deployment)}. This page follows its progress.",
            )
        return HttpResponseRedirect(reverse("admin:scenarios_deployment_change", args=[deployment.pk]))

    @method_decorator(require_POST)
    def override_request_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:

        scenario = self._scenario_for(request, object_id, "scenarios.override_guardrail")
        run = latest_scenario_preflight(scenario, succeeded=True)
        back = HttpResponseRedirect(reverse("admin:scenarios_scenario_deploy", args=[scenario.pk]))
        if run is None or str(run.pk) != request.POST.get("preflight", ""):
            messages.error(
                request, "The preflight changed meanwhile; review the new one before requesting an override."
            )
            return back
        try:
            override = override_request(preflight=run, actor=request.user, reason=request.POST.get("reason", ""))
        except DomainError as exc:
            messages.error(request, f"The override was not requested: {exc.message}")
            return back
        messages.success(request, f"{override} requested. {next_step(override)}")
        return HttpResponseRedirect(reverse("admin:scenarios_guardrailoverride_change", args=[override.pk]))

    @method_decorator(require_POST)
    def override_approve_view(self, request: HttpRequest, object_id: str, override_id: int) -> HttpResponseRedirect:
        scenario = self._scenario_for(request, object_id, "scenarios.override_guardrail")
        override = (
            scope_for_user(GuardrailOverride.objects.all(), request.user)
            .filter(pk=override_id, preflight__scenario=scenario)
            .select_related("preflight", "requested_by")
            .first()
        )
        back = HttpResponseRedirect(reverse("admin:scenarios_scenario_deploy", args=[scenario.pk]))
        if override is None:
            messages.error(request, "That override no longer exists.")
            return back
        try:
            override_approve(override=override, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"The override was not approved: {exc.message}")
        else:
            messages.success(
                request, f"Override of {override.preflight.run_id} approved; the scenario may now be deployed live."
            )
        return back
