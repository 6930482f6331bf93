"""The planner: from daily performance to a proposed allocation with reasons, deterministically.

``plan_build`` reads one connection's budget holders and their last ``lookback_days`` of
``EntityPerformanceDaily``, fits a Hill curve with adstock per entity
(``planning.curves``), and allocates the total daily budget so that marginal CPA (or
marginal ROAS) is equal across the entities it may move (``planning.optimizer``).

What it may move, and within which bounds:
- budget holders are active ad sets and campaigns with their own daily budget (not a
  shared Google budget), whose campaign is active; a campaign whose ad sets hold their
  own budgets is left to them, and its budget caps their sum;
- locked entities, entities without a curve, entities held out as the rollout baseline
  and (policy ``hold``) low-confidence entities keep their budgets; with policy
  ``block`` any low-confidence entity blocks the whole plan (nothing is proposed);
- bounds: the entity's own min/max, the guardrail policy's min/max daily budget and
  max increase/decrease percent (else ``PLANNER_MAX_INCREASE_PCT`` /
  ``PLANNER_MAX_DECREASE_PCT``);
- the total: today's total, an absolute total or a percent change, never above the
  policy's max account daily spend.

Spend and budget: platforms pace a budget (the sandbox spends 45-100 % of it), so each
entity's spend ratio (mean spend / budget over its last 14 days with spend) converts
between the two: the optimizer works in spend (marginal CPA is per unit of spend), the
plan is in budgets, rescaled to meet the total exactly at the currency's precision.

Fallbacks: when curves cover less than ``CURVE_COVERAGE`` of the movable budget or the
optimizer fails, the chain previous allocation -> 7-day rolling average -> CPA-based
(spend proportional to 1/CPA) -> equal split is tried in order; each level has a
precondition (``FALLBACK_MIN_SHARE`` of the entities must have what it needs) and the
level used is recorded.

Deterministic: entities are ordered by id, fits and the optimizer are deterministic, and
rounding leftovers go to entities in id order; ``data_hash`` is a SHA-256 of every input
row and setting, so two runs with the same hash must propose the same plan.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Q

from planning import curves as hill
from planning.models import (
    AutomationSettings,
    BudgetMode,
    EntityConstraint,
    FallbackLevel,
    LowConfidencePolicy,
    Objective,
    PlannerRun,
    RunStatus,
)
from planning.optimizer import CurveArrays, Infeasible, allocate_curves, allocate_weights
from platforms.base import chunked
from platforms.models import EntityPerformanceDaily, PlatformConnection, PlatformEntity
from platforms.money import currency_exponent
from platforms.types import EntityStatus, EntityType
from scenarios.services.guardrails import policy_for

CURVE_COVERAGE = 0.5
FALLBACK_MIN_SHARE = 0.5
RATIO_DAYS = 14
ROLLING_DAYS = 7
RATIO_BOUNDS = (0.05, 1.5)
READ_BATCH = 2000
LIGHT_GREEN, LIGHT_YELLOW = 0.9, 1.1
FALLBACK_CHAIN = (
    FallbackLevel.PREVIOUS,
    FallbackLevel.ROLLING_AVERAGE,
    FallbackLevel.CPA,
    FallbackLevel.EQUAL_SPLIT,
)


@dataclass(frozen=True)
class PlanRequest:
    """What a plan is asked for; ``from_settings`` builds it from a connection's settings."""

    objective: str = Objective.CONVERSIONS
    budget_mode: str = BudgetMode.KEEP
    total_daily_budget: Decimal | None = None
    budget_change_pct: Decimal | None = None
    target_cpa: Decimal | None = None
    target_roas: Decimal | None = None
    low_confidence_policy: str = LowConfidencePolicy.HOLD
    lookback_days: int = 90
    held_out: frozenset[int] = frozenset()

    @classmethod
    def from_settings(cls, automation: AutomationSettings, *, held_out: Iterable[int] = ()) -> PlanRequest:
        return cls(
            objective=automation.objective,
            budget_mode=automation.budget_mode,
            total_daily_budget=automation.total_daily_budget,
            budget_change_pct=automation.budget_change_pct,
            target_cpa=automation.target_cpa,
            target_roas=automation.target_roas,
            low_confidence_policy=automation.low_confidence_policy,
            lookback_days=automation.lookback_days,
            held_out=frozenset(held_out),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "budget_mode": self.budget_mode,
            "total_daily_budget": _str(self.total_daily_budget),
            "budget_change_pct": _str(self.budget_change_pct),
            "target_cpa": _str(self.target_cpa),
            "target_roas": _str(self.target_roas),
            "low_confidence_policy": self.low_confidence_policy,
            "lookback_days": self.lookback_days,
            "held_out": sorted(self.held_out),
        }


@dataclass
class EntityInput:
    """One budget holder with its history, curve and bounds while a plan is built."""

    entity: PlatformEntity
    current: Decimal
    spend: np.ndarray
    conversions: np.ndarray
    revenue: np.ndarray
    fit: hill.FitResult | None = None
    ratio: float = 1.0
    value: float = 1.0
    lo: Decimal = Decimal(0)
    hi: Decimal = Decimal(0)
    hold: str = ""  # why it keeps its budget ("" when it may move)
    group: int | None = None  # the campaign whose budget caps it
    proposed: Decimal | None = None

    @property
    def pk(self) -> int:
        return self.entity.pk


@dataclass
class Plan:
    """A proposed allocation, its reasons and what went into it."""

    connection: PlatformConnection
    request: PlanRequest
    date_from: date
    date_to: date
    data_hash: str
    fallback_level: str
    entities: list[EntityInput]
    reasoning: list[dict[str, Any]]
    summary: dict[str, Any]
    blocked: str = ""
    notes: list[str] = field(default_factory=list)

    def changes(self) -> list[tuple[PlatformEntity, Decimal]]:
        """(entity, new daily budget) for every entity whose budget moves, by entity id."""
        return [(e.entity, e.proposed) for e in self.entities if e.proposed is not None and e.proposed != e.current]

    def fits_document(self) -> list[list[Any]]:
        """Compact fits for the decision log: [entity, status, vmax, h, k, theta, r2, days, confidence]."""
        rows = []
        for e in self.entities:
            fit = e.fit
            curve = fit.curve if fit else None
            rows.append(
                [
                    e.pk,
                    fit.status if fit else "none",
                    *(_round(v) for v in (curve.as_dict().values() if curve else (None,) * 4)),
                    _round(fit.r_squared) if fit else None,
                    fit.days if fit else 0,
                    fit.confidence if fit else "none",
                ]
            )
        return rows


class PlanError(Exception):
    """Nothing can be planned (no budget holders, or no fallback applies)."""


# Entry point ---------------------------------------------------------------------------


def plan_build(
    *,
    connection: PlatformConnection,
    request: PlanRequest,
    as_of: date,
    previous: dict[int, Decimal] | None = None,
    fit: Callable[[np.ndarray, np.ndarray], hill.FitResult] = hill.fit_hill,
) -> Plan:
    """Build the plan for ``connection`` with data up to ``as_of`` (inclusive).

    ``previous`` maps entity ids to the last plan's budgets (fallback level 1); by
    default it is read from the connection's last succeeded run.
    """
    date_from = as_of - timedelta(days=request.lookback_days - 1)
    entities = _load(connection, date_from, as_of)
    if not entities:
        raise PlanError(f"{connection.name} has no active entity with its own daily budget to plan.")
    constraints = {c.entity_id: c for c in EntityConstraint.objects.filter(connection=connection)}
    policy = policy_for(connection.tenant, connection)
    for e in entities:
        e.fit = fit(e.spend, e.conversions)
        e.ratio = _spend_ratio(e)
        e.value = _value_per_conversion(e) if request.objective == Objective.REVENUE else 1.0
        _bounds(e, constraints.get(e.pk), policy, connection.currency)
    data_hash = _data_hash(connection, request, entities, constraints, policy)
    total, notes = _total(request, entities, policy, connection.currency)
    blocked = _holds(entities, constraints, request)
    if blocked:
        plan = _finish(connection, request, date_from, as_of, data_hash, "", entities, total, notes)
        plan.blocked = blocked
        return plan
    level = _allocate(entities, total, request, previous if previous is not None else _previous(connection), notes)
    return _finish(connection, request, date_from, as_of, data_hash, level, entities, total, notes)


# Loading -------------------------------------------------------------------------------


def budget_holders(connection: PlatformConnection) -> list[PlatformEntity]:
    """Active entities whose own daily budget decides their spend (see the module docstring)."""
    rows = list(
        PlatformEntity.objects.filter(
            connection=connection,
            entity_type__in=[EntityType.CAMPAIGN, EntityType.AD_SET],
            status=EntityStatus.ACTIVE,
            daily_budget__isnull=False,
            budget_shared=False,
        )
        .filter(Q(parent__isnull=True) | Q(parent__status=EntityStatus.ACTIVE))
        .select_related("parent", "connection")
        .order_by("pk")
    )
    with_budgeted_children = {e.parent_id for e in rows if e.entity_type == EntityType.AD_SET}
    return [e for e in rows if not (e.entity_type == EntityType.CAMPAIGN and e.pk in with_budgeted_children)]


def _load(connection: PlatformConnection, date_from: date, date_to: date) -> list[EntityInput]:
    holders = budget_holders(connection)
    days = (date_to - date_from).days + 1
    index = {e.pk: i for i, e in enumerate(holders)}
    spend = np.zeros((len(holders), days))
    conversions = np.zeros((len(holders), days))
    revenue = np.zeros((len(holders), days))
    for chunk in chunked([e.pk for e in holders], READ_BATCH):
        rows = EntityPerformanceDaily.objects.filter(
            entity_id__in=chunk, date__gte=date_from, date__lte=date_to
        ).values_list("entity_id", "date", "spend", "conversions", "revenue")
        for entity_id, day, s, c, r in rows.iterator(chunk_size=10000):
            i, d = index[entity_id], (day - date_from).days
            spend[i, d], conversions[i, d], revenue[i, d] = float(s), float(c), float(r)
    return [
        EntityInput(
            entity=e,
            current=e.daily_budget,
            spend=spend[i],
            conversions=conversions[i],
            revenue=revenue[i],
            group=e.parent_id if e.entity_type == EntityType.AD_SET and e.parent_id else None,
        )
        for i, e in enumerate(holders)
    ]


def _spend_ratio(e: EntityInput) -> float:
    spent = e.spend[e.spend > 0][-RATIO_DAYS:]
    if len(spent) == 0 or e.current <= 0:
        return 1.0
    return float(np.clip(spent.mean() / float(e.current), *RATIO_BOUNDS))


def _value_per_conversion(e: EntityInput) -> float:
    conversions = float(e.conversions.sum())
    return float(e.revenue.sum()) / conversions if conversions > 0 else 0.0


def _bounds(e: EntityInput, constraint: EntityConstraint | None, policy, currency: str) -> None:
    current = e.current
    max_increase = policy.max_increase_pct if policy.max_increase_pct is not None else None
    max_decrease = policy.max_decrease_pct if policy.max_decrease_pct is not None else None
    increase = Decimal(max_increase if max_increase is not None else settings.PLANNER_MAX_INCREASE_PCT)
    decrease = min(
        Decimal(100), Decimal(max_decrease if max_decrease is not None else settings.PLANNER_MAX_DECREASE_PCT)
    )
    lo = current * (1 - decrease / 100)
    hi = current * (1 + increase / 100)
    for floor in (policy.min_daily_budget, constraint.min_daily_budget if constraint else None):
        if floor is not None:
            lo = max(lo, floor)
    for ceiling in (policy.max_daily_budget, constraint.max_daily_budget if constraint else None):
        if ceiling is not None:
            hi = min(hi, ceiling)
    quantum = Decimal(1).scaleb(-currency_exponent(currency))
    e.lo = max(lo, quantum).quantize(quantum, rounding="ROUND_CEILING")
    e.hi = hi.quantize(quantum, rounding=ROUND_DOWN)


def _total(request: PlanRequest, entities: list[EntityInput], policy, currency: str) -> tuple[Decimal, list[str]]:
    current = sum((e.current for e in entities), Decimal(0))
    notes: list[str] = []
    if request.budget_mode == BudgetMode.ABSOLUTE and request.total_daily_budget is not None:
        total = request.total_daily_budget
    elif request.budget_mode == BudgetMode.PERCENT and request.budget_change_pct is not None:
        total = current * (1 + request.budget_change_pct / 100)
    else:
        total = current
    if policy.max_account_daily_spend is not None and total > policy.max_account_daily_spend:
        notes.append(
            f"The total was capped at the guardrail policy's max account daily spend "
            f"{_money(policy.max_account_daily_spend, currency)}."
        )
        total = policy.max_account_daily_spend
    return total.quantize(Decimal(1).scaleb(-currency_exponent(currency)), rounding=ROUND_DOWN), notes


def _holds(entities: list[EntityInput], constraints: dict[int, EntityConstraint], request: PlanRequest) -> str:
    """Mark who keeps their budget; return why the whole plan is blocked, if it is."""
    low = []
    for e in entities:
        constraint = constraints.get(e.pk)
        if constraint is not None and constraint.locked:
            e.hold = "locked" + (f" ({constraint.note})" if constraint.note else "")
        elif e.pk in request.held_out:
            e.hold = "held out as the rollout baseline"
        elif e.lo > e.hi:
            e.hold = f"its bounds conflict (minimum {e.lo} above maximum {e.hi})"
        elif e.fit is not None and e.fit.confidence == "low":
            low.append(e)
    if low and request.low_confidence_policy == LowConfidencePolicy.BLOCK:
        names = ", ".join(e.entity.name for e in low[:5]) + (" …" if len(low) > 5 else "")
        return (
            f"{len(low)} entit{'y has' if len(low) == 1 else 'ies have'} low confidence ({names}); "
            "the low-confidence policy is block, so nothing is proposed."
        )
    for e in low:
        e.hold = f"low confidence (R² {e.fit.r_squared:.2f} < {hill.LOW_R2}), held by the policy"
    return ""


def _data_hash(connection, request: PlanRequest, entities, constraints, policy) -> str:
    digest = hashlib.sha256()
    header = {
        "connection": connection.pk,
        "request": request.as_dict(),
        "policy": [
            _str(getattr(policy, name))
            for name in (
                "max_increase_pct",
                "max_decrease_pct",
                "min_daily_budget",
                "max_daily_budget",
                "max_account_daily_spend",
            )
        ],
        "constraints": sorted(
            (c.entity_id, _str(c.min_daily_budget), _str(c.max_daily_budget), c.locked) for c in constraints.values()
        ),
        "settings": [settings.PLANNER_MAX_INCREASE_PCT, settings.PLANNER_MAX_DECREASE_PCT],
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for e in entities:
        digest.update(f"|{e.pk}:{e.current}:{e.entity.status}".encode())
        digest.update(np.ascontiguousarray(np.stack([e.spend, e.conversions, e.revenue])).tobytes())
    return digest.hexdigest()


def _previous(connection: PlatformConnection) -> dict[int, Decimal]:
    run = (
        PlannerRun.objects.filter(connection=connection, status=RunStatus.SUCCEEDED, reasoning__isnull=False)
        .exclude(fallback_level="")
        .order_by("-created_at", "-id")
        .first()
    )
    if run is None:
        return {}
    return {row["entity_id"]: Decimal(row["proposed_budget"]) for row in run.reasoning if row.get("proposed_budget")}


# Allocation ----------------------------------------------------------------------------


def _allocate(
    entities: list[EntityInput], total: Decimal, request: PlanRequest, previous: dict[int, Decimal], notes: list[str]
) -> str:
    """Fill ``proposed`` for every entity; return the fallback level used."""
    for e in entities:
        if e.hold or e.fit is None or e.fit.curve is None:
            e.proposed = e.current
    movable = [e for e in entities if not e.hold]
    free_total = total - sum((e.current for e in entities if e.hold), Decimal(0))
    free_total = _clamp_total(free_total, movable, notes)
    with_curve = [e for e in movable if e.fit is not None and e.fit.curve is not None]
    covered = sum((e.current for e in with_curve), Decimal(0))
    movable_budget = sum((e.current for e in movable), Decimal(0))
    if movable and movable_budget > 0 and covered / movable_budget >= Decimal(str(CURVE_COVERAGE)):
        try:
            curve_total = free_total - sum((e.current for e in movable if e not in with_curve), Decimal(0))
            _by_curves(with_curve, _clamp_total(curve_total, with_curve, notes))
            return FallbackLevel.CURVES
        except (Infeasible, FloatingPointError, ValueError) as exc:
            notes.append(f"The curve optimizer failed ({exc}); falling back.")
    else:
        notes.append(
            f"Curves cover {_pct(covered, movable_budget)} of the movable budget (at least "
            f"{CURVE_COVERAGE:.0%} needed); falling back."
        )
    for level in FALLBACK_CHAIN:
        weights, why = fallback_weights(level, movable, previous)
        if weights is None:
            notes.append(f"{FallbackLevel(level).label} does not apply: {why}.")
            continue
        _by_weights(movable, weights, free_total)
        return level
    raise PlanError("No fallback applies.")  # equal split always applies; kept for safety of the contract


def _clamp_total(total: Decimal, entities: list[EntityInput], notes: list[str]) -> Decimal:
    lo = sum((e.lo for e in entities), Decimal(0))
    hi = sum((e.hi for e in entities), Decimal(0))
    if total < lo:
        notes.append(f"The budget to allocate ({total}) is below the entities' minimums ({lo}); using the minimums.")
        return lo
    if total > hi:
        notes.append(f"The budget to allocate ({total}) is above the entities' maximums ({hi}); using the maximums.")
        return hi
    return total


def _by_curves(entities: list[EntityInput], total: Decimal) -> None:
    if not entities:
        return
    ratio = np.array([e.ratio for e in entities])
    curves = CurveArrays(
        vmax=np.array([e.fit.curve.vmax for e in entities]),
        half_saturation=np.array([e.fit.curve.half_saturation for e in entities]),
        shape=np.array([e.fit.curve.shape for e in entities]),
        value=np.array([e.value for e in entities]),
    )
    lo = np.array([float(e.lo) for e in entities]) * ratio
    hi = np.array([float(e.hi) for e in entities]) * ratio
    current = np.array([float(e.current) for e in entities])
    # The total budget in spend at today's pacing of these entities.
    spend_total = float(total) * float((ratio * current).sum() / current.sum())
    allocation = allocate_curves(curves, lo, hi, min(max(spend_total, lo.sum()), hi.sum()))
    _assign(entities, allocation.spend / ratio, total)
    _respect_campaign_caps(entities, curves, ratio, total)


def _by_weights(entities: list[EntityInput], weights: np.ndarray, total: Decimal) -> None:
    lo = np.array([float(e.lo) for e in entities])
    hi = np.array([float(e.hi) for e in entities])
    allocation = allocate_weights(weights, lo, hi, float(total))
    _assign(entities, allocation.spend, total)


def fallback_weights(
    level: str, entities: Sequence[EntityInput], previous: dict[int, Decimal]
) -> tuple[np.ndarray | None, str]:
    """The weights of one fallback level, or (None, why it does not apply)."""
    n = len(entities)
    if n == 0:
        return None, "no entity to allocate"
    need = FALLBACK_MIN_SHARE * n
    if level == FallbackLevel.PREVIOUS:
        known = [e for e in entities if e.pk in previous]
        if len(known) < need:
            return None, f"the previous plan covers {len(known)} of {n} entities"
        return np.array([float(previous.get(e.pk, e.current)) for e in entities]), ""
    if level == FallbackLevel.ROLLING_AVERAGE:
        recent = np.array([e.spend[-ROLLING_DAYS:].mean() for e in entities])
        if np.count_nonzero(recent > 0) < need:
            return None, f"{np.count_nonzero(recent > 0)} of {n} entities spent in the last {ROLLING_DAYS} days"
        return recent, ""
    if level == FallbackLevel.CPA:
        conversions = np.array([e.conversions.sum() for e in entities])
        spend = np.array([e.spend.sum() for e in entities])
        usable = (conversions > 0) & (spend > 0)
        if np.count_nonzero(usable) < need:
            return None, f"{np.count_nonzero(usable)} of {n} entities have a CPA"
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(usable, conversions / np.where(spend > 0, spend, 1.0), 0.0), ""
    return np.ones(n), ""


def _assign(entities: list[EntityInput], budgets: np.ndarray, total: Decimal) -> None:
    """Round to the currency, within bounds, meeting ``total`` exactly where the bounds allow."""
    if not entities:
        return
    currency = entities[0].entity.connection.currency
    quantum = Decimal(1).scaleb(-currency_exponent(currency))
    raw = np.clip(budgets, [float(e.lo) for e in entities], [float(e.hi) for e in entities])
    if raw.sum() > 0:
        raw = raw * (float(total) / raw.sum())  # spend ratios differ a little: meet the budget total
    values = []
    for e, value in zip(entities, raw, strict=True):
        amount = Decimal(str(float(value))).quantize(quantum, rounding=ROUND_DOWN)
        values.append(min(max(amount, e.lo), e.hi))
    leftover = total - sum(values, Decimal(0))
    # Hand out the rounding leftover in id order, each entity up to its bound (deterministic).
    for i in sorted(range(len(entities)), key=lambda i: entities[i].pk):
        if leftover == 0:
            break
        e = entities[i]
        room = (e.hi - values[i]) if leftover > 0 else (e.lo - values[i])
        move = min(leftover, room) if leftover > 0 else max(leftover, room)
        values[i] += move
        leftover -= move
    for e, value in zip(entities, values, strict=True):
        e.proposed = value


def _respect_campaign_caps(entities: list[EntityInput], curves: CurveArrays, ratio: np.ndarray, total: Decimal) -> None:
    """Ad sets whose sum exceeds their campaign's budget are scaled down to it; the others
    are planned again with what is left (one pass: a campaign's budget caps its ad sets)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(entities):
        if e.group is not None and e.entity.parent is not None and e.entity.parent.daily_budget is not None:
            groups[e.group].append(i)
    quantum = Decimal(1).scaleb(-currency_exponent(entities[0].entity.connection.currency))
    fixed: set[int] = set()
    for members in groups.values():
        cap = entities[members[0]].entity.parent.daily_budget
        planned = sum((entities[i].proposed for i in members), Decimal(0))
        if planned <= cap:
            continue
        for i in members:
            scaled = (entities[i].proposed * cap / planned).quantize(quantum, rounding=ROUND_DOWN)
            entities[i].proposed = max(entities[i].lo, scaled)
        fixed.update(members)
    rest = [i for i in range(len(entities)) if i not in fixed]
    if not fixed or not rest:
        return
    sub = [entities[i] for i in rest]
    remaining = total - sum((entities[i].proposed for i in fixed), Decimal(0))
    remaining = min(max(remaining, sum((e.lo for e in sub), Decimal(0))), sum((e.hi for e in sub), Decimal(0)))
    lo = np.array([float(e.lo) for e in sub]) * ratio[rest]
    hi = np.array([float(e.hi) for e in sub]) * ratio[rest]
    spend_total = float(remaining) * float(ratio[rest].mean())
    allocation = allocate_curves(curves.subset(np.array(rest)), lo, hi, min(max(spend_total, lo.sum()), hi.sum()))
    _assign(sub, allocation.spend / ratio[rest], remaining)


# Reasoning -----------------------------------------------------------------------------


def _finish(connection, request, date_from, date_to, data_hash, level, entities, total, notes) -> Plan:
    currency = connection.currency
    target, target_source = _target(request, entities, currency)
    reasoning = [_reason(e, request, target, currency, level) for e in entities]
    marginals = [r["marginal_after"] for r in reasoning if r["marginal_after"] is not None and not r["held"]]
    summary = {
        "entities": len(entities),
        "changed": sum(1 for e in entities if e.proposed is not None and e.proposed != e.current),
        "held": sum(1 for e in entities if e.hold),
        "total_before": _money(sum((e.current for e in entities), Decimal(0)), currency),
        "total_after": _money(sum((e.proposed or e.current for e in entities), Decimal(0)), currency),
        "total_requested": _money(total, currency),
        "predicted_conversions_before": _round(sum(r["predicted_before"] or 0 for r in reasoning), 2),
        "predicted_conversions_after": _round(sum(r["predicted_after"] or 0 for r in reasoning), 2),
        "objective": request.objective,
        "target": target,
        "target_source": target_source,
        "plan_marginal": _round(float(np.median(marginals)), 4) if marginals else None,
        "currency": currency,
        "model": hill.MODEL,
        "notes": notes,
    }
    return Plan(connection, request, date_from, date_to, data_hash, level, entities, reasoning, summary, notes=notes)


def _target(request: PlanRequest, entities: list[EntityInput], currency: str) -> tuple[float | None, str]:
    if request.objective == Objective.REVENUE:
        if request.target_roas is not None:
            return float(request.target_roas), "the target ROAS of the settings"
        spend = sum(float(e.spend.sum()) for e in entities)
        revenue = sum(float(e.revenue.sum()) for e in entities)
        return (_round(revenue / spend, 4), "the account's blended ROAS over the window") if spend > 0 else (None, "")
    if request.target_cpa is not None:
        return float(request.target_cpa), "the target CPA of the settings"
    spend = sum(float(e.spend.sum()) for e in entities)
    conversions = sum(float(e.conversions.sum()) for e in entities)
    if conversions <= 0:
        return None, ""
    return _round(spend / conversions, 2), "the account's blended CPA over the window"


def light(marginal: float | None, target: float | None, objective: str) -> str:
    """green below 0.9x the target CPA, yellow to 1.1x, red above; grey without data (ROAS mirrored)."""
    if marginal is None or target is None or target <= 0 or marginal <= 0:
        return "grey"
    ratio = marginal / target if objective == Objective.CONVERSIONS else target / marginal
    if ratio < LIGHT_GREEN:
        return "green"
    return "yellow" if ratio <= LIGHT_YELLOW else "red"


def _marginal(curve: hill.HillCurve, spend: float, value: float, objective: str) -> float | None:
    slope = float(curve.marginal(spend))
    if objective == Objective.REVENUE:
        return _round(slope * value, 4)
    return _round(1.0 / slope, 2) if slope > 1e-12 else None


def _reason(e: EntityInput, request: PlanRequest, target, currency: str, level: str) -> dict[str, Any]:
    curve = e.fit.curve if e.fit else None
    proposed = e.proposed if e.proposed is not None else e.current
    spend_before, spend_after = float(e.current) * e.ratio, float(proposed) * e.ratio
    before = _marginal(curve, spend_before, e.value, request.objective) if curve else None
    after = _marginal(curve, spend_after, e.value, request.objective) if curve else None
    row = {
        "entity_id": e.pk,
        "name": e.entity.name,
        "external_id": e.entity.external_id,
        "entity_type": e.entity.entity_type,
        "current_budget": _money(e.current, currency),
        "proposed_budget": _money(proposed, currency),
        "change_pct": _round(float((proposed - e.current) / e.current * 100), 1) if e.current else None,
        "current_spend": _round(spend_before, 2),
        "proposed_spend": _round(spend_after, 2),
        "metric": "marginal_cpa" if request.objective == Objective.CONVERSIONS else "marginal_roas",
        "marginal_before": before,
        "marginal_after": after,
        "light_before": light(before, target, request.objective),
        "light_after": light(after, target, request.objective),
        "predicted_before": _round(float(curve.response(spend_before)), 2) if curve else None,
        "predicted_after": _round(float(curve.response(spend_after)), 2) if curve else None,
        "confidence": e.fit.confidence if e.fit else "none",
        "r_squared": _round(e.fit.r_squared, 3) if e.fit and e.fit.r_squared is not None else None,
        "days": e.fit.days if e.fit else 0,
        "min_budget": _money(e.lo, currency),
        "max_budget": _money(e.hi, currency),
        "held": bool(e.hold) or (curve is None and level == FallbackLevel.CURVES),
    }
    row["why"] = _why(e, row, request, currency, level)
    return row


def _why(e: EntityInput, row: dict[str, Any], request: PlanRequest, currency: str, level: str) -> str:
    unit = "marginal CPA" if request.objective == Objective.CONVERSIONS else "marginal ROAS"
    if e.hold:
        return f"Held at {row['current_budget']}: {e.hold}."
    if level == "":
        return "Nothing proposed: the plan is blocked."
    if level == FallbackLevel.CURVES and (e.fit is None or e.fit.curve is None):
        return f"Held at {row['current_budget']}: no curve ({e.fit.message if e.fit else 'no data'})."
    if level == FallbackLevel.EXTERNAL:
        return f"External plan: {row['current_budget']} -> {row['proposed_budget']}."
    if level != FallbackLevel.CURVES:
        return f"{FallbackLevel(level).label}: {row['current_budget']} -> {row['proposed_budget']}."
    before, after = row["marginal_before"], row["marginal_after"]
    if e.proposed == e.current:
        return f"Kept at {row['current_budget']}: its {unit} ({_fmt(before)}) already matches the plan's."
    direction = "Raised" if e.proposed > e.current else "Lowered"
    cheaper = (e.proposed > e.current) == (request.objective == Objective.CONVERSIONS)
    comparison = "below" if cheaper else "above"
    bound = ""
    if e.proposed == e.hi:
        bound = f"; stopped at its maximum {row['max_budget']}"
    elif e.proposed == e.lo:
        bound = f"; stopped at its minimum {row['min_budget']}"
    return (
        f"{direction} {row['current_budget']} -> {row['proposed_budget']}: its {unit} {_fmt(before)} was "
        f"{comparison} the plan's; after the change it is {_fmt(after)}{bound}."
    )


# Formatting ----------------------------------------------------------------------------


def _money(amount: Decimal, currency: str) -> str:
    return str(amount.quantize(Decimal(1).scaleb(-currency_exponent(currency))))


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def _pct(part: Decimal, whole: Decimal) -> str:
    return f"{float(part / whole):.0%}" if whole else "0%"


def plan_external(
    *,
    connection: PlatformConnection,
    request: PlanRequest,
    as_of: date,
    proposals: dict[int, tuple[Decimal, str]],
) -> Plan:
    """An outside plan (API, bundle, MMM allocator) in the planner's shape.

    Locked and held-out entities keep their budgets; a proposal outside an entity's
    bounds is clamped to them and says so; entities without a proposal keep their budgets.
    The entities' curves are fitted so the reasoning shows marginal CPA before and after.
    """
    date_from = as_of - timedelta(days=request.lookback_days - 1)
    entities = [e for e in _load(connection, date_from, as_of) if e.pk in proposals]
    constraints = {c.entity_id: c for c in EntityConstraint.objects.filter(connection=connection)}
    policy = policy_for(connection.tenant, connection)
    for e in entities:
        e.fit = hill.fit_hill(e.spend, e.conversions)
        e.ratio = _spend_ratio(e)
        e.value = _value_per_conversion(e) if request.objective == Objective.REVENUE else 1.0
        _bounds(e, constraints.get(e.pk), policy, connection.currency)
    _holds(
        entities, constraints, PlanRequest(**{**request.__dict__, "low_confidence_policy": LowConfidencePolicy.HOLD})
    )
    notes = []
    for e in entities:
        if e.hold and "low confidence" in e.hold:
            e.hold = ""  # an outside model's confidence is its own; ours is shown, not imposed
        wanted = proposals[e.pk][0]
        e.proposed = e.current if e.hold else min(max(wanted, e.lo), e.hi)
        if not e.hold and e.proposed != wanted:
            notes.append(f"{e.entity.name}: proposed {wanted} clamped to {e.proposed} (its bounds {e.lo}-{e.hi}).")
    data_hash = hashlib.sha256(
        (
            _data_hash(connection, request, entities, constraints, policy)
            + json.dumps(sorted((k, str(v[0])) for k, v in proposals.items()))
        ).encode()
    ).hexdigest()
    total = sum((e.proposed for e in entities), Decimal(0))
    plan = _finish(connection, request, date_from, as_of, data_hash, FallbackLevel.EXTERNAL, entities, total, notes)
    for row in plan.reasoning:
        reason = proposals[row["entity_id"]][1]
        if reason and not row["held"]:
            row["why"] = f"External plan: {reason} ({row['current_budget']} -> {row['proposed_budget']})."
    return plan
