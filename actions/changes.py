"""What an action means on the platform: its target field values.

One table maps each action type to the entity types it applies to and the fields it
sets, so validation, execution, verification and rollback read the same definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from actions.models import ActionType
from budgetradar.words import article, entity_type_label
from platforms.bidding import bid_change_refusal
from platforms.money import MoneyError, check_precision, money_rules
from platforms.types import Change, EntityStatus, EntityType, Field


@dataclass(frozen=True)
class ActionSpec:
    entity_types: frozenset[EntityType]
    required_params: tuple[str, ...]
    description: str


SPECS: dict[str, ActionSpec] = {
    ActionType.PAUSE_CAMPAIGN: ActionSpec(frozenset({EntityType.CAMPAIGN}), (), "set status to paused"),
    ActionType.RESUME_CAMPAIGN: ActionSpec(frozenset({EntityType.CAMPAIGN}), (), "set status to active"),
    ActionType.ADJUST_BUDGET: ActionSpec(
        frozenset({EntityType.CAMPAIGN, EntityType.AD_SET}),
        ("new_budget",),
        'set the daily budget ({"new_budget": "450.00"}, optional "budget_type": "daily" or "lifetime")',
    ),
    ActionType.ADJUST_BID: ActionSpec(
        frozenset({EntityType.AD_SET}), ("new_bid",), 'set the bid ({"new_bid": "1.20"})'
    ),
    ActionType.UPDATE_TARGETING: ActionSpec(frozenset({EntityType.AD_SET}), ("targeting",), "replace targeting"),
    ActionType.UPDATE_SCHEDULE: ActionSpec(frozenset({EntityType.AD_SET}), ("schedule",), "replace the ad schedule"),
    ActionType.SET_VALUES: ActionSpec(
        frozenset({EntityType.CAMPAIGN, EntityType.AD_SET}),
        (),
        'set several values at once ({"daily_budget": "120.00", "status": "paused", "bid": "1.10"})',
    ),
}
SET_VALUE_FIELDS = {
    "daily_budget": Field.DAILY_BUDGET,
    "lifetime_budget": Field.LIFETIME_BUDGET,
    "status": Field.STATUS,
    "bid": Field.BID,
}

BUDGET_TYPES = {"daily": Field.DAILY_BUDGET, "lifetime": Field.LIFETIME_BUDGET}
OPTIONAL_PARAMS = {ActionType.ADJUST_BUDGET: {"budget_type"}, ActionType.SET_VALUES: set(SET_VALUE_FIELDS)}


class ParamsError(ValueError):
    """Invalid action params; ``field`` names the offending param."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_money(value: Any, *, field: str, currency: str, allow_zero: bool = False, entity=None) -> Decimal:
    """A positive, finite amount the currency can represent exactly, or ``ParamsError``;
    with ``entity``, exactly as its platform takes it (Meta's offsets, Google's billable unit)."""
    if isinstance(value, float | bool):
        raise ParamsError(field, f'{field} must be a decimal string such as "450.00", not a {type(value).__name__}.')
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ParamsError(field, f'{field} must be a decimal amount such as "450.00"; got {value!r}.') from None
    if not amount.is_finite():
        raise ParamsError(field, f"{field} must be a finite amount; got {value!r}.")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ParamsError(field, f"{field} must be greater than zero; got {value}.")
    try:
        if entity is not None:
            connection = entity.connection
            rules = money_rules(connection.platform, currency, billable_unit_micros=connection.billable_unit_micros)
            return rules.check(amount)
        return check_precision(amount, currency)
    except MoneyError as exc:
        raise ParamsError(field, f"{field}: {exc}") from None


def normalize_params(action_type: str, params: Any, *, entity_type: str, currency: str, entity=None) -> dict[str, Any]:
    """Validate ``params`` for ``action_type`` on an entity; return them normalised.

    Money becomes a decimal string in the account currency; unknown keys are refused so
    a typo never silently does nothing. Given the mirror ``entity``, money must also be
    exact on its platform and a bid is refused when the entity's bidding strategy
    ignores or forbids it (``platforms.bidding``).
    """
    spec = SPECS.get(action_type)
    if spec is None:
        raise ParamsError("action_type", f"Unknown action type {action_type!r}; expected one of {', '.join(SPECS)}.")
    if EntityType(entity_type) not in spec.entity_types:
        allowed = " or ".join(article(entity_type_label(t.value)) for t in sorted(spec.entity_types))
        label = ActionType(action_type).label
        raise ParamsError("entity", f"{label} applies to {allowed}, not {article(entity_type_label(entity_type))}.")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParamsError("params", "params must be an object.")
    allowed_keys = set(spec.required_params) | OPTIONAL_PARAMS.get(action_type, set())
    unknown = sorted(set(params) - allowed_keys)
    if unknown:
        raise ParamsError(f"params.{unknown[0]}", f"Unknown param {unknown[0]!r} for {action_type}.")
    for name in spec.required_params:
        if params.get(name) in (None, ""):
            raise ParamsError(f"params.{name}", f"params.{name} is required for {action_type}: {spec.description}.")
    normalised = _normalise_values(action_type, params, currency, entity)
    if entity is not None:
        refusal = bid_strategy_refusal(action_type, normalised, entity)
        if refusal:
            raise ParamsError("params.new_bid" if action_type == ActionType.ADJUST_BID else "params.bid", refusal)
    return normalised


def bid_strategy_refusal(action_type: str, params: dict[str, Any], entity) -> str | None:
    """Why the action's bid would do nothing on ``entity`` (None: no bid, or it can work)."""
    if Field.BID not in target_values(action_type, params):
        return None
    subject = f"{entity.entity_type.replace('_', ' ')} {entity.external_id}"
    return bid_change_refusal(entity.connection.platform, entity.bid_strategy or None, subject=subject)


def _normalise_values(action_type: str, params: dict[str, Any], currency: str, entity=None) -> dict[str, Any]:
    if action_type == ActionType.SET_VALUES:
        return _normalise_set_values(params, currency, entity)
    if action_type == ActionType.ADJUST_BUDGET:
        budget_type = params.get("budget_type", "daily")
        if budget_type not in BUDGET_TYPES:
            raise ParamsError(
                "params.budget_type", f"params.budget_type must be daily or lifetime; got {budget_type!r}."
            )
        amount = parse_money(params["new_budget"], field="params.new_budget", currency=currency, entity=entity)
        return {"new_budget": str(amount), "budget_type": budget_type}
    if action_type == ActionType.ADJUST_BID:
        return {
            "new_bid": str(parse_money(params["new_bid"], field="params.new_bid", currency=currency, entity=entity))
        }
    for name in ("targeting", "schedule"):
        if name in params and not isinstance(params[name], dict):
            raise ParamsError(f"params.{name}", f"params.{name} must be an object.")
    return dict(params)


def _normalise_set_values(params: dict[str, Any], currency: str, entity=None) -> dict[str, Any]:
    if not params:
        raise ParamsError("params", "set_values needs at least one of daily_budget, lifetime_budget, status, bid.")
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name == "status":
            if value not in (EntityStatus.ACTIVE, EntityStatus.PAUSED):
                raise ParamsError("params.status", f"params.status must be active or paused; got {value!r}.")
            out[name] = str(value)
        else:
            out[name] = str(parse_money(value, field=f"params.{name}", currency=currency, entity=entity))
    return out


def target_values(action_type: str, params: dict[str, Any]) -> dict[Field, Any]:
    """The absolute field values an action sets (Decimal for money)."""
    match action_type:
        case ActionType.PAUSE_CAMPAIGN:
            return {Field.STATUS: EntityStatus.PAUSED}
        case ActionType.RESUME_CAMPAIGN:
            return {Field.STATUS: EntityStatus.ACTIVE}
        case ActionType.ADJUST_BUDGET:
            return {BUDGET_TYPES[params.get("budget_type", "daily")]: Decimal(params["new_budget"])}
        case ActionType.ADJUST_BID:
            return {Field.BID: Decimal(params["new_bid"])}
        case ActionType.UPDATE_TARGETING:
            return {Field.TARGETING: params["targeting"]}
        case ActionType.UPDATE_SCHEDULE:
            return {Field.SCHEDULE: params["schedule"]}
        case ActionType.SET_VALUES:
            return {
                SET_VALUE_FIELDS[name]: EntityStatus(value) if name == "status" else Decimal(value)
                for name, value in params.items()
            }
    raise ValueError(f"Unknown action type {action_type!r}")


def changes_for(action, ref, *, values: dict[Field, Any] | None = None) -> list[Change]:
    """Platform changes for an action (``values`` overrides the targets, e.g. for rollback)."""
    targets = values if values is not None else target_values(action.action_type, action.params)
    return [Change(ref=ref, field=field, value=value, key=str(action.pk)) for field, value in targets.items()]
