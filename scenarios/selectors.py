"""Read-only facts about scenarios, their preflights and overrides that the admin and the
API present alike.

Nothing here writes; the decisions (is an override pending, may this preflight still be
deployed, is a confirmation still about the preflight a deploy would use) are the same
ones the services enforce, stated so a page can show them before a click. Whether a
person may approve an override is ``safety.overrides.override_approve_refusal``.
"""

from __future__ import annotations

from django.utils.timesince import timesince

from scenarios.models import Deployment, GuardrailOverride, PreflightRun, Scenario
from scenarios.services.guardrails import CRITICAL
from scenarios.services.preflight import preflight_age_rule, preflight_breaches, preflight_is_fresh, preflight_read_at

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
    return preflight_breaches(override.preflight, severity=CRITICAL)  # all, not only the summary's first


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


# Preflights and confirmations ---------------------------------------------------------------


def latest_scenario_preflight(scenario: Scenario, *, succeeded: bool = False) -> PreflightRun | None:
    """The scenario's newest preflight (the newest succeeded one with ``succeeded``)."""
    runs = scenario.preflights.select_related("created_by").order_by("-created_at", "-id")
    if succeeded:
        runs = runs.filter(status=PreflightRun.Status.SUCCEEDED)
    return runs.first()


def preflight_freshness(run: PreflightRun, scenario: Scenario | None) -> str:
    """Whether ``run`` may still be deployed, as a sentence: its platforms' age limit,
    counted from when its reads finished, and changes to the plan since."""
    if run.status in (PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING):
        return "This preflight is still reading the platforms; a live deploy waits until it has succeeded."
    if run.status != PreflightRun.Status.SUCCEEDED:
        return "This preflight did not succeed; run a new one before deploying."
    read_at, rule = preflight_read_at(run), preflight_age_rule(run)
    if not preflight_is_fresh(run):
        return f"Read {timesince(read_at)} ago: older than {rule}, so run a new preflight to deploy."
    if scenario is not None and scenario.updated_at > run.created_at:
        return "The scenario changed after this preflight; run a new preflight before deploying."
    return f"Read {timesince(read_at)} ago; a live deploy needs a preflight whose reads finished less than {rule} ago."


def deploy_confirmation_is_stale(
    scenario: Scenario, latest: PreflightRun | None, *, idempotency_key: str, confirmed_preflight: str
) -> bool:
    """True when a live-deploy confirmation showed another preflight (``confirmed_preflight``,
    its id as posted) than ``latest``, the one a deploy would use now; False for a replay
    (the key already made a deployment of the scenario's tenant), which returns that one."""
    if idempotency_key and Deployment.objects.filter(tenant=scenario.tenant, idempotency_key=idempotency_key).exists():
        return False
    return latest is None or str(latest.pk) != confirmed_preflight
