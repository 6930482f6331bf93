"""The execution engine against the sandbox platform: exactly once, verified, explained."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from actions.models import Action, ActionExecutionLog, ActionJob, ActionStatus, JobStatus, LogEvent
from actions.services.dispatch import actions_dispatch
from platforms.models import RateLimitBucket
from platforms.sandbox.models import SandboxEntity
from tests.engine_helpers import approved, run_worker, sandbox_world

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant)


def test_approved_budget_change_is_executed_once_and_verified_by_read_back(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    [report] = run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")
    assert action.before_state["daily_budget"] == "100.00"
    assert action.after_state["daily_budget"] == "150.00"
    assert action.rollback_params == {"changes": [{"field": "daily_budget", "value": "100.00"}]}
    assert action.rollback_deadline is not None
    assert world.applied_count("sandbox-cmp-1") == 1
    assert report.status == JobStatus.SUCCEEDED
    events = list(action.logs.values_list("event", flat=True))
    assert events == ["approved", "state_captured", "request_sent", "response_received", "succeeded"]
    history = list(action.history.order_by("history_id").values_list("status", "history_change_reason"))
    assert [status for status, _ in history] == ["pending_approval", "approved", "queued", "executing", "succeeded"]
    assert history[-1][1].endswith(": succeed") and history[-1][1].startswith("worker:")


def test_a_job_batches_every_action_of_a_connection_into_few_requests(world, approver):
    actions = [
        approved(world.entity(f"sandbox-adset-{c}-{i}"), approver, "adjust_bid", new_bid="2.10")
        for c in (1, 2)
        for i in (1, 2)
    ]
    [report] = run_worker()
    assert report.succeeded == 4
    assert report.round_trips == 3  # read before, one apply, read back
    assert {a.pk for a in actions} == set(
        Action.objects.filter(status=ActionStatus.SUCCEEDED).values_list("pk", flat=True)
    )


def test_partial_failure_in_a_multi_action_job_settles_each_action(world, approver):
    good = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    bad = approved(world.entity("sandbox-cmp-2"), approver, new_budget="160.00")
    world.fault("partial_failure", entity_ids=["sandbox-cmp-2"])
    [report] = run_worker()
    good.refresh_from_db(), bad.refresh_from_db()
    assert good.status == ActionStatus.SUCCEEDED
    assert bad.status == ActionStatus.FAILED
    assert bad.error_code == "invalid_value" and bad.error_retryable is False and bad.error_hint
    assert world.platform("sandbox-cmp-2").daily_budget == Decimal("100.00")
    assert report.status == JobStatus.PARTIALLY_SUCCEEDED


def test_rate_limit_is_retried_after_the_platforms_retry_after(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    world.fault("rate_limit", remaining=2, retry_after=3)
    sleeps: list[float] = []
    run_worker(sleeps=sleeps)
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    assert len(sleeps) == 2 and all(s >= 3 for s in sleeps)
    assert world.applied_count("sandbox-cmp-1") == 1
    # Every other worker on the connection was told to hold back too (shared bucket below zero).
    assert RateLimitBucket.objects.get(connection=world.connection).tokens < 0


def test_a_rate_limit_longer_than_a_worker_should_wait_parks_the_action_until_it_lifts(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    world.fault("rate_limit", remaining=None, retry_after=600, scope="write")
    sleeps: list[float] = []
    [report] = run_worker(sleeps=sleeps)
    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED and action.job is None
    assert timedelta(seconds=590) < action.next_attempt_at - timezone.now() <= timedelta(seconds=600)
    assert "Nothing was applied; BudgetRadar tries again at" in action.wait_reason
    assert not any(s >= 600 for s in sleeps)  # the worker did not hold on for ten minutes
    assert report.parked == 1 and ActionJob.objects.get(pk=report.job_id).parked == 1
    assert list(action.logs.values_list("event", flat=True))[-1] == "parked"
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")
    assert actions_dispatch() == []  # not due yet: the dispatcher leaves it alone


def test_server_errors_are_retried_then_fail_as_transient(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    world.fault("server_error", remaining=None)
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    assert action.error_code == "transient" and "gave up after 4 attempts" in action.error_message
    assert world.applied_count("sandbox-cmp-1") == 0


def test_timeout_before_apply_is_read_then_retried_once_and_applied_once(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    world.fault("timeout_before_apply")
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    assert world.applied_count("sandbox-cmp-1") == 1
    assert world.apply_requests() == 2


def test_timeout_after_apply_is_reconciled_by_reading_and_never_sent_again(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    world.fault("timeout_after_apply")
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    assert world.apply_requests() == 1
    assert world.applied_count("sandbox-cmp-1") == 1


def test_expired_token_fails_at_once_with_a_reconnect_hint(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    world.fault("auth_expired", scope="any")
    sleeps: list[float] = []
    run_worker(sleeps=sleeps)
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    assert action.error_code == "auth_expired" and action.error_retryable is False
    assert "Reconnect" in action.error_hint
    assert sleeps == []


def test_entity_deleted_on_the_platform_fails_as_not_found(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    SandboxEntity.objects.filter(external_id="sandbox-cmp-1").update(status="removed")
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    assert action.error_code == "not_found"
    assert "Campaign 1 (sandbox-cmp-1) no longer exists" in action.error_message
    assert world.apply_requests() == 0


def test_a_silent_noop_is_caught_by_read_back(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    world.fault("silent_noop", entity_ids=["sandbox-cmp-1"])
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    assert "reading it back shows daily_budget = 100.00 instead of 150.00" in action.error_message


def test_a_change_made_on_the_platform_after_approval_is_stale_and_not_applied(world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver)
    SandboxEntity.objects.filter(external_id="sandbox-cmp-1").update(daily_budget=Decimal("90.00"))
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    assert action.error_code == "stale"
    assert "daily_budget was 100.00 at approval, is 90.00 now" in action.error_message
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("90.00")
    assert ActionExecutionLog.objects.filter(action=action, event=LogEvent.STALE).exists()
    # Nothing was sent, yet the live state it was judged on is kept with its settlement.
    assert action.before_state["daily_budget"] == "90.00"


def test_an_actions_before_state_is_on_its_row_when_its_request_reaches_the_platform(world, approver, monkeypatch):
    """The before-state travels with the request's fence, not in a statement of its own:
    whatever happens after the request leaves, the row already says what to restore."""
    from platforms.sandbox.executor import SandboxExecutor

    actions = [
        approved(world.entity(name), approver, new_budget="150.00") for name in ("sandbox-cmp-1", "sandbox-cmp-2")
    ]
    seen = []
    write = SandboxExecutor._write

    def spy(self, call, batch):
        ids = [int(change.key) for change in batch]
        seen.append(
            {
                pk: (state or {}).get("daily_budget")
                for pk, state in Action.objects.filter(pk__in=ids).values_list("pk", "before_state")
            }
            | {
                "logged": sorted(
                    ActionExecutionLog.objects.filter(action_id__in=ids, event=LogEvent.STATE_CAPTURED).values_list(
                        "action_id", flat=True
                    )
                )
            }
        )
        return write(self, call, batch)

    monkeypatch.setattr(SandboxExecutor, "_write", spy)
    run_worker()
    ids = sorted(a.pk for a in actions)
    assert seen == [{ids[0]: "100.00", ids[1]: "100.00", "logged": ids}]
    assert set(Action.objects.filter(pk__in=ids).values_list("status", flat=True)) == {ActionStatus.SUCCEEDED}


def test_a_multi_field_action_applies_all_or_reports_partial_execution(world, approver):
    entity = world.entity("sandbox-adset-1-1")
    action = approved(entity, approver, "update_targeting", targeting={"countries": ["DE", "AT"]})
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    assert world.platform("sandbox-adset-1-1").targeting == {"countries": ["DE", "AT"]}


def test_running_the_worker_twice_executes_nothing_twice(world, approver):
    approved(world.entity("sandbox-cmp-1"), approver)
    run_worker()
    assert run_worker() == []
    assert world.applied_count("sandbox-cmp-1") == 1
    assert ActionJob.objects.count() == 1
