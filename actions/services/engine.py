"""The execution engine: runs a job's actions against the platform exactly once.

A job is a queue of at most ``dispatch.job_cap(platform)`` actions of one connection and
one kind (execute or roll back). A worker runs it in *units* (up to
``ENGINE_UNIT_SIZE`` actions, a few platform requests) under a lease:

1. claim the job (compare-and-set queued -> running, with a new lease token; a
   connection whose circuit is open is not claimed) and keep the lease alive from a
   ticker thread (``leases.LeaseKeeper``);
2. per unit: move its queued actions to ``executing`` under the lease; read the live
   state of their entities and persist it as ``before_state`` (fenced on the lease);
3. refuse what must not run: entity gone (``not_found``), live value differs from the
   baseline the approval or preflight saw and from what BudgetRadar itself set since
   (``stale``: a new preflight is needed); settle what is already at its target;
4. apply the rest through ``PlatformRunner``; immediately before each platform
   request, the executor calls back to fence it: every action in that request must
   still be held, with margin left on the lease, and its ``request_sent`` row is
   committed then — so an action whose request never left is provably unsent;
5. read the entities back and settle each action: ``succeeded`` only when the read-back
   shows every target value, ``partially_executed`` when some fields did, else
   ``failed`` with code, message, retryable and hint. A long rate-limit block parks the
   actions it refused (back to ``approved`` with a visible next attempt) instead of
   holding the worker; an outcome that cannot be read is handed to the reconciler at
   once ("awaiting reconciliation");
6. between units, stop when the task's time budget is spent: the job goes back to
   ``queued`` and a new task resumes it (no job has to fit one task).
A worker that loses its lease (it was paused past the expiry and the reconciler took
over) stops without writing; every write it makes is fenced on its token. The engine
publishes outbox events (``job.started``, ``job.finished``; settlement publishes
``action.settled`` and ``action.parked``) and knows nothing of deployments.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from actions.changes import changes_for, target_values
from actions.models import Action, ActionExecutionLog, ActionJob, ActionStatus, JobKind, JobStatus, LogEvent
from actions.services import outcomes as out
from actions.services import rollback as rb
from actions.services.circuit import circuit_acquire
from actions.services.leases import (
    Lease,
    LeaseKeeper,
    LeaseLost,
    fence_request,
    job_lease_take,
    lease_hand_over,
    new_token,
)
from actions.services.logs import log_events
from actions.services.runner import PlatformRunner, is_parkable
from actions.services.settlement import Settlement, settle, transition_actions
from actions.services.verification import describe, drifted_fields, same_value
from budgetradar import outbox
from budgetradar.bulk import bulk_set
from budgetradar.memory import collector_paused
from budgetradar.queue import enqueue_on_commit
from budgetradar.timefmt import format_time
from platforms.base import Throttle
from platforms.ratelimit import ConnectionThrottle, changes_affordable, rate_limit_backoff, rate_limit_for
from platforms.registry import get_executor
from platforms.retry import RetryPolicy
from platforms.types import (
    Change,
    ChangeOutcome,
    EntityRef,
    EntityState,
    ErrorCode,
    OutcomeStatus,
    PlatformCallError,
    PlatformError,
)

# Codes that say the connection itself is unhealthy (they count for the circuit breaker).
CONNECTION_LEVEL = frozenset(
    {ErrorCode.AUTH_EXPIRED, ErrorCode.PERMISSION_DENIED, ErrorCode.TRANSIENT, ErrorCode.UNKNOWN}
)


@dataclass
class JobReport:
    job_id: int
    status: str
    succeeded: int = 0
    failed: int = 0
    parked: int = 0
    unresolved: int = 0
    round_trips: int = 0
    units: int = 0
    lease_lost: bool = False


def job_process(
    *,
    job_id: int,
    worker: str | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    throttle: Throttle | None = None,
    budget_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> JobReport | None:
    """Claim and run one job, unit by unit, until it is done or the time budget is spent.

    Idempotent: a job already claimed or finished is a no-op (None). Must not run
    inside a transaction: platform calls happen between short commits, so the platform
    and the database never wait on each other. ``throttle`` replaces the connection's
    shared rate limiter (tests and benchmarks); ``clock`` measures the time budget and
    must advance with ``sleep`` (a benchmark that simulates its waits passes a clock that
    counts them).
    """
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("job_process must not run inside transaction.atomic")
    lease = job_claim(job_id=job_id, token=worker or new_token("worker"))
    if lease is None:
        return None
    job = ActionJob.objects.select_related("connection", "tenant").get(pk=job_id)
    run = JobRun(job, lease, policy=policy, sleep=sleep, throttle=throttle)
    budget = budget_seconds if budget_seconds is not None else settings.ENGINE_TASK_BUDGET_SECONDS
    with LeaseKeeper(lease) as keeper:
        run.keeper = keeper
        run.run(deadline=clock() + budget, clock=clock)
    return run.close()


def job_claim(*, job_id: int, token: str) -> Lease | None:
    """Compare-and-set queued -> running under a new lease; None if another worker has
    it or the circuit refuses. Publishes ``job.started``."""
    job = ActionJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).only("connection_id").first()
    if job is None or not circuit_acquire(job.connection_id):
        return None
    with transaction.atomic():
        lease = job_lease_take(
            job_id,
            token=token,
            from_status=JobStatus.QUEUED,
            to_status=JobStatus.RUNNING,
            claimed_by=token,
            started_at=timezone.now(),
        )
        if lease is not None:
            outbox.publish(
                "job.started", tenant_id=None, payload={"job_id": job_id, "connection_id": job.connection_id}
            )
    return lease


class JobRun:
    """One task's run of a job: its lease, executor, runner and what it has seen."""

    def __init__(self, job: ActionJob, lease: Lease, *, policy, sleep, throttle) -> None:
        self.job = job
        self.lease = lease
        self.keeper: LeaseKeeper | None = None
        self.sleep = sleep
        self.report = JobReport(job.pk, JobStatus.RUNNING)
        self.pending_logs: list[dict[str, Any]] = []  # waits, retries: written with the next write
        self.connection_failed = False
        self.applied_any = False
        self.actions_by_id: dict[int, Action] = {}
        # Before-states read this unit and not yet on their rows: each goes with the fence
        # of the first request carrying its action, or with its settlement if none does.
        self.unsaved_before: dict[int, dict[str, Any] | None] = {}
        if throttle is None:  # the shared limiter, but never a wait longer than parking
            throttle = ConnectionThrottle(
                job.connection, max_wait=settings.ENGINE_PARK_AFTER_SECONDS, sleep=self._throttle_sleep
            )
        executor = get_executor(job.connection, throttle=throttle, before_write=self._before_write)
        self.runner = PlatformRunner(
            executor,
            policy=policy,
            sleep=self._sleep,
            on_rate_limited=lambda error: rate_limit_backoff(connection=job.connection, seconds=error.retry_after),
            observer=self,
        )

    @property
    def actor(self) -> str:
        return self.lease.token

    def _when(self, at: datetime) -> str:
        return when(at, self.job.connection.time_zone)

    # The loop ----------------------------------------------------------------------------

    def run(self, *, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Units until the job is done, the lease is lost, or the deadline is near.

        The first unit always runs (every task makes progress); after each unit the
        run stops unless the time left before the deadline could hold another unit as
        long as the longest this task has run, so a task ends about at its budget rather
        than a whole unit past it.
        """
        longest = 0.0
        while not self.lease.lost.is_set():
            started = clock()
            with collector_paused():  # a unit is bounded bulk work (budgetradar.memory)
                if not self._run_unit():
                    return
            now = clock()
            longest = max(longest, now - started)
            if now + longest >= deadline:
                return

    def _run_unit(self) -> bool:
        """Claim and run one unit; False when there was none or the lease was lost."""
        units = self._claim_unit()
        if not units:
            return False
        self.report.units += 1
        try:
            if self.job.kind == JobKind.ROLLBACK:
                self._run_rollback_unit(units)
            else:
                self._run_execute_unit(units)
        except LeaseLost:
            self.report.lease_lost = True
            return False
        finally:
            self.actions_by_id.clear()
            self.unsaved_before.clear()
        return True

    def close(self) -> JobReport:
        """Finish the job, or hand what is left of it to a fresh task."""
        self.report.round_trips = self.runner.round_trips
        if self.report.lease_lost or self.lease.lost.is_set():
            self.report.lease_lost = True
            self.report.status = "lease_lost"
            return self.report
        remaining = _unclaimed(self.job).exists()
        with transaction.atomic():
            if remaining:
                requeued = ActionJob.objects.filter(pk=self.job.pk, lease_owner=self.lease.token).update(
                    status=JobStatus.QUEUED, lease_owner="", lease_expires_at=None, round_trips=self._round_trips()
                )
                if requeued:
                    enqueue_on_commit("actions.tasks.process_job_task", self.job.pk, task_name=None, group="actions")
                self.report.status = JobStatus.QUEUED
                return self.report
            self.report.status = job_finish(
                self.job,
                lease_token=self.lease.token,
                round_trips=self._round_trips(),
                connection_failed=self._failed(),
            )
        return self.report

    def _round_trips(self) -> int:
        return self.job.round_trips + self.runner.round_trips

    def _failed(self) -> bool:
        """Nothing applied and the platform refused the connection itself."""
        return self.connection_failed and not self.applied_any

    def _sleep(self, seconds: float) -> None:
        self.keeper.sleep(seconds, sleep=self.sleep)
        self.lease.ensure(0)

    def _throttle_sleep(self, seconds: float) -> None:
        """The shared limiter's pacing is work in progress: the lease keeps being renewed
        while the worker waits, and a lease lost meanwhile stops it (``LeaseLost``)."""
        if self.keeper is None:
            self.sleep(seconds)
            return
        self._sleep(seconds)

    # Claiming units ----------------------------------------------------------------------

    def _claim_unit(self) -> list[Action]:
        size = unit_size(self.job.connection.platform, tokens_per_change=self.runner.executor.tokens_per_change)
        now = timezone.now()
        if self.job.kind == JobKind.ROLLBACK:
            return rb.rollback_claim(self.job, lease=self.lease, limit=size)
        queued = list(_unclaimed(self.job).select_related("entity__parent").order_by("id")[:size])
        share_connection(queued, self.job.connection)
        return transition_actions(
            queued,
            "start",
            actor=self.actor,
            reason=f"{self.actor} started job #{self.job.pk}",
            kwargs={"at": now, "lease_owner": self.lease.token, "lease_expires_at": self.lease.expires_at},
        )

    # Execute -----------------------------------------------------------------------------

    def _run_execute_unit(self, actions: list[Action]) -> None:
        self.actions_by_id = {a.pk: a for a in actions}
        refs = {a.pk: a.entity.to_ref() for a in actions}
        try:
            before = self.runner.read(refs.values())
        except PlatformCallError as exc:
            self._settle(self._unreadable_before(actions, exc.error))
            return
        previously_sent = _sent_before(actions)
        self._capture_before(actions, refs, before, previously_sent)
        plans, settlements = self._plan(actions, refs, before, previously_sent)
        changes = [c for _, cs in plans for c in cs]
        outcomes = self.runner.apply(changes) if changes else []
        by_action = _group_outcomes(plans, outcomes)
        self.applied_any |= any(o.status == OutcomeStatus.APPLIED for o in outcomes)
        self.connection_failed |= _connection_failed(outcomes)
        self._log_responses(plans, by_action)
        settlements += self._verify_and_settle(plans, by_action, refs, before)
        self._settle(settlements)

    def _unreadable_before(self, actions: list[Action], error: PlatformError) -> list[Settlement]:
        """Nothing was sent. A long rate-limit block parks them until it lifts; any other
        failure to read (retries exhausted, auth, permission) fails them with the reason."""
        now = timezone.now()
        if error.code in CONNECTION_LEVEL:
            self.connection_failed = True
        if is_parkable(error):
            return [self._parked(a, error, now) for a in actions]
        payload = error.as_dict() | {"message": f"{error.message} Could not read the live state; nothing was sent."}
        return [out.failed(a, payload, now=now) for a in actions]

    def _capture_before(self, actions, refs, before, previously_sent: set[int]) -> None:
        """Keep the before-states for the writes ahead: nothing is written here.

        Each action's before-state reaches its row in the same statement as the fence of
        the first request that carries the action (``_before_write``), so no request
        leaves before it is stored; an action settled without a request has it written
        with its settlement. Its ``state_captured`` row goes with the next write.
        An action whose earlier attempt may have reached the platform keeps the
        before-state of that attempt: it is what a rollback must restore.
        """
        now = timezone.now()
        for action in actions:
            state = before.get(refs[action.pk].key)
            snapshot = state.as_dict() if state else None
            if action.pk not in previously_sent or action.before_state is None:
                action.before_state = snapshot
                self.unsaved_before[action.pk] = snapshot
            self.pending_logs.append(
                {
                    "action": action,
                    "event": LogEvent.STATE_CAPTURED,
                    "actor": self.actor,
                    "job": self.job,
                    "state_snapshot": snapshot,
                    "message": "Live state read before applying." if state else "Entity not found.",
                    "created_at": now,
                }
            )

    def _plan(
        self, actions, refs, before, previously_sent
    ) -> tuple[list[tuple[Action, list[Change]]], list[Settlement]]:
        """Split actions into (action, changes to send) and actions settled without sending."""
        now = timezone.now()
        own = _own_values_since_baseline([a for a in actions if a.baseline_state])
        plans: list[tuple[Action, list[Change]]] = []
        settled: list[Settlement] = []
        for action in actions:
            state = before.get(refs[action.pk].key)
            if state is None or state.status == "removed":
                settled.append(out.failed(action, out.not_found_error(action).as_dict(), now=now))
                continue
            targets = target_values(action.action_type, action.params)
            pending = {f: v for f, v in targets.items() if not same_value(f, state.value_of(f), v)}
            if not pending:
                settled.append(self._already_there(action, state, targets, now, action.pk in previously_sent))
                continue
            drift = _drift(action, state, list(targets), own.get(action.entity_id))
            if drift:
                settled.append(out.stale(action, drift, now=now))
                continue
            plans.append((action, changes_for(action, refs[action.pk], values=pending)))
        return plans, settled

    def _already_there(self, action, state, targets, now, sent_before: bool) -> Settlement:
        if sent_before:
            # An earlier attempt's request landed after all: it is this action's change.
            return out.succeeded(
                action,
                after=state,
                now=now,
                rollback_fields=[f for f in targets if not same_value(f, _before_value(action, f), targets[f])],
                before=action.before_state,
                message="An earlier attempt's change is on the platform; verified by reading it.",
            )
        return out.succeeded(action, after=state, now=now, message="Already at the target value; nothing to send.")

    def _verify_and_settle(self, plans, by_action, refs, before) -> list[Settlement]:
        """Read back every entity that reported an applied change and settle each action."""
        now = timezone.now()
        applied_refs = [refs[a.pk] for a, _ in plans if any(o.status == OutcomeStatus.APPLIED for o in by_action[a.pk])]
        try:
            after = self.runner.read(applied_refs)
        except PlatformCallError as exc:
            after, read_error = None, exc.error
        else:
            read_error = None
        settlements, unresolved = [], []
        for action, changes in plans:
            outcomes = by_action[action.pk]
            parked = [o for o in outcomes if is_parkable(o.error)]
            if parked and not any(o.status in (OutcomeStatus.APPLIED, OutcomeStatus.UNKNOWN) for o in outcomes):
                settlements.append(self._parked(action, parked[0].error, now))
                continue
            if any(o.status == OutcomeStatus.UNKNOWN for o in outcomes):
                unresolved.append((action, "the platform's answer was lost and its state could not be read"))
                continue
            if after is None and any(o.status == OutcomeStatus.APPLIED for o in outcomes):
                unresolved.append((action, f"the read-back after applying failed ({read_error.message})"))
                continue
            state_after = after.get(refs[action.pk].key) if after else None
            settlements.append(self._settle_one(action, changes, outcomes, state_after, before[refs[action.pk].key]))
        self._hand_over(unresolved)
        return settlements

    def _settle_one(self, action, changes, outcomes, after: EntityState | None, before: EntityState) -> Settlement:
        now = timezone.now()
        verified, errors = [], []
        for change, outcome in zip(changes, outcomes, strict=True):
            if outcome.status == OutcomeStatus.APPLIED and after is not None:
                live = after.value_of(change.field)
                if same_value(change.field, live, change.value):
                    verified.append(change.field)
                    continue
                errors.append(out.not_applied_error(change, live, outcome.request_id))
            elif outcome.status == OutcomeStatus.APPLIED:
                errors.append(out.not_found_error(action))
            else:
                errors.append(outcome.error)
        if not errors:
            return out.succeeded(
                action,
                after=after,
                now=now,
                rollback_fields=verified,
                before=action.before_state or before,
                message="Verified by reading the platform back.",
            )
        error = out.merge_errors(errors)
        if verified:
            return out.partially_executed(
                action, error, now=now, after=after, rollback_fields=verified, before=action.before_state or before
            )
        return out.failed(action, error, now=now, after=after)

    def _parked(self, action: Action, error: PlatformError, now: datetime) -> Settlement:
        at = now + timedelta(seconds=error.retry_after or 0)
        self.report.parked += 1
        reason = f"{error.message} Nothing was applied; BudgetRadar tries again at {self._when(at)}."
        return out.released(action, reason=reason, next_attempt_at=at)

    def _hand_over(self, unresolved: list[tuple[Action, str]]) -> None:
        """Outcomes nobody can know now: the reconciler takes them at once and keeps trying."""
        if not unresolved:
            return
        self.report.unresolved += len(unresolved)
        rows = [
            {
                "action": a,
                "event": LogEvent.AWAITING_RECONCILIATION,
                "actor": self.actor,
                "job": self.job,
                "message": f"Awaiting reconciliation: {why}. The reconciler reads the platform and settles it.",
            }
            for a, why in unresolved
        ]
        with transaction.atomic():
            self._write_logs(rows)
            lease_hand_over(self.lease, [a.pk for a, _ in unresolved])
            outbox.publish_many(
                (
                    "action.awaiting_reconciliation",
                    a.tenant_id,
                    {
                        "action_id": a.pk,
                        "connection_id": a.connection_id,
                        "since": timezone.now().isoformat(),
                        "reason": why,
                    },
                )
                for a, why in unresolved
            )

    # Rollback ----------------------------------------------------------------------------

    def _run_rollback_unit(self, actions: list[Action]) -> None:
        self.actions_by_id = {a.pk: a for a in actions}
        plans = {a.pk: rb.rollback_changes(a) for a in actions}
        now = timezone.now()
        try:
            live = self.runner.read(a.entity.to_ref() for a in actions)
        except PlatformCallError as exc:
            if exc.error.code in CONNECTION_LEVEL:
                self.connection_failed = True
            self._postpone_rollbacks(actions, exc.error)
            return
        settlements, to_send = [], []
        for action in actions:
            decision = rb.rollback_decide(action, plans[action.pk], live.get(action.entity.to_ref().key), now=now)
            if decision is None:
                to_send.append(action)
            else:
                settlements.append(decision)
        changes = [c for a in to_send for c in plans[a.pk]]
        outcomes = self.runner.apply(changes) if changes else []
        self.applied_any |= any(o.status == OutcomeStatus.APPLIED for o in outcomes)
        by_key = {(c.key, c.field): o for c, o in zip(changes, outcomes, strict=True)}
        results = {a.pk: [by_key[(str(a.pk), c.field)] for c in plans[a.pk]] for a in to_send}
        self._log_responses([(a, plans[a.pk]) for a in to_send], results)
        parked = [a for a in to_send if any(is_parkable(o.error) for o in results[a.pk])]
        if parked:
            self._postpone_rollbacks(parked, next(o.error for o in results[parked[0].pk] if is_parkable(o.error)))
        to_verify = [a for a in to_send if a not in parked]
        try:
            after = self.runner.read(a.entity.to_ref() for a in to_verify) if to_verify else {}
        except PlatformCallError as exc:
            self._hand_over([(a, f"the read-back after the rollback failed ({exc.error.message})") for a in to_verify])
            to_verify, after = [], {}
        verified, unresolved = rb.rollback_verify(to_verify, plans, results, after, now=timezone.now())
        self._hand_over(unresolved)
        self._settle(settlements + verified)

    def _postpone_rollbacks(self, actions: list[Action], error: PlatformError) -> None:
        """Nothing was sent: the rollback keeps waiting, dispatched again when due."""
        wait = max(error.retry_after or 0.0, settings.ENGINE_READ_RETRY_SECONDS)
        at = timezone.now() + timedelta(seconds=wait)
        self.report.parked += len(actions)
        reason = f"{error.message} Nothing was sent; the rollback is tried again at {self._when(at)}."
        with transaction.atomic():
            self._write_logs(
                [
                    {"action": a, "event": LogEvent.PARKED, "actor": self.actor, "job": self.job, "message": reason}
                    for a in actions
                ]
            )
            rb.rollback_postpone(actions, lease=self.lease, next_attempt_at=at, reason=reason)

    # Writing -----------------------------------------------------------------------------

    def _settle(self, settlements: list[Settlement]) -> None:
        if not settlements:
            return
        self.keeper.touch()
        unsaved = [item.action for item in settlements if item.action.pk in self.unsaved_before]
        with transaction.atomic():
            if unsaved:  # read but never sent: the before-state goes with the settlement
                bulk_set(unsaved, ["before_state"], only_if={"lease_owner": self.lease.token})
            moved = settle(
                settlements,
                actor=self.actor,
                reason=self.actor,
                lease=self.lease.token,
                job=self.job,
                logs=self._take_pending(),
            )
            parked = sum(1 for a in moved if a.status == ActionStatus.APPROVED)
            if parked:
                ActionJob.objects.filter(pk=self.job.pk).update(parked=F("parked") + parked)
        for action in unsaved:
            del self.unsaved_before[action.pk]
        for action in moved:
            if action.status in (ActionStatus.SUCCEEDED, ActionStatus.ROLLED_BACK):
                self.report.succeeded += 1
            elif action.status != ActionStatus.APPROVED:
                self.report.failed += 1

    def _write_logs(self, rows: list[dict[str, Any]]) -> None:
        log_events([*self._take_pending(), *rows])

    def _take_pending(self) -> list[dict[str, Any]]:
        rows, self.pending_logs = self.pending_logs, []
        return rows

    def _before_write(self, changes: Sequence[Change]) -> None:
        """Called by the executor immediately before each write request (or wave of
        requests sent together): fence it, and commit ``request_sent`` for exactly the
        actions it carries."""
        self.keeper.touch()
        by_action: dict[int, list[Change]] = defaultdict(list)
        for change in changes:
            by_action[int(change.key)].append(change)
        try_number = self.runner.try_number
        sent = [
            {
                "action": self.actions_by_id[action_id],
                "event": LogEvent.REQUEST_SENT,
                "actor": self.actor,
                "job": self.job,
                "request": [out.change_json(c) for c in cs],
                "message": _sending(cs, try_number),
            }
            for action_id, cs in by_action.items()
        ]
        before_states = {pk: self.unsaved_before[pk] for pk in by_action if pk in self.unsaved_before}
        with transaction.atomic():
            fence_request(self.lease, by_action, logs=[*self.pending_logs, *sent], before_states=before_states)
        self.pending_logs = []  # written with the fence (kept for the next write if it raised)
        for pk in before_states:
            del self.unsaved_before[pk]

    def _log_responses(self, plans, by_action: dict[int, list[ChangeOutcome]]) -> None:
        self.pending_logs += [
            {
                "action": action,
                "event": LogEvent.RESPONSE_RECEIVED,
                "actor": self.actor,
                "job": self.job,
                "response": [_outcome_json(o) for o in by_action[action.pk]],
                "platform_request_id": next((o.request_id for o in by_action[action.pk] if o.request_id), ""),
                "created_at": timezone.now(),
            }
            for action, _ in plans
        ]

    # RunnerObserver: waits and ambiguity checks go into each action's timeline ----------------

    def retrying(self, *, subjects, error: PlatformError, delay: float, attempt: int) -> None:
        self.keeper.touch()
        actions = self._actions_of(subjects)
        after = f" (the platform asked for {error.retry_after:g}s)" if error.retry_after else ""
        message = f"Attempt {attempt} failed: {error.message} Retrying in {delay:.1f}s{after}."
        now = timezone.now()
        self.pending_logs += [
            {
                "action": a,
                "event": LogEvent.RETRYING,
                "actor": self.actor,
                "job": self.job,
                "message": message,
                "error": error.as_dict(),
                "platform_request_id": error.request_id or "",
                "created_at": now,
            }
            for a in actions
        ]

    def outcome_checked(self, *, change: Change, applied: bool | None) -> None:
        action = self.actions_by_id.get(int(change.key)) if change.key.isdigit() else None
        if action is None:
            return
        verdict = {
            True: "the target value is there, so it was applied",
            False: "the target value is not there, so it was not applied (sent again once at most)",
            None: "the platform could not be read, so the outcome is still unknown",
        }[applied]
        self.pending_logs.append(
            {
                "action": action,
                "event": LogEvent.OUTCOME_CHECKED,
                "actor": self.actor,
                "job": self.job,
                "message": f"The platform's answer for {change.field} was lost; read it back: {verdict}.",
                "created_at": timezone.now(),
            }
        )

    def _actions_of(self, subjects) -> list[Action]:
        found: dict[int, Action] = {}
        by_ref = {a.entity.to_ref().key: a for a in self.actions_by_id.values()}
        for subject in subjects:
            if isinstance(subject, Change) and subject.key.isdigit() and int(subject.key) in self.actions_by_id:
                found[int(subject.key)] = self.actions_by_id[int(subject.key)]
            elif isinstance(subject, EntityRef) and subject.key in by_ref:
                found[by_ref[subject.key].pk] = by_ref[subject.key]
        return list(found.values())


# Finishing ------------------------------------------------------------------------------------


def job_finish(job: ActionJob, *, lease_token: str | None, round_trips: int, connection_failed: bool) -> str:
    """Close the job with counts derived from its actions; publish ``job.finished``.

    ``lease_token`` fences the close (None: the reconciler closing an abandoned job).
    Returns the job's final status.
    """
    counts = job_counts(job.pk)
    status = _job_status(counts)
    rows = ActionJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING)
    if lease_token is not None:
        rows = rows.filter(lease_owner=lease_token)
    closed = rows.update(
        status=status,
        succeeded=counts["succeeded"],
        failed=counts["failed"],
        total=counts["total"],
        round_trips=round_trips,
        finished_at=timezone.now(),
        lease_owner="",
        lease_expires_at=None,
        error_summary=job_error_summary(job.pk, counts["unresolved"]),
    )
    if closed:
        outbox.publish(
            "job.finished",
            tenant_id=job.tenant_id,
            payload={
                "job_id": job.pk,
                "connection_id": job.connection_id,
                "kind": job.kind,
                "status": status,
                "connection_failed": connection_failed,
                "round_trips": round_trips,
            },
        )
    return status


def job_counts(job_id: int) -> dict[str, int]:
    """A job's counts, derived from the actions that ran in it (never kept in step by hand)."""
    counts = {"succeeded": 0, "failed": 0, "parked": 0, "unresolved": 0, "total": 0}
    statuses = Action.objects.filter(job_id=job_id).values_list("status", flat=True)
    for status in statuses:
        counts["total"] += 1
        if status in (ActionStatus.SUCCEEDED, ActionStatus.ROLLED_BACK):
            counts["succeeded"] += 1
        elif status in (ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK):
            counts["unresolved"] += 1
        elif status in (ActionStatus.FAILED, ActionStatus.PARTIALLY_EXECUTED, ActionStatus.ROLLBACK_FAILED):
            counts["failed"] += 1
    counts["parked"] = ActionJob.objects.filter(pk=job_id).values_list("parked", flat=True).first() or 0
    counts["total"] += counts["parked"]
    return counts


def _job_status(counts: dict[str, int]) -> str:
    good, bad = counts["succeeded"], counts["failed"] + counts["unresolved"]
    if not good and not bad:
        return JobStatus.SUCCEEDED if not counts["parked"] else JobStatus.PARTIALLY_SUCCEEDED
    if not bad and not counts["parked"]:
        return JobStatus.SUCCEEDED
    return JobStatus.PARTIALLY_SUCCEEDED if good else JobStatus.FAILED


def job_error_summary(job_id: int, unresolved: int) -> str:
    counts: dict[str, int] = defaultdict(int)
    for code in Action.objects.filter(job_id=job_id).exclude(error_code="").values_list("error_code", flat=True):
        counts[code] += 1
    parts = [f"{n} {code}" for code, n in sorted(counts.items())]
    if unresolved:
        parts.append(f"{unresolved} awaiting reconciliation (outcome unknown)")
    return ", ".join(parts)


# Helpers ----------------------------------------------------------------------------------------


def share_connection(actions: Sequence[Action], connection) -> None:
    """Give actions (and their entities) of ``connection`` that one loaded instance instead
    of a copy each: a unit of 1,000 actions would otherwise decode its row 2,000 times."""
    for action in actions:
        if action.connection_id == connection.pk:
            action.connection = connection
        if action.entity.connection_id == connection.pk:
            action.entity.connection = connection


# The share of a task's time budget one unit may spend waiting for the rate limit.
UNIT_SHARE_OF_TASK_BUDGET = 0.6


def unit_size(platform: str, *, tokens_per_change: float = 0.0) -> int:
    """Actions a worker takes up at once: ``ENGINE_UNIT_SIZE`` for the platform (the cap
    that bounds a unit's memory), or fewer where the platform's rate limit counts
    operations: no more than its limit lets one worker send within
    ``UNIT_SHARE_OF_TASK_BUDGET`` of the task budget (a Meta unit is ~1,150 actions at
    the default 27 points/s, the whole cap with the limit lifted), so a unit always fits
    the task that runs it."""
    sizes = settings.ENGINE_UNIT_SIZE
    configured = int(sizes.get(platform, sizes["default"]))
    affordable = changes_affordable(
        rate_limit_for(platform),
        tokens_per_change=tokens_per_change,
        seconds=settings.ENGINE_TASK_BUDGET_SECONDS * UNIT_SHARE_OF_TASK_BUDGET,
    )
    return configured if affordable is None else max(1, min(configured, affordable))


def _unclaimed(job: ActionJob):
    """The job's actions no worker has taken up yet."""
    if job.kind == JobKind.ROLLBACK:
        return Action.objects.filter(job=job, status=ActionStatus.ROLLING_BACK, lease_owner="")
    return Action.objects.filter(job=job, status=ActionStatus.QUEUED)


def _sent_before(actions: list[Action]) -> set[int]:
    """Actions with a ``request_sent`` in an earlier attempt (one query)."""
    ids = [a.pk for a in actions if a.attempts > 1]
    if not ids:
        return set()
    rows = ActionExecutionLog.objects.filter(action_id__in=ids, event=LogEvent.REQUEST_SENT).values_list(
        "action_id", "attempt"
    )
    attempts = {a.pk: a.attempts for a in actions}
    return {action_id for action_id, attempt in rows if attempt is not None and attempt < attempts[action_id]}


def _own_values_since_baseline(actions: list[Action]) -> dict[int, dict[str, Any]]:
    """Per entity, the values BudgetRadar itself set (verified) after these actions'
    baselines were taken: live values equal to these are BudgetRadar's, not drift."""
    if not actions:
        return {}
    since = min(_baseline_time(a) for a in actions)
    rows = (
        Action.objects.filter(
            entity_id__in_array={a.entity_id for a in actions},
            finished_at__gte=since,
            status__in=[ActionStatus.SUCCEEDED, ActionStatus.PARTIALLY_EXECUTED, ActionStatus.ROLLED_BACK],
        )
        .exclude(pk__in_array=[a.pk for a in actions])
        .order_by("entity_id", "finished_at", "id")
        .values_list("entity_id", "status", "after_state", "rollback_params", "finished_at", "rolled_back_at")
    )
    own: dict[int, dict[str, Any]] = {}
    for entity_id, status, after, rollback, _finished, _rolled in rows:
        values = own.setdefault(entity_id, {})
        values.update(
            {k: v for k, v in (after or {}).items() if k in ("status", "daily_budget", "lifetime_budget", "bid")}
        )
        if status == ActionStatus.ROLLED_BACK and rollback:
            values.update({c["field"]: c["value"] for c in rollback.get("changes", [])})
    return own


def _baseline_time(action: Action) -> datetime:
    seen = (action.baseline_state or {}).get("synced_at") or (action.baseline_state or {}).get("seen_at")
    if seen:
        try:
            return datetime.fromisoformat(seen)
        except ValueError:
            pass
    return action.approved_at or action.created_at


def _drift(action: Action, state: EntityState, fields, own: dict[str, Any] | None):
    """Fields whose live value differs from the baseline and from BudgetRadar's own change."""
    drift = drifted_fields(action.baseline_state, state, fields)
    if not own:
        return drift
    return [(f, seen, live) for f, seen, live in drift if not same_value(f, own.get(str(f)), live)]


def _before_value(action: Action, field) -> Any:
    return (action.before_state or {}).get(str(field))


def _group_outcomes(plans, outcomes: list[ChangeOutcome]) -> dict[int, list[ChangeOutcome]]:
    grouped: dict[int, list[ChangeOutcome]] = {}
    position = 0
    for action, changes in plans:
        grouped[action.pk] = outcomes[position : position + len(changes)]
        position += len(changes)
    return grouped


def _connection_failed(outcomes: list[ChangeOutcome]) -> bool:
    """Nothing applied and the platform refused the connection itself."""
    if not outcomes or any(o.status == OutcomeStatus.APPLIED for o in outcomes):
        return False
    return any(o.error is not None and o.error.code in CONNECTION_LEVEL for o in outcomes)


def _sending(changes: Sequence[Change], try_number: int) -> str:
    what = ", ".join(f"{c.field} = {describe(c.value)}" for c in changes)
    return f"Sending {what}." if try_number == 1 else f"Sending {what} again (try {try_number})."


def _outcome_json(outcome: ChangeOutcome) -> dict[str, Any]:
    return {
        "field": str(outcome.change.field),
        "status": str(outcome.status),
        "error": outcome.error.as_dict() if outcome.error else None,
        "request_id": outcome.request_id,
    }


def when(at: datetime, time_zone: str) -> str:
    """A time as people read it in the account's zone, in the admin's one format:
    ``2026-12-01 14:05:00 CET``."""
    return format_time(at, time_zone)
