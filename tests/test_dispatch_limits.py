"""The dispatcher plans for the platforms' limits instead of running into them.

A fifth Meta budget change of an ad set within the hour waits until Meta allows it, and
a Google Ads connection whose developer token spent today's operations waits for the
reset; both stay approved with their next attempt time and the reason, and nothing is
dispatched for them meanwhile.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from actions.models import Action, ActionJob, ActionStatus
from actions.services.dispatch import actions_dispatch
from budgetradar.timefmt import format_time
from platforms.models import DeveloperTokenUsage, Platform, PlatformEntity
from platforms.quota import quota_status, token_digest
from tests.factories import ActionFactory, AdSetFactory, ConnectionFactory, EntityFactory

pytestmark = pytest.mark.django_db


def approved_now(entity, **params) -> Action:
    action = ActionFactory(entity=entity, status=ActionStatus.APPROVED, params={"new_budget": "120.00", **params})
    Action.objects.filter(pk=action.pk).update(next_attempt_at=timezone.now(), approved_at=timezone.now())
    return Action.objects.get(pk=action.pk)


def test_a_fifth_meta_budget_change_within_the_hour_waits_until_meta_allows_it(tenant):
    connection = ConnectionFactory(tenant=tenant, platform=Platform.META, account_id="act_1", time_zone="Europe/Berlin")
    ad_set = AdSetFactory(connection=connection, daily_budget=Decimal("40.00"))
    now = timezone.now()
    for minutes_ago in (50, 40, 30, 20):
        done = ActionFactory(entity=ad_set, status=ActionStatus.SUCCEEDED)
        Action.objects.filter(pk=done.pk).update(finished_at=now - timedelta(minutes=minutes_ago))
    fifth = approved_now(ad_set)

    assert actions_dispatch() == []
    fifth.refresh_from_db()
    assert fifth.status == ActionStatus.APPROVED and not ActionJob.objects.exists()
    # The oldest of the four changes was 50 minutes ago: the next is allowed 10 minutes from now.
    assert timedelta(minutes=9) < fifth.next_attempt_at - now <= timedelta(minutes=10, seconds=5)
    assert "Meta allows 4 budget changes per ad set per hour" in fifth.wait_reason
    assert f"the next is allowed at {format_time(fifth.next_attempt_at, 'Europe/Berlin')} " in fifth.wait_reason
    assert fifth.wait_reason.count(" CE") == 1 and "UTC" not in fifth.wait_reason  # the account's zone, named
    assert list(fifth.logs.values_list("event", flat=True)) == ["parked"]


def test_a_fourth_change_goes_and_other_platforms_are_not_held(tenant):
    connection = ConnectionFactory(tenant=tenant, platform=Platform.META, account_id="act_2")
    ad_set = AdSetFactory(connection=connection, daily_budget=Decimal("40.00"))
    for minutes_ago in (50, 40, 30):
        done = ActionFactory(entity=ad_set, status=ActionStatus.SUCCEEDED)
        Action.objects.filter(pk=done.pk).update(finished_at=timezone.now() - timedelta(minutes=minutes_ago))
    fourth = approved_now(ad_set)
    sandbox_campaign = EntityFactory(connection=ConnectionFactory(tenant=tenant))
    other = approved_now(sandbox_campaign)
    assert len(actions_dispatch()) == 2
    assert Action.objects.get(pk=fourth.pk).status == ActionStatus.QUEUED
    assert Action.objects.get(pk=other.pk).status == ActionStatus.QUEUED


def test_a_google_connection_out_of_daily_operations_waits_for_the_reset(tenant, settings):
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 100
    connection = ConnectionFactory(
        tenant=tenant,
        platform=Platform.GOOGLE_ADS,
        account_id="1234567890",
        credentials={"developer_token": "dev-token", "refresh_token": "r", "client_id": "c", "client_secret": "s"},
    )
    status = quota_status(developer_token="dev-token")
    local_day = (status.resets_at - timedelta(days=1)).date()
    DeveloperTokenUsage.objects.create(token_digest=token_digest("dev-token"), day=local_day, operations=100)
    action = approved_now(EntityFactory(connection=connection, external_id="111"))

    assert actions_dispatch() == []
    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED and action.next_attempt_at == status.resets_at
    assert "operations for today are used up" in action.wait_reason


def test_dispatch_loads_entities_only_for_the_platforms_whose_rules_read_them(tenant, monkeypatch):
    meta = ConnectionFactory(tenant=tenant, platform=Platform.META, account_id="act_3")
    google = ConnectionFactory(tenant=tenant, platform=Platform.GOOGLE_ADS, account_id="123-456-7890")
    ad_sets = [AdSetFactory(connection=meta, daily_budget=Decimal("40.00")) for _ in range(3)]
    campaigns = [EntityFactory(connection=google) for _ in range(20)]
    actions = [approved_now(entity) for entity in ad_sets + campaigns]
    built = []
    original = PlatformEntity.from_db.__func__

    def counting_from_db(cls, *args, **kwargs):
        built.append(cls)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PlatformEntity, "from_db", classmethod(counting_from_db))
    assert len(actions_dispatch()) == 2
    assert len(built) == len(ad_sets)  # Meta's budget-change rule reads its ad sets; Google's actions need none
    assert set(Action.objects.filter(pk__in=[a.pk for a in actions]).values_list("status", flat=True)) == {"queued"}
