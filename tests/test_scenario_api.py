"""The scenario and deployment API: create, change, import, preflight, deploy, roles, tenancy."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.models import Action
from budgetradar.roles import Role
from scenarios.models import Deployment, GuardrailPolicy, PreflightRun, Scenario, ScenarioItem
from tests.engine_helpers import run_worker, sandbox_world
from tests.factories import ConnectionFactory, EntityFactory, member

CSV = (
    "platform,entity_id,field,value\n"
    "sandbox,sandbox-cmp-1,daily_budget,150.00\n"
    "sandbox,sandbox-adset-1-1,bid_amount,1.80\n"
    "sandbox,sandbox-cmp-2,status,paused\n"
)


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def state_dir(tmp_path, settings):
    settings.STATE_DIR = tmp_path / "state"
    return settings.STATE_DIR


@pytest.fixture
def world(tenant, state_dir):
    return sandbox_world(tenant)


@pytest.fixture
def api(operator):
    return client_for(operator)


def items_payload(world) -> list[dict]:
    return [
        {"entity": world.entity("sandbox-cmp-1").pk, "daily_budget": "150.00"},
        {"entity": world.entity("sandbox-cmp-2").pk, "status": "paused"},
        {"entity": world.entity("sandbox-adset-1-1").pk, "bid": "1.80"},
    ]


def create(api, world, name="Q3 shift", **extra) -> dict:
    body = {"name": name, "notes": "EU shift", "items": items_payload(world), **extra}
    response = api.post("/api/scenarios/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def counts() -> tuple[int, int]:
    return Scenario.objects.count(), ScenarioItem.objects.count()


# Creating and changing ----------------------------------------------------------------------------


def test_a_scenario_is_created_with_its_items_in_the_accounts_currency(api, world, operator):
    body = create(api, world, source_plan_id="plan-7")
    assert (body["name"], body["notes"], body["source_plan_id"], body["status"]) == (
        "Q3 shift",
        "EU shift",
        "plan-7",
        "draft",
    )
    assert body["created_by"] == "acme-operator"
    items = {i["entity"]["external_id"]: i for i in body["items"]}
    assert items["sandbox-cmp-1"]["daily_budget"] == "150.00" and items["sandbox-cmp-1"]["entity"]["currency"] == "EUR"
    assert items["sandbox-cmp-2"]["status"] == "paused" and items["sandbox-cmp-2"]["daily_budget"] is None
    assert items["sandbox-adset-1-1"]["bid"] == "1.80"
    assert Scenario.objects.get().history.get().history_user == operator


def test_bad_items_are_refused_with_row_errors_and_nothing_is_written(api, world, other_tenant):
    theirs = EntityFactory(connection=ConnectionFactory(tenant=other_tenant))
    items = [*items_payload(world), {"entity": theirs.pk, "daily_budget": "-1"}, {"entity": "x"}]
    response = api.post("/api/scenarios/", {"name": "Bad", "items": items}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and "nothing was imported" in body["message"]
    assert [(e["index"], e["field"], e["code"]) for e in body["errors"]] == [
        (3, "entity", "unknown_entity"),
        (4, "entity", "invalid"),
    ]
    assert body["errors"][0]["message"] == f"Item 3, entity: Entity {theirs.pk} does not exist in your tenant."
    assert counts() == (0, 0)


def test_a_scenario_without_a_name_is_refused(api, world):
    response = api.post("/api/scenarios/", {"items": []}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "name"


def test_patch_renames_and_replaces_the_items(api, world):
    scenario = create(api, world)
    one = [{"entity": world.entity("sandbox-cmp-2").pk, "daily_budget": "80.00"}]
    response = api.patch(f"/api/scenarios/{scenario['id']}", {"name": "Smaller", "items": one}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["name"] == "Smaller" and body["notes"] == "EU shift"
    assert [(i["entity"]["external_id"], i["daily_budget"]) for i in body["items"]] == [("sandbox-cmp-2", "80.00")]
    assert body["updated_at"] > scenario["updated_at"]


def test_patch_with_a_bad_item_changes_nothing(api, world):
    scenario = create(api, world)
    bad = [{"entity": world.entity("sandbox-cmp-2").pk, "daily_budget": "1.999"}]
    response = api.patch(f"/api/scenarios/{scenario['id']}", {"name": "Renamed", "items": bad}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "precision"
    assert Scenario.objects.get().name == "Q3 shift" and ScenarioItem.objects.count() == 3


# Reading, roles and tenancy -------------------------------------------------------------------------


def test_the_list_is_scoped_to_the_tenant_and_paginated(api, world, other_tenant):
    for name in ("A", "B", "C"):
        create(api, world, name=name)
    Scenario.objects.create(tenant=other_tenant, name="Theirs")
    body = api.get("/api/scenarios/?page_size=2").json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]
    assert {s["name"] for s in body["results"]} <= {"A", "B", "C"}


def test_another_tenants_scenario_is_404_for_every_verb(api, world, other_tenant):
    theirs = Scenario.objects.create(tenant=other_tenant, name="Theirs")
    assert api.get(f"/api/scenarios/{theirs.pk}").status_code == 404
    assert api.patch(f"/api/scenarios/{theirs.pk}", {"name": "Mine"}, format="json").status_code == 404
    assert api.post(f"/api/scenarios/{theirs.pk}/preflight").status_code == 404
    response = api.post(f"/api/scenarios/{theirs.pk}/deploy", {"mode": "dry_run", "idempotency_key": "k"})
    assert response.status_code == 404 and response.json() == {"code": "not_found", "message": "Not found."}
    assert Scenario.objects.get(pk=theirs.pk).name == "Theirs"


def test_a_viewer_reads_but_cannot_write(api, world, viewer):
    scenario = create(api, world)
    reader = client_for(viewer)
    assert reader.get("/api/scenarios/").json()["count"] == 1
    assert reader.get(f"/api/scenarios/{scenario['id']}").status_code == 200
    refused = [
        reader.post("/api/scenarios/", {"name": "x", "items": []}, format="json"),
        reader.patch(f"/api/scenarios/{scenario['id']}", {"name": "x"}, format="json"),
        reader.post("/api/scenarios/import", {"file": SimpleUploadedFile("a.csv", CSV.encode())}, format="multipart"),
        reader.post(f"/api/scenarios/{scenario['id']}/preflight"),
        reader.post(f"/api/scenarios/{scenario['id']}/deploy", {"mode": "dry_run", "idempotency_key": "k"}),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert refused[0].json() == {
        "code": "permission_denied",
        "message": "Your role does not allow you to create scenarios.",
    }
    assert Scenario.objects.count() == 1 and PreflightRun.objects.count() == 0


def test_anonymous_requests_are_refused(db):
    assert APIClient().get("/api/scenarios/").status_code == 401
    assert APIClient().get("/api/deployments/").status_code == 401


def test_the_scenario_list_costs_the_same_queries_for_3_or_12_scenarios(api, world):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get("/api/scenarios/").status_code == 200
        return len(captured)

    for name in ("A", "B", "C"):
        create(api, world, name=name)
    few = queries()
    for index in range(9):
        create(api, world, name=f"More {index}")
    assert queries() == few


# Import -------------------------------------------------------------------------------------------------


def test_a_csv_upload_becomes_a_scenario(api, world):
    upload = SimpleUploadedFile("plan.csv", CSV.encode(), content_type="text/csv")
    response = api.post("/api/scenarios/import", {"file": upload, "name": "From CSV"}, format="multipart")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "From CSV" and len(body["items"]) == 3


def test_a_bundle_upload_and_a_bundle_body_both_become_scenarios(api, world):
    bundle = {
        "plan_id": "plan-9",
        "entities": [
            {
                "entity_type": "campaign",
                "entity_id": "sandbox-cmp-1",
                "metadata": {"platform": "sandbox"},
                "sections": {"spend": {"daily_budget": {"unit": "EUR", "value": "150.00"}}},
            }
        ],
    }
    upload = SimpleUploadedFile("plan.json", json.dumps(bundle).encode(), content_type="application/json")
    uploaded = api.post("/api/scenarios/import", {"file": upload, "format": "bundle"}, format="multipart")
    assert uploaded.status_code == 201, uploaded.json()
    assert (uploaded.json()["name"], uploaded.json()["source_plan_id"]) == ("plan-9", "plan-9")
    posted = api.post("/api/scenarios/import?name=Body", json.dumps(bundle), content_type="application/json")
    assert posted.status_code == 201, posted.json()
    assert posted.json()["name"] == "Body" and posted.json()["items"][0]["daily_budget"] == "150.00"


def test_a_bad_csv_upload_is_refused_with_line_errors_and_nothing_is_written(api, world):
    data = CSV + "sandbox,sandbox-cmp-404,daily_budget,10.00\nsandbox,sandbox-cmp-1,lifetime_budget,0\n"
    upload = SimpleUploadedFile("plan.csv", data.encode(), content_type="text/csv")
    response = api.post("/api/scenarios/import", {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert [(e["line"], e["field"], e["code"]) for e in response.json()["errors"]] == [
        (5, "entity_id", "unknown_entity"),
        (6, "lifetime_budget", "zero"),
    ]
    assert counts() == (0, 0)


def test_an_upload_over_the_limit_is_refused_stating_it(api, world, settings):
    settings.IMPORT_MAX_BYTES = 1024
    upload = SimpleUploadedFile("plan.csv", (CSV * 20).encode(), content_type="text/csv")
    response = api.post("/api/scenarios/import", {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert "the limit is 1.0 KB (1024 bytes)" in response.json()["message"] and counts() == (0, 0)


def test_an_import_without_a_file_is_refused(api, world):
    response = api.post("/api/scenarios/import", {"name": "x"}, format="multipart")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "file"


def test_malformed_json_bodies_are_refused_by_the_import(api, world):
    response = api.post("/api/scenarios/import", '{"entities": [', content_type="application/json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["message"]


# Preflight and deploy -------------------------------------------------------------------------------


def test_preflight_answers_the_diff_document_and_exports_it(api, world, state_dir):
    scenario = create(api, world, source_plan_id="plan-7")
    response = api.post(f"/api/scenarios/{scenario['id']}/preflight", {"mode": "assist"}, format="json")
    assert response.status_code == 200, response.json()
    document = response.json()
    run = PreflightRun.objects.get()
    assert (document["run_id"], document["status"], document["generation_mode"]) == (run.run_id, "succeeded", "assist")
    assert document["source_plan_id"] == "plan-7" and document["summary"]["changed"] == 3
    assert run.scenario_id == scenario["id"]
    assert json.loads((state_dir / "ad_push_diffs.json").read_text())[0]["run_id"] == run.run_id


def test_a_preflight_that_cannot_read_the_platform_is_a_502_naming_the_connection(api, world):
    scenario = create(api, world)
    world.connection.credentials = {"access_token": "revoked"}
    world.connection.save()
    response = api.post(f"/api/scenarios/{scenario['id']}/preflight")
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "platform_error" and "Sandbox" in body["message"]
    assert PreflightRun.objects.get().status == "failed"


def test_a_dry_run_deploy_validates_and_replays_for_the_same_key(api, world):
    scenario = create(api, world)
    url = f"/api/scenarios/{scenario['id']}/deploy"
    first = api.post(url, {"mode": "dry_run"}, format="json", HTTP_IDEMPOTENCY_KEY="dry-1")
    assert first.status_code == 200, first.json()
    assert {r["status"] for r in first.json()["results"]} == {"validated"}
    again = api.post(url, {"mode": "dry_run", "idempotency_key": "dry-1"}, format="json")
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Deployment.objects.count() == 1
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")


def test_a_deploy_needs_an_idempotency_key(api, world):
    scenario = create(api, world)
    response = api.post(f"/api/scenarios/{scenario['id']}/deploy", {"mode": "dry_run"}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "idempotency_key"


def test_reusing_a_key_for_another_request_is_409(api, world):
    first, second = create(api, world, name="One"), create(api, world, name="Two")
    api.post(f"/api/scenarios/{first['id']}/deploy", {"mode": "dry_run", "idempotency_key": "k-1"}, format="json")
    response = api.post(f"/api/scenarios/{second['id']}/deploy", {"mode": "dry_run", "idempotency_key": "k-1"})
    assert response.status_code == 409 and response.json()["code"] == "idempotency_key_reused"


# The engine runs outside transactions, as the workers do.
engine = pytest.mark.django_db(transaction=True)


@engine
def test_operators_cannot_deploy_live_and_approvers_can(api, world, approver):
    scenario = create(api, world)
    api.post(f"/api/scenarios/{scenario['id']}/preflight")
    url = f"/api/scenarios/{scenario['id']}/deploy"
    refused = api.post(url, {"mode": "live", "idempotency_key": "live-1"}, format="json")
    assert refused.status_code == 403 and "deploy live" in refused.json()["message"]
    accepted = client_for(approver).post(url, {"mode": "live", "idempotency_key": "live-1"}, format="json")
    assert accepted.status_code == 202, accepted.json()
    assert accepted.json()["mode"] == "live" and accepted.json()["counts"]["total"] == 3
    run_worker()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")


# Deployments ------------------------------------------------------------------------------------------------


@pytest.fixture
def deployed(api, world, approver):
    """A live deployment of the three items, executed by the worker (tests using it are ``@engine``)."""
    scenario = create(api, world)
    api.post(f"/api/scenarios/{scenario['id']}/preflight")
    response = client_for(approver).post(
        f"/api/scenarios/{scenario['id']}/deploy", {"mode": "live", "idempotency_key": "live-1"}, format="json"
    )
    assert response.status_code == 202, response.json()
    run_worker()
    return Deployment.objects.get(pk=response.json()["id"])


@engine
def test_a_deployment_shows_its_per_entity_results(api, deployed):
    body = api.get(f"/api/deployments/{deployed.pk}").json()
    assert body["status"] == "succeeded" and body["counts"]["succeeded"] == 3
    results = {r["entity"]["external_id"]: r for r in body["results"]}
    assert results["sandbox-cmp-1"]["status"] == "succeeded"
    assert results["sandbox-cmp-1"]["before"]["daily_budget"] == "100.00"
    assert results["sandbox-cmp-1"]["after"]["daily_budget"] == "150.00"


@engine
def test_deployments_filter_by_mode_status_and_scenario(api, world, deployed, other_tenant):
    api.post(f"/api/scenarios/{deployed.scenario_id}/deploy", {"mode": "dry_run", "idempotency_key": "d"})
    assert api.get("/api/deployments/").json()["count"] == 2
    assert [d["id"] for d in api.get("/api/deployments/?mode=live").json()["results"]] == [deployed.pk]
    assert api.get("/api/deployments/?status=succeeded&mode=dry_run").json()["count"] == 1
    assert api.get(f"/api/deployments/?scenario={deployed.scenario_id}").json()["count"] == 2
    theirs = Scenario.objects.create(tenant=other_tenant, name="Theirs")
    assert api.get(f"/api/deployments/?scenario={theirs.pk}").status_code == 400


@engine
def test_the_deployment_list_costs_the_same_queries_for_1_or_6_deployments(api, world, deployed):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get("/api/deployments/").status_code == 200
        return len(captured)

    few = queries()
    for index in range(5):
        api.post(f"/api/scenarios/{deployed.scenario_id}/deploy", {"mode": "dry_run", "idempotency_key": f"d-{index}"})
    assert Deployment.objects.count() == 6 and queries() == few


@engine
def test_another_tenants_deployment_is_404(world, deployed, other_admin):
    other = client_for(other_admin)
    assert other.get(f"/api/deployments/{deployed.pk}").status_code == 404
    assert other.post(f"/api/deployments/{deployed.pk}/rollback", {"reason": "x"}).status_code == 404
    assert other.post(f"/api/deployments/{deployed.pk}/retry-failed").status_code == 404
    assert other.get("/api/deployments/").json()["count"] == 0


@engine
def test_rolling_back_a_deployment_is_for_approvers(api, world, deployed, approver):
    assert api.post(f"/api/deployments/{deployed.pk}/rollback", {"reason": "oops"}).status_code == 403
    response = client_for(approver).post(f"/api/deployments/{deployed.pk}/rollback", {"reason": "CPA up"})
    assert response.status_code == 202, response.json()
    run_worker()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")
    assert set(Action.objects.filter(deployment=deployed).values_list("status", flat=True)) == {"rolled_back"}


@engine
def test_retrying_a_deployment_without_failures_is_409(world, deployed, approver):
    response = client_for(approver).post(f"/api/deployments/{deployed.pk}/retry-failed")
    assert response.status_code == 409 and response.json()["code"] == "nothing_to_retry"


# Guardrail overrides -------------------------------------------------------------------------------------


@pytest.fixture
def critical_run(api, world, tenant):
    GuardrailPolicy.objects.create(
        tenant=tenant, max_increase_pct=Decimal("10"), severities={"max_increase_pct": "critical"}
    )
    scenario = create(api, world)
    document = api.post(f"/api/scenarios/{scenario['id']}/preflight").json()
    assert document["has_critical"], document["breaches"]
    return document["run_id"]


def test_an_override_is_requested_with_a_reason_and_approved_by_someone_else(world, tenant, critical_run, tenant_admin):
    second_admin = member(tenant, Role.ADMIN, "acme-admin-2")
    requested = client_for(tenant_admin).post(f"/api/preflights/{critical_run}/override", {"reason": "Black Friday"})
    assert requested.status_code == 201, requested.json()
    override = requested.json()
    assert (override["preflight"], override["reason"], override["approved"]) == (critical_run, "Black Friday", False)
    assert (override["state"], override["rejected_by"], override["rejected_at"]) == ("pending", None, None)
    own = client_for(tenant_admin).post(f"/api/overrides/{override['id']}/approve")
    assert own.status_code == 403 and own.json()["message"].startswith("You requested this override; another person")
    approved = client_for(second_admin).post(f"/api/overrides/{override['id']}/approve")
    assert approved.status_code == 200 and approved.json()["approved_by"] == "acme-admin-2"
    assert approved.json()["state"] == "approved"


def test_overrides_need_the_override_permission_and_the_tenants_run(critical_run, approver, other_admin):
    refused = client_for(approver).post(f"/api/preflights/{critical_run}/override", {"reason": "x"})
    assert refused.status_code == 403 and "override guardrails" in refused.json()["message"]
    assert client_for(other_admin).post(f"/api/preflights/{critical_run}/override", {"reason": "x"}).status_code == 404


def test_the_api_schema_describes_the_scenario_endpoints(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for path in (
        "/api/scenarios/import",
        "/api/scenarios/{id}/deploy",
        "/api/deployments/{id}/retry-failed",
        "/api/tenants/{tenant_id}/ad-pushes/dry-run",
    ):
        assert any(p.rstrip("/") == path for p in paths), path


@engine
def test_a_deployment_rollback_with_an_idempotency_key_runs_once_and_replays(world, deployed, approver):
    api = client_for(approver)
    url = f"/api/deployments/{deployed.pk}/rollback"
    first = api.post(url, {"reason": "CPA up"}, HTTP_IDEMPOTENCY_KEY="undo-1")
    assert first.status_code == 202, first.json()  # the gate read the platform before the key's transaction
    again = api.post(url, {"reason": "CPA up"}, HTTP_IDEMPOTENCY_KEY="undo-1")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    run_worker()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")


@engine
def test_a_deployment_rollback_that_breaches_a_critical_guardrail_rolls_back_nothing(world, deployed, approver):
    GuardrailPolicy.objects.create(
        tenant=deployed.tenant,
        name="Careful",
        max_decrease_pct=Decimal("20"),
        severities={"max_decrease_pct": "critical"},
    )
    response = client_for(approver).post(f"/api/deployments/{deployed.pk}/rollback", {"reason": "CPA up"})
    assert response.status_code == 409, response.json()
    body = response.json()
    assert body["code"] == "critical_breaches" and "Nothing was rolled back" in body["message"]
    assert set(Action.objects.filter(deployment=deployed).values_list("status", flat=True)) == {"succeeded"}
    assert PreflightRun.objects.filter(action__deployment=deployed).exists()  # what was judged is kept
