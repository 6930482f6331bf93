"""The observability app's recurring work, declared in code and upserted after every migrate."""

from __future__ import annotations

from django_q.models import Schedule

SCHEDULES = [
    # name, function, minutes
    ("observability: worker heartbeat", "observability.tasks.heartbeat_task", 1),
    ("observability: send alert deliveries", "observability.tasks.deliveries_send_task", 1),
    ("observability: system checks", "observability.tasks.detectors_task", 5),
    ("observability: post-change watch and performance", "observability.tasks.watch_tick_task", 15),
]


def schedules_sync() -> list[str]:
    """Create or update every declared schedule by name; running it twice changes nothing."""
    for name, func, minutes in SCHEDULES:
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "args": None, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
    return [name for name, _, _ in SCHEDULES]
