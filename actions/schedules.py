"""Recurring work, declared in code and upserted into django-q2 after every migrate."""

from __future__ import annotations

from django_q.models import Schedule

SCHEDULES = [
    # name, function, args, minutes
    ("actions: process pending work", "actions.tasks.process_pending_task", "'execute'", 5),
    ("actions: process rollbacks", "actions.tasks.process_pending_task", "'rollback'", 10),
    ("actions: reconcile stuck actions", "actions.tasks.reconcile_task", "", 5),
]


def schedules_sync() -> list[str]:
    """Create or update every declared schedule by name; running it twice changes nothing."""
    names = []
    for name, func, args, minutes in SCHEDULES:
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "args": args or None,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
            },
        )
        names.append(name)
    return names
