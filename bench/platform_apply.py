"""Benchmark: apply N budget changes through each platform executor against a local platform.

    .venv/bin/python bench/platform_apply.py [--changes 10000] [--latency-ms 20]
        [--platforms google_ads,meta,sandbox] [--profile PLATFORM]

For the Google Ads fake (gRPC over TLS, the real google-ads SDK), the Meta Graph API fake
(HTTP, the real facebook-business SDK) and the sandbox (a SQLite file in a temp dir) it
seeds enough entities, injects the latency on every request, and applies N daily budget
changes through the real executor with no throttle.

The clock starts after one warm-up change per platform (SDK imports, TLS handshake, first
connection), as in a worker that has run before; the seeded state is then frozen out of
the cyclic GC's way (``gc.freeze``), because a real platform's state is not in the
worker's heap. Round trips are counted twice: in the platform's own request log and by
the executor. The floor is round trips x latency, what the requests cost if everything
else were free; the goal is wall / floor <= 1.5. ``cpu s`` is the process CPU time of the
apply (executor and in-process platform together); wall - floor - cpu is time spent
waiting for a CPU or the disk, which grows on a busy machine. ``--profile`` runs cProfile
around one platform's apply and prints the top functions to stderr.

Not a test: figures vary with the machine.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from platforms.base import no_throttle  # noqa: E402
from platforms.types import Change, ConnectionConfig, EntityRef, EntityType, Field, OutcomeStatus  # noqa: E402

PLATFORMS = ("google_ads", "meta", "sandbox")
GOAL_RATIO = 1.5
AD_SETS_PER_CAMPAIGN = 10  # Meta and sandbox: 3/4 of the changes hit ad sets, 1/4 campaign budgets


@dataclass(frozen=True)
class Result:
    platform: str
    changes: int
    applied: int
    logged_round_trips: int
    executor_round_trips: int
    wall: float
    cpu: float  # process CPU time during the apply: the executor and the in-process platform
    latency: float

    @property
    def floor(self) -> float:
        return self.executor_round_trips * self.latency

    @property
    def ratio(self) -> float:
        return self.wall / self.floor if self.floor else float("inf")


@dataclass
class Run:
    """One platform, seeded and warmed up: ``apply`` runs the measured part."""

    apply: Callable[[], list]
    logged_round_trips: Callable[[], int]
    executor: object
    close: Callable[[], None]


def budget(index: int) -> Decimal:
    return Decimal(20_000 + index % 5_000) / 100  # 200.00 .. 249.99, never the seeded 10.00


def measure(platform: str, run: Run, changes: int, latency: float, profile: bool) -> Result:
    before = run.executor.round_trips
    profiler = cProfile.Profile() if profile else None
    # The platform's seeded state lives in this process (a real platform's does not):
    # freeze it so the cyclic GC does not traverse it while the executor runs.
    gc.collect()
    gc.freeze()
    started, cpu_started = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    outcomes = run.apply()
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    gc.unfreeze()
    if profiler:
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
    applied = sum(1 for outcome in outcomes if outcome.status == OutcomeStatus.APPLIED)
    return Result(
        platform,
        changes,
        applied,
        run.logged_round_trips(),
        run.executor.round_trips - before,
        wall,
        cpu,
        latency,
    )


# Google Ads ----------------------------------------------------------------------------

GOOGLE_CUSTOMER = "1234567890"


def google_ads(changes: int, latency: float) -> Run:
    from platforms.fakes.google_ads_fake import GoogleAdsFake, ensure_test_tls_roots
    from platforms.google_ads import GoogleAdsExecutor

    ensure_test_tls_roots()  # before the first TLS channel of the process
    fake = GoogleAdsFake().start()
    fake.add_customer(GOOGLE_CUSTOMER, currency="EUR")
    refs = []
    for campaign_id in range(1_000_001, 1_000_001 + changes + 1):
        campaign = fake.add_campaign(GOOGLE_CUSTOMER, campaign_id, budget_micros=10_000_000)
        # The mirror knows each campaign's budget id, so no read precedes the writes.
        refs.append(EntityRef(EntityType.CAMPAIGN, str(campaign_id), budget_id=str(campaign.budget_id)))
    config = ConnectionConfig(
        connection_id=1,
        platform="google_ads",
        account_id=GOOGLE_CUSTOMER,
        currency="EUR",
        credentials=fake.credentials(),
        api_base_url=fake.endpoint,
    )
    executor = GoogleAdsExecutor(config, throttle=no_throttle)
    warm_up, *refs = refs
    executor.apply([Change(warm_up, Field.DAILY_BUDGET, Decimal("11.00"))])
    warm_up_requests = len(fake.requests)
    fake.faults.latency_seconds = latency
    batch = [Change(ref, Field.DAILY_BUDGET, budget(i), key=str(i)) for i, ref in enumerate(refs)]

    def close() -> None:
        executor.close()
        fake.stop()

    return Run(lambda: executor.apply(batch), lambda: len(fake.requests) - warm_up_requests, executor, close)


# Meta ----------------------------------------------------------------------------------

META_ACCOUNT = "act_1000"
META_TOKEN = "bench-meta-token"


def meta(changes: int, latency: float) -> Run:
    from platforms.fakes.meta_fake import MetaGraphFake
    from platforms.meta import MetaExecutor

    fake = MetaGraphFake(access_token=META_TOKEN).start()
    fake.add_account(META_ACCOUNT, currency="EUR")
    refs: list[EntityRef] = []
    ad_set_changes = changes * 3 // 4
    campaign_id = ""
    for index in range(ad_set_changes):
        if index % AD_SETS_PER_CAMPAIGN == 0:
            campaign_id = fake.add_campaign(META_ACCOUNT)
        ad_set_id = fake.add_ad_set(campaign_id, daily_budget=1_000)
        refs.append(EntityRef(EntityType.AD_SET, ad_set_id, parent_external_id=campaign_id))
    for _ in range(changes - ad_set_changes + 1):
        refs.append(EntityRef(EntityType.CAMPAIGN, fake.add_campaign(META_ACCOUNT, daily_budget=1_000)))
    config = ConnectionConfig(
        connection_id=2,
        platform="meta",
        account_id=META_ACCOUNT,
        currency="EUR",
        credentials={"access_token": META_TOKEN},
        api_base_url=fake.base_url,
    )
    executor = MetaExecutor(config, throttle=no_throttle)
    *refs, warm_up = refs
    executor.apply([Change(warm_up, Field.DAILY_BUDGET, Decimal("11.00"))])
    warm_up_requests = len(fake.requests)
    fake.faults.latency_seconds = latency
    batch = [Change(ref, Field.DAILY_BUDGET, budget(i), key=str(i)) for i, ref in enumerate(refs)]
    return Run(lambda: executor.apply(batch), lambda: len(fake.requests) - warm_up_requests, executor, fake.stop)


# Sandbox -------------------------------------------------------------------------------

SANDBOX_ACCOUNT = "sbx-bench"
SANDBOX_TOKEN = "bench-sandbox-token"


def setup_django() -> None:
    """A throwaway SQLite database, migrated; must run before any model is imported."""
    os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='br-bench-')}/platform_apply.sqlite3"
    os.environ["DJANGO_SETTINGS_MODULE"] = "budgetradar.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def sandbox(changes: int, latency: float) -> Run:
    setup_django()
    from platforms.sandbox.executor import SandboxExecutor
    from platforms.sandbox.models import SandboxAccount, SandboxEntity, SandboxRequest

    account = SandboxAccount(account_id=SANDBOX_ACCOUNT, name="Bench", currency="EUR")
    account.set_access_token(SANDBOX_TOKEN)
    account.save()
    ad_set_changes = changes * 3 // 4
    parents = SandboxEntity.objects.bulk_create(
        SandboxEntity(
            account=account,
            entity_type=EntityType.CAMPAIGN,
            external_id=f"c{index}",
            name=f"Campaign {index}",
            daily_budget=None if index < ad_set_changes // AD_SETS_PER_CAMPAIGN else Decimal("10.00"),
        )
        for index in range(ad_set_changes // AD_SETS_PER_CAMPAIGN + changes - ad_set_changes + 1)
    )
    abo, cbo = parents[: ad_set_changes // AD_SETS_PER_CAMPAIGN], parents[ad_set_changes // AD_SETS_PER_CAMPAIGN :]
    ad_sets = SandboxEntity.objects.bulk_create(
        SandboxEntity(
            account=account,
            entity_type=EntityType.AD_SET,
            external_id=f"a{index}",
            name=f"Ad set {index}",
            parent=abo[index // AD_SETS_PER_CAMPAIGN],
            daily_budget=Decimal("10.00"),
        )
        for index in range(ad_set_changes)
    )
    refs = [EntityRef(EntityType.AD_SET, a.external_id, parent_external_id=a.parent.external_id) for a in ad_sets]
    refs += [EntityRef(EntityType.CAMPAIGN, c.external_id) for c in cbo]
    config = ConnectionConfig(
        connection_id=3,
        platform="sandbox",
        account_id=SANDBOX_ACCOUNT,
        currency="EUR",
        credentials={"access_token": SANDBOX_TOKEN},
    )
    executor = SandboxExecutor(config, throttle=no_throttle)
    *refs, warm_up = refs
    executor.apply([Change(warm_up, Field.DAILY_BUDGET, Decimal("11.00"))])
    warm_up_requests = SandboxRequest.objects.count()
    SandboxAccount.objects.filter(pk=account.pk).update(latency_ms=round(latency * 1000))
    batch = [Change(ref, Field.DAILY_BUDGET, budget(i), key=str(i)) for i, ref in enumerate(refs)]

    def logged() -> int:
        return SandboxRequest.objects.count() - warm_up_requests

    return Run(lambda: executor.apply(batch), logged, executor, lambda: None)


# Report --------------------------------------------------------------------------------

SETUPS: dict[str, Callable[[int, float], Run]] = {"google_ads": google_ads, "meta": meta, "sandbox": sandbox}


def table(results: list[Result]) -> str:
    header = (
        f"{'platform':<11} {'changes':>8} {'applied':>8} {'round trips':>17} {'wall s':>8} {'cpu s':>7} "
        f"{'floor s':>8} {'wall/floor':>10} {'ms/1k chg':>9}  goal <= {GOAL_RATIO}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        trips = f"{r.logged_round_trips} log / {r.executor_round_trips} ex"
        verdict = "met" if r.ratio <= GOAL_RATIO else "MISSED"
        lines.append(
            f"{r.platform:<11} {r.changes:>8} {r.applied:>8} {trips:>17} {r.wall:>8.3f} {r.cpu:>7.3f} "
            f"{r.floor:>8.3f} {r.ratio:>10.2f} {r.wall / r.changes * 1000 * 1000:>9.1f}  {verdict}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--platforms", default=",".join(PLATFORMS), help="comma-separated subset of " + str(PLATFORMS))
    parser.add_argument("--profile", choices=PLATFORMS, help="cProfile this platform's apply (top 25 to stderr)")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.platforms.split(",") if p.strip()]
    if unknown := set(chosen) - set(PLATFORMS):
        parser.error(f"unknown platforms {sorted(unknown)}; choose from {PLATFORMS}")
    latency = args.latency_ms / 1000
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable), *sys.argv])
    results = []
    for platform in chosen:
        run = SETUPS[platform](args.changes, latency)
        try:
            results.append(measure(platform, run, args.changes, latency, args.profile == platform))
        finally:
            run.close()
    print(f"command: {command}")
    print(f"{args.changes} daily budget changes per platform, {args.latency_ms:g} ms injected latency per request")
    print(table(results))


if __name__ == "__main__":
    main()
