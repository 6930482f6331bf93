"""``manage.py decision_log export [--tenant SLUG] [--since DATE] [--until DATE] [--out FILE]``
and ``manage.py decision_log purge [--dry-run]``: the planner's decision log as JSON lines,
and deletion of rows past their retention (``DECISION_LOG_RETENTION_DAYS``, 7 years)."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime

from django.core.management.base import BaseCommand, CommandError

from budgetradar.models import Tenant
from planning.services.decisions import decisions_export, decisions_purge, purge_cutoff


def _day(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD).") from None
    return datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)


class Command(BaseCommand):
    help = "Export the planner's decision log as JSON lines, or purge rows past their retention."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="operation", required=True)
        export = sub.add_parser("export", help="Write rows as JSON lines, oldest first.")
        export.add_argument("--tenant", help="Only this tenant (slug).")
        export.add_argument("--since", help="From this UTC date (inclusive).")
        export.add_argument("--until", help="Before this UTC date.")
        export.add_argument("--out", help="File to write (default: standard output).")
        purge = sub.add_parser("purge", help="Delete rows past their retention.")
        purge.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(self, *args, operation: str, **options) -> None:
        if operation == "purge":
            count = decisions_purge(dry_run=options["dry_run"])
            verb = "would delete" if options["dry_run"] else "deleted"
            self.stdout.write(f"{verb} {count} decision log rows kept until before {purge_cutoff():%Y-%m-%d}.")
            return
        tenant_id = None
        if options.get("tenant"):
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant with slug {options['tenant']!r}.")
            tenant_id = tenant.pk
        since, until = _day(options.get("since")), _day(options.get("until"))
        if options.get("out"):
            with open(options["out"], "w", encoding="utf-8") as out:
                count = decisions_export(out=out, tenant_id=tenant_id, since=since, until=until)
            self.stderr.write(f"exported {count} rows to {options['out']}")
        else:
            count = decisions_export(out=sys.stdout, tenant_id=tenant_id, since=since, until=until)
            self.stderr.write(f"exported {count} rows")
