"""Readiness: can this deployment do its work right now?

Four checks, each answering ``Check(name, ok, detail)``:
- ``database``: a ``SELECT 1`` on the default database;
- ``broker``: the django-q2 broker answers (Redis ``PING``; the ORM broker, whose own
  ``ping`` always says yes, is asked for its queue size, a real query);
- ``workers``: the newest worker heartbeat (written every minute by a worker running
  the heartbeat schedule) is younger than ``WORKER_HEARTBEAT_MAX_AGE_SECONDS``;
- ``schedules``: no django-q2 schedule is overdue by more than ``SCHEDULE_GRACE_SECONDS``
  (its ``next_run`` passed without a worker running it), each named with its last run.

Why not django-health-check: its view answers 500 (not 503) on failure, runs
synchronous checks in threads on their own database connections and imports
dnspython for its bundled checks; these four checks need none of that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Max
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule, Task

from budgetradar.timefmt import format_time
from observability.models import WorkerHeartbeat


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_database(now: datetime) -> Check:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return Check("database", True, f"{connection.vendor} answers")


def check_broker(now: datetime) -> Check:
    broker = get_broker()
    if not broker.ping():
        return Check("broker", False, f"{broker.info()} does not answer PING")
    waiting = broker.queue_size()
    return Check("broker", True, f"{broker.info()}: {waiting} tasks waiting")


def check_workers(now: datetime) -> Check:
    newest = WorkerHeartbeat.objects.aggregate(at=Max("seen_at"))["at"]
    limit = settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS
    if newest is None:
        return Check("workers", False, "no worker has ever run the heartbeat schedule: is qcluster running?")
    age = (now - newest).total_seconds()
    if age > limit:
        return Check("workers", False, f"newest worker heartbeat is {age:.0f} s old (limit {limit} s)")
    return Check("workers", True, f"newest worker heartbeat {age:.0f} s ago")


def overdue_schedules(now: datetime) -> list[tuple[Schedule, float]]:
    """Active schedules whose next run passed more than the grace ago, with how long."""
    grace = timedelta(seconds=settings.SCHEDULE_GRACE_SECONDS)
    rows = Schedule.objects.exclude(repeats=0).filter(next_run__lt=now - grace).order_by("next_run")
    return [(row, (now - row.next_run).total_seconds()) for row in rows]


def check_schedules(now: datetime) -> Check:
    late = overdue_schedules(now)
    if late:
        named = "; ".join(
            f"{s.name or s.func} overdue by {seconds / 60:.0f} min ({_last_run(s)})" for s, seconds in late
        )
        return Check("schedules", False, named)
    count = Schedule.objects.exclude(repeats=0).count()
    return Check("schedules", True, f"{count} schedules on time")


def _last_run(schedule: Schedule) -> str:
    """When the schedule's last task stopped and how, in the deployment's zone (``TIME_ZONE``):
    schedules belong to no tenant."""
    task = Task.objects.filter(id=schedule.task).first() if schedule.task else None
    if task is None:
        return "never ran"
    outcome = "succeeded" if task.success else "failed"
    return f"last run {outcome} at {format_time(task.stopped)}"


CHECKS: list[Callable[[datetime], Check]] = [check_database, check_broker, check_workers, check_schedules]


def readiness(now: datetime | None = None) -> list[Check]:
    """Run every check; a check that raises fails with the exception named (never a 500)."""
    now = now or timezone.now()
    results = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            results.append(check(now))
        except Exception as exc:
            results.append(Check(name, False, f"{type(exc).__name__}: {exc}"[:500]))
    return results
