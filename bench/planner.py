"""Benchmark: fit and plan on the sandbox against its true response curves.

    .venv/bin/python bench/planner.py [--entities 1000,10000] [--history-days 90] [--new-share 0.1]
        [--database-url postgres://postgres@127.0.0.1:5432/br_bench]

For each size N it seeds a sandbox account with N campaigns, each with its own daily
budget and a known Hill curve (``platforms.sandbox.simulation``: vmax 5-40 conversions,
half-saturation 30-200 EUR, shape 0.7-1.3, budgets 0.4-2.5x the half-saturation spend,
drawn from a seeded RNG), mirrors it through the sandbox executor (sync), writes ``--history-days`` days of
performance from the sandbox's own model (``simulate_performance``) with the budgets
each day had — a step every 14 days to 0.6-1.4x of today's budget, as an ops team moves
budgets; the sandbox alone would compute every past day with today's budget — and
removes all but the last 14 days of ``--new-share`` of the
campaigns (recently launched: too few days for a curve). Then it times ``plan_build``
(read, fit every entity, allocate) and prints wall time, peak RSS and the Python
allocations' peak (tracemalloc, on a second identical run which also checks determinism).

Quality: every allocation is valued with the sandbox's own model, noise-free: the sum over
the next 28 days of the true Hill curve at budget x that day's pace. The optimum is the
true curves' allocation (``planning.optimizer`` on the true parameters, each entity at its
mean pace) for the same total and the same bounds the planner used. Printed: conversions
of today's budgets, the plan, and each fallback level as a share of that optimum, for the
entities with 28+ days (goal >= 95 %) and for all entities.

Not a test: figures vary with the machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.execute_actions import setup_django  # noqa: E402

AS_OF = date(2026, 6, 30)
EVAL_DAYS = 28
BLOCK_DAYS = 14
SEED = 20260630


def seed(n: int, history_days: int, new_share: float):
    from budgetradar.models import Tenant
    from budgetradar.plans import plan_named
    from platforms.base import no_throttle
    from platforms.models import EntityPerformanceDaily, Platform, PlatformConnection
    from platforms.sandbox.executor import SandboxExecutor
    from platforms.sandbox.models import SandboxAccount, SandboxEntity
    from platforms.sync import sync_connection

    rng = np.random.default_rng(SEED + n)
    tenant = Tenant.objects.create(name=f"Bench {n}", slug=f"bench-{n}", plan=plan_named("enterprise"))
    account = SandboxAccount(account_id=f"bench-planner-{n}", name=f"Bench {n}", currency="EUR", time_zone="UTC")
    account.set_access_token("bench-token")
    account.save()
    vmax = rng.uniform(5, 40, n)
    half = rng.uniform(30, 200, n)
    shape = rng.uniform(0.7, 1.3, n)
    budget = np.round(half * rng.uniform(0.4, 2.5, n), 2)
    SandboxEntity.objects.bulk_create(
        [
            SandboxEntity(
                account=account,
                entity_type="campaign",
                external_id=f"cmp-{i:05d}",
                name=f"Campaign {i:05d}",
                status="active",
                daily_budget=Decimal(f"{budget[i]:.2f}"),
                max_conversions=Decimal(f"{vmax[i]:.4f}"),
                half_saturation_spend=Decimal(f"{half[i]:.4f}"),
                shape=Decimal(f"{shape[i]:.4f}"),
            )
            for i in range(n)
        ],
        batch_size=2000,
    )
    connection = PlatformConnection.objects.create(
        tenant=tenant,
        name=f"Bench sandbox {n}",
        platform=Platform.SANDBOX,
        account_id=account.account_id,
        currency="EUR",
        time_zone="UTC",
        credentials={"access_token": "bench-token"},
    )
    executor = SandboxExecutor(connection.to_config(), throttle=no_throttle)
    sync_connection(connection=connection, executor=executor, days=1, now=_noon(AS_OF + timedelta(days=1)))
    history(connection, account, history_days, rng)
    new = [f"cmp-{i:05d}" for i in range(n) if rng.random() < new_share]
    EntityPerformanceDaily.objects.filter(
        entity__connection=connection, entity__external_id__in=new, date__lt=AS_OF - timedelta(days=13)
    ).delete()
    truth = {f"cmp-{i:05d}": (vmax[i], half[i], shape[i]) for i in range(n)}
    return connection, truth, set(new)


def _noon(day: date):
    from datetime import UTC, datetime

    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def history(connection, account, days: int, rng) -> None:
    """Daily rows from the sandbox's own model, with the budgets each day had.

    The sandbox computes every day with today's budgets; an account's real history has
    budget changes, so each entity's budget here steps every BLOCK_DAYS days to a seeded
    0.6-1.4x of today's budget, and is today's budget for the last block.
    """
    from platforms.models import EntityPerformanceDaily, PlatformEntity
    from platforms.sandbox.models import SandboxEntity
    from platforms.sandbox.simulation import simulate_performance

    entities = list(SandboxEntity.objects.filter(account=account).order_by("pk"))
    ids = dict(PlatformEntity.objects.filter(connection=connection).values_list("external_id", "pk"))
    base = {e.pk: e.daily_budget for e in entities}
    blocks = (days + BLOCK_DAYS - 1) // BLOCK_DAYS
    factors = rng.uniform(0.6, 1.4, (blocks, len(entities)))
    factors[-1] = 1.0
    EntityPerformanceDaily.objects.filter(entity__connection=connection).delete()
    for offset in range(days):
        day = AS_OF - timedelta(days=days - 1 - offset)
        block = blocks - 1 - (days - 1 - offset) // BLOCK_DAYS
        for j, e in enumerate(entities):
            e.daily_budget = (base[e.pk] * Decimal(f"{factors[block, j]:.4f}")).quantize(Decimal("0.01"))
        rows = simulate_performance(entities, currency="EUR", since=day, until=day)
        EntityPerformanceDaily.objects.bulk_create(
            [
                EntityPerformanceDaily(
                    tenant_id=connection.tenant_id,
                    entity_id=ids[r.external_id],
                    date=r.date,
                    spend=r.spend,
                    impressions=r.impressions,
                    clicks=r.clicks,
                    conversions=r.conversions,
                    revenue=r.revenue,
                )
                for r in rows
            ],
            batch_size=2000,
        )


def true_value(entities, budgets: np.ndarray, truth) -> float:
    """Noise-free conversions over the next EVAL_DAYS days at ``budgets`` (the sandbox's own model)."""
    from platforms.sandbox.simulation import draw

    total = 0.0
    for e, b in zip(entities, budgets, strict=True):
        v, h, k = truth[e.entity.external_id]
        for d in range(EVAL_DAYS):
            day = AS_OF + timedelta(days=2 + d)
            weekend = 0.10 if day.weekday() >= 5 else 0.0
            pace = max(0.45, 0.55 + 0.45 * round(draw(e.entity.external_id, day, "pace"), 6) - weekend)
            s = b * pace
            total += v * (s / h) ** k / (1 + (s / h) ** k)
    return total


def mean_pace(entity) -> float:
    from platforms.sandbox.simulation import draw

    paces = []
    for d in range(EVAL_DAYS):
        day = AS_OF + timedelta(days=2 + d)
        weekend = 0.10 if day.weekday() >= 5 else 0.0
        paces.append(max(0.45, 0.55 + 0.45 * round(draw(entity.entity.external_id, day, "pace"), 6) - weekend))
    return float(np.mean(paces))


def optimum(entities, truth, lo: np.ndarray, hi: np.ndarray, total: float) -> np.ndarray:
    from planning.optimizer import CurveArrays, allocate_curves

    pace = np.array([mean_pace(e) for e in entities])
    params = np.array([truth[e.entity.external_id] for e in entities])
    curves = CurveArrays(params[:, 0], params[:, 1], params[:, 2], np.ones(len(entities)))
    spend_total = total * float((pace * lo).sum() / lo.sum())
    allocation = allocate_curves(
        curves, lo * pace, hi * pace, min(max(spend_total, (lo * pace).sum()), (hi * pace).sum())
    )
    budgets = allocation.spend / pace
    return budgets * (total / budgets.sum())


def run(n: int, history_days: int, new_share: float) -> None:
    from planning.models import FallbackLevel
    from planning.services.planner import PlanRequest, _by_weights, fallback_weights, plan_build

    t0 = time.perf_counter()
    connection, truth, new = seed(n, history_days, new_share)
    seeded = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    request = PlanRequest()
    t0 = time.perf_counter()
    plan = plan_build(connection=connection, request=request, as_of=AS_OF, previous={})
    wall = time.perf_counter() - t0
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    again = plan_build(connection=connection, request=request, as_of=AS_OF, previous={})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    same = [r["proposed_budget"] for r in again.reasoning] == [r["proposed_budget"] for r in plan.reasoning]

    entities = plan.entities
    mature = [e for e in entities if e.entity.external_id not in new]
    fitted = sum(1 for e in entities if e.fit and e.fit.curve is not None)
    confidence = {
        c: sum(1 for e in entities if e.fit and e.fit.confidence == c) for c in ("high", "medium", "low", "none")
    }

    def arr(values):
        return np.array([float(v) for v in values])

    group_total = float(sum(e.proposed for e in mature))
    lo, hi = arr(e.lo for e in mature), arr(e.hi for e in mature)
    best = true_value(mature, optimum(mature, truth, lo, hi, group_total), truth)
    current = true_value(mature, arr(e.current for e in mature), truth)
    planned = true_value(mature, arr(e.proposed for e in mature), truth)
    print(f"\n== {n:,} entities, {history_days} days of history ({len(new)} new with 14 days)")
    print(f"  seed + sync: {seeded:.1f} s")
    print(
        f"  plan_build (read, fit {len(entities):,}, allocate): wall {wall:.1f} s, "
        f"{wall / len(entities) * 1000:.2f} ms/entity"
    )
    print(
        f"  memory: peak RSS {rss_after:.0f} MB (+{rss_after - rss_before:.0f} MB), "
        f"Python allocations peak {peak / 2**20:.0f} MB"
    )
    print(f"  deterministic (second run, same proposals): {same}; level: {plan.fallback_level}")
    print(f"  curves fitted: {fitted:,}; confidence {confidence}")
    print(f"  entities with 28+ days ({len(mature):,}), total {group_total:,.2f} EUR/day, 28-day true conversions:")
    print(f"    optimum (true curves, same total and bounds) {best:,.0f}")
    print(f"    today's budgets                               {current:,.0f}  {current / best:.1%} of optimum")
    print(f"    plan (curves)                                  {planned:,.0f}  {planned / best:.1%} of optimum")
    for level in (FallbackLevel.PREVIOUS, FallbackLevel.ROLLING_AVERAGE, FallbackLevel.CPA, FallbackLevel.EQUAL_SPLIT):
        previous = {e.pk: e.current for e in mature}  # the last allocation is today's budgets
        weights, why = fallback_weights(level, mature, previous)
        if weights is None:
            print(f"    fallback {level:<16} does not apply: {why}")
            continue
        probe = [_copy(e) for e in mature]
        _by_weights(probe, weights, Decimal(str(round(group_total, 2))))
        value = true_value(mature, arr(e.proposed for e in probe), truth)
        print(f"    fallback {level:<16}                  {value:,.0f}  {value / best:.1%} of optimum")
    everyone = true_value(entities, arr(e.proposed for e in entities), truth)
    status_quo = true_value(entities, arr(e.current for e in entities), truth)
    print(
        f"  all entities: plan {everyone:,.0f} vs today's budgets {status_quo:,.0f} ({everyone / status_quo - 1:+.1%})"
    )


def _copy(e):
    from dataclasses import replace

    return replace(e)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", default="1000,10000")
    parser.add_argument("--history-days", type=int, default=90)
    parser.add_argument("--new-share", type=float, default=0.1)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    setup_django(args.database_url)
    print(f"bench/planner.py: as of {AS_OF}, seed {SEED}, evaluation over the next {EVAL_DAYS} days")
    for n in [int(x) for x in args.entities.split(",")]:
        run(n, args.history_days, args.new_share)


if __name__ == "__main__":
    main()
