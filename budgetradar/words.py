"""Words a person reads instead of codes: labels for enum values, articles, plurals, actors.

Admin pages (and messages services raise) call these rather than printing stored codes
such as ``ad_set``, ``auth_expired`` or ``worker:host:12040:ab12cd34``. A code without a
label here is still shown readably (underscores become spaces), never as the raw value.
"""

from __future__ import annotations

from decimal import Decimal

from budgetradar.timefmt import EMPTY
from platforms.money import MoneyError, currency_exponent

ENTITY_TYPES = {"campaign": "campaign", "ad_set": "ad set", "ad": "ad", "creative": "creative"}

ERRORS = {
    "rate_limited": "Rate limited by the platform",
    "transient": "Temporary platform error",
    "auth_expired": "Access to the account expired",
    "permission_denied": "No permission on the platform",
    "not_found": "Not found on the platform",
    "invalid_value": "Value refused by the platform",
    "conflict": "Changed by someone else at the same moment",
    "not_supported": "Not supported by the platform",
    "unknown": "Unrecognised platform error",
    "stale": "Changed on the platform since approval",
    "rollback_expired": "Rollback window expired",
}

CHANGE_TYPES = {"update": "Changes", "noop": "Unchanged", "create": "New", "missing": "Missing"}

# Owner tokens are "<role>:<host>:<pid>:<nonce>" (actions.services.leases.new_token).
ACTORS = {
    "worker": "scheduled worker",
    "reconciler": "reconciler",
    "rollback": "rollback worker",
    "planner": "planner",
    "dispatcher": "dispatcher",
    "system": "BudgetRadar",
}


def humanize(code: str | None) -> str:
    """``max_increase_pct`` → ``max increase pct``: the fallback for codes without a label."""
    return (code or "").replace("_", " ").strip()


def article(phrase: str) -> str:
    """``an ad set``, ``a campaign``."""
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def entity_type_label(value: str | None) -> str:
    return ENTITY_TYPES.get(value or "", humanize(value))


def error_label(code: str | None) -> str:
    return ERRORS.get(code or "", humanize(code).capitalize())


def change_type_label(code: str | None) -> str:
    return CHANGE_TYPES.get(code or "", humanize(code).capitalize())


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``1 action``, ``2 actions``, ``0 entities`` (with ``many="entities"``)."""
    return f"{count} {singular if count == 1 else (many or singular + 's')}"


def actor_display(actor: str | None) -> str:
    """Who did it, as a person reads it: a user name as is, ``worker:vm:12040:ab12`` as
    ``scheduled worker (vm, process 12040)``, nothing as ``BudgetRadar``."""
    if not actor:
        return ACTORS["system"]
    role, _, rest = actor.partition(":")
    if role not in ACTORS:
        return actor
    parts = rest.split(":")
    if len(parts) >= 2 and parts[1].isdigit():
        return f"{ACTORS[role]} ({parts[0]}, process {parts[1]})"
    return f"{ACTORS[role]} ({rest})" if rest else ACTORS[role]


def format_money(amount: Decimal | str | None, currency: str) -> str:
    """``1,234.50 EUR``: grouped, with the currency's own number of decimals."""
    if amount is None or amount == "":
        return EMPTY
    try:
        value = Decimal(str(amount))
        places = currency_exponent(currency)
    except (ArithmeticError, MoneyError, ValueError):
        return f"{amount} {currency}"
    return f"{value:,.{places}f} {currency}"
