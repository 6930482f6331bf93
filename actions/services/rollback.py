"""Rolling executed actions back to their before-state.

Request (``action_rollback_request`` for one action, ``actions_rollback_request`` for
many, e.g. a deployment; synchronous, no platform call): the action must be succeeded
or partially executed (or a failed rollback being retried), its rollback instructions
must still be valid (``ROLLBACK_VALID_HOURS`` after execution), and an override of
drift needs the admin permission and a reason. It moves the action to
``rolling_back``, due now; the dispatcher gives it to a rollback job.

Worker side (used by the engine for rollback jobs, and by the reconciler): the worker
takes the rollback under its lease (``rollback_claim``), reads the entity, and
``rollback_decide`` says what to do: removed on the platform -> cannot be rolled back
(said so); already at the before-values (an earlier attempt's request landed) ->
rolled back without sending; changed since execution (drift from the after-state) ->
refused unless overridden, so nobody's later change is overwritten; otherwise it is
sent, read back and settled by ``rollback_verify``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_fsm import can_proceed

from actions.models import Action, ActionJob, ActionStatus, LogEvent
from actions.selectors import action_status_phrase
from actions.services import outcomes as out
from actions.services.circuit import circuit_check
from actions.services.dispatch import actions_dispatch
from actions.services.leases import Lease
from actions.services.settlement import Settlement, transition_actions
from actions.services.verification import describe, same_value
from budgetradar.errors import DomainError, InvalidState
from budgetradar.tenancy import require_perm, require_same_tenant
from budgetradar.timefmt import format_time, zone_of
from platforms.models import PlatformConnection
from platforms.types import MONEY_FIELDS, Change, EntityState, ErrorCode, Field, OutcomeStatus
from safety.gate import gate_rollback
from scenarios.models import PreflightRun


def action_rollback_request(*, action: Action, actor, reason: str = "", override_drift: bool = False) -> Action:
    """Ask for a rollback; the worker does it. Idempotent for an action already rolling back.
    The refusals are ``action_rollback_refusal``'s."""
    if not _rollback_judge(action, actor, previews=None, reason=reason, override_drift=override_drift):
        return action
    moved = actions_rollback_request(
        actions=[action], actor=actor, reason=reason, override_drift=override_drift, checked=True
    )
    if not moved:
        raise InvalidState(f"Action #{action.pk} changed at the same moment; reload and retry.", code="conflict")
    return moved[0]


def action_rollback_refusal(
    *, action: Action, actor, previews: dict[int, PreflightRun], reason: str = "", override_drift: bool = False
) -> DomainError | None:
    """Why ``action_rollback_request`` would refuse ``action`` now, or None, writing
    nothing: its rules in its order (role, state and instructions, an expired rollback,
    the drift override's permission and reason, an open circuit), then the gate judging
    the unsaved rollback preflight ``previews`` by action id
    (``safety.gate.actions_preflight_preview`` with ``rollback=True``). An action already
    rolling back is not refused (the request returns it as it is)."""
    try:
        _rollback_judge(action, actor, previews=previews, reason=reason, override_drift=override_drift)
    except DomainError as exc:
        return exc
    return None


def rollback_underway_refusal(action: Action) -> InvalidState | None:
    """What a person asking to roll back an action already rolling back is told (the request
    itself quietly returns it, right for API retries)."""
    if action.status != ActionStatus.ROLLING_BACK:
        return None
    return InvalidState(f"Action #{action.pk} {action_status_phrase(action)}: a rollback is under way.")


def action_rollback_now(*, action: Action, actor, reason: str = "", override_drift: bool = False) -> Action:
    """The Roll back button: ``rollback_underway_refusal``, then ``action_rollback_request``."""
    refused = rollback_underway_refusal(action)
    if refused is not None:
        raise refused
    return action_rollback_request(action=action, actor=actor, reason=reason, override_drift=override_drift)


def _rollback_judge(
    action: Action, actor, *, previews: dict[int, PreflightRun] | None, reason: str, override_drift: bool
) -> bool:
    """Raise the refusal of rolling ``action`` back; False when it is already rolling back
    (nothing to do), True when it may go. With ``previews`` nothing is written."""
    require_same_tenant(actor, action.tenant, what="action")
    require_perm(actor, "actions.rollback_action", doing="roll back actions")
    if action.status == ActionStatus.ROLLING_BACK:
        return False
    rollback_check_state(action)
    if override_drift:
        require_perm(actor, "actions.override_rollback_drift", doing="override a rollback drift check")
        if not reason.strip():
            raise DomainError("Overriding the drift check needs a reason.", code="reason_required")
    circuit_check(action.connection)
    gate_rollback(action=action, actor=actor, previews=previews)  # a rollback is a change: it passes the gate too
    return True


def actions_rollback_request(
    *, actions: Sequence[Action], actor, reason: str = "", override_drift: bool = False, checked: bool = False
) -> list[Action]:
    """Move many actions to ``rolling_back`` (one transaction) and dispatch them after commit.

    Unless ``checked``, actions without valid instructions are skipped (not an error) and
    every connection's circuit must be closed.
    """
    if not checked:
        actions = [a for a in actions if _has_valid_instructions(a)]
        for connection in PlatformConnection.objects.filter(pk__in={a.connection_id for a in actions}):
            circuit_check(connection)
    user = actor if getattr(actor, "is_authenticated", False) else None
    with transaction.atomic():
        moved = transition_actions(
            actions,
            "start_rollback",
            actor=actor,
            reason=f"rollback requested: {reason}" if reason else "rollback requested",
            kwargs={"by": user, "reason": reason, "override_drift": override_drift, "at": timezone.now()},
            event=LogEvent.ROLLBACK_STARTED,
            message=reason or "Rollback requested.",
            log=lambda a: {"request": a.rollback_params},
        )
        ids = [a.pk for a in moved]
        if ids:
            transaction.on_commit(lambda: actions_dispatch(action_ids=ids))
    return moved


def rollback_check_state(action: Action) -> None:
    """Raise ``InvalidState`` unless the action's state and instructions allow a rollback now."""
    if not can_proceed(action.start_rollback):
        raise InvalidState(
            f"Action #{action.pk} {action_status_phrase(action)}; only succeeded or partially "
            "executed actions can be rolled back."
        )
    rollback_check_instructions(action)


def rollback_check_instructions(action: Action) -> None:
    if not action.rollback_params or not action.rollback_params.get("changes"):
        raise InvalidState(f"Action #{action.pk} has no rollback instructions: nothing was applied.")
    if action.rollback_deadline is None or action.rollback_deadline < timezone.now():
        deadline = action.rollback_deadline
        expired = f" expired at {format_time(deadline, zone_of(action))}" if deadline else ""
        raise InvalidState(
            f"The rollback instructions of action #{action.pk}{expired}; they are valid for 24 hours after "
            "execution. Propose a new action with the value you want instead.",
            code="rollback_expired",
        )


def _has_valid_instructions(action: Action) -> bool:
    try:
        rollback_check_instructions(action)
    except InvalidState:
        return False
    return True


# Worker side -------------------------------------------------------------------------------


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


def rollback_claim(job: ActionJob, *, lease: Lease, limit: int) -> list[Action]:
    """Take up to ``limit`` unclaimed rollbacks of ``job`` under ``lease`` (a new attempt each)."""
    with transaction.atomic():
        ids = list(
            Action.objects.select_for_update(skip_locked=True)
            .filter(job=job, status=ActionStatus.ROLLING_BACK, lease_owner="")
            .order_by("id")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            Action.objects.filter(pk__in=ids).update(
                lease_owner=lease.token,
                lease_expires_at=lease.expires_at,
                attempts=F("attempts") + 1,
                reconcile_attempts=0,
                next_attempt_at=None,
                wait_reason="",
            )
    return list(
        Action.objects.filter(pk__in=ids, lease_owner=lease.token).select_related(
            "entity__parent", "entity__connection", "connection"
        )
    )


def rollback_postpone(actions: Sequence[Action], *, lease: Lease | None, next_attempt_at: datetime, reason: str) -> int:
    """Give rollbacks that sent nothing back to the dispatcher, due at ``next_attempt_at``.

    Not a state change (they stay ``rolling_back``); fenced on ``lease`` when given.
    """
    rows = Action.objects.filter(pk__in=[a.pk for a in actions], status=ActionStatus.ROLLING_BACK)
    if lease is not None:
        rows = rows.filter(lease_owner=lease.token)
    return rows.update(
        lease_owner="", lease_expires_at=None, job=None, next_attempt_at=next_attempt_at, wait_reason=reason
    )


def rollback_decide(action: Action, changes: list[Change], state: EntityState | None, *, now) -> Settlement | None:
    """A Settlement when the rollback ends without sending; None when it must be sent."""
    if state is None or state.status == "removed":
        return out.rollback_failed(
            action,
            ErrorCode.NOT_FOUND,
            f"{action.entity.name} was removed on the platform; a removed entity cannot be rolled back.",
        )
    if all(same_value(c.field, state.value_of(c.field), c.value) for c in changes):
        return out.rolled_back(
            action, after=state, now=now, message="The platform already shows the before-values; nothing to send."
        )
    drift = [c for c in changes if not same_value(c.field, state.value_of(c.field), _after_value(action, c.field))]
    if drift and not action.rollback_override_drift:
        details = "; ".join(
            f"{c.field} is {describe(state.value_of(c.field))}, "
            f"BudgetRadar set {describe(_after_value(action, c.field))}"
            for c in drift
        )
        return out.rollback_failed(
            action,
            "drifted",
            f"Not rolled back: {action.entity.name} changed after execution "
            f"({details}). Rolling back would overwrite that change; an admin may override with a reason.",
            after=state,
        )
    return None


def rollback_verify(actions, plans, results, after, *, now) -> tuple[list[Settlement], list[tuple[Action, str]]]:
    """Settle sent rollbacks from the read-back; unknown outcomes go to the reconciler."""
    settlements, unresolved = [], []
    for action in actions:
        outcomes = results[action.pk]
        if any(o.status == OutcomeStatus.UNKNOWN for o in outcomes):
            unresolved.append((action, "the platform's answer to the rollback was lost"))
            continue
        state = after.get(action.entity.to_ref().key)
        if state is not None and all(same_value(c.field, state.value_of(c.field), c.value) for c in plans[action.pk]):
            settlements.append(
                out.rolled_back(
                    action, after=state, now=now, message="Rolled back; verified by reading the platform back."
                )
            )
            continue
        error = next((o.error for o in outcomes if o.error), None)
        message = error.message if error else "The platform did not show the before-values after the rollback."
        settlements.append(
            out.rollback_failed(action, error.code if error else ErrorCode.UNKNOWN, message, after=state)
        )
    return settlements, unresolved
