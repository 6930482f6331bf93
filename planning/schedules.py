"""The planning loop's recurring work, declared in code and upserted into django-q2.

One tick every few minutes walks every connection with automation on and starts what is
due in *that account's* time zone (ingestion from 02:00, optimization from 08:00 local
time), once per local day: the rows it creates are unique per (connection, local day),
so a late, repeated or concurrent tick starts nothing twice, and a daylight-saving
change moves the run with the local clock instead of an hour off (django-q2's own DAILY
schedules correct for DST only in the server's zone).
"""

from __future__ import annotations

from django_q.models import Schedule

TICK_NAME = "planning: daily loop tick"
TICK_MINUTES = 5


def schedules_sync() -> list[str]:
    """Create or update the tick schedule by name; running it twice changes nothing."""
    Schedule.objects.update_or_create(
        name=TICK_NAME,
        defaults={
            "func": "planning.tasks.tick_task",
            "args": None,
            "schedule_type": Schedule.MINUTES,
            "minutes": TICK_MINUTES,
            "repeats": -1,
        },
    )
    return [TICK_NAME]
