"""Asking for an approved action to run now (the API's execute and the admin's button)."""

from __future__ import annotations

from actions.models import Action, ActionStatus
from actions.selectors import action_status_phrase
from actions.services.circuit import circuit_check
from actions.services.dispatch import actions_dispatch
from budgetradar.errors import InvalidState
from budgetradar.tenancy import require_perm, require_same_tenant
from safety.gate import gate_execute

ALREADY_UNDERWAY = {
    ActionStatus.QUEUED,
    ActionStatus.EXECUTING,
    ActionStatus.SUCCEEDED,
    ActionStatus.PARTIALLY_EXECUTED,
    ActionStatus.ROLLING_BACK,
    ActionStatus.ROLLED_BACK,
    ActionStatus.ROLLBACK_FAILED,
}


def execution_key(action: Action) -> str:
    """The deterministic idempotency key of one approval's execution (tenant, action, approval)."""
    approved = action.approved_at.strftime("%Y%m%dT%H%M%S%f") if action.approved_at else "unapproved"
    return f"execute:{action.tenant_id}:{action.pk}:{approved}"


def action_execute_request(*, action: Action, actor) -> Action:
    """Dispatch an approved action now; the worker executes it.

    Idempotent: for an action already queued, executing or finished nothing happens and
    the action is returned as it is, so 20 concurrent requests cause one execution (the
    dispatch is a compare-and-set and the job claim another). Refuses actions that are
    not approved (a failed one needs re-approval), connections whose circuit is open, and
    changes the safety gate refuses now (``safety.gate.gate_execute``: value sanity, the
    one-entity preflight, critical breaches without an approved override).
    """
    require_same_tenant(actor, action.tenant, what="action")
    require_perm(actor, "actions.execute_action", doing="execute actions")
    if action.status in ALREADY_UNDERWAY:
        return action
    if action.status != ActionStatus.APPROVED:
        hint = " Approve it again to retry." if action.status == ActionStatus.FAILED else ""
        raise InvalidState(
            f"Action #{action.pk} {action_status_phrase(action)}; only approved actions can be executed.{hint}"
        )
    circuit_check(action.connection)
    gate_execute(action=action, actor=actor)  # guardrails for a change sent now; makes it due now
    if not action.idempotency_key:
        Action.objects.filter(pk=action.pk, idempotency_key="").update(idempotency_key=execution_key(action))
    actions_dispatch(action_ids=[action.pk])
    return Action.objects.get(pk=action.pk)
