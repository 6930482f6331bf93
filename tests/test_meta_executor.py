"""MetaExecutor through the real facebook-business SDK against the local Graph API fake."""

from __future__ import annotations

import json
import math
import socket
import time
from collections import Counter
from dataclasses import replace
from datetime import date
from decimal import Decimal
from types import SimpleNamespace

import pytest
from facebook_business.api import FacebookAdsApi
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

from platforms.fakes.faults import FaultKind, FaultScope
from platforms.fakes.meta_fake import MetaGraphFake
from platforms.meta import MetaExecutor, classify_graph_error, pack_batches, pack_waves, purchases_in
from platforms.types import (
    Change,
    ChangeOutcome,
    EntityRef,
    EntityStatus,
    EntityType,
    ErrorCode,
    Field,
    OutcomeStatus,
    PlatformCallError,
)
from tests.meta_fake_fixtures import META_ACCOUNT, META_TOKEN

GEO_DE = {"geo_locations": {"countries": ["DE"]}}


def campaign(external_id: str) -> EntityRef:
    return EntityRef(EntityType.CAMPAIGN, external_id)


def ad_set(external_id: str, campaign_id: str | None) -> EntityRef:
    return EntityRef(EntityType.AD_SET, external_id, parent_external_id=campaign_id)


def change(ref: EntityRef, field: Field, value: object) -> Change:
    return Change(ref=ref, field=field, value=value, key=f"{ref.external_id}:{field}")


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _session_for(fake: MetaGraphFake) -> FacebookSession:
    """A bare SDK session on the fake, for tests of the SDK and the fake themselves."""
    session = FacebookSession(access_token=META_TOKEN)
    session.GRAPH = fake.base_url
    session.requests.trust_env = False
    return session


def statuses(outcomes: list[ChangeOutcome]) -> list[OutcomeStatus]:
    return [outcome.status for outcome in outcomes]


def error_codes(outcomes: list[ChangeOutcome]) -> list[ErrorCode | None]:
    return [outcome.error.code if outcome.error else None for outcome in outcomes]


@pytest.fixture
def abo(meta_fake: MetaGraphFake) -> dict[str, str]:
    """A campaign whose two ad sets carry their own budgets (no campaign budget)."""
    campaign_id = meta_fake.add_campaign(META_ACCOUNT, name="EU Prospecting")
    return {
        "campaign": campaign_id,
        # bid_amount is a bid cap: the ad set must bid with one (platforms.bidding cites the docs).
        "first": meta_fake.add_ad_set(
            campaign_id,
            name="Lookalike 1%",
            daily_budget=9550,
            bid_amount=180,
            bid_strategy="LOWEST_COST_WITH_BID_CAP",
        ),
        "second": meta_fake.add_ad_set(campaign_id, name="Interests", daily_budget=4000, status="PAUSED"),
    }


@pytest.fixture
def cbo(meta_fake: MetaGraphFake) -> str:
    """A campaign with a campaign budget (CBO) of 460.00 EUR a day."""
    return meta_fake.add_campaign(META_ACCOUNT, name="EU Search - Brand", daily_budget=46000)


# Reading -----------------------------------------------------------------------------


def test_read_state_returns_campaigns_and_ad_sets_in_account_currency(meta_executor, abo, cbo):
    states = meta_executor.read_state([campaign(cbo), ad_set(abo["first"], None), ad_set(abo["second"], None)])

    brand = states[campaign(cbo).key]
    assert (brand.name, brand.status, brand.daily_budget) == ("EU Search - Brand", "active", Decimal("460.00"))
    first = states[ad_set(abo["first"], None).key]
    assert first.parent_external_id == abo["campaign"]
    assert (first.daily_budget, first.bid, first.currency) == (Decimal("95.50"), Decimal("1.80"), "EUR")
    assert first.targeting == GEO_DE
    assert states[ad_set(abo["second"], None).key].status == EntityStatus.PAUSED


def test_read_state_leaves_out_entities_meta_does_not_know(meta_executor, meta_fake, cbo):
    gone = meta_fake.add_campaign(META_ACCOUNT)
    meta_fake.remove(gone)

    states = meta_executor.read_state([campaign(cbo), campaign(gone), campaign("404404")])

    assert list(states) == [campaign(cbo).key]


def test_deleted_entities_read_as_removed(meta_executor, meta_fake, abo):
    meta_fake.faults.add(FaultKind.ENTITY_DELETED, scope=FaultScope.READ, entity_ids=[abo["first"]])

    states = meta_executor.read_state([ad_set(abo["first"], None), ad_set(abo["second"], None)])

    assert states[ad_set(abo["first"], None).key].status == EntityStatus.REMOVED
    assert states[ad_set(abo["second"], None).key].status == EntityStatus.PAUSED


def test_reading_120_entities_takes_three_batch_requests(meta_executor, meta_fake):
    ids = [meta_fake.add_campaign(META_ACCOUNT) for _ in range(120)]

    states = meta_executor.read_state([campaign(i) for i in ids])

    assert len(states) == 120
    assert sorted(request.batch_size for request in meta_fake.requests) == [20, 50, 50]  # sent concurrently
    assert meta_executor.round_trips == 3


def test_reads_go_out_concurrently_but_one_failed_batch_fails_the_read(meta_executor, meta_fake):
    ids = [meta_fake.add_campaign(META_ACCOUNT) for _ in range(200)]
    meta_fake.faults.latency_seconds = 0.2
    meta_fake.faults.add(FaultKind.AUTH_EXPIRED, scope=FaultScope.READ)
    started = time.monotonic()
    with pytest.raises(PlatformCallError) as raised:
        meta_executor.read_state([campaign(i) for i in ids])
    assert raised.value.error.code == ErrorCode.AUTH_EXPIRED
    assert time.monotonic() - started < 0.2 * 4 * 0.9  # four batches did not wait for each other
    assert len(meta_fake.requests) == 4


def test_a_failed_read_raises_the_classified_error(meta_executor, meta_fake, cbo):
    meta_fake.faults.add(FaultKind.RATE_LIMIT, scope=FaultScope.READ, retry_after=300)

    with pytest.raises(PlatformCallError) as raised:
        meta_executor.read_state([campaign(cbo)])

    assert raised.value.error.code == ErrorCode.RATE_LIMITED
    assert raised.value.error.retry_after == 300
    assert not raised.value.ambiguous


def test_list_entities_follows_every_page(meta_executor, meta_fake, abo, cbo):
    extra = [meta_fake.add_campaign(META_ACCOUNT) for _ in range(3)]
    meta_executor.page_size = 2

    entities = meta_executor.list_entities()

    listed = [(entity.entity_type, entity.external_id) for entity in entities]
    campaigns = [(EntityType.CAMPAIGN, i) for i in [abo["campaign"], cbo, *extra]]
    assert listed == [*campaigns, (EntityType.AD_SET, abo["first"]), (EntityType.AD_SET, abo["second"])]
    pages = [request.path.rsplit("/", 1)[1] for request in meta_fake.requests]
    assert pages == ["campaigns"] * 3 + ["adsets"]


def test_test_connection_refuses_an_account_in_another_currency(meta_config, meta_fake):
    executor = MetaExecutor(replace(meta_config, currency="JPY"))

    with pytest.raises(PlatformCallError) as raised:
        executor.test_connection()

    assert raised.value.error.code == ErrorCode.INVALID_VALUE
    assert "bills in EUR" in raised.value.error.message


# Performance -------------------------------------------------------------------------


def march(day: int) -> date:
    return date(2026, 3, day)


@pytest.fixture
def delivering(meta_fake: MetaGraphFake, abo: dict[str, str], cbo: str) -> dict[str, str]:
    """The ABO campaign with two ad sets and the CBO campaign without ad sets; seed 7."""
    meta_fake.performance_seed = 7
    return {**abo, "cbo": cbo}


def test_read_performance_returns_one_row_per_entity_and_day_with_delivery(meta_executor, meta_fake, delivering):
    meta_fake.set_insights(delivering["first"], march(3))  # all zero: no delivery that day
    entities = [
        (EntityType.CAMPAIGN, delivering["campaign"]),
        (EntityType.CAMPAIGN, delivering["cbo"]),
        (EntityType.AD_SET, delivering["first"]),
        (EntityType.AD_SET, delivering["second"]),
    ]

    rows = meta_executor.read_performance(march(1), march(7))

    expected = {
        (entity_type, node_id, march(day)): meta_fake.insights(node_id, march(day))
        for entity_type, node_id in entities
        for day in range(1, 8)
    }
    expected = {key: insights for key, insights in expected.items() if not insights.is_zero}
    assert (EntityType.AD_SET, delivering["first"], march(3)) not in expected
    assert sorted((r.entity_type, r.external_id, r.date) for r in rows) == sorted(expected)
    for row in rows:
        insights = expected[(row.entity_type, row.external_id, row.date)]
        assert row.spend == Decimal(insights.spend) / 100
        assert (row.impressions, row.clicks) == (insights.impressions, insights.clicks)
        assert row.conversions == insights.purchases  # counted once, not once per overlapping action type
        assert row.revenue == Decimal(insights.purchase_value) / 100


def test_a_campaigns_insights_are_the_sum_of_its_ad_sets(meta_executor, delivering):
    rows = {(r.external_id, r.date): r for r in meta_executor.read_performance(march(2), march(2))}

    parts = [rows[(delivering[name], march(2))] for name in ("first", "second") if (delivering[name], march(2)) in rows]
    assert rows[(delivering["campaign"], march(2))].spend == sum(part.spend for part in parts)


def test_insights_are_read_per_level_and_day_page_by_page(meta_executor, meta_fake, delivering):
    meta_executor.insights_page_size = 4

    rows = meta_executor.read_performance(march(1), march(3))

    requests = meta_fake.requests
    assert {r.path for r in requests} == {f"/v26.0/{META_ACCOUNT}/insights"}
    per_level = Counter(row.entity_type for row in rows)
    pages = [max(1, math.ceil(per_level[entity_type] / 4)) for entity_type in (EntityType.CAMPAIGN, EntityType.AD_SET)]
    assert max(pages) > 1  # the test pages for real
    assert [r.params["level"] for r in requests] == ["campaign"] * pages[0] + ["adset"] * pages[1]
    assert meta_executor.round_trips == len(requests)
    first = requests[0].params
    assert (first["time_increment"], json.loads(first["time_range"])) == (
        "1",
        {"since": "2026-03-01", "until": "2026-03-03"},
    )
    assert first["fields"].split(",")[0] == "campaign_id"
    assert {"spend", "impressions", "clicks", "actions", "action_values"} <= set(first["fields"].split(","))


def test_the_first_and_last_day_are_included_and_days_outside_are_not(meta_executor, meta_fake, cbo):
    for day in (1, 3, 4):
        meta_fake.set_insights(cbo, march(day), spend=100, impressions=10)
    meta_fake.set_insights(cbo, march(2))  # no delivery

    rows = meta_executor.read_performance(march(1), march(3))

    assert [(r.external_id, r.date) for r in rows] == [(cbo, march(1)), (cbo, march(3))]


def test_insights_money_is_read_as_decimal_strings_in_the_account_currency(meta_executor, meta_fake, cbo):
    meta_fake.set_insights(cbo, march(1), spend=123456, impressions=9000, clicks=321, purchases=7, purchase_value=98765)
    meta_fake.set_insights(cbo, march(2), spend=5, impressions=40, clicks=0)

    with_purchases, without = meta_executor.read_performance(march(1), march(2))

    assert (with_purchases.spend, with_purchases.impressions, with_purchases.clicks) == (Decimal("1234.56"), 9000, 321)
    assert (with_purchases.conversions, with_purchases.revenue) == (Decimal("7.00"), Decimal("987.65"))
    assert (without.spend, without.conversions, without.revenue) == (Decimal("0.05"), Decimal("0.00"), Decimal("0.00"))


def test_insights_of_a_jpy_account_are_in_whole_yen(meta_config, meta_fake):
    meta_fake.add_account("act_2000", currency="JPY")
    campaign_id = meta_fake.add_campaign("act_2000")
    meta_fake.set_insights(campaign_id, march(1), spend=1500, impressions=20, purchases=1, purchase_value=4200)
    executor = MetaExecutor(replace(meta_config, account_id="2000", currency="JPY"))

    (row,) = executor.read_performance(march(1), march(1))

    assert (row.spend, row.revenue) == (Decimal("1500"), Decimal("4200"))


def test_purchases_are_taken_from_the_first_action_type_meta_reports():
    def row(actions: list[tuple[str, str]]) -> list[dict[str, str]]:
        return [{"action_type": action_type, "value": value} for action_type, value in actions]

    assert purchases_in(row([("link_click", "40"), ("purchase", "3"), ("omni_purchase", "4")])) == 4
    assert purchases_in(row([("offsite_conversion.fb_pixel_purchase", "2.5")])) == Decimal("2.5")
    assert purchases_in(row([("link_click", "40")])) == 0
    assert purchases_in(None) == 0


def test_read_performance_refuses_a_reversed_range_without_a_request(meta_executor, meta_fake):
    with pytest.raises(ValueError, match="after"):
        meta_executor.read_performance(march(7), march(1))

    assert meta_fake.requests == []


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (FaultKind.RATE_LIMIT, ErrorCode.RATE_LIMITED),
        (FaultKind.SERVER_ERROR, ErrorCode.TRANSIENT),
        (FaultKind.HTML_502, ErrorCode.TRANSIENT),
        (FaultKind.TIMEOUT_BEFORE_APPLY, ErrorCode.TRANSIENT),
        (FaultKind.AUTH_EXPIRED, ErrorCode.AUTH_EXPIRED),
        (FaultKind.PERMISSION_DENIED, ErrorCode.PERMISSION_DENIED),
    ],
)
def test_a_failed_insights_read_raises_a_classified_error(meta_executor, meta_fake, delivering, fault, expected):
    meta_fake.faults.add(fault, scope=FaultScope.READ, retry_after=180)

    with pytest.raises(PlatformCallError) as raised:
        meta_executor.read_performance(march(1), march(7))

    assert raised.value.error.code == expected
    assert not raised.value.ambiguous  # a read changes nothing
    assert [request.fault for request in meta_fake.requests] == [str(fault)]
    if expected == ErrorCode.RATE_LIMITED:
        assert raised.value.error.retry_after == 180.0
    assert META_TOKEN not in raised.value.error.message


def test_the_fake_refuses_insights_without_a_daily_time_range(meta_fake, cbo):
    api = FacebookAdsApi(_session_for(meta_fake), api_version="v26.0")

    with pytest.raises(FacebookRequestError, match="time_range"):
        api.call("GET", (META_ACCOUNT, "insights"), params={"level": "campaign", "time_increment": "1"})
    with pytest.raises(FacebookRequestError, match="time_increment"):
        api.call("GET", (META_ACCOUNT, "insights"), params={"level": "campaign", "time_increment": "all_days"})


# Writing -----------------------------------------------------------------------------


def test_budget_status_and_bid_changes_are_applied_and_read_back(meta_executor, meta_fake, abo, cbo):
    first = ad_set(abo["first"], abo["campaign"])
    changes = [
        change(campaign(cbo), Field.DAILY_BUDGET, Decimal("480.00")),
        change(first, Field.BID, Decimal("2.05")),
        change(ad_set(abo["second"], abo["campaign"]), Field.STATUS, EntityStatus.ACTIVE),
    ]

    outcomes = meta_executor.apply(changes)

    assert statuses(outcomes) == [OutcomeStatus.APPLIED] * 3
    states = meta_executor.read_state([campaign(cbo), first, ad_set(abo["second"], None)])
    assert states[campaign(cbo).key].daily_budget == Decimal("480.00")
    assert states[first.key].bid == Decimal("2.05")
    assert states[ad_set(abo["second"], None).key].status == EntityStatus.ACTIVE
    assert meta_fake.node(cbo)["daily_budget"] == 48000


def test_two_fields_of_one_ad_set_travel_as_one_post(meta_executor, meta_fake, abo):
    first = ad_set(abo["first"], abo["campaign"])

    outcomes = meta_executor.apply([change(first, Field.DAILY_BUDGET, Decimal("99")), change(first, Field.BID, "1.5")])

    assert statuses(outcomes) == [OutcomeStatus.APPLIED] * 2
    bid_strategy_read, batch = meta_fake.batches()  # a bid is sent only under a strategy that uses it
    assert not bid_strategy_read.is_write
    assert batch.item_ids == (abo["first"],)
    assert (meta_fake.node(abo["first"])["daily_budget"], meta_fake.node(abo["first"])["bid_amount"]) == (9900, 150)


def test_validate_only_changes_nothing_and_reports_validated(meta_executor, meta_fake, abo, cbo):
    changes = [
        change(campaign(cbo), Field.DAILY_BUDGET, Decimal("500.00")),
        change(ad_set(abo["first"], abo["campaign"]), Field.STATUS, EntityStatus.PAUSED),
    ]

    outcomes = meta_executor.apply(changes, validate_only=True)

    assert statuses(outcomes) == [OutcomeStatus.VALIDATED] * 2
    (batch,) = meta_fake.batches()
    assert batch.validate_only
    assert meta_fake.node(cbo)["daily_budget"] == 46000
    assert meta_fake.node(abo["first"])["status"] == "ACTIVE"


def test_validate_only_reports_what_meta_would_refuse(meta_executor, meta_fake, cbo):
    ad_set_id = meta_fake.add_ad_set(cbo)

    (outcome,) = meta_executor.apply([change(ad_set(ad_set_id, cbo), Field.DAILY_BUDGET, "20")], validate_only=True)

    assert outcome.status == OutcomeStatus.FAILED
    assert outcome.error.code == ErrorCode.INVALID_VALUE
    assert "campaign budget" in outcome.error.message
    assert meta_fake.node(ad_set_id)["daily_budget"] is None


def test_partial_failure_fails_only_the_refused_change(meta_executor, meta_fake, abo, cbo):
    meta_fake.faults.add(FaultKind.PARTIAL_FAILURE, entity_ids=[abo["first"]])
    changes = [
        change(ad_set(abo["first"], abo["campaign"]), Field.DAILY_BUDGET, Decimal("120")),
        change(campaign(cbo), Field.DAILY_BUDGET, Decimal("470")),
    ]

    outcomes = meta_executor.apply(changes)

    assert statuses(outcomes) == [OutcomeStatus.FAILED, OutcomeStatus.APPLIED]
    assert outcomes[0].error.code == ErrorCode.INVALID_VALUE
    assert outcomes[0].error.request_id  # Meta's fbtrace_id, for support tickets
    assert meta_fake.node(abo["first"])["daily_budget"] == 9550
    assert meta_fake.node(cbo)["daily_budget"] == 47000


def test_120_ad_set_changes_take_three_batches_without_repeating_a_campaign(meta_executor, meta_fake):
    # 40 campaigns with 3 ad sets each, listed campaign by campaign: cutting this list into
    # chunks of 50 would put up to 3 ad sets of one campaign into the same batch.
    refs = []
    for _ in range(40):
        campaign_id = meta_fake.add_campaign(META_ACCOUNT)
        refs += [ad_set(meta_fake.add_ad_set(campaign_id, daily_budget=1000), campaign_id) for _ in range(3)]

    outcomes = meta_executor.apply([change(ref, Field.DAILY_BUDGET, Decimal("12.34")) for ref in refs])

    assert statuses(outcomes) == [OutcomeStatus.APPLIED] * 120
    batches = meta_fake.batches()
    assert len(batches) == 3 and meta_executor.round_trips == 3
    assert all(batch.batch_size <= 50 and batch.repeated_campaigns == () for batch in batches)
    assert {meta_fake.node(ref.external_id)["daily_budget"] for ref in refs} == {1234}


def test_a_campaign_and_its_ad_set_go_in_different_batches(meta_executor, meta_fake, abo):
    changes = [
        change(campaign(abo["campaign"]), Field.STATUS, EntityStatus.PAUSED),
        change(ad_set(abo["first"], abo["campaign"]), Field.STATUS, EntityStatus.PAUSED),
    ]

    assert statuses(meta_executor.apply(changes)) == [OutcomeStatus.APPLIED] * 2
    assert [batch.item_ids for batch in meta_fake.batches()] == [(abo["campaign"],), (abo["first"],)]


def test_packing_meets_the_lower_bound_for_uneven_campaigns():
    # 150 writes, 4 of them in one campaign: 4 batches are needed, and 4 suffice.
    posts = [SimpleNamespace(family=family) for family in ["big"] * 4 + [f"c{i}" for i in range(146)]]

    batches = pack_batches(posts)

    assert [len(batch) for batch in batches] == [38, 38, 37, 37]
    assert all(len({post.family for post in batch}) == len(batch) for batch in batches)


def test_writes_go_out_in_waves_fenced_and_throttled_once_each(meta_config, meta_fake):
    campaigns = [meta_fake.add_campaign(META_ACCOUNT, daily_budget=10_000) for _ in range(400)]
    meta_fake.faults.latency_seconds = 0.2
    fenced: list[int] = []
    throttled: list[int] = []
    executor = MetaExecutor(meta_config, throttle=throttled.append)
    executor.before_write = lambda changes: fenced.append(len(changes))
    started = time.monotonic()

    outcomes = executor.apply([change(campaign(c), Field.DAILY_BUDGET, Decimal("120")) for c in campaigns])

    assert statuses(outcomes) == [OutcomeStatus.APPLIED] * 400
    assert fenced == [200, 200]  # one fence (and request_sent) per wave of four batches, not per batch
    assert throttled == [600, 600]  # 3 points a write, taken once per wave
    assert executor.round_trips == 8 and len([b for b in meta_fake.batches() if b.is_write]) == 8
    assert time.monotonic() - started < 0.2 * 8 * 0.6  # the batches of a wave did not wait for each other


def _siblings_and_others(meta_fake) -> list:
    """Six ad sets of one campaign among 300 other campaigns' writes."""
    big = meta_fake.add_campaign(META_ACCOUNT)
    siblings = [meta_fake.add_ad_set(big) for _ in range(6)]
    others = [meta_fake.add_campaign(META_ACCOUNT, daily_budget=10_000) for _ in range(300)]
    return [change(ad_set(s, big), Field.DAILY_BUDGET, Decimal("10")) for s in siblings] + [
        change(campaign(c), Field.DAILY_BUDGET, Decimal("120")) for c in others
    ]


def test_no_two_writes_of_one_campaign_are_in_flight_at_once(meta_config, meta_fake):
    changes = _siblings_and_others(meta_fake)
    meta_fake.faults.latency_seconds = 0.05  # the batches of a wave overlap at the fake
    waves: list[list[str]] = []
    executor = MetaExecutor(meta_config)
    executor.before_write = lambda changes: waves.append(
        [c.ref.parent_external_id or c.ref.external_id for c in changes]
    )

    outcomes = executor.apply(changes)

    assert statuses(outcomes) == [OutcomeStatus.APPLIED] * 306
    assert len(waves) == 6  # the six ad sets of one campaign need six waves; 306 writes fit in them
    writes = [b for b in meta_fake.batches() if b.is_write]
    assert len(writes) > len(waves)  # several batches per wave were in flight together ...
    assert all(b.overlapping_campaigns == () for b in writes)  # ... never two of one campaign


def test_the_fake_sees_two_writes_of_one_campaign_in_flight(meta_config, meta_fake, monkeypatch):
    # The check above can fail: waves that ignore campaigns put siblings in flight together.
    changes = _siblings_and_others(meta_fake)
    meta_fake.faults.latency_seconds = 0.05
    monkeypatch.setattr("platforms.meta.pack_waves", lambda posts, *, in_flight: [[[post] for post in posts]])

    MetaExecutor(meta_config).apply(changes[:4])  # four ad sets of one campaign, one wave

    assert any(b.overlapping_campaigns for b in meta_fake.batches() if b.is_write)


def test_waves_are_as_few_as_the_campaign_rule_allows():
    posts = [SimpleNamespace(family=family) for family in ["big"] * 3 + [f"c{i}" for i in range(447)]]

    waves = pack_waves(posts, in_flight=4)

    assert [[len(batch) for batch in wave] for wave in waves] == [[50, 50, 50]] * 3
    assert all(len({p.family for batch in wave for p in batch}) == sum(map(len, wave)) for wave in waves)
    assert [[len(batch) for batch in wave] for wave in pack_waves(posts[:120], in_flight=1)] == [[40]] * 3


def test_ad_sets_without_a_known_campaign_are_looked_up_before_batching(meta_executor, meta_fake, abo):
    changes = [change(ad_set(abo[name], None), Field.DAILY_BUDGET, Decimal("10")) for name in ("first", "second")]

    outcomes = meta_executor.apply(changes)

    assert statuses(outcomes) == [OutcomeStatus.APPLIED] * 2
    read, *writes = meta_fake.batches()
    assert read.item_methods == ("GET", "GET")
    assert [w.item_ids for w in writes] == [(abo["first"],), (abo["second"],)]


def test_jpy_budgets_round_trip_in_whole_yen(meta_config, meta_fake):
    meta_fake.add_account("act_2000", currency="JPY")
    campaign_id = meta_fake.add_campaign("act_2000", daily_budget=50000)
    executor = MetaExecutor(replace(meta_config, account_id="2000", currency="JPY"))

    before = executor.read_state([campaign(campaign_id)])[campaign(campaign_id).key].daily_budget
    executor.apply([change(campaign(campaign_id), Field.DAILY_BUDGET, Decimal("65000"))])
    after = executor.read_state([campaign(campaign_id)])[campaign(campaign_id).key].daily_budget

    assert (before, after) == (Decimal("50000"), Decimal("65000"))
    assert meta_fake.node(campaign_id)["daily_budget"] == 65000


def test_a_sub_cent_eur_value_is_refused_without_being_sent(meta_executor, meta_fake, cbo):
    (outcome,) = meta_executor.apply([change(campaign(cbo), Field.DAILY_BUDGET, Decimal("460.005"))])

    assert outcome.status == OutcomeStatus.FAILED
    assert outcome.error.code == ErrorCode.INVALID_VALUE
    assert "smallest amount Meta accepts in EUR" in outcome.error.message
    assert meta_fake.requests == []


def test_targeting_and_schedule_are_written_to_ad_sets(meta_executor, meta_fake, abo):
    meta_fake.add_ad_set(abo["campaign"])  # unused sibling: the lifetime-budget ad set below stands alone
    lifetime = meta_fake.add_ad_set(abo["campaign"], lifetime_budget=100000)
    ref = ad_set(lifetime, abo["campaign"])
    day_parts = [{"start_minute": 480, "end_minute": 1200, "days": [1, 2, 3, 4, 5]}]
    targeting = {"geo_locations": {"countries": ["AT", "DE"]}, "age_min": 25}

    outcomes = meta_executor.apply(
        [change(ref, Field.TARGETING, targeting), change(ref, Field.SCHEDULE, {"day_parts": day_parts})]
    )

    assert statuses(outcomes) == [OutcomeStatus.APPLIED] * 2
    state = meta_executor.read_state([ref])[ref.key]
    assert (state.targeting, state.schedule) == (targeting, {"day_parts": day_parts})


def test_changes_meta_cannot_make_are_not_supported_and_not_sent(meta_executor, meta_fake, abo, cbo):
    changes = [
        change(campaign(cbo), Field.BID, Decimal("1.00")),
        change(EntityRef(EntityType.AD, "777"), Field.STATUS, EntityStatus.PAUSED),
        change(ad_set(abo["first"], abo["campaign"]), Field.STATUS, EntityStatus.REMOVED),
        change(campaign(cbo), Field.TARGETING, GEO_DE),
    ]

    outcomes = meta_executor.apply(changes)

    assert error_codes(outcomes) == [ErrorCode.NOT_SUPPORTED] * 4
    assert meta_fake.requests == []


def test_a_silent_no_op_is_reported_as_meta_reported_it(meta_executor, meta_fake, cbo):
    meta_fake.faults.add(FaultKind.SILENT_NOOP, entity_ids=[cbo])

    (outcome,) = meta_executor.apply([change(campaign(cbo), Field.DAILY_BUDGET, Decimal("999.00"))])

    # Meta said success; only the engine's read-back can tell that nothing changed.
    assert outcome.status == OutcomeStatus.APPLIED
    assert meta_executor.read_state([campaign(cbo)])[campaign(cbo).key].daily_budget == Decimal("460.00")


def test_outcomes_carry_meta_request_ids(meta_executor, meta_fake, cbo):
    (outcome,) = meta_executor.apply([change(campaign(cbo), Field.STATUS, EntityStatus.PAUSED)])

    assert outcome.request_id


def test_throttle_is_asked_before_every_request_for_its_points(meta_config, meta_fake, abo, cbo):
    """Meta scores a write 3 points and a read 1 (marketing-api rate limiting): the throttle
    is asked for points, not for calls."""
    asked: list[int] = []
    executor = MetaExecutor(meta_config, throttle=asked.append)
    changes = [change(ad_set(abo[n], abo["campaign"]), Field.STATUS, EntityStatus.PAUSED) for n in ("first", "second")]

    executor.apply([change(campaign(cbo), Field.STATUS, EntityStatus.PAUSED), *changes])
    executor.list_entities()

    assert asked == [2 * 3, 1 * 3, 1, 1]  # two write batches, then a page of campaigns and of ad sets
    assert executor.round_trips == len(meta_fake.requests) == 4


def test_the_process_wide_default_api_is_never_set(meta_executor, cbo):
    meta_executor.apply([change(campaign(cbo), Field.STATUS, EntityStatus.PAUSED)])

    assert FacebookAdsApi.get_default_api() is None
    assert FacebookSession.GRAPH == "https://graph.facebook.com"


def test_appsecret_proof_is_sent_when_an_app_secret_is_configured(meta_config, meta_fake, cbo, monkeypatch):
    monkeypatch.setattr(meta_fake, "app_secret", "app-secret-1")
    credentials = {**meta_config.credentials, "app_secret": "app-secret-1"}

    executor = MetaExecutor(replace(meta_config, credentials=credentials))

    assert campaign(cbo).key in executor.read_state([campaign(cbo)])
    assert "appsecret_proof" not in meta_fake.requests[0].params  # the log never keeps secrets


# Error taxonomy ----------------------------------------------------------------------


def test_a_rate_limited_request_says_when_to_retry_and_stops_the_rest(meta_executor, meta_fake, abo, cbo):
    meta_fake.faults.add(FaultKind.RATE_LIMIT, retry_after=120)
    changes = [change(campaign(cbo), Field.STATUS, EntityStatus.PAUSED)] + [
        change(ad_set(abo[n], abo["campaign"]), Field.STATUS, EntityStatus.PAUSED) for n in ("first", "second")
    ]

    outcomes = meta_executor.apply(changes)

    assert error_codes(outcomes) == [ErrorCode.RATE_LIMITED] * 3
    assert {outcome.error.retry_after for outcome in outcomes} == {120.0}  # 2 minutes in the usage header
    assert len(meta_fake.batches()) == 1  # the second batch was not sent into the rate limit


def test_a_rate_limit_on_one_batch_item_fails_only_that_change(meta_executor, meta_fake, abo, cbo):
    meta_fake.faults.add(FaultKind.RATE_LIMIT, entity_ids=[cbo], retry_after=600)
    changes = [
        change(campaign(cbo), Field.STATUS, EntityStatus.PAUSED),
        change(ad_set(abo["first"], abo["campaign"]), Field.STATUS, EntityStatus.PAUSED),
    ]

    outcomes = meta_executor.apply(changes)

    assert statuses(outcomes) == [OutcomeStatus.FAILED, OutcomeStatus.APPLIED]
    assert (outcomes[0].error.code, outcomes[0].error.retry_after) == (ErrorCode.RATE_LIMITED, 600.0)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (FaultKind.SERVER_ERROR, ErrorCode.TRANSIENT),
        (FaultKind.AUTH_EXPIRED, ErrorCode.AUTH_EXPIRED),
        (FaultKind.PERMISSION_DENIED, ErrorCode.PERMISSION_DENIED),
        (FaultKind.INVALID_VALUE, ErrorCode.INVALID_VALUE),
        (FaultKind.CONFLICT, ErrorCode.CONFLICT),
    ],
)
def test_a_failed_write_request_is_classified(meta_executor, meta_fake, cbo, fault, expected):
    meta_fake.faults.add(fault)

    (outcome,) = meta_executor.apply([change(campaign(cbo), Field.DAILY_BUDGET, Decimal("470"))])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, expected)
    assert outcome.error.retryable == (expected in (ErrorCode.TRANSIENT, ErrorCode.CONFLICT))
    assert meta_fake.node(cbo)["daily_budget"] == 46000


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (FaultKind.SERVER_ERROR, ErrorCode.TRANSIENT),
        (FaultKind.AUTH_EXPIRED, ErrorCode.AUTH_EXPIRED),
        (FaultKind.PERMISSION_DENIED, ErrorCode.PERMISSION_DENIED),
        (FaultKind.ENTITY_DELETED, ErrorCode.NOT_FOUND),
        (FaultKind.CONFLICT, ErrorCode.CONFLICT),
    ],
)
def test_a_failed_batch_item_is_classified(meta_executor, meta_fake, abo, cbo, fault, expected):
    meta_fake.faults.add(fault, entity_ids=[cbo])
    changes = [
        change(campaign(cbo), Field.DAILY_BUDGET, Decimal("470")),
        change(ad_set(abo["first"], abo["campaign"]), Field.DAILY_BUDGET, Decimal("96")),
    ]

    outcomes = meta_executor.apply(changes)

    assert error_codes(outcomes) == [expected, None]


def test_an_html_502_on_a_write_is_unknown_for_every_change_of_the_request(meta_executor, meta_fake, abo, cbo):
    # The 502 page comes from a proxy that may have forwarded the batch before failing.
    meta_fake.faults.add(FaultKind.HTML_502)
    changes = [
        change(campaign(cbo), Field.DAILY_BUDGET, Decimal("470")),
        change(ad_set(abo["first"], abo["campaign"]), Field.DAILY_BUDGET, Decimal("96")),
        change(ad_set(abo["first"], abo["campaign"]), Field.BID, Decimal("2.10")),
    ]

    outcomes = meta_executor.apply(changes)

    assert statuses(outcomes) == [OutcomeStatus.UNKNOWN] * 3
    assert error_codes(outcomes) == [ErrorCode.TRANSIENT] * 3
    assert "read the entities before sending it again" in outcomes[0].error.message
    assert len([b for b in meta_fake.batches() if b.is_write]) == 1


def test_an_html_502_on_a_validate_only_write_is_a_plain_failure(meta_executor, meta_fake, cbo):
    meta_fake.faults.add(FaultKind.HTML_502)

    (outcome,) = meta_executor.apply([change(campaign(cbo), Field.DAILY_BUDGET, Decimal("470"))], validate_only=True)

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.TRANSIENT)


def test_a_timed_out_validate_only_write_is_a_plain_failure(meta_executor, meta_fake, cbo):
    meta_fake.faults.add(FaultKind.TIMEOUT_AFTER_APPLY)

    (outcome,) = meta_executor.apply([change(campaign(cbo), Field.DAILY_BUDGET, Decimal("470"))], validate_only=True)

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.TRANSIENT)
    assert meta_fake.node(cbo)["daily_budget"] == 46000


def test_an_html_502_on_a_read_is_transient_and_not_ambiguous(meta_executor, meta_fake, cbo):
    meta_fake.faults.add(FaultKind.HTML_502, scope=FaultScope.READ)

    with pytest.raises(PlatformCallError) as raised:
        meta_executor.read_state([campaign(cbo)])

    assert (raised.value.error.code, raised.value.ambiguous) == (ErrorCode.TRANSIENT, False)
    assert raised.value.error.raw == {"http_status": 502}


def test_the_sdk_itself_raises_type_error_on_an_html_502_page(meta_fake):
    # Why MetaExecutor inspects bodies before the SDK does (see PLATFORM_NOTES.md).
    meta_fake.faults.add(FaultKind.HTML_502, scope=FaultScope.READ)

    with pytest.raises(TypeError):
        FacebookAdsApi(_session_for(meta_fake), api_version="v26.0").call("GET", (META_ACCOUNT,))


def test_a_timeout_after_meta_applied_the_change_is_unknown(meta_executor, meta_fake, cbo):
    meta_fake.faults.add(FaultKind.TIMEOUT_AFTER_APPLY)

    (outcome,) = meta_executor.apply([change(campaign(cbo), Field.DAILY_BUDGET, Decimal("470"))])

    assert outcome.status == OutcomeStatus.UNKNOWN
    assert outcome.error.code == ErrorCode.TRANSIENT
    assert meta_fake.node(cbo)["daily_budget"] == 47000  # it did apply: the engine reconciles by reading


def test_a_timeout_before_meta_applied_the_change_is_still_unknown(meta_executor, meta_fake, cbo):
    meta_fake.faults.add(FaultKind.TIMEOUT_BEFORE_APPLY)

    (outcome,) = meta_executor.apply([change(campaign(cbo), Field.DAILY_BUDGET, Decimal("470"))])

    assert outcome.status == OutcomeStatus.UNKNOWN  # the client cannot tell the two timeouts apart
    assert meta_fake.node(cbo)["daily_budget"] == 46000


def test_a_batch_item_meta_did_not_finish_is_unknown(meta_executor, meta_fake, abo, cbo):
    meta_fake.faults.add(FaultKind.TIMEOUT_AFTER_APPLY, entity_ids=[cbo])
    changes = [
        change(campaign(cbo), Field.DAILY_BUDGET, Decimal("470")),
        change(ad_set(abo["first"], abo["campaign"]), Field.DAILY_BUDGET, Decimal("96")),
    ]

    outcomes = meta_executor.apply(changes)

    assert statuses(outcomes) == [OutcomeStatus.UNKNOWN, OutcomeStatus.APPLIED]
    assert meta_fake.node(cbo)["daily_budget"] == 47000


def test_a_timed_out_read_is_a_transient_error(meta_executor, meta_fake, cbo):
    meta_fake.faults.add(FaultKind.TIMEOUT_BEFORE_APPLY, scope=FaultScope.READ)

    with pytest.raises(PlatformCallError) as raised:
        meta_executor.read_state([campaign(cbo)])

    assert raised.value.error.code == ErrorCode.TRANSIENT


def test_an_unreachable_endpoint_fails_without_ambiguity(meta_config, cbo):
    unreachable = MetaExecutor(replace(meta_config, api_base_url=closed_port_url()))

    (outcome,) = unreachable.apply([change(campaign(cbo), Field.STATUS, EntityStatus.PAUSED)])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.TRANSIENT)


def test_a_revoked_token_is_auth_expired(meta_config, meta_fake, cbo):
    executor = MetaExecutor(replace(meta_config, credentials={"access_token": "revoked-token-123"}))

    with pytest.raises(PlatformCallError) as raised:
        executor.read_state([campaign(cbo)])

    assert raised.value.error.code == ErrorCode.AUTH_EXPIRED


@pytest.mark.parametrize(
    "fault", [FaultKind.AUTH_EXPIRED, FaultKind.TIMEOUT_BEFORE_APPLY, FaultKind.HTML_502, FaultKind.INVALID_VALUE]
)
def test_the_access_token_never_appears_in_an_error(meta_executor, meta_fake, cbo, fault):
    meta_fake.faults.add(fault)

    (outcome,) = meta_executor.apply([change(campaign(cbo), Field.STATUS, EntityStatus.PAUSED)])

    assert outcome.error is not None
    assert META_TOKEN not in json.dumps({**outcome.error.as_dict(), "raw": outcome.error.raw})


def test_the_access_token_never_appears_when_meta_is_unreachable(meta_config):
    executor = MetaExecutor(replace(meta_config, api_base_url=closed_port_url()))

    with pytest.raises(PlatformCallError) as raised:
        executor.list_entities()

    assert META_TOKEN not in str(raised.value) + json.dumps(raised.value.error.as_dict())


@pytest.mark.parametrize(
    ("error", "http_status", "expected"),
    [
        ({"code": 17, "error_subcode": 2446079}, 400, ErrorCode.RATE_LIMITED),
        ({"code": 80004}, 400, ErrorCode.RATE_LIMITED),
        ({"code": 613}, 400, ErrorCode.RATE_LIMITED),
        ({"code": 190, "error_subcode": 463}, 400, ErrorCode.AUTH_EXPIRED),
        ({"code": 10}, 400, ErrorCode.PERMISSION_DENIED),
        ({"code": 294}, 403, ErrorCode.PERMISSION_DENIED),
        ({"code": 100, "error_subcode": 33}, 400, ErrorCode.NOT_FOUND),
        ({"code": 100, "message": "Object with ID '1' does not exist"}, 400, ErrorCode.NOT_FOUND),
        ({"code": 100, "error_subcode": 1885272}, 400, ErrorCode.INVALID_VALUE),
        ({"code": 1, "error_subcode": 1487390}, 400, ErrorCode.INVALID_VALUE),
        ({"code": 2, "is_transient": True}, 503, ErrorCode.TRANSIENT),
        ({"code": 1}, 500, ErrorCode.TRANSIENT),
        ({"code": 9999}, 502, ErrorCode.TRANSIENT),
        ({"code": 2, "message": "Another update is in progress"}, 503, ErrorCode.CONFLICT),
        ({"code": 9999}, 400, ErrorCode.UNKNOWN),
    ],
)
def test_graph_errors_map_onto_the_taxonomy(error, http_status, expected):
    assert classify_graph_error(error, http_status) == expected


def test_the_fake_answers_multi_id_reads_like_meta(meta_fake, abo):
    api = FacebookAdsApi(_session_for(meta_fake), api_version="v26.0")

    found = api.call("GET", ("",), params={"ids": f"{abo['first']},{abo['second']}", "fields": "name"}).json()
    with pytest.raises(FacebookRequestError) as missing:
        api.call("GET", ("",), params={"ids": f"{abo['first']},404404", "fields": "name"})

    assert {row["name"] for row in found.values()} == {"Lookalike 1%", "Interests"}
    assert missing.value.api_error_code() == 803


def test_the_fake_refuses_batches_of_more_than_fifty_requests(meta_fake, cbo):
    batch = FacebookAdsApi(_session_for(meta_fake), api_version="v26.0").new_batch()
    for _ in range(51):
        batch.add("GET", (cbo,), params={"fields": "name"})

    with pytest.raises(FacebookRequestError, match="Maximum batch size is 50"):
        batch.execute()


def test_a_bare_account_number_is_accepted(meta_config):
    assert MetaExecutor(replace(meta_config, account_id="1000")).account_id == "act_1000"


def test_a_connection_without_a_token_is_refused_at_once(meta_config):
    with pytest.raises(ValueError, match="no access_token"):
        MetaExecutor(replace(meta_config, credentials={}))


# Platform truth: offsets, the budget-change limit, bid strategies, throttles, minimum budgets -----


@pytest.fixture
def huf_executor(meta_fake: MetaGraphFake, meta_config) -> MetaExecutor:
    meta_fake.add_account("act_2000", currency="HUF")
    return MetaExecutor(replace(meta_config, account_id="act_2000", currency="HUF"))


def test_a_5000_huf_budget_is_sent_as_5000_and_read_back_as_5000(meta_fake, huf_executor):
    """Meta's offset for HUF is 1: the integer is the amount (ISO's two decimals would send 500000)."""
    campaign_id = meta_fake.add_campaign("act_2000", daily_budget=4000)

    (outcome,) = huf_executor.apply([change(campaign(campaign_id), Field.DAILY_BUDGET, Decimal("5000"))])

    assert outcome.status is OutcomeStatus.APPLIED
    assert meta_fake.node(campaign_id)["daily_budget"] == 5000
    assert huf_executor.read_state([campaign(campaign_id)])[campaign(campaign_id).key].daily_budget == Decimal("5000")


def test_a_bhd_budget_is_counted_in_hundredths_not_thousandths(meta_fake, meta_config):
    meta_fake.add_account("act_3000", currency="BHD")
    executor = MetaExecutor(replace(meta_config, account_id="act_3000", currency="BHD"))
    campaign_id = meta_fake.add_campaign("act_3000", daily_budget=1000)

    applied, refused = executor.apply(
        [
            change(campaign(campaign_id), Field.DAILY_BUDGET, Decimal("10.50")),
            change(ad_set("999", campaign_id), Field.DAILY_BUDGET, Decimal("10.505")),
        ]
    )

    assert applied.status is OutcomeStatus.APPLIED
    assert meta_fake.node(campaign_id)["daily_budget"] == 1050  # 10.500 BHD, not 1.050
    assert (refused.status, refused.error.code) == (OutcomeStatus.FAILED, ErrorCode.INVALID_VALUE)


def test_a_fifth_budget_change_in_an_hour_is_an_entity_scoped_rate_limit_of_one_hour(meta_executor, meta_fake, abo):
    first = ad_set(abo["first"], abo["campaign"])
    for amount in ("91", "92", "93", "94"):
        assert statuses(meta_executor.apply([change(first, Field.DAILY_BUDGET, Decimal(amount))])) == [
            OutcomeStatus.APPLIED
        ]

    (fifth,) = meta_executor.apply([change(first, Field.DAILY_BUDGET, Decimal("95"))])

    assert (fifth.status, fifth.error.code) == (OutcomeStatus.FAILED, ErrorCode.RATE_LIMITED)
    assert (fifth.error.retry_after, fifth.error.scope) == (3600.0, "entity")
    assert "4 budget changes per ad set per hour" in fifth.error.message
    assert meta_fake.node(abo["first"])["daily_budget"] == 9400


def test_the_fake_blocks_an_ad_sets_budget_for_an_hour_after_the_fifth_change(meta_executor, meta_fake, abo):
    now = [1000.0]
    meta_fake.clock = lambda: now[0]
    first = ad_set(abo["first"], abo["campaign"])
    for amount in ("91", "92", "93", "94", "95"):
        meta_executor.apply([change(first, Field.DAILY_BUDGET, Decimal(amount))])
    now[0] += 3599  # the first four changes are an hour old, the block is not
    (blocked,) = meta_executor.apply([change(first, Field.DAILY_BUDGET, Decimal("96"))])
    now[0] += 2
    (allowed,) = meta_executor.apply([change(first, Field.DAILY_BUDGET, Decimal("96"))])

    assert blocked.error.code is ErrorCode.RATE_LIMITED
    assert allowed.status is OutcomeStatus.APPLIED


def test_a_bid_under_a_strategy_without_caps_is_refused_without_being_sent(meta_executor, meta_fake, abo):
    second = ad_set(abo["second"], abo["campaign"])  # bids as its campaign: LOWEST_COST_WITHOUT_CAP

    (outcome,) = meta_executor.apply([change(second, Field.BID, Decimal("2.00"))])

    assert (outcome.status, outcome.error.code) == (OutcomeStatus.FAILED, ErrorCode.NOT_SUPPORTED)
    assert "LOWEST_COST_WITHOUT_CAP" in outcome.error.message
    assert not [b for b in meta_fake.batches() if b.is_write]
    states = meta_executor.read_state([second, ad_set(abo["first"], None)])
    assert states[second.key].bid_strategy == "LOWEST_COST_WITHOUT_CAP"
    assert states[ad_set(abo["first"], None).key].bid_strategy == "LOWEST_COST_WITH_BID_CAP"


def test_an_item_level_account_throttle_stops_the_remaining_waves(meta_executor, meta_fake):
    campaigns = [meta_fake.add_campaign(META_ACCOUNT, daily_budget=10_000) for _ in range(300)]
    # The item names no usage of its own; the batch's top-level header says 7 minutes.
    meta_fake.faults.add(FaultKind.RATE_LIMIT, entity_ids=[campaigns[0]], retry_after=7 * 60)

    outcomes = meta_executor.apply([change(campaign(c), Field.DAILY_BUDGET, Decimal("120")) for c in campaigns])

    write_batches = [b for b in meta_fake.batches() if b.is_write]
    # Two waves of 150 (three batches each, sent together): the first wave was in flight
    # when the throttle answered, the second is not sent.
    assert len(write_batches) == 3
    throttled = [o for o in outcomes if o.error is not None and o.error.code is ErrorCode.RATE_LIMITED]
    assert len(throttled) == 1 + 150  # the item itself, and the 150 changes of the wave not sent
    assert {o.error.retry_after for o in throttled} == {420.0}


def test_minimum_budgets_are_read_from_the_account_in_its_currency(meta_fake, huf_executor):
    meta_fake.add_account(
        "act_2000", currency="HUF", minimum_budgets={"min_daily_budget_imp": 331, "min_daily_budget_high_freq": 1653}
    )

    assert huf_executor.minimum_budgets() == {
        "min_daily_budget_imp": Decimal("331.00"),
        "min_daily_budget_high_freq": Decimal("1653.00"),
    }
    assert huf_executor.account_facts() == {
        "minimum_budgets": {"min_daily_budget_imp": "331.00", "min_daily_budget_high_freq": "1653.00"}
    }


def test_a_fault_aimed_at_an_entity_waits_for_the_request_that_touches_it(meta_fake):
    # Several batches in flight at once: the first to arrive must not consume a fault
    # meant for an entity of another batch.
    meta_fake.faults.add(FaultKind.RATE_LIMIT, entity_ids=["target"])

    assert meta_fake.faults.take(FaultScope.WRITE, {"other"}) is None
    assert meta_fake.faults.take(FaultScope.WRITE, {"other", "target"}).kind == FaultKind.RATE_LIMIT
    assert meta_fake.faults.take(FaultScope.WRITE, {"target"}) is None  # consumed once
