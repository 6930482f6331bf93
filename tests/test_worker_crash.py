"""A worker SIGKILLed mid-job, then the reconciler: every action settles to platform truth.

The worker is a real ``manage.py action_worker process`` subprocess talking to the test
database; the sandbox's latency holds it inside a platform call long enough to kill it
at the chosen point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection

from actions.models import Action, ActionExecutionLog, ActionStatus, LogEvent
from actions.services.reconcile import actions_reconcile
from platforms.sandbox.models import SandboxAccount, SandboxEntity
from tests.engine_helpers import approved, run_worker, sandbox_world

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
CAMPAIGNS = ["sandbox-cmp-1", "sandbox-cmp-2", "sandbox-cmp-3"]


def database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    return (
        f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{settings['NAME']}"
    )


LEASE_TTL = 3  # seconds: short, so the tests wait for an expiry instead of 30 s
REQUEST_TIMEOUT = 2  # seconds; the sandbox's 1.5 s latency stays within it


def start_worker(*, request_timeout: float = REQUEST_TIMEOUT) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "LOG_LEVEL": "WARNING",
        "LEASE_TTL_SECONDS": str(LEASE_TTL),
        "PLATFORM_REQUEST_TIMEOUT_SECONDS": str(request_timeout),
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "action_worker", "process"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill_when(worker: subprocess.Popen, condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            return
        if worker.poll() is not None:
            pytest.fail(f"the worker ended before the kill point: {worker.stdout.read().decode()[-2000:]}")
        time.sleep(0.02)
    worker.kill()
    pytest.fail("kill point never reached")


def executing() -> bool:
    return Action.objects.filter(status=ActionStatus.EXECUTING).exists()


def request_sent() -> bool:
    return ActionExecutionLog.objects.filter(event=LogEvent.REQUEST_SENT).exists()


def platform_changed() -> bool:
    return SandboxEntity.objects.filter(external_id__in=CAMPAIGNS, daily_budget=Decimal("150.00")).exists()


@pytest.fixture
def world(tenant, settings):
    settings.LEASE_TTL_SECONDS = LEASE_TTL
    settings.PLATFORM_REQUEST_TIMEOUT_SECONDS = REQUEST_TIMEOUT
    return sandbox_world(tenant, campaigns=3, ad_sets_per_campaign=0)


def wait_for_lease_expiry() -> None:
    """Until the dead worker's lease ran out and any request it sent has timed out."""
    time.sleep(max(LEASE_TTL, REQUEST_TIMEOUT + 1) + 0.5)


@pytest.mark.parametrize(
    "kill_point",
    [
        # killed while reading the before-state: nothing sent -> released, run again, applied once
        executing,
        # killed while the apply request is in flight (before the platform applied it): sent but
        # not on the platform -> one more attempt, which reads first and applies once
        request_sent,
        # killed after the platform applied, while reading back: the platform shows it -> succeeded
        platform_changed,
    ],
    ids=["before-capture", "request-in-flight", "during-read-back"],
)
def test_killed_worker_is_reconciled_to_platform_truth_and_nothing_applies_twice(world, approver, kill_point):
    actions = [approved(world.entity(ext), approver, new_budget="150.00") for ext in CAMPAIGNS]
    SandboxAccount.objects.filter(pk=world.account.pk).update(latency_ms=1500)
    kill_when(start_worker(), kill_point)
    SandboxAccount.objects.filter(pk=world.account.pk).update(latency_ms=0)

    assert Action.objects.filter(status=ActionStatus.EXECUTING).count() == 3
    assert actions_reconcile().taken == 0  # the dead worker's lease has not run out yet
    wait_for_lease_expiry()
    report = actions_reconcile()
    assert report.taken == 3
    run_worker()  # re-runs what the reconciler released

    for action in actions:
        action.refresh_from_db()
        assert action.status == ActionStatus.SUCCEEDED, (action.status, action.error_message)
        assert world.platform(action.entity.external_id).daily_budget == Decimal("150.00")
        assert world.applied_count(action.entity.external_id) == 1
        assert action.rollback_params == {"changes": [{"field": "daily_budget", "value": "100.00"}]}
    assert not Action.objects.filter(status__in=[ActionStatus.EXECUTING, ActionStatus.QUEUED]).exists()


def test_reconciler_leaves_a_live_worker_alone(world, approver):
    approved(world.entity("sandbox-cmp-1"), approver)
    # The platform takes three lease lifetimes to answer; the worker's lease is renewed meanwhile.
    SandboxAccount.objects.filter(pk=world.account.pk).update(latency_ms=3 * LEASE_TTL * 1000)
    worker = start_worker(request_timeout=6 * LEASE_TTL)
    deadline = time.monotonic() + 30
    while not request_sent() and time.monotonic() < deadline:
        time.sleep(0.02)
    for _ in range(3):
        wait_for_lease_expiry()
        assert actions_reconcile().taken == 0
    worker.wait(timeout=60)
    assert Action.objects.get().status == ActionStatus.SUCCEEDED
    assert world.applied_count("sandbox-cmp-1") == 1
