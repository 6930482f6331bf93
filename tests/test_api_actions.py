"""The action API: validation, roles, entitlements, tenancy, idempotency, query counts."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.models import Action, ActionStatus, Recommendation
from budgetradar.roles import Role
from tests.factories import ActionFactory, AdSetFactory, ConnectionFactory, EntityFactory, member, plan

MISSING = object()


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def api(approver):
    return client_for(approver)


@pytest.fixture
def adset(campaign):
    return AdSetFactory(connection=campaign.connection, parent=campaign, external_id="as-1")


def budget(entity, amount="450.00", **extra):
    return {"entity": entity.pk, "action_type": "adjust_budget", "params": {"new_budget": amount}, **extra}


# Creating recommendations -------------------------------------------------------------


def test_a_recommendation_is_created_with_its_pending_action(api, campaign):
    response = api.post("/api/recommendations/", budget(campaign, rationale="ROAS above target"), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["entity"]["external_id"] == "cmp-1001"
    assert body["params"] == {"new_budget": "450.00", "budget_type": "daily"}
    assert body["action"]["status"] == "pending_approval"


def test_a_list_of_recommendations_is_created_in_one_request(api, campaign, adset):
    items = [
        budget(campaign),
        {"entity": adset.pk, "action_type": "adjust_bid", "params": {"new_bid": "1.20"}},
        {"entity": campaign.pk, "action_type": "pause_campaign"},
    ]
    response = api.post("/api/recommendations/", items, format="json")
    assert response.status_code == 201
    assert [r["action_type"] for r in response.json()] == ["adjust_budget", "adjust_bid", "pause_campaign"]


@pytest.mark.parametrize(
    ("item", "field", "text"),
    [
        ({"entity": 999999, "action_type": "pause_campaign"}, "entity", "does not exist"),
        ({"entity": MISSING, "action_type": "pause_campaign"}, "entity", "required"),
        ({"action_type": "adjust_budget", "params": {"new_budget": "-5"}}, "params.new_budget", "greater than zero"),
        ({"action_type": "adjust_budget", "params": {"new_budget": "NaN"}}, "params.new_budget", "finite"),
        ({"action_type": "adjust_budget", "params": {"new_budget": "Infinity"}}, "params.new_budget", "finite"),
        ({"action_type": "adjust_budget", "params": {"new_budget": "1.001"}}, "params.new_budget", "decimal place"),
        ({"action_type": "adjust_budget", "params": {"new_budget": 12.5}}, "params.new_budget", "decimal string"),
        ({"action_type": "adjust_budget", "params": {}}, "params.new_budget", "required"),
        ({"action_type": "double_everything"}, "action_type", "Unknown action type"),
        ({"action_type": "adjust_budget", "params": {"new_budget": "5", "oops": 1}}, "params.oops", "Unknown param"),
        ({"action_type": "adjust_bid", "params": {"new_bid": "1"}}, "entity", "applies to a ad_set"),
    ],
)
def test_bad_items_are_refused_naming_the_item_and_field_and_nothing_is_written(api, campaign, item, field, text):
    item = {"entity": campaign.pk, **item}
    if item["entity"] is MISSING:
        del item["entity"]
    response = api.post("/api/recommendations/", [budget(campaign), item], format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, field)]
    assert errors[0]["message"].startswith(f"Item 1, {field}") and text in errors[0]["message"]
    assert errors[0]["message"] in response.json()["message"]
    assert Recommendation.objects.count() == 0 and Action.objects.count() == 0


def test_another_tenants_entity_is_reported_as_not_existing(api, other_tenant):
    theirs = EntityFactory(connection=ConnectionFactory(tenant=other_tenant))
    response = api.post("/api/recommendations/", budget(theirs), format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "entity", "code": "invalid", "message": f"entity: Entity {theirs.pk} does not exist in your tenant."}
    ]


def test_viewer_cannot_create_recommendations(viewer, campaign):
    assert client_for(viewer).post("/api/recommendations/", budget(campaign), format="json").status_code == 403


def test_recommendation_list_is_scoped_and_paginated(api, campaign, other_tenant):
    ActionFactory.create_batch(3, entity=campaign)
    ActionFactory(entity=EntityFactory(connection=ConnectionFactory(tenant=other_tenant)))
    body = api.get("/api/recommendations/").json()
    assert len(body["results"]) == 3 and body["next"] is None
    assert all(r["action"]["status"] == "pending_approval" for r in body["results"])


# Approving ------------------------------------------------------------------------------


def test_approve_by_recommendation_returns_the_approved_action(api, campaign):
    action = ActionFactory(entity=campaign)
    response = api.post(f"/api/actions/approve/{action.recommendation_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "approved" and response.json()["approved_by"] == "acme-approver"


def test_approving_twice_is_409(api, campaign):
    action = ActionFactory(entity=campaign)
    api.post(f"/api/actions/approve/{action.recommendation_id}")
    response = api.post(f"/api/actions/approve/{action.recommendation_id}")
    assert response.status_code == 409 and response.json()["code"] == "already_approved"


def test_approving_without_entitlement_is_402_naming_the_plan(api, tenant, campaign):
    tenant.plan = plan("growth")
    tenant.save()
    action = ActionFactory(entity=campaign)
    response = api.post(f"/api/actions/approve/{action.recommendation_id}")
    assert response.status_code == 402
    assert "Growth plan does not include actions" in response.json()["message"]


def test_viewer_and_four_eyes_are_403(tenant, viewer, approver, campaign):
    action = ActionFactory(entity=campaign, proposed_by=approver)
    assert client_for(viewer).post(f"/api/actions/approve/{action.recommendation_id}").status_code == 403
    tenant.four_eyes_required = True
    tenant.save()
    response = client_for(approver).post(f"/api/actions/approve/{action.recommendation_id}")
    assert response.status_code == 403 and "Four-eyes" in response.json()["message"]


# Reading, cancelling, tenancy ---------------------------------------------------------------


def test_actions_filter_by_status_platform_and_type(api, campaign, adset):
    ActionFactory(entity=campaign, status=ActionStatus.SUCCEEDED)
    bid = ActionFactory(entity=adset, action_type="adjust_bid", params={"new_bid": "1.00"})
    assert len(api.get("/api/actions?status=succeeded").json()["results"]) == 1
    assert api.get("/api/actions?action_type=adjust_bid").json()["results"][0]["id"] == bid.pk
    assert len(api.get("/api/actions?platform=sandbox").json()["results"]) == 2
    assert api.get("/api/actions?platform=meta").json()["results"] == []


def test_cancel_is_delete_and_409_once_running(api, campaign):
    pending = ActionFactory(entity=campaign)
    response = api.delete(f"/api/actions/{pending.pk}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    executing = ActionFactory(entity=campaign, status=ActionStatus.EXECUTING)
    assert api.delete(f"/api/actions/{executing.pk}").status_code == 409


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/actions/{id}"),
        ("get", "/api/actions/{id}/logs"),
        ("post", "/api/actions/{id}/execute"),
        ("post", "/api/actions/{id}/rollback"),
        ("delete", "/api/actions/{id}"),
        ("post", "/api/actions/approve/{rec}"),
        ("get", "/api/recommendations/{rec}/"),
    ],
)
def test_another_tenants_ids_are_404_on_every_endpoint(api, other_tenant, method, path):
    theirs = ActionFactory(entity=EntityFactory(connection=ConnectionFactory(tenant=other_tenant)))
    response = getattr(api, method)(path.format(id=theirs.pk, rec=theirs.recommendation_id), format="json")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.parametrize("path", ["/api/actions/{id}/execute", "/api/actions/{id}/rollback"])
def test_viewer_cannot_execute_or_roll_back(viewer, campaign, path):
    action = ActionFactory(entity=campaign, status=ActionStatus.APPROVED)
    assert client_for(viewer).post(path.format(id=action.pk)).status_code == 403


def test_executing_an_unapproved_action_is_409(api, campaign):
    action = ActionFactory(entity=campaign)
    response = api.post(f"/api/actions/{action.pk}/execute")
    assert response.status_code == 409 and "only approved actions" in response.json()["message"]


def test_list_query_counts_stay_flat_as_rows_grow(api, tenant, campaign):
    other_member = member(tenant, Role.OPERATOR, "acme-op-2")
    for path in ("/api/actions", "/api/recommendations/"):
        ActionFactory.create_batch(3, entity=campaign, proposed_by=other_member)
        with CaptureQueriesContext(connection) as few:
            assert api.get(path).status_code == 200
        ActionFactory.create_batch(30, entity=campaign, proposed_by=other_member)
        with CaptureQueriesContext(connection) as many:
            assert api.get(path).status_code == 200
        assert len(many) == len(few), path


def test_logs_are_listed_in_time_order(api, approver, campaign):
    action = ActionFactory(entity=campaign)
    api.post(f"/api/actions/approve/{action.recommendation_id}")
    body = api.get(f"/api/actions/{action.pk}/logs").json()
    assert [e["event"] for e in body["results"]] == ["approved"]


# Schema -----------------------------------------------------------------------------------


def test_openapi_schema_and_docs_are_served_without_internet(api, client, approver):
    assert api.get("/api/schema/").status_code == 200
    client.force_login(approver)
    html = client.get("/api/docs/").content.decode()
    assert "drf_spectacular_sidecar" in html and "cdn.jsdelivr" not in html
