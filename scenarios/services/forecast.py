"""Per-entity response curves and the forecasts a preflight shows.

The model, stated in every preflight document (``FORECAST_MODEL``):

- **Curve.** ``conversions = a * spend^b`` per entity, fitted by least squares on
  ``ln(conversions) = ln(a) + b * ln(spend)`` over the entity's ``EntityPerformanceDaily``
  days in the last ``LOOKBACK_DAYS`` days with spend > 0 and conversions > 0 (a day
  without conversions has no logarithm). ``b`` is clamped to ``[B_MIN, 1]``: returns
  diminish, never grow. When spend never varied the exponent cannot be fitted; ``b = 1``
  (proportional) is assumed and R² is 0, so confidence is low.
- **Revenue** is conversions times the average revenue per conversion of those days.
- **Spend.** Pacing to budget: an active entity with a daily budget spends its daily
  budget (before: the live budget, after: the target); one without a daily budget
  (lifetime budget, budget on the campaign, Google ad group) spends its average observed
  daily spend; a paused or removed entity spends 0. Bids are not modelled.
  ``extrapolated`` says that a forecast spend lies outside the spend range the curve was
  fitted on ("bounded by history": such a forecast is shown but deserves less trust).
- **Confidence** from the days and the (log-space) R²: high with at least 28 days and
  R² >= 0.6, medium with at least 14 days and R² >= 0.3, low otherwise. An entity
  without usable days has no forecast. Low confidence is shown, never hidden.

The sums the fit needs are computed by the database, one grouped query per batch of
entities, so forecasting 10,000 entities reads a few rows per entity, not every day.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.db.models import Count, FloatField, Max, Min, Sum
from django.db.models.functions import Cast, Ln

from platforms.base import chunked
from platforms.models import EntityPerformanceDaily
from platforms.money import quantize

LOOKBACK_DAYS = 56
B_MIN = 0.05
BATCH_SIZE = 2000
HIGH = {"days": 28, "r_squared": Decimal("0.6")}
MEDIUM = {"days": 14, "r_squared": Decimal("0.3")}
R2_QUANTUM = Decimal("0.0001")
EXPONENT_QUANTUM = Decimal("0.0001")
CONVERSIONS_QUANTUM = Decimal("0.01")

FORECAST_MODEL: dict[str, Any] = {
    "name": "power_law",
    "formula": "conversions = a * spend^b; revenue = conversions * average revenue per conversion",
    "fit": (
        f"least squares on ln(conversions) = ln(a) + b ln(spend) over the last {LOOKBACK_DAYS} days with "
        f"spend > 0 and conversions > 0; b clamped to [{B_MIN}, 1] (diminishing returns); "
        "b = 1 and R² = 0 when spend never varied"
    ),
    "spend": (
        "pacing to budget: an active entity spends its daily budget (before: live, after: target); without a "
        "daily budget, its average observed daily spend; paused or removed: 0; bids are not modelled"
    ),
    "confidence": (
        f"high: >= {HIGH['days']} days and R² >= {HIGH['r_squared']}; medium: >= {MEDIUM['days']} days and "
        f"R² >= {MEDIUM['r_squared']}; otherwise low; no usable days: no forecast"
    ),
    "extrapolated": "a forecast spend outside the range of daily spend the curve was fitted on",
}


@dataclass(frozen=True)
class CurveStats:
    """The sums over one entity's usable days (x = ln spend, y = ln conversions)."""

    days: int
    sx: float
    sy: float
    sxx: float
    sxy: float
    syy: float
    spend: Decimal
    conversions: Decimal
    revenue: Decimal
    min_spend: Decimal
    max_spend: Decimal


@dataclass(frozen=True)
class Curve:
    """A fitted response curve ``conversions = a * spend^b``."""

    a: float
    b: float
    r_squared: Decimal
    days: int
    revenue_per_conversion: Decimal
    mean_spend: Decimal
    min_spend: Decimal
    max_spend: Decimal

    @property
    def confidence(self) -> str:
        if self.days >= HIGH["days"] and self.r_squared >= HIGH["r_squared"]:
            return "high"
        if self.days >= MEDIUM["days"] and self.r_squared >= MEDIUM["r_squared"]:
            return "medium"
        return "low"

    def conversions(self, spend: Decimal) -> Decimal:
        """Forecast daily conversions at ``spend`` (two decimals)."""
        if spend <= 0:
            return Decimal("0.00")
        value = self.a * math.pow(float(spend), self.b)
        return Decimal(value).quantize(CONVERSIONS_QUANTUM, ROUND_HALF_EVEN)

    def extrapolates(self, spend: Decimal) -> bool:
        return spend > 0 and (spend < self.min_spend or spend > self.max_spend)


def curve_stats(*, entity_ids: Iterable[int], until: date) -> dict[int, CurveStats]:
    """The fit's sums for each entity with usable days; one grouped query per batch."""
    since = until - timedelta(days=LOOKBACK_DAYS)
    # Logarithms of doubles: PostgreSQL's LN of a numeric is arbitrary-precision and ten
    # times slower, for digits the fit does not use.
    x = Ln(Cast("spend", FloatField()))
    y = Ln(Cast("conversions", FloatField()))
    stats: dict[int, CurveStats] = {}
    for chunk in chunked(sorted(set(entity_ids)), BATCH_SIZE):
        rows = (
            EntityPerformanceDaily.objects.filter(
                entity_id__in=chunk, date__gt=since, date__lte=until, spend__gt=0, conversions__gt=0
            )
            .values("entity_id")
            .annotate(
                days=Count("id"),
                sx=Sum(x),
                sy=Sum(y),
                sxx=Sum(x * x),
                sxy=Sum(x * y),
                syy=Sum(y * y),
                total_spend=Sum("spend"),
                total_conversions=Sum("conversions"),
                total_revenue=Sum("revenue"),
                min_spend=Min("spend"),
                max_spend=Max("spend"),
            )
            .order_by()
        )
        for row in rows:
            stats[row["entity_id"]] = CurveStats(
                days=row["days"],
                sx=float(row["sx"]),
                sy=float(row["sy"]),
                sxx=float(row["sxx"]),
                sxy=float(row["sxy"]),
                syy=float(row["syy"]),
                spend=Decimal(row["total_spend"]),
                conversions=Decimal(row["total_conversions"]),
                revenue=Decimal(row["total_revenue"]),
                min_spend=Decimal(row["min_spend"]),
                max_spend=Decimal(row["max_spend"]),
            )
    return stats


def fit_curve(stats: CurveStats | None) -> Curve | None:
    """Least squares in log space with the exponent clamped; None without usable days."""
    if stats is None or stats.days == 0:
        return None
    n = stats.days
    denominator = n * stats.sxx - stats.sx * stats.sx
    fitted = denominator > 1e-9 * max(1.0, n * stats.sxx)
    b = (n * stats.sxy - stats.sx * stats.sy) / denominator if fitted else 1.0
    b = min(1.0, max(B_MIN, b))
    ln_a = (stats.sy - b * stats.sx) / n
    return Curve(
        a=math.exp(ln_a),
        b=b,
        r_squared=_r_squared(stats, ln_a, b) if fitted else Decimal("0.0000"),
        days=n,
        revenue_per_conversion=stats.revenue / stats.conversions,
        mean_spend=stats.spend / n,
        min_spend=stats.min_spend,
        max_spend=stats.max_spend,
    )


def _r_squared(stats: CurveStats, ln_a: float, b: float) -> Decimal:
    """1 - SSres / SStot of the (possibly clamped) line, from the sums; 0 when y never varied."""
    n = stats.days
    total = stats.syy - stats.sy * stats.sy / n
    if total <= 1e-12 * max(1.0, stats.syy):
        return Decimal("0.0000")
    residual = (
        stats.syy
        - 2 * ln_a * stats.sy
        - 2 * b * stats.sxy
        + n * ln_a * ln_a
        + 2 * ln_a * b * stats.sx
        + b * b * stats.sxx
    )
    value = min(1.0, max(0.0, 1 - residual / total))
    return Decimal(value).quantize(R2_QUANTUM, ROUND_HALF_EVEN)


def expected_spend(curve: Curve | None, *, status: str | None, daily_budget: Decimal | None) -> Decimal:
    """Daily spend under the stated assumption (pacing to budget)."""
    if status != "active":
        return Decimal(0)
    if daily_budget is not None:
        return daily_budget
    if curve is not None:
        return curve.mean_spend
    return Decimal(0)


def entity_forecast(
    curve: Curve | None, *, currency: str, before: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any] | None:
    """The document's ``forecast`` of one entity, or None without a curve.

    ``before`` and ``after`` hold ``status`` and ``daily_budget`` (Decimal or None).
    """
    if curve is None:
        return None
    spend_before = quantize(expected_spend(curve, **_spend_inputs(before)), currency)
    spend_after = quantize(expected_spend(curve, **_spend_inputs(after)), currency)
    conversions_before = curve.conversions(spend_before)
    conversions_after = curve.conversions(spend_after)
    return {
        "model": "power_law",
        "confidence": curve.confidence,
        "r_squared": str(curve.r_squared),
        "days": curve.days,
        "exponent": str(Decimal(curve.b).quantize(EXPONENT_QUANTUM, ROUND_HALF_EVEN)),
        "extrapolated": curve.extrapolates(spend_before) or curve.extrapolates(spend_after),
        "spend_before": str(spend_before),
        "spend_after": str(spend_after),
        "conversions_before": str(conversions_before),
        "conversions_after": str(conversions_after),
        "revenue_before": str(quantize(conversions_before * curve.revenue_per_conversion, currency)),
        "revenue_after": str(quantize(conversions_after * curve.revenue_per_conversion, currency)),
    }


def _spend_inputs(values: dict[str, Any]) -> dict[str, Any]:
    return {"status": values.get("status"), "daily_budget": values.get("daily_budget")}


def forecast_delta(forecast: dict[str, Any] | None) -> dict[str, str] | None:
    """{conversions, revenue} after minus before, as strings; None without a forecast."""
    if forecast is None:
        return None
    conversions = Decimal(forecast["conversions_after"]) - Decimal(forecast["conversions_before"])
    revenue = Decimal(forecast["revenue_after"]) - Decimal(forecast["revenue_before"])
    return {"conversions": str(conversions), "revenue": str(revenue)}


def spend_moves(forecast: dict[str, Any] | None) -> bool:
    return forecast is not None and forecast["spend_before"] != forecast["spend_after"]


def forecast_roas(forecast: dict[str, Any]) -> Decimal | None:
    """Revenue over spend after the change (4 decimals); None without spend."""
    spend = Decimal(forecast["spend_after"])
    if spend <= 0:
        return None
    return (Decimal(forecast["revenue_after"]) / spend).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)


def forecast_cpa(forecast: dict[str, Any], currency: str) -> Decimal | None:
    """Spend per conversion after the change, in the currency; None without conversions."""
    conversions = Decimal(forecast["conversions_after"])
    spend = Decimal(forecast["spend_after"])
    if conversions <= 0 or spend <= 0:
        return None
    return quantize(spend / conversions, currency)
