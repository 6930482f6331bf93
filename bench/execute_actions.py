"""Benchmark: execute 10,000 approved budget actions through the engine, batched vs naive.

    .venv/bin/python bench/execute_actions.py [--actions 10000] [--latency-ms 20] [--naive-sample 200]
        [--platforms google_ads,meta] [--limiter off|defaults|both] [--real-clock]
        [--database-url postgres://postgres@127.0.0.1:5432/br_bench]

For each platform fake (real SDK, 20 ms injected latency per request) it seeds N
campaigns, mirrors them, approves one budget action per campaign and runs the engine
(dispatch + one job). It prints wall time, platform round trips against the batching
floor, database queries per 1,000 actions and the process's peak RSS growth. Then it
runs the naive design (per action: read, write, read back, save, log) on a sample and
extrapolates to N for the speed ratio. Not a test: figures vary with the machine.

``--limiter off`` lifts the shared rate limiter (capacity and refill 1e9: the bucket's
database round trips still happen, the waits do not) and measures the engine's own cost.
``--limiter defaults`` runs the same actions under the platform's default limits
(platforms/ratelimit.py): the engine works through jobs of ENGINE_JOB_MAX_ACTIONS in
units, resuming across task budgets, paced by the limiter. By default its clock is
simulated (the limiter's sleeps advance a virtual clock at once, so the pacing is exact
but not waited for: "simulated s" is the time a real account would take); with
``--real-clock`` it really waits. Both modes print which is which.
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
BATCH_FLOOR = {"google_ads": 10_000, "meta": 50}  # changes per write request
# entities per read request: Google's GAQL IN lists are kept to 1,000 ids (the limit is
# undocumented; platforms.google_ads.MAX_IDS_PER_QUERY), Meta batches 50 reads
READ_FLOOR = {"google_ads": 1_000, "meta": 50}
LIFTED = {p: {"capacity": 1e9, "refill_per_second": 1e9} for p in BATCH_FLOOR}


def setup_django(database_url: str | None) -> None:
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='br-bench-')}/bench.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetradar.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


@contextmanager
def django_on_fresh_database(server_url: str):
    """Django set up on a new, migrated PostgreSQL database made on ``server_url``, dropped
    afterwards (whatever happens meanwhile)."""
    from chaos import create_database, drop_database

    database_url = create_database(server_url)
    try:
        setup_django(database_url)
        yield
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(database_url)


class QueryCounter:
    """Statements run on the connection, and the wall time spent in them (the driver's
    preparation of the parameters included)."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started


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
            next_attempt_at=now,  # execute on approval
            baseline_state={"status": entity.status, "daily_budget": str(entity.daily_budget)},
        )
        for entity in entities
    ]
    return Action.objects.bulk_create(actions, batch_size=1000)


# Runs ----------------------------------------------------------------------------------


class SimulatedClock:
    """Time for the rate limiter only: sleeping advances it at once, so the limiter's pacing
    is computed exactly without waiting for it."""

    def __init__(self) -> None:
        from django.utils import timezone

        self._now = timezone.now()
        self.slept = 0.0

    def now(self):
        return self._now

    def sleep(self, seconds: float) -> None:
        from datetime import timedelta

        self._now += timedelta(seconds=seconds)
        self.slept += seconds


def run_engine(connection, *, limiter: str, real_clock: bool = False) -> dict:
    """Dispatch and run jobs until every action settled (jobs are capped, units resume)."""
    from actions.models import Action, ActionJob, ActionStatus, JobStatus
    from actions.services.dispatch import actions_dispatch
    from actions.services.engine import job_process
    from budgetradar.outbox import outbox_drain
    from platforms.ratelimit import ConnectionThrottle

    clock = None if real_clock or limiter == "off" else SimulatedClock()
    throttle = ConnectionThrottle(connection, clock=clock.now, sleep=clock.sleep) if clock else None
    rss_before = peak_rss_mb()
    job_ids: set[int] = set()
    tasks = 0
    longest_task = 0.0  # one task's engine time plus, simulated, the limiter's waits in it
    with counting_queries() as queries:
        started = time.perf_counter()
        for _ in range(100_000):  # bounded: each pass settles at least one unit
            job_ids.update(actions_dispatch(connection_ids=[connection.pk]))
            queued = list(
                ActionJob.objects.filter(connection=connection, status=JobStatus.QUEUED).values_list("id", flat=True)
            )
            if not queued:
                break
            for job_id in queued:
                task_started, slept_before = time.perf_counter(), clock.slept if clock else 0.0
                job_process(
                    job_id=job_id,
                    throttle=throttle,
                    sleep=clock.sleep if clock else time.sleep,
                    # the task budget counts the limiter's simulated waits as if they were slept
                    clock=(lambda: time.monotonic() + clock.slept) if clock else time.monotonic,
                )
                tasks += 1
                task_seconds = time.perf_counter() - task_started + (clock.slept - slept_before if clock else 0.0)
                longest_task = max(longest_task, task_seconds)
            outbox_drain()
        wall = time.perf_counter() - started
    succeeded = Action.objects.filter(connection=connection, status=ActionStatus.SUCCEEDED).count()
    if succeeded == 0:
        from django.db.models import Count

        statuses = dict(
            Action.objects.filter(connection=connection).values_list("status").annotate(n=Count("id")).order_by()
        )
        errors = list(
            ActionJob.objects.filter(pk__in=job_ids)
            .exclude(error_summary="")
            .values_list("error_summary", flat=True)[:3]
        )
        raise SystemExit(
            f"no action succeeded ({len(job_ids)} jobs, {tasks} tasks; actions by status: {statuses}; "
            f"job errors: {errors or 'none'}): check that the bench's actions are due and the fake answered"
        )
    round_trips = sum(ActionJob.objects.filter(pk__in=job_ids).values_list("round_trips", flat=True))
    return {
        "wall": wall,
        "simulated": clock.slept if clock else None,
        "queries": queries.count,
        "round_trips": round_trips,
        "succeeded": succeeded,
        "rss_growth": peak_rss_mb() - rss_before,
        "jobs": len(job_ids),
        "tasks": tasks,
        "longest_task": longest_task,
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
            Action.objects.filter(pk=action.pk).update(
                status="executing", before_state=before.as_dict(), lease_owner="naive"
            )
            ActionExecutionLog.objects.create(tenant_id=action.tenant_id, action=action, event=LogEvent.REQUEST_SENT)
            executor.apply([Change(ref=ref, field=Field.DAILY_BUDGET, value=Decimal("150.00"), key=str(action.pk))])
            after = executor.read_state([ref])[ref.key]
            Action.objects.filter(pk=action.pk).update(
                status="succeeded", after_state=after.as_dict(), finished_at=timezone.now()
            )
            ActionExecutionLog.objects.create(tenant_id=action.tenant_id, action=action, event=LogEvent.SUCCEEDED)
        wall = time.perf_counter() - started
    return {"wall": wall, "queries": queries.count, "round_trips": executor.round_trips}


def bench_platform(
    platform: str, n: int, sample: int, latency: float, tenant, approver, *, limiter: str, real_clock: bool
) -> dict:
    from django.conf import settings

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
        settings.PLATFORM_RATE_LIMITS = LIFTED if limiter == "off" else {}
        engine = run_engine(connection, limiter=limiter, real_clock=real_clock)
        engine["fake_requests"] = fake_requests(fake) - requests_before
        naive = run_naive(
            connection,
            [Action.objects.select_related("entity__parent", "connection").get(pk=a.pk) for a in naive_actions],
        )
        fake.faults.latency_seconds = 0
    # read before and read back in read-sized requests, the writes in write-sized ones
    floor_trips = 2 * -(-n // READ_FLOOR[platform]) + -(-n // BATCH_FLOOR[platform])
    naive_wall_n = naive["wall"] / sample * n
    return {
        "platform": platform,
        "limiter": limiter,
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
    parser.add_argument("--limiter", choices=["off", "defaults", "both"], default="both")
    parser.add_argument("--real-clock", action="store_true", help="with the default limits, really wait")
    args = parser.parse_args()
    setup_django(args.database_url)

    from budgetradar.models import Tenant
    from budgetradar.plans import plan_named
    from tests.factories import member

    modes = ["off", "defaults"] if args.limiter == "both" else [args.limiter]
    results = []
    for mode in modes:  # a tenant per mode: the same fake account ids, their own connections
        tenant = Tenant.objects.create(name=f"Bench {mode}", slug=f"bench-{mode}", plan=plan_named("enterprise"))
        approver = member(tenant, "approver", f"bench-approver-{mode}")
        for platform in args.platforms.split(","):
            results.append(
                bench_platform(
                    platform,
                    args.actions,
                    args.naive_sample,
                    args.latency_ms / 1000,
                    tenant,
                    approver,
                    limiter=mode,
                    real_clock=args.real_clock,
                )
            )
    from django.db import connection

    print(f"command: {' '.join(sys.argv)}  (database: {connection.vendor})")
    print(f"{args.actions} approved budget actions per platform, {args.latency_ms:g} ms latency per request\n")
    header = (
        f"{'platform':<11}{'limiter':<10}{'ok':>7}{'wall s':>9}{'simul. s':>10}{'trips':>7}{'floor':>7}"
        f"{'trips/floor':>12}{'q/1000':>8}{'rss MB':>8}{'jobs':>6}{'tasks':>6}{'task s':>8}"
        f"{'naive s (extrap.)':>19}{'speedup':>9}"
    )
    print(header)
    for r in results:
        simulated = f"{r['simulated']:>10.0f}" if r["simulated"] is not None else f"{'-':>10}"
        print(
            f"{r['platform']:<11}{r['limiter']:<10}{r['succeeded']:>7}{r['wall']:>9.2f}{simulated}"
            f"{r['round_trips']:>7}{r['floor_trips']:>7}{r['round_trips'] / r['floor_trips']:>12.2f}"
            f"{r['queries_per_1000']:>8.1f}{r['rss_growth']:>8.0f}{r['jobs']:>6}{r['tasks']:>6}{r['longest_task']:>8.0f}"
            f"{r['naive_wall_n']:>19.0f}{r['speedup']:>8.0f}x"
        )
    from django.conf import settings

    from platforms.ratelimit import rate_limit_for

    settings.PLATFORM_RATE_LIMITS = {}  # the defaults, not the lifted limits of the last "off" run
    limits = ", ".join(f"{p}: {rate_limit_for(p)}" for p in args.platforms.split(","))
    print(
        "\nlimiter off: capacity and refill lifted to 1e9 (the bucket's database trips remain, its waits do not)"
        f"\nlimiter defaults: {limits}"
        + (
            "; real clock (waited)"
            if args.real_clock
            else "; simulated clock: 'simul. s' is the time the limiter "
            "paces the work to, computed without waiting; wall s is the engine's own time"
        )
        + "\ntask s: the longest task (one job_process call), the limiter's simulated waits included;"
        f" a task stops taking units near ENGINE_TASK_BUDGET_SECONDS ({settings.ENGINE_TASK_BUDGET_SECONDS} s)"
        + "\ntrips: platform requests the jobs sent (read before, write, read back);"
        " floor: 2 x ceil(N / read size) + ceil(N / write size)"
        f"\nnaive: measured on {args.naive_sample} actions (3 requests + 4 queries each) and scaled to N;"
        " speedup is against the engine's wall time"
    )


if __name__ == "__main__":
    main()
