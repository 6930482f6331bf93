"""``manage.py preflight_prune [--dry-run]``: delete preflight runs older than
``PREFLIGHT_RETENTION_DAYS`` that no deployment, override or action still relies on
(``scenarios.services.retention``); the daily schedule runs the same service. The cutoff is
shown in the deployment's zone (``TIME_ZONE``), zone named: it applies to every tenant."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from budgetradar.timefmt import format_time
from scenarios.services.retention import preflights_prune


class Command(BaseCommand):
    help = "Delete old preflight runs that no deployment, override or action still relies on."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; delete nothing.")

    def handle(self, *args, dry_run: bool, **options) -> None:
        result = preflights_prune(dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(
            f"{verb} {result.runs} preflight runs ({result.entity_rows} entity rows) created before "
            f"{format_time(result.cutoff)} (retention {settings.PREFLIGHT_RETENTION_DAYS} days)"
        )
