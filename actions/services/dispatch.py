"""Dispatch: group due actions into jobs per connection and hand them to workers.

Due means ``approved`` with ``next_attempt_at`` reached (execute), or ``rolling_back``
with no job and no lease, its ``next_attempt_at`` reached (roll back). An approved
action without ``next_attempt_at`` waits for someone to press Execute. Rules the
database enforces and this code respects:
- one queued/running job per connection: new work joins a still-queued job of the
  same kind while it has room (``job_cap``), or waits for the running
  one to finish (its ``job.finished`` event dispatches again); a dispatch loads at most
  one job's worth of due actions per connection and kind, so its memory is bounded too
  (actions beyond that window, e.g. ones a used-up quota postpones, are handled by the
  next dispatch);
- one queued/executing action per entity, in approval order: of several approved
  actions on one entity only the oldest goes, and if the oldest is not due yet (parked
  until a rate limit lifts, or waiting for a change window) the younger ones wait too;
- a connection whose circuit is open gets no new jobs (the reason is logged);
- platform limits are planned for, not run into: a Meta ad set budget change that would
  exceed Meta's four changes per hour waits until it is allowed, and a Google Ads
  connection whose developer token spent today's operations waits for the reset; both
  keep the action approved with its next attempt time and the reason.
Jobs are enqueued to django-q2 only after the transaction commits.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from actions.change_limits import budget_change_allowance, changes_budget
from actions.models import (
    ACTIVE_JOB_STATUSES,
    IN_FLIGHT,
    Action,
    ActionJob,
    ActionStatus,
    JobKind,
    JobStatus,
    LogEvent,
)
from actions.services.circuit import circuit_refusal
from actions.services.logs import log_events
from actions.services.settlement import transition_actions
from budgetradar.memory import collector_paused
from budgetradar.queue import enqueue_on_commit
from platforms.models import PlatformConnection, PlatformEntity
from platforms.quota import connection_quota

logger = logging.getLogger(__name__)


def _due(queryset, now):
    return queryset.filter(
        Q(status=ActionStatus.APPROVED, next_attempt_at__lte=now)
        | Q(status=ActionStatus.ROLLING_BACK, job__isnull=True, lease_owner="", next_attempt_at__lte=now)
    )


def dispatch_has_waiting_work(*, connection_id: int) -> bool:
    return _due(Action.objects.filter(connection_id=connection_id), timezone.now()).exists()


def actions_dispatch(
    *, action_ids: list[int] | None = None, connection_ids: list[int] | None = None, limit: int | None = None
) -> list[int]:
    """Put due actions into jobs; return the ids of jobs that now have work.

    Idempotent: an action already queued is not touched again, so calling this twice
    (or from two workers) dispatches each action once.
    """
    with collector_paused():  # up to a job's worth of actions per connection (budgetradar.memory)
        return _dispatch(action_ids=action_ids, connection_ids=connection_ids, limit=limit)


def _dispatch(*, action_ids: list[int] | None, connection_ids: list[int] | None, limit: int | None) -> list[int]:
    now = timezone.now()
    candidates = _due(Action.objects.all(), now).order_by("approved_at", "id")
    if action_ids is not None:
        candidates = candidates.filter(pk__in=action_ids)
    if connection_ids is not None:
        candidates = candidates.filter(connection_id__in=connection_ids)
    if limit:
        candidates = candidates[:limit]
    ids = _job_sized(candidates)
    loaded: dict[int, Action] = {}
    for start in range(0, len(ids), 1000):
        loaded.update((a.pk, a) for a in Action.objects.filter(pk__in_array=ids[start : start + 1000]))
    # One instance per connection, shared by its actions and their entities (not a copy each).
    connections = PlatformConnection.objects.in_bulk({a.connection_id for a in loaded.values()})
    for action in loaded.values():
        action.connection = connections[action.connection_id]
    _attach_entities([a for a in loaded.values() if a.platform in ENTITY_RULE_PLATFORMS], connections)
    by_connection: dict[int, list[Action]] = defaultdict(list)
    for pk in ids:  # in approval order
        if pk in loaded:
            by_connection[loaded[pk].connection_id].append(loaded[pk])
    job_ids = []
    for actions in by_connection.values():
        job_ids += _dispatch_connection(actions[0].connection, actions)
    return job_ids


# Platforms whose dispatch rules read the action's entity (Meta's ad-set budget-change
# limit, ``_within_change_limits``); other platforms' actions are dispatched by ids alone,
# so their entities are not loaded.
ENTITY_RULE_PLATFORMS = frozenset({"meta"})


def _attach_entities(actions: list[Action], connections: dict[int, PlatformConnection]) -> None:
    """Load the actions' entities in one query and attach them (sharing the connections)."""
    if not actions:
        return
    entities = PlatformEntity.objects.in_bulk({a.entity_id for a in actions})
    for entity in entities.values():
        if entity.connection_id in connections:
            entity.connection = connections[entity.connection_id]
    for action in actions:
        action.entity = entities[action.entity_id]


def job_cap(platform: str) -> int:
    """The most actions a job of ``platform`` holds (``ENGINE_JOB_MAX_ACTIONS``, or the
    platform's own in ``ENGINE_JOB_MAX_ACTIONS_BY_PLATFORM``)."""
    return settings.ENGINE_JOB_MAX_ACTIONS_BY_PLATFORM.get(platform, settings.ENGINE_JOB_MAX_ACTIONS)


def _job_sized(candidates) -> list[int]:
    """Per connection and kind, the ids of the first ``job_cap`` candidates:
    no job can take more, so a dispatch loads (and holds in memory) at most one job's
    worth per connection however many actions are due. The rest wait for the next
    dispatch, which the finished job triggers. Windows are per kind so rollbacks are
    never crowded out by approvals (an approval may wait for its entity's rollback)."""
    taken: dict[tuple[int, str], int] = defaultdict(int)
    ids = []
    for pk, connection_id, status, platform in candidates.values_list("pk", "connection_id", "status", "platform"):
        if taken[connection_id, status] < job_cap(platform):
            taken[connection_id, status] += 1
            ids.append(pk)
    return ids


def _dispatch_connection(connection: PlatformConnection, actions: list[Action]) -> list[int]:
    refusal = circuit_refusal(connection)
    if refusal:
        logger.warning("dispatch refused: %s", refusal, extra={"connection_id": connection.pk})
        return []
    quota = connection_quota(connection)
    if quota is not None and not quota.allows(1):
        _postpone(
            actions,
            until=quota.resets_at,
            reason=f"The Google Ads developer token's {quota.limit:,} operations for today are used up; "
            "BudgetRadar runs this when the daily budget resets.",
        )
        return []
    job_ids = []
    for kind, status in ((JobKind.EXECUTE, ActionStatus.APPROVED), (JobKind.ROLLBACK, ActionStatus.ROLLING_BACK)):
        group = [a for a in actions if a.status == status]
        if group:
            job_id = _enqueue_into_job(connection, kind, group)
            if job_id:
                job_ids.append(job_id)
    return job_ids


def _first_in_line(connection: PlatformConnection, actions: list[Action]) -> list[Action]:
    """Per entity, only the oldest approved action, and only if nothing of that entity is
    in flight (queued, executing or rolling back) and that oldest one is due."""
    entities = {a.entity_id for a in actions}
    busy = set(
        Action.objects.filter(
            connection=connection, entity_id__in_array=entities, status__in=[*IN_FLIGHT, ActionStatus.ROLLING_BACK]
        ).values_list("entity_id", flat=True)
    )
    oldest: dict[int, int] = {}
    rows = (
        Action.objects.filter(connection=connection, entity_id__in_array=entities, status=ActionStatus.APPROVED)
        .order_by("approved_at", "id")
        .values_list("entity_id", "pk")
    )
    for entity_id, pk in rows:
        oldest.setdefault(entity_id, pk)
    return [a for a in actions if a.entity_id not in busy and oldest.get(a.entity_id) == a.pk]


def _enqueue_into_job(connection: PlatformConnection, kind: str, actions: list[Action]) -> int | None:
    try:
        with transaction.atomic():
            job = _open_job(connection, kind)
            if job is None:
                return None  # a job is running on this connection; it dispatches again when done
            room = max(job_cap(connection.platform) - Action.objects.filter(job=job).count(), 0)
            if kind == JobKind.EXECUTE:
                moved = _queue_for_execution(job, _first_in_line(connection, actions)[:room])
            else:
                moved = _attach_rollbacks(job, actions[:room])
            total = Action.objects.filter(job=job).count()
            if not total:
                job.delete()
                return None
            ActionJob.objects.filter(pk=job.pk).update(total=total)
            if moved:
                enqueue_on_commit("actions.tasks.process_job_task", job.pk, group="actions")
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


def _within_change_limits(actions: list[Action], now) -> list[Action]:
    """Meta lets an ad set's budget change 4 times an hour, then blocks it for an hour:
    a change that would be the fifth waits (visibly) until it is allowed instead."""
    budget_changes = [a for a in actions if a.platform == "meta" and a.entity.entity_type == "ad_set"]
    if not budget_changes:
        return actions
    allowance = budget_change_allowance(
        entity_ids=[a.entity_id for a in budget_changes], now=now, exclude_action_ids=[a.pk for a in actions]
    )
    held = [a for a in budget_changes if changes_budget(a) and not allowance[a.entity_id].allowed]
    for action in held:
        rule = allowance[action.entity_id]
        reason = rule.describe(action.entity.name, time_zone=action.connection.time_zone)
        _postpone([action], until=rule.next_allowed_at, reason=reason)
    return [a for a in actions if a not in held]


def _postpone(actions: list[Action], *, until, reason: str) -> None:
    """Due approved actions that may not go yet: not a state change, a later attempt time
    with the reason (shown on the action and in its timeline)."""
    ids = [a.pk for a in actions]
    with transaction.atomic():
        Action.objects.filter(pk__in=ids, status=ActionStatus.APPROVED).update(
            next_attempt_at=until, wait_reason=reason
        )
        log_events({"action": a, "event": LogEvent.PARKED, "actor": "dispatcher", "message": reason} for a in actions)


def _queue_for_execution(job: ActionJob, actions: list[Action]) -> list[Action]:
    now = timezone.now()
    actions = _within_change_limits(actions, now)
    return transition_actions(
        actions,
        "enqueue",
        actor=None,
        reason=f"dispatched to job #{job.pk}",
        kwargs={"job": job, "at": now},
    )


def _attach_rollbacks(job: ActionJob, actions: list[Action]) -> list[Action]:
    """Rollbacks join the job without a state change (they are ``rolling_back`` already)."""
    ids = [a.pk for a in actions]
    Action.objects.filter(pk__in=ids, status=ActionStatus.ROLLING_BACK, job__isnull=True, lease_owner="").update(
        job=job
    )
    return list(Action.objects.filter(pk__in=ids, job=job))
