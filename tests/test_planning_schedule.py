"""The tick starts work in each account's time zone, once per local day; ingestion archives CSVs."""

from __future__ import annotations

import csv
import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from django_q.models import Schedule

from planning.models import AutomationSettings, IngestionRun, Mode, PlannerRun, RunStatus
from planning.schedules import TICK_NAME, schedules_sync
from planning.services.automation import automation_for
from planning.services.ingestion import ingestion_run
from planning.services.loop import loop_tick
from platforms.models import EntityPerformanceDaily
from tests import factories


def connection_in(tenant, zone: str, account_id: str):
    account = factories.SandboxAccountFactory(account_id=account_id, time_zone=zone)
    factories.SandboxCampaignFactory(account=account, external_id=f"{account_id}-cmp", daily_budget=Decimal("50.00"))
    conn = factories.sandbox_connection(tenant, account, name=account_id, time_zone=zone)
    AutomationSettings.objects.filter(pk=automation_for(conn).pk).update(mode=Mode.SHADOW)
    return conn


def test_tick_schedule_is_declared_once(db):
    schedules_sync()
    schedules_sync()
    assert Schedule.objects.filter(name=TICK_NAME).count() == 1


def test_tick_follows_each_accounts_local_clock_and_starts_once_a_day(tenant):
    berlin = connection_in(tenant, "Europe/Berlin", "acct-berlin")
    connection_in(tenant, "America/New_York", "acct-ny")
    off = connection_in(tenant, "Europe/Berlin", "acct-off")
    AutomationSettings.objects.filter(connection=off).update(mode=Mode.OFF)

    def started(model):
        return sorted((row.connection.name, str(row.local_date)) for row in model.objects.select_related("connection"))

    at_0030_utc = datetime(2026, 7, 1, 0, 30, tzinfo=UTC)  # 02:30 Berlin (summer time), 20:30 New York
    loop_tick(now=at_0030_utc)
    assert started(IngestionRun) == [("acct-berlin", "2026-07-01"), ("acct-ny", "2026-06-30")]
    assert started(PlannerRun) == [("acct-ny", "2026-06-30")]  # 08:00 passed in New York, not in Berlin

    at_0610_utc = datetime(2026, 7, 1, 6, 10, tzinfo=UTC)  # 08:10 Berlin, 02:10 New York
    loop_tick(now=at_0610_utc)
    loop_tick(now=at_0610_utc)  # a repeated tick starts nothing twice
    assert started(IngestionRun) == [
        ("acct-berlin", "2026-07-01"),
        ("acct-ny", "2026-06-30"),
        ("acct-ny", "2026-07-01"),
    ]
    assert started(PlannerRun) == [("acct-berlin", "2026-07-01"), ("acct-ny", "2026-06-30")]
    assert not PlannerRun.objects.filter(connection=off).exists()

    winter = datetime(2026, 12, 1, 6, 50, tzinfo=UTC)  # 07:50 Berlin in winter time: not yet
    loop_tick(now=winter)
    assert not PlannerRun.objects.filter(connection=berlin, local_date="2026-12-01").exists()
    loop_tick(now=datetime(2026, 12, 1, 7, 10, tzinfo=UTC))  # 08:10 Berlin: the run follows the local clock
    assert PlannerRun.objects.filter(connection=berlin, local_date="2026-12-01").exists()


def test_ingestion_re_reads_the_last_days_and_archives_each_as_csv(tenant, settings):
    settings.PLANNER_REINGEST_DAYS = 3
    conn = connection_in(tenant, "Europe/Berlin", "acct-ingest")
    now = datetime(2026, 7, 1, 0, 30, tzinfo=UTC)
    loop_tick(now=now)
    ingestion = ingestion_run(ingestion_pk=IngestionRun.objects.get(connection=conn).pk, now=now)
    assert ingestion.status == RunStatus.SUCCEEDED
    assert [a["date"] for a in ingestion.archives] == ["2026-06-28", "2026-06-29", "2026-06-30"]
    first = ingestion.archives[0]
    path = Path(first["path"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first["sha256"]
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == first["rows"] == 1 and rows[0]["external_id"] == "acct-ingest-cmp"
    assert EntityPerformanceDaily.objects.filter(entity__connection=conn).count() == 3
    assert ingestion_run(ingestion_pk=ingestion.pk, now=now) is None  # done: not run twice
