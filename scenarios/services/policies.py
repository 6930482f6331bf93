"""Guardrail policies: creating, changing and deleting them (the API and the admin's rules).

Guarantees: only a role with the policy permissions writes; a policy belongs to its
tenant and, when it names a connection, to one of that tenant's connections; a tenant
has at most one default policy and a connection at most one of its own; every value
is checked (``policy_errors``) before anything is written, and a refusal names each
field; every write is audited with the actor and a reason.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from budgetradar.audit import audited_save
from budgetradar.errors import ValidationFailed
from budgetradar.models import Tenant
from budgetradar.tenancy import require_perm, require_same_tenant
from platforms.models import PlatformConnection
from scenarios.models import GuardrailPolicy
from scenarios.services.guardrails import DEFAULT_SEVERITIES, FIXED_SEVERITIES, SEVERITY_CHOICES

WRITABLE_FIELDS = (
    "name",
    "connection",
    "max_increase_pct",
    "max_decrease_pct",
    "min_daily_budget",
    "max_daily_budget",
    "max_account_daily_spend",
    "roas_floor",
    "cpa_ceiling",
    "change_window_days",
    "change_window_start",
    "change_window_end",
    "blackout_dates",
    "max_entities_per_deploy",
    "cooldown_hours",
    "learning_phase_warning",
    "learning_phase_change_pct",
    "shared_budget_max_campaigns",
    "require_notes",
    "severities",
)
NON_NEGATIVE = (
    "max_increase_pct",
    "max_decrease_pct",
    "min_daily_budget",
    "max_daily_budget",
    "max_account_daily_spend",
    "roas_floor",
    "cpa_ceiling",
    "learning_phase_change_pct",
)


def policy_errors(values: dict[str, Any]) -> dict[str, str]:
    """What is wrong with a policy's values, by field (empty: nothing).

    ``values`` maps field names to Python values (Decimal, time, lists); missing names
    are not judged. The admin form and the API both ask this.
    """
    errors: dict[str, str] = {}
    for name in NON_NEGATIVE:
        value = values.get(name)
        if value is not None and Decimal(value) < 0:
            errors[name] = "must be zero or more."
    if values.get("max_decrease_pct") is not None and Decimal(values["max_decrease_pct"]) > 100:
        errors["max_decrease_pct"] = "cannot be more than 100 (a budget cannot fall by more than all of it)."
    low, high = values.get("min_daily_budget"), values.get("max_daily_budget")
    if low is not None and high is not None and Decimal(low) > Decimal(high):
        errors["max_daily_budget"] = "The maximum daily budget is below the minimum."
    if ("change_window_start" in values or "change_window_end" in values) and (
        values.get("change_window_start") is None
    ) != (values.get("change_window_end") is None):
        errors["change_window_end"] = "Give both the start and the end of the change window, or neither."
    _check_days(values, errors)
    _check_dates(values, errors)
    _check_severities(values, errors)
    return errors


def _check_days(values: dict[str, Any], errors: dict[str, str]) -> None:
    days = values.get("change_window_days")
    if days is None:
        return
    if not isinstance(days, list) or any(
        not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= 6 for d in days
    ):
        errors["change_window_days"] = "must be a list of weekdays 0 (Monday) to 6 (Sunday)."
    elif len(set(days)) != len(days):
        errors["change_window_days"] = "names a weekday twice."


def _check_dates(values: dict[str, Any], errors: dict[str, str]) -> None:
    dates = values.get("blackout_dates")
    if dates is None:
        return
    if not isinstance(dates, list):
        errors["blackout_dates"] = "must be a list of dates (YYYY-MM-DD)."
        return
    bad = [repr(raw) for raw in dates if not _is_iso_date(raw)]
    if bad:
        errors["blackout_dates"] = f"not a date (use YYYY-MM-DD): {', '.join(bad[:5])}."


def _is_iso_date(raw: Any) -> bool:
    if not isinstance(raw, str) or len(raw) != 10:
        return False
    try:
        date.fromisoformat(raw)
    except ValueError:
        return False
    return True


def _check_severities(values: dict[str, Any], errors: dict[str, str]) -> None:
    severities = values.get("severities")
    if severities is None:
        return
    if not isinstance(severities, dict):
        errors["severities"] = "must map rule codes to warning, critical or off."
        return
    configurable = sorted(set(DEFAULT_SEVERITIES) - set(FIXED_SEVERITIES))
    for code, severity in severities.items():
        if code in FIXED_SEVERITIES:
            errors[f"severities.{code}"] = f"{code} is always {FIXED_SEVERITIES[code]}; it cannot be configured."
        elif code not in DEFAULT_SEVERITIES:
            errors[f"severities.{code}"] = f"unknown rule; expected one of {', '.join(configurable)}."
        elif severity not in SEVERITY_CHOICES:
            errors[f"severities.{code}"] = f"must be one of {', '.join(SEVERITY_CHOICES)}; got {severity!r}."


def guardrail_policy_create(*, tenant: Tenant, actor, values: dict[str, Any], reason: str = "") -> GuardrailPolicy:
    """A new policy of ``tenant`` (the default one, or a connection's own)."""
    require_perm(actor, "scenarios.add_guardrailpolicy", doing="create guardrail policies")
    policy = GuardrailPolicy(tenant=tenant)
    return _save(policy, actor=actor, values=values, reason=reason or "created")


def guardrail_policy_update(
    *, policy: GuardrailPolicy, actor, values: dict[str, Any], reason: str = ""
) -> GuardrailPolicy:
    """Change the given fields of a policy; the others stay as they are."""
    require_same_tenant(actor, policy.tenant, what="guardrail policy")
    require_perm(actor, "scenarios.change_guardrailpolicy", doing="change guardrail policies")
    return _save(policy, actor=actor, values=values, reason=reason or f"changed {', '.join(sorted(values))}")


def guardrail_policy_delete(*, policy: GuardrailPolicy, actor, reason: str = "") -> None:
    """Delete a policy (the history keeps it); its connections fall back to the default."""
    require_same_tenant(actor, policy.tenant, what="guardrail policy")
    require_perm(actor, "scenarios.delete_guardrailpolicy", doing="delete guardrail policies")
    policy._history_user = actor if getattr(actor, "is_authenticated", False) else None
    policy._change_reason = reason or "deleted"
    policy.delete()


def _save(policy: GuardrailPolicy, *, actor, values: dict[str, Any], reason: str) -> GuardrailPolicy:
    unknown = sorted(set(values) - set(WRITABLE_FIELDS))
    if unknown:
        raise ValidationFailed(
            f"Unknown field{'s' if len(unknown) != 1 else ''} {', '.join(unknown)}; nothing was saved.",
            details={name: "unknown field" for name in unknown},
        )
    errors = policy_errors(values)
    connection = values.get("connection", policy.connection if policy.connection_id else None)
    if connection is not None and (
        not isinstance(connection, PlatformConnection) or connection.tenant_id != policy.tenant_id
    ):
        errors["connection"] = "No such connection in your tenant."
    if errors:
        raise _refused(errors)
    for name, value in values.items():
        setattr(policy, name, value)
    errors = _clash(policy)
    try:
        policy.full_clean(exclude=["tenant", "connection"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        errors.update({name: " ".join(messages) for name, messages in exc.message_dict.items()})
    if errors:
        raise _refused(errors)
    try:
        with transaction.atomic():
            audited_save(policy, actor=actor, reason=reason)
    except IntegrityError:  # a concurrent request made the same default/connection policy
        raise _refused(_clash(policy) or {"connection": "Another policy for the same scope was saved meanwhile."})
    return policy


def _clash(policy: GuardrailPolicy) -> dict[str, str]:
    others = GuardrailPolicy.objects.filter(tenant_id=policy.tenant_id, connection_id=policy.connection_id)
    other = others.exclude(pk=policy.pk).first()
    if other is None:
        return {}
    scope = f"connection {policy.connection.name}" if policy.connection_id else "the tenant (its default policy)"
    return {"connection": f"{scope} already has guardrail policy #{other.pk} “{other.name}”; change that one instead."}


def _refused(errors: dict[str, str]) -> ValidationFailed:
    first = next(iter(errors.items()))
    return ValidationFailed(
        f"The guardrail policy is invalid: {first[0]}: {first[1]} Nothing was saved.", details=errors
    )
