"""Benchmark: preflight a 10,000-entity scenario on each fake, then deploy it live end to end.

    .venv/bin/python bench/preflight.py [--entities 10000] [--latency-ms 20] [--history-days 28]
        [--platforms google_ads,meta] [--no-deploy] [--profile]
        [--database-url postgres://postgres@127.0.0.1:5432/br_bench]

For each platform fake (real SDK, injected latency per request) it seeds N campaigns
(Google: every tenth trio of campaigns shares one budget), mirrors them, writes
``--history-days`` days of performance per campaign, and builds a scenario raising every
daily budget by 10 % under a tenant policy that switches every database-backed rule on
(increase limit, cooldown, account total, shared-budget reach). Then:

- preflight: ``preflight_for_scenario`` timed (wall), with the database queries it ran
  and the platform requests it sent; a second, identical run under ``tracemalloc`` gives
  the peak Python memory and checks that both documents are byte-identical apart from
  run id and time;
- live deploy: ``deployment_create(mode="live")`` and the engine (dispatch + every
  queued job) until the deployment settles; wall, queries, platform requests and the
  deployment's counts.

Not a test: figures vary with the machine. Rate limits are lifted (fakes have none).
Goal: a 10,000-entity preflight under 5 s with queries bounded per batch.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
import tracemalloc
import uuid
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.execute_actions import (  # noqa: E402 (needs the path above)
    GOOGLE_CUSTOMER,
    META_ACCOUNT,
    META_TOKEN,
    counting_queries,
    setup_django,
)

SHARED_EVERY = 10  # every tenth trio of Google campaigns shares a budget


@contextmanager
def google_fake(n: int):
    from platforms.fakes.google_ads_fake import GoogleAdsFake, ensure_test_tls_roots

    ensure_test_tls_roots()
    with GoogleAdsFake() as fake:
        fake.add_customer(GOOGLE_CUSTOMER, currency="EUR")
        for i in range(n):
            trio = i // 3
            shared = {"shared_budget_id": 900_000 + trio} if trio % SHARED_EVERY == 0 else {}
            fake.add_campaign(GOOGLE_CUSTOMER, 100_000 + i, f"Campaign {i}", budget_micros=100_000_000, **shared)
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


def seed(platform: str, connection_kwargs: dict, tenant, n: int, history_days: int):
    """Mirror the account, write performance history, build the scenario of N items."""
    from django.utils import timezone

    from platforms.models import EntityPerformanceDaily, PlatformConnection
    from platforms.registry import get_executor
    from platforms.sync import sync_connection
    from scenarios.models import Scenario, ScenarioItem

    connection = PlatformConnection.objects.create(
        tenant=tenant, name=f"Bench {platform}", platform=platform, currency="EUR", **connection_kwargs
    )
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    entities = list(connection.entities.filter(entity_type="campaign").order_by("external_id")[:n])
    EntityPerformanceDaily.objects.filter(entity__connection=connection).delete()
    today = timezone.now().date()
    rows = (
        EntityPerformanceDaily(
            tenant=tenant,
            entity=entity,
            date=today - timedelta(days=day + 1),
            spend=spend,
            conversions=conversions,
            revenue=conversions * 40,
        )
        for index, entity in enumerate(entities)
        for day in range(history_days)
        for spend, conversions in [history_day(index, day)]
    )
    EntityPerformanceDaily.objects.bulk_create(rows, batch_size=5000)
    scenario = Scenario.objects.create(tenant=tenant, name=f"Bench {platform}", notes="benchmark")
    ScenarioItem.objects.bulk_create(
        (ScenarioItem(scenario=scenario, entity=entity, daily_budget=Decimal("110.00")) for entity in entities),
        batch_size=5000,
    )
    return connection, scenario


def history_day(index: int, day: int) -> tuple[Decimal, Decimal]:
    """A day on a noisy diminishing-returns curve: conversions ~ 0.3 * spend^0.8 (+-10 %)."""
    spend = Decimal(60 + (day * 37 + index * 11) % 70)
    noise = 0.9 + ((day * 13 + index * 7) % 21) / 100
    return spend, Decimal(0.3 * float(spend) ** 0.8 * noise).quantize(Decimal("0.01"))


def requests_of(fake) -> int:
    return len(fake.requests)


def run_preflight(scenario, actor, fake, profile: bool) -> dict:
    from scenarios.services.preflight import preflight_for_scenario

    before = requests_of(fake)
    profiler = cProfile.Profile() if profile else None
    with counting_queries() as queries:
        started, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        run = preflight_for_scenario(scenario=scenario, actor=actor)
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(
            45
        )
    from scenarios.services.preflight import preflight_document

    payload = preflight_document(run)
    return {
        "run": run,
        "wall": wall,
        "cpu": cpu,
        "queries": queries.count,
        "requests": requests_of(fake) - before,
        "entities": payload["summary"]["entities"],
        "changed": payload["summary"]["changed"],
        "breaches": len(payload["breaches"]),
        "critical": payload["has_critical"],
        "bytes": len(json.dumps(payload)),
    }


def traced_preflight(scenario, actor) -> tuple[float, object]:
    """A second preflight under tracemalloc: peak Python memory in MB, and the run."""
    from scenarios.services.preflight import preflight_for_scenario

    tracemalloc.start()
    run = preflight_for_scenario(scenario=scenario, actor=actor)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1024 / 1024, run


def comparable(payload: dict) -> str:
    return json.dumps({k: v for k, v in payload.items() if k not in ("run_id", "generated_at")}, sort_keys=True)


def run_deploy(scenario, actor, fake) -> dict:
    from actions.models import ActionJob, JobStatus
    from actions.services.dispatch import actions_dispatch
    from actions.services.engine import job_process
    from platforms.base import no_throttle
    from scenarios.models import Deployment
    from scenarios.services.deploy import deployment_create

    settled = {Deployment.Status.SUCCEEDED, Deployment.Status.PARTIALLY_SUCCEEDED, Deployment.Status.FAILED}
    before = requests_of(fake)
    with counting_queries() as queries:
        started = time.perf_counter()
        answer = deployment_create(scenario=scenario, actor=actor, mode="live", idempotency_key=str(uuid.uuid4()))
        deployment = Deployment.objects.get(pk=answer.response["id"])
        queued_wall = time.perf_counter() - started
        while deployment.status not in settled:
            actions_dispatch()
            jobs = list(ActionJob.objects.filter(status=JobStatus.QUEUED).order_by("id").values_list("id", flat=True))
            if not jobs:
                break
            for job_id in jobs:
                job_process(job_id=job_id, throttle=no_throttle)
            deployment.refresh_from_db()
        wall = time.perf_counter() - started
    deployment.refresh_from_db()
    return {
        "wall": wall,
        "queued_wall": queued_wall,
        "queries": queries.count,
        "requests": requests_of(fake) - before,
        "status": deployment.status,
        "total": deployment.total,
        "succeeded": deployment.succeeded,
        "failed": deployment.failed,
        "stale": deployment.stale,
    }


def bench_platform(platform: str, args, tenant, actor) -> dict:
    from scenarios.services.preflight import preflight_document

    seeder = google_fake if platform == "google_ads" else meta_fake
    with seeder(args.entities) as (fake, connection_kwargs):
        seeding = time.perf_counter()
        _connection, scenario = seed(platform, connection_kwargs, tenant, args.entities, args.history_days)
        seeding = time.perf_counter() - seeding
        fake.faults.latency_seconds = args.latency_ms / 1000
        preflight = run_preflight(scenario, actor, fake, args.profile)
        peak_mb, second = traced_preflight(scenario, actor)
        preflight["peak_mb"] = peak_mb
        preflight["identical"] = comparable(preflight_document(second)) == comparable(
            preflight_document(preflight["run"])
        )
        deploy = run_deploy(scenario, actor, fake) if args.deploy else None
        fake.faults.latency_seconds = 0
    return {"platform": platform, "seeding": seeding, "preflight": preflight, "deploy": deploy}


def _floor(platform: str, requests: int, latency_ms: float) -> float:
    from platforms.meta import MetaExecutor

    in_flight = MetaExecutor.read_concurrency if platform == "meta" else 1
    return -(-requests // in_flight) * latency_ms / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--history-days", type=int, default=28)
    parser.add_argument("--platforms", default="google_ads,meta")
    parser.add_argument("--no-deploy", dest="deploy", action="store_false", help="preflight only")
    parser.add_argument("--profile", action="store_true", help="cProfile of each preflight to stderr")
    parser.add_argument("--database-url", default=None, help="default: a throwaway SQLite file")
    args = parser.parse_args()
    setup_django(args.database_url)

    from budgetradar.models import Tenant
    from budgetradar.plans import plan_named
    from scenarios.models import GuardrailPolicy
    from tests.factories import member

    tenant = Tenant.objects.create(name="Bench", slug="bench", plan=plan_named("enterprise"))
    actor = member(tenant, "approver", "bench-approver")
    GuardrailPolicy.objects.create(
        tenant=tenant,
        max_increase_pct=Decimal("50"),
        cooldown_hours=24,
        max_account_daily_spend=Decimal("100000000"),
        shared_budget_max_campaigns=5,
    )
    results = [bench_platform(p, args, tenant, actor) for p in args.platforms.split(",")]

    from django.db import connection

    print(f"command: {' '.join(sys.argv)}  (database: {connection.vendor})")
    print(
        f"{args.entities} entities per platform, {args.latency_ms:g} ms latency per request, "
        f"{args.history_days} days of performance per entity\n"
    )
    print("preflight")
    print(
        f"{'platform':<11}{'entities':>9}{'changed':>9}{'wall s':>8}{'goal':>6}{'cpu s':>7}{'queries':>9}"
        f"{'requests':>10}{'floor s':>9}{'peak MB':>9}{'doc MB':>8}{'breaches':>10}{'same doc':>10}{'seed s':>8}"
    )
    for r in results:
        p = r["preflight"]
        print(
            f"{r['platform']:<11}{p['entities']:>9}{p['changed']:>9}{p['wall']:>8.2f}"
            f"{'ok' if p['wall'] < 5 else 'MISS':>6}{p['cpu']:>7.2f}{p['queries']:>9}{p['requests']:>10}"
            f"{_floor(r['platform'], p['requests'], args.latency_ms):>9.2f}{p['peak_mb']:>9.0f}"
            f"{p['bytes'] / 1e6:>8.1f}{p['breaches']:>10}{'yes' if p['identical'] else 'NO':>10}{r['seeding']:>8.1f}"
        )
    if args.deploy:
        print("\nlive deploy (deployment_create, then dispatch + jobs until settled)")
        print(
            f"{'platform':<11}{'status':>21}{'total':>7}{'ok':>7}{'failed':>8}{'stale':>7}{'create s':>10}"
            f"{'wall s':>8}{'queries':>9}{'q/1000':>8}{'requests':>10}"
        )
        for r in results:
            d = r["deploy"]
            print(
                f"{r['platform']:<11}{d['status']:>21}{d['total']:>7}{d['succeeded']:>7}{d['failed']:>8}"
                f"{d['stale']:>7}{d['queued_wall']:>10.2f}{d['wall']:>8.2f}{d['queries']:>9}"
                f"{d['queries'] / max(d['total'], 1) * 1000:>8.1f}{d['requests']:>10}"
            )
    print(
        "\nwall: preflight_for_scenario from call to saved run (platform reads, database, document, save)"
        "\ncpu s: CPU time of the whole process in that time (the fake servers run in it too)"
        "\nqueries: every database query in that time, including the throttle's and the run's own"
        "\nfloor s: platform requests x latency / requests in flight at once, the wall time no amount of local"
        "\n         work can go below (Meta reads 50 entities per batch request, 4 batches at a time)"
        "\npeak MB: tracemalloc peak of a second, identical preflight; same doc: both documents byte-equal"
        "\n         apart from run_id and generated_at"
    )


if __name__ == "__main__":
    main()
