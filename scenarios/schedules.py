"""The scenarios app's recurring work, declared in code and upserted into django-q2."""

from __future__ import annotations

from django_q.models import Schedule

PRUNE_NAME = "scenarios: prune old preflights"


def schedules_sync() -> list[str]:
    """Create or update the daily preflight pruning by name; running it twice changes nothing."""
    Schedule.objects.update_or_create(
        name=PRUNE_NAME,
        defaults={
            "func": "scenarios.tasks.preflights_prune_task",
            "args": None,
            "schedule_type": Schedule.DAILY,
            "repeats": -1,
        },
    )
    return [PRUNE_NAME]
