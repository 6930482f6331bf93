"""Benchmark: list pages at 100 / 100,000 / 1,000,000 actions and execution-log rows.

    .venv/bin/python bench/scale.py [--sizes 100,100000] [--million] [--repeat 5]
        [--database-url postgres://postgres@127.0.0.1:5432/br_scale_bench] [--keep]

PostgreSQL only (the sizes are what production holds, and the plans are PostgreSQL's).
The database named in ``--database-url`` is dropped and created again (``--keep`` leaves
it afterwards). One tenant's table grows to each size in turn (``--million`` adds
1,000,000; it takes minutes to load): actions bulk-loaded with ``INSERT ... SELECT
generate_series`` (a mix of statuses, one row a second), one execution-log row per
action, a second tenant with a tenth as many rows, then ``VACUUM ANALYZE``. At each size
it times, in process through Django's test client (no HTTP server; the median of
``--repeat`` warm runs), the first, middle and last page of

- ``GET /api/actions/`` (keyset: the middle and last pages are reached with the cursor of
  the row there, as following ``next`` would), and ``?status=failed``;
- the admin's action changelist and execution-log changelist (``?p=`` offset pages; the
  last page is the last of the figure the paginator shows).

and prints one table with the queries of each page and the goal beside each figure:
a page within 2x of the same page at the smallest size (flat) and under 100 ms (API)
or 300 ms (admin). Then, with ``--entities`` N (10,000; 0 skips it), a sandbox account
of N campaigns is preflighted, dry-run deployed and deployed live through the API: the
request times and statuses (202), the background tasks (captured instead of sent to django-q2 and run in
process by their task functions, rate limiter on) to done and settled, paging the
preflight's entities through the cursor API, and a check that every sandbox campaign
holds its target. Not a test: figures vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/br_scale_bench"
API_GOAL_MS, ADMIN_GOAL_MS, FLAT_GOAL = 100.0, 300.0, 2.0
STATUSES = ["succeeded"] * 7 + ["failed", "pending_approval", "rolled_back"]


def recreate_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    if not name.startswith("br_"):
        raise SystemExit(f"refusing to drop {name!r}: the bench's database name must start with br_")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    with psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}"')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetradar.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# Loading ------------------------------------------------------------------------------------


@dataclass
class World:
    tenant: object
    approver: object
    entity: object
    template_action: int
    template_log: int
    loaded: int = 0  # rows of the main tenant so far


def build_world(tenant_slug: str = "scale") -> World:
    from actions.models import Action, ActionExecutionLog, LogEvent
    from budgetradar.roles import Role
    from tests.factories import ConnectionFactory, EntityFactory, TenantFactory, member

    tenant = TenantFactory(slug=tenant_slug, name=tenant_slug.title())
    entity = EntityFactory(connection=ConnectionFactory(tenant=tenant), name=f"{tenant_slug} campaign")
    action = Action.objects.create(
        tenant=tenant,
        connection=entity.connection,
        entity=entity,
        platform=entity.connection.platform,
        action_type="adjust_budget",
        params={"new_budget": "120.00", "budget_type": "daily"},
    )
    log = ActionExecutionLog.objects.create(
        tenant=tenant, action=action, event=LogEvent.SUCCEEDED, message="Verified on the platform.", actor="bench"
    )
    approver = member(tenant, Role.APPROVER, f"{tenant_slug}-approver")
    return World(tenant, approver, entity, action.pk, log.pk, loaded=1)


def columns(table: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        return [c.name for c in connection.introspection.get_table_description(cursor, table) if c.name != "id"]


def grow(world: World, size: int) -> float:
    """Add rows until the world's tenant has ``size`` actions (and as many log rows);
    returns the seconds it took."""
    from django.db import connection, transaction

    add = size - world.loaded
    if add <= 0:
        return 0.0
    started = time.perf_counter()
    statuses = "ARRAY[" + ",".join(f"'{s}'" for s in STATUSES) + "]"
    offset = world.loaded
    overrides = {
        "created_at": f"TIMESTAMPTZ '2026-01-01' + ((g + {offset}) || ' seconds')::interval",
        "updated_at": f"TIMESTAMPTZ '2026-01-01' + ((g + {offset}) || ' seconds')::interval",
        "status": f"({statuses})[1 + (g %% {len(STATUSES)})]",
    }
    action_cols = columns("actions_action")
    select = ", ".join(overrides.get(c, f't."{c}"') for c in action_cols)
    log_cols = columns("actions_actionexecutionlog")
    log_overrides = {"action_id": "a.id", "tenant_id": "a.tenant_id", "created_at": "a.created_at"}
    log_select = ", ".join(log_overrides.get(c, f'l."{c}"') for c in log_cols)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM actions_action")
        before = cursor.fetchone()[0]
        cursor.execute(
            f"INSERT INTO actions_action ({', '.join(action_cols)}) "
            f"SELECT {select} FROM actions_action t, generate_series(1, %s) g WHERE t.id = %s",
            [add, world.template_action],
        )
        cursor.execute(
            f"INSERT INTO actions_actionexecutionlog ({', '.join(log_cols)}) "
            f"SELECT {log_select} FROM actions_action a, actions_actionexecutionlog l "
            f"WHERE a.id > %s AND a.tenant_id = %s AND l.id = %s",
            [before, world.tenant.pk, world.template_log],
        )
    world.loaded = size
    return time.perf_counter() - started


def vacuum_analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE actions_action")
        cursor.execute("VACUUM ANALYZE actions_actionexecutionlog")


# Timing ----------------------------------------------------------------------------------------


@dataclass
class Figure:
    page: str
    ms: float
    db_ms: float
    queries: int
    rows: int


def cursor_at(world: World, index: int) -> str:
    """The cursor ``next`` would carry to start after the ``index``-th newest action."""
    from actions.models import Action

    row = Action.objects.filter(tenant=world.tenant).order_by("-created_at", "-id").values("created_at", "id")[index]
    token = {"v": row["created_at"].isoformat(), "id": row["id"], "r": 0}
    return base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).decode()


def timed(client, url: str, repeat: int, *, rows_of) -> tuple[float, float, int, int]:
    """Median wall and database milliseconds of a page, its queries and rows."""
    from django.db import connection

    calls: list[float] = []

    def count(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            calls.append(time.perf_counter() - started)

    response = client.get(url)  # warm: caches, the plan, the pages of the index
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    times, db_times = [], []
    for _ in range(repeat):
        calls.clear()
        with connection.execute_wrapper(count):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        db_times.append(sum(calls) * 1000)
    return statistics.median(times), statistics.median(db_times), len(calls), rows_of(response)


def measure(world: World, repeat: int) -> list[Figure]:
    from django.test import Client
    from django.urls import reverse
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from actions.models import Action, ActionExecutionLog

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=world.approver)[0].key}")
    admin = Client()
    admin.force_login(world.approver)
    api_rows = lambda r: len(r.json()["results"])  # noqa: E731
    admin_rows = lambda r: r.content.decode().partition("<tbody>")[2].count("</tr>")  # noqa: E731

    figures = []
    n = world.loaded
    for label, index in (("first", None), ("middle", n // 2), ("last", max(n - 51, 0))):
        url = "/api/actions/" if index is None else f"/api/actions/?cursor={cursor_at(world, index)}"
        figures.append(Figure(f"API actions {label}", *timed(api, url, repeat, rows_of=api_rows)))
    figures.append(
        Figure("API actions ?status=failed", *timed(api, "/api/actions/?status=failed", repeat, rows_of=api_rows))
    )

    for model, name in ((Action, "actions"), (ActionExecutionLog, "log")):
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        per_page = 100 if model is ActionExecutionLog else 50
        # The last page with rows (an estimated count may offer one more, empty page).
        pages = max(-(-model.objects.filter(tenant=world.tenant).count() // per_page), 1)
        for label, page in (("first", 1), ("middle", max(pages // 2, 1)), ("last", pages)):
            figures.append(
                Figure(
                    f"admin {name} {label} (p={page:,})", *timed(admin, f"{url}?p={page}", repeat, rows_of=admin_rows)
                )
            )
    return figures


def goal_of(page: str) -> float:
    return API_GOAL_MS if page.startswith("API") else ADMIN_GOAL_MS


def report(results: dict[int, list[Figure]]) -> None:
    sizes = sorted(results)
    base = {f.page.split(" (p=")[0]: f.ms for f in results[sizes[0]]}
    head = f"{'page':<28}" + "".join(f"{f'{s:,} rows: ms (db ms) queries xfirst':>42}" for s in sizes) + "   goal"
    print(head)
    print("-" * len(head))
    for i, figure in enumerate(results[sizes[0]]):
        key = figure.page.split(" (p=")[0]
        cells = []
        for size in sizes:
            f = results[size][i]
            ratio = f.ms / base[key] if base[key] else 0
            mark = "ok" if f.ms <= goal_of(key) and (size == sizes[0] or ratio <= FLAT_GOAL) else "MISS"
            cells.append(f"{f.ms:8.1f} ({f.db_ms:6.1f}) {f.queries:2d}q x{ratio:4.1f} {mark:>4}")
        print(f"{key:<28}" + "".join(f"{c:>42}" for c in cells) + f"   <{goal_of(key):.0f} ms, <= {FLAT_GOAL:.0f}x")
    print()
    for size in sizes:
        pages = ", ".join(f"{f.page.split(' ', 1)[1]}: {f.rows} rows" for f in results[size] if "(p=" in f.page)
        print(f"{size:,}: {pages}")


# End to end: a large preflight and live deploy through the API ------------------------------


class TaskQueue:
    """What would go to django-q2, run here in process in the order it was enqueued (the
    task functions themselves, with the real rate limiter and sleeps: a synchronous worker)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, tuple]] = []
        self.ran: dict[str, int] = {}

    def install(self) -> None:
        import django_q.tasks

        import budgetradar.queue

        def capture(func, *args, **_kwargs):
            self.pending.append((func, args))

        budgetradar.queue.async_task = capture
        django_q.tasks.async_task = capture

    def run_all(self, *, max_tasks: int = 100_000, max_seconds: float = 600) -> int:
        from django.utils.module_loading import import_string

        started, count = time.perf_counter(), 0
        while self.pending and count < max_tasks and time.perf_counter() - started < max_seconds:
            func, args = self.pending.pop(0)
            import_string(func)(*args)
            self.ran[func.rsplit(".", 1)[1]] = self.ran.get(func.rsplit(".", 1)[1], 0) + 1
            count += 1
        if self.pending:
            raise SystemExit(f"the task queue did not drain: {len(self.pending)} left after {count} tasks")
        return count


@dataclass
class EndToEnd:
    entities: int
    latency_ms: int
    preflight_post_ms: float = 0.0
    preflight_status: int = 0
    preflight_task_s: float = 0.0
    preflight_run_status: str = ""
    pages: int = 0
    paged_entities: int = 0
    paged_breaches: int = 0
    page_through_s: float = 0.0
    summary_bytes: int = 0
    dry_run_post_ms: float = 0.0
    dry_run_status: int = 0
    dry_run_task_s: float = 0.0
    dry_run_deployment_status: str = ""
    validated: int = 0
    deploy_post_ms: float = 0.0
    deploy_status: int = 0
    deploy_task_s: float = 0.0
    deployment_status: str = ""
    succeeded: int = 0
    mismatched: int = -1
    tasks: str = ""


def sandbox_scenario(n: int, latency_ms: int):
    """A tenant with a synced sandbox account of ``n`` campaigns at 100.00 a day and a
    scenario (by an operator) raising each to 110.00; an approver to deploy it."""
    from decimal import Decimal

    from budgetradar.plans import plan_named
    from budgetradar.roles import Role
    from platforms.registry import get_executor
    from platforms.sandbox.models import SandboxEntity
    from platforms.sync import sync_connection
    from scenarios.models import Scenario, ScenarioItem
    from tests.factories import SandboxAccountFactory, TenantFactory, member, sandbox_connection

    tenant = TenantFactory(slug="e2e", name="End to end", plan=plan_named("enterprise"))
    account = SandboxAccountFactory(account_id="sbx-e2e")
    SandboxEntity.objects.bulk_create(
        (
            SandboxEntity(
                account=account,
                entity_type="campaign",
                external_id=f"sandbox-cmp-{i}",
                name=f"Campaign {i}",
                status="active",
                daily_budget=Decimal("100.00"),
            )
            for i in range(1, n + 1)
        ),
        batch_size=5000,
    )
    connection = sandbox_connection(tenant, account, name="Sandbox")
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    account.latency_ms = latency_ms
    account.save(update_fields=["latency_ms"])
    operator = member(tenant, Role.OPERATOR, "e2e-operator")
    approver = member(tenant, Role.APPROVER, "e2e-approver")
    scenario = Scenario.objects.create(tenant=tenant, name="Raise every budget", created_by=operator)
    ScenarioItem.objects.bulk_create(
        (
            ScenarioItem(scenario=scenario, entity=entity, daily_budget=Decimal("110.00"))
            for entity in connection.entities.filter(entity_type="campaign").order_by("id")
        ),
        batch_size=5000,
    )
    return account, scenario, operator, approver


def deploy_through_api(deployer, queue, scenario, mode: str):
    """POST a deploy of ``mode``, then run the tasks it enqueued: (request ms, status, task s,
    the deployment as it ended)."""
    from scenarios.models import Deployment

    started = time.perf_counter()
    response = deployer.post(
        f"/api/scenarios/{scenario.pk}/deploy", {"mode": mode, "idempotency_key": f"e2e-{mode}-1"}, format="json"
    )
    post_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    queue.run_all()
    task_s = time.perf_counter() - started
    return post_ms, response.status_code, task_s, Deployment.objects.get(pk=response.json()["id"])


def end_to_end(n: int, latency_ms: int) -> EndToEnd:
    """Preflight, dry-run then live-deploy ``n`` sandbox campaigns through the API, the background
    work run by ``TaskQueue``; checks the sandbox holds every target afterwards."""
    from decimal import Decimal

    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from platforms.sandbox.models import SandboxEntity
    from scenarios.models import PreflightRun

    queue = TaskQueue()
    queue.install()
    account, scenario, operator, approver = sandbox_scenario(n, latency_ms)
    figures = EndToEnd(entities=n, latency_ms=latency_ms)

    def client(user) -> APIClient:
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        return api

    api = client(operator)
    started = time.perf_counter()
    response = api.post(f"/api/scenarios/{scenario.pk}/preflight", {"mode": "manual"}, format="json")
    figures.preflight_post_ms = (time.perf_counter() - started) * 1000
    figures.preflight_status = response.status_code
    run_id = response.json()["run_id"]
    started = time.perf_counter()
    queue.run_all()
    figures.preflight_task_s = time.perf_counter() - started
    run = PreflightRun.objects.get(run_id=run_id)
    figures.preflight_run_status = run.status
    summary = api.get(f"/api/preflights/{run_id}").json()
    figures.summary_bytes = len(json.dumps(summary))

    started = time.perf_counter()
    url = f"/api/preflights/{run_id}/entities?limit=1000"
    while url and figures.pages < n // 10 + 10:
        page = api.get(url).json()
        figures.pages += 1
        figures.paged_entities += len(page["results"])
        figures.paged_breaches += sum(len(e.get("breaches") or []) for e in page["results"])
        url = page["next"]
    figures.page_through_s = time.perf_counter() - started

    deployer = client(approver)
    # The dry run before the live deploy, so it has every change to validate; its own
    # fresh preflight is the one the live deploy then uses (the same reads).
    figures.dry_run_post_ms, figures.dry_run_status, figures.dry_run_task_s, dry_run = deploy_through_api(
        deployer, queue, scenario, "dry_run"
    )
    figures.dry_run_deployment_status, figures.validated = dry_run.status, dry_run.validated
    figures.deploy_post_ms, figures.deploy_status, figures.deploy_task_s, deployment = deploy_through_api(
        deployer, queue, scenario, "live"
    )
    figures.deployment_status, figures.succeeded = deployment.status, deployment.succeeded
    figures.mismatched = (
        SandboxEntity.objects.filter(account=account, entity_type="campaign")
        .exclude(daily_budget=Decimal("110.00"))
        .count()
    )
    figures.tasks = ", ".join(f"{name} x{count}" for name, count in sorted(queue.ran.items()))
    return figures


def report_end_to_end(f: EndToEnd) -> None:
    from django.conf import settings
    from django.db import connection

    from platforms.ratelimit import rate_limit_for

    limit = rate_limit_for("sandbox")
    print(
        f"end to end: {f.entities:,} sandbox campaigns, database {connection.vendor}, sandbox latency "
        f"{f.latency_ms} ms per request, rate limiter ON (sandbox: {limit.capacity:g} requests burst, "
        f"{limit.refill_per_second:g}/s), tasks run in process by their django-q2 functions "
        f"(sync lines: preflight {settings.PREFLIGHT_SYNC_MAX_ENTITIES}, deploy {settings.DEPLOY_SYNC_MAX_ENTITIES})"
    )
    ok = lambda good: "ok" if good else "MISS"  # noqa: E731
    rows = [
        ("POST preflight", f"{f.preflight_post_ms:.0f} ms, {f.preflight_status}", ok(f.preflight_status == 202)),
        (
            "preflight task to done",
            f"{f.preflight_task_s:.1f} s, {f.preflight_run_status}",
            ok(f.preflight_run_status == "succeeded"),
        ),
        ("GET run (summary) size", f"{f.summary_bytes / 1024:.1f} KB", ok(f.summary_bytes < 64 * 1024)),
        (
            "page through entities",
            f"{f.page_through_s:.1f} s, {f.pages} pages of 1,000, {f.paged_entities:,} entities, "
            f"{f.paged_breaches:,} breaches",
            ok(f.paged_entities == f.entities),
        ),
        ("POST deploy (dry run)", f"{f.dry_run_post_ms:.0f} ms, {f.dry_run_status}", ok(f.dry_run_status == 202)),
        (
            "dry-run task to done",
            f"{f.dry_run_task_s:.1f} s, {f.dry_run_deployment_status}, {f.validated:,} validated",
            ok(f.dry_run_deployment_status == "succeeded" and f.validated == f.entities),
        ),
        ("POST deploy (live)", f"{f.deploy_post_ms:.0f} ms, {f.deploy_status}", ok(f.deploy_status == 202)),
        (
            "deploy task to settled",
            f"{f.deploy_task_s:.1f} s, {f.deployment_status}, {f.succeeded:,} succeeded",
            ok(f.deployment_status == "succeeded" and f.succeeded == f.entities),
        ),
        ("sandbox value != target", f"{f.mismatched:,} entities", ok(f.mismatched == 0)),
    ]
    for label, value, mark in rows:
        print(f"  {label:<26}{value:<70}{mark}")
    print(f"  tasks run: {f.tasks}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,100000", help="comma-separated row counts; empty: no list pages")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 rows (minutes to load)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--entities", type=int, default=10_000, help="end-to-end preflight, dry run and live deploy size; 0: skip them"
    )
    parser.add_argument("--latency-ms", type=int, default=20, help="the sandbox's latency per request")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s} | ({1_000_000} if args.million else set()))

    recreate_database(args.database_url)
    try:
        setup_django(args.database_url)
        results = {}
        if sizes:
            world = build_world()
            other = build_world("neighbour")
        for size in sizes:
            load_s = grow(world, size) + grow(other, max(size // 10, 1))
            started = time.perf_counter()
            vacuum_analyze()
            print(f"{size:,} rows: loaded in {load_s:.1f} s, VACUUM ANALYZE {time.perf_counter() - started:.1f} s")
            results[size] = measure(world, args.repeat)
        if results:
            print()
            report(results)
        if args.entities:
            print()
            report_end_to_end(end_to_end(args.entities, args.latency_ms))
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_database(args.database_url)


if __name__ == "__main__":
    main()
