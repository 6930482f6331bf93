"""The daily loop's tick: what is due in each account's own time zone, started once.

``loop_tick`` (every ``TICK_MINUTES`` from django-q2) walks the connections whose
automation is not off and, in the account's local time, creates the day's ingestion from
``PLANNER_INGEST_HOUR`` (02:00) and the day's scheduled planner run from
``PLANNER_OPTIMIZE_HOUR`` (08:00). Both rows are unique per connection and local day, so
ticks that overlap, repeat or come late start each at most once (a tick after a worker
outage still starts the day's work). It also re-queues runs of dead workers, starts due
queued runs, retries failed ingestions of the day, and compares shadow runs whose day
has been ingested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from planning.models import AutomationSettings, IngestionRun, Mode, RunStatus
from planning.services.ingestion import ingestion_ensure
from planning.services.rollout import shadow_compare_due
from planning.services.runs import local_now, planner_run_schedule, runs_pump, runs_reap


@dataclass
class TickResult:
    ingestions: list[int] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)
    reaped: int = 0
    pumped: int = 0
    shadow_compared: int = 0


def loop_tick(*, now: datetime | None = None) -> TickResult:
    """Start whatever is due (see the module docstring); safe to run at any time, any number of times."""
    now = now or timezone.now()
    result = TickResult()
    active = AutomationSettings.objects.exclude(mode=Mode.OFF).select_related("connection__tenant")
    for automation in active.order_by("pk"):
        connection = automation.connection
        if not connection.is_active:
            continue
        local = local_now(connection, now)
        if local.hour >= settings.PLANNER_INGEST_HOUR:
            ingestion = ingestion_ensure(connection=connection, now=now)
            if ingestion is not None:
                result.ingestions.append(ingestion.pk)
        if local.hour >= settings.PLANNER_OPTIMIZE_HOUR:
            run = planner_run_schedule(connection=connection, now=now)
            if run is not None:
                result.runs.append(run.pk)
    for pk in result.ingestions + _failed_ingestions_today(now):
        transaction.on_commit(lambda pk=pk: async_task("planning.tasks.ingestion_task", pk, group="planning"))
    result.reaped = runs_reap(now=now)
    result.pumped = runs_pump(now=now)
    result.shadow_compared = shadow_compare_due()
    return result


def _failed_ingestions_today(now: datetime) -> list[int]:
    failed = IngestionRun.objects.filter(status=RunStatus.FAILED).select_related("connection")
    return [i.pk for i in failed if i.local_date == local_now(i.connection, now).date()]
