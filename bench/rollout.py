"""Benchmark: six simulated weeks of the daily loop on the sandbox, shadow then 25/50/75/100 %.

    .venv/bin/python bench/rollout.py [--entities 60] [--database-url postgres://…]

A sandbox account with N campaigns, each with its own daily budget and a known Hill curve
(seeded, as in bench/planner.py), and 56 days of history from the sandbox's own model with
the budgets each day had (steps every 14 days, today's budgets for the last 14 days).
Then, day by day, with the clock set to 08:00 (UTC account) of the simulated day:

- the planner runs through the product's own path (``planner_run_request`` ->
  ``planner_run_process``: fit, plan, scenario, preflight, live deploy through
  ``deployment_create`` as the person who consented), and the engine executes the
  deployment's actions on the sandbox (dispatch + jobs);
- the day happens: the sandbox's model delivers it with the budgets now live, and it is
  ingested (``sync_connection`` for that one day; the sandbox recomputes past days with
  today's budgets, so the bench never re-reads an older day);
- the fixed-budget baseline is the same day delivered with the initial budgets by the
  same model with the same noise draws (an exact counterfactual).

Phases: week 1 shadow; week 2 25 %, week 3 50 %, week 4 75 % autopilot by entity holdout
(the rest held out at their budgets); weeks 5-6 100 %. Each promotion is ``rollout_promote``
on a (bench) person's click, with the product's evidence shown at that moment.

Printed per phase: conversions a day and CPA, actual vs the fixed-budget baseline, the
lift, and the product's own evidence (lift against its held-out baseline with a 90 %
interval); then whether the promotion criterion (>= 10 % more conversions, CPA no worse
than +5 %) was met. Not a test: figures vary with the seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from copy import copy
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.execute_actions import setup_django  # noqa: E402

START = date(2026, 3, 2)  # a Monday: the first simulated day
HISTORY_DAYS = 56
BLOCK_DAYS = 14
SEED = 20260302
PHASES = [("shadow", 7), ("25", 7), ("50", 7), ("75", 7), ("100", 14)]


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def seed(n: int):
    from django.contrib.auth import get_user_model

    from budgetradar.models import Membership, Tenant
    from budgetradar.plans import plan_named
    from budgetradar.roles import Role
    from platforms.base import no_throttle
    from platforms.models import EntityPerformanceDaily, Platform, PlatformConnection
    from platforms.sandbox.executor import SandboxExecutor
    from platforms.sandbox.models import SandboxAccount, SandboxEntity
    from platforms.sync import sync_connection

    rng = np.random.default_rng(SEED)
    tenant = Tenant.objects.create(name="Rollout bench", slug="rollout-bench", plan=plan_named("enterprise"))
    user = get_user_model().objects.create_user(username="bench-admin", password="x", is_staff=True)
    Membership.objects.create(user=user, tenant=tenant, role=Role.ADMIN)
    account = SandboxAccount(account_id="bench-rollout", name="Rollout bench", currency="EUR", time_zone="UTC")
    account.set_access_token("bench-token")
    account.save()
    half = rng.uniform(30, 200, n)
    entities = SandboxEntity.objects.bulk_create(
        [
            SandboxEntity(
                account=account,
                entity_type="campaign",
                external_id=f"cmp-{i:03d}",
                name=f"Campaign {i:03d}",
                daily_budget=Decimal(f"{half[i] * rng.uniform(0.4, 2.5):.2f}"),
                max_conversions=Decimal(f"{rng.uniform(5, 40):.4f}"),
                half_saturation_spend=Decimal(f"{half[i]:.4f}"),
                shape=Decimal(f"{rng.uniform(0.7, 1.3):.4f}"),
            )
            for i in range(n)
        ]
    )
    connection = PlatformConnection.objects.create(
        tenant=tenant,
        name="Rollout sandbox",
        platform=Platform.SANDBOX,
        account_id=account.account_id,
        currency="EUR",
        time_zone="UTC",
        credentials={"access_token": "bench-token"},
    )
    executor = SandboxExecutor(connection.to_config(), throttle=no_throttle)
    sync_connection(connection=connection, executor=executor, days=1, now=at(START, 3))
    EntityPerformanceDaily.objects.all().delete()
    factors = rng.uniform(0.6, 1.4, (HISTORY_DAYS // BLOCK_DAYS, n))
    factors[-1] = 1.0
    for offset in range(HISTORY_DAYS):
        day = START - timedelta(days=HISTORY_DAYS - offset)
        write_day(connection, [_scaled(e, factors[offset // BLOCK_DAYS, i]) for i, e in enumerate(entities)], day)
    return connection, user, executor, [copy(e) for e in entities]


def _scaled(entity, factor: float):
    clone = copy(entity)
    clone.daily_budget = (entity.daily_budget * Decimal(f"{factor:.4f}")).quantize(Decimal("0.01"))
    return clone


def deliver(entities, day: date) -> tuple[float, float]:
    """(spend, conversions) of ``entities`` on ``day`` by the sandbox's own model."""
    from platforms.sandbox.simulation import simulate_performance

    rows = simulate_performance(entities, currency="EUR", since=day, until=day)
    return float(sum(r.spend for r in rows)), float(sum(r.conversions for r in rows))


def write_day(connection, entities, day: date) -> None:
    from platforms.models import EntityPerformanceDaily, PlatformEntity
    from platforms.sandbox.simulation import simulate_performance

    ids = dict(PlatformEntity.objects.filter(connection=connection).values_list("external_id", "pk"))
    rows = simulate_performance(entities, currency="EUR", since=day, until=day)
    EntityPerformanceDaily.objects.bulk_create(
        [
            EntityPerformanceDaily(
                tenant_id=connection.tenant_id,
                entity_id=ids[r.external_id],
                date=r.date,
                spend=r.spend,
                conversions=r.conversions,
                revenue=r.revenue,
                impressions=r.impressions,
                clicks=r.clicks,
            )
            for r in rows
        ]
    )


def execute_deployments() -> None:
    from actions.models import ActionJob, JobStatus
    from actions.services.dispatch import actions_dispatch
    from actions.services.engine import job_process
    from platforms.base import no_throttle

    for _ in range(10):
        actions_dispatch()
        jobs = list(ActionJob.objects.filter(status=JobStatus.QUEUED).order_by("id").values_list("id", flat=True))
        if not jobs:
            return
        for job_id in jobs:
            job_process(job_id=job_id, throttle=no_throttle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=60)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    setup_django(args.database_url)
    from planning.models import AutomationSettings, Mode, PlannerRun
    from planning.services.automation import automation_for
    from planning.services.rollout import rollout_evidence, rollout_promote, shadow_compare_due
    from planning.services.runs import planner_run_process, planner_run_request
    from platforms.sandbox.models import SandboxEntity
    from platforms.sync import sync_connection

    started = time.perf_counter()
    connection, user, executor, baseline = seed(args.entities)
    automation = automation_for(connection)
    AutomationSettings.objects.filter(pk=automation.pk).update(mode=Mode.SHADOW)
    print(f"bench/rollout.py: {args.entities} sandbox campaigns, {HISTORY_DAYS} days of history, seed {SEED}")
    print("phase    days  actual conv/d  CPA    baseline conv/d  CPA    lift    product evidence (lift [90 %], CPA)")
    day = START
    results = []
    for phase, length in PHASES:
        if phase != "shadow":
            automation.refresh_from_db()
            evidence = rollout_evidence(automation, now=at(day, 7))
            met = evidence["current"]["criterion_met"]
            reason = "" if met or automation.rollout_step == "shadow" else "bench: promotion on schedule"
            rollout_promote(automation=automation, actor=user, reason=reason, now=at(day, 7))
        actual = np.zeros(2)
        base = np.zeros(2)
        outcomes = {}
        for _ in range(length):
            run = planner_run_request(connection=connection, actor=None, now=at(day, 8))
            run = planner_run_process(run.pk, now=at(day, 8))
            outcomes[run.outcome] = outcomes.get(run.outcome, 0) + 1
            execute_deployments()
            live = list(SandboxEntity.objects.filter(account__account_id=connection.account_id).order_by("pk"))
            actual += deliver(live, day)
            base += deliver(baseline, day)
            sync_connection(connection=connection, executor=executor, days=1, now=at(day + timedelta(days=1), 3))
            shadow_compare_due(connection_id=connection.pk)
            day += timedelta(days=1)
        automation.refresh_from_db()
        evidence = rollout_evidence(automation, now=at(day, 7))
        step = evidence["steps"][-1] if evidence["steps"] else None
        lift = actual[1] / base[1] - 1
        cpa, base_cpa = actual[0] / actual[1], base[0] / base[1]
        product = (
            f"{step['conversion_lift']:+.1%} [{step['conversion_lift_interval'][0]:+.1%}, "
            f"{step['conversion_lift_interval'][1]:+.1%}], CPA {step['cpa_change']:+.1%}, "
            f"criterion {'met' if step['criterion_met'] else 'not met'}"
            if step and step["conversion_lift"] is not None
            else "shadow: no autopilot yet"
        )
        print(
            f"{phase:>6}  {length:>5}  {actual[1] / length:>12.1f}  {cpa:5.2f}  {base[1] / length:>15.1f}  "
            f"{base_cpa:5.2f}  {lift:+6.1%}  {product}"
        )
        print(f"        runs: {outcomes}")
        results.append((phase, lift, cpa / base_cpa - 1))
    final = results[-1]
    met = final[1] >= 0.10 and final[2] <= 0.05
    print(
        f"\nPromotion criterion at 100 % against the fixed-budget baseline (>= +10 % conversions, CPA <= +5 %): "
        f"{'met' if met else 'not met'} (conversions {final[1]:+.1%}, CPA {final[2]:+.1%})"
    )
    shadow = PlannerRun.objects.filter(connection=connection, shadow__isnull=False).order_by("local_date")
    errors = [abs(r.shadow["prediction_error_pct"]) for r in shadow if r.shadow.get("prediction_error_pct") is not None]
    if errors:
        print(
            f"Shadow week: {len(errors)} days compared, "
            f"mean |predicted - actual| of the baseline {np.mean(errors):.1f} %"
        )
    print(f"wall {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
