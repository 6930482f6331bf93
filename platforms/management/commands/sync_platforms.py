"""``manage.py sync_platforms [--connection ID] [--days N]``: mirror platform accounts."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from budgetradar.errors import DomainError
from platforms.models import PlatformConnection
from platforms.services import connection_sync


class Command(BaseCommand):
    help = "Mirror entities and daily performance of every active connection (or one)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--connection", type=int, help="Sync only this connection id.")
        parser.add_argument("--days", type=int, default=60, help="Days of performance to mirror (default 60).")

    def handle(self, *args, connection: int | None, days: int, **options) -> None:
        connections = PlatformConnection.objects.select_related("tenant").order_by("pk")
        if connection is not None:
            connections = connections.filter(pk=connection)
            if not connections.exists():
                raise CommandError(f"No platform connection with id {connection}.")
        else:
            connections = connections.filter(is_active=True)
        failures: list[str] = []
        for conn in connections:
            try:
                result = connection_sync(connection=conn, days=days)
            except DomainError as exc:
                failures.append(f"connection {conn.pk}: {exc.message}")
                self.stderr.write(f"Connection {conn.pk} ({conn.name}): FAILED: {exc.message}")
                continue
            self.stdout.write(f"Connection {conn.pk} ({conn.name}): {result.message}")
        if failures:
            raise CommandError(f"{len(failures)} sync(s) failed; first: {failures[0]}")
