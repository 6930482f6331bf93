"""Benchmark: the engine's time for N Google Ads actions against the COPY floor of its audit rows.

    .venv/bin/python bench/audit_floor.py --database-url postgres://postgres@127.0.0.1:5432/postgres
        [--actions 10000] [--latency-ms 0] [--profile]

In one run, on a PostgreSQL database it creates on that server (and drops afterwards):

1. the engine: N approved budget actions on the Google Ads fake (real SDK, the shared rate
   limiter lifted as in ``execute_actions.py --limiter off``) run by dispatch + jobs until
   every action settled. Timed: dispatch and ``job_process`` (claim, read before, apply,
   read back, settle with its history, execution-log and action-row writes). The Google
   Ads developer token's daily operations are unlimited (Standard access,
   ``GOOGLE_ADS_DAILY_OPERATIONS=0``): Basic access's 15,000 would park most of the run.
   Not timed:
   the outbox drain (its consumers, e.g. observability watches, run later in their own
   tasks). Also shown: the process's CPU time over the same span (the engine's Python
   work plus the in-process fake server's threads; steadier than wall time on a busy
   machine), the part of the wall time spent inside the audit writes (the history rows
   copied by the database from the action rows, the log rows built and written) and
   inside database statements, and the CPU
   time the fake server's threads spent serving the engine's requests: the fake runs in
   this process, so the engine waits for it (and shares the interpreter with it) where a
   real API would answer from elsewhere; the engine's figure without it is shown too.
   And the time inside the platform calls themselves (the SDK building and parsing the
   requests in this process, and the fake answering), the fences excluded: what is left
   is the engine's own database and Python work, which the floor is about.
2. the floor: the same history and execution-log rows (read back from the tables the
   engine wrote, every column but the serial key), prepared as text-ready tuples before
   the clock starts, then written with one ``COPY … FROM STDIN`` per table into the same
   tables (same indexes, foreign keys checked immediately, the log's trigger) in one
   transaction, which is rolled back so the tables stay as the engine left them.

It prints both, the ratio engine / floor (goal <= 2) and the conditions. Not a test:
figures vary with the machine. ``--profile`` prints a cProfile of the engine to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from execute_actions import (  # noqa: E402
    LIFTED,
    approve_all,
    counting_queries,
    django_on_fresh_database,
    google_fake,
    mirror,
)

GOAL = 2.0


class Stopwatch:
    """Total time spent inside the wrapped functions (the audit writes)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        return timed


@contextmanager
def timing_audit_writes(watch: Stopwatch):
    """Time every history and execution-log write the engine makes (settlement's
    ``write_history`` and the log service's ``insert_rows``)."""
    from actions.services import logs, settlement

    originals = [(logs, "insert_rows"), (settlement, "write_history")]
    saved = {(module, name): getattr(module, name) for module, name in originals}
    for (module, name), function in saved.items():
        setattr(module, name, watch.wrap(function))
    try:
        yield
    finally:
        for (module, name), function in saved.items():
            setattr(module, name, function)


@contextmanager
def timing_platform_calls(calls: Stopwatch, fences: Stopwatch):
    """Time the engine's platform calls (``PlatformRunner.read`` and ``apply``: the SDK's
    work in this process and the fake's answers) and, apart, the fences the executor
    calls back into the engine from inside ``apply`` just before each write (database
    work, not the platform's)."""
    from actions.services.engine import JobRun
    from actions.services.runner import PlatformRunner

    originals = [(PlatformRunner, "read"), (PlatformRunner, "apply"), (JobRun, "_before_write")]
    saved = {(owner, name): getattr(owner, name) for owner, name in originals}
    PlatformRunner.read = calls.wrap(saved[PlatformRunner, "read"])
    PlatformRunner.apply = calls.wrap(saved[PlatformRunner, "apply"])
    JobRun._before_write = fences.wrap(saved[JobRun, "_before_write"])
    try:
        yield
    finally:
        for (owner, name), function in saved.items():
            setattr(owner, name, function)


def run_engine(connection, fake, *, profile: cProfile.Profile | None) -> dict:
    from actions.models import ActionJob, JobStatus
    from actions.services.dispatch import actions_dispatch
    from actions.services.engine import job_process

    watch, calls, fences = Stopwatch(), Stopwatch(), Stopwatch()
    jobs: set[int] = set()
    with counting_queries() as queries, timing_audit_writes(watch), timing_platform_calls(calls, fences):
        if profile:
            profile.enable()
        started, cpu_started = time.perf_counter(), time.process_time()
        served_started = fake.served_cpu_seconds
        for _ in range(100_000):  # bounded: each pass settles at least one unit
            jobs.update(actions_dispatch(connection_ids=[connection.pk]))
            queued = list(
                ActionJob.objects.filter(connection=connection, status=JobStatus.QUEUED).values_list("id", flat=True)
            )
            if not queued:
                break
            for job_id in queued:
                job_process(job_id=job_id, sleep=time.sleep)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        served = fake.served_cpu_seconds - served_started
        if profile:
            profile.disable()
    return {
        "wall": wall,
        "cpu": cpu,
        "audit": watch.seconds,
        "audit_calls": watch.calls,
        "queries": queries.count,
        "database": queries.seconds,
        "fake": served,
        "platform": calls.seconds - fences.seconds,
        "jobs": jobs,
    }


def engine_rows(connection_id: int, since) -> dict[str, tuple[str, list[str], list[tuple]]]:
    """The history and log rows the engine wrote for the connection's actions since ``since``,
    as (table, columns, text-ready tuples)."""
    from actions.models import Action, ActionExecutionLog
    from budgetradar.bulk import insert_fields

    history = Action.history.model
    sources = {
        "history": (history, history.objects.filter(connection_id=connection_id, history_date__gte=since)),
        "log": (
            ActionExecutionLog,
            ActionExecutionLog.objects.filter(action__connection_id=connection_id, created_at__gte=since),
        ),
    }
    rows = {}
    for name, (model, queryset) in sources.items():
        fields = insert_fields(model)
        json_columns = [i for i, f in enumerate(fields) if f.get_internal_type() == "JSONField"]
        values = []
        for row in queryset.order_by("pk").values_list(*[f.attname for f in fields]):
            row = list(row)
            for i in json_columns:
                row[i] = None if row[i] is None else json.dumps(row[i])
            values.append(tuple(row))
        rows[name] = (model._meta.db_table, [f.column for f in fields], values)
    return rows


def copy_floor(rows: dict[str, tuple[str, list[str], list[tuple]]]) -> float:
    """Write the rows with raw COPY (one per table) in one transaction, rolled back; the
    deferred foreign keys are checked as each row goes in, as the engine's commits check them."""
    from django.db import connection, transaction

    quote = connection.ops.quote_name
    with transaction.atomic():
        with connection.cursor() as cursor:
            raw = cursor.cursor
            raw.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the foreign keys are checked, not skipped by the rollback
            started = time.perf_counter()
            for table, columns, values in rows.values():
                with raw.copy(f"COPY {quote(table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN") as copy:
                    for row in values:
                        copy.write_row(row)
            elapsed = time.perf_counter() - started
        transaction.set_rollback(True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=0, help="injected per request on the fake")
    parser.add_argument(
        "--database-url", required=True, help="a PostgreSQL server (COPY is the floor); a fresh database is made on it"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile of the engine to stderr")
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        raise SystemExit("audit_floor.py needs PostgreSQL (the floor is COPY)")
    with django_on_fresh_database(args.database_url):
        run(args)


def run(args) -> None:

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from actions.models import Action, ActionStatus
    from budgetradar.models import Tenant
    from budgetradar.plans import plan_named
    from tests.factories import member

    settings.GOOGLE_ADS_DAILY_OPERATIONS = 0
    stamp = time.strftime("%Y%m%d%H%M%S")
    tenant = Tenant.objects.create(
        name=f"Audit floor {stamp}", slug=f"audit-floor-{stamp}", plan=plan_named("enterprise")
    )
    approver = member(tenant, "approver", f"audit-floor-{stamp}")
    profile = cProfile.Profile() if args.profile else None
    with google_fake(args.actions) as (fake, connection_kwargs):
        platform_connection = mirror("google_ads", connection_kwargs, tenant)
        entities = list(platform_connection.entities.select_related("connection", "parent").order_by("external_id"))
        approve_all(platform_connection, entities[: args.actions], approver)
        fake.faults.latency_seconds = args.latency_ms / 1000
        settings.PLATFORM_RATE_LIMITS = LIFTED
        since = timezone.now()
        engine = run_engine(platform_connection, fake, profile=profile)
        fake.faults.latency_seconds = 0
    succeeded = Action.objects.filter(connection=platform_connection, status=ActionStatus.SUCCEEDED).count()
    if succeeded == 0:
        raise SystemExit("the engine settled nothing: check that the bench's actions are due")
    rows = engine_rows(platform_connection.pk, since)
    floor = copy_floor(rows)
    counts = {name: len(values) for name, (_, _, values) in rows.items()}
    ratio = engine["wall"] / floor
    own = engine["wall"] - engine["fake"]
    without_platform = engine["wall"] - engine["platform"]

    print(f"command: {' '.join(sys.argv)}")
    print(
        f"conditions: PostgreSQL {connection.pg_version // 10000}, Google Ads fake (real SDK, TLS on 127.0.0.1), "
        f"{args.actions} approved budget actions, {args.latency_ms:g} ms injected latency, shared rate limiter "
        f"lifted (capacity and refill 1e9), daily operations unlimited, {len(engine['jobs'])} jobs of at most "
        f"{settings.ENGINE_JOB_MAX_ACTIONS}, units of {settings.ENGINE_UNIT_SIZE['google_ads']}"
    )
    print(f"rows: {counts['history']} history ({len(rows['history'][1])} columns), {counts['log']} execution log")
    print(f"\n{'':<48}{'seconds':>9}{'ms/action':>11}")

    def line(label: str, seconds: float) -> None:
        print(f"{label:<48}{seconds:>9.2f}{seconds / args.actions * 1000:>11.3f}")

    line(f"engine (dispatch + jobs, settled {succeeded})", engine["wall"])
    line("  CPU time of this process (the fake's included)", engine["cpu"])
    line(f"  in audit writes ({engine['audit_calls']} calls: history, logs)", engine["audit"])
    line(f"  in database statements ({engine['queries']}, audit COPY included)", engine["database"])
    line("  the in-process fake serving requests (its CPU)", engine["fake"])
    line("  in platform calls (the SDK and the fake; fences apart)", engine["platform"])
    line("engine without the fake's serving", own)
    line("engine without its platform calls (database + Python)", without_platform)
    line("COPY floor (same rows, same tables)", floor)
    print(f"\nengine / floor: {ratio:.2f}x (goal <= {GOAL:g}x: {'met' if ratio <= GOAL else 'not met'})")
    print(f"engine without the fake's serving / floor: {own / floor:.2f}x")
    print(f"engine without its platform calls / floor: {without_platform / floor:.2f}x")
    print(f"engine queries: {engine['queries']} ({engine['queries'] / args.actions * 1000:.1f} per 1,000 actions)")
    if profile:
        pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(60)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    main()
