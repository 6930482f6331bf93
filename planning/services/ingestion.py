"""Daily ingestion: re-read the last days of performance and archive each day as a CSV file.

``ingestion_run`` syncs the connection through the platform's executor with a window of
``PLANNER_REINGEST_DAYS`` complete days, so a day the platform restated (late
conversions) is read again: the mirror's upsert makes re-ingestion idempotent. Then each
day's rows, as mirrored, are written to ``STATE_DIR/ingestion/<tenant>/<connection>/
<day>/ingestion-<id>.csv`` (written to a temporary file and renamed, so a reader never
sees half a file) and the file's SHA-256 is stored on the ``IngestionRun``: the archive
shows what BudgetRadar had for a day after each night's read.

One ingestion per connection and local day (a unique row); a failed one can be retried
(``ingestion_run`` claims a queued or failed row by compare-and-set).
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from budgetradar.errors import DomainError
from planning.models import IngestionRun, RunStatus
from planning.services.runs import local_now
from platforms.models import EntityPerformanceDaily, PlatformConnection
from platforms.registry import get_executor
from platforms.sync import sync_connection

CSV_COLUMNS = [
    "date",
    "platform",
    "entity_type",
    "external_id",
    "name",
    "currency",
    "spend",
    "impressions",
    "clicks",
    "conversions",
    "revenue",
]


def ingestion_ensure(*, connection: PlatformConnection, now: datetime | None = None) -> IngestionRun | None:
    """The day's ingestion row, created once per local day (None when it exists)."""
    try:
        with transaction.atomic():
            return IngestionRun.objects.create(
                tenant_id=connection.tenant_id, connection=connection, local_date=local_now(connection, now).date()
            )
    except IntegrityError:
        return None


def ingestion_run(*, ingestion_pk: int, now: datetime | None = None, executor=None) -> IngestionRun | None:
    """Run one ingestion (the task); None when another worker has it or it already succeeded."""
    now = now or timezone.now()
    claimed = IngestionRun.objects.filter(pk=ingestion_pk, status__in=[RunStatus.QUEUED, RunStatus.FAILED]).update(
        status=RunStatus.RUNNING, started_at=now
    )
    if claimed != 1:
        return None
    ingestion = IngestionRun.objects.select_related("connection__tenant").get(pk=ingestion_pk)
    connection = ingestion.connection
    try:
        result = sync_connection(
            connection=connection,
            executor=executor or get_executor(connection),
            days=settings.PLANNER_REINGEST_DAYS,
            now=now,
        )
        archives = [
            archive_day(connection=connection, day=day, ingestion=ingestion)
            for day in _days(result.since, result.until)
        ]
    except (DomainError, OSError) as exc:
        message = exc.message if isinstance(exc, DomainError) else str(exc)
        IngestionRun.objects.filter(pk=ingestion.pk).update(
            status=RunStatus.FAILED, message=message[:2000], finished_at=timezone.now()
        )
        ingestion.refresh_from_db()
        return ingestion
    IngestionRun.objects.filter(pk=ingestion.pk).update(
        status=RunStatus.SUCCEEDED,
        since=result.since,
        until=result.until,
        rows=result.performance_rows,
        archives=archives,
        message=result.message[:2000],
        finished_at=timezone.now(),
    )
    ingestion.refresh_from_db()
    return ingestion


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=i) for i in range((until - since).days + 1)]


def archive_dir(connection: PlatformConnection, day: date) -> Path:
    return Path(settings.STATE_DIR) / "ingestion" / connection.tenant.slug / str(connection.pk) / day.isoformat()


def archive_day(*, connection: PlatformConnection, day: date, ingestion: IngestionRun) -> dict[str, str | int]:
    """Write one day's mirrored rows as CSV; return the file's path, row count and SHA-256."""
    rows = (
        EntityPerformanceDaily.objects.filter(entity__connection=connection, date=day)
        .order_by("entity__entity_type", "entity__external_id")
        .values_list(
            "entity__entity_type",
            "entity__external_id",
            "entity__name",
            "spend",
            "impressions",
            "clicks",
            "conversions",
            "revenue",
        )
    )
    directory = archive_dir(connection, day)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"ingestion-{ingestion.pk}.csv"
    digest = hashlib.sha256()
    count = 0
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=".csv")
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            for entity_type, external_id, name, spend, impressions, clicks, conversions, revenue in rows.iterator():
                writer.writerow(
                    [
                        day.isoformat(),
                        connection.platform,
                        entity_type,
                        external_id,
                        name,
                        connection.currency,
                        spend,
                        impressions,
                        clicks,
                        conversions,
                        revenue,
                    ]
                )
                count += 1
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    digest.update(target.read_bytes())
    return {"date": day.isoformat(), "path": str(target), "rows": count, "sha256": digest.hexdigest()}
