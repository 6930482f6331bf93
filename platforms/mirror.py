"""Keeping the entity mirror true after a read of the platform.

A sync refreshes the whole account; this module refreshes just the entities some other
read covered — a preflight's, and every verified read-back of the engine (execution,
rollback, reconciliation; ``mirror_update``, in the settlement's own transaction) — so
the mirror people see and the next approval's baseline start from what BudgetRadar last
saw or set on the platform, and its own change is never taken for someone else's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from django.utils import timezone

from budgetradar.bulk import bulk_set
from platforms.models import PlatformEntity
from platforms.types import EntityState

# The values a change or a drift check reads; structure (parent, shared budget ids,
# targeting) stays with the sync, which reads the whole account.
VALUE_FIELDS = ("name", "status", "daily_budget", "lifetime_budget", "bid")
CHUNK = 2000


def mirror_refresh(
    entities: Iterable[PlatformEntity],
    states: Mapping[tuple[str, str], EntityState],
    *,
    at: datetime | None = None,
) -> int:
    """Write each read entity's live values and ``synced_at`` to its mirror row.

    Guarantees: only entities present in ``states`` (keyed like ``EntityState.key``)
    are touched, in memory and in the database alike, so callers holding the rows see
    what was written; an entity the read did not return (deleted, or not visible) is
    left as it is, for the next sync to judge. Rows whose values changed are written in
    one statement; the others only get ``synced_at``, one statement per ``CHUNK`` rows.
    Returns how many rows were refreshed.
    """
    stamp = at or timezone.now()
    changed: list[PlatformEntity] = []
    unchanged: list[int] = []
    for entity in entities:
        state = states.get((entity.entity_type, entity.external_id))
        if state is None:
            continue
        values = _values_of(state)
        if any(getattr(entity, name) != value for name, value in values.items()):
            changed.append(entity)
        else:
            unchanged.append(entity.pk)
        for name, value in values.items():
            setattr(entity, name, value)
        entity.synced_at = stamp
    written = bulk_set(changed, [*VALUE_FIELDS, "synced_at"])
    for start in range(0, len(unchanged), CHUNK):
        written += PlatformEntity.objects.filter(pk__in_array=unchanged[start : start + CHUNK]).update(synced_at=stamp)
    return written


def _values_of(state: EntityState) -> dict[str, object]:
    return {
        "name": state.name[:255],
        "status": str(state.status),
        "daily_budget": state.daily_budget,
        "lifetime_budget": state.lifetime_budget,
        "bid": state.bid,
    }


def mirror_update(states: Sequence[tuple[int, EntityState]]) -> int:
    """``mirror_refresh`` for read-backs known by entity id: ``(entity_id, state)`` pairs,
    the last state winning for an entity read twice (one query to load the rows)."""
    latest = dict(states)
    entities = list(
        PlatformEntity.objects.filter(pk__in_array=list(latest)).only("pk", "entity_type", "external_id", *VALUE_FIELDS)
    )
    by_key = {}
    for entity in entities:
        state = latest[entity.pk]
        by_key[(entity.entity_type, entity.external_id)] = state
    return mirror_refresh(entities, by_key)
