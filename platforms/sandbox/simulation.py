"""Daily delivery of sandbox entities, from diminishing-returns response curves.

Pure functions of the entities' current settings and the date: the same entity on the
same day always yields the same numbers, because every random draw is a hash of
(external id, date, draw name). The sandbox keeps no settings history, so past days
are computed with today's budgets and statuses.

The model, per day:
- an ad set's spend is its daily cap (daily budget, else lifetime budget / 30, else its
  share of the campaign's budget when the campaign optimises the budget itself) times
  a pace between 45 % and 100 % (lower at weekends); an ad set delivers only while it
  and its campaign are active;
- the campaign's daily budget caps the sum of its ad sets (they are scaled down
  together when they would exceed it);
- conversions follow the Hill curve of the entity's spend, with +-15 % noise; revenue,
  impressions and clicks follow from value per conversion, CPM and CTR;
- a campaign's row is the sum of its ad sets' rows, or its own curve when it has no
  ad sets, so the two levels always agree.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from platforms.money import currency_exponent
from platforms.sandbox.models import SandboxEntity
from platforms.types import EntityStatus, EntityType, PerformanceRow

LIFETIME_DAYS = Decimal(30)  # a lifetime budget is paced evenly over this many days
CONVERSIONS_QUANTUM = Decimal("0.01")


def draw(*parts: object) -> float:
    """A deterministic number in [0, 1) for the given parts."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hill(spend: float, *, max_conversions: float, half_saturation: float, shape: float) -> float:
    """Conversions at ``spend``: ``max * s^k / (h^k + s^k)``; 0 at no spend."""
    if spend <= 0 or max_conversions <= 0:
        return 0.0
    if half_saturation <= 0:
        return max_conversions
    scaled = (spend / half_saturation) ** shape
    return max_conversions * scaled / (1.0 + scaled)


def pace(entity: SandboxEntity, day: date) -> Decimal:
    """Share of the daily cap the entity spends on ``day`` (0.45 to 1.0)."""
    weekend = Decimal("0.10") if day.weekday() >= 5 else Decimal(0)
    noise = Decimal(str(round(draw(entity.external_id, day, "pace"), 6)))
    return max(Decimal("0.45"), Decimal("0.55") + Decimal("0.45") * noise - weekend)


def own_cap(entity: SandboxEntity) -> Decimal | None:
    """The entity's own daily spending cap, or None when its budget lives elsewhere."""
    if entity.daily_budget is not None:
        return entity.daily_budget
    if entity.lifetime_budget is not None:
        return entity.lifetime_budget / LIFETIME_DAYS
    return None


def delivers(entity: SandboxEntity, campaign: SandboxEntity | None) -> bool:
    if entity.status != EntityStatus.ACTIVE:
        return False
    return campaign is None or campaign.status == EntityStatus.ACTIVE


@dataclass(frozen=True)
class Delivery:
    spend: Decimal
    impressions: int
    clicks: int
    conversions: Decimal
    revenue: Decimal

    def __add__(self, other: Delivery) -> Delivery:
        return Delivery(
            self.spend + other.spend,
            self.impressions + other.impressions,
            self.clicks + other.clicks,
            self.conversions + other.conversions,
            self.revenue + other.revenue,
        )


NOTHING = Delivery(Decimal(0), 0, 0, Decimal(0), Decimal(0))


def deliver(entity: SandboxEntity, spend: Decimal, day: date, money_quantum: Decimal) -> Delivery:
    """What ``spend`` buys ``entity`` on ``day`` (spend already capped)."""
    spend = spend.quantize(money_quantum, rounding=ROUND_DOWN)
    if spend <= 0:
        return NOTHING

    def noisy(name: str, spread: float) -> float:
        return 1.0 - spread + 2 * spread * draw(entity.external_id, day, name)

    conversions = hill(
        float(spend),
        max_conversions=float(entity.max_conversions),
        half_saturation=float(entity.half_saturation_spend),
        shape=float(entity.shape),
    ) * noisy("conversions", 0.15)
    impressions = int(float(spend) / max(float(entity.cpm), 0.01) * 1000 * noisy("impressions", 0.10))
    clicks = min(impressions, int(impressions * float(entity.ctr) * noisy("clicks", 0.15)))
    conversions_dec = Decimal(str(round(conversions, 4))).quantize(CONVERSIONS_QUANTUM, rounding=ROUND_HALF_EVEN)
    revenue = Decimal(str(round(float(conversions_dec) * float(entity.value_per_conversion) * noisy("value", 0.1), 4)))
    return Delivery(spend, impressions, clicks, conversions_dec, revenue.quantize(money_quantum, ROUND_HALF_EVEN))


def ad_set_spends(campaign: SandboxEntity, ad_sets: list[SandboxEntity], day: date) -> dict[int, Decimal]:
    """Each ad set's spend on ``day``, within its own cap and its campaign's budget."""
    campaign_cap = own_cap(campaign)
    delivering = [a for a in ad_sets if delivers(a, campaign)]
    sharing = [a for a in delivering if own_cap(a) is None]
    shared_cap = campaign_cap / len(sharing) if campaign_cap is not None and sharing else Decimal(0)
    wanted = {a.pk: (own_cap(a) if own_cap(a) is not None else shared_cap) * pace(a, day) for a in delivering}
    total = sum(wanted.values(), Decimal(0))
    if campaign_cap is not None and total > campaign_cap:
        scale = campaign_cap / total
        wanted = {pk: spend * scale for pk, spend in wanted.items()}
    return wanted


def days_between(since: date, until: date) -> Iterable[date]:
    for offset in range((until - since).days + 1):
        yield since + timedelta(days=offset)


def simulate_performance(
    entities: Iterable[SandboxEntity], *, currency: str, since: date, until: date
) -> list[PerformanceRow]:
    """Daily rows for every campaign and ad set among ``entities`` (inclusive dates).

    ``entities`` are the account's live (not deleted) campaigns and ad sets. Paused and
    removed entities appear with zero delivery.
    """
    quantum = Decimal(1).scaleb(-currency_exponent(currency))
    campaigns = [e for e in entities if e.entity_type == EntityType.CAMPAIGN]
    children: dict[int, list[SandboxEntity]] = defaultdict(list)
    orphans: list[SandboxEntity] = []
    campaign_ids = {c.pk for c in campaigns}
    for entity in entities:
        if entity.entity_type != EntityType.AD_SET:
            continue
        if entity.parent_id in campaign_ids:
            children[entity.parent_id].append(entity)
        else:
            orphans.append(entity)
    rows: list[PerformanceRow] = []
    for day in days_between(since, until):
        for campaign in campaigns:
            rows.extend(_campaign_day(campaign, children[campaign.pk], day, quantum))
        for ad_set in orphans:
            spend = (own_cap(ad_set) or Decimal(0)) * pace(ad_set, day) if delivers(ad_set, None) else Decimal(0)
            rows.append(_row(ad_set, day, deliver(ad_set, spend, day, quantum)))
    return rows


def _campaign_day(campaign: SandboxEntity, ad_sets: list[SandboxEntity], day: date, quantum: Decimal):
    if not ad_sets:
        spend = (own_cap(campaign) or Decimal(0)) * pace(campaign, day) if delivers(campaign, None) else Decimal(0)
        return [_row(campaign, day, deliver(campaign, spend, day, quantum))]
    spends = ad_set_spends(campaign, ad_sets, day)
    ad_set_rows = [_row(a, day, deliver(a, spends.get(a.pk, Decimal(0)), day, quantum)) for a in ad_sets]
    total = sum((_delivery_of(r) for r in ad_set_rows), NOTHING)
    return [_row(campaign, day, total), *ad_set_rows]


def _delivery_of(row: PerformanceRow) -> Delivery:
    return Delivery(row.spend, row.impressions, row.clicks, row.conversions, row.revenue)


def _row(entity: SandboxEntity, day: date, delivery: Delivery) -> PerformanceRow:
    return PerformanceRow(
        entity_type=EntityType(entity.entity_type),
        external_id=entity.external_id,
        date=day,
        spend=delivery.spend,
        impressions=delivery.impressions,
        clicks=delivery.clicks,
        conversions=delivery.conversions,
        revenue=delivery.revenue,
    )
