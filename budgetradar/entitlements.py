"""The entitlement service: what a tenant's plan allows, checked race-safely."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class ApprovalQuota:
    """A tenant's approved actions this month as a run of approvals sees them.

    ``refusal`` is the one statement of the monthly rule; ``use`` counts an approval that
    passed, so a judgement of many approvals in a row (a confirmation page) sees the quota
    used up by the earlier ones exactly as the approvals themselves will, one transaction
    after the other.
    """

    plan: Plan
    used: int
    since: datetime

    def refusal(self, count: int = 1) -> NotEntitled | None:
        """Why ``count`` more approvals are refused now, or None."""
        plan = self.plan
        if not plan.actions_enabled:
            return _refuse(plan, "actions (approving changes)")
        if plan.actions_per_month is None or self.used + count <= plan.actions_per_month:
            return None
        return NotEntitled(
            f"The {plan.name} plan allows {plan.actions_per_month} approved actions a month; "
            f"{self.used} are used this month, so {count} more cannot be approved. Upgrade the plan "
            f"or wait for next month."
        )

    def use(self, action) -> None:
        """Count the approval of ``action`` (re-approving one approved this month does not count twice)."""
        if action.approved_at is None or action.approved_at < self.since:
            self.used += 1


def approval_quota(*, tenant: Tenant, now: datetime | None = None) -> ApprovalQuota:
    """The tenant's quota as it stands, read without a lock (for judging, never for approving)."""
    from actions.models import Action  # actions depends on budgetradar, not the reverse

    tenant = Tenant.objects.select_related("plan").get(pk=tenant.pk)
    since = month_start(tenant, now)
    used = Action.objects.filter(tenant=tenant, approved_at__gte=since).count()
    return ApprovalQuota(plan=tenant.plan, used=used, since=since)


def entitlement_check_action_approvals(*, tenant: Tenant, count: int = 1, now: datetime | None = None) -> Tenant:
    """Refuse (``ApprovalQuota.refusal``) unless the plan allows ``count`` more approved
    actions this month.

    Guarantees: on PostgreSQL the tenant row is locked (``select_for_update``) before
    counting, so concurrent approvals at the limit are serialised; the caller's
    transaction must commit the approvals before the lock is released. Re-approving
    an action approved earlier this month does not count twice.
    """
    from actions.models import Action  # actions depends on budgetradar, not the reverse

    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("entitlement checks must run inside transaction.atomic")
    locked = lock_tenant(tenant.pk)
    since = month_start(locked, now)
    used = 0
    if locked.plan.actions_enabled and locked.plan.actions_per_month is not None:
        used = Action.objects.filter(tenant=locked, approved_at__gte=since).count()
    refused = ApprovalQuota(plan=locked.plan, used=used, since=since).refusal(count)
    if refused is not None:
        raise refused
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
