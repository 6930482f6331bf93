"""Forecasts: power-law response curves fitted on daily performance, their confidence, and
how a preflight shows them (low confidence shown, never hidden)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from platforms.models import EntityPerformanceDaily
from scenarios.services.forecast import (
    B_MIN,
    FORECAST_MODEL,
    LOOKBACK_DAYS,
    Curve,
    curve_stats,
    entity_forecast,
    fit_curve,
)
from scenarios.services.items import TargetItem
from scenarios.services.preflight import preflight_document, preflight_run
from tests.engine_helpers import sandbox_world
from tests.factories import EntityFactory

D = Decimal
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
TODAY = NOW.date()


def add_days(entity, rows: list[tuple[str, str, str]], *, start: date | None = None) -> None:
    """(spend, conversions, revenue) per day, newest first, ending yesterday."""
    start = start or TODAY - timedelta(days=1)
    EntityPerformanceDaily.objects.bulk_create(
        EntityPerformanceDaily(
            tenant=entity.tenant,
            entity=entity,
            date=start - timedelta(days=i),
            spend=D(spend),
            conversions=D(conversions),
            revenue=D(revenue),
        )
        for i, (spend, conversions, revenue) in enumerate(rows)
    )


def power_law_days(days: int, *, a: float = 0.5, b: float = 0.7, value: str = "40") -> list[tuple[str, str, str]]:
    rows = []
    for i in range(days):
        spend = 50 + 5 * i
        conversions = D(a * spend**b).quantize(D("0.01"))
        rows.append((str(spend), str(conversions), str(conversions * D(value))))
    return rows


def fitted(entity) -> Curve | None:
    return fit_curve(curve_stats(entity_ids=[entity.pk], until=TODAY).get(entity.pk))


@pytest.fixture
def entity(tenant):
    return EntityFactory(connection__tenant=tenant)


def test_an_exact_power_law_is_recovered_with_high_confidence(entity):
    add_days(entity, power_law_days(30))

    curve = fitted(entity)

    assert curve.b == pytest.approx(0.7, abs=0.005)
    assert curve.a == pytest.approx(0.5, rel=0.03)
    assert curve.r_squared >= D("0.999")
    assert (curve.days, curve.confidence) == (30, "high")
    assert curve.revenue_per_conversion == D("40")


def test_the_database_sums_give_the_same_fit_as_plain_least_squares(entity):
    rows = [("80", "6"), ("120", "7.5"), ("95", "7"), ("150", "9.1"), ("60", "4.2"), ("110", "8.8"), ("130", "7.9")]
    add_days(entity, [(s, c, "100") for s, c in rows])

    curve = fitted(entity)

    xs = [math.log(float(s)) for s, _ in rows]
    ys = [math.log(float(c)) for _, c in rows]
    n, mx, my = len(rows), sum(xs) / len(rows), sum(ys) / len(rows)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    ln_a = my - b * mx
    residual = sum((y - ln_a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    total = sum((y - my) ** 2 for y in ys)
    assert curve.b == pytest.approx(b, abs=1e-9)
    assert math.log(curve.a) == pytest.approx(ln_a, abs=1e-9)
    assert float(curve.r_squared) == pytest.approx(1 - residual / total, abs=0.0001)
    assert n == curve.days


def test_increasing_returns_are_clamped_to_proportional(entity):
    add_days(entity, power_law_days(20, b=1.5))

    assert fitted(entity).b == 1.0


def test_conversions_falling_with_spend_clamp_to_the_smallest_exponent(entity):
    add_days(entity, [(str(50 + 10 * i), str(20 - i), "10") for i in range(15)])

    assert fitted(entity).b == B_MIN


def test_spend_that_never_varied_gives_a_proportional_curve_with_low_confidence(entity):
    add_days(entity, [("100.00", str(8 + i % 3), "50") for i in range(40)])

    curve = fitted(entity)

    assert (curve.b, curve.r_squared, curve.confidence) == (1.0, D("0.0000"), "low")


def test_only_days_with_spend_and_conversions_inside_the_lookback_are_used(entity, tenant):
    other = EntityFactory(connection=entity.connection)
    add_days(entity, power_law_days(10))
    add_days(entity, [("0", "0", "0"), ("90", "0", "0")], start=TODAY - timedelta(days=11))
    add_days(entity, power_law_days(5), start=TODAY - timedelta(days=LOOKBACK_DAYS + 1))
    add_days(other, power_law_days(12))

    stats = curve_stats(entity_ids=[entity.pk, other.pk], until=TODAY)

    assert stats[entity.pk].days == 10
    assert stats[other.pk].days == 12


def test_an_entity_without_usable_days_has_no_curve(entity):
    add_days(entity, [("0", "0", "0"), ("50", "0", "0")])

    assert fitted(entity) is None


@pytest.mark.parametrize(
    ("days", "r_squared", "confidence"),
    [
        (28, "0.6000", "high"),
        (27, "0.9000", "medium"),
        (28, "0.5999", "medium"),
        (14, "0.3000", "medium"),
        (13, "0.9000", "low"),
        (14, "0.2999", "low"),
        (90, "0.0000", "low"),
    ],
)
def test_confidence_follows_days_and_r_squared(days, r_squared, confidence):
    curve = Curve(
        a=1.0,
        b=0.5,
        r_squared=D(r_squared),
        days=days,
        revenue_per_conversion=D("10"),
        mean_spend=D("100"),
        min_spend=D("50"),
        max_spend=D("150"),
    )

    assert curve.confidence == confidence


def curve(**overrides) -> Curve:
    values = {
        "a": 2.0,
        "b": 0.5,
        "r_squared": D("0.9"),
        "days": 30,
        "revenue_per_conversion": D("25"),
        "mean_spend": D("64.00"),
        "min_spend": D("36"),
        "max_spend": D("144"),
    }
    return Curve(**{**values, **overrides})


def test_spend_paces_to_the_daily_budget_and_revenue_follows_conversions():
    forecast = entity_forecast(
        curve(),
        currency="EUR",
        before={"status": "active", "daily_budget": D("100.00")},
        after={"status": "active", "daily_budget": D("144.00")},
    )

    assert (forecast["spend_before"], forecast["spend_after"]) == ("100.00", "144.00")
    assert (forecast["conversions_before"], forecast["conversions_after"]) == ("20.00", "24.00")  # 2 * sqrt(spend)
    assert (forecast["revenue_before"], forecast["revenue_after"]) == ("500.00", "600.00")
    assert forecast["extrapolated"] is False
    assert forecast["model"] == "power_law" and forecast["exponent"] == "0.5000"


def test_a_paused_entity_spends_nothing():
    forecast = entity_forecast(
        curve(),
        currency="EUR",
        before={"status": "active", "daily_budget": D("100.00")},
        after={"status": "paused", "daily_budget": D("100.00")},
    )

    assert (forecast["spend_after"], forecast["conversions_after"], forecast["revenue_after"]) == (
        "0.00",
        "0.00",
        "0.00",
    )


def test_without_a_daily_budget_spend_is_the_observed_average():
    forecast = entity_forecast(
        curve(), currency="EUR", before={"status": "paused"}, after={"status": "active", "daily_budget": None}
    )

    assert (forecast["spend_before"], forecast["spend_after"]) == ("0.00", "64.00")
    assert forecast["conversions_after"] == "16.00"


def test_a_spend_outside_the_fitted_range_is_flagged_as_extrapolated():
    forecast = entity_forecast(
        curve(),
        currency="EUR",
        before={"status": "active", "daily_budget": D("100.00")},
        after={"status": "active", "daily_budget": D("400.00")},
    )

    assert forecast["extrapolated"] is True
    assert forecast["conversions_after"] == "40.00"


def test_amounts_follow_the_currency_exponent():
    forecast = entity_forecast(
        curve(revenue_per_conversion=D("2500")),
        currency="JPY",
        before={"status": "active", "daily_budget": D("10000")},
        after={"status": "active", "daily_budget": D("12100")},
    )

    assert (forecast["spend_before"], forecast["spend_after"]) == ("10000", "12100")
    assert (forecast["revenue_before"], forecast["revenue_after"]) == ("500000", "550000")


# In the preflight document -------------------------------------------------------------------


@pytest.fixture
def world(tenant):
    world = sandbox_world(tenant)
    EntityPerformanceDaily.objects.filter(entity__connection=world.connection).delete()
    return world


def preflight(tenant, *items: TargetItem) -> dict:
    return preflight_document(preflight_run(tenant=tenant, items=list(items), actor=None, now=NOW))


def target(entity, **values) -> TargetItem:
    return TargetItem(entity=entity, targets={k: (v if k == "status" else D(v)) for k, v in values.items()})


def test_the_document_states_the_model_and_shows_the_forecast_delta_on_the_budget(tenant, world):
    entity = world.entity("sandbox-cmp-1")
    add_days(entity, power_law_days(30))

    payload = preflight(tenant, target(entity, daily_budget="150.00"))

    assert payload["forecast_model"] == FORECAST_MODEL
    assert "conversions = a * spend^b" in payload["forecast_model"]["formula"]
    [doc] = payload["entities"]
    assert doc["forecast"]["confidence"] == "high"
    assert doc["forecast_status"] == "fitted"
    [budget] = doc["sections"]["spend"]
    delta = budget["forecast_delta"]
    assert D(delta["conversions"]) == D(doc["forecast"]["conversions_after"]) - D(doc["forecast"]["conversions_before"])
    assert D(delta["conversions"]) > 0 and D(delta["revenue"]) > 0
    assert payload["summary"]["total"]["forecast"]["conversions_delta"] == delta["conversions"]
    assert payload["summary"]["total"]["forecast"]["revenue_delta"] == delta["revenue"]
    assert payload["summary"]["total"]["forecast"]["confidence"]["high"] == 1
    assert not [b for b in payload["breaches"] if b["code"] == "low_confidence_forecast"]


def test_a_low_confidence_forecast_is_shown_with_a_warning(tenant, world):
    entity = world.entity("sandbox-cmp-1")
    add_days(entity, power_law_days(5))

    payload = preflight(tenant, target(entity, daily_budget="150.00"))

    [doc] = payload["entities"]
    assert doc["forecast"]["confidence"] == "low"
    assert doc["forecast"]["conversions_after"]  # shown, not hidden
    [warning] = doc["breaches"]
    assert (warning["code"], warning["severity"], warning["observed"]) == ("low_confidence_forecast", "warning", "low")
    assert "5 days" in warning["message"]
    assert payload["summary"]["total"]["forecast"]["confidence"]["low"] == 1


def test_no_performance_means_no_forecast_and_a_warning(tenant, world):
    payload = preflight(tenant, target(world.entity("sandbox-cmp-2"), daily_budget="150.00"))

    [doc] = payload["entities"]
    assert (doc["forecast"], doc["forecast_status"]) == (None, "no_data")
    assert doc["sections"]["spend"][0]["forecast_delta"] is None
    assert [(b["code"], b["observed"]) for b in doc["breaches"]] == [("low_confidence_forecast", "none")]
    assert payload["summary"]["total"]["forecast"]["confidence"]["none"] == 1


def test_pausing_forecasts_the_loss_on_the_status_field(tenant, world):
    entity = world.entity("sandbox-cmp-1")
    add_days(entity, power_law_days(30))

    payload = preflight(tenant, target(entity, status="paused"))

    [doc] = payload["entities"]
    assert doc["forecast"]["spend_after"] == "0.00"
    [status] = doc["sections"]["delivery"]
    assert status["forecast_delta"]["conversions"] == f"-{doc['forecast']['conversions_before']}"


def test_a_bid_change_is_not_forecast(tenant, world):
    entity = world.entity("sandbox-adset-1-1")
    add_days(entity, power_law_days(30))

    payload = preflight(tenant, target(entity, bid="1.80"))

    [doc] = payload["entities"]
    assert (doc["forecast"], doc["forecast_status"]) == (None, "not_applicable")
    assert doc["breaches"] == []
