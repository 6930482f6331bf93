"""The budget changes BudgetRadar made per entity, for Meta's per-ad-set limit.

``platforms.change_limits`` judges (pure); this module reads the facts from the actions
table: when each ad set's budget was changed by an applied action or its rollback, and
which budget changes are in flight. The dispatcher calls ``budget_change_allowance`` (or
``next_budget_change_at``) before sending a Meta ad set budget change, and parks the
action until the time it names; the preflight shows the same judgement as the
``change_rate_limit`` guardrail.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from django.db.models import Q

from actions.changes import target_values
from actions.models import Action, ActionStatus
from platforms.change_limits import BUDGET_FIELDS, META_BUDGET_WINDOW, ChangeAllowance, next_budget_change

APPLIED = (
    ActionStatus.SUCCEEDED,
    ActionStatus.PARTIALLY_EXECUTED,
    ActionStatus.ROLLING_BACK,
    ActionStatus.ROLLED_BACK,
    ActionStatus.ROLLBACK_FAILED,
)
IN_FLIGHT = (ActionStatus.QUEUED, ActionStatus.EXECUTING)
BATCH = 5000


def changes_budget(action: Action) -> bool:
    """Whether the action sets a daily or lifetime budget."""
    try:
        return bool(set(target_values(action.action_type, action.params)) & BUDGET_FIELDS)
    except (KeyError, ValueError, TypeError):
        return False


def budget_change_times(
    *, entity_ids: Iterable[int], now: datetime, exclude_action_ids: Iterable[int] = ()
) -> dict[int, list[datetime]]:
    """When BudgetRadar changed each entity's budget within the last hour: applied actions at
    ``finished_at``, rollbacks at ``rolled_back_at``, queued/executing ones at ``now`` (they
    are about to). One query per 5,000 entities; actions in ``exclude_action_ids`` (the
    ones being judged) are left out."""
    since = now - META_BUDGET_WINDOW
    excluded = set(exclude_action_ids)
    found: dict[int, list[datetime]] = defaultdict(list)
    ids = sorted(set(entity_ids))
    for start in range(0, len(ids), BATCH):
        rows = Action.objects.filter(entity_id__in=ids[start : start + BATCH]).filter(
            Q(status__in=APPLIED, finished_at__gt=since) | Q(rolled_back_at__gt=since) | Q(status__in=IN_FLIGHT)
        )
        for action in rows.only("pk", "entity_id", "action_type", "params", "status", "finished_at", "rolled_back_at"):
            if action.pk in excluded or not changes_budget(action):
                continue
            if action.status in IN_FLIGHT:
                found[action.entity_id].append(now)
                continue
            if action.finished_at is not None and action.finished_at > since and action.status in APPLIED:
                found[action.entity_id].append(action.finished_at)
            if action.rolled_back_at is not None and action.rolled_back_at > since:
                found[action.entity_id].append(action.rolled_back_at)
    return dict(found)


def budget_change_allowance(
    *, entity_ids: Iterable[int], now: datetime, exclude_action_ids: Iterable[int] = ()
) -> dict[int, ChangeAllowance]:
    """Per entity, whether one more budget change may be sent now and when the next may."""
    ids = list(entity_ids)
    times = budget_change_times(entity_ids=ids, now=now, exclude_action_ids=exclude_action_ids)
    return {entity_id: next_budget_change(times.get(entity_id, []), now) for entity_id in ids}


def next_budget_change_at(*, action: Action, now: datetime) -> datetime | None:
    """For the dispatcher: None when ``action`` may be sent now (not a Meta ad set budget
    change, or within the limit), else the moment to park it until."""
    entity = action.entity
    if entity.connection.platform != "meta" or entity.entity_type != "ad_set" or not changes_budget(action):
        return None
    allowance = budget_change_allowance(entity_ids=[entity.pk], now=now, exclude_action_ids=[action.pk])[entity.pk]
    return None if allowance.allowed else allowance.next_allowed_at
