"""The Google Ads executor, through the real google-ads SDK, against the local gRPC fake.

The google_ads_* fixtures come from tests/google_fake_fixtures.py (imported by tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from google.ads.googleads.errors import GoogleAdsException

from platforms.fakes.faults import FaultKind, FaultScope
from platforms.fakes.google_ads_fake import GoogleAdsFake
from platforms.google_ads import GoogleAdsExecutor
from platforms.types import (
    Change,
    EntityRef,
    EntityStatus,
    EntityType,
    ErrorCode,
    Field,
    OutcomeStatus,
    PlatformCallError,
)
from tests.google_fake_fixtures import GOOGLE_CUSTOMER_ID, google_ads_connection, google_test_credentials

CID = GOOGLE_CUSTOMER_ID


def campaign_ref(external_id: str | int, budget_id: str | int | None = None) -> EntityRef:
    return EntityRef(EntityType.CAMPAIGN, str(external_id), budget_id=str(budget_id) if budget_id else None)


def ad_group_ref(external_id: str | int) -> EntityRef:
    return EntityRef(EntityType.AD_SET, str(external_id))


def daily_budget(campaign_id: int, amount: str, fake: GoogleAdsFake | None = None) -> Change:
    """A daily budget change; with ``fake`` the ref carries the campaign's budget id."""
    budget_id = fake.campaign(CID, campaign_id).budget_id if fake else None
    return Change(
        campaign_ref(campaign_id, budget_id), Field.DAILY_BUDGET, Decimal(amount), key=f"budget-{campaign_id}"
    )


@pytest.fixture
def make_executor(google_ads_fake: GoogleAdsFake) -> Iterator[Callable[..., GoogleAdsExecutor]]:
    """Executors with ConnectionConfig overrides (short timeouts, other currencies)."""
    executors: list[GoogleAdsExecutor] = []

    def make(**overrides: object) -> GoogleAdsExecutor:
        executors.append(GoogleAdsExecutor(google_ads_connection(google_ads_fake, **overrides)))
        return executors[-1]

    yield make
    for executor in executors:
        executor.close()


@pytest.fixture
def brand(google_ads_fake: GoogleAdsFake) -> GoogleAdsFake:
    """Campaign 111 (12.34 EUR a day) with ad group 211 (bid 1.23 EUR)."""
    google_ads_fake.add_campaign(CID, 111, "Brand", budget_micros=12_340_000)
    google_ads_fake.add_ad_group(CID, 211, 111, "Brand exact", cpc_bid_micros=1_230_000)
    return google_ads_fake


# Reading -----------------------------------------------------------------------------------


def test_read_state_returns_campaigns_and_ad_groups_in_the_account_currency(brand, google_ads_executor):
    states = google_ads_executor.read_state([campaign_ref(111), ad_group_ref(211)])

    brand_campaign = states[("campaign", "111")]
    assert brand_campaign.name == "Brand"
    assert brand_campaign.status is EntityStatus.ACTIVE
    assert brand_campaign.daily_budget == Decimal("12.34")
    assert brand_campaign.lifetime_budget is None
    assert brand_campaign.currency == "EUR"
    assert brand_campaign.budget_id == str(brand.campaign(CID, 111).budget_id)
    assert (brand_campaign.budget_shared, brand_campaign.budget_reference_count) == (False, 1)
    exact = states[("ad_set", "211")]
    assert (exact.name, exact.status, exact.bid, exact.parent_external_id) == (
        "Brand exact",
        EntityStatus.ACTIVE,
        Decimal("1.23"),
        "111",
    )


def test_read_state_reports_a_shared_budget_and_how_many_campaigns_use_it(google_ads_fake, google_ads_executor):
    for campaign_id in (111, 112, 113):
        google_ads_fake.add_campaign(CID, campaign_id, shared_budget_id=55, budget_micros=90_000_000)
    google_ads_fake.add_campaign(CID, 114, status="REMOVED", shared_budget_id=55)

    states = google_ads_executor.read_state([campaign_ref(111), campaign_ref(113)])

    for key in (("campaign", "111"), ("campaign", "113")):
        assert states[key].budget_id == "55"
        assert states[key].budget_shared is True
        assert states[key].budget_reference_count == 3  # the removed campaign no longer counts
        assert states[key].daily_budget == Decimal("90.00")


def test_read_state_leaves_out_entities_google_does_not_know(brand, google_ads_executor):
    states = google_ads_executor.read_state(
        [campaign_ref(111), campaign_ref(404), campaign_ref("1 OR 1=1"), ad_group_ref(999), ad_group_ref(211)]
    )

    assert sorted(states) == [("ad_set", "211"), ("campaign", "111")]
    reads = brand.requests
    assert [r.method for r in reads] == ["SearchStream", "SearchStream"]  # one per entity type
    assert "1=1" not in reads[0].query
    assert google_ads_executor.round_trips == 2


def test_read_state_shows_removed_entities_as_removed(google_ads_fake, google_ads_executor):
    google_ads_fake.add_campaign(CID, 111, status="REMOVED")

    assert google_ads_executor.read_state([campaign_ref(111)])[("campaign", "111")].status is EntityStatus.REMOVED


def test_read_failures_raise_a_classified_platform_call_error(brand, google_ads_executor):
    brand.faults.add(FaultKind.AUTH_EXPIRED, scope=FaultScope.READ, remaining=2)  # refused again after a refresh

    with pytest.raises(PlatformCallError) as raised:
        google_ads_executor.read_state([campaign_ref(111)])

    assert raised.value.error.code is ErrorCode.AUTH_EXPIRED
    assert raised.value.error.request_id == brand.requests[-1].request_id
    secrets = google_ads_executor.config.credentials
    assert not any(secrets[name] in raised.value.error.message for name in ("refresh_token", "client_secret"))


def test_the_fake_reports_the_cpu_time_it_spent_serving_requests(brand, google_ads_executor):
    # bench/audit_floor.py shows it apart: in process, the fake's work would pass for the engine's.
    before = brand.served_cpu_seconds
    google_ads_executor.read_state([campaign_ref(111), ad_group_ref(211)])
    assert brand.served_cpu_seconds > before


def test_list_entities_returns_every_campaign_and_ad_group_that_is_not_removed(brand, google_ads_executor):
    brand.add_campaign(CID, 112, "Generic", status="PAUSED", total_budget_micros=500_000_000, budget_micros=None)
    brand.add_campaign(CID, 113, "Old", status="REMOVED")
    brand.add_ad_group(CID, 212, 112, "Generic broad", status="PAUSED")
    brand.add_ad_group(CID, 213, 113, "Under a removed campaign")

    entities = {e.key: e for e in google_ads_executor.list_entities()}

    assert sorted(entities) == [("ad_set", "211"), ("ad_set", "212"), ("campaign", "111"), ("campaign", "112")]
    assert entities[("campaign", "112")].lifetime_budget == Decimal("500.00")
    assert entities[("campaign", "112")].daily_budget is None


def test_test_connection_describes_the_readable_account(brand, google_ads_executor):
    assert google_ads_executor.test_connection() == "google_ads account 123-456-7890: 2 entities readable"


# Performance -------------------------------------------------------------------------------

MARCH_1, MARCH_7 = date(2026, 3, 1), date(2026, 3, 7)


def march(day: int) -> date:
    return date(2026, 3, day)


@pytest.fixture
def delivering(brand: GoogleAdsFake) -> GoogleAdsFake:
    """Brand (111) with ad groups 211 and 212, Generic (112) without ad groups; seed 7."""
    brand.add_ad_group(CID, 212, 111, "Brand broad")
    brand.add_campaign(CID, 112, "Generic")
    brand.seed_performance(CID, 7)
    return brand


def test_read_performance_returns_one_row_per_entity_and_day_with_delivery(delivering, google_ads_executor):
    delivering.set_daily_metrics(CID, "ad_group", 211, march(3))  # all zero: no delivery that day

    rows = google_ads_executor.read_performance(MARCH_1, MARCH_7)

    expected = {
        (level_type, str(entity_id), march(day)): delivering.daily_metrics(CID, level, entity_id, march(day))
        for level, level_type, entity_id in [
            ("campaign", EntityType.CAMPAIGN, 111),
            ("campaign", EntityType.CAMPAIGN, 112),
            ("ad_group", EntityType.AD_SET, 211),
            ("ad_group", EntityType.AD_SET, 212),
        ]
        for day in range(1, 8)
    }
    expected = {key: metrics for key, metrics in expected.items() if not metrics.is_zero}
    assert (EntityType.AD_SET, "211", march(3)) not in expected
    assert sorted((r.entity_type, r.external_id, r.date) for r in rows) == sorted(expected)
    for row in rows:
        metrics = expected[(row.entity_type, row.external_id, row.date)]
        assert row.spend == Decimal(metrics.cost_micros) / 1_000_000
        assert (row.impressions, row.clicks) == (metrics.impressions, metrics.clicks)
        assert row.conversions == Decimal(repr(metrics.conversions)).quantize(Decimal("0.01"))
        assert row.revenue == Decimal(repr(metrics.conversions_value)).quantize(Decimal("0.01"))


def test_a_campaigns_performance_is_the_sum_of_its_ad_groups(delivering, google_ads_executor):
    rows = {(r.key, r.date): r for r in google_ads_executor.read_performance(march(2), march(2))}

    parts = [rows[k] for k in [(("ad_set", "211"), march(2)), (("ad_set", "212"), march(2))] if k in rows]
    brand = rows[(("campaign", "111"), march(2))]
    assert brand.spend == sum(p.spend for p in parts)
    assert brand.impressions == sum(p.impressions for p in parts)


def test_read_performance_takes_one_search_stream_per_level_over_the_inclusive_range(delivering, google_ads_executor):
    google_ads_executor.read_performance(MARCH_1, MARCH_7)

    requests = delivering.requests
    assert [r.method for r in requests] == ["SearchStream", "SearchStream"]
    assert google_ads_executor.round_trips == 2
    assert [r.query.split(" FROM ")[1].split()[0] for r in requests] == ["campaign", "ad_group"]
    assert all("segments.date BETWEEN '2026-03-01' AND '2026-03-07'" in r.query for r in requests)
    assert all("metrics.cost_micros" in r.query and "metrics.conversions_value" in r.query for r in requests)


def test_the_first_and_last_day_are_included_and_days_outside_are_not(brand, google_ads_executor):
    for day in (march(1), march(3), march(4)):
        brand.set_daily_metrics(CID, "campaign", 111, day, cost_micros=1_000_000, impressions=10)
    brand.set_daily_metrics(CID, "campaign", 111, march(2))  # no delivery

    rows = google_ads_executor.read_performance(march(1), march(3))

    assert [(r.external_id, r.date) for r in rows if r.entity_type == EntityType.CAMPAIGN] == [
        ("111", march(1)),
        ("111", march(3)),
    ]


def test_performance_money_is_converted_from_micros_in_the_account_currency(brand, google_ads_executor):
    brand.set_daily_metrics(
        CID,
        "campaign",
        111,
        march(1),
        cost_micros=12_340_000,
        impressions=900,
        clicks=30,
        conversions=3.5,
        conversions_value=123.456,
    )
    # Cost accrues in micros: a day can end between two cents.
    brand.set_daily_metrics(CID, "campaign", 111, march(2), cost_micros=1_234_567, impressions=1, conversions=1 / 3)

    first, second = google_ads_executor.read_performance(march(1), march(2))[:2]

    assert (first.spend, first.impressions, first.clicks) == (Decimal("12.34"), 900, 30)
    assert (first.conversions, first.revenue) == (Decimal("3.50"), Decimal("123.46"))
    assert (second.spend, second.conversions, second.revenue) == (Decimal("1.23"), Decimal("0.33"), Decimal("0.00"))


def test_performance_of_a_jpy_account_is_in_whole_yen(google_ads_fake, make_executor):
    google_ads_fake.add_customer("5550001111", currency="JPY")
    google_ads_fake.add_campaign("5550001111", 311)
    google_ads_fake.set_daily_metrics(
        "5550001111", "campaign", 311, march(1), cost_micros=1_500_000_000, impressions=5, conversions_value=4200.4
    )
    executor = make_executor(account_id="555-000-1111", currency="JPY")

    (row,) = executor.read_performance(march(1), march(1))

    assert (row.spend, row.revenue) == (Decimal("1500"), Decimal("4200"))


def test_read_performance_refuses_a_reversed_range_without_a_request(brand, google_ads_executor):
    with pytest.raises(ValueError, match="after"):
        google_ads_executor.read_performance(march(7), march(1))

    assert brand.requests == []


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (FaultKind.RATE_LIMIT, ErrorCode.RATE_LIMITED),
        (FaultKind.SERVER_ERROR, ErrorCode.TRANSIENT),
        (FaultKind.HTML_502, ErrorCode.TRANSIENT),
        (FaultKind.AUTH_EXPIRED, ErrorCode.AUTH_EXPIRED),
        (FaultKind.PERMISSION_DENIED, ErrorCode.PERMISSION_DENIED),
    ],
)
def test_a_failed_performance_read_raises_a_classified_error(delivering, google_ads_executor, fault, expected):
    # A refused token is refreshed and the read sent once more: the fault refuses that too.
    sent = 2 if fault is FaultKind.AUTH_EXPIRED else 1
    delivering.faults.add(fault, scope=FaultScope.READ, retry_after=4, remaining=sent)

    with pytest.raises(PlatformCallError) as raised:
        google_ads_executor.read_performance(MARCH_1, MARCH_7)

    assert raised.value.error.code is expected
    assert not raised.value.ambiguous
    assert raised.value.error.request_id == delivering.requests[-1].request_id
    assert len(delivering.requests) == sent  # the ad group level is not read after the campaign level failed
    if expected is ErrorCode.RATE_LIMITED:
        assert raised.value.error.retry_after == 4.0


def test_a_write_fault_is_left_for_the_next_write(delivering, google_ads_executor):
    delivering.faults.add(FaultKind.SERVER_ERROR, scope=FaultScope.WRITE)

    rows = google_ads_executor.read_performance(MARCH_1, MARCH_1)
    (outcome,) = google_ads_executor.apply([daily_budget(111, "20.00", delivering)])

    assert rows
    assert outcome.error.code is ErrorCode.TRANSIENT


# Writing -----------------------------------------------------------------------------------


def test_budget_status_and_bid_changes_are_applied_and_read_back(brand, google_ads_executor):
    changes = [
        daily_budget(111, "45.50", brand),
        Change(campaign_ref(111), Field.STATUS, EntityStatus.PAUSED),
        Change(ad_group_ref(211), Field.BID, Decimal("0.85")),
        Change(ad_group_ref(211), Field.STATUS, "paused"),
    ]

    outcomes = google_ads_executor.apply(changes)

    assert [o.status for o in outcomes] == [OutcomeStatus.APPLIED] * 4
    assert [o.change for o in outcomes] == changes
    states = google_ads_executor.read_state([campaign_ref(111), ad_group_ref(211)])
    assert states[("campaign", "111")].daily_budget == Decimal("45.50")
    assert states[("campaign", "111")].status is EntityStatus.PAUSED
    assert (states[("ad_set", "211")].bid, states[("ad_set", "211")].status) == (Decimal("0.85"), EntityStatus.PAUSED)
    mutates = brand.mutate_requests()
    assert [r.method for r in mutates] == ["MutateCampaignBudgets", "MutateCampaigns", "MutateAdGroups"]
    assert all(r.partial_failure and not r.validate_only for r in mutates)


def test_two_fields_of_one_ad_group_are_merged_into_one_operation(brand, google_ads_executor):
    google_ads_executor.apply(
        [
            Change(ad_group_ref(211), Field.BID, Decimal("2.00")),
            Change(ad_group_ref(211), Field.STATUS, EntityStatus.PAUSED),
        ]
    )

    (request,) = brand.mutate_requests()
    assert request.resource_names == (f"customers/{CID}/adGroups/211",)


def test_lifetime_budget_changes_the_total_amount(google_ads_fake, google_ads_executor):
    google_ads_fake.add_campaign(CID, 111, total_budget_micros=300_000_000, budget_micros=None)

    (outcome,) = google_ads_executor.apply([Change(campaign_ref(111), Field.LIFETIME_BUDGET, Decimal("450"))])

    assert outcome.status is OutcomeStatus.APPLIED
    assert google_ads_fake.budget_of(CID, 111).total_amount_micros == 450_000_000


def test_missing_budget_ids_are_resolved_with_one_read_for_all_campaigns(google_ads_fake, google_ads_executor):
    for campaign_id in (111, 112, 113):
        google_ads_fake.add_campaign(CID, campaign_id)

    outcomes = google_ads_executor.apply(
        [daily_budget(111, "20"), daily_budget(112, "21"), daily_budget(113, "22"), daily_budget(404, "23")]
    )

    assert [o.status for o in outcomes] == [OutcomeStatus.APPLIED] * 3 + [OutcomeStatus.FAILED]
    assert outcomes[3].error.code is ErrorCode.NOT_FOUND
    assert [r.method for r in google_ads_fake.requests] == ["SearchStream", "MutateCampaignBudgets"]
    assert google_ads_fake.budget_of(CID, 113).amount_micros == 22_000_000


def test_validate_only_changes_nothing(brand, google_ads_executor):
    outcomes = google_ads_executor.apply(
        [daily_budget(111, "99.00", brand), Change(ad_group_ref(211), Field.BID, Decimal("3.00"))], validate_only=True
    )

    assert [o.status for o in outcomes] == [OutcomeStatus.VALIDATED] * 2
    assert all(r.validate_only for r in brand.mutate_requests())
    assert brand.budget_of(CID, 111).amount_micros == 12_340_000
    assert brand.ad_group(CID, 211).cpc_bid_micros == 1_230_000


def test_validate_only_still_reports_values_the_platform_refuses(brand, google_ads_executor):
    (outcome,) = google_ads_executor.apply([daily_budget(111, "-1.00", brand)], validate_only=True)

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error.code is ErrorCode.INVALID_VALUE


def test_partial_failure_fails_only_the_refused_changes(google_ads_fake, google_ads_executor):
    for campaign_id in (111, 112, 113):
        google_ads_fake.add_campaign(CID, campaign_id, budget_micros=10_000_000)
    google_ads_fake.faults.add(FaultKind.PARTIAL_FAILURE, entity_ids=["112"])

    outcomes = google_ads_executor.apply([daily_budget(c, "30.00", google_ads_fake) for c in (111, 112, 113)])

    assert [o.status for o in outcomes] == [OutcomeStatus.APPLIED, OutcomeStatus.FAILED, OutcomeStatus.APPLIED]
    assert outcomes[1].error.code is ErrorCode.INVALID_VALUE
    assert "range_error.TOO_HIGH" in outcomes[1].error.message
    assert "campaign 112" in outcomes[1].error.message
    assert [google_ads_fake.budget_of(CID, c).amount_micros for c in (111, 112, 113)] == [
        30_000_000,
        10_000_000,
        30_000_000,
    ]
    assert len(google_ads_fake.mutate_requests()) == 1


def test_a_value_the_platform_refuses_is_invalid_value_and_the_rest_applies(brand, google_ads_executor):
    outcomes = google_ads_executor.apply(
        [
            daily_budget(111, "-5.00", brand),
            Change(ad_group_ref(211), Field.BID, Decimal("-0.10")),
            Change(campaign_ref(111), Field.STATUS, EntityStatus.PAUSED),
        ]
    )

    assert [(o.status, o.error.code if o.error else None) for o in outcomes] == [
        (OutcomeStatus.FAILED, ErrorCode.INVALID_VALUE),
        (OutcomeStatus.FAILED, ErrorCode.INVALID_VALUE),
        (OutcomeStatus.APPLIED, None),
    ]
    assert brand.campaign(CID, 111).status == "PAUSED"


def test_an_invalid_value_refusal_of_the_whole_request_fails_every_change_in_it(brand, google_ads_executor):
    brand.faults.add(FaultKind.INVALID_VALUE)

    (outcome,) = google_ads_executor.apply([daily_budget(111, "20.00", brand)])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.INVALID_VALUE)


def test_a_sub_cent_eur_value_is_refused_without_being_sent(brand, google_ads_executor):
    outcomes = google_ads_executor.apply(
        [daily_budget(111, "12.345", brand), Change(ad_group_ref(211), Field.BID, Decimal("0.005"))]
    )

    assert [(o.status, o.error.code) for o in outcomes] == [(OutcomeStatus.FAILED, ErrorCode.INVALID_VALUE)] * 2
    assert "smallest amount Google Ads accepts in EUR" in outcomes[0].error.message
    assert brand.requests == []


def test_a_yen_account_sends_whole_yen(google_ads_fake, make_executor):
    google_ads_fake.add_customer("5555555555", currency="JPY")
    google_ads_fake.add_campaign("5555555555", 111, budget_micros=5_000_000_000)
    executor = make_executor(account_id="555-555-5555", currency="JPY")

    outcomes = executor.apply(
        [
            Change(campaign_ref(111), Field.DAILY_BUDGET, Decimal("6000")),
            Change(campaign_ref(111), Field.LIFETIME_BUDGET, Decimal("0.50")),
        ]
    )

    assert outcomes[0].status is OutcomeStatus.APPLIED
    assert (outcomes[1].status, outcomes[1].error.code) == (OutcomeStatus.FAILED, ErrorCode.INVALID_VALUE)
    assert executor.read_state([campaign_ref(111)])[("campaign", "111")].daily_budget == Decimal("6000")


def test_unsupported_changes_fail_as_not_supported_without_any_request(brand, google_ads_executor):
    changes = [
        Change(ad_group_ref(211), Field.DAILY_BUDGET, Decimal("10")),
        Change(campaign_ref(111), Field.TARGETING, {"geo": ["FR"]}),
        Change(campaign_ref(111), Field.SCHEDULE, {"mon": "9-17"}),
        Change(campaign_ref(111), Field.BID, Decimal("1.00")),
        Change(EntityRef(EntityType.AD, "311"), Field.STATUS, EntityStatus.PAUSED),
        Change(campaign_ref(111), Field.STATUS, EntityStatus.REMOVED),
    ]

    outcomes = google_ads_executor.apply(changes)

    assert {(o.status, o.error.code) for o in outcomes} == {(OutcomeStatus.FAILED, ErrorCode.NOT_SUPPORTED)}
    assert brand.requests == []


# Batching ----------------------------------------------------------------------------------


def test_25000_budget_changes_take_exactly_three_mutate_requests(google_ads_fake, google_ads_executor):
    campaign_ids = range(100_001, 125_001)
    for campaign_id in campaign_ids:
        google_ads_fake.add_campaign(CID, campaign_id, budget_micros=10_000_000)

    outcomes = google_ads_executor.apply([daily_budget(c, "25.00", google_ads_fake) for c in campaign_ids])

    assert {o.status for o in outcomes} == {OutcomeStatus.APPLIED}
    assert [r.operation_count for r in google_ads_fake.mutate_requests()] == [10_000, 10_000, 5_000]
    assert google_ads_executor.round_trips == 3
    assert google_ads_fake.budget_of(CID, 124_999).amount_micros == 25_000_000


def test_two_values_for_one_shared_budget_are_both_refused_naming_each_other(google_ads_fake, google_ads_executor):
    """Both used to report applied while the last one won; a shared budget has one amount."""
    google_ads_fake.add_campaign(CID, 111, shared_budget_id=55, budget_micros=50_000_000)
    google_ads_fake.add_campaign(CID, 112, shared_budget_id=55)
    google_ads_fake.add_campaign(CID, 113)

    first, second, other = google_ads_executor.apply(
        [
            daily_budget(111, "40.00", google_ads_fake),
            daily_budget(112, "60.00"),  # no budget id in the ref: resolved from the campaign
            daily_budget(113, "70.00", google_ads_fake),
        ]
    )

    assert [(o.status, o.error.code) for o in (first, second)] == [(OutcomeStatus.FAILED, ErrorCode.INVALID_VALUE)] * 2
    assert "campaign 112 to 60.00 (budget-112)" in first.error.message
    assert "campaign 111 to 40.00 (budget-111)" in second.error.message
    assert other.status is OutcomeStatus.APPLIED
    assert [len(r.resource_names) for r in google_ads_fake.mutate_requests()] == [1]
    assert google_ads_fake.budget(CID, 55).amount_micros == 50_000_000


def test_the_same_value_for_a_shared_budget_is_sent_once(google_ads_fake, google_ads_executor):
    google_ads_fake.add_campaign(CID, 111, shared_budget_id=55)
    google_ads_fake.add_campaign(CID, 112, shared_budget_id=55)

    outcomes = google_ads_executor.apply(
        [daily_budget(111, "80.00", google_ads_fake), daily_budget(112, "80.00", google_ads_fake)]
    )

    assert [o.status for o in outcomes] == [OutcomeStatus.APPLIED] * 2
    assert [r.resource_names for r in google_ads_fake.mutate_requests()] == [(f"customers/{CID}/campaignBudgets/55",)]


def test_throttle_is_called_before_every_request_with_its_operation_count(brand, google_ads_config):
    calls: list[int] = []
    executor = GoogleAdsExecutor(google_ads_config, throttle=calls.append)
    try:
        executor.read_state([campaign_ref(111)])
        executor.apply(
            [
                daily_budget(111, "20", brand),
                Change(ad_group_ref(211), Field.BID, Decimal("1")),
                Change(ad_group_ref(211), Field.STATUS, EntityStatus.PAUSED),
            ]
        )
    finally:
        executor.close()

    # read, the bid's bidding-strategy read, the budget mutate, the ad group mutate
    assert calls == [1, 1, 1, 1]
    assert executor.round_trips == len(brand.requests) == 4


# Errors ------------------------------------------------------------------------------------


def test_a_rate_limit_is_rate_limited_with_the_platforms_retry_delay(brand, google_ads_executor):
    brand.faults.add(FaultKind.RATE_LIMIT, retry_after=7.5)

    (outcome,) = google_ads_executor.apply([daily_budget(111, "20.00", brand)])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.RATE_LIMITED)
    assert outcome.error.retry_after == 7.5
    assert outcome.error.retryable
    assert brand.budget_of(CID, 111).amount_micros == 12_340_000


def test_a_rate_limited_read_raises_rate_limited(brand, google_ads_executor):
    brand.faults.add(FaultKind.RATE_LIMIT, scope=FaultScope.READ, retry_after=3)

    with pytest.raises(PlatformCallError) as raised:
        google_ads_executor.read_state([campaign_ref(111)])

    assert (raised.value.error.code, raised.value.error.retry_after) == (ErrorCode.RATE_LIMITED, 3.0)


def test_a_request_failure_that_would_repeat_stops_the_rest_of_the_batch(brand, google_ads_executor):
    brand.faults.add(FaultKind.RATE_LIMIT, retry_after=2)

    outcomes = google_ads_executor.apply(
        [daily_budget(111, "20.00", brand), Change(campaign_ref(111), Field.STATUS, EntityStatus.PAUSED)]
    )

    assert [o.error.code for o in outcomes] == [ErrorCode.RATE_LIMITED] * 2
    assert outcomes[1].error.message.startswith("Not sent")
    assert outcomes[1].error.retry_after == 2
    assert [r.method for r in brand.mutate_requests()] == ["MutateCampaignBudgets"]


@pytest.mark.parametrize("fault", [FaultKind.SERVER_ERROR, FaultKind.HTML_502], ids=["INTERNAL", "UNAVAILABLE"])
def test_server_errors_are_transient(brand, google_ads_executor, fault):
    brand.faults.add(fault, scope=FaultScope.ANY, remaining=2)

    (outcome,) = google_ads_executor.apply([daily_budget(111, "20.00", brand)])
    with pytest.raises(PlatformCallError) as raised:
        google_ads_executor.read_state([campaign_ref(111)])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.TRANSIENT)
    assert raised.value.error.code is ErrorCode.TRANSIENT


def test_a_timeout_after_apply_is_unknown_and_the_platform_shows_it_applied(brand, make_executor):
    executor = make_executor(request_timeout=0.5)
    brand.faults.hang_seconds = 0.8
    brand.faults.add(FaultKind.TIMEOUT_AFTER_APPLY)

    (outcome,) = executor.apply([daily_budget(111, "77.00", brand)])

    assert outcome.status is OutcomeStatus.UNKNOWN
    assert outcome.error.code is ErrorCode.TRANSIENT
    assert executor.read_state([campaign_ref(111)])[("campaign", "111")].daily_budget == Decimal("77.00")


def test_a_timeout_before_apply_is_also_unknown_and_nothing_changed(brand, make_executor):
    executor = make_executor(request_timeout=0.5)
    brand.faults.hang_seconds = 0.8
    brand.faults.add(FaultKind.TIMEOUT_BEFORE_APPLY)

    (outcome,) = executor.apply([daily_budget(111, "77.00", brand)])

    assert outcome.status is OutcomeStatus.UNKNOWN  # the client cannot tell before from after
    assert brand.budget_of(CID, 111).amount_micros == 12_340_000


def test_a_token_refused_twice_is_auth_expired(brand, google_ads_executor):
    brand.faults.add(FaultKind.AUTH_EXPIRED, remaining=2)

    (outcome,) = google_ads_executor.apply([Change(campaign_ref(111), Field.STATUS, EntityStatus.PAUSED)])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.AUTH_EXPIRED)
    assert "OAUTH_TOKEN_EXPIRED" in outcome.error.message
    assert not outcome.error.retryable


def test_a_missing_permission_is_permission_denied(brand, google_ads_executor):
    brand.faults.add(FaultKind.PERMISSION_DENIED)

    (outcome,) = google_ads_executor.apply([Change(ad_group_ref(211), Field.BID, Decimal("1.50"))])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.PERMISSION_DENIED)


def test_an_entity_deleted_meanwhile_is_not_found(brand, google_ads_executor):
    brand.faults.add(FaultKind.ENTITY_DELETED, entity_ids=["111"], remaining=2)

    status_outcome, budget_outcome = google_ads_executor.apply(
        [Change(campaign_ref(111), Field.STATUS, EntityStatus.PAUSED), daily_budget(111, "20.00", brand)]
    )

    assert (status_outcome.status, status_outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.NOT_FOUND)
    assert (budget_outcome.status, budget_outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.NOT_FOUND)
    assert google_ads_executor.read_state([campaign_ref(111)])[("campaign", "111")].status is EntityStatus.REMOVED


def test_a_concurrent_modification_is_a_conflict(brand, google_ads_executor):
    brand.faults.add(FaultKind.CONFLICT)

    (outcome,) = google_ads_executor.apply([daily_budget(111, "20.00", brand)])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.CONFLICT)
    assert outcome.error.retryable


def test_request_ids_are_kept_on_outcomes_and_errors(brand, google_ads_executor):
    applied, refused = google_ads_executor.apply(
        [
            Change(campaign_ref(111), Field.STATUS, EntityStatus.PAUSED),
            Change(ad_group_ref(211), Field.BID, Decimal("-1")),
        ]
    )
    brand.faults.add(FaultKind.PERMISSION_DENIED)
    (denied,) = google_ads_executor.apply([Change(campaign_ref(111), Field.STATUS, EntityStatus.ACTIVE)])

    campaign_request, ad_group_request, denied_request = brand.mutate_requests()
    assert applied.request_id == campaign_request.request_id
    assert refused.request_id == refused.error.request_id == ad_group_request.request_id
    assert denied.request_id == denied.error.request_id == denied_request.request_id


# OAuth: credentials are client id/secret + refresh token; an access token is only a cache ---------


def test_a_stored_access_token_without_expiry_is_refreshed_before_it_is_used(brand, make_executor):
    """google-auth takes a token without expiry as valid for ever; Google's expire within an hour."""
    executor = make_executor(credentials=google_test_credentials(brand, access_token="stale-token-from-last-week"))

    states = executor.read_state([campaign_ref(111)])

    assert ("campaign", "111") in states
    assert brand.oauth.refreshes == 1


def test_a_cached_access_token_is_used_until_its_expiry(brand, make_executor):
    token = brand.oauth.issue(lifetime=3600)
    expiry = (datetime.now(UTC) + timedelta(minutes=50)).isoformat()
    executor = make_executor(credentials=google_test_credentials(brand, access_token=token, token_expiry=expiry))

    executor.read_state([campaign_ref(111)])

    assert brand.oauth.refreshes == 0


def test_a_cached_access_token_past_its_expiry_is_refreshed(brand, make_executor):
    expiry = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    cached = google_test_credentials(brand, access_token=brand.oauth.issue(lifetime=0), token_expiry=expiry)
    executor = make_executor(credentials=cached)

    executor.read_state([campaign_ref(111)])

    assert brand.oauth.refreshes == 1


def test_a_token_that_expires_while_in_use_is_refreshed_once_and_the_call_sent_again(brand, google_ads_executor):
    google_ads_executor.read_state([campaign_ref(111)])
    brand.oauth.expire_all()  # an hour later: google-auth still believes its token valid

    (outcome,) = google_ads_executor.apply([daily_budget(111, "20.00", brand)])

    assert outcome.status is OutcomeStatus.APPLIED
    assert brand.oauth.refreshes == 2
    assert [r.method for r in brand.requests][-2:] == ["MutateCampaignBudgets", "MutateCampaignBudgets"]
    assert brand.budget_of(CID, 111).amount_micros == 20_000_000


def test_one_refused_token_is_healed_by_one_refresh(brand, google_ads_executor):
    brand.faults.add(FaultKind.AUTH_EXPIRED, remaining=1)

    (outcome,) = google_ads_executor.apply([Change(campaign_ref(111), Field.STATUS, EntityStatus.PAUSED)])

    assert outcome.status is OutcomeStatus.APPLIED
    assert brand.oauth.refreshes == 2  # the first token, and one more after the refusal


def test_a_revoked_refresh_token_is_auth_expired_without_calling_the_api(brand, google_ads_executor):
    brand.oauth.revoke(google_ads_executor.config.credentials["refresh_token"])

    (outcome,) = google_ads_executor.apply([Change(campaign_ref(111), Field.STATUS, EntityStatus.PAUSED)])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.AUTH_EXPIRED)
    assert google_ads_executor.config.credentials["refresh_token"] not in outcome.error.message
    assert brand.requests == []


def test_credentials_without_an_oauth_client_are_refused_by_name(brand):
    config = google_ads_connection(brand, credentials={"developer_token": "x", "access_token": "y"})

    with pytest.raises(ValueError, match="client_id, client_secret, refresh_token"):
        GoogleAdsExecutor(config)


def test_requests_carry_the_developer_token_bearer_token_and_login_customer_id(brand, google_ads_executor):
    google_ads_executor.read_state([campaign_ref(111)])

    (request,) = brand.requests
    assert (request.has_developer_token, request.has_bearer_token) == (True, True)
    assert (request.customer_id, request.login_customer_id) == (CID, "9998887776")


# The fake itself: the rules the executor is tested against ------------------------------


def test_fake_search_pages_hold_10000_rows_and_end_with_an_empty_token(google_ads_fake, google_ads_executor):
    for campaign_id in range(1, 25_002):
        google_ads_fake.add_campaign(CID, campaign_id)
    service = google_ads_executor.client.get_service("GoogleAdsService")

    pager = service.search(customer_id=CID, query="SELECT campaign.id FROM campaign WHERE campaign.status = 'ENABLED'")
    pages = list(pager.pages)

    assert [len(page.results) for page in pages] == [10_000, 10_000, 5_001]
    assert [bool(page.next_page_token) for page in pages] == [True, True, False]


def test_fake_refuses_a_request_that_mutates_one_resource_twice(brand, google_ads_executor):
    client = google_ads_executor.client
    operations = []
    for amount in (20_000_000, 30_000_000):
        operation = client.get_type("CampaignBudgetOperation")
        operation.update.resource_name = f"customers/{CID}/campaignBudgets/{brand.campaign(CID, 111).budget_id}"
        operation.update.amount_micros = amount
        operation.update_mask.paths.append("amount_micros")
        operations.append(operation)

    with pytest.raises(GoogleAdsException) as raised:
        client.get_service("CampaignBudgetService").mutate_campaign_budgets(customer_id=CID, operations=operations)

    assert {e.error_code.mutate_error.name for e in raised.value.failure.errors} == {"ID_EXISTS_IN_MULTIPLE_MUTATES"}
    assert brand.budget_of(CID, 111).amount_micros == 12_340_000


def test_fake_refuses_more_than_10000_operations(brand, google_ads_executor):
    client = google_ads_executor.client
    operation = client.get_type("CampaignOperation")
    operation.update.resource_name = f"customers/{CID}/campaigns/111"
    operation.update.status = client.enums.CampaignStatusEnum.PAUSED
    operation.update_mask.paths.append("status")

    with pytest.raises(GoogleAdsException) as raised:
        client.get_service("CampaignService").mutate_campaigns(customer_id=CID, operations=[operation] * 10_001)

    assert raised.value.failure.errors[0].error_code.request_error.name == "TOO_MANY_MUTATE_OPERATIONS"


def test_fake_lists_accessible_customers(brand, google_ads_executor):
    response = google_ads_executor.client.get_service("CustomerService").list_accessible_customers()

    assert list(response.resource_names) == [f"customers/{CID}"]


def test_fake_refuses_metrics_without_a_finite_date_range(brand, google_ads_executor):
    service = google_ads_executor.client.get_service("GoogleAdsService")
    query = "SELECT campaign.id, segments.date, metrics.clicks FROM campaign WHERE campaign.status = 'ENABLED'"

    with pytest.raises(GoogleAdsException) as raised:
        list(service.search_stream(customer_id=CID, query=query))

    assert raised.value.failure.errors[0].error_code.query_error.name == "EXPECTED_FILTERS_ON_DATE_RANGE"


def test_fake_filters_on_segments_date_with_between_and_other_conditions(brand, google_ads_executor):
    brand.add_campaign(CID, 112, status="PAUSED")
    for campaign_id in (111, 112):
        brand.set_daily_metrics(CID, "campaign", campaign_id, march(5), impressions=1)
    service = google_ads_executor.client.get_service("GoogleAdsService")
    query = (
        "SELECT campaign.id, segments.date, metrics.impressions FROM campaign "
        "WHERE segments.date BETWEEN '2026-03-05' AND '2026-03-05' AND campaign.status = 'PAUSED'"
    )

    rows = [row for batch in service.search_stream(customer_id=CID, query=query) for row in batch.results]

    assert [(row.campaign.id, row.segments.date, row.metrics.impressions) for row in rows] == [(112, "2026-03-05", 1)]


# Platform truth: billable units, bidding strategies, GAQL list sizes ------------------------------


def test_amounts_follow_the_currencys_billable_unit_not_the_iso_exponent(google_ads_fake, make_executor):
    """HUF has two ISO decimals; an account whose billable unit is a whole forint refuses 5000.50."""
    google_ads_fake.set_billable_unit("HUF", 1_000_000)
    google_ads_fake.add_customer("5555555555", currency="HUF")
    google_ads_fake.add_campaign("5555555555", 501, budget_micros=5_000_000_000)
    executor = make_executor(account_id="5555555555", currency="HUF", billable_unit_micros=None)

    (refused,) = executor.apply([Change(campaign_ref(501), Field.DAILY_BUDGET, Decimal("5000.50"))])
    (applied,) = executor.apply([Change(campaign_ref(501), Field.DAILY_BUDGET, Decimal("6000"))])

    assert (refused.status, refused.error.code) == (OutcomeStatus.FAILED, ErrorCode.INVALID_VALUE)
    assert "1.00 HUF" in refused.error.message
    assert applied.status is OutcomeStatus.APPLIED
    assert google_ads_fake.budget_of("5555555555", 501).amount_micros == 6_000_000_000
    queries = [r.query for r in google_ads_fake.requests if "FROM currency_constant" in r.query]
    assert len(queries) == 1  # read once, kept for the executor's life
    assert executor.account_facts() == {"billable_unit_micros": 1_000_000}


def test_the_fake_refuses_an_amount_off_the_billable_unit_as_the_api_does(google_ads_fake, make_executor):
    google_ads_fake.set_billable_unit("HUF", 1_000_000)
    google_ads_fake.add_customer("5555555555", currency="HUF")
    google_ads_fake.add_campaign("5555555555", 501, budget_micros=5_000_000_000)
    trusting = make_executor(account_id="5555555555", currency="HUF", billable_unit_micros=10_000)

    (outcome,) = trusting.apply([Change(campaign_ref(501), Field.DAILY_BUDGET, Decimal("5000.50"))])

    assert outcome.error.raw["errors"] == [("campaign_budget_error", "NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT")]


def test_a_cpc_bid_under_automated_bidding_is_refused_not_reported_applied(brand, google_ads_executor):
    brand.set_bidding_strategy(CID, 111, "TARGET_CPA")

    (outcome,) = google_ads_executor.apply([Change(ad_group_ref(211), Field.BID, Decimal("2.00"))])
    state = google_ads_executor.read_state([ad_group_ref(211), campaign_ref(111)])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.NOT_SUPPORTED)
    assert "TARGET_CPA" in outcome.error.message
    assert brand.mutate_requests() == []
    assert brand.ad_group(CID, 211).cpc_bid_micros == 1_230_000
    assert state[("ad_set", "211")].bid is None  # effective_cpc_bid_micros: no CPC bid in force
    assert state[("ad_set", "211")].bid_strategy == state[("campaign", "111")].bid_strategy == "TARGET_CPA"


def test_a_cpc_bid_under_manual_cpc_is_applied_and_read_back(brand, google_ads_executor):
    (outcome,) = google_ads_executor.apply([Change(ad_group_ref(211), Field.BID, Decimal("2.00"))])

    assert outcome.status is OutcomeStatus.APPLIED
    assert google_ads_executor.read_state([ad_group_ref(211)])[("ad_set", "211")].bid == Decimal("2.00")


def test_id_lists_are_chunked_below_the_apis_filter_limit(google_ads_fake, google_ads_executor):
    for campaign_id in range(1, 2_502):
        google_ads_fake.add_campaign(CID, campaign_id)

    states = google_ads_executor.read_state([campaign_ref(i) for i in range(1, 2_502)])

    assert len(states) == 2_501
    assert len(google_ads_fake.requests) == 3  # 1,000 + 1,000 + 501 ids


def test_the_fake_refuses_a_filter_with_too_many_values(google_ads_fake, google_ads_executor):
    ids = ", ".join(str(i) for i in range(1, 5_002))

    with pytest.raises(PlatformCallError, match="FILTER_HAS_TOO_MANY_VALUES"):
        google_ads_executor._search(f"SELECT campaign.id FROM campaign WHERE campaign.id IN ({ids})")
