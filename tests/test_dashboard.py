"""The admin home: what a person sees on the dashboard."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from actions.models import Action, ActionJob, ActionStatus, JobStatus
from platforms.models import CircuitState
from scenarios.models import Deployment, GuardrailOverride, PreflightRun
from tests import factories

S = ActionStatus
ZONED = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} CES?T"


@pytest.fixture
def conn(tenant):
    return factories.ConnectionFactory(tenant=tenant, name="Acme Search", time_zone="Europe/Berlin")


@pytest.fixture
def brand(conn):
    return factories.EntityFactory(connection=conn, name="EU Search - Brand")


def _home(client, user):
    client.force_login(user)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    return response.content.decode()


def _section(html: str, key: str) -> str:
    match = re.search(rf'<div class="br-dash-section" id="{key}" data-count="(\d+)">(.*?)\n</div>', html, re.S)
    assert match, f"no section {key}"
    return match.group(1), match.group(2)


def test_the_admin_home_is_the_dashboard(client, viewer):
    html = _home(client, viewer)
    assert "<h1>Dashboard</h1>" in html
    assert 'id="needs-person"' in html and 'id="running"' in html and 'id="performance"' in html


def test_pending_approvals_are_listed_oldest_first_with_their_age_and_a_link(client, viewer, operator, brand):
    older = factories.ActionFactory(entity=brand, proposed_by=operator)
    newer = factories.ActionFactory(entity=factories.EntityFactory(connection=brand.connection, name="Generic"))
    Action.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(hours=3, minutes=5))
    Action.objects.filter(pk=newer.pk).update(created_at=timezone.now() - timedelta(minutes=12))
    factories.ActionFactory(entity=brand, status=S.SUCCEEDED)  # not pending: not listed

    count, body = _section(_home(client, viewer), "pending-approvals")

    assert count == "2"
    assert body.index(f"#{older.pk} Adjust budget on EU Search - Brand") < body.index(f"#{newer.pk}")
    assert "waiting 3 h 5 min · proposed by acme-operator" in body
    assert f'href="{reverse("admin:actions_action_change", args=[older.pk])}"' in body
    assert "waiting 12 min" in body


def test_failed_parked_stuck_and_expiring_actions_need_a_person(client, viewer, brand, settings):
    failed = factories.ActionFactory(entity=brand, status=S.FAILED)
    Action.objects.filter(pk=failed.pk).update(
        error_message="The access token expired.", finished_at=datetime(2026, 12, 1, 13, 3, 7, tzinfo=UTC)
    )
    parked = factories.ActionFactory(entity=brand, status=S.APPROVED)
    Action.objects.filter(pk=parked.pk).update(
        next_attempt_at=datetime(2099, 1, 15, 8, 0, tzinfo=UTC), wait_reason="Meta blocks this budget for an hour."
    )
    stuck = factories.ActionFactory(entity=factories.EntityFactory(connection=brand.connection), status=S.QUEUED)
    Action.objects.filter(pk=stuck.pk).update(queued_at=timezone.now() - timedelta(hours=2))
    expiring = factories.ActionFactory(entity=brand, status=S.SUCCEEDED)
    Action.objects.filter(pk=expiring.pk).update(
        rollback_params={"daily_budget": "100.00"}, rollback_deadline=timezone.now() + timedelta(hours=2, minutes=1)
    )
    later = factories.ActionFactory(entity=brand, status=S.SUCCEEDED)
    Action.objects.filter(pk=later.pk).update(
        rollback_params={"daily_budget": "100.00"}, rollback_deadline=timezone.now() + timedelta(hours=20)
    )
    html = _home(client, viewer)

    count, body = _section(html, "failed-actions")
    assert count == "1"
    assert f"#{failed.pk} Adjust budget" in body
    assert "Failed at 2026-12-01 14:03:07 CET: The access token expired." in body

    count, body = _section(html, "parked-actions")
    assert count == "1"
    assert "Runs at 2099-01-15 09:00:00 CET. Meta blocks this budget for an hour." in body

    count, body = _section(html, "stuck-actions")
    assert count == "1" and f"#{stuck.pk}" in body

    count, body = _section(html, "expiring-rollbacks")
    assert count == "1" and f"#{expiring.pk}" in body and f"#{later.pk}" not in body
    assert re.search(rf"rollback possible until {ZONED} \(in 2 h( 0 min)?\)", body)


def test_open_circuits_and_waiting_overrides_are_listed(client, tenant_admin, tenant, conn, brand, operator):
    conn.circuit_state = CircuitState.OPEN
    conn.circuit_opened_at = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    conn.circuit_reason = "3 consecutive failed executions"
    conn.save()
    action = factories.ActionFactory(entity=brand)
    preflight = PreflightRun.objects.create(tenant=tenant, run_id="pf-x", action=action, status="succeeded")
    GuardrailOverride.objects.create(tenant=tenant, preflight=preflight, reason="launch day", requested_by=operator)
    html = _home(client, tenant_admin)

    count, body = _section(html, "open-circuits")
    assert count == "1"
    assert "Acme Search" in body
    assert "Open (live work refused) since 2026-07-01 12:00:00 CEST: 3 consecutive failed executions" in body

    count, body = _section(html, "overrides-waiting")
    assert count == "1"
    assert f"Override for #{action.pk} Adjust budget on EU Search - Brand" in body
    assert "requested by acme-operator" in body and "launch day" in body


def test_running_jobs_and_deployments_show_their_progress(client, viewer, tenant, conn):
    job = ActionJob.objects.create(
        tenant=tenant,
        connection=conn,
        status=JobStatus.RUNNING,
        total=4,
        succeeded=2,
        failed=1,
        started_at=timezone.now() - timedelta(seconds=45),
    )
    ActionJob.objects.create(
        tenant=tenant, connection=factories.ConnectionFactory(tenant=tenant), status=JobStatus.SUCCEEDED, total=1
    )
    preflight = PreflightRun.objects.create(tenant=tenant, run_id="pf-d", status="succeeded")
    deployment = Deployment.objects.create(
        tenant=tenant,
        preflight=preflight,
        mode="live",
        status="running",
        idempotency_key="k",
        total=10,
        succeeded=5,
        pending=5,
    )
    html = _home(client, viewer)

    count, body = _section(html, "running-jobs")
    assert count == "1"
    assert f"Execute job #{job.pk} on Acme Search" in body
    assert "3 of 4 settled (2 succeeded, 1 failed) · running for 45 s" in body
    assert 'value="75"' in body

    count, body = _section(html, "running-deployments")
    assert count == "1"
    assert f"Live deployment #{deployment.pk}" in body and "5 of 10 settled" in body and 'value="50"' in body


def test_another_tenants_work_never_shows(client, viewer, other_tenant, brand):
    theirs = factories.ActionFactory(
        entity=factories.EntityFactory(connection=factories.ConnectionFactory(tenant=other_tenant, name="Globex Ads"))
    )
    html = _home(client, viewer)
    count, body = _section(html, "pending-approvals")
    assert count == "0" and f"#{theirs.pk}" not in body
    assert "Globex Ads" not in html


def test_performance_shows_sixty_local_days_with_totals_and_the_changes_made(client, viewer, conn, brand):
    today = timezone.now().astimezone(ZoneInfo("Europe/Berlin")).date()
    for n, spend in [(1, "100.00"), (2, "200.00")]:
        factories.PerformanceFactory(
            entity=brand,
            date=today - timedelta(days=n),
            spend=Decimal(spend),
            conversions=Decimal("10"),
            revenue=Decimal("600.00"),
        )
    ad_set = factories.AdSetFactory(connection=conn, parent=brand)
    factories.PerformanceFactory(entity=ad_set, date=today - timedelta(days=1), spend=Decimal("100.00"))  # not summed
    factories.PerformanceFactory(entity=brand, date=today - timedelta(days=90))  # outside the 60 days
    changed = factories.ActionFactory(entity=brand, status=S.SUCCEEDED)
    Action.objects.filter(pk=changed.pk).update(finished_at=timezone.now() - timedelta(days=1))
    html = _home(client, viewer)

    block = html[html.index(f'id="performance-{conn.pk}"') :]
    assert "300.00 EUR" in block  # spend of the campaigns
    assert "15.00 EUR" in block  # CPA: 300 / 20
    assert "4.00" in block  # ROAS: 1,200 / 300
    yesterday = re.search(r'<tr data-row="yesterday">(.*?)</tr>', block, re.S)[1]
    assert "100.00 EUR" in yesterday and "10.00 EUR" in yesterday and "6.00" in yesterday  # CPA 10, ROAS 6
    assert "no data yet" in re.search(r'<tr data-row="today-so-far">(.*?)</tr>', block, re.S)[1]
    url = reverse("admin:actions_action_change", args=[changed.pk])
    marker = re.search(rf'<li data-date="([\d-]+)">[\d-]+: <a href="{url}">#{changed.pk} Adjust budget', block)
    assert marker and marker.group(1) == (today - timedelta(days=1)).isoformat()

    data = json.loads(
        re.search(r'<script id="br-dashboard-data" type="application/json">(.*?)</script>', html, re.S)[1]
    )
    chart = data[0]
    assert len(chart["labels"]) == 60 and chart["labels"][-1] == today.isoformat()
    assert chart["spend"][-2] == 100.0 and chart["spend"][-3] == 200.0 and chart["spend"][0] is None
    assert chart["cpa"][-2] == 10.0 and chart["roas"][-3] == 3.0
    assert chart["markers"] == [
        {
            "x": (today - timedelta(days=1)).isoformat(),
            "y": 100.0,
            "label": f"#{changed.pk} Adjust budget on EU Search - Brand",
            "url": url,
        }
    ]


def test_a_deployment_is_one_marker_linking_to_it(client, viewer, tenant, conn, brand):
    preflight = PreflightRun.objects.create(tenant=tenant, run_id="pf-m", status="succeeded")
    deployment = Deployment.objects.create(
        tenant=tenant, preflight=preflight, mode="live", status="succeeded", idempotency_key="m", total=2, succeeded=2
    )
    for entity in (brand, factories.EntityFactory(connection=conn)):
        action = factories.ActionFactory(entity=entity, status=S.SUCCEEDED, deployment=deployment)
        Action.objects.filter(pk=action.pk).update(finished_at=timezone.now())
    html = _home(client, viewer)
    url = reverse("admin:scenarios_deployment_change", args=[deployment.pk])
    assert html.count(f'<a href="{url}">Deployment #{deployment.pk}: 2 changes</a>') == 1


def test_the_dashboard_costs_the_same_queries_for_one_row_or_many(client, viewer, conn):
    def seed(n: int) -> None:
        for _ in range(n):
            entity = factories.EntityFactory(connection=conn)
            factories.ActionFactory(entity=entity)
            failed = factories.ActionFactory(entity=entity, status=S.FAILED)
            Action.objects.filter(pk=failed.pk).update(finished_at=timezone.now())
            factories.PerformanceFactory(entity=entity, date=timezone.now().date() - timedelta(days=1))

    client.force_login(viewer)
    seed(1)
    client.get(reverse("admin:index"))
    with CaptureQueriesContext(db_connection) as few:
        client.get(reverse("admin:index"))
    seed(12)
    with CaptureQueriesContext(db_connection) as many:
        assert client.get(reverse("admin:index")).status_code == 200
    assert len(many) <= len(few) + 6, "\n".join(q["sql"] for q in many.captured_queries)  # the sections' counts


def test_staff_without_a_tenant_see_an_empty_dashboard(client, brand, db):
    factories.ActionFactory(entity=brand)
    html = _home(client, factories.UserFactory(username="drifter"))
    assert "EU Search - Brand" not in html


def test_an_entity_page_shows_its_own_days_and_the_changes_made_to_it(client, viewer, conn, brand):
    today = timezone.now().astimezone(ZoneInfo("Europe/Berlin")).date()
    factories.PerformanceFactory(
        entity=brand,
        date=today - timedelta(days=2),
        spend=Decimal("250.00"),
        conversions=Decimal("5"),
        revenue=Decimal("500.00"),
    )
    other = factories.EntityFactory(connection=conn, name="Generic")
    factories.PerformanceFactory(entity=other, date=today - timedelta(days=2), spend=Decimal("999.00"))
    changed = factories.ActionFactory(entity=brand, status=S.ROLLED_BACK)
    Action.objects.filter(pk=changed.pk).update(
        finished_at=timezone.now() - timedelta(days=2), rolled_back_at=timezone.now() - timedelta(days=1)
    )
    factories.ActionFactory(entity=other, status=S.SUCCEEDED)
    client.force_login(viewer)

    html = client.get(reverse("admin:platforms_platformentity_change", args=[brand.pk])).content.decode()

    block = html[html.index(f'id="performance-entity-{brand.pk}"') :]
    assert "250.00 EUR" in block and "50.00 EUR" in block and "999.00" not in block  # CPA 250 / 5
    url = reverse("admin:actions_action_change", args=[changed.pk])
    assert f'<a href="{url}">#{changed.pk} Adjust budget on EU Search - Brand</a>' in block
    assert f'<a href="{url}">Rolled back: #{changed.pk} Adjust budget on EU Search - Brand</a>' in block
    data = json.loads(
        re.search(r'<script id="br-dashboard-data" type="application/json">(.*?)</script>', html, re.S)[1]
    )
    assert data[0]["spend"][-3] == 250.0 and len(data[0]["markers"]) == 2
