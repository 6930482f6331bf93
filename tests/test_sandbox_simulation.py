"""Sandbox performance: deterministic, budget-capped, diminishing returns, consistent levels."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from platforms.sandbox.executor import SandboxExecutor
from platforms.sandbox.models import SandboxEntity
from platforms.sandbox.simulation import hill, simulate_performance
from platforms.types import ConnectionConfig
from tests.factories import SANDBOX_TOKEN, SandboxAccountFactory, SandboxAdSetFactory, SandboxCampaignFactory

SINCE = date(2026, 10, 1)
UNTIL = date(2026, 10, 28)


@pytest.fixture
def account(db):
    return SandboxAccountFactory(account_id="sbx-sim")


@pytest.fixture
def campaign(account):
    return SandboxCampaignFactory(account=account, external_id="sandbox-cmp-1", daily_budget=Decimal("300.00"))


@pytest.fixture
def ad_sets(campaign):
    return [
        SandboxAdSetFactory(account=campaign.account, parent=campaign, daily_budget=Decimal(budget))
        for budget in ("80.00", "60.00")
    ]


def simulate(account, since=SINCE, until=UNTIL):
    entities = list(SandboxEntity.objects.filter(account=account, entity_type__in=["campaign", "ad_set"]))
    return simulate_performance(entities, currency=account.currency, since=since, until=until)


def rows_of(rows, external_id):
    return [r for r in rows if r.external_id == external_id]


def test_the_same_day_always_gives_the_same_numbers(account, ad_sets):
    assert simulate(account) == simulate(account)
    one_day = simulate(account, since=UNTIL, until=UNTIL)
    assert [r for r in simulate(account) if r.date == UNTIL] == one_day


def test_spend_never_exceeds_the_budget_and_varies_from_day_to_day(account, ad_sets):
    spends = [r.spend for r in rows_of(simulate(account), ad_sets[0].external_id)]
    assert len(spends) == 28
    assert all(Decimal("0") < s <= Decimal("80.00") for s in spends)
    assert len(set(spends)) > 20  # enough spread to fit a response curve
    assert all(s == s.quantize(Decimal("0.01")) for s in spends)


def test_a_campaign_row_is_the_sum_of_its_ad_sets(account, campaign, ad_sets):
    rows = simulate(account)
    for day in {r.date for r in rows}:
        campaign_row = next(r for r in rows if r.date == day and r.external_id == campaign.external_id)
        children = [r for r in rows if r.date == day and r.entity_type == "ad_set"]
        assert campaign_row.spend == sum(r.spend for r in children)
        assert campaign_row.conversions == sum(r.conversions for r in children)
        assert campaign_row.revenue == sum(r.revenue for r in children)
        assert campaign_row.clicks == sum(r.clicks for r in children)


def test_paused_and_removed_entities_spend_nothing(account, campaign, ad_sets):
    SandboxEntity.objects.filter(pk=ad_sets[0].pk).update(status="paused")
    SandboxEntity.objects.filter(pk=ad_sets[1].pk).update(status="removed")
    rows = simulate(account)
    assert all(r.spend == 0 and r.conversions == 0 for r in rows)


def test_a_paused_campaign_stops_its_active_ad_sets(account, campaign, ad_sets):
    SandboxEntity.objects.filter(pk=campaign.pk).update(status="paused")
    assert sum(r.spend for r in simulate(account)) == 0


def test_the_campaign_budget_caps_its_ad_sets_together(account, campaign, ad_sets):
    SandboxEntity.objects.filter(pk=campaign.pk).update(daily_budget=Decimal("50.00"))
    for row in rows_of(simulate(account), campaign.external_id):
        assert row.spend <= Decimal("50.00")


def test_ad_sets_without_budgets_share_the_campaign_budget(account):
    cbo = SandboxCampaignFactory(account=account, daily_budget=Decimal("100.00"))
    for _ in range(2):
        SandboxAdSetFactory(account=account, parent=cbo, daily_budget=None)
    rows = rows_of(simulate(account), cbo.external_id)
    assert all(Decimal("0") < r.spend <= Decimal("100.00") for r in rows)


def test_a_campaign_without_ad_sets_delivers_on_its_own_curve(account):
    alone = SandboxCampaignFactory(account=account, daily_budget=Decimal("120.00"))
    rows = rows_of(simulate(account), alone.external_id)
    assert all(Decimal("0") < r.spend <= Decimal("120.00") and r.conversions > 0 for r in rows)


def test_doubling_the_budget_buys_less_than_double_the_conversions(account, campaign, ad_sets):
    before = sum(r.conversions for r in rows_of(simulate(account), ad_sets[0].external_id))
    SandboxEntity.objects.filter(pk=ad_sets[0].pk).update(daily_budget=Decimal("160.00"))
    after = sum(r.conversions for r in rows_of(simulate(account), ad_sets[0].external_id))
    assert before < after < 2 * before


def test_the_hill_curve_is_zero_at_zero_half_at_half_saturation_and_saturates():
    assert hill(0, max_conversions=20, half_saturation=100, shape=1) == 0
    assert hill(100, max_conversions=20, half_saturation=100, shape=1) == pytest.approx(10)
    assert hill(1e9, max_conversions=20, half_saturation=100, shape=1) == pytest.approx(20)


def test_read_performance_reports_campaigns_and_ad_sets_in_one_request(account, campaign, ad_sets):
    config = ConnectionConfig(
        connection_id=1,
        platform="sandbox",
        account_id=account.account_id,
        currency="EUR",
        credentials={"access_token": SANDBOX_TOKEN},
    )
    executor = SandboxExecutor(config)
    rows = executor.read_performance(UNTIL - timedelta(days=6), UNTIL)
    assert len(rows) == 7 * 3
    assert {r.entity_type for r in rows} == {"campaign", "ad_set"}
    assert executor.round_trips == 1
