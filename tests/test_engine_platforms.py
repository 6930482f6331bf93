"""The engine through the real Google Ads and Meta SDKs against their local fakes.

Each fault ends in the right state with the right code, and the fake's own request log
shows that nothing was applied twice.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from actions.models import Action, ActionExecutionLog, ActionJob, ActionStatus, LogEvent
from actions.services.dispatch import actions_dispatch
from actions.services.engine import job_process
from actions.services.reconcile import actions_reconcile
from bench.execute_actions import approve_all
from platforms.base import no_throttle
from platforms.fakes.faults import FaultKind
from platforms.meta import MetaExecutor
from platforms.models import Platform, RateLimitBucket
from platforms.registry import get_executor
from platforms.retry import RetryPolicy
from platforms.sync import sync_connection
from tests.engine_helpers import approved, run_worker
from tests.factories import ConnectionFactory
from tests.google_fake_fixtures import GOOGLE_CUSTOMER_ID, google_test_credentials
from tests.meta_fake_fixtures import META_ACCOUNT, META_HANG, META_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)
PATIENT = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=3600)  # sleeps are not real here


@dataclass
class Platformed:
    """A tenant's connection to one fake, mirrored, with a way to read the fake's truth."""

    fake: object
    connection: object
    platform: str

    def entity(self, external_id: str):
        return self.connection.entities.select_related("connection", "parent").get(external_id=external_id)

    def budget(self, external_id: str) -> Decimal:
        if self.platform == Platform.GOOGLE_ADS:
            return Decimal(self.fake.budget_of(GOOGLE_CUSTOMER_ID, external_id).amount_micros) / 1_000_000
        return Decimal(self.fake.node(external_id)["daily_budget"]) / 100

    def writes(self) -> list:
        if self.platform == Platform.GOOGLE_ADS:
            return self.fake.mutate_requests()
        return [r for r in self.fake.batches() if r.is_write]

    def delete(self, external_id: str) -> None:
        if self.platform == Platform.GOOGLE_ADS:
            self.fake.campaign(GOOGLE_CUSTOMER_ID, external_id).status = "REMOVED"
        else:
            self.fake.remove(external_id)


@pytest.fixture(params=[Platform.GOOGLE_ADS, Platform.META])
def platformed(request, tenant, settings):
    settings.PLATFORM_REQUEST_TIMEOUT_SECONDS = 0.5
    if request.param == Platform.GOOGLE_ADS:
        fake = request.getfixturevalue("google_ads_fake")
        fake.faults.hang_seconds = 0.8
        for cid in ("101", "102"):
            fake.add_campaign(GOOGLE_CUSTOMER_ID, cid, f"Search {cid}", budget_micros=100_000_000)
        connection = ConnectionFactory(
            tenant=tenant,
            platform=Platform.GOOGLE_ADS,
            account_id=GOOGLE_CUSTOMER_ID,
            credentials=google_test_credentials(fake),
            api_base_url=fake.endpoint,
        )
    else:
        fake = request.getfixturevalue("meta_fake")
        fake.faults.hang_seconds = META_HANG
        for cid in ("101", "102"):
            fake.add_campaign(META_ACCOUNT, campaign_id=cid, name=f"Prospecting {cid}", daily_budget=10_000)
        connection = meta_connection(tenant, fake)
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    return Platformed(fake=fake, connection=connection, platform=request.param)


def meta_connection(tenant, fake):
    return ConnectionFactory(
        tenant=tenant,
        platform=Platform.META,
        account_id=META_ACCOUNT,
        credentials={"access_token": META_TOKEN},
        api_base_url=fake.base_url,
    )


def execute(platformed, approver, external_id="101", budget="150.00") -> Action:
    action = approved(platformed.entity(external_id), approver, new_budget=budget)
    run_worker(policy=PATIENT)
    action.refresh_from_db()
    return action


def test_budget_change_is_applied_once_and_verified(platformed, approver):
    action = execute(platformed, approver)
    assert action.status == ActionStatus.SUCCEEDED, action.error_message
    assert platformed.budget("101") == Decimal("150.00")
    assert len(platformed.writes()) == 1
    assert action.after_state["daily_budget"] == "150.00"


def test_rate_limit_is_retried_and_applied_once(platformed, approver):
    platformed.fake.faults.add(FaultKind.RATE_LIMIT, retry_after=2)
    action = execute(platformed, approver)
    if platformed.platform == Platform.META:
        # Meta states its wait in whole minutes (estimated_time_to_regain_access): longer than a
        # worker holds on, so the action is parked with its next attempt, and runs then.
        assert action.status == ActionStatus.APPROVED and "tries again at" in action.wait_reason
        assert action.next_attempt_at > timezone.now() + timedelta(seconds=50)
        Action.objects.filter(pk=action.pk).update(next_attempt_at=timezone.now())
        RateLimitBucket.objects.all().delete()
        run_worker(policy=PATIENT)
        action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    assert platformed.budget("101") == Decimal("150.00")
    assert len(platformed.writes()) == 2  # the refused one and the retry


def test_persistent_server_errors_fail_as_transient_without_applying(platformed, approver):
    platformed.fake.faults.add(FaultKind.SERVER_ERROR, remaining=None)
    action = execute(platformed, approver)
    assert action.status == ActionStatus.FAILED
    assert action.error_code == "transient" and action.error_retryable
    assert platformed.budget("101") == Decimal("100.00")


def test_timeout_after_apply_is_reconciled_without_sending_again(platformed, approver):
    platformed.fake.faults.add(FaultKind.TIMEOUT_AFTER_APPLY)
    action = execute(platformed, approver)
    assert action.status == ActionStatus.SUCCEEDED
    assert len(platformed.writes()) == 1


def test_timeout_before_apply_is_read_then_sent_once_more(platformed, approver):
    platformed.fake.faults.add(FaultKind.TIMEOUT_BEFORE_APPLY)
    action = execute(platformed, approver)
    assert action.status == ActionStatus.SUCCEEDED
    assert platformed.budget("101") == Decimal("150.00")
    assert len(platformed.writes()) == 2


def test_expired_token_fails_at_once_with_its_hint(platformed, approver):
    action = approved(platformed.entity("101"), approver, new_budget="150.00")  # the gate reads before the fault
    platformed.fake.faults.add(FaultKind.AUTH_EXPIRED, remaining=None, scope="any")
    run_worker(policy=PATIENT)
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    assert action.error_code == "auth_expired" and not action.error_retryable
    assert "Reconnect the account" in action.error_hint
    assert platformed.writes() == []


def test_entity_deleted_on_the_platform_fails_as_not_found(platformed, approver):
    action = approved(platformed.entity("101"), approver, new_budget="150.00")  # deleted after the approval
    platformed.delete("101")
    run_worker(policy=PATIENT)
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    assert action.error_code == "not_found"
    assert platformed.writes() == []


def test_partial_failure_settles_each_action_of_the_job(platformed, approver):
    first = approved(platformed.entity("101"), approver, new_budget="150.00")
    second = approved(platformed.entity("102"), approver, new_budget="160.00")
    platformed.fake.faults.add(FaultKind.PARTIAL_FAILURE, entity_ids=["102"])
    run_worker(policy=PATIENT)
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, second.status) == (ActionStatus.SUCCEEDED, ActionStatus.FAILED)
    assert second.error_code == "invalid_value"
    assert platformed.budget("102") == Decimal("100.00")


# Meta's write waves: one fence and request_sent per wave -------------------------------------


class WorkerDied(BaseException):
    """Stands for a SIGKILL: nothing after it runs, nothing is cleaned up."""


def test_a_meta_worker_dying_between_waves_leaves_only_the_logged_wave_in_doubt(
    tenant, approver, meta_fake, monkeypatch, settings
):
    settings.PLATFORM_REQUEST_TIMEOUT_SECONDS = 0.5
    for i in range(250):  # 250 writes: two waves of 125 (three batches sent at once each)
        meta_fake.add_campaign(META_ACCOUNT, campaign_id=f"{5000 + i}", daily_budget=10_000)
    connection = meta_connection(tenant, meta_fake)
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    entities = list(connection.entities.select_related("connection", "parent").order_by("external_id"))
    actions = approve_all(connection, entities, approver)
    original, calls = MetaExecutor._write_wave, {"n": 0}

    def dying_wave(self, wave, validate_only, outcomes):
        calls["n"] += 1
        if calls["n"] == 2:
            self.begin_write([c for batch in wave for post in batch for c in post.changes])  # request_sent committed
            raise WorkerDied  # ... and the worker dies before the wave leaves
        return original(self, wave, validate_only, outcomes)

    monkeypatch.setattr(MetaExecutor, "_write_wave", dying_wave)
    [job_id] = actions_dispatch()
    with pytest.raises(WorkerDied):
        job_process(job_id=job_id, policy=PATIENT, throttle=no_throttle)

    sent = ActionExecutionLog.objects.filter(event=LogEvent.REQUEST_SENT)
    assert sent.count() == 250  # both waves were logged: the first left, the second never did
    assert len([b for b in meta_fake.batches() if b.is_write]) == 3
    monkeypatch.undo()
    expired = timezone.now() - timedelta(seconds=1)  # the dead worker's leases ran out
    Action.objects.filter(pk__in=[a.pk for a in actions]).update(lease_expires_at=expired)
    ActionJob.objects.filter(pk=job_id).update(lease_expires_at=expired)
    time.sleep(1.6)  # the reconciler reads only after a logged request's deadline (+1 s) has passed
    report = actions_reconcile()
    assert report.succeeded == 125  # the first wave's changes are on Meta
    assert report.released == 125  # logged but absent: runs again, no person needed
    run_worker(policy=PATIENT)
    assert set(Action.objects.filter(pk__in=[a.pk for a in actions]).values_list("status", flat=True)) == {
        ActionStatus.SUCCEEDED
    }
    written = Counter(i for b in meta_fake.batches() if b.is_write for i in b.item_ids)
    assert set(written.values()) == {1} and len(written) == 250  # each change sent exactly once
