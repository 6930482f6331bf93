"""A write reaches the platform within its deadline, counted from before ``request_sent``.

The reconciler reads the platform ``request_timeout`` (+1 s) after an action's
``request_sent`` and settles from what it sees; a change landing later would be applied
again by the next attempt (seen in bench/chaos.py: a worker paused right after
committing ``request_sent`` sent its request after the reconciler had released the
action, and a second worker had applied it too). So every executor starts a write's
deadline before the fence commits ``request_sent`` and does not send once it has passed,
and the sandbox does not commit a write after the deadline even when the worker it runs
in is paused between its last check and its COMMIT.
"""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal

import pytest

from platforms.google_ads import GoogleAdsExecutor
from platforms.meta import MetaExecutor
from platforms.sandbox.executor import SandboxExecutor
from platforms.sandbox.models import SandboxEntity, SandboxRequest
from platforms.types import Change, ConnectionConfig, EntityRef, EntityType, ErrorCode, Field, OutcomeStatus
from tests.factories import SANDBOX_TOKEN, SandboxAccountFactory, SandboxCampaignFactory
from tests.google_fake_fixtures import GOOGLE_CUSTOMER_ID, google_ads_connection
from tests.meta_fake_fixtures import META_ACCOUNT

TIMEOUT = 0.3


def paused_fence(changes) -> None:
    """A fence (``before_write``) whose worker is paused past the whole deadline after it
    committed ``request_sent``."""
    time.sleep(TIMEOUT + 0.2)


def budget(entity_type: EntityType, external_id: str, amount: str) -> Change:
    return Change(EntityRef(entity_type, external_id), Field.DAILY_BUDGET, Decimal(amount), key="k")


def assert_not_sent(outcome) -> None:
    assert outcome.status == OutcomeStatus.FAILED  # provably not sent: not ambiguous
    assert outcome.error.code == ErrorCode.TRANSIENT
    assert "deadline passed before it could leave" in outcome.error.message


# The sandbox -----------------------------------------------------------------------------


@pytest.fixture
def sandbox(db):
    account = SandboxAccountFactory(account_id="sbx-deadline", currency="EUR")
    campaign = SandboxCampaignFactory(account=account, external_id="sandbox-cmp-1", daily_budget=Decimal("400.00"))
    config = ConnectionConfig(
        connection_id=1,
        platform="sandbox",
        account_id=account.account_id,
        currency="EUR",
        credentials={"access_token": SANDBOX_TOKEN},
        request_timeout=TIMEOUT,
    )
    return SandboxExecutor(config, sleep=lambda s: None), campaign


def test_a_sandbox_write_fenced_past_its_deadline_is_not_sent(sandbox):
    executor, campaign = sandbox
    executor.before_write = paused_fence
    [outcome] = executor.apply([budget(EntityType.CAMPAIGN, campaign.external_id, "450.00")])
    assert_not_sent(outcome)
    assert SandboxEntity.objects.get(pk=campaign.pk).daily_budget == Decimal("400.00")
    assert not SandboxRequest.objects.filter(method=SandboxRequest.Method.APPLY).exists()  # it never arrived


def test_a_sandbox_write_fenced_within_its_deadline_goes_through(sandbox):
    executor, campaign = sandbox
    executor.before_write = lambda changes: None
    [outcome] = executor.apply([budget(EntityType.CAMPAIGN, campaign.external_id, "450.00")])
    assert outcome.status == OutcomeStatus.APPLIED
    assert SandboxEntity.objects.get(pk=campaign.pk).daily_budget == Decimal("450.00")


@pytest.mark.postgres(reason="needs PostgreSQL: the server-side idle-in-transaction deadline")
@pytest.mark.django_db(transaction=True)
def test_a_sandbox_commit_held_up_past_the_deadline_is_never_made(sandbox, monkeypatch):
    """The worker passes the last deadline check and is paused before its COMMIT: the
    database ends the session at the deadline, so the change never lands."""
    executor, campaign = sandbox
    executor.config = replace(executor.config, request_timeout=1.0)  # room for a noisy machine
    checked = SandboxExecutor._within_deadline

    def check_then_pause(self, call, *, outermost):
        checked(self, call, outermost=outermost)
        time.sleep(1.5)

    monkeypatch.setattr(SandboxExecutor, "_within_deadline", check_then_pause)
    [outcome] = executor.apply([budget(EntityType.CAMPAIGN, campaign.external_id, "450.00")])
    assert outcome.status == OutcomeStatus.UNKNOWN  # the client saw a timeout
    assert SandboxEntity.objects.get(pk=campaign.pk).daily_budget == Decimal("400.00")
    [request] = SandboxRequest.objects.filter(method=SandboxRequest.Method.APPLY)
    assert request.applied_count == 0 and "the session was ended, nothing applied" in request.outcome
    monkeypatch.undo()
    [again] = executor.apply([budget(EntityType.CAMPAIGN, campaign.external_id, "450.00")])  # the session is back
    assert again.status == OutcomeStatus.APPLIED, again.error


# The real SDKs against the local fakes ---------------------------------------------------


def test_a_google_mutate_fenced_past_its_deadline_is_not_sent(google_ads_fake):
    google_ads_fake.add_campaign(GOOGLE_CUSTOMER_ID, 111, "Brand", budget_micros=12_340_000)
    executor = GoogleAdsExecutor(google_ads_connection(google_ads_fake, request_timeout=TIMEOUT))
    executor.before_write = paused_fence
    budget_id = google_ads_fake.campaign(GOOGLE_CUSTOMER_ID, 111).budget_id
    change = Change(
        EntityRef(EntityType.CAMPAIGN, "111", budget_id=str(budget_id)), Field.DAILY_BUDGET, Decimal("20.00"), key="k"
    )
    try:
        [outcome] = executor.apply([change])
    finally:
        executor.close()
    assert_not_sent(outcome)
    assert google_ads_fake.mutate_requests() == []
    assert google_ads_fake.budget(GOOGLE_CUSTOMER_ID, budget_id).amount_micros == 12_340_000


def test_a_meta_write_fenced_past_its_deadline_is_not_sent(meta_fake, meta_config):
    campaign_id = meta_fake.add_campaign(META_ACCOUNT, name="EU Search - Brand", daily_budget=46000)
    executor = MetaExecutor(replace(meta_config, request_timeout=TIMEOUT))
    executor.before_write = paused_fence
    [outcome] = executor.apply([budget(EntityType.CAMPAIGN, campaign_id, "470.00")])
    assert_not_sent(outcome)
    assert [r for r in meta_fake.requests if r.method == "POST"] == []
