"""Keeping BudgetRadar's mirror of platform entities true.

The mirror (``PlatformEntity``) is what people see in the admin and the API and what
an approval records as its baseline. Sync refreshes it in bulk; besides that, every
verified read-back — after an execution, a rollback, a reconciliation — refreshes the
entities it read, in the same transaction as the settlement that read them, so
BudgetRadar's own change is never shown stale nor taken for someone else's.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone

from budgetradar.bulk import bulk_set
from platforms.models import PlatformEntity
from platforms.types import EntityState

MIRRORED = ["status", "daily_budget", "lifetime_budget", "bid", "budget_shared", "budget_reference_count", "synced_at"]


def mirror_update(states: Sequence[tuple[int, EntityState]]) -> int:
    """Copy each read state onto its mirrored entity (by primary key); one statement.

    Returns the number of entities updated. The last state wins for an entity read twice.
    """
    now = timezone.now()
    latest = dict(states)
    rows = []
    for entity_id, state in latest.items():
        entity = PlatformEntity(pk=entity_id)
        entity.status = str(state.status)
        entity.daily_budget = state.daily_budget
        entity.lifetime_budget = state.lifetime_budget
        entity.bid = state.bid
        entity.budget_shared = state.budget_shared
        entity.budget_reference_count = state.budget_reference_count
        entity.synced_at = now
        rows.append(entity)
    return bulk_set(rows, MIRRORED)
