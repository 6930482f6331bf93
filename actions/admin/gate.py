"""The action page's safety gate: the latest one-entity preflight, its breaches and
overrides, and the buttons to run a preflight or request and approve an override."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponseRedirect
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from actions.admin.presentation import breach_pill, gate_summary
from actions.models import Action
from budgetradar.errors import DomainError
from budgetradar.timefmt import format_time
from safety.gate import action_preflight_request, latest_preflight, preflight_summary
from safety.overrides import action_override_request, override_approve, override_approve_refusal
from scenarios.models import GuardrailOverride, PreflightRun
from scenarios.selectors import APPROVED, PENDING, REJECTED
from scenarios.services.guardrails import CRITICAL


class ActionGateMixin:
    """The safety-gate part of ``ActionAdmin`` (its ``_url`` and ``get_object``)."""

    def _gate(self, request: HttpRequest, action: Action) -> dict[str, Any]:
        """The action's latest one-entity preflight, its breaches and overrides, and what the
        user may do about them (run a preflight, request or approve an override)."""
        user = request.user
        run = latest_preflight(action)
        summary = preflight_summary(run)
        critical = [b for b in (summary or {}).get("breaches", []) if b["severity"] == CRITICAL]
        overrides = (summary or {}).get("overrides", [])
        stored = {o.pk: o for o in run.overrides.all()} if run is not None else {}
        zone = action.connection.time_zone
        may_override = user.has_perm("scenarios.override_guardrail")
        return {
            "summary": summary,
            "breaches": [(breach_pill(b), b["message"]) for b in (summary or {}).get("breaches", [])],
            "critical": len(critical),
            "pending": [
                {**o, "can_approve": not override_approve_refusal(override=stored[o["id"]], actor=user)}
                for o in overrides
                if o["state"] == PENDING
            ],
            "approved": [o for o in overrides if o["state"] == APPROVED],
            "rejected": [
                {**o, "rejected_at_text": format_time(stored[o["id"]].rejected_at, zone)}
                for o in overrides
                if o["state"] == REJECTED
            ],
            "can_preflight": user.has_perm("scenarios.run_preflight"),
            "can_request_override": may_override and bool(critical),
            "preflight_url": self._url("preflight", action.pk),
            "override_url": self._url("override_request", action.pk),
        }

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
