"""Dispatch: group runnable actions into one job per connection and hand it to a worker.

Runnable means ``approved`` (to execute) or ``rolling_back`` without a job (to roll
back). Rules the database enforces and this code respects:
- one queued/running job per connection: new work joins a still-queued job of the same
  kind, or waits for the running one to finish (it re-dispatches when done);
- one queued/executing action per entity: of several approved actions on one entity
  only the oldest goes now, the rest wait their turn;
- a connection whose circuit is open gets no new jobs (the reason is logged).
Jobs are enqueued to django-q2 only after the transaction commits.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from actions.models import ACTIVE_JOB_STATUSES, IN_FLIGHT, Action, ActionJob, ActionStatus, JobKind, JobStatus
from actions.services.circuit import circuit_refusal
from actions.services.transitions import bulk_transition
from platforms.models import PlatformConnection

logger = logging.getLogger(__name__)


def dispatch_has_waiting_work(*, connection_id: int) -> bool:
    return _runnable(Action.objects.filter(connection_id=connection_id)).exists()


def _runnable(queryset):
    return queryset.filter(Q(status=ActionStatus.APPROVED) | Q(status=ActionStatus.ROLLING_BACK, job__isnull=True))


def actions_dispatch(
    *, action_ids: list[int] | None = None, connection_ids: list[int] | None = None, limit: int | None = None
) -> list[int]:
    """Put runnable actions into jobs; return the ids of jobs that now have work.

    Idempotent: an action already queued is not touched again, so calling this twice
    (or from two workers) dispatches each action once.
    """
    candidates = _runnable(Action.objects.all()).order_by("approved_at", "id")
    if action_ids is not None:
        candidates = candidates.filter(pk__in=action_ids)
    if connection_ids is not None:
        candidates = candidates.filter(connection_id__in=connection_ids)
    if limit:
        candidates = candidates[:limit]
    by_connection: dict[int, list[Action]] = defaultdict(list)
    for action in candidates.select_related("connection"):
        by_connection[action.connection_id].append(action)
    job_ids = []
    for actions in by_connection.values():
        job_ids += _dispatch_connection(actions[0].connection, actions)
    return job_ids


def _dispatch_connection(connection: PlatformConnection, actions: list[Action]) -> list[int]:
    refusal = circuit_refusal(connection)
    if refusal:
        logger.warning("dispatch refused: %s", refusal, extra={"connection_id": connection.pk})
        return []
    job_ids = []
    for kind, status in ((JobKind.EXECUTE, ActionStatus.APPROVED), (JobKind.ROLLBACK, ActionStatus.ROLLING_BACK)):
        group = [a for a in actions if a.status == status]
        if group:
            job_id = _enqueue_into_job(connection, kind, group)
            if job_id:
                job_ids.append(job_id)
    return job_ids


def _one_per_entity(actions: list[Action], busy_entities: set[int]) -> list[Action]:
    chosen, seen = [], set(busy_entities)
    for action in actions:
        if action.entity_id not in seen:
            seen.add(action.entity_id)
            chosen.append(action)
    return chosen


def _enqueue_into_job(connection: PlatformConnection, kind: str, actions: list[Action]) -> int | None:
    try:
        with transaction.atomic():
            job = _open_job(connection, kind)
            if job is None:
                return None  # a job is running on this connection; it re-dispatches when done
            if kind == JobKind.EXECUTE:
                moved = _queue_for_execution(connection, job, actions)
            else:
                moved = _attach_rollbacks(job, actions)
            if not moved and job.total == 0:
                job.delete()
                return None
            ActionJob.objects.filter(pk=job.pk).update(total=Action.objects.filter(job=job).count())
            transaction.on_commit(lambda: _enqueue_process(job.pk))
            return job.pk
    except IntegrityError:
        # Another dispatcher created the connection's job at the same moment; its
        # dispatch covers these actions or the next one will.
        return None


def _open_job(connection: PlatformConnection, kind: str) -> ActionJob | None:
    active = (
        ActionJob.objects.select_for_update()
        .filter(connection=connection, status__in=ACTIVE_JOB_STATUSES)
        .order_by("id")
        .first()
    )
    if active is None:
        return ActionJob.objects.create(tenant_id=connection.tenant_id, connection=connection, kind=kind)
    if active.status == JobStatus.QUEUED and active.kind == kind:
        return active
    return None


def _queue_for_execution(connection, job: ActionJob, actions: list[Action]) -> list[Action]:
    busy = set(Action.objects.filter(connection=connection, status__in=IN_FLIGHT).values_list("entity_id", flat=True))
    now = timezone.now()

    def prepare(action: Action) -> None:
        action.job = job
        action.queued_at = now

    return bulk_transition(
        _one_per_entity(actions, busy),
        "enqueue",
        reason=f"dispatched to job #{job.pk}",
        prepare=prepare,
        fields=["job", "queued_at"],
    )


def _attach_rollbacks(job: ActionJob, actions: list[Action]) -> list[Action]:
    ids = [a.pk for a in actions]
    Action.objects.filter(pk__in=ids, status=ActionStatus.ROLLING_BACK, job__isnull=True).update(job=job)
    return list(Action.objects.filter(pk__in=ids, job=job))


def _enqueue_process(job_id: int) -> None:
    from actions.tasks import enqueue_process_job

    enqueue_process_job(job_id)
