"""Plans decide what a tenant may do; counting is race-safe."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import close_old_connections, connection
from django.utils import timezone

from actions.models import Action, ActionStatus
from actions.services.lifecycle import action_approve
from budgetradar.entitlements import (
    Feature,
    entitlement_check_feature,
    entitlement_check_new_connection,
    month_start,
)
from budgetradar.errors import NotEntitled
from tests.factories import ActionFactory, ConnectionFactory, EntityFactory, on_sandbox, plan


def use_plan(tenant, code):
    tenant.plan = plan(code)
    tenant.save()


def fill_quota(entity, count, *, when=None):
    """``count`` actions already approved this month."""
    when = when or timezone.now()
    actions = ActionFactory.create_batch(count, entity=entity, status=ActionStatus.SUCCEEDED)
    Action.objects.filter(pk__in=[a.pk for a in actions]).update(approved_at=when)


@pytest.mark.parametrize("code", ["free", "growth"])
def test_free_and_growth_plans_cannot_approve_actions(tenant, approver, campaign, code):
    use_plan(tenant, code)
    action = ActionFactory(entity=campaign)
    with pytest.raises(NotEntitled) as refused:
        action_approve(action=action, actor=approver)
    assert refused.value.http_status == 402
    assert f"The {code.title()} plan does not include actions" in refused.value.message
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING_APPROVAL


def test_pro_plan_refuses_the_101st_approval_of_the_month_naming_the_limit(tenant, approver, campaign):
    fill_quota(campaign, 99)
    hundredth = ActionFactory(entity=campaign)
    action_approve(action=hundredth, actor=approver)
    extra = ActionFactory(entity=campaign)
    with pytest.raises(NotEntitled) as refused:
        action_approve(action=extra, actor=approver)
    assert "allows 100 approved actions a month; 100 are used" in refused.value.message


def test_approvals_of_last_month_do_not_count(tenant, approver, campaign):
    fill_quota(campaign, 100, when=month_start(tenant) - timedelta(days=3))
    action = ActionFactory(entity=campaign)
    action_approve(action=action, actor=approver)
    assert action.status == ActionStatus.APPROVED


def test_enterprise_is_unlimited(tenant, approver, campaign):
    use_plan(tenant, "enterprise")
    fill_quota(campaign, 250)
    action = ActionFactory(entity=campaign)
    action_approve(action=action, actor=approver)
    assert action.status == ActionStatus.APPROVED


def test_live_deploy_and_autopilot_follow_the_plan(tenant):
    entitlement_check_feature(tenant=tenant, feature=Feature.LIVE_DEPLOY)
    with pytest.raises(NotEntitled, match="does not include autopilot"):
        entitlement_check_feature(tenant=tenant, feature=Feature.AUTOPILOT)
    use_plan(tenant, "growth")
    with pytest.raises(NotEntitled, match="does not include live deploy"):
        entitlement_check_feature(tenant=tenant, feature=Feature.LIVE_DEPLOY)


def test_connection_count_is_limited_by_plan(tenant, django_db_blocker):
    use_plan(tenant, "free")
    ConnectionFactory(tenant=tenant)
    with pytest.raises(NotEntitled, match="allows 1 platform connection; 1 exist"):
        from django.db import transaction

        with transaction.atomic():
            entitlement_check_new_connection(tenant=tenant)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_approvals_against_five_remaining_let_exactly_five_pass(tenant, approver, connection_):
    campaign = EntityFactory(connection=connection_)
    on_sandbox(campaign)  # the safety gate reads it on the platform before each approval
    fill_quota(campaign, 95)
    pending = ActionFactory.create_batch(20, entity=campaign)
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def approve(action_id: int) -> None:
        try:
            action = Action.objects.select_related("tenant__plan", "entity").get(pk=action_id)
            barrier.wait()
            action_approve(action=action, actor=approver)
            outcomes.append("approved")
        except NotEntitled:
            outcomes.append("refused")
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=approve, args=(a.pk,)) for a in pending]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["approved"] * 5 + ["refused"] * 15
    assert Action.objects.filter(pk__in=[a.pk for a in pending], status=ActionStatus.APPROVED).count() == 5
