"""Comparing platform values with targets and baselines (drift and read-back checks)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from platforms.types import MONEY_FIELDS, EntityState, Field


def same_value(field: Field, left: Any, right: Any) -> bool:
    """Equal as the platform means it: money by amount (450 == 450.00), status by name."""
    if left is None or right is None:
        return left is right
    if field in MONEY_FIELDS:
        try:
            return Decimal(str(left)) == Decimal(str(right))
        except InvalidOperation:
            return False
    if field == Field.STATUS:
        return str(left) == str(right)
    return left == right


def drifted_fields(baseline: dict | None, live: EntityState, fields: list[Field]) -> list[tuple[Field, Any, Any]]:
    """Fields whose live value differs from what the approval/preflight saw.

    Fields the baseline does not record are not judged (nothing was seen to compare).
    """
    if not baseline:
        return []
    drift = []
    for field in fields:
        key = str(field)
        if baseline.get(key) is None:
            continue
        if not same_value(field, baseline[key], live.value_of(field)):
            drift.append((field, baseline[key], live.value_of(field)))
    return drift


def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "{…}"
    return "none" if value is None else str(value)
