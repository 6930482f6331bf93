"""Benchmark: what a worker's lease renewals cost the database while it holds N actions.

    .venv/bin/python bench/lease_renewal.py --database-url postgres://postgres@127.0.0.1:5432/postgres
        [--actions 10000] [--ticks 10]

A worker's lease keeper renews its job and every unsettled action it holds each third of
the lease's time to live (``LEASE_TTL_SECONDS / 3``, 10 s by default) for as long as the
unit runs: minutes for a large Meta unit paced by its rate limit. This script makes N
approved budget actions on the Google Ads fake's entities, dispatches them, starts them
under one lease and fences them with their before-states (the engine's own functions, as
a unit does before its write request), then times ``--ticks`` renewals back to back, each
in its own transaction. Per tick: wall time (the renewal and its commit), the write-ahead
log written meanwhile (``pg_current_wal_insert_lsn()`` before and after: the whole server's,
so run it while nothing else writes to that server; a checkpoint meanwhile adds full-page
images), and the share of its row updates of ``actions_action`` that PostgreSQL wrote as
heap-only tuples (no index entries; ``pg_stat_xact_user_tables``). PostgreSQL only; it
creates and drops its own database. Not a test: times vary with the machine's load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from execute_actions import approve_all, django_on_fresh_database, google_fake, mirror  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server; a fresh database is made on it")
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        raise SystemExit("lease_renewal.py needs PostgreSQL (heap-only updates and WAL are its own)")
    with django_on_fresh_database(args.database_url):
        run(args)


def held_actions(n: int):
    """N actions of one connection started under one lease and fenced, as a unit leaves them."""
    from django.db import transaction
    from django.utils import timezone

    from actions.models import Action, ActionStatus
    from actions.services.dispatch import actions_dispatch
    from actions.services.engine import job_claim
    from actions.services.leases import fence_request, new_token
    from actions.services.settlement import transition_actions
    from budgetradar.models import Tenant
    from budgetradar.plans import plan_named
    from tests.factories import member

    stamp = time.strftime("%Y%m%d%H%M%S")
    tenant = Tenant.objects.create(name=f"Leases {stamp}", slug=f"leases-{stamp}", plan=plan_named("enterprise"))
    approver = member(tenant, "approver", f"leases-{stamp}")
    with google_fake(n) as (_, connection_kwargs):
        connection = mirror("google_ads", connection_kwargs, tenant)
    entities = list(connection.entities.select_related("connection", "parent").order_by("external_id"))[:n]
    approve_all(connection, entities, approver)
    (job_id, *_) = actions_dispatch(connection_ids=[connection.pk])
    token = new_token("worker")
    lease = job_claim(job_id=job_id, token=token)
    queued = list(Action.objects.filter(job_id=job_id, status=ActionStatus.QUEUED).order_by("id"))
    started = transition_actions(
        queued,
        "start",
        actor=token,
        reason=f"{token} started job #{job_id}",
        kwargs={"at": timezone.now(), "lease_owner": token, "lease_expires_at": lease.expires_at},
    )
    with transaction.atomic():
        fence_request(lease, [a.pk for a in started], before_states={a.pk: a.baseline_state for a in started})
    return lease, len(started)


def tick(lease) -> tuple[float, int, int, int]:
    """One renewal in its own transaction: (seconds with the commit, WAL bytes, heap-only
    updates of actions, updates of actions)."""
    from django.db import connection, transaction

    from actions.services.leases import lease_renew

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()")
        (lsn,) = cursor.fetchone()
        started = time.perf_counter()
        with transaction.atomic():
            if not lease_renew(lease):
                raise SystemExit("the lease was lost")
            cursor.execute(
                "SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'actions_action'"
            )
            hot, updates = cursor.fetchone()
        elapsed = time.perf_counter() - started
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", [lsn])
        (wal,) = cursor.fetchone()
    return elapsed, int(wal), hot, updates


def run(args) -> None:
    from django.db import connection

    lease, held = held_actions(args.actions)
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'actions_action'")
        (options,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM pg_index WHERE indrelid = 'actions_action'::regclass")
        (indexes,) = cursor.fetchone()
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"conditions: PostgreSQL {connection.pg_version // 10000}, {held} executing actions held by one lease "
        f"(dispatched, started and fenced by the engine's functions), actions_action with {indexes} indexes and "
        f"storage options {options or 'none (fill factor 100)'}, renewals back to back"
    )
    print(f"\n{'tick':>4}{'seconds':>10}{'WAL MB':>9}{'heap-only':>11}")
    for number in range(1, args.ticks + 1):
        elapsed, wal, hot, updates = tick(lease)
        share = f"{hot / updates:.0%}" if updates else "-"
        print(f"{number:>4}{elapsed:>10.3f}{wal / 1e6:>9.2f}{share:>11}")


if __name__ == "__main__":
    main()
