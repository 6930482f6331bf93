"""Bounded preflight storage: the document stored per entity with the summary apart, read
page by page through the API, and old runs pruned unless something still relies on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from budgetradar.roles import Role
from scenarios.models import Deployment, GuardrailOverride, PreflightEntity, PreflightRun, Scenario, ScenarioItem
from scenarios.services.preflight import preflight_document, preflight_for_scenario
from scenarios.services.retention import preflights_prune
from tests.engine_helpers import sandbox_world
from tests.factories import ActionFactory, TenantFactory, member

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def world(tenant, tmp_path, settings):
    settings.STATE_DIR = tmp_path / "state"
    return sandbox_world(tenant, campaigns=3, ad_sets_per_campaign=1)


@pytest.fixture
def scenario(world, operator):
    scenario = Scenario.objects.create(tenant=world.connection.tenant, name="Shift", created_by=operator)
    for external_id, budget in (("sandbox-cmp-1", "150.00"), ("sandbox-cmp-2", "90.00"), ("sandbox-cmp-3", "100.00")):
        ScenarioItem.objects.create(scenario=scenario, entity=world.entity(external_id), daily_budget=Decimal(budget))
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-adset-3-1"), bid=Decimal("2.00"))
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-adset-1-1"), status="paused")
    return scenario


@pytest.fixture
def run(scenario, operator):
    return preflight_for_scenario(scenario=scenario, actor=operator)


def aged(run: PreflightRun, days: int) -> PreflightRun:
    PreflightRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(days=days))
    return PreflightRun.objects.get(pk=run.pk)


# Stored per entity --------------------------------------------------------------------------


def test_each_entity_is_a_row_in_document_order_and_the_summary_is_apart(run):
    stored = PreflightRun.objects.get(pk=run.pk)
    assert "entities" not in stored.payload
    assert stored.payload["summary"]["entities"] == 5
    rows = list(PreflightEntity.objects.filter(run=stored).order_by("position"))
    assert [r.position for r in rows] == [0, 1, 2, 3, 4]
    document = preflight_document(stored)
    assert [r.document for r in rows] == document["entities"]
    assert [(r.entity_id, r.change_type) for r in rows] == [
        (d["entity_id"], d["change_type"]) for d in document["entities"]
    ]
    assert document["entities"] == sorted(
        document["entities"], key=lambda d: (d["platform"], d["entity_type"], d["external_id"])
    )


def test_the_run_endpoint_answers_the_summary_without_entities(run, operator):
    body = client_for(operator).get(f"/api/preflights/{run.run_id}").json()
    assert body["status"] == "succeeded" and body["summary"]["entities"] == 5
    assert "entities" not in body
    assert body["entities_url"] == f"/api/preflights/{run.run_id}/entities"
    every = PreflightRun.objects.get(pk=run.pk).payload["breaches"]
    assert any(b.get("key") for b in every), "the fixture has entity breaches"
    assert body["breaches"] == [b for b in every if not b.get("key")]
    assert sum(body["breach_counts"].values()) == len(every)


def test_entities_are_paged_by_cursor_in_document_order(run, operator, django_assert_max_num_queries):
    api = client_for(operator)
    with django_assert_max_num_queries(8):
        first = api.get(f"/api/preflights/{run.run_id}/entities?limit=2").json()
    assert len(first["results"]) == 2 and first["next_cursor"] == 2
    assert first["next"].endswith(f"/api/preflights/{run.run_id}/entities?cursor=2&limit=2")
    second = api.get(first["next"]).json()
    third = api.get(f"/api/preflights/{run.run_id}/entities?cursor={second['next_cursor']}&limit=2").json()
    assert (len(second["results"]), len(third["results"])) == (2, 1)
    assert third["next_cursor"] is None and third["next"] is None
    paged = first["results"] + second["results"] + third["results"]
    assert paged == preflight_document(PreflightRun.objects.get(pk=run.pk))["entities"]


def test_a_bad_cursor_or_limit_is_refused_by_name(run, operator):
    api = client_for(operator)
    for query, field in (
        ("cursor=-1", "cursor"),
        ("cursor=abc", "cursor"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
    ):
        response = api.get(f"/api/preflights/{run.run_id}/entities?{query}")
        assert response.status_code == 400, query
        assert [e["field"] for e in response.json()["errors"]] == [field], query


def test_another_tenants_preflight_entities_are_404(run):
    stranger = member(TenantFactory(slug="globex"), Role.OPERATOR, "globex-operator")
    assert client_for(stranger).get(f"/api/preflights/{run.run_id}/entities").status_code == 404


def test_the_ad_push_endpoint_still_answers_the_whole_document(run, operator, tenant):
    body = client_for(operator).get(f"/api/tenants/{tenant.slug}/ad-pushes/{run.run_id}").json()
    assert [e["entity_id"] for e in body["entities"]] == [
        r.entity_id for r in PreflightEntity.objects.filter(run=run).order_by("position")
    ]
    assert body["summary"]["entities"] == 5


# Retention ---------------------------------------------------------------------------------


def test_pruning_keeps_runs_a_deployment_or_an_override_still_references(run, scenario, operator, approver, settings):
    settings.PREFLIGHT_RETENTION_DAYS = 30
    deployed = aged(preflight_for_scenario(scenario=scenario, actor=operator), 40)
    Deployment.objects.create(
        tenant=scenario.tenant, scenario=scenario, preflight=deployed, mode="dry_run", idempotency_key="k-1"
    )
    overridden = preflight_for_scenario(scenario=scenario, actor=operator)
    GuardrailOverride.objects.create(
        tenant=scenario.tenant, preflight=overridden, reason="Launch", requested_by=approver
    )
    overridden = aged(overridden, 40)
    old = aged(run, 40)
    recent = preflight_for_scenario(scenario=scenario, actor=operator)
    queued = aged(PreflightRun.objects.create(tenant=scenario.tenant, run_id="pf-queued", scenario=scenario), 40)

    assert preflights_prune(dry_run=True).runs == 1
    result = preflights_prune()

    assert (result.runs, result.entity_rows) == (1, 5)
    kept = set(PreflightRun.objects.values_list("pk", flat=True))
    assert kept == {deployed.pk, overridden.pk, recent.pk, queued.pk}
    assert not PreflightEntity.objects.filter(run_id=old.pk).exists()
    assert PreflightEntity.objects.filter(run_id=deployed.pk).count() == 5


def test_pruning_keeps_each_actions_newest_preflight(world, tenant, settings):
    settings.PREFLIGHT_RETENTION_DAYS = 30
    action = ActionFactory(entity=world.entity("sandbox-cmp-1"))
    for run_id, days in (("pf-older", 50), ("pf-newest", 40)):
        aged(PreflightRun.objects.create(tenant=tenant, run_id=run_id, action=action, status="succeeded"), days)
    assert preflights_prune().runs == 1
    assert list(PreflightRun.objects.values_list("run_id", flat=True)) == ["pf-newest"]


def test_the_prune_command_says_what_it_did(run, settings):
    settings.PREFLIGHT_RETENTION_DAYS = 30
    aged(run, 40)
    out = StringIO()
    call_command("preflight_prune", "--dry-run", stdout=out)
    assert "would delete 1 preflight runs (5 entity rows)" in out.getvalue()
    assert PreflightRun.objects.filter(pk=run.pk).exists()
    call_command("preflight_prune", stdout=out)
    assert "deleted 1 preflight runs (5 entity rows)" in out.getvalue()
    assert not PreflightRun.objects.exists()


def test_the_prune_command_names_its_cutoff_in_the_deployments_zone(settings, monkeypatch):
    settings.TIME_ZONE = "Europe/Berlin"
    settings.PREFLIGHT_RETENTION_DAYS = 30
    now = datetime(2026, 12, 2, 13, 3, 7, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: now)
    out = StringIO()
    call_command("preflight_prune", "--dry-run", stdout=out)
    assert "created before 2026-11-02 14:03:07 CET (retention 30 days)" in out.getvalue()
