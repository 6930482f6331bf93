"""Chaos: real django-q2 workers killed and paused at random while the sandbox misbehaves.

    .venv/bin/python bench/chaos.py --rounds 50 --seed 1
        [--database-url postgres://postgres@127.0.0.1:5432/postgres] [--redis-url redis://127.0.0.1:6379/7]
        [--clusters 2] [--workers 2] [--actions 12] [--chaos-seconds 8]

Conditions: a fresh PostgreSQL database (created on the given server, dropped at the
end), ``--clusters`` real ``manage.py qcluster`` processes on a Redis broker, the
sandbox platform with injected faults (rate limits with long Retry-After, 5xx,
timeouts before and after applying, read-back failures, silent no-ops, deleted
entities, latency), a short lease (4 s) and request timeout (3 s) so a round takes
seconds. The driver enqueues the sweep, reconciler and outbox drain every second (the
workers run them; in production django-q2's schedules do, every minute).

Each round (seeded, reproducible): propose budget changes on fresh entities (some as a
live scenario deployment, preflighted first), inject faults, approve and deploy, request
rollbacks of some of the last round's successes, and for ``--chaos-seconds`` at random
moments SIGKILL a worker process that is running a task (55 %), SIGSTOP any worker for
up to three lease lifetimes then SIGCONT it (37 %), or kill a whole cluster at once (8 %,
a machine crash; it is restarted). Idle workers and django-q2's pusher and monitor are
not killed one by one: an idle worker blocks inside its multiprocessing queue's lock,
and a process killed there leaves the lock held for ever, so the cluster's other
workers never get a task again (a django-q2 limitation, not the engine's; /health/ready
sees it through the worker heartbeat). If no action moves for 30 s while work waits,
the driver restarts every cluster, as a supervisor would, records what each process
was doing (watchdog-N.txt) and counts it ("watchdog restarts"). Then it lets the system settle and checks, against the
sandbox's own state and request log:
- every action of the round is settled (nothing left executing, queued or in between);
- recorded outcome = platform truth: succeeded iff the target is on the platform, with
  an applied request in the log; failed only if nothing it sent applied (or the entity
  is gone); rolled back iff the before-value is back; never "stale" (nobody but
  BudgetRadar changes anything here, so a stale verdict would blame an outside change);
- nothing was sent for an action after it was settled (request_sent after finish);
- no entity was changed twice by one action (two applied requests);
- every deployment's counts equal its results and its results follow its actions.
It prints rounds, kills, pauses, faults, violations (must be 0) and the worst delay
between a worker's death and the settlement of what it held. Bounded: every wait has a
deadline, every loop a count; only processes it started are signalled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LEASE_TTL = 4
REQUEST_TIMEOUT = 3
PARK_AFTER = 3
ENTITIES = 240
SETTLE_SECONDS = 150
WATCHDOG_SECONDS = 30  # nothing moved this long while work waits: restart the clusters (a supervisor's job)


@dataclass
class Stats:
    rounds: int = 0
    actions: int = 0
    kills: int = 0
    pauses: int = 0
    restarts: int = 0
    crashes: int = 0
    watchdog_restarts: int = 0
    gate_refusals: int = 0  # approvals/rollbacks the safety gate refused (it could not read the platform)
    refused_entities: list[str] = field(default_factory=list)
    faults: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    settle_delays: list[float] = field(default_factory=list)


# Setup --------------------------------------------------------------------------------------


def configure(database_url: str, redis_url: str, clusters_workers: int) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LOG_LEVEL": "WARNING",
        "LEASE_TTL_SECONDS": str(LEASE_TTL),
        "PLATFORM_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT),
        "ENGINE_PARK_AFTER_SECONDS": str(PARK_AFTER),
        "ENGINE_READ_RETRY_SECONDS": "2",
        "ENGINE_TASK_BUDGET_SECONDS": "15",
        "ENGINE_UNIT_SIZE": "4",
        "Q_TIMEOUT": "60",
        "Q_WORKERS": str(clusters_workers),
        "DJANGO_SETTINGS_MODULE": "budgetradar.settings",
    }
    os.environ.update(env)
    import django

    django.setup()
    return env


def create_database(server_url: str) -> str:
    import psycopg

    parsed = urlparse(server_url)
    name = f"br_chaos_{os.getpid()}"
    with psycopg.connect(urlunparse(parsed._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(parsed._replace(path=f"/{name}"))


def drop_database(database_url: str) -> None:
    import psycopg

    parsed = urlparse(database_url)
    name = parsed.path.lstrip("/")
    with psycopg.connect(urlunparse(parsed._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed():
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from budgetradar.models import Membership, Plan, Tenant
    from budgetradar.roles import Role
    from platforms.base import no_throttle
    from platforms.models import Platform, PlatformConnection
    from platforms.registry import get_executor
    from platforms.sandbox.models import SandboxAccount, SandboxEntity
    from platforms.sync import sync_connection

    call_command("migrate", verbosity=0)
    tenant = Tenant.objects.create(name="Chaos", slug="chaos", plan=Plan.objects.get(code="enterprise"))
    users = []
    for name, role in (("chaos-approver", Role.APPROVER), ("chaos-admin", Role.ADMIN)):
        user = get_user_model().objects.create_user(name, password=uuid.uuid4().hex, is_staff=True)
        Membership.objects.create(user=user, tenant=tenant, role=role)
        users.append(user)
    account = SandboxAccount(account_id="sbx-chaos", name="Chaos account", currency="EUR")
    token = uuid.uuid4().hex
    account.set_access_token(token)
    account.save()
    for i in range(1, ENTITIES + 1):
        SandboxEntity.objects.create(
            account=account,
            entity_type="campaign",
            external_id=f"chaos-cmp-{i}",
            name=f"Campaign {i}",
            daily_budget=Decimal("100.00"),
        )
    connection = PlatformConnection.objects.create(
        tenant=tenant,
        name="Chaos sandbox",
        platform=Platform.SANDBOX,
        account_id=account.account_id,
        currency="EUR",
        credentials={"access_token": token},
    )
    sync_connection(connection=connection, executor=get_executor(connection, throttle=no_throttle), days=1)
    return tenant, users, account, connection


# Worker processes -------------------------------------------------------------------------------


class Clusters:
    """The qcluster processes this run started (each in its own process group)."""

    def __init__(self, count: int, env: dict[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        self.started: list[float] = []
        for index in range(count):
            self.procs.append(self._start(index))
            self.started.append(time.monotonic())

    def _start(self, index: int) -> subprocess.Popen:
        log = open(self.log_dir / f"cluster-{index}.log", "ab")  # noqa: SIM115 (lives with the process)
        return subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def descendants(self) -> list[int]:
        """Every live process under the clusters (sentinel, pusher, monitor, workers)."""
        found = []
        for proc in self.procs:
            if proc.poll() is None:
                found += _children(proc.pid)
        return found

    def workers(self, *, busy: bool = False) -> list[int]:
        """The worker processes (django-q2 names them with setproctitle); ``busy``: only
        those running a task at this moment."""
        found = []
        for pid in self.descendants():
            title = _title(pid)
            if " processing " in title or (not busy and title.endswith(" idle")):
                found.append(pid)
        return found

    def crash_one(self, rng: random.Random) -> None:
        """A machine crash: a whole cluster dies at once."""
        index = rng.randrange(len(self.procs))
        self._stop(self.procs[index])

    def watchdog(self, stats: Stats) -> None:
        """A supervisor's last resort: restart every cluster (no work moved for too long).

        What every process was doing is written to the log directory first."""
        self._diagnose(stats.watchdog_restarts)
        for index, proc in enumerate(self.procs):
            self._stop(proc)
            self.procs[index] = self._start(index)
            self.started[index] = time.monotonic()
        stats.watchdog_restarts += 1

    def heal(self, stats: Stats) -> None:
        """Resume paused processes; restart a cluster whose main process or workers died."""
        for pid in self.descendants():
            _signal(pid, signal.SIGCONT)
        for index, proc in enumerate(self.procs):
            booting = time.monotonic() - self.started[index] < 60
            if proc.poll() is not None or (not booting and not _children(proc.pid)):
                self._stop(proc)
                self.procs[index] = self._start(index)
                self.started[index] = time.monotonic()
                stats.restarts += 1

    def _diagnose(self, number: int) -> None:
        from django.db import connection

        lines = [f"{pid} {_title(pid)} {_state(pid)}" for pid in self.descendants()]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, state, wait_event_type, wait_event, left(query, 160) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            lines += [" | ".join(str(c) for c in row) for row in cursor.fetchall()]
        (self.log_dir / f"watchdog-{number}.txt").write_text("\n".join(lines))

    def stop(self) -> None:
        for proc in self.procs:
            self._stop(proc)

    def _stop(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def _children(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                kids = [int(p) for p in handle.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            kids = []
        found += kids
        frontier += kids
    return found


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return "?"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class Ticker:
    """Enqueues what the schedules would, every second, for the workers to run."""

    TASKS = ("actions.tasks.sweep_task", "actions.tasks.reconcile_task", "budgetradar.tasks.outbox_drain_task")

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from django.db import connection
        from django_q.brokers import get_broker
        from django_q.tasks import async_task

        broker = get_broker()
        try:
            while not self._stop.wait(1.0):
                if broker.queue_size() > 4:
                    continue  # the workers are behind (or paused): do not pile up ticks
                for func in self.TASKS:
                    async_task(func, group="chaos-tick")
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# A round ------------------------------------------------------------------------------------------


@dataclass
class Planned:
    action_id: int
    external_id: str
    kind: str  # execute / rollback
    target: Decimal
    before: Decimal


def prepare_round(rng: random.Random, world, fresh: list[str]):
    """Proposals and a preflighted scenario (reads happen now, before any fault)."""
    from actions.services.recommendations import RecommendationInput, recommendations_create
    from platforms.models import PlatformEntity
    from platforms.sandbox.models import SandboxEntity
    from scenarios.models import Scenario, ScenarioItem
    from scenarios.services.preflight import preflight_for_scenario

    tenant, (_approver, admin), _account, connection = world
    entities = {e.external_id: e for e in PlatformEntity.objects.filter(connection=connection, external_id__in=fresh)}
    live = dict(SandboxEntity.objects.filter(external_id__in=fresh).values_list("external_id", "daily_budget"))
    targets = {ext: Decimal(rng.randrange(50, 400)) + Decimal("0.50") for ext in fresh}
    as_deployment = fresh[: len(fresh) // 3] if rng.random() < 0.6 else []
    singles = [ext for ext in fresh if ext not in as_deployment]
    items = [
        RecommendationInput(
            entity_id=entities[ext].pk, action_type="adjust_budget", params={"new_budget": str(targets[ext])}
        )
        for ext in singles
    ]
    recommendations = recommendations_create(tenant=tenant, actor=admin, items=items) if items else []
    scenario = None
    if as_deployment:
        scenario = Scenario.objects.create(tenant=tenant, name=f"Chaos {uuid.uuid4().hex[:6]}", created_by=admin)
        for ext in as_deployment:
            ScenarioItem.objects.create(scenario=scenario, entity=entities[ext], daily_budget=targets[ext])
        preflight_for_scenario(scenario=scenario, actor=admin)
    return recommendations, scenario, targets, live


def start_round(rng: random.Random, world, prepared, last_succeeded: list[int], stats: Stats) -> list[Planned]:
    """Approve, deploy and request rollbacks: from here the workers act.

    The safety gate reads the platform on approval and rollback; when the injected faults
    make that read fail, it refuses with nothing changed (a correct outcome, counted in
    ``gate_refusals``): the action is rejected and its entity goes back to the pool.
    """
    from actions.models import Action
    from actions.services.lifecycle import action_approve, action_reject
    from actions.services.rollback import action_rollback_request
    from budgetradar.errors import DomainError
    from scenarios.services.deploy import deployment_create

    _tenant, (approver, admin), _account, _connection = world
    recommendations, scenario, targets, live = prepared
    planned: list[Planned] = []
    for recommendation in recommendations:
        action = recommendation.actions.get()
        ext = recommendation.entity.external_id
        try:
            action_approve(action=action, actor=approver)
        except DomainError:
            stats.gate_refusals += 1
            action_reject(action=Action.objects.get(pk=action.pk), actor=approver, reason="chaos: the gate refused")
            stats.refused_entities.append(ext)
            continue
        planned.append(Planned(action.pk, ext, "execute", targets[ext], live[ext]))
    if scenario is not None:
        try:
            deployment_create(scenario=scenario, actor=approver, mode="live", idempotency_key=uuid.uuid4().hex)
        except DomainError:  # e.g. a preflight breach the deploy must not override
            stats.gate_refusals += 1
            stats.refused_entities += [item.entity.external_id for item in scenario.items.select_related("entity")]
        for action in Action.objects.filter(deployment__scenario=scenario).select_related("entity"):
            ext = action.entity.external_id
            planned.append(Planned(action.pk, ext, "execute", targets[ext], live[ext]))
    for action in Action.objects.filter(pk__in=rng.sample(last_succeeded, min(len(last_succeeded), 3))):
        before = Decimal(action.before_state["daily_budget"])
        after = Decimal(action.after_state["daily_budget"])
        try:
            action_rollback_request(action=action, actor=admin, reason="chaos rollback")
        except DomainError:
            stats.gate_refusals += 1
            continue
        planned.append(Planned(action.pk, action.entity.external_id, "rollback", before, after))
    return planned


FAULT_MENU = [
    ("rate_limit", {"scope": "write", "remaining": 1, "retry_after": 1}),
    ("rate_limit", {"scope": "any", "remaining": 2, "retry_after": 6}),  # longer than a worker waits: parked
    ("server_error", {"scope": "write", "remaining": 2}),
    ("server_error", {"scope": "read", "remaining": 6}),  # read-backs fail: the reconciler settles them
    ("timeout_before_apply", {"scope": "write", "remaining": 1}),
    ("timeout_after_apply", {"scope": "write", "remaining": 1}),
    ("silent_noop", {"scope": "write", "remaining": 1}),
    ("html_502", {"scope": "write", "remaining": 1}),
]


def inject_faults(rng: random.Random, account, fresh: list[str], stats: Stats) -> set[str]:
    """A few faults from the menu, some narrowed to one entity; maybe a deleted entity."""
    from platforms.sandbox.models import SandboxAccount, SandboxFault

    deleted: set[str] = set()
    for kind, options in rng.sample(FAULT_MENU, rng.randint(1, 4)):
        entity_ids = [rng.choice(fresh)] if rng.random() < 0.3 else []
        SandboxFault.objects.create(account=account, kind=kind, entity_ids=entity_ids, **options)
        stats.faults[kind] += 1
    if rng.random() < 0.2:
        victim = rng.choice(fresh)
        SandboxFault.objects.create(account=account, kind="entity_deleted", entity_ids=[victim], scope="any")
        deleted.add(victim)
        stats.faults["entity_deleted"] += 1
    SandboxAccount.objects.filter(pk=account.pk).update(latency_ms=rng.choice([0, 0, 100, 400, 900]))
    stats.faults["latency"] += 1
    return deleted


def wreak_havoc(rng: random.Random, clusters: Clusters, seconds: float, stats: Stats, kills: list) -> None:
    """SIGKILL or SIGSTOP/SIGCONT random worker processes at random moments."""
    from actions.models import Action, ActionStatus

    deadline = time.monotonic() + seconds
    paused: list[tuple[int, float]] = []
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.3, 2.0))
        now = time.monotonic()
        for pid, until in list(paused):
            if now >= until:
                _signal(pid, signal.SIGCONT)
                paused.remove((pid, until))
        if rng.random() < 0.08:
            held = list(
                Action.objects.filter(status__in=[ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK])
                .exclude(lease_owner="")
                .values_list("pk", flat=True)
            )
            clusters.crash_one(rng)
            stats.crashes += 1
            kills.append((time.time(), held))
            continue
        kill = rng.random() < 0.6
        # An idle django-q2 worker waits inside its task queue's lock; killing it would
        # leave the lock held for ever (a django-q2 limitation), so kills hit busy workers.
        victims = clusters.workers(busy=kill)
        if not victims:
            continue
        pid = rng.choice(victims)
        held = list(
            Action.objects.filter(
                status__in=[ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK], lease_owner__contains=f":{pid}:"
            ).values_list("pk", flat=True)
        )
        if kill:
            _signal(pid, signal.SIGKILL)
            stats.kills += 1
            kills.append((time.time(), held))
        else:
            _signal(pid, signal.SIGSTOP)
            paused.append((pid, now + rng.uniform(0.5, 3 * LEASE_TTL)))
            stats.pauses += 1
    for pid, _until in paused:
        _signal(pid, signal.SIGCONT)


def settle(planned: list[Planned], clusters: Clusters, account, stats: Stats) -> bool:
    from actions.models import Action, ActionStatus
    from budgetradar.models import OutboxEvent
    from platforms.sandbox.models import SandboxAccount, SandboxFault

    SandboxFault.objects.filter(account=account).delete()
    SandboxAccount.objects.filter(pk=account.pk).update(latency_ms=0)
    terminal = {
        ActionStatus.SUCCEEDED,
        ActionStatus.FAILED,
        ActionStatus.PARTIALLY_EXECUTED,
        ActionStatus.ROLLED_BACK,
        ActionStatus.ROLLBACK_FAILED,
    }
    deadline = time.monotonic() + SETTLE_SECONDS
    ids = [p.action_id for p in planned]
    last_change, last_states = time.monotonic(), None
    while time.monotonic() < deadline:
        clusters.heal(stats)
        states = dict(Action.objects.filter(pk__in=ids).values_list("pk", "status"))
        if states != last_states:
            last_change, last_states = time.monotonic(), states
        elif time.monotonic() - last_change > WATCHDOG_SECONDS:
            clusters.watchdog(stats)
            last_change = time.monotonic()
        rollback_done = all(
            states[p.action_id] in (ActionStatus.ROLLED_BACK, ActionStatus.ROLLBACK_FAILED)
            for p in planned
            if p.kind == "rollback"
        )
        drained = not OutboxEvent.objects.filter(processed_at__isnull=True).exists()
        if rollback_done and drained and all(status in terminal for status in states.values()):
            return True
        time.sleep(1.0)
    return False


def check(planned: list[Planned], deleted: set[str], round_started: datetime, stats: Stats, kills) -> None:
    from actions.models import Action, ActionExecutionLog, ActionStatus, LogEvent
    from platforms.sandbox.models import SandboxEntity, SandboxRequest
    from scenarios.models import Deployment

    S = ActionStatus
    actions = Action.objects.in_bulk([p.action_id for p in planned])
    platform = {
        e.external_id: e for e in SandboxEntity.objects.filter(external_id__in=[p.external_id for p in planned])
    }
    applies = defaultdict(int)
    for request in SandboxRequest.objects.filter(
        method="apply", validate_only=False, applied_count__gt=0, created_at__gte=round_started
    ):
        for ext in request.entity_ids:
            applies[ext] += 1
    sent_at = defaultdict(list)
    for action_id, created in ActionExecutionLog.objects.filter(
        action_id__in=list(actions), event=LogEvent.REQUEST_SENT
    ).values_list("action_id", "created_at"):
        sent_at[action_id].append(created)

    def violation(p: Planned, what: str) -> None:
        action = actions[p.action_id]
        stats.violations.append(f"action {p.action_id} ({p.external_id}, {p.kind}, {action.status}): {what}")

    for p in planned:
        action = actions[p.action_id]
        stats.outcomes[f"{p.kind}:{action.status}"] += 1
        row = platform.get(p.external_id)
        gone = row is None or row.deleted_at is not None or p.external_id in deleted
        live = row.daily_budget if row is not None else None
        if action.status not in (S.SUCCEEDED, S.FAILED, S.PARTIALLY_EXECUTED, S.ROLLED_BACK, S.ROLLBACK_FAILED):
            violation(p, "not settled")
            continue
        if action.error_code == "stale":
            violation(p, "stale, but nobody but BudgetRadar changed anything")
        if p.kind == "execute":
            if action.status == S.SUCCEEDED and not gone and live != p.target:
                violation(p, f"recorded succeeded, platform has {live} not {p.target}")
            if action.status == S.SUCCEEDED and p.target != p.before and applies[p.external_id] == 0:
                violation(p, "recorded succeeded without an applied request in the platform's log")
            if action.status == S.FAILED and not gone and live == p.target and p.target != p.before:
                violation(p, f"recorded failed ({action.error_code}), but the platform has the target {live}")
            if applies[p.external_id] > 1:
                violation(p, f"applied {applies[p.external_id]} times")
        else:
            if action.status == S.ROLLED_BACK and not gone and live != p.target:
                violation(p, f"recorded rolled back, platform has {live} not {p.target}")
            if action.status == S.ROLLBACK_FAILED and not gone and live == p.target and p.target != p.before:
                violation(p, "recorded rollback failed, but the platform shows the before-value")
        settled_at = action.rolled_back_at if p.kind == "rollback" else action.finished_at
        late = [t for t in sent_at[p.action_id] if settled_at and t > settled_at and t >= round_started]
        if late and action.status != S.ROLLING_BACK:
            violation(p, f"a request was sent {len(late)} time(s) after it was settled")
    for deployment in Deployment.objects.filter(actions__pk__in=list(actions)).distinct():
        counts = Counter(deployment.results.values_list("status", flat=True))
        if deployment.total != sum(counts.values()) or deployment.pending != counts.get("pending", 0):
            stats.violations.append(f"deployment {deployment.pk}: counts {deployment.total} != results {dict(counts)}")
        for result in deployment.results.select_related("action").exclude(action=None):
            if result.status == "pending":
                stats.violations.append(f"deployment {deployment.pk}: result for action {result.action_id} pending")
    for killed_at, held in kills:
        settled = [
            (actions[a].finished_at or actions[a].rolled_back_at or actions[a].updated_at).timestamp() - killed_at
            for a in held
            if a in actions
        ]
        stats.settle_delays += [d for d in settled if d > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--actions", type=int, default=12)
    parser.add_argument("--chaos-seconds", type=float, default=8.0)
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        sys.exit("the chaos suite needs PostgreSQL (several workers, row locks)")
    database_url = create_database(args.database_url)
    env = configure(database_url, args.redis_url, args.workers)
    log_dir = Path(os.environ.get("CHAOS_LOG_DIR", "/tmp")) / f"br-chaos-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    stats = Stats()
    started = time.monotonic()
    clusters = ticker = None
    try:
        world = seed()
        clusters = Clusters(args.clusters, env, log_dir)
        ticker = Ticker()
        pool = [f"chaos-cmp-{i}" for i in range(1, ENTITIES + 1)]
        last_succeeded: list[int] = []
        cooling: list[str] = []  # last round's entities: reserved for their rollbacks this round
        for round_no in range(args.rounds):
            rng = random.Random(args.seed * 10_000 + round_no)
            fresh = [pool.pop(rng.randrange(len(pool))) for _ in range(min(args.actions, len(pool)))]
            if not fresh:
                break
            from django.utils import timezone

            round_started = timezone.now()
            prepared = prepare_round(rng, world, fresh)
            deleted = inject_faults(rng, world[2], fresh, stats)
            planned = start_round(rng, world, prepared, last_succeeded, stats)
            kills: list = []
            wreak_havoc(rng, clusters, args.chaos_seconds, stats, kills)
            settled = settle(planned, clusters, world[2], stats)
            check(planned, deleted, round_started, stats, kills)
            if not settled:
                stats.violations.append(f"round {round_no}: not settled within {SETTLE_SECONDS}s")
            from actions.models import Action, ActionStatus

            last_succeeded = list(
                Action.objects.filter(
                    pk__in=[p.action_id for p in planned if p.kind == "execute"], status=ActionStatus.SUCCEEDED
                ).values_list("pk", flat=True)
            )
            pool += cooling + [ext for ext in stats.refused_entities if ext not in deleted]
            stats.refused_entities.clear()
            cooling = [p.external_id for p in planned if p.kind == "execute" and p.external_id not in deleted]
            stats.rounds += 1
            stats.actions += len(planned)
            print(
                f"round {round_no + 1}/{args.rounds}: {len(planned)} actions, kills {stats.kills}, pauses "
                f"{stats.pauses}, violations {len(stats.violations)}",
                flush=True,
            )
    finally:
        if ticker:
            ticker.stop()
        if clusters:
            clusters.stop()
        from django.db import connections

        connections.close_all()
        if not args.keep_database:
            drop_database(database_url)
    report(stats, args, time.monotonic() - started, log_dir)
    sys.exit(1 if stats.violations else 0)


def report(stats: Stats, args, elapsed: float, log_dir: Path) -> None:
    delays = sorted(stats.settle_delays)
    print("\nChaos run (PostgreSQL, Redis broker, sandbox platform)")
    print(f"  clusters x workers     {args.clusters} x {args.workers}   seed {args.seed}")
    print(f"  lease / request timeout {LEASE_TTL}s / {REQUEST_TIMEOUT}s   park after {PARK_AFTER}s")
    print(f"  rounds                 {stats.rounds}   actions {stats.actions}   elapsed {elapsed:.0f}s")
    print(
        f"  worker SIGKILLs        {stats.kills}   SIGSTOP/SIGCONT {stats.pauses}   cluster crashes {stats.crashes}"
        f"   restarts {stats.restarts}   watchdog restarts {stats.watchdog_restarts}"
    )
    print(f"  faults                 {dict(stats.faults)}")
    print(f"  refused by the gate    {stats.gate_refusals} (approvals/rollbacks whose preflight read failed)")
    print(f"  outcomes               {dict(stats.outcomes)}")
    if delays:
        worst, median = delays[-1], delays[len(delays) // 2]
        print(f"  crash -> settled       worst {worst:.1f}s, median {median:.1f}s ({len(delays)} held by killed)")
    print(f"  violations             {len(stats.violations)}")
    for line in stats.violations[:50]:
        print(f"    - {line}")
    print(f"  worker logs            {log_dir}")


if __name__ == "__main__":
    main()
