"""The reconciler: settles unsettled actions from platform truth.

An action is *unsettled* when it is ``executing`` or ``rolling_back`` under a lease
that has expired — whatever its job says: its worker died, was paused past its lease,
or handed it over because the outcome could not be read. The reconciler takes such
actions over with a compare-and-set on the expired lease (a live holder is never
robbed), keeps its own lease alive while it works, and settles by this rule, looking
at whether the current attempt logged ``request_sent`` (committed immediately before
each platform request, per request):

executing actions
- no request sent in this attempt -> back to ``approved``, due now: nothing reached the
  platform, so the next attempt is its first application (no person needed);
- the platform shows every target value -> ``succeeded`` (rollback instructions from
  the before-state); some of them -> ``partially_executed``;
- sent, but the platform shows none of them -> once, back to ``approved`` for another
  attempt (which reads the platform first and refuses drift, so it never applies
  anything twice: the reconciler reads only after the request's deadline, and no write
  is sent or committed after it, see ``PlatformExecutor.begin_write``); a second time ->
  ``failed`` (``unknown_outcome``) for a person;
rolling_back actions
- no request sent -> handed back to the dispatcher; the before-values present ->
  ``rolled_back``; sent but absent -> once handed back, a second time ``rollback_failed``;
both
- entity gone on the platform -> failed / rollback failed (``not_found``);
- the platform cannot be read -> nothing is decided: the action stays visibly
  "awaiting reconciliation" with its next try time (backoff from 30 s to 15 minutes)
  and the reconciler tries again. An entity blocked longer than
  ``ENGINE_STUCK_AFTER_MINUTES`` is "stuck" (``actions.selectors.actions_needing_attention``:
  the admin's filter and the alerts).
Nothing is applied by the reconciler itself, so nothing can be applied twice. Running
jobs whose lease expired go back to the queue for a fresh task.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from actions.changes import target_values
from actions.models import ACTIVE_JOB_STATUSES, Action, ActionExecutionLog, ActionJob, ActionStatus, JobStatus, LogEvent
from actions.services import outcomes as out
from actions.services.engine import job_counts, job_error_summary, job_finish, when
from actions.services.leases import (
    RELEASED_SUFFIX,
    UNSETTLED,
    Lease,
    LeaseKeeper,
    actions_lease_take,
    lease_hand_over,
    lease_ttl,
    new_token,
)
from actions.services.logs import log_events
from actions.services.rollback import rollback_changes, rollback_postpone
from actions.services.runner import PlatformRunner
from actions.services.settlement import Settlement, settle
from actions.services.verification import same_value
from budgetradar import outbox
from budgetradar.queue import enqueue
from platforms.models import PlatformConnection
from platforms.registry import get_executor
from platforms.types import EntityState, PlatformCallError, PlatformError

BATCH = 1000


@dataclass
class ReconcileReport:
    taken: int = 0
    succeeded: int = 0
    partially_executed: int = 0
    failed: int = 0
    released: int = 0
    rolled_back: int = 0
    rollback_failed: int = 0
    redispatched: int = 0
    unreadable: int = 0
    jobs_requeued: int = 0
    jobs_closed: int = 0


def unsettled(now=None) -> QuerySet[Action]:
    """Actions whose lease expired while executing or rolling back, due for reconciliation."""
    now = now or timezone.now()
    return (
        Action.objects.filter(status__in=UNSETTLED)
        .exclude(lease_owner="")
        .filter(Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    )


def actions_reconcile(*, limit: int | None = None) -> ReconcileReport:
    """Settle every unsettled action (at most ``limit``); requeue abandoned jobs.

    Safe to run from several workers at once: taking an action over is a
    compare-and-set on its expired lease.
    """
    report = ReconcileReport()
    jobs_requeue_abandoned(report)
    rows = unsettled().order_by("lease_expires_at", "id").values_list("pk", "connection_id")[: limit or BATCH]
    by_connection: dict[int, list[int]] = defaultdict(list)
    for pk, connection_id in rows:
        by_connection[connection_id].append(pk)
    connections = PlatformConnection.objects.in_bulk(list(by_connection))
    for connection_id, ids in by_connection.items():
        _reconcile_connection(connections[connection_id], ids, report)
    return report


def jobs_requeue_abandoned(report: ReconcileReport | None = None) -> int:
    """Running jobs whose lease expired: back to the queue if work remains, else closed."""
    report = report or ReconcileReport()
    now = timezone.now()
    for job in ActionJob.objects.filter(status=JobStatus.RUNNING, lease_expires_at__lt=now).select_related(
        "connection"
    ):
        has_work = Action.objects.filter(
            Q(status=ActionStatus.QUEUED) | Q(status=ActionStatus.ROLLING_BACK, lease_owner=""), job=job
        ).exists()
        if has_work:
            requeued = ActionJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING, lease_expires_at__lt=now).update(
                status=JobStatus.QUEUED, lease_owner="", lease_expires_at=None
            )
            if requeued:
                report.jobs_requeued += 1
                enqueue("actions.tasks.process_job_task", job.pk, group="actions")
        else:
            token = new_token("reconciler")
            with transaction.atomic():
                taken = ActionJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING, lease_expires_at__lt=now).update(
                    lease_owner=token, lease_expires_at=now + lease_ttl()
                )
                if taken:
                    job_finish(job, lease_token=token, round_trips=job.round_trips, connection_failed=False)
                    report.jobs_closed += 1
    return report.jobs_requeued


def _reconcile_connection(connection: PlatformConnection, ids: list[int], report: ReconcileReport) -> None:
    ttl = lease_ttl()
    lease = Lease(token=new_token("reconciler"), ttl=ttl, expires_at=timezone.now() + ttl)
    previous_owner = dict(Action.objects.filter(pk__in=ids).values_list("pk", "lease_owner"))
    taken = actions_lease_take(ids, lease=lease, expired_only=True)
    if not taken:
        return
    report.taken += len(taken)
    actions = list(
        Action.objects.filter(pk__in=taken, lease_owner=lease.token).select_related(
            "entity__parent", "entity__connection", "connection"
        )
    )
    with LeaseKeeper(lease) as keeper:
        sent = _sent_in_current_attempt(actions)
        settlements, redispatch = [], []
        for action in actions:
            if action.pk not in sent:
                _unsent(action, settlements, redispatch)
        in_flight = _may_be_in_flight(actions, sent, previous_owner)
        if in_flight:
            _wait_for_deadline(in_flight, sent, lease)
        readable = [a for a in actions if a.pk in sent and a.pk not in in_flight]
        if readable:
            runner = PlatformRunner(get_executor(connection), sleep=keeper.sleep)
            try:
                live = runner.read(a.entity.to_ref() for a in readable)
            except PlatformCallError as exc:
                _awaiting(readable, exc.error, lease, connection.time_zone)
                report.unreadable += len(readable)
                readable = []
            for action in readable:
                _decide(action, live.get(action.entity.to_ref().key), settlements, redispatch)
        with transaction.atomic():
            moved = settle(settlements, actor=lease.token, reason=lease.token, lease=lease.token)
            _redispatch(redispatch, lease)
        _count(report, moved, redispatch)
        _recount_closed_jobs({a.job_id for a in actions if a.job_id})
    if any(a.status == ActionStatus.APPROVED for a in moved) or redispatch:
        enqueue("actions.tasks.dispatch_task", group="actions")


def _sent_in_current_attempt(actions: list[Action]) -> dict[int, datetime]:
    """Actions whose current attempt logged ``request_sent``, with the latest such time (one query)."""
    rows = ActionExecutionLog.objects.filter(
        action_id__in=[a.pk for a in actions], event=LogEvent.REQUEST_SENT
    ).values_list("action_id", "attempt", "created_at")
    attempts = {a.pk: a.attempts for a in actions}
    sent: dict[int, datetime] = {}
    for action_id, attempt, created_at in rows:
        if attempt == attempts[action_id]:
            sent[action_id] = max(created_at, sent.get(action_id, created_at))
    return sent


def _request_deadline(sent_at: datetime) -> datetime:
    """A request may still reach the platform until the client's timeout has passed."""
    return sent_at + timedelta(seconds=settings.PLATFORM_REQUEST_TIMEOUT_SECONDS + 1)


def _may_be_in_flight(actions: list[Action], sent: dict[int, datetime], previous_owner: dict[int, str]) -> set[int]:
    """Sent actions of a holder that stopped without letting go (it crashed or was paused):
    its last request may still be on its way. A holder that handed an action over had its
    answer (or its timeout) already."""
    now = timezone.now()
    return {
        a.pk
        for a in actions
        if a.pk in sent
        and not previous_owner.get(a.pk, "").endswith(RELEASED_SUFFIX)
        and _request_deadline(sent[a.pk]) > now
    }


def _wait_for_deadline(ids: set[int], sent: dict[int, datetime], lease: Lease) -> None:
    """Decide nothing while a request of the attempt could still land: look again after
    its timeout (reading now could see the old value of a change that is on its way)."""
    for action_id in ids:
        lease_hand_over(
            lease,
            [action_id],
            next_attempt_at=_request_deadline(sent[action_id]),
            wait_reason="Awaiting reconciliation: waiting for the last request's timeout before reading the platform.",
        )


def _unsent(action: Action, settlements: list[Settlement], redispatch: list) -> None:
    if action.status == ActionStatus.ROLLING_BACK:
        redispatch.append((action, "The worker stopped before sending the rollback; it is dispatched again.", False))
        return
    settlements.append(
        out.released(
            action,
            reason="The worker stopped before sending anything; the action is dispatched again.",
            next_attempt_at=timezone.now(),
            event=LogEvent.RECONCILED,
        )
    )


def _decide(action: Action, state: EntityState | None, settlements: list[Settlement], redispatch: list) -> None:
    now = timezone.now()
    if state is None or state.status == "removed":
        if action.status == ActionStatus.ROLLING_BACK:
            settlements.append(
                out.rollback_failed(action, "not_found", f"{action.entity.name} was removed on the platform.")
            )
        else:
            settlements.append(
                out.failed(action, out.not_found_error(action).as_dict(), now=now, event=LogEvent.RECONCILED)
            )
        return
    if action.status == ActionStatus.ROLLING_BACK:
        _decide_rollback(action, state, settlements, redispatch, now)
    else:
        _decide_execution(action, state, settlements, now)


def _decide_execution(action: Action, state: EntityState, settlements: list[Settlement], now) -> None:
    targets = target_values(action.action_type, action.params)
    before = action.before_state or {}
    present = [f for f, v in targets.items() if same_value(f, state.value_of(f), v)]
    changed = [f for f in present if not same_value(f, before.get(str(f)), targets[f])] if before else []
    if len(present) == len(targets):
        settlements.append(
            _reconciled(
                out.succeeded(
                    action,
                    after=state,
                    now=now,
                    rollback_fields=changed,
                    before=before or None,
                    message="Reconciled after the worker stopped: the platform shows the target value.",
                )
            )
        )
    elif present:
        error = out.error_payload(
            "partially_applied",
            "Reconciled after the worker stopped: only some fields show the target value.",
            retryable=False,
            hint=out.PARTIAL_HINT,
        )
        settlements.append(
            _reconciled(
                out.partially_executed(
                    action, error, now=now, after=state, rollback_fields=changed, before=before or None
                )
            )
        )
    elif action.ambiguous_attempts == 0:
        settlements.append(
            Settlement(
                action,
                "release",
                kwargs={
                    "reason": "The request may have reached the platform, but the platform does not show its value. "
                    "BudgetRadar tries once more; the next attempt reads the platform first, so nothing is "
                    "applied twice.",
                    "next_attempt_at": now,
                    "ambiguous": True,
                },
                event=LogEvent.RECONCILED,
                message="Reconciled: sent, but not on the platform; one more attempt.",
                after=state,
            )
        )
    else:
        error = out.error_payload(
            "unknown_outcome",
            "The request was sent twice without its value appearing on the platform.",
            retryable=True,
            hint=out.UNKNOWN_OUTCOME_HINT,
        )
        settlements.append(_reconciled(out.failed(action, error, now=now, after=state)))


def _decide_rollback(action: Action, state: EntityState, settlements, redispatch, now) -> None:
    changes = rollback_changes(action)
    if all(same_value(c.field, state.value_of(c.field), c.value) for c in changes):
        settlements.append(
            _reconciled(
                out.rolled_back(
                    action, after=state, now=now, message="Reconciled: the platform shows the before-values."
                )
            )
        )
    elif action.ambiguous_attempts == 0:
        redispatch.append(
            (
                action,
                "The rollback may have reached the platform but the before-values are not there; one more try.",
                True,
            )
        )
    else:
        settlements.append(
            _reconciled(
                out.rollback_failed(
                    action,
                    "unknown_outcome",
                    "The rollback was sent twice and the platform does not show the before-values.",
                    after=state,
                )
            )
        )


def _reconciled(settlement: Settlement) -> Settlement:
    settlement.event = LogEvent.RECONCILED
    return settlement


def _redispatch(items: list[tuple[Action, str, bool]], lease: Lease) -> None:
    """Rollbacks that go back to the dispatcher (no state change; they stay rolling back);
    the flag says the attempt may have reached the platform (counted, one more try only)."""
    if not items:
        return
    log_events(
        {"action": a, "event": LogEvent.RECONCILED, "actor": lease.token, "message": message} for a, message, _ in items
    )
    ambiguous = [a.pk for a, _, flag in items if flag]
    if ambiguous:
        Action.objects.filter(pk__in=ambiguous, lease_owner=lease.token).update(
            ambiguous_attempts=F("ambiguous_attempts") + 1
        )
    rollback_postpone([a for a, _, _ in items], lease=lease, next_attempt_at=timezone.now(), reason="")


def _awaiting(actions: list[Action], error: PlatformError, lease: Lease, time_zone: str) -> None:
    """The platform cannot be read: decide nothing, say so, and try again with backoff."""
    now = timezone.now()
    rows, by_delay = [], defaultdict(list)
    for action in actions:
        tries = action.reconcile_attempts + 1
        delay = min(30 * 2 ** (tries - 1), 900)
        at = now + timedelta(seconds=delay)
        reason = (
            f"Awaiting reconciliation: the platform could not be read ({error.message}). "
            f"Next try at {when(at, time_zone)} (try {tries + 1})."
        )
        by_delay[(at, reason)].append(action.pk)
        rows.append(
            {
                "action": action,
                "event": LogEvent.AWAITING_RECONCILIATION,
                "actor": lease.token,
                "message": reason,
                "error": error.as_dict(),
            }
        )
    with transaction.atomic():
        log_events(rows)
        for (at, reason), ids in by_delay.items():
            lease_hand_over(
                lease, ids, reconcile_attempts=F("reconcile_attempts") + 1, next_attempt_at=at, wait_reason=reason
            )
        outbox.publish_many(
            (
                "action.awaiting_reconciliation",
                a.tenant_id,
                {
                    "action_id": a.pk,
                    "connection_id": a.connection_id,
                    "since": now.isoformat(),
                    "reason": error.message,
                },
            )
            for a in actions
        )


def _count(report: ReconcileReport, moved: list[Action], redispatch) -> None:
    report.redispatched += len(redispatch)
    names = {
        ActionStatus.SUCCEEDED: "succeeded",
        ActionStatus.PARTIALLY_EXECUTED: "partially_executed",
        ActionStatus.FAILED: "failed",
        ActionStatus.APPROVED: "released",
        ActionStatus.ROLLED_BACK: "rolled_back",
        ActionStatus.ROLLBACK_FAILED: "rollback_failed",
    }
    for action in moved:
        name = names[action.status]
        setattr(report, name, getattr(report, name) + 1)


def _recount_closed_jobs(job_ids: set[int]) -> None:
    """A finished job's counts follow the actions the reconciler settled later."""
    for job in ActionJob.objects.filter(pk__in=job_ids).exclude(status__in=ACTIVE_JOB_STATUSES):
        counts = job_counts(job.pk)
        ActionJob.objects.filter(pk=job.pk).update(
            succeeded=counts["succeeded"],
            failed=counts["failed"],
            total=counts["total"],
            error_summary=job_error_summary(job.pk, counts["unresolved"]),
        )
