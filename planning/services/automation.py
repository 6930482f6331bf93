"""Automation settings per connection: modes, consent, rollout share and the planner breaker.

Guarantees:
- Changing settings needs ``planning.change_automationsettings``; every change is saved
  with history (actor and reason) and a ``settings_changed`` decision row, in one
  transaction.
- Autopilot is refused (402) without the plan's autopilot entitlement and (400) without
  a person giving their consent with a reason; the consent (who, when, why) is recorded
  and cleared when autopilot is switched off, so switching it on again asks again.
- The planner breaker opens after ``PLANNER_BREAKER_THRESHOLD`` consecutive failed runs:
  an autopilot connection drops to assist (the mode it had is kept); only an admin's reset
  closes it, restoring autopilot only while entitlement and consent still hold.
- Rollout share is deterministic: an autopilot day is a weekday in ``rollout_weekdays``
  (every day when empty); an entity is held out when the hash of (connection, entity)
  falls below ``holdout_share`` — the same entities every day, nested as the share shrinks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from budgetradar.audit import audited_save
from budgetradar.entitlements import Feature, entitlement_check_feature
from budgetradar.errors import ValidationFailed
from budgetradar.tenancy import require_perm, require_same_tenant
from planning.models import (
    AutomationSettings,
    BudgetMode,
    DecisionKind,
    LowConfidencePolicy,
    Mode,
    Objective,
    RolloutStepName,
    RolloutUnit,
)
from planning.services.decisions import decision_append
from platforms.models import PlatformConnection

STEP_ORDER = [
    RolloutStepName.SHADOW,
    RolloutStepName.P25,
    RolloutStepName.P50,
    RolloutStepName.P75,
    RolloutStepName.P100,
]
# Weekday patterns closest to each share (0 = Monday): 2, 4 and 5 of 7 days, then all.
WEEKDAY_PRESETS = {
    RolloutStepName.P25: [0, 2],
    RolloutStepName.P50: [0, 2, 4, 6],
    RolloutStepName.P75: [0, 1, 2, 3, 4],
    RolloutStepName.P100: [],
}
EDITABLE = (
    "mode",
    "objective",
    "budget_mode",
    "total_daily_budget",
    "budget_change_pct",
    "target_cpa",
    "target_roas",
    "low_confidence_policy",
    "lookback_days",
    "rollout_unit",
    "rollout_weekdays",
    "holdout_share",
    "daily_push_cap",
    "push_window_start",
    "push_window_end",
)


def automation_for(connection: PlatformConnection) -> AutomationSettings:
    """The connection's settings, created (mode off) on first use."""
    automation, _ = AutomationSettings.objects.get_or_create(
        connection=connection, defaults={"tenant_id": connection.tenant_id}
    )
    return automation


# Changing settings ---------------------------------------------------------------------


def automation_update(
    *, automation: AutomationSettings, actor, changes: dict[str, Any], consent_reason: str = "", reason: str = ""
) -> AutomationSettings:
    """Apply ``changes`` (field -> value) after validating every one; all or nothing."""
    require_same_tenant(actor, automation.tenant, what="automation settings")
    require_perm(actor, "planning.change_automationsettings", doing="change automation settings")
    clean = _validate(automation, changes)
    with transaction.atomic():
        locked = AutomationSettings.objects.select_for_update().select_related("tenant__plan").get(pk=automation.pk)
        before = {name: _jsonable(getattr(locked, name)) for name in EDITABLE}
        for name, value in clean.items():
            setattr(locked, name, value)
        _apply_consent(locked, before["mode"], actor, consent_reason)
        diff = {
            n: [before[n], _jsonable(getattr(locked, n))]
            for n in EDITABLE
            if before[n] != _jsonable(getattr(locked, n))
        }
        audited_save(locked, actor=actor, reason=reason or f"changed {', '.join(diff) or 'nothing'}")
        decision_append(
            connection=locked.connection,
            kind=DecisionKind.SETTINGS_CHANGED,
            actor=actor,
            mode=locked.mode,
            inputs={"changes": diff, "reason": reason, "consent_reason": consent_reason},
        )
    return locked


def _apply_consent(automation: AutomationSettings, mode_before: str, actor, consent_reason: str) -> None:
    if automation.mode == Mode.AUTOPILOT and mode_before != Mode.AUTOPILOT:
        require_autopilot_allowed(automation, actor=actor, consent_reason=consent_reason)
        automation.consent_by, automation.consent_at = actor, timezone.now()
        automation.consent_reason = consent_reason.strip()
    elif automation.mode != Mode.AUTOPILOT and mode_before == Mode.AUTOPILOT:
        automation.consent_by, automation.consent_at, automation.consent_reason = None, None, ""


def require_autopilot_allowed(automation: AutomationSettings, *, actor, consent_reason: str) -> None:
    """Refuse autopilot without the entitlement (402) or a person's consent with a reason (400)."""
    entitlement_check_feature(tenant=automation.tenant, feature=Feature.AUTOPILOT)
    if not getattr(actor, "is_authenticated", False):
        raise ValidationFailed(
            "Autopilot needs a person's consent; a worker cannot switch it on.", details={"mode": "consent required"}
        )
    if not consent_reason or not consent_reason.strip():
        message = "Switching autopilot on needs your consent: say why in consent_reason (it is recorded)."
        raise ValidationFailed(message, details={"consent_reason": message})


def autopilot_refusal(automation: AutomationSettings) -> str:
    """Why autopilot may not deploy right now ("" when it may)."""
    if not automation.tenant.plan.autopilot:
        return f"the {automation.tenant.plan.name} plan does not include autopilot"
    if automation.consent_by_id is None or automation.consent_at is None:
        return "nobody has given consent to autopilot"
    if automation.breaker_open:
        return f"the planner breaker is open ({automation.breaker_reason})"
    return ""


def _validate(automation: AutomationSettings, changes: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    unknown = sorted(set(changes) - set(EDITABLE))
    for name in unknown:
        errors[name] = "unknown field"
    for name, value in changes.items():
        if name in unknown:
            continue
        try:
            clean[name] = _field(name, value)
        except ValueError as exc:
            errors[name] = str(exc)
    merged = {name: clean.get(name, getattr(automation, name)) for name in EDITABLE}
    if merged["budget_mode"] == BudgetMode.ABSOLUTE and merged["total_daily_budget"] is None:
        errors.setdefault("total_daily_budget", "an absolute budget mode needs total_daily_budget")
    if merged["budget_mode"] == BudgetMode.PERCENT and merged["budget_change_pct"] is None:
        errors.setdefault("budget_change_pct", "a percent budget mode needs budget_change_pct")
    if (merged["push_window_start"] is None) != (merged["push_window_end"] is None):
        errors.setdefault("push_window_end", "give both ends of the push window, or neither")
    if errors:
        raise ValidationFailed(
            f"The automation settings of {automation.connection.name} were not changed: "
            + "; ".join(f"{k}: {v}" for k, v in errors.items()),
            details=errors,
        )
    return clean


CHOICES = {
    "mode": Mode.values,
    "objective": Objective.values,
    "budget_mode": BudgetMode.values,
    "low_confidence_policy": LowConfidencePolicy.values,
    "rollout_unit": RolloutUnit.values,
}


def _field(name: str, value: Any) -> Any:
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ValueError(f"must be one of {', '.join(CHOICES[name])}")
        return value
    if name in ("total_daily_budget", "target_cpa", "target_roas"):
        return _decimal(value, minimum=Decimal(0), exclusive=True)
    if name == "budget_change_pct":
        return _decimal(value, minimum=Decimal(-99), maximum=Decimal(1000))
    if name == "holdout_share":
        result = _decimal(value, minimum=Decimal(0), maximum=Decimal(100))
        return Decimal(0) if result is None else result
    if name in ("lookback_days", "daily_push_cap"):
        return _integer(name, value)
    if name == "rollout_weekdays":
        return _weekdays(value)
    return _time(value)


def _decimal(value: Any, *, minimum: Decimal, maximum: Decimal = Decimal("1e12"), exclusive: bool = False):
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError('must be a decimal number (a string such as "12.50")')
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not number.is_finite() or number > maximum or number < minimum or (exclusive and number == minimum):
        raise ValueError(f"must be {'above' if exclusive else 'at least'} {minimum} and at most {maximum}")
    return number.quantize(Decimal("0.0001"))


def _integer(name: str, value: Any) -> int | None:
    if value is None or value == "":
        if name == "lookback_days":
            raise ValueError("required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number")
    low, high = (28, 730) if name == "lookback_days" else (1, 100000)
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}")
    return value


def _weekdays(value: Any) -> list[int]:
    if not isinstance(value, list) or any(isinstance(d, bool) or not isinstance(d, int) for d in value):
        raise ValueError("must be a list of weekday numbers, 0 = Monday … 6 = Sunday")
    if any(not 0 <= d <= 6 for d in value):
        raise ValueError("weekdays run from 0 (Monday) to 6 (Sunday)")
    return sorted(set(value))


def _time(value: Any) -> time | None:
    if value is None or value == "":
        return None
    if isinstance(value, time):
        return value
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day (HH:MM)") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (Decimal, time)):
        return str(value)
    return value


# Rollout share -------------------------------------------------------------------------


def is_autopilot_day(automation: AutomationSettings, local_date: date) -> bool:
    weekdays = automation.rollout_weekdays or []
    return not weekdays or local_date.weekday() in weekdays


def holdout_rank(connection_id: int, entity_id: int) -> float:
    """A stable number in [0, 1) per (connection, entity): the held-out cohort is the lowest ranks."""
    digest = hashlib.sha256(f"holdout|{connection_id}|{entity_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out(automation: AutomationSettings, entity_ids: Iterable[int], share: Decimal | None = None) -> set[int]:
    """Entities kept as the baseline at ``share`` percent (default: the settings' holdout share)."""
    cut = float(automation.holdout_share if share is None else share) / 100
    if cut <= 0:
        return set()
    return {pk for pk in entity_ids if holdout_rank(automation.connection_id, pk) < cut}


def in_push_window(automation: AutomationSettings, local: datetime) -> bool:
    start, end = automation.push_window_start, automation.push_window_end
    if start is None or end is None:
        return True
    moment = local.timetz().replace(tzinfo=None)
    return start <= moment < end if start <= end else (moment >= start or moment < end)


def step_preset(automation: AutomationSettings, step: str) -> dict[str, Any]:
    """The rollout share a step means for the settings' unit."""
    if step == RolloutStepName.SHADOW:
        return {"mode": Mode.SHADOW}
    if automation.rollout_unit == RolloutUnit.DAYS:
        return {"mode": Mode.AUTOPILOT, "rollout_weekdays": WEEKDAY_PRESETS[step], "holdout_share": Decimal(0)}
    return {"mode": Mode.AUTOPILOT, "rollout_weekdays": [], "holdout_share": Decimal(100) - Decimal(step)}


def next_step(step: str) -> str | None:
    index = STEP_ORDER.index(step)
    return STEP_ORDER[index + 1] if index + 1 < len(STEP_ORDER) else None


# The planner breaker -------------------------------------------------------------------


def breaker_record_success(automation_id: int) -> None:
    AutomationSettings.objects.filter(pk=automation_id, consecutive_failed_runs__gt=0).update(consecutive_failed_runs=0)


def breaker_record_failure(automation_id: int, *, reason: str) -> bool:
    """Count a failed run; at the threshold open the breaker (autopilot -> assist). True if it opened."""
    with transaction.atomic():
        AutomationSettings.objects.filter(pk=automation_id).update(
            consecutive_failed_runs=F("consecutive_failed_runs") + 1
        )
        automation = AutomationSettings.objects.select_for_update().select_related("connection").get(pk=automation_id)
        if automation.breaker_open or automation.consecutive_failed_runs < settings.PLANNER_BREAKER_THRESHOLD:
            return False
        automation.breaker_open = True
        automation.breaker_opened_at = timezone.now()
        automation.breaker_reason = (f"{automation.consecutive_failed_runs} consecutive failed runs; last: {reason}")[
            :500
        ]
        automation.mode_before_breaker = automation.mode
        if automation.mode == Mode.AUTOPILOT:
            automation.mode = Mode.ASSIST
        audited_save(automation, actor=None, reason=f"planner breaker opened: {automation.breaker_reason}")
        decision_append(
            connection=automation.connection,
            kind=DecisionKind.BREAKER_OPENED,
            mode=automation.mode,
            actor="planner",
            outcome={"reason": automation.breaker_reason, "mode_before": automation.mode_before_breaker},
        )
    return True


def breaker_reset(*, automation: AutomationSettings, actor, reason: str = "") -> AutomationSettings:
    """Close the breaker (admin); autopilot comes back only while entitlement and consent hold."""
    require_same_tenant(actor, automation.tenant, what="automation settings")
    require_perm(actor, "planning.reset_planner_breaker", doing="reset the planner breaker")
    with transaction.atomic():
        locked = (
            AutomationSettings.objects.select_for_update()
            .select_related("tenant__plan", "connection")
            .get(pk=automation.pk)
        )
        restored = ""
        if locked.mode_before_breaker == Mode.AUTOPILOT and locked.breaker_open:
            locked.breaker_open = False
            if not autopilot_refusal(locked):
                locked.mode, restored = Mode.AUTOPILOT, Mode.AUTOPILOT
        locked.breaker_open = False
        locked.breaker_opened_at, locked.breaker_reason = None, ""
        locked.consecutive_failed_runs, locked.mode_before_breaker = 0, ""
        audited_save(locked, actor=actor, reason=reason or "planner breaker reset")
        decision_append(
            connection=locked.connection,
            kind=DecisionKind.BREAKER_RESET,
            actor=actor,
            mode=locked.mode,
            outcome={"reason": reason, "restored_mode": restored or locked.mode},
        )
    return locked
