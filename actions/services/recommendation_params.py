"""An action's params built from typed values (amounts, a percentage, a status), so
nobody types JSON: the admin's recommendation form uses this, and the API could too.

The result is validated by ``actions.changes.normalize_params``; every refusal is a
``ParamsError`` whose ``field`` names the typed value it is about.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from actions.changes import BUDGET_TYPES, ParamsError, normalize_params
from actions.models import ActionType
from platforms.models import PlatformEntity
from platforms.money import MoneyError, currency_exponent

# Which typed values each action type reads (the names the admin form's fields have).
TYPED_VALUES: dict[str, tuple[str, ...]] = {
    ActionType.ADJUST_BUDGET: ("budget_type", "new_budget", "budget_change_pct"),
    ActionType.ADJUST_BID: ("new_bid",),
    ActionType.PAUSE_CAMPAIGN: (),
    ActionType.RESUME_CAMPAIGN: (),
    ActionType.SET_VALUES: ("daily_budget", "lifetime_budget", "bid", "status"),
    ActionType.UPDATE_TARGETING: ("replacement",),
    ActionType.UPDATE_SCHEDULE: ("replacement",),
}
# normalize_params names a param ``params.<name>``; the typed value it came from.
PARAM_VALUE_NAMES = {
    "params.new_budget": "new_budget",
    "params.budget_type": "budget_type",
    "params.new_bid": "new_bid",
    "params.daily_budget": "daily_budget",
    "params.lifetime_budget": "lifetime_budget",
    "params.bid": "bid",
    "params.status": "status",
    "params.targeting": "replacement",
    "params.schedule": "replacement",
}


def _given(value: Any) -> bool:
    return value not in (None, "", {})


def percent_of(entity: PlatformEntity, budget_type: str, pct: Decimal) -> Decimal:
    """The entity's current (mirrored) budget changed by ``pct`` percent, rounded to the currency."""
    field = BUDGET_TYPES[budget_type]
    current = getattr(entity, field.value, None)
    if current is None:
        raise ParamsError("budget_change_pct", f"{entity.name} has no {budget_type} budget to change by a percentage.")
    currency = entity.connection.currency
    try:
        step = Decimal(1).scaleb(-currency_exponent(currency))
    except MoneyError as exc:
        raise ParamsError("budget_change_pct", str(exc)) from None
    return (Decimal(current) * (1 + pct / 100)).quantize(step, rounding=ROUND_HALF_UP)


def params_from_values(action_type: str, values: dict[str, Any], *, entity: PlatformEntity) -> dict[str, Any]:
    """The normalised params of ``action_type`` on ``entity`` from typed ``values``.

    An adjusted budget takes either a new amount or a change in percent of the current
    budget (exactly one). Raises ``ParamsError`` naming the typed value at fault.
    """
    wanted = {name: values.get(name) for name in TYPED_VALUES.get(action_type, ()) if _given(values.get(name))}
    params: dict[str, Any]
    if action_type == ActionType.ADJUST_BUDGET:
        budget_type = wanted.get("budget_type") or "daily"
        amount, pct = wanted.get("new_budget"), wanted.get("budget_change_pct")
        if amount is not None and pct is not None:
            raise ParamsError("budget_change_pct", "Give either a new budget or a change in percent, not both.")
        if amount is None and pct is None:
            raise ParamsError("new_budget", "Give the new budget (or a change in percent of the current one).")
        if pct is not None:
            amount = percent_of(entity, budget_type, Decimal(pct))
        params = {"new_budget": str(amount), "budget_type": budget_type}
    elif action_type in (ActionType.UPDATE_TARGETING, ActionType.UPDATE_SCHEDULE):
        name = "targeting" if action_type == ActionType.UPDATE_TARGETING else "schedule"
        if "replacement" not in wanted:
            raise ParamsError("replacement", f"Give the new {name}.")
        params = {name: wanted["replacement"]}
    elif action_type == ActionType.SET_VALUES:
        params = {name: str(value) for name, value in wanted.items()}
        if not params:
            raise ParamsError("daily_budget", "Give at least one value: daily budget, lifetime budget, bid or status.")
    else:
        params = {name: str(value) for name, value in wanted.items()}
    try:
        return normalize_params(
            action_type, params, entity_type=entity.entity_type, currency=entity.connection.currency, entity=entity
        )
    except ParamsError as exc:
        raise ParamsError(PARAM_VALUE_NAMES.get(exc.field, exc.field), exc.message) from None
