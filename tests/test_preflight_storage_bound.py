"""A preflight's stored summary stays bounded however many entities breach a guardrail:
counts per severity and rule and the first breaches, while every breach is still listed
through the entities' cursor API and read by the gate from the entity rows."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from platforms.registry import get_executor
from platforms.sandbox.models import SandboxEntity
from platforms.sync import sync_connection
from safety.gate import critical_breaches
from scenarios.admin.diff import diff_context
from scenarios.models import GuardrailOverride, GuardrailPolicy, PreflightRun, Scenario, ScenarioItem
from scenarios.selectors import override_breaches
from scenarios.services.preflight import BREACHES_STORED, preflight_breaches, preflight_document
from scenarios.tasks import preflight_task
from tests.factories import SandboxAccountFactory, sandbox_connection

pytestmark = pytest.mark.django_db(transaction=True)

ENTITIES = 2_000
SUMMARY_MAX_BYTES = 24 * 1024


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    """What would be handed to django-q2 (the test runs the task itself)."""
    calls: list[tuple] = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr("budgetradar.queue.async_task", lambda *args, **kwargs: calls.append(args))
    return calls


@pytest.fixture
def breaching_scenario(tenant, operator, tmp_path, settings):
    """``ENTITIES`` sandbox campaigns at 100.00, each raised to 150.00 under a policy
    allowing +10 %: one critical ``max_increase_pct`` breach per entity."""
    settings.STATE_DIR = tmp_path / "state"
    account = SandboxAccountFactory(account_id=f"sbx-{tenant.slug}")
    SandboxEntity.objects.bulk_create(
        SandboxEntity(
            account=account,
            entity_type="campaign",
            external_id=f"sandbox-cmp-{i}",
            name=f"Campaign {i}",
            status="active",
            daily_budget=Decimal("100.00"),
        )
        for i in range(1, ENTITIES + 1)
    )
    connection = sandbox_connection(tenant, account, name="Sandbox")
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("10"))
    scenario = Scenario.objects.create(tenant=tenant, name="Raise everything", created_by=operator)
    ScenarioItem.objects.bulk_create(
        ScenarioItem(scenario=scenario, entity=entity, daily_budget=Decimal("150.00"))
        for entity in connection.entities.filter(entity_type="campaign")
    )
    return scenario


def breaches_of(doc: dict) -> list[dict]:
    """An entity document's own breaches and those of its changed fields."""
    fields = [b for changes in doc.get("sections", {}).values() for change in changes for b in change["breaches"]]
    return doc["breaches"] + fields


def test_the_stored_summary_is_bounded_and_the_api_still_lists_every_breach(
    breaching_scenario, operator, enqueued, settings
):
    api = client_for(operator)
    response = api.post(f"/api/scenarios/{breaching_scenario.pk}/preflight", {"mode": "manual"}, format="json")
    assert response.status_code == 202, response.json()
    run_id = response.json()["run_id"]
    assert preflight_task(PreflightRun.objects.get(run_id=run_id).pk).endswith("succeeded")

    run = PreflightRun.objects.get(run_id=run_id)
    stored = json.dumps(run.payload)
    assert len(stored) < SUMMARY_MAX_BYTES, f"summary is {len(stored)} bytes"
    assert len(run.payload["breaches"]) <= BREACHES_STORED + 10  # the first N and the few run-level ones
    assert run.payload["breaches_total"] >= ENTITIES
    assert run.payload["summary"]["breaches_by_rule"]["max_increase_pct"] == {"critical": ENTITIES}
    assert run.has_critical

    summary = api.get(f"/api/preflights/{run_id}").json()
    assert summary["breach_counts"]["critical"] >= ENTITIES
    assert summary["breaches_total"] == run.payload["breaches_total"]

    listed, url, pages = [], f"/api/preflights/{run_id}/entities?limit=1000", 0
    while url and pages < 10:
        page = api.get(url).json()
        listed += [b for doc in page["results"] for b in breaches_of(doc) if b["code"] == "max_increase_pct"]
        url, pages = page["next"], pages + 1
    assert len(listed) == ENTITIES
    assert len({b["key"] for b in listed}) == ENTITIES

    fresh = PreflightRun.objects.get(pk=run.pk)  # no in-process cache of the entities
    every = preflight_breaches(fresh)
    assert len(every) == run.payload["breaches_total"]
    assert every == preflight_document(fresh)["breaches"]
    assert len(critical_breaches(fresh)) == sum(1 for b in every if b["severity"] == "critical")
    assert {b["key"] for b in critical_breaches(fresh) if b["code"] == "max_increase_pct"} == {b["key"] for b in listed}


def test_a_small_run_keeps_every_breach_in_its_summary(tenant, operator, tmp_path, settings):
    settings.STATE_DIR = tmp_path / "state"
    account = SandboxAccountFactory(account_id=f"sbx-{tenant.slug}")
    SandboxEntity.objects.create(
        account=account, entity_type="campaign", external_id="sandbox-cmp-1", name="C1", daily_budget=Decimal("100")
    )
    connection = sandbox_connection(tenant, account, name="Sandbox")
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("10"))
    scenario = Scenario.objects.create(tenant=tenant, name="One", created_by=operator)
    ScenarioItem.objects.create(scenario=scenario, entity=connection.entities.get(), daily_budget=Decimal("150"))
    response = client_for(operator).post(f"/api/scenarios/{scenario.pk}/preflight", format="json")
    assert response.status_code == 200
    run = PreflightRun.objects.get()
    assert run.payload["breaches_total"] == len(run.payload["breaches"]) >= 1
    assert response.json()["breaches"] == run.payload["breaches"]


def test_the_admin_diff_counts_every_breach_though_the_summary_stores_the_first(breaching_scenario, operator, enqueued):
    api = client_for(operator)
    run_id = api.post(f"/api/scenarios/{breaching_scenario.pk}/preflight", {"mode": "manual"}, format="json").json()[
        "run_id"
    ]
    preflight_task(PreflightRun.objects.get(run_id=run_id).pk)
    run = PreflightRun.objects.get(run_id=run_id)
    critical = sum(1 for b in preflight_breaches(run) if b["severity"] == "critical")
    context = diff_context(run)
    assert context["critical_count"] == critical >= ENTITIES  # not the 50 stored
    assert context["critical_count"] + context["warning_count"] == run.payload["breaches_total"]
    assert context["breaches_more"] == run.payload["breaches_total"] - len(context["breaches"])
    override = GuardrailOverride.objects.create(
        tenant=run.tenant, preflight=run, reason="agreed", requested_by=operator
    )
    assert len(override_breaches(override)) == critical  # the override page lists what it lets through, all of it
