"""Mirroring a platform account into PlatformEntity and EntityPerformanceDaily.

Two phases. First the platform is read (outside any transaction, with retries on
transient errors). Then the mirror is written in one short transaction that locks the
connection row, so two syncs of one connection never interleave their writes.

Every write is a bulk upsert in batches; parents are resolved level by level
(campaigns, then ad sets, then ads) from the ids the previous level's upsert returned.
The number of queries depends on the number of batches, never on the number of
entities. Entities the platform no longer lists are marked removed, never deleted:
actions and recommendations keep pointing at them.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from budgetradar.errors import DomainError
from platforms.base import PlatformExecutor
from platforms.models import EntityPerformanceDaily, PlatformConnection, PlatformEntity
from platforms.ratelimit import rate_limit_backoff
from platforms.retry import with_retries
from platforms.types import EntityState, EntityStatus, EntityType, ErrorCode, PerformanceRow, PlatformCallError

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
LEVELS = (EntityType.CAMPAIGN, EntityType.AD_SET, EntityType.AD, EntityType.CREATIVE)
PARENT_TYPE = {
    EntityType.AD_SET: EntityType.CAMPAIGN,
    EntityType.AD: EntityType.AD_SET,
    EntityType.CREATIVE: EntityType.AD,
}
MIRRORED_FIELDS = (
    "name",
    "status",
    "daily_budget",
    "lifetime_budget",
    "bid",
    "budget_id",
    "budget_shared",
    "budget_reference_count",
    "targeting",
    "schedule",
    "bid_strategy",
    "parent_id",
)
PERFORMANCE_FIELDS = ("spend", "impressions", "clicks", "conversions", "revenue")

Key = tuple[str, str]
T = TypeVar("T")


class SyncFailed(DomainError):
    """The platform could not be read; nothing in the mirror changed."""

    code = "sync_failed"
    http_status = 502


@dataclass(frozen=True)
class SyncResult:
    """What one sync did. ``performance_note`` explains missing performance."""

    connection_id: int
    entities_seen: int
    entities_created: int
    entities_updated: int
    entities_removed: int
    performance_rows: int
    since: date
    until: date
    performance_note: str = ""

    @property
    def message(self) -> str:
        entities = (
            f"{self.entities_seen} entities ({self.entities_created} new, {self.entities_updated} changed, "
            f"{self.entities_removed} marked removed)"
        )
        if self.performance_note:
            return f"{entities}; {self.performance_note}"
        return f"{entities}; {self.performance_rows} performance rows from {self.since} to {self.until}"


def sync_window(connection: PlatformConnection, days: int, *, now: datetime | None = None) -> tuple[date, date]:
    """The last ``days`` complete days in the account's time zone (today is still running)."""
    today = (now or timezone.now()).astimezone(ZoneInfo(connection.time_zone)).date()
    until = today - timedelta(days=1)
    return until - timedelta(days=days - 1), until


def sync_connection(
    *,
    connection: PlatformConnection,
    executor: PlatformExecutor,
    days: int,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncResult:
    """Read the account through ``executor`` and mirror it.

    Guarantees: raises ``SyncFailed`` (mirror untouched) when the entities cannot be
    read; when the platform cannot report performance, entities are still mirrored and
    the result says so; running it twice in a row changes nothing the second time
    except ``synced_at``. Must not be called inside ``transaction.atomic``.
    """
    since, until = sync_window(connection, days, now=now)
    states = _read(connection, executor.list_entities, sleep)
    facts = _read(connection, executor.account_facts, sleep)
    note = ""
    try:
        rows: Sequence[PerformanceRow] = _read(connection, lambda: executor.read_performance(since, until), sleep)
    except NotImplementedError:
        rows, note = [], f"performance not mirrored: {connection.get_platform_display()} does not report it yet"
    with transaction.atomic():
        list(PlatformConnection.objects.select_for_update().filter(pk=connection.pk).values_list("pk", flat=True))
        stamp = timezone.now()
        ids, created, updated = _upsert_entities(connection, states, stamp)
        removed = _mark_removed(connection, stamp)
        written = _upsert_performance(connection, rows, ids)
        PlatformConnection.objects.filter(pk=connection.pk).update(
            last_synced_at=stamp, account_facts_read_at=stamp, **_fact_columns(facts)
        )
    result = SyncResult(connection.pk, len(states), created, updated, removed, written, since, until, note)
    logger.info("sync: %s", result.message, extra={"connection_id": connection.pk, "tenant_id": connection.tenant_id})
    return result


def _fact_columns(facts: dict) -> dict:
    """The connection columns an executor's ``account_facts`` fill (others stay as they are)."""
    return {name: facts[name] for name in ("billable_unit_micros", "minimum_budgets") if name in facts}


def _read(connection: PlatformConnection, fn: Callable[[], T], sleep: Callable[[float], None]) -> T:
    def backoff(attempt: int, exc: PlatformCallError, delay: float) -> None:
        logger.warning(
            "sync read failed (attempt %s), retrying in %.1fs: %s",
            attempt,
            delay,
            exc.error.message,
            extra={"connection_id": connection.pk},
        )
        if exc.error.code == ErrorCode.RATE_LIMITED and exc.error.retry_after:
            rate_limit_backoff(connection=connection, seconds=exc.error.retry_after)

    try:
        return with_retries(fn, on_retry=backoff, sleep=sleep)
    except PlatformCallError as exc:
        raise SyncFailed(
            f"Could not read {connection}: {exc.error.message} {exc.error.hint}",
            details=exc.error.as_dict(),
        ) from None


def _upsert_entities(
    connection: PlatformConnection, states: Sequence[EntityState], stamp: datetime
) -> tuple[dict[Key, int], int, int]:
    """Upsert every listed entity, parents first; return ids by key, created and changed counts."""
    before = {
        (row[0], row[1]): row[2:]
        for row in PlatformEntity.objects.filter(connection=connection).values_list(
            "entity_type", "external_id", *MIRRORED_FIELDS
        )
    }
    by_level: dict[str, dict[str, EntityState]] = defaultdict(dict)
    for state in states:
        by_level[str(state.entity_type)][state.external_id] = state  # a repeated id: the last one wins
    ids: dict[Key, int] = {}
    created = updated = 0
    for level in LEVELS:
        objs = [_entity(connection, state, ids, stamp) for state in by_level.get(level, {}).values()]
        if not objs:
            continue
        PlatformEntity.objects.bulk_create(
            objs,
            batch_size=BATCH_SIZE,
            update_conflicts=True,
            unique_fields=["connection", "entity_type", "external_id"],
            update_fields=[*MIRRORED_FIELDS, "synced_at"],
        )
        ids.update(_ids_of(connection, level, objs))
        for obj in objs:
            previous = before.get((level, obj.external_id))
            if previous is None:
                created += 1
            elif previous != tuple(getattr(obj, name) for name in MIRRORED_FIELDS):
                updated += 1
    return ids, created, updated


def _ids_of(connection: PlatformConnection, level: str, objs: list[PlatformEntity]) -> dict[Key, int]:
    if all(obj.pk is not None for obj in objs):  # the upsert returned them (PostgreSQL, SQLite >= 3.35)
        return {(level, obj.external_id): obj.pk for obj in objs}
    rows = PlatformEntity.objects.filter(connection=connection, entity_type=level).values_list("external_id", "pk")
    return {(level, external_id): pk for external_id, pk in rows}


def _entity(connection: PlatformConnection, state: EntityState, ids: dict[Key, int], stamp: datetime) -> PlatformEntity:
    parent_type = PARENT_TYPE.get(state.entity_type)
    parent_id = ids.get((parent_type, state.parent_external_id)) if parent_type and state.parent_external_id else None
    return PlatformEntity(
        tenant_id=connection.tenant_id,
        connection=connection,
        entity_type=str(state.entity_type),
        external_id=state.external_id,
        parent_id=parent_id,
        name=state.name[:255],
        status=str(state.status),
        daily_budget=state.daily_budget,
        lifetime_budget=state.lifetime_budget,
        bid=state.bid,
        budget_id=state.budget_id or "",
        budget_shared=state.budget_shared,
        budget_reference_count=state.budget_reference_count,
        targeting=state.targeting,
        schedule=state.schedule,
        bid_strategy=(state.bid_strategy or "")[:40],
        synced_at=stamp,
    )


def _mark_removed(connection: PlatformConnection, stamp: datetime) -> int:
    """Entities this sync did not see are gone from the platform: mark them removed."""
    unseen = Q(synced_at__lt=stamp) | Q(synced_at__isnull=True)
    return (
        PlatformEntity.objects.filter(unseen, connection=connection)
        .exclude(status=EntityStatus.REMOVED)
        .update(status=EntityStatus.REMOVED)
    )


def _upsert_performance(connection: PlatformConnection, rows: Sequence[PerformanceRow], ids: dict[Key, int]) -> int:
    by_day: dict[tuple[int, date], EntityPerformanceDaily] = {}
    for row in rows:
        entity_id = ids.get(row.key)
        if entity_id is None:  # an entity the listing did not include; nothing to attach it to
            continue
        by_day[(entity_id, row.date)] = EntityPerformanceDaily(
            tenant_id=connection.tenant_id,
            entity_id=entity_id,
            date=row.date,
            spend=row.spend,
            impressions=row.impressions,
            clicks=row.clicks,
            conversions=row.conversions,
            revenue=row.revenue,
        )
    EntityPerformanceDaily.objects.bulk_create(
        list(by_day.values()),
        batch_size=BATCH_SIZE,
        update_conflicts=True,
        unique_fields=["entity", "date"],
        update_fields=list(PERFORMANCE_FIELDS),
    )
    return len(by_day)
