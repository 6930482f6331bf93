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
from datetime import timedelta
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


def start_worker() -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url(), "LOG_LEVEL": "WARNING"}
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
def world(tenant):
    return sandbox_world(tenant, campaigns=3, ad_sets_per_campaign=0)


@pytest.mark.parametrize(
    ("kill_point", "expected"),
    [
        # killed while reading the before-state: nothing sent -> released, run again, applied once
        (executing, ActionStatus.SUCCEEDED),
        # killed while the apply request is in flight (before the platform applied it)
        (request_sent, ActionStatus.FAILED),
        # killed after the platform applied, while reading back: the platform shows it -> succeeded
        (platform_changed, ActionStatus.SUCCEEDED),
    ],
    ids=["before-capture", "request-in-flight", "during-read-back"],
)
def test_killed_worker_is_reconciled_to_platform_truth_and_nothing_applies_twice(world, approver, kill_point, expected):
    actions = [approved(world.entity(ext), approver, new_budget="150.00") for ext in CAMPAIGNS]
    SandboxAccount.objects.filter(pk=world.account.pk).update(latency_ms=1500)
    kill_when(start_worker(), kill_point)
    SandboxAccount.objects.filter(pk=world.account.pk).update(latency_ms=0)

    assert Action.objects.filter(status=ActionStatus.EXECUTING).count() == 3
    report = actions_reconcile(stale_after=timedelta(0))
    assert report.jobs == 1
    run_worker()  # re-runs what the reconciler released

    for action in actions:
        action.refresh_from_db()
        live = world.platform(action.entity.external_id).daily_budget
        assert action.status == expected, (action.status, action.error_message)
        assert (live == Decimal("150.00")) == (action.status == ActionStatus.SUCCEEDED)
        assert world.applied_count(action.entity.external_id) <= 1
        if expected == ActionStatus.FAILED:
            assert action.error_code == "unknown_outcome" and "Approve the action again" in action.error_hint
    assert not Action.objects.filter(status__in=[ActionStatus.EXECUTING, ActionStatus.QUEUED]).exists()


def test_reconciler_leaves_a_live_worker_alone(world, approver):
    approved(world.entity("sandbox-cmp-1"), approver)
    SandboxAccount.objects.filter(pk=world.account.pk).update(latency_ms=1500)
    worker = start_worker()
    deadline = time.monotonic() + 30
    while not executing() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert actions_reconcile().jobs == 0  # default: only jobs silent longer than the task timeout
    worker.wait(timeout=60)
    assert Action.objects.get().status == ActionStatus.SUCCEEDED
