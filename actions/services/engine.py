"""The execution engine: runs a claimed job's actions against the platform exactly once.

A job run, step by step (each step's rows are written in bulk, never per action):
1. claim the job with a compare-and-set (queued -> running); a second worker gets
   nothing. A connection whose circuit is open is not claimed (its jobs wait).
2. move the job's queued actions to ``executing``;
3. read the live state of their entities and persist it as ``before_state`` *before*
   anything is sent (the reconciler depends on it);
4. refuse what must not run: entity gone (``not_found``), live value differs from the
   baseline the approval or preflight saw (``stale``: a new preflight is needed);
5. log ``request_sent`` (committed) and apply the changes in platform batches through
   ``PlatformRunner`` (retries, backoff, ambiguity reconciliation);
6. read the entities back and settle each action: ``succeeded`` only when the read-back
   shows every target value, ``partially_executed`` when some fields did, else
   ``failed`` with code, message, retryable and hint. Succeeded fields get rollback
   instructions valid ``ROLLBACK_VALID_HOURS``.
If the worker dies anywhere in between, the reconciler settles the actions from
platform truth (see ``reconcile.py``); nothing is applied twice because every change
is an absolute value and the reconciler reads before it decides.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from actions.changes import changes_for, target_values
from actions.models import Action, ActionJob, ActionStatus, JobKind, JobStatus, LogEvent
from actions.services.circuit import circuit_acquire, circuit_record_failure, circuit_record_success
from actions.services.logs import log_events
from actions.services.runner import PlatformRunner
from actions.services.transitions import bulk_transition
from actions.services.verification import describe, drifted_fields, same_value
from budgetradar.bulk import bulk_set
from platforms.base import Throttle
from platforms.ratelimit import rate_limit_backoff
from platforms.registry import get_executor
from platforms.retry import RetryPolicy
from platforms.types import (
    Change,
    ChangeOutcome,
    EntityState,
    ErrorCode,
    OutcomeStatus,
    PlatformCallError,
    PlatformError,
)

# Codes that say the connection itself is unhealthy (they count for the circuit breaker).
CONNECTION_LEVEL = frozenset(
    {
        ErrorCode.AUTH_EXPIRED,
        ErrorCode.PERMISSION_DENIED,
        ErrorCode.RATE_LIMITED,
        ErrorCode.TRANSIENT,
        ErrorCode.UNKNOWN,
    }
)
ERROR_FIELDS = ["error_code", "error_message", "error_retryable", "error_hint"]


def worker_id() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}"


@dataclass
class Settlement:
    """How one action ends (computed in memory, written in bulk)."""

    action: Action
    transition: str  # succeed / fail / partially_execute
    event: LogEvent
    error: dict[str, Any] | None = None
    after: EntityState | None = None
    rollback_changes: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""


@dataclass
class JobReport:
    job_id: int
    status: str
    succeeded: int = 0
    failed: int = 0
    unresolved: int = 0
    round_trips: int = 0


# Claiming ---------------------------------------------------------------------------


def job_claim(*, job_id: int, worker: str) -> ActionJob | None:
    """Compare-and-set queued -> running; None if another worker has it or the circuit refuses."""
    job = ActionJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).first()
    if job is None or not circuit_acquire(job.connection_id):
        return None
    now = timezone.now()
    claimed = ActionJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, claimed_by=worker, started_at=now, lease_expires_at=now
    )
    if claimed != 1:
        return None
    return ActionJob.objects.select_related("connection", "tenant").get(pk=job_id)


def job_process(
    *,
    job_id: int,
    worker: str | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    throttle: Throttle | None = None,
) -> JobReport | None:
    """Claim and run one job. Idempotent: a job already claimed or finished is a no-op.

    Must not run inside a transaction: platform calls happen between short commits so
    the platform and the database never wait on each other. ``throttle`` replaces the
    connection's shared rate limiter (tests and benchmarks).
    """
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("job_process must not run inside transaction.atomic")
    worker = worker or worker_id()
    job = job_claim(job_id=job_id, worker=worker)
    if job is None:
        return None
    runner = PlatformRunner(
        get_executor(job.connection, throttle=throttle),
        policy=policy,
        sleep=sleep,
        on_wait=lambda: _heartbeat(job.pk),
        on_rate_limited=lambda seconds: rate_limit_backoff(connection=job.connection, seconds=seconds),
    )
    if job.kind == JobKind.ROLLBACK:
        from actions.services.rollback import run_rollback_job

        report = run_rollback_job(job=job, runner=runner, worker=worker)
    else:
        report = _run_execute_job(job=job, runner=runner, worker=worker)
    _after_job(job)
    return report


def _heartbeat(job_id: int) -> None:
    ActionJob.objects.filter(pk=job_id, status=JobStatus.RUNNING).update(lease_expires_at=timezone.now())


def _after_job(job: ActionJob) -> None:
    """Work that waited for this job (approved actions on the same connection) runs next."""
    from actions.services.dispatch import dispatch_has_waiting_work
    from actions.tasks import enqueue_dispatch

    if dispatch_has_waiting_work(connection_id=job.connection_id):
        enqueue_dispatch()


# Execute ----------------------------------------------------------------------------


def _run_execute_job(*, job: ActionJob, runner: PlatformRunner, worker: str) -> JobReport:
    queued = list(
        Action.objects.filter(job=job, status=ActionStatus.QUEUED).select_related("entity__parent", "connection")
    )
    now = timezone.now()
    actions = bulk_transition(
        queued,
        "start",
        reason=f"{worker} started job #{job.pk}",
        prepare=lambda a: _mark_started(a, now, worker),
        fields=["started_at", "attempts", "lease_owner", *ERROR_FIELDS],
    )
    refs = {a.pk: a.entity.to_ref() for a in actions}
    try:
        before = runner.read(refs.values())
    except PlatformCallError as exc:
        settlements = [_failed(a, exc.error, "Could not read the live state; nothing was sent.") for a in actions]
        return job_finish(job, runner, worker, settlements, connection_failed=exc.error.code in CONNECTION_LEVEL)
    _store_before(actions, refs, before, worker)
    plans, settlements = _plan(actions, refs, before)
    changes = [c for _, cs in plans for c in cs]
    _log_requests(plans, worker)
    outcomes = runner.apply(changes) if changes else []
    by_action = _group_outcomes(plans, outcomes)
    _log_responses(plans, by_action, worker)
    settlements += _verify_and_settle(plans, by_action, refs, runner, before)
    connection_failed = _connection_failed(outcomes)
    return job_finish(job, runner, worker, settlements, connection_failed=connection_failed)


def _mark_started(action: Action, now, worker: str) -> None:
    action.started_at = now
    action.lease_owner = worker
    action.attempts += 1
    action.clear_error()


def _store_before(actions: list[Action], refs, before, worker: str) -> None:
    """Persist before-states first: a crash after this point is reconcilable."""
    for action in actions:
        state = before.get(refs[action.pk].key)
        action.before_state = state.as_dict() if state else None
    with transaction.atomic():
        bulk_set(actions, ["before_state"], only_if={"status": ActionStatus.EXECUTING})
        log_events(
            {
                "action": a,
                "event": LogEvent.STATE_CAPTURED,
                "actor": worker,
                "state_snapshot": a.before_state,
                "message": "Live state read before applying."
                if a.before_state
                else "Entity not found on the platform.",
            }
            for a in actions
        )


def _plan(actions, refs, before) -> tuple[list[tuple[Action, list[Change]]], list[Settlement]]:
    """Split actions into (action, changes to send) and actions settled without sending."""
    plans: list[tuple[Action, list[Change]]] = []
    settled: list[Settlement] = []
    for action in actions:
        state = before.get(refs[action.pk].key)
        if state is None or state.status == "removed":
            settled.append(_failed(action, _not_found(action), "Nothing was sent."))
            continue
        targets = target_values(action.action_type, action.params)
        drift = drifted_fields(action.baseline_state, state, list(targets))
        if drift:
            settled.append(_stale(action, drift))
            continue
        pending = {f: v for f, v in targets.items() if not same_value(f, state.value_of(f), v)}
        if not pending:
            settled.append(
                Settlement(
                    action,
                    "succeed",
                    LogEvent.SUCCEEDED,
                    after=state,
                    message="Already at the target value; nothing to send.",
                )
            )
            continue
        plans.append((action, changes_for(action, refs[action.pk], values=pending)))
    return plans, settled


def _log_requests(plans, worker: str) -> None:
    log_events(
        {
            "action": a,
            "event": LogEvent.REQUEST_SENT,
            "actor": worker,
            "request": [_change_json(c) for c in cs],
            "message": f"Sending {len(cs)} change{'s' if len(cs) != 1 else ''}.",
        }
        for a, cs in plans
    )


def _group_outcomes(plans, outcomes: list[ChangeOutcome]) -> dict[int, list[ChangeOutcome]]:
    grouped: dict[int, list[ChangeOutcome]] = {}
    position = 0
    for action, changes in plans:
        grouped[action.pk] = outcomes[position : position + len(changes)]
        position += len(changes)
    return grouped


def _log_responses(plans, by_action: dict[int, list[ChangeOutcome]], worker: str) -> None:
    log_events(
        {
            "action": action,
            "event": LogEvent.RESPONSE_RECEIVED,
            "actor": worker,
            "response": [_outcome_json(o) for o in by_action[action.pk]],
            "platform_request_id": next((o.request_id for o in by_action[action.pk] if o.request_id), ""),
        }
        for action, _ in plans
    )


def _verify_and_settle(plans, by_action, refs, runner: PlatformRunner, before) -> list[Settlement]:
    """Read back every entity that reported an applied change and settle each action."""
    applied_refs = [refs[a.pk] for a, _ in plans if any(o.status == OutcomeStatus.APPLIED for o in by_action[a.pk])]
    try:
        after = runner.read(applied_refs)
    except PlatformCallError:
        after = None  # cannot verify now: those actions stay executing for the reconciler
    settlements = []
    for action, changes in plans:
        outcomes = by_action[action.pk]
        if any(o.status == OutcomeStatus.UNKNOWN for o in outcomes):
            continue  # unresolvable now; the reconciler reads later
        if after is None and any(o.status == OutcomeStatus.APPLIED for o in outcomes):
            continue
        state_after = after.get(refs[action.pk].key) if after else None
        settlements.append(_settle_one(action, changes, outcomes, state_after, before[refs[action.pk].key]))
    return settlements


def _settle_one(action, changes, outcomes, after: EntityState | None, before: EntityState) -> Settlement:
    verified, errors = [], []
    for change, outcome in zip(changes, outcomes, strict=True):
        if outcome.status == OutcomeStatus.APPLIED and after is not None:
            live = after.value_of(change.field)
            if same_value(change.field, live, change.value):
                verified.append(change)
                continue
            errors.append(_not_applied(change, live, outcome.request_id))
        elif outcome.status == OutcomeStatus.APPLIED:
            errors.append(_not_found(action))
        else:
            errors.append(outcome.error)
    rollback = [{"field": str(c.field), "value": _json_value(before.value_of(c.field))} for c in verified]
    if not errors:
        return Settlement(
            action,
            "succeed",
            LogEvent.SUCCEEDED,
            after=after,
            rollback_changes=rollback,
            message="Verified by reading the platform back.",
        )
    error = _merge_errors(errors)
    transition = "partially_execute" if verified else "fail"
    return Settlement(
        action,
        transition,
        LogEvent.FAILED,
        error=error,
        after=after,
        rollback_changes=rollback,
        message=error["message"],
    )


def _connection_failed(outcomes: list[ChangeOutcome]) -> bool:
    """Nothing applied and the platform refused the connection itself."""
    if not outcomes or any(o.status == OutcomeStatus.APPLIED for o in outcomes):
        return False
    return any(o.error is not None and o.error.code in CONNECTION_LEVEL for o in outcomes)


# Settlement -------------------------------------------------------------------------


def write_settlements(settlements: list[Settlement], *, worker: str, job: ActionJob | None) -> None:
    """Apply each settlement's transition in bulk, with its facts and log rows."""
    now = timezone.now()
    deadline = now + timedelta(hours=settings.ROLLBACK_VALID_HOURS)
    by_transition: dict[str, list[Settlement]] = {}
    for settlement in settlements:
        by_transition.setdefault(settlement.transition, []).append(settlement)
    with transaction.atomic():
        for transition, group in by_transition.items():
            facts = {s.action.pk: s for s in group}
            moved = bulk_transition(
                [s.action for s in group],
                transition,
                reason=f"{worker}: {transition}",
                prepare=lambda a, facts=facts: _apply_facts(a, facts[a.pk], now, deadline),
                fields=[
                    "finished_at",
                    "after_state",
                    "rollback_params",
                    "rollback_deadline",
                    "rolled_back_at",
                    *ERROR_FIELDS,
                ],
            )
            log_events(_settlement_log(facts[a.pk], worker, job) for a in moved)
        deployment_ids = {s.action.deployment_id for s in settlements if s.action.deployment_id}
        if deployment_ids:
            from scenarios.services.deploy import deployments_refresh

            deployments_refresh(deployment_ids)


def _apply_facts(action: Action, settlement: Settlement, now, deadline) -> None:
    """Execution settlements record after-state and rollback instructions; rollback
    settlements keep them (the post-rollback state is in the log) and stamp the time."""
    if settlement.transition in ("succeed", "fail", "partially_execute"):
        action.finished_at = now
        if settlement.after is not None:
            action.after_state = settlement.after.as_dict()
        if settlement.rollback_changes:
            action.rollback_params = {"changes": settlement.rollback_changes}
            action.rollback_deadline = deadline
    elif settlement.transition == "finish_rollback":
        action.rolled_back_at = now
    if settlement.error:
        action.set_error(**{k: settlement.error[k] for k in ("code", "message", "retryable", "hint")})
    else:
        action.clear_error()


def _settlement_log(settlement: Settlement, worker: str, job) -> dict[str, Any]:
    return {
        "action": settlement.action,
        "event": settlement.event,
        "actor": worker,
        "job": job,
        "message": settlement.message,
        "error": settlement.error,
        "state_snapshot": settlement.after.as_dict() if settlement.after else None,
    }


def job_finish(
    job: ActionJob, runner: PlatformRunner, worker: str, settlements, *, connection_failed: bool
) -> JobReport:
    """Write the settlements, close the job with its counts, and tell the circuit breaker."""
    write_settlements(settlements, worker=worker, job=job)
    succeeded = sum(1 for s in settlements if s.transition in ("succeed", "finish_rollback"))
    failed = len(settlements) - succeeded
    unresolved = Action.objects.filter(job=job, status__in=[ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK]).count()
    status = _job_status(succeeded, failed, unresolved)
    summary = _error_summary(settlements, unresolved)
    ActionJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
        status=status,
        succeeded=succeeded,
        failed=failed,
        total=succeeded + failed + unresolved,
        round_trips=runner.round_trips,
        finished_at=timezone.now(),
        lease_expires_at=timezone.now(),
        error_summary=summary,
    )
    if connection_failed:
        circuit_record_failure(job.connection_id, reason=summary or "the platform refused the connection")
    else:
        circuit_record_success(job.connection_id)
    return JobReport(job.pk, status, succeeded, failed, unresolved, runner.round_trips)


def _job_status(succeeded: int, failed: int, unresolved: int) -> str:
    if unresolved or (succeeded and failed):
        return JobStatus.PARTIALLY_SUCCEEDED if succeeded else JobStatus.FAILED
    return JobStatus.SUCCEEDED if not failed else JobStatus.FAILED


def _error_summary(settlements: list[Settlement], unresolved: int) -> str:
    counts: dict[str, int] = {}
    for settlement in settlements:
        if settlement.error:
            counts[settlement.error["code"]] = counts.get(settlement.error["code"], 0) + 1
    parts = [f"{n} {code}" for code, n in sorted(counts.items())]
    if unresolved:
        parts.append(f"{unresolved} awaiting reconciliation (outcome unknown)")
    return ", ".join(parts)


# Errors and JSON ----------------------------------------------------------------------


STALE_HINT = (
    "Someone changed this entity on the platform after the approval or preflight. Nothing was "
    "applied; run a new preflight (or re-approve with the current value) and try again."
)


def error_payload(code: str, message: str, *, retryable: bool, hint: str) -> dict[str, Any]:
    """The stored error of a code outside the platform taxonomy (stale, drifted, ...),
    shaped like ``PlatformError.as_dict()`` so actions, results and logs read one way."""
    return {
        "code": code,
        "message": message,
        "retryable": retryable,
        "hint": hint,
        "request_id": None,
        "retry_after": None,
    }


def _failed(action: Action, error: PlatformError, note: str = "") -> Settlement:
    payload = error.as_dict()
    if note:
        payload["message"] = f"{payload['message']} {note}".strip()
    return Settlement(action, "fail", LogEvent.FAILED, error=payload, message=payload["message"])


def _not_found(action: Action) -> PlatformError:
    entity = action.entity
    return PlatformError(
        code=ErrorCode.NOT_FOUND,
        message=f"{entity.get_entity_type_display().capitalize()} {entity.name} ({entity.external_id}) "
        "no longer exists on the platform.",
    )


def _stale(action: Action, drift) -> Settlement:
    details = "; ".join(f"{f} was {describe(seen)} at approval, is {describe(live)} now" for f, seen, live in drift)
    message = f"Not applied: {action.entity.name} changed on the platform since it was approved ({details})."
    error = error_payload("stale", message, retryable=False, hint=STALE_HINT)
    return Settlement(action, "fail", LogEvent.STALE, error=error, message=message)


def _not_applied(change: Change, live: Any, request_id: str | None) -> PlatformError:
    return PlatformError(
        code=ErrorCode.UNKNOWN,
        message=f"The platform reported success, but reading it back shows {change.field} = {describe(live)} "
        f"instead of {describe(change.value)}: the change did not take effect.",
        request_id=request_id,
    )


def _merge_errors(errors: Iterable[PlatformError | None]) -> dict[str, Any]:
    errors = [e for e in errors if e is not None]
    first = errors[0]
    payload = first.as_dict()
    if len(errors) > 1:
        payload["message"] = " ".join(dict.fromkeys(e.message for e in errors))
        payload["retryable"] = all(e.retryable for e in errors)
    return payload


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, dict | bool | int):
        return value
    return str(value)


def _change_json(change: Change) -> dict[str, Any]:
    return {
        "entity_type": str(change.ref.entity_type),
        "external_id": change.ref.external_id,
        "field": str(change.field),
        "value": _json_value(change.value),
    }


def _outcome_json(outcome: ChangeOutcome) -> dict[str, Any]:
    return {
        "field": str(outcome.change.field),
        "status": str(outcome.status),
        "error": outcome.error.as_dict() if outcome.error else None,
        "request_id": outcome.request_id,
    }
