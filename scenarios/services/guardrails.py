"""Guardrails: the limits a preflight checks every change against.

Each rule is one ``evaluate_<rule>`` function taking plain values and returning a breach
dict (or None): ``{"code", "severity", "message", "limit", "observed", "key", "field"}``.
The preflight decides what to evaluate and where the breach belongs (field, entity or
run); these functions only judge.

Policy resolution (``policy_for``): the connection's own policy, else the tenant's
default policy, else the built-in defaults (no thresholds, so only the rules that need
none apply: entity missing, shared-budget reach notices, low-confidence forecasts, Meta
learning phase). A rule's severity is ``DEFAULT_SEVERITIES[code]`` unless the policy's
``severities`` names ``warning``, ``critical`` or ``off`` (the rule is not evaluated).
``entity_missing`` is always critical: there is nothing on the platform to change.

Boundaries, so "at the threshold" is never a breach: percentages compare the value shown
(two decimals, half-even); budgets and totals compare exactly; a change window includes
its start and excludes its end; a cooldown has passed once exactly ``cooldown_hours``
have elapsed. Times are judged in the connection's time zone; a window whose end is
before its start runs past midnight and belongs to the weekday it starts on.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from budgetradar.models import Tenant
from budgetradar.timefmt import format_time
from platforms.models import PlatformConnection
from platforms.money import quantize
from scenarios.models import GuardrailPolicy

WARNING = "warning"
CRITICAL = "critical"
OFF = "off"
SEVERITY_CHOICES = (WARNING, CRITICAL, OFF)
SEVERITY_RANK = {CRITICAL: 0, WARNING: 1}

DEFAULT_SEVERITIES: dict[str, str] = {
    "max_increase_pct": CRITICAL,
    "max_decrease_pct": WARNING,
    "min_daily_budget": CRITICAL,
    "max_daily_budget": CRITICAL,
    "max_account_daily_spend": CRITICAL,
    "roas_floor": WARNING,
    "cpa_ceiling": WARNING,
    "change_window": CRITICAL,
    "blackout_date": CRITICAL,
    "max_entities_per_deploy": CRITICAL,
    "cooldown": CRITICAL,
    "learning_phase": WARNING,
    "shared_budget_reach": CRITICAL,
    "notes_required": CRITICAL,
    "entity_missing": CRITICAL,
    "low_confidence_forecast": WARNING,
    "change_rate_limit": WARNING,
    "shared_budget_conflict": CRITICAL,
    "platform_minimum_budget": CRITICAL,
    "google_operations_quota": WARNING,
}
# Rules about what the platform cannot do at all: no policy can soften them.
FIXED_SEVERITIES = {"entity_missing": CRITICAL, "shared_budget_conflict": CRITICAL}
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PCT_QUANTUM = Decimal("0.01")

Breach = dict[str, Any]


# Policies ------------------------------------------------------------------------------


def builtin_policy(tenant: Tenant) -> GuardrailPolicy:
    """The unsaved policy used when the tenant has none: no thresholds, default severities."""
    return GuardrailPolicy(tenant=tenant, name="Built-in defaults (no thresholds)")


def policy_for(tenant: Tenant, connection: PlatformConnection | None = None) -> GuardrailPolicy:
    """The policy that applies to ``connection`` (one query)."""
    return policies_for(tenant=tenant, connections=[connection] if connection is not None else [])[
        connection.pk if connection is not None else None
    ]


def policies_for(*, tenant: Tenant, connections: Iterable[PlatformConnection]) -> dict[int | None, GuardrailPolicy]:
    """The applicable policy per connection id (key None: the tenant-wide one), one query."""
    policies = list(GuardrailPolicy.objects.filter(tenant=tenant))
    default = next((p for p in policies if p.connection_id is None), None) or builtin_policy(tenant)
    own = {p.connection_id: p for p in policies if p.connection_id is not None}
    resolved: dict[int | None, GuardrailPolicy] = {None: default}
    for connection in connections:
        resolved[connection.pk] = own.get(connection.pk, default)
    return resolved


def severity_of(policy: GuardrailPolicy, code: str) -> str | None:
    """``warning`` or ``critical``; None when the policy switched the rule off."""
    if code in FIXED_SEVERITIES:
        return FIXED_SEVERITIES[code]
    configured = (policy.severities or {}).get(code)
    severity = configured if configured in SEVERITY_CHOICES else DEFAULT_SEVERITIES[code]
    return None if severity == OFF else severity


def make_breach(
    policy: GuardrailPolicy,
    code: str,
    message: str,
    *,
    limit: Any = None,
    observed: Any = None,
    key: str | None = None,
    field: str | None = None,
    severity: str | None = None,
) -> Breach | None:
    """A breach dict with the policy's severity for ``code`` (None when switched off)."""
    configured = severity_of(policy, code)
    if configured is None:
        return None
    return {
        "code": code,
        "severity": severity or configured,
        "message": message,
        "limit": None if limit is None else str(limit),
        "observed": None if observed is None else str(observed),
        "key": key,
        "field": field,
    }


def breach_sort_key(breach: Breach) -> tuple:
    """Critical first, then by code, entity key, field and message (a total order)."""
    return (
        SEVERITY_RANK[breach["severity"]],
        breach["code"],
        breach["key"] or "",
        breach["field"] or "",
        breach["message"],
    )


def percent_change(before: Decimal | None, after: Decimal | None) -> Decimal | None:
    """(after - before) / before in percent, two decimals half-even; None from zero or unset."""
    if before is None or after is None or before == 0:
        return None
    value = ((after - before) * 100 / before).quantize(PCT_QUANTUM, ROUND_HALF_EVEN)
    return value if value != 0 else Decimal("0.00")


# Field rules ---------------------------------------------------------------------------


def evaluate_max_increase_pct(
    policy: GuardrailPolicy, *, subject: str, key: str, field: str, before: Decimal | None, after: Decimal, unit: str
) -> Breach | None:
    """An increase above ``max_increase_pct``; an increase from zero or unset cannot be
    measured in percent and is a breach whenever the rule has a limit."""
    limit = policy.max_increase_pct
    if limit is None:
        return None
    pct = percent_change(before, after)
    if pct is None:
        if after <= 0 or (before is not None and before != 0):
            return None
        return make_breach(
            policy,
            "max_increase_pct",
            f"{subject}: {_label(field)} goes from {'zero' if before == 0 else 'unset'} to {_fmt(after, unit)}, an "
            f"increase no percentage can measure against the {limit}% allowed per change. Check the amount, "
            "or ask for an override.",
            limit=limit,
            key=key,
            field=field,
        )
    if pct <= limit:
        return None
    return make_breach(
        policy,
        "max_increase_pct",
        f"{subject}: {_label(field)} rises {pct}% (from {_fmt(before, unit)} to {_fmt(after, unit)}), above the "
        f"{limit}% allowed per change. Raise it in smaller steps over several deploys, or ask for an override.",
        limit=limit,
        observed=pct,
        key=key,
        field=field,
    )


def evaluate_max_decrease_pct(
    policy: GuardrailPolicy, *, subject: str, key: str, field: str, before: Decimal | None, after: Decimal, unit: str
) -> Breach | None:
    limit = policy.max_decrease_pct
    pct = percent_change(before, after)
    if limit is None or pct is None or -pct <= limit:
        return None
    return make_breach(
        policy,
        "max_decrease_pct",
        f"{subject}: {_label(field)} falls {-pct}% (from {_fmt(before, unit)} to {_fmt(after, unit)}), more than "
        f"the {limit}% allowed per change. Lower it in smaller steps, or pause the entity instead.",
        limit=limit,
        observed=-pct,
        key=key,
        field=field,
    )


def evaluate_min_daily_budget(
    policy: GuardrailPolicy, *, subject: str, key: str, after: Decimal, unit: str
) -> Breach | None:
    if policy.min_daily_budget is None or after >= policy.min_daily_budget:
        return None
    limit = quantize(policy.min_daily_budget, unit)
    return make_breach(
        policy,
        "min_daily_budget",
        f"{subject}: the daily budget {after} {unit} is below the minimum of {limit} {unit}. Set at least "
        f"{limit} {unit}, or pause the entity instead.",
        limit=limit,
        observed=after,
        key=key,
        field="daily_budget",
    )


def evaluate_max_daily_budget(
    policy: GuardrailPolicy, *, subject: str, key: str, after: Decimal, unit: str
) -> Breach | None:
    if policy.max_daily_budget is None or after <= policy.max_daily_budget:
        return None
    limit = quantize(policy.max_daily_budget, unit)
    return make_breach(
        policy,
        "max_daily_budget",
        f"{subject}: the daily budget {after} {unit} is above the maximum of {limit} {unit}. Set at most "
        f"{limit} {unit}, or ask for an override.",
        limit=limit,
        observed=after,
        key=key,
        field="daily_budget",
    )


def evaluate_learning_phase(
    policy: GuardrailPolicy,
    *,
    subject: str,
    key: str,
    field: str,
    platform: str,
    entity_type: str,
    before: Decimal | None,
    after: Decimal,
) -> Breach | None:
    """Meta ad sets re-enter the learning phase after a significant budget or bid change."""
    if not policy.learning_phase_warning or platform != "meta" or entity_type != "ad_set":
        return None
    limit = policy.learning_phase_change_pct
    pct = percent_change(before, after)
    if pct is None or abs(pct) <= limit:
        return None
    return make_breach(
        policy,
        "learning_phase",
        f"{subject}: {_label(field)} changes {pct}%, more than {limit}%; Meta will likely put the ad set back "
        "into the learning phase, with unstable delivery for a few days. Consider smaller steps.",
        limit=limit,
        observed=abs(pct),
        key=key,
        field=field,
    )


def evaluate_shared_budget_reach(
    policy: GuardrailPolicy, *, subject: str, key: str, field: str, budget_id: str, campaigns: int
) -> Breach | None:
    """Always a warning naming how many campaigns move; the policy's severity above its limit."""
    limit = policy.shared_budget_max_campaigns
    over = limit is not None and campaigns > limit
    others = campaigns - 1
    message = (
        f"{subject}: {_label(field)} is on shared budget {budget_id}, so the change moves {campaigns} "
        f"campaign{'s' if campaigns != 1 else ''} ({others} besides this one)."
    )
    if over:
        message += f" More than the {limit} allowed; give the campaigns their own budgets or ask for an override."
    else:
        message += " Check that every campaign listed should move."
    return make_breach(
        policy,
        "shared_budget_reach",
        message,
        limit=limit,
        observed=campaigns,
        key=key,
        field=field,
        severity=None if over else WARNING,
    )


def evaluate_platform_minimum_budget(
    policy: GuardrailPolicy, *, subject: str, key: str, after: Decimal, unit: str, minimums: dict[str, Any] | None
) -> Breach | None:
    """A Meta daily budget below the account's smallest minimum (``act_<id>/minimum_budgets``,
    ``min_daily_budget_imp``): Meta refuses it whatever the ad set optimises for."""
    if not minimums or "min_daily_budget_imp" not in minimums:
        return None
    floor = Decimal(str(minimums["min_daily_budget_imp"]))
    if after >= floor:
        return None
    higher = ", ".join(
        f"{name.removeprefix('min_daily_budget_').replace('_', ' ')} {Decimal(str(v))} {unit}"
        for name, v in sorted(minimums.items())
        if name != "min_daily_budget_imp"
    )
    return make_breach(
        policy,
        "platform_minimum_budget",
        f"{subject}: the daily budget {after} {unit} is below Meta's minimum for this account of {floor} {unit} "
        f"(impression-optimised ad sets; more for other goals{': ' + higher if higher else ''}). Meta refuses it; "
        "set at least the minimum.",
        limit=floor,
        observed=after,
        key=key,
        field="daily_budget",
    )


# Entity rules --------------------------------------------------------------------------


def evaluate_change_rate_limit(
    policy: GuardrailPolicy, *, subject: str, key: str, allowance: Any, time_zone: str | None = None
) -> Breach | None:
    """A Meta ad set budget change beyond 4 an hour (``platforms.change_limits``): Meta would
    refuse it and block the ad set's budget for an hour, so it waits until it is allowed (that
    moment shown in ``time_zone``, the account's, zone named)."""
    if allowance is None or allowance.allowed:
        return None
    return make_breach(
        policy,
        "change_rate_limit",
        allowance.describe(subject, time_zone=time_zone) + " Deploy it after then.",
        limit=allowance.limit,
        observed=allowance.recent_changes,
        key=key,
    )


def evaluate_shared_budget_conflict(
    policy: GuardrailPolicy, *, subject: str, key: str, field: str, budget_id: str, others: list[tuple[str, Any]]
) -> Breach | None:
    """Two items set one shared budget to different values: there is one amount to set."""
    if not others:
        return None
    named = "; ".join(f"{other} sets it to {value}" for other, value in others)
    return make_breach(
        policy,
        "shared_budget_conflict",
        f"{subject}: {_label(field)} is on shared budget {budget_id}, and {named}. A shared budget has one amount: "
        "give these items the same value, or give a campaign its own budget.",
        observed=len(others) + 1,
        key=key,
        field=field,
    )


def evaluate_entity_missing(policy: GuardrailPolicy, *, subject: str, key: str, removed: bool) -> Breach | None:
    reason = "is removed on the platform (removal is one-way)" if removed else "was not found on the platform"
    return make_breach(
        policy,
        "entity_missing",
        f"{subject} {reason}, so it cannot be changed. Sync the connection and drop it from the plan.",
        key=key,
    )


def evaluate_cooldown(
    policy: GuardrailPolicy,
    *,
    subject: str,
    key: str,
    last_change: datetime | None,
    now: datetime,
    time_zone: str | None = None,
) -> Breach | None:
    """The cooldown breach, its end shown in ``time_zone`` (the account's; default UTC), zone named."""
    hours = policy.cooldown_hours
    if hours is None or last_change is None:
        return None
    elapsed = now - last_change
    if elapsed >= timedelta(hours=hours):
        return None
    elapsed_hours = Decimal(elapsed.total_seconds() / 3600).quantize(Decimal("0.1"), ROUND_HALF_EVEN)
    ready = format_time(last_change + timedelta(hours=hours), time_zone)
    return make_breach(
        policy,
        "cooldown",
        f"{subject} was last changed {elapsed_hours} h ago; the cooldown is {hours} h. Wait until {ready}, "
        "or ask for an override.",
        limit=hours,
        observed=elapsed_hours,
        key=key,
    )


def evaluate_roas_floor(
    policy: GuardrailPolicy, *, subject: str, key: str, roas: Decimal | None, confidence: str
) -> Breach | None:
    floor = policy.roas_floor
    if floor is None or roas is None or roas >= floor:
        return None
    return make_breach(
        policy,
        "roas_floor",
        f"{subject}: forecast ROAS after the change is {roas} ({confidence} confidence), below the floor of "
        f"{floor}. Lower the budget or choose a better-performing entity.",
        limit=floor,
        observed=roas,
        key=key,
    )


def evaluate_cpa_ceiling(
    policy: GuardrailPolicy, *, subject: str, key: str, cpa: Decimal | None, unit: str, confidence: str
) -> Breach | None:
    if policy.cpa_ceiling is None or cpa is None or cpa <= policy.cpa_ceiling:
        return None
    ceiling = quantize(policy.cpa_ceiling, unit)
    return make_breach(
        policy,
        "cpa_ceiling",
        f"{subject}: forecast cost per conversion after the change is {cpa} {unit} ({confidence} confidence), "
        f"above the ceiling of {ceiling} {unit}. Lower the budget, or ask for an override.",
        limit=ceiling,
        observed=cpa,
        key=key,
    )


def evaluate_low_confidence_forecast(
    policy: GuardrailPolicy, *, subject: str, key: str, forecast: dict[str, Any] | None
) -> Breach | None:
    if forecast is None:
        message = (
            f"{subject}: no forecast, there are no days with spend and conversions to fit a response curve on. "
            "Judge the change without one, or sync performance first."
        )
        return make_breach(policy, "low_confidence_forecast", message, key=key, observed="none")
    if forecast["confidence"] != "low":
        return None
    message = (
        f"{subject}: the forecast has low confidence ({forecast['days']} days, R² {forecast['r_squared']}); "
        "treat its conversions and revenue as a rough guide."
    )
    return make_breach(policy, "low_confidence_forecast", message, key=key, observed="low")


# Run rules (per connection or per policy) ------------------------------------------------


def evaluate_max_account_daily_spend(
    policy: GuardrailPolicy, *, account: str, before: Decimal, after: Decimal, unit: str
) -> Breach | None:
    """The account's total daily budget after the change above the limit, and growing."""
    if policy.max_account_daily_spend is None or after <= policy.max_account_daily_spend or after <= before:
        return None
    limit = quantize(policy.max_account_daily_spend, unit)
    return make_breach(
        policy,
        "max_account_daily_spend",
        f"{account}: the daily budgets of active campaigns add up to {after} {unit} after the change "
        f"(now {before} {unit}), above the account limit of {limit} {unit}. Lower other budgets in the same "
        "plan, or ask for an override.",
        limit=limit,
        observed=after,
        field="daily_budget",
    )


def in_change_window(policy: GuardrailPolicy, local: datetime) -> bool:
    """Whether ``local`` (in the account's time zone) is inside the policy's change window."""
    days = set(policy.change_window_days or [])
    start, end = policy.change_window_start, policy.change_window_end
    moment = local.time().replace(tzinfo=None)
    weekday = local.weekday()
    if start is None or end is None or start == end:
        inside_time = _inside(moment, start, end)
    elif start < end:
        inside_time = start <= moment < end
    else:  # past midnight: the small hours belong to the previous day's window
        inside_time = moment >= start or moment < end
        if moment < end:
            weekday = (weekday - 1) % 7
    return inside_time and (not days or weekday in days)


def _inside(moment: time, start: time | None, end: time | None) -> bool:
    if start is not None and end is None:
        return moment >= start
    if end is not None and start is None:
        return moment < end
    return True


def describe_window(policy: GuardrailPolicy) -> str:
    days = sorted(set(policy.change_window_days or []))
    start, end = policy.change_window_start, policy.change_window_end
    when = "any time" if start is None and end is None else f"{_hhmm(start) or '00:00'}-{_hhmm(end) or '24:00'}"
    on = "every day" if not days else ", ".join(WEEKDAYS[d] for d in days)
    return f"{when} on {on}"


def evaluate_change_window(policy: GuardrailPolicy, *, account: str, now: datetime, time_zone: str) -> Breach | None:
    if not policy.change_window_days and policy.change_window_start is None and policy.change_window_end is None:
        return None
    local = now.astimezone(ZoneInfo(time_zone))
    if in_change_window(policy, local):
        return None
    observed = f"{WEEKDAYS[local.weekday()]} {local:%H:%M} {time_zone}"
    return make_breach(
        policy,
        "change_window",
        f"{account}: changes are allowed {describe_window(policy)} ({time_zone}); it is now {observed}. "
        "Deploy inside the window, or ask for an override.",
        limit=describe_window(policy),
        observed=observed,
    )


def evaluate_blackout_date(policy: GuardrailPolicy, *, account: str, now: datetime, time_zone: str) -> Breach | None:
    dates = {str(d) for d in policy.blackout_dates or []}
    today = now.astimezone(ZoneInfo(time_zone)).date().isoformat()
    if today not in dates:
        return None
    return make_breach(
        policy,
        "blackout_date",
        f"{account}: {today} is a blackout date in {time_zone}; no changes are allowed today. Deploy on another "
        "day, or ask for an override.",
        limit=", ".join(sorted(dates)),
        observed=today,
    )


def evaluate_max_entities_per_deploy(policy: GuardrailPolicy, *, scope: str, changed: int) -> Breach | None:
    limit = policy.max_entities_per_deploy
    if limit is None or changed <= limit:
        return None
    return make_breach(
        policy,
        "max_entities_per_deploy",
        f"{scope}: the plan changes {changed} entities, more than the {limit} allowed in one deploy. Split it "
        "into smaller scenarios, or ask for an override.",
        limit=limit,
        observed=changed,
    )


def evaluate_google_operations_quota(
    policy: GuardrailPolicy, *, account: str, needed: int, status: Any
) -> Breach | None:
    """The plan needs more Google Ads operations than the developer token has left today."""
    if status is None or status.allows(needed):
        return None
    return make_breach(
        policy,
        "google_operations_quota",
        f"{account}: the deploy needs about {needed} Google Ads operations and the developer token has "
        f"{status.remaining} of its {status.limit} left today (resets {status.resets_at:%Y-%m-%d %H:%M %Z}). "
        "The rest waits for the reset; split the plan, or ask Google for Standard access.",
        limit=status.remaining,
        observed=needed,
    )


def evaluate_notes_required(policy: GuardrailPolicy, *, scope: str, notes: str) -> Breach | None:
    if not policy.require_notes or notes.strip():
        return None
    return make_breach(
        policy,
        "notes_required",
        f"{scope}: the guardrail policy requires notes explaining the change, and the plan has none. Add notes "
        "to the scenario and run the preflight again.",
        observed="none",
    )


def _fmt(amount: Decimal, unit: str) -> str:
    return f"{quantize(amount, unit)} {unit}"


def _label(field: str) -> str:
    return {"daily_budget": "daily budget", "lifetime_budget": "lifetime budget", "bid": "bid"}.get(field, field)


def _hhmm(value: time | None) -> str:
    return value.strftime("%H:%M") if value is not None else ""
