"""Benchmark: execute 10,000 approved budget actions through the engine, batched vs naive.

    .venv/bin/python bench/execute_actions.py [--actions 10000] [--latency-ms 20] [--naive-sample 200]
        [--platforms google_ads,meta] [--database-url postgres://postgres@127.0.0.1:5432/br_bench]

For each platform fake (real SDK, 20 ms injected latency per request) it seeds N
campaigns, mirrors them, approves one budget action per campaign and runs the engine
(dispatch + one job). It prints wall time, platform round trips against the batching
floor, database queries per 1,000 actions and the process's peak RSS growth. Then it
runs the naive design (per action: read, write, read back, save, log) on a sample and
extrapolates to N for the speed ratio. Not a test: figures vary with the machine.
Rate limits are lifted (fakes have none); the real limits would pace a real account.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOOGLE_CUSTOMER = "1234567890"
META_ACCOUNT = "act_1000"
META_TOKEN = "bench-meta-token"
BATCH_FLOOR = {"google_ads": 10_000, "meta": 50}  # changes (or reads) per request


def setup_django(database_url: str | None) -> None:
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='br-bench-')}/bench.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetradar.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.PLATFORM_RATE_LIMITS = {p: {"capacity": 1e9, "refill_per_second": 1e9} for p in BATCH_FLOOR}
    call_command("migrate", verbosity=0)


class QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


@contextmanager
def counting_queries():
    from django.db import connection

    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        yield counter


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Seeding -------------------------------------------------------------------------------


@contextmanager
def google_fake(n: int):
    from platforms.fakes.google_ads_fake import GoogleAdsFake, ensure_test_tls_roots

    ensure_test_tls_roots()
    with GoogleAdsFake() as fake:
        fake.add_customer(GOOGLE_CUSTOMER, currency="EUR")
        for i in range(n):
            fake.add_campaign(GOOGLE_CUSTOMER, 100_000 + i, f"Campaign {i}", budget_micros=100_000_000)
        yield fake, {"account_id": GOOGLE_CUSTOMER, "credentials": fake.credentials(), "api_base_url": fake.endpoint}


@contextmanager
def meta_fake(n: int):
    from platforms.fakes.meta_fake import MetaGraphFake

    with MetaGraphFake(access_token=META_TOKEN) as fake:
        fake.add_account(META_ACCOUNT, currency="EUR")
        for i in range(n):
            fake.add_campaign(META_ACCOUNT, campaign_id=str(100_000 + i), name=f"Campaign {i}", daily_budget=10_000)
        yield (
            fake,
            {"account_id": META_ACCOUNT, "credentials": {"access_token": META_TOKEN}, "api_base_url": fake.base_url},
        )


def fake_requests(fake) -> int:
    return len(fake.requests)


def mirror(platform: str, connection_kwargs: dict, tenant):
    from platforms.models import PlatformConnection
    from platforms.registry import get_executor
    from platforms.sync import sync_connection

    connection = PlatformConnection.objects.create(
        tenant=tenant, name=f"Bench {platform}", platform=platform, currency="EUR", **connection_kwargs
    )
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    return connection


def approve_all(connection, entities, approver) -> list:
    """One approved budget action per entity, created in bulk (the approval flow has its own tests)."""
    from django.utils import timezone

    from actions.models import Action, ActionStatus

    now = timezone.now()
    actions = [
        Action(
            tenant_id=connection.tenant_id,
            connection=connection,
            entity=entity,
            platform=connection.platform,
            action_type="adjust_budget",
            params={"new_budget": "150.00", "budget_type": "daily"},
            status=ActionStatus.APPROVED,
            approved_by=approver,
            approved_at=now,
            baseline_state={"status": entity.status, "daily_budget": str(entity.daily_budget)},
        )
        for entity in entities
    ]
    return Action.objects.bulk_create(actions, batch_size=1000)


# Runs ----------------------------------------------------------------------------------


def run_engine(connection) -> dict:
    from actions.models import Action, ActionJob, ActionStatus
    from actions.services.dispatch import actions_dispatch
    from actions.services.engine import job_process

    rss_before = peak_rss_mb()
    with counting_queries() as queries:
        started = time.perf_counter()
        job_ids = actions_dispatch(connection_ids=[connection.pk])
        reports = [job_process(job_id=job_id) for job_id in job_ids]
        wall = time.perf_counter() - started
    succeeded = Action.objects.filter(connection=connection, status=ActionStatus.SUCCEEDED).count()
    round_trips = sum(ActionJob.objects.filter(pk__in=job_ids).values_list("round_trips", flat=True))
    return {
        "wall": wall,
        "queries": queries.count,
        "round_trips": round_trips,
        "succeeded": succeeded,
        "rss_growth": peak_rss_mb() - rss_before,
        "jobs": len([r for r in reports if r]),
    }


def run_naive(connection, actions) -> dict:
    """The naive design: per action a read, a write and a read back, each action saved and logged."""
    from django.utils import timezone

    from actions.models import Action, ActionExecutionLog, LogEvent
    from platforms.base import no_throttle
    from platforms.registry import get_executor
    from platforms.types import Change, Field

    executor = get_executor(connection, throttle=no_throttle)
    with counting_queries() as queries:
        started = time.perf_counter()
        for action in actions:
            ref = action.entity.to_ref()
            before = executor.read_state([ref])[ref.key]
            Action.objects.filter(pk=action.pk).update(status="executing", before_state=before.as_dict())
            ActionExecutionLog.objects.create(tenant_id=action.tenant_id, action=action, event=LogEvent.REQUEST_SENT)
            executor.apply([Change(ref=ref, field=Field.DAILY_BUDGET, value=Decimal("150.00"), key=str(action.pk))])
            after = executor.read_state([ref])[ref.key]
            Action.objects.filter(pk=action.pk).update(
                status="succeeded", after_state=after.as_dict(), finished_at=timezone.now()
            )
            ActionExecutionLog.objects.create(tenant_id=action.tenant_id, action=action, event=LogEvent.SUCCEEDED)
        wall = time.perf_counter() - started
    return {"wall": wall, "queries": queries.count, "round_trips": executor.round_trips}


def bench_platform(platform: str, n: int, sample: int, latency: float, tenant, approver) -> dict:
    seed = google_fake if platform == "google_ads" else meta_fake
    with seed(n + sample) as (fake, connection_kwargs):
        connection = mirror(platform, connection_kwargs, tenant)
        entities = list(connection.entities.select_related("connection", "parent").order_by("external_id"))
        batched = approve_all(connection, entities[:n], approver)
        naive_actions = approve_all(connection, entities[n : n + sample], approver)
        # The naive sample must not be dispatched with the batched run.
        from actions.models import Action

        Action.objects.filter(pk__in=[a.pk for a in naive_actions]).update(status="pending_approval")
        fake.faults.latency_seconds = latency
        requests_before = fake_requests(fake)
        engine = run_engine(connection)
        engine["fake_requests"] = fake_requests(fake) - requests_before
        naive = run_naive(
            connection,
            [Action.objects.select_related("entity__parent", "connection").get(pk=a.pk) for a in naive_actions],
        )
        fake.faults.latency_seconds = 0
    per_request = BATCH_FLOOR[platform]
    floor_trips = 3 * -(-n // per_request)  # read before, write, read back; each batched
    naive_wall_n = naive["wall"] / sample * n
    return {
        "platform": platform,
        "actions": n,
        **engine,
        "floor_trips": floor_trips,
        "floor_wall": floor_trips * latency,
        "queries_per_1000": engine["queries"] / n * 1000,
        "naive_wall_n": naive_wall_n,
        "naive_trips_n": naive["round_trips"] / sample * n,
        "naive_queries_per_1000": naive["queries"] / sample * 1000,
        "speedup": naive_wall_n / engine["wall"],
        "batches_ok": len(batched) == engine["succeeded"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--naive-sample", type=int, default=200)
    parser.add_argument("--platforms", default="google_ads,meta")
    parser.add_argument("--database-url", default=None, help="default: a throwaway SQLite file")
    args = parser.parse_args()
    setup_django(args.database_url)

    from budgetradar.models import Tenant
    from budgetradar.plans import plan_named
    from tests.factories import member

    tenant = Tenant.objects.create(name="Bench", slug="bench", plan=plan_named("enterprise"))
    approver = member(tenant, "approver", "bench-approver")
    results = [
        bench_platform(p, args.actions, args.naive_sample, args.latency_ms / 1000, tenant, approver)
        for p in args.platforms.split(",")
    ]
    from django.db import connection

    print(f"command: {' '.join(sys.argv)}  (database: {connection.vendor})")
    print(f"{args.actions} approved budget actions per platform, {args.latency_ms:g} ms latency per request\n")
    header = (
        f"{'platform':<11}{'ok':>7}{'wall s':>9}{'trips':>7}{'floor':>7}{'trips/floor':>12}"
        f"{'wall/floor':>11}{'q/1000':>8}{'rss MB':>8}{'naive s (extrap.)':>19}{'naive q/1000':>13}{'speedup':>9}"
    )
    print(header)
    for r in results:
        print(
            f"{r['platform']:<11}{r['succeeded']:>7}{r['wall']:>9.2f}{r['round_trips']:>7}{r['floor_trips']:>7}"
            f"{r['round_trips'] / r['floor_trips']:>12.2f}{r['wall'] / r['floor_wall']:>11.2f}"
            f"{r['queries_per_1000']:>8.1f}{r['rss_growth']:>8.0f}{r['naive_wall_n']:>19.0f}"
            f"{r['naive_queries_per_1000']:>13.0f}{r['speedup']:>8.0f}x"
        )
    print(
        "\ntrips: platform requests the job sent (read before, write, read back); floor: 3 x ceil(N / batch size)"
        "\nwall/floor: wall time over floor trips x latency (includes all database work and SDK (de)serialisation)"
        f"\nnaive: measured on {args.naive_sample} actions (3 requests + 4 queries each) and scaled to N"
    )


if __name__ == "__main__":
    main()
