"""Recurring work, declared in code and upserted into django-q2 after every migrate."""

from __future__ import annotations

from django_q.models import Schedule

DISPATCH_SWEEP = "actions: dispatch due work"

SCHEDULES = [
    # name, function, args, minutes
    (DISPATCH_SWEEP, "actions.tasks.sweep_task", "", 1),
    ("actions: reconcile unsettled actions", "actions.tasks.reconcile_task", "", 1),
    ("outbox: run consumers", "budgetradar.tasks.outbox_drain_task", "", 1),
    ("outbox: prune processed events", "budgetradar.tasks.outbox_prune_task", "", 24 * 60),
]
RETIRED = ["actions: process pending work", "actions: process rollbacks", "actions: reconcile stuck actions"]


def schedules_sync() -> list[str]:
    """Create or update every declared schedule by name, and remove retired ones;
    running it twice changes nothing."""
    Schedule.objects.filter(name__in=RETIRED).delete()
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
