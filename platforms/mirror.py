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

from budgetradar.bulk import bulk_set, bulk_set_values
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
    the last state winning for an entity read twice.

    The rows are not loaded: every entity that still exists gets the read values and
    ``synced_at`` in one statement (a row whose values were already these is written
    with them again, as a refresh writes its ``synced_at`` anyway); an entity deleted
    meanwhile is skipped. Returns how many rows were refreshed.
    """
    latest = dict(states)
    if not latest:
        return 0
    pks = list(latest)  # dict order: values follow the keys
    values = [[read[name] for name in VALUE_FIELDS] for read in map(_values_of, latest.values())]
    return bulk_set_values(PlatformEntity, pks, VALUE_FIELDS, values, same={"synced_at": timezone.now()})
