"""Overrides of critical guardrail breaches: asked with a reason, approved by a second person.

One flow for live deploys and single actions: an override belongs to one preflight, a
scenario's or an action's one-entity preflight (``PreflightRun.action``). Asking needs
the override permission and a reason; approving needs the override permission, another
person than the one who asked, and, when the tenant asks for four-eyes, someone who did
not create or last change what it lets through (``safety.four_eyes``). A second person
with the permission may instead reject it with a comment. While one is pending no other
can be asked for the same preflight. Every step is audited with its comment.
"""

from __future__ import annotations

from django.utils import timezone

from actions.models import Action
from budgetradar.audit import audited_save
from budgetradar.errors import DomainError, InvalidState, PermissionDenied, ValidationFailed
from budgetradar.tenancy import refusal_message, require_perm, require_same_tenant
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
    if preflight.overrides.filter(approved_at__isnull=True, rejected_at__isnull=True).exists():
        raise InvalidState(
            f"An override of preflight {preflight.run_id} is already waiting for a second approver.",
            code="override_pending",
        )
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


def _with_comment(what: str, comment: str) -> str:
    comment = (comment or "").strip()
    return f"{what}: {comment}" if comment else what


def override_approve_refusal(*, override: GuardrailOverride, actor) -> str:
    """Why ``actor`` may not approve the override now, as the sentence they read; empty
    when they may. The one statement of the approval rules: ``override_approve`` raises
    with this sentence and the admin shows it before anyone clicks."""
    refused = _approve_refused(override, actor)
    return refused.message if refused is not None else ""


def _approve_refused(override: GuardrailOverride, actor) -> DomainError | None:
    """The refusal of approving: the override permission, another person than the
    requester, four-eyes on the authors of what it lets through, and still pending."""
    perm = "scenarios.override_guardrail"
    if actor is None or not actor.has_perm(perm):
        return PermissionDenied(refusal_message(actor, perm, doing="approve guardrail overrides"))
    if override.requested_by_id == actor.pk:
        return PermissionDenied(
            "You requested this override; another person with the override permission must approve it."
        )
    try:
        gate_override_approval(override=override, actor=actor)
    except PermissionDenied as exc:
        return exc
    if override.rejected:
        return InvalidState(f"{override} was rejected; request a new one.", code="override_rejected")
    if override.approved:
        return InvalidState(f"{override} is already approved.", code="override_approved")
    return None


def override_approve(*, override: GuardrailOverride, actor, comment: str = "") -> GuardrailOverride:
    """The second pair of eyes: someone else with the override permission approves it
    (the comment goes into its history), refused with ``override_approve_refusal``'s
    sentence. Approving an approved override again returns it (an API retry); a rejected
    override cannot be approved."""
    require_same_tenant(actor, override.tenant, what="override")
    refused = _approve_refused(override, actor)
    if refused is not None and refused.code != "override_approved":
        raise refused
    if override.approved:
        return override
    override.approved_by, override.approved_at = actor, timezone.now()
    audited_save(override, actor=actor, reason=_with_comment("override approved", comment))
    return override


def override_reject(*, override: GuardrailOverride, actor, comment: str) -> GuardrailOverride:
    """Refuse a pending override with a comment (needed: the requester reads it in the
    history); the breaches keep blocking and a new override may be requested."""
    require_same_tenant(actor, override.tenant, what="override")
    require_perm(actor, "scenarios.override_guardrail", doing="reject guardrail overrides")
    if not comment or not comment.strip():
        raise ValidationFailed("A rejection needs a comment.", details={"comment": "required"})
    if override.approved:
        raise InvalidState(f"{override} is already approved.", code="override_approved")
    if override.rejected:
        return override
    override.rejected_by, override.rejected_at = actor, timezone.now()
    audited_save(override, actor=actor, reason=_with_comment("override rejected", comment))
    return override
