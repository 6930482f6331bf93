"""/api/guardrail-policies/: everyone reads, admins write, tenant-scoped, errors name the field."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.services.lifecycle import action_approve
from actions.services.recommendations import RecommendationInput, recommendations_create
from safety.gate import CriticalBreaches
from scenarios.models import GuardrailPolicy
from tests.api_helpers import field_errors
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.django_db
URL = "/api/guardrail-policies/"


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def admin_api(tenant_admin):
    return client_for(tenant_admin)


def test_an_admin_creates_changes_and_deletes_a_policy_with_history(admin_api, tenant, tenant_admin):
    created = admin_api.post(
        URL,
        {
            "name": "Max +50 %",
            "max_increase_pct": "50",
            "change_window_days": [0, 1, 2, 3, 4],
            "change_window_start": "09:00",
            "change_window_end": "17:00",
            "blackout_dates": ["2026-12-24", "2026-12-24", "2026-12-31"],
            "severities": {"max_decrease_pct": "critical"},
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["connection"] is None and body["applies_to"] == "every connection (tenant default)"
    assert body["max_increase_pct"] == "50.00" and body["blackout_dates"] == ["2026-12-24", "2026-12-31"]
    policy = GuardrailPolicy.objects.get(pk=body["id"])
    assert policy.tenant == tenant and policy.history.latest().history_user == tenant_admin

    changed = admin_api.patch(f"{URL}{policy.pk}/", {"max_increase_pct": "30"}, format="json")
    assert changed.status_code == 200 and changed.json()["max_increase_pct"] == "30.00"
    assert changed.json()["change_window_days"] == [0, 1, 2, 3, 4]  # the other fields stay
    assert policy.history.latest().history_change_reason == "changed via API"

    assert admin_api.delete(f"{URL}{policy.pk}/").status_code == 204
    assert not GuardrailPolicy.objects.exists()
    assert policy.history.latest().history_type == "-"


def test_other_roles_read_and_cannot_write(tenant, viewer, approver):
    GuardrailPolicy.objects.create(tenant=tenant, name="Default")
    listing = client_for(viewer).get(URL)
    assert listing.status_code == 200
    assert listing.json()["count"] == 1 and listing.json()["results"][0]["name"] == "Default"
    refused = client_for(approver).post(URL, {"name": "Mine"}, format="json")
    assert refused.status_code == 403 and "create guardrail policies" in refused.json()["message"]
    policy = GuardrailPolicy.objects.get()
    assert client_for(approver).patch(f"{URL}{policy.pk}/", {"name": "x"}, format="json").status_code == 403
    assert client_for(viewer).delete(f"{URL}{policy.pk}/").status_code == 403


def test_another_tenants_policies_are_invisible_and_404(admin_api, other_tenant):
    theirs = GuardrailPolicy.objects.create(tenant=other_tenant, name="Theirs")
    assert admin_api.get(URL).json()["count"] == 0
    assert admin_api.get(f"{URL}{theirs.pk}/").status_code == 404
    assert admin_api.patch(f"{URL}{theirs.pk}/", {"name": "x"}, format="json").status_code == 404
    assert admin_api.delete(f"{URL}{theirs.pk}/").status_code == 404
    other_connection = ConnectionFactory(tenant=other_tenant)
    refused = admin_api.post(URL, {"name": "Steal", "connection": other_connection.pk}, format="json")
    assert refused.status_code == 400 and "connection" in field_errors(refused)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_increase_pct": "-5"}, "max_increase_pct"),
        ({"max_decrease_pct": "150"}, "max_decrease_pct"),
        ({"max_increase_pct": "1e400"}, "max_increase_pct"),
        ({"max_daily_budget": "99999999999999999999.99"}, "max_daily_budget"),
        ({"min_daily_budget": "50", "max_daily_budget": "10"}, "max_daily_budget"),
        ({"change_window_start": "09:00"}, "change_window_end"),
        ({"change_window_days": [7]}, "change_window_days[0]"),
        ({"change_window_days": [1, 1]}, "change_window_days"),
        ({"blackout_dates": ["2026-13-01"]}, "blackout_dates[0]"),
        ({"severities": {"no_such_rule": "critical"}}, "severities.no_such_rule"),
        ({"severities": {"entity_missing": "off"}}, "severities.entity_missing"),
        ({"severities": {"cooldown": "loud"}}, "severities.cooldown"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "colour"),
        ({"id": 5}, "id"),
    ],
)
def test_invalid_values_are_refused_naming_the_field_and_nothing_is_saved(admin_api, body, field):
    response = admin_api.post(URL, {"name": "P", **body}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid"
    assert field in field_errors(response), response.json()
    assert not GuardrailPolicy.objects.exists()


def test_one_default_policy_and_one_per_connection(admin_api, tenant):
    assert admin_api.post(URL, {"name": "Default"}, format="json").status_code == 201
    second = admin_api.post(URL, {"name": "Another default"}, format="json")
    assert second.status_code == 400 and "already has guardrail policy" in field_errors(second)["connection"]
    own = ConnectionFactory(tenant=tenant, name="Meta EU")
    first = admin_api.post(URL, {"name": "Meta EU", "connection": own.pk}, format="json")
    assert first.status_code == 201 and first.json()["applies_to"] == "connection Meta EU"
    again = admin_api.post(URL, {"name": "Meta EU 2", "connection": own.pk}, format="json")
    assert again.status_code == 400 and "connection Meta EU already has" in field_errors(again)["connection"]
    assert admin_api.get(URL, {"connection": own.pk}).json()["count"] == 1


def test_the_list_is_paginated_and_its_queries_do_not_grow(admin_api, tenant, django_assert_max_num_queries):
    GuardrailPolicy.objects.create(tenant=tenant, name="Default")
    for n in range(12):
        GuardrailPolicy.objects.create(tenant=tenant, connection=ConnectionFactory(tenant=tenant), name=f"P{n}")
    with CaptureQueriesContext(connection) as few:
        admin_api.get(URL, {"page_size": 2})
    with django_assert_max_num_queries(len(few)):
        page = admin_api.get(URL, {"page_size": 10}).json()
    assert page["count"] == 13 and len(page["results"]) == 10 and page["next"]


def test_the_policy_api_is_in_the_openapi_schema(admin_api):
    schema = admin_api.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/guardrail-policies/"])
    assert {"get", "put", "patch", "delete"} <= set(paths["/api/guardrail-policies/{id}/"])
    assert "GuardrailPolicy" in schema["components"]["schemas"]


def test_the_policy_the_api_writes_is_the_one_the_gate_applies(admin_api, tenant, campaign, approver):
    admin_api.post(URL, {"name": "Tight", "max_increase_pct": "10"}, format="json")
    [recommendation] = recommendations_create(
        tenant=tenant,
        actor=approver,
        items=[RecommendationInput(entity_id=campaign.pk, action_type="adjust_budget", params={"new_budget": "150"})],
    )
    with pytest.raises(CriticalBreaches, match="above the 10.00% allowed"):
        action_approve(action=recommendation.actions.get(), actor=approver)
    assert GuardrailPolicy.objects.get().max_increase_pct == Decimal("10.00")
