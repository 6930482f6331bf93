"""Every time the admin shows is in the tenant's or account's zone, zone named, one format."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.urls import reverse
from django.utils import timezone

from actions.admin import rollback_deadline_text
from actions.models import Action, ActionStatus
from budgetradar.timefmt import format_duration, format_time
from scenarios.models import GuardrailPolicy
from tests import factories


def test_one_format_names_the_zone_and_keeps_seconds():
    at = datetime(2026, 12, 2, 13, 3, 7, tzinfo=UTC)
    assert format_time(at, "Europe/Berlin") == "2026-12-02 14:03:07 CET"
    assert format_time(at.replace(month=7), "Europe/Berlin") == "2026-07-02 15:03:07 CEST"
    assert format_time(at, "America/New_York") == "2026-12-02 08:03:07 EST"
    assert format_time(at, "Asia/Dubai") == "2026-12-02 17:03:07 Asia/Dubai"  # its abbreviation is only "+04"
    assert format_time(at) == "2026-12-02 13:03:07 UTC"
    assert format_time(None, "Europe/Berlin") == "—"


def test_durations_read_in_the_two_largest_units():
    assert format_duration(timedelta(seconds=45)) == "45 s"
    assert format_duration(timedelta(minutes=12, seconds=30)) == "12 min"
    assert format_duration(timedelta(hours=3, minutes=5)) == "3 h 5 min"
    assert format_duration(timedelta(days=2, hours=4, minutes=9)) == "2 d 4 h"


def test_recommendation_list_shows_its_times_in_the_tenant_zone(client, viewer, campaign):
    recommendation = factories.RecommendationFactory(entity=campaign)
    type(recommendation).objects.filter(pk=recommendation.pk).update(
        created_at=datetime(2026, 12, 1, 13, 3, 7, tzinfo=UTC)
    )
    client.force_login(viewer)
    html = client.get(reverse("admin:actions_recommendation_changelist")).content.decode()
    assert "2026-12-01 14:03:07 CET" in html
    assert "13:03" not in html


def test_an_actions_page_shows_its_moments_in_the_accounts_zone(client, viewer, campaign):
    action = factories.ActionFactory(entity=campaign, status=ActionStatus.SUCCEEDED)
    Action.objects.filter(pk=action.pk).update(approved_at=datetime(2026, 7, 1, 8, 0, 1, tzinfo=UTC))
    client.force_login(viewer)
    html = client.get(reverse("admin:actions_action_change", args=[action.pk])).content.decode()
    assert "2026-07-01 10:00:01 CEST" in html


def test_the_rollback_deadline_is_in_the_accounts_zone(campaign):
    action = factories.ActionFactory(entity=campaign, status=ActionStatus.SUCCEEDED)
    action.rollback_deadline = datetime(2020, 1, 1, 12, 0, tzinfo=UTC)
    assert rollback_deadline_text(action) == (
        "Expired at 2020-01-01 13:00:00 CET: this action can no longer be rolled back."
    )
    action.rollback_deadline = timezone.now() + timedelta(hours=5, minutes=30)
    assert rollback_deadline_text(action).startswith("Until ") and " CE" in rollback_deadline_text(action)


def test_a_change_window_names_its_zone(client, tenant_admin, tenant, connection_):
    policy = GuardrailPolicy.objects.create(
        tenant=tenant,
        connection=connection_,
        name="Office hours",
        change_window_days=[0, 1, 2, 3, 4],
        change_window_start=time(9, 0),
        change_window_end=time(17, 0),
        max_daily_budget="1000.00",
    )
    client.force_login(tenant_admin)
    listing = client.get(reverse("admin:scenarios_guardrailpolicy_changelist")).content.decode()
    assert "change window Mon, Tue, Wed, Thu, Fri 09:00–17:00 Europe/Berlin" in listing
    assert "daily budget 0.00 EUR–1,000.00 EUR" in listing
    page = client.get(reverse("admin:scenarios_guardrailpolicy_change", args=[policy.pk])).content.decode()
    assert "Days and times are in Acme Sandbox's time zone, Europe/Berlin." in page
