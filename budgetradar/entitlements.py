"""The entitlement service: what a tenant's plan allows, checked race-safely."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from budgetradar.errors import NotEntitled
from budgetradar.models import Plan, Tenant


class Feature:
    ACTIONS = "actions"
    LIVE_DEPLOY = "live_deploy"
    AUTOPILOT = "autopilot"
    CONNECTIONS = "connections"


def month_start(tenant: Tenant, now: datetime | None = None) -> datetime:
    """Start of the current calendar month in the tenant's time zone (as aware UTC)."""
    local = (now or timezone.now()).astimezone(ZoneInfo(tenant.time_zone))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def lock_tenant(tenant_id: int) -> Tenant:
    """Lock the tenant row until the surrounding transaction ends.

    Every counted entitlement (approvals, connections) takes this lock first, so two
    requests at the limit are serialised and cannot both pass. Must run inside
    ``transaction.atomic``.
    """
    return Tenant.objects.select_for_update().select_related("plan").get(pk=tenant_id)


def _refuse(plan: Plan, what: str) -> NotEntitled:
    return NotEntitled(f"The {plan.name} plan does not include {what}. Upgrade the plan to use it.")


def entitlement_check_action_approvals(*, tenant: Tenant, count: int = 1, now: datetime | None = None) -> Tenant:
    """Refuse unless the plan allows ``count`` more approved actions this month.

    Guarantees: on PostgreSQL the tenant row is locked (``select_for_update``) before
    counting, so concurrent approvals at the limit are serialised; the caller's
    transaction must commit the approvals before the lock is released. Re-approving
    an action approved earlier this month does not count twice.
    """
    from actions.models import Action  # actions depends on budgetradar, not the reverse

    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("entitlement checks must run inside transaction.atomic")
    locked = lock_tenant(tenant.pk)
    plan = locked.plan
    if not plan.actions_enabled:
        raise _refuse(plan, "actions (approving changes)")
    if plan.actions_per_month is None:
        return locked
    used = Action.objects.filter(tenant=locked, approved_at__gte=month_start(locked, now)).count()
    if used + count > plan.actions_per_month:
        raise NotEntitled(
            f"The {plan.name} plan allows {plan.actions_per_month} approved actions a month; "
            f"{used} are used this month, so {count} more cannot be approved. Upgrade the plan "
            f"or wait for next month."
        )
    return locked


def entitlement_check_feature(*, tenant: Tenant, feature: str) -> None:
    """Refuse a boolean feature (live deploy, autopilot) the plan lacks."""
    plan = tenant.plan
    allowed = {Feature.LIVE_DEPLOY: plan.live_deploy, Feature.AUTOPILOT: plan.autopilot}[feature]
    if not allowed:
        raise _refuse(plan, feature.replace("_", " "))


def entitlement_check_new_connection(*, tenant: Tenant) -> None:
    """Refuse a new platform connection beyond the plan's maximum (locks the tenant)."""
    locked = lock_tenant(tenant.pk)
    limit = locked.plan.max_connections
    if limit is None:
        return
    used = locked.connections.count()
    if used >= limit:
        raise NotEntitled(
            f"The {locked.plan.name} plan allows {limit} platform connection{'s' if limit != 1 else ''}; "
            f"{used} exist. Upgrade the plan to add more."
        )
