"""Durable execution: leases, per-request attempts, one settlement path, the reconciler.

Each test reproduces a way the engine used to break its promise (issue 8) and pins what
happens now: no action left executing for ever, a live worker's work never taken over,
the recorded outcome equal to the platform's truth, and nothing applied twice.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from actions.models import Action, ActionExecutionLog, ActionJob, ActionStatus, JobStatus, LogEvent
from actions.services.dispatch import actions_dispatch
from actions.services.engine import job_process
from actions.services.reconcile import actions_reconcile
from actions.services.rollback import action_rollback_request
from budgetradar.outbox import outbox_drain
from budgetradar.transactions import in_transaction
from platforms.base import no_throttle
from platforms.ratelimit import rate_limit_backoff
from platforms.sandbox.executor import SandboxExecutor
from scenarios.models import Scenario, ScenarioItem
from scenarios.services.deploy import deployment_create
from scenarios.services.preflight import preflight_for_scenario
from tests.engine_helpers import FAST, approved, run_worker, sandbox_world

pytestmark = pytest.mark.django_db(transaction=True)
TTL = 2  # seconds: leases run out quickly in these tests


@pytest.fixture
def world(tenant, settings):
    settings.LEASE_TTL_SECONDS = TTL
    settings.PLATFORM_REQUEST_TIMEOUT_SECONDS = 1  # a request still in flight after this has timed out
    return sandbox_world(tenant, campaigns=6, ad_sets_per_campaign=0)


def events_of(action: Action) -> list[str]:
    return list(action.logs.order_by("id").values_list("event", flat=True))


def break_reads_after_applying(monkeypatch, world, *, remaining: int | None) -> None:
    """Every read after the next apply fails with a 5xx (``remaining`` times, None: always)."""
    original = SandboxExecutor.apply

    def apply(self, changes, **kwargs):
        outcomes = original(self, changes, **kwargs)
        if not kwargs.get("validate_only"):
            world.fault("server_error", scope="read", remaining=remaining)
        return outcomes

    monkeypatch.setattr(SandboxExecutor, "apply", apply)


def expire_leases() -> None:
    time.sleep(TTL + 0.3)


def in_thread(fn) -> threading.Thread:
    def run() -> None:
        try:
            fn()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# 1. A failed read-back no longer strands the action ---------------------------------------


def test_a_read_back_that_fails_after_applying_is_settled_by_the_reconciler(world, approver, monkeypatch):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    break_reads_after_applying(monkeypatch, world, remaining=FAST.max_attempts)
    [report] = run_worker()
    action.refresh_from_db()
    assert report.unresolved == 1 and ActionJob.objects.get().status != JobStatus.RUNNING
    assert action.status == ActionStatus.EXECUTING and events_of(action)[-1] == "awaiting_reconciliation"
    assert action.lease_expires_at <= timezone.now()  # handed over at once, no lease to wait for

    report = actions_reconcile()
    action.refresh_from_db()
    assert report.succeeded == 1 and action.status == ActionStatus.SUCCEEDED
    assert action.rollback_params == {"changes": [{"field": "daily_budget", "value": "100.00"}]}
    assert world.applied_count("sandbox-cmp-1") == 1
    # The entity is not blocked: the next change to it runs.
    monkeypatch.undo()
    follow_up = approved(world.entity("sandbox-cmp-1"), approver, new_budget="160.00")
    run_worker()
    follow_up.refresh_from_db()
    assert follow_up.status == ActionStatus.SUCCEEDED, follow_up.error_message


def test_a_rollback_whose_verification_read_fails_is_settled_by_the_reconciler(world, approver, monkeypatch):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    run_worker()
    action.refresh_from_db()
    action_rollback_request(action=action, actor=approver, reason="undo")
    break_reads_after_applying(monkeypatch, world, remaining=FAST.max_attempts)
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.ROLLING_BACK and events_of(action)[-1] == "awaiting_reconciliation"
    assert actions_reconcile().rolled_back == 1
    action.refresh_from_db()
    assert action.status == ActionStatus.ROLLED_BACK
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")


# 2. An unreadable platform keeps the action visibly waiting, and it is tried again ---------


def test_when_the_platform_cannot_be_read_the_action_says_so_and_is_tried_again(world, approver, monkeypatch):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    break_reads_after_applying(monkeypatch, world, remaining=None)
    run_worker()
    report = actions_reconcile()
    action.refresh_from_db()
    assert report.unreadable == 1 and action.status == ActionStatus.EXECUTING
    assert "Awaiting reconciliation: the platform could not be read" in action.wait_reason
    assert action.next_attempt_at > timezone.now() and action.reconcile_attempts == 1
    assert actions_reconcile().taken == 0  # not before its next try

    world.account.faults.all().delete()
    Action.objects.filter(pk=action.pk).update(next_attempt_at=timezone.now())
    assert actions_reconcile().succeeded == 1
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED and world.applied_count("sandbox-cmp-1") == 1


# 3. A worker waiting on the platform keeps its lease; a paused one loses it and stops -------


def slow_writes(seconds: float):
    """A throttle that holds every write for ``seconds`` (as the shared bucket does after
    a long Retry-After); reads pass."""

    def throttle(operations: int) -> None:
        if threading.current_thread().name == "slow-writer" and operations and throttle.calls:
            time.sleep(seconds)
        throttle.calls += 1

    throttle.calls = 0
    return throttle


def test_a_worker_sleeping_in_the_throttle_keeps_its_lease(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    [job_id] = actions_dispatch()
    reports = []
    worker = in_thread(lambda: reports.append(job_process(job_id=job_id, policy=FAST, throttle=slow_writes(3 * TTL))))
    worker.name = "slow-writer"
    for _ in range(2):
        expire_leases()
        assert actions_reconcile().taken == 0
    worker.join(timeout=30)
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED, action.error_message
    assert world.applied_count("sandbox-cmp-1") == 1
    assert LogEvent.STALE not in events_of(action)


def test_a_paused_worker_loses_its_lease_and_stops_without_sending(world, approver, settings):
    settings.LEASE_STALL_SECONDS = 0  # a silent holder is not renewed: as if the process were paused
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    [job_id] = actions_dispatch()
    reports = []
    worker = in_thread(lambda: reports.append(job_process(job_id=job_id, policy=FAST, throttle=slow_writes(3 * TTL))))
    worker.name = "slow-writer"
    expire_leases()
    taken = actions_reconcile()
    assert taken.released == 1  # nothing was sent: back to approved, no person needed
    worker.join(timeout=30)
    assert reports[0].lease_lost
    assert world.applied_count("sandbox-cmp-1") == 0  # the paused worker did not send after losing it
    settings.LEASE_STALL_SECONDS = 120
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED and world.applied_count("sandbox-cmp-1") == 1
    assert LogEvent.STALE not in events_of(action)


# 4. request_sent per request: what never left is provably unsent ---------------------------


class WorkerDied(BaseException):
    """Stands for a SIGKILL: nothing after it runs, nothing is cleaned up."""


def test_a_worker_dying_between_requests_leaves_only_the_sent_ones_in_doubt(world, approver, monkeypatch):
    monkeypatch.setattr(SandboxExecutor, "max_operations_per_request", 2)
    actions = [approved(world.entity(f"sandbox-cmp-{i}"), approver, new_budget="150.00") for i in range(1, 7)]
    monkeypatch.setattr(SandboxExecutor, "_apply_batch", _dying_batch(die_on=2))
    [job_id] = actions_dispatch()
    with pytest.raises(WorkerDied):
        job_process(job_id=job_id, policy=FAST, throttle=no_throttle)
    sent = set(ActionExecutionLog.objects.filter(event=LogEvent.REQUEST_SENT).values_list("action_id", flat=True))
    assert len(sent) == 4  # the first request went out, the second was logged and then the worker died
    monkeypatch.undo()
    expire_leases()
    report = actions_reconcile()
    assert report.succeeded == 2  # the first request's changes are on the platform
    assert report.released == 4  # two logged but absent, two never sent: all run again, no person needed
    run_worker()
    for action in actions:
        action.refresh_from_db()
        assert action.status == ActionStatus.SUCCEEDED, (action.pk, action.error_message)
        assert world.applied_count(action.entity.external_id) == 1


def _dying_batch(*, die_on: int):
    original = SandboxExecutor._apply_batch
    calls = {"n": 0}

    def apply_batch(self, batch, *, validate_only):
        calls["n"] += 1
        if calls["n"] == die_on:
            self.before_write(batch)  # request_sent is committed ...
            raise WorkerDied  # ... and the worker dies before the request leaves
        return original(self, batch, validate_only=validate_only)

    return apply_batch


# 5. No job has to fit one task -----------------------------------------------------------------


def test_a_job_larger_than_one_task_is_resumed_by_the_next_task(world, approver, settings):
    settings.ENGINE_UNIT_SIZE = {"default": 2, "google_ads": 2, "meta": 2}
    actions = [approved(world.entity(f"sandbox-cmp-{i}"), approver, new_budget="150.00") for i in range(1, 6)]
    [job_id] = actions_dispatch()
    report = job_process(job_id=job_id, policy=FAST, throttle=no_throttle, budget_seconds=0)
    assert report.units == 1 and report.status == JobStatus.QUEUED  # handed to the next task
    assert Action.objects.filter(status=ActionStatus.SUCCEEDED).count() == 2
    while ActionJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).exists():
        job_process(job_id=job_id, policy=FAST, throttle=no_throttle, budget_seconds=0)
    assert ActionJob.objects.get(pk=job_id).status == JobStatus.SUCCEEDED
    assert all(a.status == ActionStatus.SUCCEEDED for a in Action.objects.filter(pk__in=[a.pk for a in actions]))


def test_a_task_does_not_start_a_unit_its_remaining_budget_cannot_hold(world, approver, settings):
    """After a unit, the run stops unless the time left could hold another unit as long as
    the longest so far: a task ends near its budget, not a whole unit past it."""
    settings.ENGINE_UNIT_SIZE = {"default": 2, "google_ads": 2, "meta": 2}
    for i in range(1, 7):
        approved(world.entity(f"sandbox-cmp-{i}"), approver, new_budget="150.00")
    [job_id] = actions_dispatch()

    def slow_throttle(_operations: int) -> None:
        time.sleep(0.1)  # each unit sends 3 requests: at least 0.3 s

    report = job_process(job_id=job_id, policy=FAST, throttle=slow_throttle, budget_seconds=0.5)
    assert report.units == 1 and report.status == JobStatus.QUEUED
    assert Action.objects.filter(status=ActionStatus.SUCCEEDED).count() == 2


def test_the_task_budget_counts_time_on_the_clock_it_is_given(world, approver, settings):
    """A benchmark that simulates the limiter's waits passes a clock that counts them: the
    task stops after a unit that took 200 simulated seconds of a 300 s budget, instead of
    running every unit in one task because no real time passed."""
    settings.ENGINE_UNIT_SIZE = {"default": 2, "google_ads": 2, "meta": 2}
    for i in range(1, 7):
        approved(world.entity(f"sandbox-cmp-{i}"), approver, new_budget="150.00")
    [job_id] = actions_dispatch()
    simulated = [0.0]

    def waiting_throttle(_operations: int) -> None:
        simulated[0] += 200 / 3  # three requests a unit: 200 simulated seconds

    report = job_process(
        job_id=job_id,
        policy=FAST,
        throttle=waiting_throttle,
        budget_seconds=300,
        clock=lambda: time.monotonic() + simulated[0],
    )
    assert report.units == 1 and report.status == JobStatus.QUEUED


def test_the_shared_limiters_waits_keep_the_lease_alive(world, approver, settings):
    """The limiter's pacing sleeps through the lease keeper (it shows progress, so the
    lease is renewed while the worker waits its turn, and a lost lease stops the wait)."""
    # One token every 2.5 s: each wait outlasts the 2 s lease, so only renewal keeps it.
    settings.PLATFORM_RATE_LIMITS = {"sandbox": {"capacity": 1, "refill_per_second": 0.4}}
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    [job_id] = actions_dispatch()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    report = job_process(job_id=job_id, policy=FAST, sleep=sleep)  # the connection's real limiter
    action.refresh_from_db()
    assert report.succeeded == 1 and action.status == ActionStatus.SUCCEEDED
    # read, write, read back: two waits of up to 2.5 s each, slept in slices by the keeper
    assert sum(slept) > TTL and action.lease_owner == ""  # it waited longer than the lease lives


def test_a_connection_with_more_due_actions_than_the_job_cap_gets_several_jobs(world, approver, settings):
    settings.ENGINE_JOB_MAX_ACTIONS = 2
    actions = [approved(world.entity(f"sandbox-cmp-{i}"), approver, new_budget="150.00") for i in range(1, 6)]
    [first] = actions_dispatch()
    assert Action.objects.filter(job_id=first).count() == 2
    assert Action.objects.filter(status=ActionStatus.APPROVED).count() == 3  # waiting for the next job
    for _ in range(5):
        run_worker()
    jobs = list(ActionJob.objects.filter(connection=world.connection).values_list("total", "status"))
    assert len(jobs) == 3 and all(total <= 2 and status == JobStatus.SUCCEEDED for total, status in jobs)
    assert all(a.status == ActionStatus.SUCCEEDED for a in Action.objects.filter(pk__in=[a.pk for a in actions]))


# 7. No platform call inside a transaction, even from retry-failed with an idempotency key ------


def api_client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_retry_failed_reads_the_platform_outside_any_transaction(world, approver, monkeypatch):
    scenario = Scenario.objects.create(tenant=world.connection.tenant, name="Shift")
    for ext in ("sandbox-cmp-1", "sandbox-cmp-2"):
        ScenarioItem.objects.create(scenario=scenario, entity=world.entity(ext), daily_budget=Decimal("120.00"))
    preflight_for_scenario(scenario=scenario, actor=approver)
    world.fault("partial_failure", entity_ids=["sandbox-cmp-2"])
    deployment_create(scenario=scenario, actor=approver, mode="live", idempotency_key="first")
    run_worker()
    reads_in_transaction = []
    original = SandboxExecutor.read_state

    def read_state(self, refs):
        reads_in_transaction.append(in_transaction())
        return original(self, refs)

    monkeypatch.setattr(SandboxExecutor, "read_state", read_state)
    deployment = scenario.deployments.get()
    response = api_client_for(approver).post(
        f"/api/deployments/{deployment.pk}/retry-failed", HTTP_IDEMPOTENCY_KEY="retry-1"
    )
    assert response.status_code == 202, response.content
    assert reads_in_transaction and not any(reads_in_transaction)
    again = api_client_for(approver).post(
        f"/api/deployments/{deployment.pk}/retry-failed", HTTP_IDEMPOTENCY_KEY="retry-1"
    )
    assert again.status_code == 202 and again.json()["id"] == response.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    outbox_drain()


# 5b. A long block in the shared limiter parks the work instead of holding a worker ------------


def test_a_drained_shared_rate_limit_parks_the_job_instead_of_sleeping(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    rate_limit_backoff(connection=world.connection, seconds=600)  # another worker met a 10-minute block
    [job_id] = actions_dispatch()
    slept: list[float] = []
    started = time.monotonic()
    report = job_process(job_id=job_id, policy=FAST, sleep=slept.append)  # the connection's real limiter
    assert time.monotonic() - started < 30 and not any(s >= 30 for s in slept)
    action.refresh_from_db()
    assert report.parked == 1 and action.status == ActionStatus.APPROVED
    # the block's end, rounded up to the second the limiter reports
    assert timedelta(minutes=9) < action.next_attempt_at - timezone.now() <= timedelta(minutes=10, seconds=1)
    assert world.applied_count("sandbox-cmp-1") == 0


def test_a_google_ads_job_holds_one_mutate_requests_worth(settings):
    """Google takes 10,000 operations a request: smaller jobs there would only add round trips."""
    from actions.services.dispatch import job_cap

    settings.ENGINE_JOB_MAX_ACTIONS = 1000
    assert job_cap("google_ads") == 10_000 and job_cap("meta") == 10_000 and job_cap("sandbox") == 1000
    assert settings.ENGINE_UNIT_SIZE["google_ads"] == 10_000


def test_a_meta_unit_is_what_its_rate_limit_sends_within_the_task_budget(settings):
    """Meta counts points per operation: a unit holds what the limit lets one worker send in
    60 % of the task budget, so it fits its task; lifting the limit leaves only the cap."""
    from actions.services.engine import unit_size
    from platforms.meta import MetaExecutor

    settings.ENGINE_TASK_BUDGET_SECONDS = 300
    settings.PLATFORM_RATE_LIMITS = {}
    per_change = MetaExecutor.tokens_per_change
    assert per_change == 5  # a read before, a write of 3 points, a read back
    assert unit_size("meta", tokens_per_change=per_change) == (900 + 27 * 180) // 5  # 1,152
    settings.PLATFORM_RATE_LIMITS = {"meta": {"capacity": 6, "refill_per_second": 0.18}}  # development tier
    assert unit_size("meta", tokens_per_change=per_change) == 7
    settings.PLATFORM_RATE_LIMITS = {"meta": {"capacity": 1e9, "refill_per_second": 1e9}}
    assert unit_size("meta", tokens_per_change=per_change) == settings.ENGINE_UNIT_SIZE["meta"] == 10_000
    assert unit_size("google_ads") == 10_000  # Google counts requests, not operations


# The keeper's renewal never waits on rows its worker has locked (no deadlock) -------------


@pytest.mark.postgres
def test_renewing_a_lease_skips_rows_the_worker_is_writing_instead_of_deadlocking(world, approver):
    """The keeper thread renews while its worker settles the same rows in one transaction;
    two UPDATEs of many rows in different orders deadlocked on PostgreSQL (seen in
    bench/execute_actions.py with a 10,000-action Google unit)."""
    from django.db import connections, transaction

    from actions.services.leases import Lease, lease_renew, lease_ttl, new_token

    if connections["default"].vendor != "postgresql":
        pytest.skip("needs PostgreSQL: row locks")
    first = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    second = approved(world.entity("sandbox-cmp-2"), approver, new_budget="150.00")
    lease = Lease(token=new_token("worker"), ttl=lease_ttl(), expires_at=timezone.now() + lease_ttl())
    Action.objects.filter(pk__in=[first.pk, second.pk]).update(
        status=ActionStatus.EXECUTING, lease_owner=lease.token, lease_expires_at=lease.expires_at
    )
    locked, release = threading.Event(), threading.Event()

    def worker_settling() -> None:  # holds a row lock like a settlement transaction does
        with transaction.atomic():
            Action.objects.select_for_update().filter(pk=first.pk).get()
            locked.set()
            release.wait(10)
        connections.close_all()

    thread = threading.Thread(target=worker_settling)
    thread.start()
    assert locked.wait(10)
    before = Action.objects.get(pk=second.pk).lease_expires_at
    started = time.monotonic()
    assert lease_renew(lease) is True
    elapsed = time.monotonic() - started
    release.set()
    thread.join(10)
    assert elapsed < 2  # it did not wait for the worker's transaction
    assert Action.objects.get(pk=second.pk).lease_expires_at > before  # the free row was renewed


# The fence and its request_sent rows are one decision ---------------------------------------


def _held(world, approver, *names):
    from actions.services.leases import Lease, lease_ttl, new_token

    actions = [approved(world.entity(name), approver, new_budget="150.00") for name in names]
    lease = Lease(token=new_token("worker"), ttl=lease_ttl(), expires_at=timezone.now() + lease_ttl())
    Action.objects.filter(pk__in=[a.pk for a in actions]).update(
        status=ActionStatus.EXECUTING, lease_owner=lease.token, lease_expires_at=lease.expires_at
    )
    return lease, [Action.objects.get(pk=a.pk) for a in actions]


def _sent_rows(actions):
    return [
        {
            "action": a,
            "event": LogEvent.REQUEST_SENT,
            "actor": "worker:test",
            "request": [{"field": "daily_budget", "value": "150.00"}],
            "message": "Sending 1 change (try 1).",
        }
        for a in actions
    ]


def test_a_held_fence_writes_its_request_sent_rows_as_given(world, approver):
    from django.db import transaction

    from actions.services.leases import fence_request

    lease, actions = _held(world, approver, "sandbox-cmp-1", "sandbox-cmp-2")
    before = {a.pk: a.lease_expires_at for a in actions}
    with transaction.atomic():
        fence_request(lease, [a.pk for a in actions], logs=_sent_rows(actions))
    rows = ActionExecutionLog.objects.filter(event=LogEvent.REQUEST_SENT).order_by("action_id")
    assert [(r.action_id, r.tenant_id, r.actor, r.message) for r in rows] == [
        (a.pk, a.tenant_id, "worker:test", "Sending 1 change (try 1).") for a in actions
    ]
    assert all(r.request == [{"field": "daily_budget", "value": "150.00"}] for r in rows)
    # SQL NULL, not JSON null
    assert all(r.response is None and r.error is None and r.created_at is not None for r in rows)
    assert ActionExecutionLog.objects.filter(event=LogEvent.REQUEST_SENT, response__isnull=True).count() == 2
    renewed = {a.pk: a.lease_expires_at for a in Action.objects.filter(pk__in=before)}
    assert all(renewed[pk] >= before[pk] for pk in before)  # the fence is a renewal too


def test_a_held_fence_writes_the_before_states_it_is_given_with_its_renewal(world, approver):
    from django.db import transaction

    from actions.services.leases import fence_request

    lease, actions = _held(world, approver, "sandbox-cmp-1", "sandbox-cmp-2")
    first, second = actions
    Action.objects.filter(pk=second.pk).update(before_state={"daily_budget": "80.00"})
    with transaction.atomic():
        fence_request(lease, [first.pk, second.pk], before_states={first.pk: {"daily_budget": "100.00"}})
    states = dict(Action.objects.filter(pk__in=[first.pk, second.pk]).values_list("pk", "before_state"))
    assert states == {first.pk: {"daily_budget": "100.00"}, second.pk: {"daily_budget": "80.00"}}


def test_a_fence_refuses_before_states_of_actions_its_request_does_not_carry(world, approver):
    from django.db import transaction

    from actions.services.leases import fence_request

    lease, (carried, other) = _held(world, approver, "sandbox-cmp-1", "sandbox-cmp-2")
    with pytest.raises(ValueError, match="only name actions of the request"), transaction.atomic():
        fence_request(lease, [carried.pk], before_states={other.pk: {"daily_budget": "100.00"}})
    assert Action.objects.get(pk=other.pk).before_state is None


def test_a_lost_fence_leaves_no_before_state_behind(world, approver):
    from django.db import transaction

    from actions.services.leases import LeaseLost, fence_request

    lease, actions = _held(world, approver, "sandbox-cmp-1", "sandbox-cmp-2")
    Action.objects.filter(pk=actions[1].pk).update(lease_owner="reconciler:other:1:abc")
    with pytest.raises(LeaseLost), transaction.atomic():
        fence_request(
            lease,
            [a.pk for a in actions],
            logs=_sent_rows(actions),
            before_states={a.pk: {"daily_budget": "100.00"} for a in actions},
        )
    assert list(Action.objects.filter(pk__in=[a.pk for a in actions]).values_list("before_state", flat=True)) == [
        None,
        None,
    ]


def test_a_fence_with_one_action_taken_over_writes_nothing_and_renews_nothing(world, approver):
    """Checked and written as one decision: no ``request_sent`` row for any action of a
    request that will not go out, and the rows still held are not renewed by it."""
    from django.db import transaction

    from actions.services.leases import LeaseLost, fence_request

    lease, actions = _held(world, approver, "sandbox-cmp-1", "sandbox-cmp-2")
    Action.objects.filter(pk=actions[1].pk).update(lease_owner="reconciler:other:1:abc")
    still_held = Action.objects.get(pk=actions[0].pk).lease_expires_at
    with pytest.raises(LeaseLost), transaction.atomic():
        fence_request(lease, [a.pk for a in actions], logs=_sent_rows(actions))
    assert lease.lost.is_set()
    assert not ActionExecutionLog.objects.filter(event=LogEvent.REQUEST_SENT).exists()
    assert Action.objects.get(pk=actions[0].pk).lease_expires_at == still_held
