"""The reconciler: settles work a dead worker left behind, from platform truth.

A job is abandoned when it is ``running`` but its heartbeat is older than
``stale_after`` (by default the django-q2 task timeout plus a minute: no live task can
be that quiet). The reconciler takes it over with a compare-and-set on the heartbeat,
reads the platform, and settles by this rule:

executing actions
- every target value present on the platform -> ``succeeded`` (it was applied);
- some present -> ``partially_executed``;
- none present and no request was ever sent (no ``request_sent`` log) -> back to
  ``approved``: nothing reached the platform, so running it later is its first
  application; it is dispatched again at once;
- none present but a request may have been sent -> ``failed`` (code ``unknown_outcome``):
  the platform shows it not applied, and re-running needs a person's re-approval.
rolling_back actions
- the before-values present -> ``rolled_back``; otherwise never sent -> dispatched again;
  sent but absent -> ``rollback_failed``.
queued actions of the job are handed back to a fresh run of the same job.
Nothing is applied by the reconciler itself, so nothing can be applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from actions.changes import target_values
from actions.models import Action, ActionExecutionLog, ActionJob, ActionStatus, JobStatus, LogEvent
from actions.services.engine import Settlement, error_payload, job_finish, worker_id, write_settlements
from actions.services.logs import log_events
from actions.services.rollback import rollback_changes
from actions.services.runner import PlatformRunner
from actions.services.transitions import bulk_transition
from actions.services.verification import same_value
from platforms.registry import get_executor
from platforms.types import EntityState, PlatformCallError


@dataclass
class ReconcileReport:
    jobs: int = 0
    succeeded: int = 0
    partially_executed: int = 0
    failed: int = 0
    released: int = 0
    rolled_back: int = 0
    unreadable: int = 0


def default_stale_after() -> timedelta:
    return timedelta(seconds=settings.Q_CLUSTER["timeout"] + 60)


def actions_reconcile(*, stale_after: timedelta | None = None, limit: int | None = None) -> ReconcileReport:
    """Settle every abandoned job (at most ``limit``). Safe to run from several workers."""
    cutoff = timezone.now() - (stale_after if stale_after is not None else default_stale_after())
    report = ReconcileReport()
    abandoned = ActionJob.objects.filter(status=JobStatus.RUNNING, lease_expires_at__lt=cutoff).order_by("id")
    for job in abandoned[:limit] if limit else abandoned:
        if _take_over(job, cutoff):
            report.jobs += 1
            _reconcile_job(ActionJob.objects.select_related("connection").get(pk=job.pk), report)
    return report


def _take_over(job: ActionJob, cutoff) -> bool:
    """Compare-and-set on the heartbeat so two reconcilers never handle one job."""
    return (
        ActionJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING, lease_expires_at__lt=cutoff).update(
            lease_expires_at=timezone.now(), claimed_by=f"reconciler:{worker_id()}"
        )
        == 1
    )


def _reconcile_job(job: ActionJob, report: ReconcileReport) -> None:
    worker = f"reconciler:{worker_id()}"
    runner = PlatformRunner(get_executor(job.connection))
    actions = list(
        Action.objects.filter(job=job, status__in=[ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK]).select_related(
            "entity__parent", "connection"
        )
    )
    sent = _sent_requests(actions)
    try:
        live = runner.read(a.entity.to_ref() for a in actions)
    except PlatformCallError as exc:
        report.unreadable += len(actions)
        log_events(
            {
                "action": a,
                "event": LogEvent.RECONCILED,
                "actor": worker,
                "error": exc.error.as_dict(),
                "message": "Reconciliation postponed: the platform could not be read.",
            }
            for a in actions
        )
        ActionJob.objects.filter(pk=job.pk).update(lease_expires_at=None)  # eligible again next round
        return
    settlements, release, redispatch = [], [], []
    for action in actions:
        state = live.get(action.entity.to_ref().key)
        if action.status == ActionStatus.EXECUTING:
            outcome = _settle_execution(action, state, action.pk in sent)
        else:
            outcome = _settle_rollback(action, state, action.pk in sent)
        if outcome == "release":
            release.append(action)
        elif outcome == "redispatch":
            redispatch.append(action)
        else:
            settlements.append(outcome)
    _count(report, settlements, release)
    with transaction.atomic():
        _release(release, worker)
        Action.objects.filter(pk__in=[a.pk for a in redispatch]).update(job=None)
        log_events(_reconciled_log(s.action, worker, s.message) for s in settlements)
    _close_job(job, runner, worker, settlements)
    if release or redispatch:
        from actions.tasks import enqueue_dispatch

        enqueue_dispatch()


def _sent_requests(actions: list[Action]) -> set[int]:
    """Actions that may have reached the platform in their current attempt (one query).

    An execution attempt begins at ``started_at``; a rollback attempt at its latest
    ``rollback_started`` log. A ``request_sent`` log after that point means the request
    may have been sent (it is committed before the platform call).
    """
    rows = (
        ActionExecutionLog.objects.filter(
            action__in=actions, event__in=[LogEvent.REQUEST_SENT, LogEvent.ROLLBACK_STARTED]
        )
        .order_by("id")
        .values_list("action_id", "event", "created_at")
    )
    by_id = {a.pk: a for a in actions}
    sent: set[int] = set()
    for action_id, event, created_at in rows:
        action = by_id[action_id]
        if event == LogEvent.ROLLBACK_STARTED:
            sent.discard(action_id)  # a new rollback attempt begins
        elif action.status == ActionStatus.ROLLING_BACK or (action.started_at and created_at >= action.started_at):
            sent.add(action_id)
    return sent


def _settle_execution(action: Action, state: EntityState | None, sent: bool):
    targets = target_values(action.action_type, action.params)
    before = action.before_state or {}
    present = {f for f, v in targets.items() if state is not None and same_value(f, state.value_of(f), v)}
    changed = {f for f in present if not same_value(f, before.get(str(f)), targets[f])} if before else present
    rollback = [{"field": str(f), "value": before.get(str(f))} for f in sorted(changed) if before]
    if state is not None and len(present) == len(targets):
        return Settlement(
            action,
            "succeed",
            LogEvent.SUCCEEDED,
            after=state,
            rollback_changes=rollback,
            message="Reconciled after a worker stopped: the platform shows the target value.",
        )
    if present:
        return Settlement(
            action,
            "partially_execute",
            LogEvent.FAILED,
            after=state,
            rollback_changes=rollback,
            error=_error(
                "partially_applied",
                "Reconciled after a worker stopped: only some fields show the target value.",
                retryable=False,
            ),
            message="Reconciled: partially applied.",
        )
    if not sent:
        return "release"
    return Settlement(
        action,
        "fail",
        LogEvent.FAILED,
        after=state,
        error=_error(
            "unknown_outcome",
            "The worker stopped after sending the change and the platform shows it was not applied.",
            retryable=True,
        ),
        message="Reconciled: not applied.",
    )


def _settle_rollback(action: Action, state: EntityState | None, sent: bool):
    changes = rollback_changes(action)
    if state is not None and all(same_value(c.field, state.value_of(c.field), c.value) for c in changes):
        return Settlement(
            action,
            "finish_rollback",
            LogEvent.ROLLBACK_SUCCEEDED,
            after=state,
            message="Reconciled after a worker stopped: the platform shows the before-values.",
        )
    if not sent:
        return "redispatch"
    return Settlement(
        action,
        "fail_rollback",
        LogEvent.ROLLBACK_FAILED,
        after=state,
        error=_error(
            "unknown_outcome",
            "The worker stopped after sending the rollback and the platform does not show the before-values.",
            retryable=True,
        ),
        message="Reconciled: rollback not applied.",
    )


def _error(code: str, message: str, *, retryable: bool) -> dict:
    hint = (
        "Check the entity on the platform. Approve the action again to retry it."
        if code != "partially_applied"
        else "Roll back the applied part or propose the remaining change again."
    )
    return error_payload(code, message, retryable=retryable, hint=hint)


def _release(actions: list[Action], worker: str) -> None:
    reason = "The worker stopped before sending anything; the action is dispatched again."

    def prepare(action: Action) -> None:
        action.job = None
        action.decided_reason = reason

    moved = bulk_transition(
        actions, "release", reason=f"{worker}: released", prepare=prepare, fields=["job", "decided_reason"]
    )
    log_events(_reconciled_log(a, worker, reason) for a in moved)


def _reconciled_log(action: Action, worker: str, message: str) -> dict:
    return {"action": action, "event": LogEvent.RECONCILED, "actor": worker, "message": message}


REPORT_FIELD = {"succeed": "succeeded", "partially_execute": "partially_executed", "finish_rollback": "rolled_back"}


def _count(report: ReconcileReport, settlements: list[Settlement], release: list[Action]) -> None:
    report.released += len(release)
    for s in settlements:
        name = REPORT_FIELD.get(s.transition, "failed")
        setattr(report, name, getattr(report, name) + 1)


def _close_job(job: ActionJob, runner: PlatformRunner, worker: str, settlements: list[Settlement]) -> None:
    """Finish the job, or hand its never-started actions to a fresh run of it."""
    if Action.objects.filter(job=job, status=ActionStatus.QUEUED).exists():
        write_settlements(settlements, worker=worker, job=job)
        ActionJob.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, claimed_by="", lease_expires_at=None)
        from actions.tasks import enqueue_process_job

        transaction.on_commit(lambda: enqueue_process_job(job.pk))
        return
    job_finish(job, runner, worker, settlements, connection_failed=False)
