"""Overrides of critical guardrail breaches: asked with a reason, approved by a second person.

One flow for live deploys and single actions: an override belongs to one preflight, a
scenario's or an action's one-entity preflight (``PreflightRun.action``). Asking needs
the override permission and a reason; approving needs the override permission, another
person than the one who asked, and, when the tenant asks for four-eyes, someone who did
not create or last change what it lets through (``safety.four_eyes``). Both are audited.
"""

from __future__ import annotations

from django.utils import timezone

from actions.models import Action
from budgetradar.audit import audited_save
from budgetradar.errors import InvalidState, PermissionDenied, ValidationFailed
from budgetradar.tenancy import require_perm, require_same_tenant
from safety.gate import critical_breaches, gate_override_approval, latest_preflight
from scenarios.models import GuardrailOverride, PreflightRun


def override_request(*, preflight: PreflightRun, actor, reason: str) -> GuardrailOverride:
    """Ask to go ahead despite the preflight's critical breaches (needs a second approver)."""
    require_same_tenant(actor, preflight.tenant, what="preflight")
    require_perm(actor, "scenarios.override_guardrail", doing="override guardrails")
    if not reason or not reason.strip():
        raise ValidationFailed("An override needs a reason.", details={"reason": "required"})
    if not preflight.has_critical:
        raise InvalidState(f"Preflight {preflight.run_id} has no critical breaches; nothing to override.")
    override = GuardrailOverride(
        tenant=preflight.tenant, preflight=preflight, reason=reason.strip(), requested_by=actor
    )
    audited_save(override, actor=actor, reason=f"override requested: {reason.strip()}")
    return override


def action_override_request(*, action: Action, actor, reason: str) -> GuardrailOverride:
    """Ask to override the critical breaches of the action's latest one-entity preflight."""
    require_same_tenant(actor, action.tenant, what="action")
    preflight = latest_preflight(action)
    if preflight is None or not critical_breaches(preflight):
        raise InvalidState(
            f"Action #{action.pk} has no preflight with critical breaches to override; its latest preflight "
            "shows none. Run a preflight of the action first.",
            code="nothing_to_override",
        )
    return override_request(preflight=preflight, actor=actor, reason=reason)


def override_approve(*, override: GuardrailOverride, actor) -> GuardrailOverride:
    """The second pair of eyes: someone else with the override permission approves it."""
    require_same_tenant(actor, override.tenant, what="override")
    require_perm(actor, "scenarios.override_guardrail", doing="approve guardrail overrides")
    if override.requested_by_id == actor.pk:
        raise PermissionDenied("An override needs a second approver: you requested this one.")
    gate_override_approval(override=override, actor=actor)
    if override.approved:
        return override
    override.approved_by, override.approved_at = actor, timezone.now()
    audited_save(override, actor=actor, reason="override approved")
    return override
