"""Read-only facts about scenarios' overrides that the admin and the API present alike.

Nothing here writes; the decisions (may this person approve, is one pending) are the
same ones ``safety.overrides`` enforces, stated so a page can show them before a click.
"""

from __future__ import annotations

from safety.four_eyes import override_authors
from scenarios.models import GuardrailOverride, PreflightRun
from scenarios.services.guardrails import CRITICAL

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
STATE_LABELS = {PENDING: "Awaiting a second approver", APPROVED: "Approved", REJECTED: "Rejected"}


def override_state(override: GuardrailOverride) -> str:
    """``pending``, ``approved`` or ``rejected``."""
    if override.approved:
        return APPROVED
    return REJECTED if override.rejected else PENDING


def pending_override(run: PreflightRun | None) -> GuardrailOverride | None:
    """The preflight's override still waiting for a decision (at most one can be asked)."""
    if run is None:
        return None
    return next((o for o in run.overrides.all() if o.pending), None)


def override_breaches(override: GuardrailOverride) -> list[dict]:
    """The critical breaches of the override's preflight: what an approval lets through."""
    return [b for b in (override.preflight.payload or {}).get("breaches") or [] if b.get("severity") == CRITICAL]


def approve_refusal(override: GuardrailOverride, user) -> str:
    """Why ``user`` may not approve the override now, as a sentence; empty when they may.

    The same rules as ``safety.overrides.override_approve`` (permission, not the
    requester, four-eyes on the authors of what it lets through, still pending)."""
    if not user.has_perm("scenarios.override_guardrail"):
        return "Approving overrides needs the override permission."
    if not override.pending:
        return f"This override is already {override_state(override)}."
    if override.requested_by_id == user.pk:
        return "You requested this override; another person with the override permission must approve it."
    if override.tenant.four_eyes_required and user.pk in override_authors(override):
        return (
            "Four-eyes approval is required: you created or last changed what this override lets through, "
            "so another person must approve it."
        )
    return ""


def next_step(override: GuardrailOverride) -> str:
    """What happens next for this override, in one sentence for the requester and everyone."""
    state = override_state(override)
    target = "the action" if override.preflight.action_id else "the live deploy"
    if state == APPROVED:
        return f"Approved by {override.approved_by}: {target} may now go ahead despite these breaches."
    if state == REJECTED:
        return (
            f"Rejected by {override.rejected_by}; the breaches still block {target}. A new override may be requested."
        )
    four_eyes = " who did not create or last change what it lets through" if override.tenant.four_eyes_required else ""
    return (
        f"Another person than {override.requested_by} with the override permission{four_eyes} must approve or "
        f"reject it on this override's page; until then the breaches block {target}."
    )
