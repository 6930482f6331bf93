"""django-q2 entry points for platforms (thin: ids in, services do the work)."""

from __future__ import annotations

from dataclasses import asdict

from platforms.models import PlatformConnection
from platforms.services import connection_sync


def sync_connection_task(connection_id: int, days: int = 60) -> dict:
    """Sync one connection. Idempotent: a second run mirrors the same platform state again.

    A connection deleted or deactivated since the task was queued is skipped, not an error.
    """
    connection = PlatformConnection.objects.filter(pk=connection_id, is_active=True).first()
    if connection is None:
        return {"connection_id": connection_id, "skipped": "no such active connection"}
    return asdict(connection_sync(connection=connection, days=days))
