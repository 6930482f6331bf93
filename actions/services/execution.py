"""Asking for an approved action to run now (the API's execute and the admin's button)."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from actions.models import Action, ActionStatus
from actions.selectors import action_status_phrase
from actions.services.circuit import circuit_check
from actions.services.dispatch import actions_dispatch
from budgetradar.errors import DomainError, InvalidState
from budgetradar.tenancy import require_perm, require_same_tenant
from safety.gate import gate_execute
from scenarios.models import PreflightRun

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


def action_execute_refusal(
    *, action: Action, actor, previews: dict[int, PreflightRun], now: datetime | None = None
) -> DomainError | None:
    """Why ``action_execute_request`` would refuse ``action`` now, or None, writing nothing:
    its rules in its order, the gate judging the unsaved preflight ``previews`` by action
    id (``safety.gate.actions_preflight_preview``). An action already underway is not
    refused (the request returns it as it is)."""
    try:
        _execute_judge(action, actor, previews=previews, now=now)
    except DomainError as exc:
        return exc
    return None


def underway_refusal(action: Action) -> InvalidState | None:
    """The Execute button's own rule: a person pressing it for an action already sent to
    the engine is told so (the request itself quietly returns it, right for API retries)."""
    if action.status not in ALREADY_UNDERWAY:
        return None
    return InvalidState(f"Action #{action.pk} {action_status_phrase(action)}; it was already sent to the engine.")


def action_execute_now(*, action: Action, actor) -> Action:
    """The Execute button: ``underway_refusal``, then ``action_execute_request``."""
    refused = underway_refusal(action)
    if refused is not None:
        raise refused
    return action_execute_request(action=action, actor=actor)


def _execute_judge(action: Action, actor, *, previews: dict[int, PreflightRun] | None, now: datetime | None) -> bool:
    """Raise the refusal of executing ``action``; False when it is already underway (nothing
    to do), True when it may be dispatched. With ``previews`` nothing is written."""
    require_same_tenant(actor, action.tenant, what="action")
    require_perm(actor, "actions.execute_action", doing="execute actions")
    if action.status in ALREADY_UNDERWAY:
        return False
    if action.status != ActionStatus.APPROVED:
        hint = " Approve it again to retry." if action.status == ActionStatus.FAILED else ""
        raise InvalidState(
            f"Action #{action.pk} {action_status_phrase(action)}; only approved actions can be executed.{hint}"
        )
    circuit_check(action.connection)
    gate_execute(action=action, actor=actor, now=now, previews=previews)  # guardrails for a change sent now
    return True


def action_execute_request(*, action: Action, actor) -> Action:
    """Dispatch an approved action now; the worker executes it.

    Idempotent: for an action already queued, executing or finished nothing happens and
    the action is returned as it is, so 20 concurrent requests cause one execution (the
    dispatch is a compare-and-set and the job claim another). Refuses actions that are
    not approved (a failed one needs re-approval), connections whose circuit is open, and
    changes the safety gate refuses now (``safety.gate.gate_execute``: value sanity, the
    one-entity preflight, critical breaches without an approved override); the refusals
    are ``action_execute_refusal``'s. Once the gate passed the action is due now.
    """
    now = timezone.now()
    if not _execute_judge(action, actor, previews=None, now=now):
        return action
    Action.objects.filter(pk=action.pk, status=ActionStatus.APPROVED).update(next_attempt_at=now, wait_reason="")
    action.next_attempt_at, action.wait_reason = now, ""
    if not action.idempotency_key:
        Action.objects.filter(pk=action.pk, idempotency_key="").update(idempotency_key=execution_key(action))
    actions_dispatch(action_ids=[action.pk])
    return Action.objects.get(pk=action.pk)
