"""The decision log: append, export as JSON lines, purge what retention allows.

Guarantees: rows are only ever inserted (the model refuses updates and deletes; on
PostgreSQL a trigger refuses them too); each row's ``retain_until`` is fixed when it is
written (``DECISION_LOG_RETENTION_DAYS`` after, 7 years by default), so lowering the
setting later never shortens what was promised; ``decisions_purge`` deletes only rows
past both their own ``retain_until`` and the current retention, in one transaction that
sets the flag the trigger checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.utils import timezone

from budgetradar.audit import actor_label
from planning.models import DecisionLogEntry, PlannerRun
from platforms.models import PlatformConnection

PURGE_FLAG = "budgetradar.decision_log_purge"
EXPORT_FIELDS = (
    "id",
    "tenant_id",
    "connection_id",
    "run_id",
    "kind",
    "mode",
    "fallback_level",
    "data_hash",
    "inputs",
    "fits",
    "plan",
    "reasoning",
    "outcome",
    "actor",
    "created_at",
    "retain_until",
)


def decision_append(
    *,
    connection: PlatformConnection,
    kind: str,
    run: PlannerRun | None = None,
    actor=None,
    now: datetime | None = None,
    **fields: Any,
) -> DecisionLogEntry:
    """Write one decision row (call inside the transaction that makes the decision true)."""
    now = now or timezone.now()
    return DecisionLogEntry.objects.create(
        tenant_id=connection.tenant_id,
        connection=connection,
        run=run,
        kind=kind,
        actor=actor if isinstance(actor, str) else actor_label(actor),
        retain_until=now + timedelta(days=settings.DECISION_LOG_RETENTION_DAYS),
        **fields,
    )


def decisions_export(
    *, out: IO[str], tenant_id: int | None = None, since: datetime | None = None, until: datetime | None = None
) -> int:
    """Write matching rows to ``out`` as JSON lines, oldest first; return the count."""
    rows = DecisionLogEntry.objects.order_by("created_at", "id")
    if tenant_id is not None:
        rows = rows.filter(tenant_id=tenant_id)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    count = 0
    for row in _iterate(rows.values(*EXPORT_FIELDS)):
        out.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        count += 1
    return count


def _iterate(rows) -> Iterator[dict[str, Any]]:
    yield from rows.iterator(chunk_size=500)


def purge_cutoff(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(days=settings.DECISION_LOG_RETENTION_DAYS)


def decisions_purge(*, now: datetime | None = None, dry_run: bool = False) -> int:
    """Delete rows past their retention; return how many were (or, dry run, would be) deleted."""
    now = now or timezone.now()
    expired = DecisionLogEntry.objects.filter(retain_until__lt=now, created_at__lt=purge_cutoff(now))
    if dry_run:
        return expired.count()
    ids = list(expired.values_list("pk", flat=True))
    if not ids:
        return 0
    with transaction.atomic(), db_connection.cursor() as cursor:
        if db_connection.vendor == "postgresql":
            cursor.execute("SELECT set_config(%s, 'on', true)", [PURGE_FLAG])  # this transaction only
        table = DecisionLogEntry._meta.db_table
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(chunk))})", chunk)
    return len(ids)
