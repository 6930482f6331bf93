"""Rolling executed actions back to their before-state.

Request (``action_rollback_request``, synchronous, no platform call): the action must be
succeeded or partially executed (or a failed rollback being retried), its rollback
instructions must still be valid (``ROLLBACK_VALID_HOURS`` after execution), and an
override of drift needs the admin permission and a reason. It moves the action to
``rolling_back`` and dispatches a rollback job after commit.

Run (``run_rollback_job``, in the worker): read the entity; if it was removed on the
platform it cannot be rolled back (said so); if it changed since execution (drift from
the after-state) the rollback is refused unless overridden, so nobody's later change is
overwritten; if it already shows the before-values (a crashed rollback that did apply)
it settles without sending; otherwise apply, read back, settle ``rolled_back`` or
``rollback_failed``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from actions.models import Action, ActionJob, ActionStatus, LogEvent
from actions.services.circuit import circuit_check
from actions.services.lifecycle import save_transition
from actions.services.logs import log_event, log_events
from actions.services.runner import PlatformRunner
from actions.services.verification import describe, same_value
from budgetradar.errors import DomainError, InvalidState
from budgetradar.tenancy import require_perm, require_same_tenant
from platforms.types import (
    MONEY_FIELDS,
    Change,
    EntityState,
    ErrorCode,
    Field,
    OutcomeStatus,
    PlatformCallError,
    PlatformError,
)


def action_rollback_request(*, action: Action, actor, reason: str = "", override_drift: bool = False) -> Action:
    """Ask for a rollback; the worker does it. Idempotent for an action already rolling back."""
    require_same_tenant(actor, action.tenant, what="action")
    require_perm(actor, "actions.rollback_action", doing="roll back actions")
    if action.status == ActionStatus.ROLLING_BACK:
        return action
    if not can_proceed(action.start_rollback):
        raise InvalidState(
            f"Action #{action.pk} is {action.get_status_display().lower()}; only succeeded or partially "
            "executed actions can be rolled back."
        )
    _check_instructions(action)
    if override_drift:
        require_perm(actor, "actions.override_rollback_drift", doing="override a rollback drift check")
        if not reason.strip():
            raise DomainError("Overriding the drift check needs a reason.", code="reason_required")
    circuit_check(action.connection)
    with transaction.atomic():
        action.start_rollback(by=actor, reason=reason, override_drift=override_drift)
        save_transition(action, actor=actor, reason=f"rollback requested: {reason}" if reason else "rollback requested")
        log_event(
            action=action,
            event=LogEvent.ROLLBACK_STARTED,
            actor=actor,
            message=reason or "Rollback requested.",
            request=action.rollback_params,
        )
        transaction.on_commit(lambda: _dispatch(action.pk))
    return action


def _check_instructions(action: Action) -> None:
    if not action.rollback_params or not action.rollback_params.get("changes"):
        raise InvalidState(f"Action #{action.pk} has no rollback instructions: nothing was applied.")
    if action.rollback_deadline is None or action.rollback_deadline < timezone.now():
        expired = f" expired at {action.rollback_deadline:%Y-%m-%d %H:%M} UTC" if action.rollback_deadline else ""
        raise InvalidState(
            f"The rollback instructions of action #{action.pk}{expired}; they are valid for 24 hours after "
            "execution. Propose a new action with the value you want instead.",
            code="rollback_expired",
        )


def _dispatch(action_id: int) -> None:
    from actions.services.dispatch import actions_dispatch

    actions_dispatch(action_ids=[action_id])


# Worker side --------------------------------------------------------------------------


def rollback_changes(action: Action) -> list[Change]:
    ref = action.entity.to_ref()
    return [
        Change(ref=ref, field=Field(c["field"]), value=_typed(Field(c["field"]), c["value"]), key=str(action.pk))
        for c in action.rollback_params["changes"]
    ]


def _typed(field: Field, value: Any) -> Any:
    if value is not None and field in MONEY_FIELDS:
        return Decimal(value)
    return value


def _after_value(action: Action, field: Field) -> Any:
    return (action.after_state or {}).get(str(field))


def run_rollback_job(*, job: ActionJob, runner: PlatformRunner, worker: str):
    from actions.services.engine import Settlement, job_finish

    actions = list(
        Action.objects.filter(job=job, status=ActionStatus.ROLLING_BACK).select_related("entity__parent", "connection")
    )
    plans = {a.pk: rollback_changes(a) for a in actions}
    try:
        live = runner.read(a.entity.to_ref() for a in actions)
    except PlatformCallError as exc:
        from actions.services.engine import CONNECTION_LEVEL

        settlements = [_refused(a, exc.error.code, f"{exc.error.message} Nothing was sent.") for a in actions]
        return job_finish(job, runner, worker, settlements, connection_failed=exc.error.code in CONNECTION_LEVEL)
    settlements, to_send = [], []
    for action in actions:
        decision = _decide(action, plans[action.pk], live.get(action.entity.to_ref().key))
        if isinstance(decision, Settlement):
            settlements.append(decision)
        else:
            to_send.append(action)
    log_events(
        {
            "action": a,
            "event": LogEvent.REQUEST_SENT,
            "actor": worker,
            "message": "Sending rollback.",
            "request": a.rollback_params,
        }
        for a in to_send
    )
    changes = [c for a in to_send for c in plans[a.pk]]
    outcomes = runner.apply(changes) if changes else []
    settlements += _verify(to_send, plans, changes, outcomes, runner)
    return job_finish(job, runner, worker, settlements, connection_failed=False)


def _decide(action: Action, changes: list[Change], state: EntityState | None):
    """A Settlement when the rollback ends without sending; None when it must be sent."""
    from actions.services.engine import Settlement

    if state is None or state.status == "removed":
        return _refused(
            action,
            ErrorCode.NOT_FOUND,
            f"{action.entity.name} was removed on the platform; a removed entity cannot be rolled back.",
        )
    if all(same_value(c.field, state.value_of(c.field), c.value) for c in changes):
        return Settlement(
            action,
            "finish_rollback",
            LogEvent.ROLLBACK_SUCCEEDED,
            after=state,
            message="The platform already shows the before-values; nothing to send.",
        )
    drift = [c for c in changes if not same_value(c.field, state.value_of(c.field), _after_value(action, c.field))]
    if drift and not action.rollback_override_drift:
        details = "; ".join(
            f"{c.field} is {describe(state.value_of(c.field))}, "
            f"BudgetRadar set {describe(_after_value(action, c.field))}"
            for c in drift
        )
        return _refused(
            action,
            "drifted",
            f"Not rolled back: {action.entity.name} changed after execution "
            f"({details}). Rolling back would overwrite that change; an admin may override with a reason.",
        )
    return None


def _verify(actions, plans, changes, outcomes, runner: PlatformRunner):
    from actions.services.engine import Settlement

    by_key = dict(zip(((c.key, c.field) for c in changes), outcomes, strict=True))
    try:
        after = runner.read(a.entity.to_ref() for a in actions)
    except PlatformCallError:
        return []  # cannot verify now; the reconciler settles them from platform truth
    settlements = []
    for action in actions:
        state = after.get(action.entity.to_ref().key)
        results = [by_key[(str(action.pk), c.field)] for c in plans[action.pk]]
        if any(o.status == OutcomeStatus.UNKNOWN for o in results):
            continue
        ok = state is not None and all(same_value(c.field, state.value_of(c.field), c.value) for c in plans[action.pk])
        if ok:
            settlements.append(
                Settlement(
                    action,
                    "finish_rollback",
                    LogEvent.ROLLBACK_SUCCEEDED,
                    after=state,
                    message="Rolled back; verified by reading the platform back.",
                )
            )
            continue
        error = next((o.error for o in results if o.error), None)
        message = error.message if error else "The platform did not show the before-values after the rollback."
        settlements.append(_refused(action, error.code if error else ErrorCode.UNKNOWN, message, after=state))
    return settlements


def _refused(action: Action, code, message: str, after: EntityState | None = None):
    """A failed rollback: taxonomy codes carry their own retryable and hint."""
    from actions.services.engine import Settlement, error_payload

    if str(code) in ErrorCode._value2member_map_:
        error = PlatformError(code=ErrorCode(str(code)), message=message).as_dict()
    else:
        error = error_payload(str(code), message, retryable=False, hint=DRIFT_HINT)
    return Settlement(action, "fail_rollback", LogEvent.ROLLBACK_FAILED, error=error, after=after, message=message)


DRIFT_HINT = (
    "Check who changed the entity and whether their change should stay. To roll back anyway, an admin can "
    "retry the rollback with 'override drift' and a reason."
)
