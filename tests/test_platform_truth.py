"""Platform rules at the doors: import, recommendation, approval; change-rate limits; the
Google daily operations budget; what sync keeps about the account.

Each test stands for one finding of issue 9 and fails on the code before it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from actions.change_limits import budget_change_allowance, budget_change_times, next_budget_change_at
from actions.models import ActionStatus, ActionType
from actions.services.lifecycle import action_approve
from actions.services.recommendations import RecommendationInput, recommendations_create
from budgetradar.errors import ValidationFailed
from platforms.change_limits import budget_change_schedule, is_limited, next_budget_change
from platforms.models import DeveloperTokenUsage, Platform
from platforms.quota import QuotaStatus, quota_status, quota_take
from platforms.ratelimit import ConnectionThrottle, rate_limit_for
from platforms.types import ErrorCode, PlatformCallError
from scenarios.services.imports import parse_item_list
from tests.factories import ActionFactory, AdSetFactory, ConnectionFactory, EntityFactory

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def meta_connection(tenant):
    return ConnectionFactory(tenant=tenant, platform=Platform.META, account_id="act_77", currency="HUF")


@pytest.fixture
def google_connection(tenant):
    return ConnectionFactory(
        tenant=tenant,
        platform=Platform.GOOGLE_ADS,
        account_id="1234567890",
        currency="EUR",
        credentials={"developer_token": "dev-token-1", "client_id": "c", "client_secret": "s", "refresh_token": "r"},
    )


# Money: per platform at import and recommendation ---------------------------------------------


def test_a_meta_huf_budget_with_forint_fractions_is_refused_at_import(tenant, meta_connection):
    campaign = EntityFactory(connection=meta_connection, external_id="601")

    with pytest.raises(ValidationFailed) as refused:
        parse_item_list(tenant=tenant, items=[{"entity": campaign.pk, "daily_budget": "5000.50"}])
    (item,) = parse_item_list(tenant=tenant, items=[{"entity": campaign.pk, "daily_budget": "5000"}])

    assert refused.value.details[0]["code"] == "precision"
    assert "smallest amount Meta accepts in HUF" in refused.value.details[0]["message"]
    assert item.targets["daily_budget"] == Decimal("5000")


def test_a_google_budget_off_the_stored_billable_unit_is_refused_at_recommendation(tenant, approver, google_connection):
    google_connection.billable_unit_micros = 1_000_000  # whole euros, as sync read it
    google_connection.save()
    campaign = EntityFactory(connection=google_connection, external_id="701")

    with pytest.raises(ValidationFailed) as refused:
        recommendations_create(
            tenant=tenant,
            actor=approver,
            items=[RecommendationInput(campaign.pk, ActionType.ADJUST_BUDGET, {"new_budget": "120.50"})],
        )

    assert "1.00 EUR" in str(refused.value.details)


# Bidding strategies: refused at import, recommendation and approval ----------------------------


def test_a_bid_on_a_google_ad_group_under_target_cpa_is_refused_at_import(tenant, google_connection):
    ad_group = AdSetFactory(connection=google_connection, external_id="801", bid_strategy="TARGET_CPA")

    with pytest.raises(ValidationFailed) as refused:
        parse_item_list(tenant=tenant, items=[{"entity": ad_group.pk, "bid": "1.20"}])

    (error,) = refused.value.details
    assert (error["field"], error["code"]) == ("bid", "bid_ignored")
    assert "ignores ad group CPC bids" in error["message"]


def test_a_bid_on_a_meta_ad_set_without_a_cap_is_refused_as_a_recommendation(tenant, approver, meta_connection):
    ad_set = AdSetFactory(connection=meta_connection, external_id="901", bid_strategy="LOWEST_COST_WITHOUT_CAP")

    with pytest.raises(ValidationFailed) as refused:
        recommendations_create(
            tenant=tenant,
            actor=approver,
            items=[RecommendationInput(ad_set.pk, ActionType.ADJUST_BID, {"new_bid": "120"})],
        )

    assert "LOWEST_COST_WITH_BID_CAP" in str(refused.value.details)


def test_an_action_whose_entity_stopped_using_bids_cannot_be_approved(tenant, approver, google_connection):
    ad_group = AdSetFactory(connection=google_connection, external_id="802", bid_strategy="MANUAL_CPC")
    action = ActionFactory(entity=ad_group, action_type=ActionType.ADJUST_BID, params={"new_bid": "1.20"})
    ad_group.bid_strategy = "MAXIMIZE_CONVERSIONS"  # a sync saw the campaign switch
    ad_group.save()
    action.refresh_from_db()

    with pytest.raises(ValidationFailed, match="MAXIMIZE_CONVERSIONS"):
        action_approve(action=action, actor=approver)

    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING_APPROVAL


# Meta's 4 budget changes per ad set per hour ------------------------------------------------------


def test_a_fifth_budget_change_within_an_hour_waits_for_the_oldest_to_age_out():
    changes = [NOW - timedelta(minutes=m) for m in (50, 30, 20, 5)]

    blocked = next_budget_change(changes, NOW)
    allowed = next_budget_change(changes[1:], NOW)

    assert (blocked.allowed, blocked.next_allowed_at) == (False, NOW + timedelta(minutes=10))
    assert (allowed.allowed, allowed.next_allowed_at) == (True, NOW)
    assert "4 budget changes per ad set per hour" in blocked.describe("Ad set 1", time_zone="UTC")


def test_the_next_allowed_budget_change_is_named_in_the_accounts_zone():
    blocked = next_budget_change([NOW - timedelta(minutes=m) for m in (50, 30, 20, 5)], NOW)

    text = blocked.describe("Ad set 1", time_zone="Europe/Berlin")

    assert "the next is allowed at 2026-06-01 14:10:00 CEST (sent earlier" in text  # 12:10 UTC
    assert "UTC" not in text


def test_a_schedule_spreads_changes_over_the_hours_the_limit_allows():
    times = budget_change_schedule([], 6, NOW)

    assert times == [NOW] * 4 + [NOW + timedelta(hours=1)] * 2


def test_only_meta_ad_set_budget_changes_count_against_the_limit():
    assert is_limited("meta", "ad_set", ["daily_budget"])
    assert not is_limited("meta", "campaign", ["daily_budget"])
    assert not is_limited("meta", "ad_set", ["status", "bid"])
    assert not is_limited("google_ads", "ad_set", ["daily_budget"])


def test_the_dispatcher_parks_a_meta_budget_change_until_the_limit_allows_it(meta_connection):
    ad_set = AdSetFactory(connection=meta_connection, external_id="902", parent=None)
    for minutes in (55, 40, 25, 10):
        ActionFactory(entity=ad_set, status=ActionStatus.SUCCEEDED, finished_at=NOW - timedelta(minutes=minutes))
    ActionFactory(
        entity=ad_set,
        status=ActionStatus.SUCCEEDED,
        action_type=ActionType.SET_VALUES,
        params={"status": "paused"},
        finished_at=NOW,
    )
    waiting = ActionFactory(entity=ad_set, status=ActionStatus.APPROVED)

    assert len(budget_change_times(entity_ids=[ad_set.pk], now=NOW)[ad_set.pk]) == 4  # the pause does not count
    assert next_budget_change_at(action=waiting, now=NOW) == NOW + timedelta(minutes=5)
    assert next_budget_change_at(action=waiting, now=NOW + timedelta(minutes=5)) is None
    assert budget_change_allowance(entity_ids=[ad_set.pk], now=NOW)[ad_set.pk].recent_changes == 4


# The Google developer token's daily operations -----------------------------------------------------


def test_operations_not_requests_are_counted_against_the_daily_budget(db, settings):
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 15_000

    assert quota_take(developer_token="t", operations=10_000, now=NOW)[0]
    assert quota_take(developer_token="t", operations=5_000, now=NOW)[0]
    taken, status = quota_take(developer_token="t", operations=1, now=NOW)

    assert not taken
    assert (status.used, status.remaining) == (15_000, 0)
    assert quota_status(developer_token="t", now=NOW + timedelta(days=1)).used == 0  # a new day
    assert DeveloperTokenUsage.objects.get().token_digest != "t"  # only a digest is stored


def test_the_throttle_refuses_a_mutate_the_budget_cannot_pay_for(settings, google_connection):
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 15_000
    quota_take(developer_token="dev-token-1", operations=14_990)
    throttle = ConnectionThrottle(google_connection, sleep=lambda _s: None)

    throttle(10)  # exactly what is left
    with pytest.raises(PlatformCallError) as refused:
        throttle(1)

    assert refused.value.error.code is ErrorCode.RATE_LIMITED
    assert refused.value.error.retry_after > 0
    assert "15000 operations today" in refused.value.error.message


def test_meta_default_limits_follow_the_documented_points():
    meta = rate_limit_for("meta")

    assert (meta.capacity, meta.refill_per_second, meta.per_operation) == (900, 27, True)
    assert meta.refill_per_second < 9000 / 300  # below the Standard tier's decay of 30 points a second


def test_sync_mirrors_bidding_strategies_and_keeps_the_billable_unit(tenant, google_ads_fake):
    from platforms.registry import get_executor
    from platforms.sync import sync_connection
    from tests.google_fake_fixtures import GOOGLE_CUSTOMER_ID, google_test_credentials

    google_ads_fake.set_billable_unit("EUR", 100_000)
    google_ads_fake.add_campaign(GOOGLE_CUSTOMER_ID, 111, "Brand")
    google_ads_fake.add_ad_group(GOOGLE_CUSTOMER_ID, 211, 111, "Exact")
    google_ads_fake.set_bidding_strategy(GOOGLE_CUSTOMER_ID, 111, "MAXIMIZE_CONVERSIONS")
    connection = ConnectionFactory(
        tenant=tenant,
        platform=Platform.GOOGLE_ADS,
        account_id=GOOGLE_CUSTOMER_ID,
        credentials=google_test_credentials(google_ads_fake),
        api_base_url=google_ads_fake.endpoint,
    )

    sync_connection(connection=connection, executor=get_executor(connection), days=1)

    connection.refresh_from_db()
    assert connection.billable_unit_micros == 100_000
    assert connection.to_config().billable_unit_micros == 100_000  # executors need no read any more
    assert {e.external_id: e.bid_strategy for e in connection.entities.all()} == {
        "111": "MAXIMIZE_CONVERSIONS",
        "211": "MAXIMIZE_CONVERSIONS",
    }
    assert connection.entities.get(external_id="211").bid is None  # no CPC bid in force


def test_a_take_of_daily_operations_is_one_statement(db, settings):
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 15_000
    quota_take(developer_token="t", operations=1, now=NOW)  # the day's row exists from here on
    resets_at = quota_status(developer_token="t", now=NOW).resets_at

    with CaptureQueriesContext(connection) as taken:
        assert quota_take(developer_token="t", operations=100, now=NOW) == (True, QuotaStatus(15_000, 101, resets_at))

    assert len(taken) == 1  # not a lock, a read and a write
    assert quota_status(developer_token="t", now=NOW).used == 101


def test_an_unlimited_token_counts_without_a_limit(db, settings):
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 0

    assert quota_take(developer_token="t", operations=1_000_000, now=NOW)[0]
    assert quota_take(developer_token="t", operations=1, now=NOW)[1].used == 1_000_001


def test_a_first_take_larger_than_the_day_allows_writes_nothing(db, settings):
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 100

    taken, status = quota_take(developer_token="t", operations=101, now=NOW)

    assert (taken, status.used) == (False, 0)
    assert not DeveloperTokenUsage.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_workers_taking_at_once_never_spend_more_than_the_day_allows(settings):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: concurrent transactions")
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 50
    start = threading.Barrier(8)
    taken: list[bool] = []

    def worker() -> None:
        start.wait()
        try:
            taken.append(quota_take(developer_token="t", operations=10, now=NOW)[0])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(taken) == [False] * 3 + [True] * 5
    assert quota_status(developer_token="t", now=NOW).used == 50


def test_ten_reads_through_one_throttle_take_the_daily_budget_once(settings, google_connection):
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 15_000
    settings.PLATFORM_RATE_LIMITS = {"google_ads": {"capacity": 1_000_000, "refill_per_second": 1_000_000}}
    throttle = ConnectionThrottle(google_connection, clock=lambda: NOW, sleep=lambda _s: None)

    with CaptureQueriesContext(connection) as queries:
        for _ in range(10):
            throttle(1)
    quota_queries = [q for q in queries if "developertokenusage" in q["sql"]]

    assert len(quota_queries) == 1
    assert quota_status(developer_token="dev-token-1", now=NOW).used == 10  # never more than ten ahead


def test_a_stock_of_daily_operations_does_not_outlive_its_day(settings, google_connection):
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 15_000
    clock = [NOW]
    throttle = ConnectionThrottle(google_connection, clock=lambda: clock[0], sleep=lambda _s: None)
    throttle(1)  # takes ten for today
    tomorrow = NOW + timedelta(days=1)
    clock[0] = tomorrow

    throttle(1)

    assert quota_status(developer_token="dev-token-1", now=tomorrow).used == 10  # counted on the new day


def test_the_last_operations_of_the_day_are_taken_one_by_one(settings, google_connection):
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 15_000
    quota_take(developer_token="dev-token-1", operations=14_998, now=NOW)
    throttle = ConnectionThrottle(google_connection, clock=lambda: NOW, sleep=lambda _s: None)

    throttle(1)
    throttle(1)
    with pytest.raises(PlatformCallError):
        throttle(1)

    assert quota_status(developer_token="dev-token-1", now=NOW).used == 15_000
