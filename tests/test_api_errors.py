"""The API never answers 500 or HTML to bad input: one JSON error shape naming the field
(and item), limits on depth, size, text and money, unknown fields refused by name."""

from __future__ import annotations

import json
import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.models import Action, ActionStatus, Recommendation
from budgetradar.api_defaults import JSONParser
from budgetradar.roles import Role
from scenarios.models import Scenario
from tests import factories

DEEP = "[" * 2000 + "]" * 2000


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def admin_user(tenant):
    return factories.member(tenant, Role.ADMIN, "acme-admin")


@pytest.fixture
def api(admin_user) -> APIClient:
    return client_for(admin_user)


@pytest.fixture
def entity(connection_):
    return factories.EntityFactory(connection=connection_, external_id="cmp-1", daily_budget="100.00")


@pytest.fixture
def scenario(tenant, admin_user):
    return Scenario.objects.create(tenant=tenant, name="Q3", created_by=admin_user)


def post_json(api: APIClient, url: str, text: str, method: str = "post"):
    return getattr(api, method)(url, data=text.encode(), content_type="application/json")


def assert_error(response, status: int, field: str, code: str | None = None) -> dict:
    """The one error shape: JSON {code, message, errors: [{field, code, message}]}."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"code", "message"}
    fields = [e["field"] for e in body.get("errors", [])]
    assert field in fields, body
    error = body["errors"][fields.index(field)]
    assert error["message"] and (code is None or error["code"] == code), body
    return body


# JSON depth ------------------------------------------------------------------------------------


def _json_endpoints(tenant, action, scenario) -> list[tuple[str, str]]:
    return [
        ("post", "/api/recommendations/"),
        ("post", f"/api/actions/approve/{action.recommendation_id}"),
        ("post", f"/api/actions/{action.pk}/execute"),
        ("post", f"/api/actions/{action.pk}/rollback"),
        ("post", "/api/scenarios/"),
        ("patch", f"/api/scenarios/{scenario.pk}"),
        ("post", "/api/scenarios/import"),
        ("post", f"/api/scenarios/{scenario.pk}/preflight"),
        ("post", f"/api/scenarios/{scenario.pk}/deploy"),
        ("post", f"/api/tenants/{tenant.slug}/ad-pushes/dry-run"),
    ]


def test_json_nested_two_thousand_levels_is_a_400_on_every_json_endpoint(api, tenant, entity, scenario):
    action = factories.ActionFactory(entity=entity, status=ActionStatus.SUCCEEDED)
    for method, url in _json_endpoints(tenant, action, scenario):
        response = post_json(api, url, DEEP, method)
        body = assert_error(response, 400, "body" if "import" not in url and "dry-run" not in url else "file")
        assert "nested more than 64 levels" in body["message"], url


def test_every_api_view_parses_json_with_the_bounded_parser():
    """Structural half of the depth test: no API view parses JSON with DRF's own parser."""
    seen = 0
    for view in _api_views(get_resolver().url_patterns):
        classes = [p for p in getattr(view, "parser_classes", []) if p.media_type == "application/json"]
        assert all(issubclass(p, JSONParser) for p in classes), view
        seen += 1
    assert seen > 10


def _api_views(patterns, prefix: str = ""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _api_views(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and route.lstrip("^").startswith("api/"):
            view = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
            if view is not None:
                yield view


def test_a_json_nested_too_deeply_in_the_admin_import_is_a_form_error(client, admin_user):
    client.force_login(admin_user)
    upload = SimpleUploadedFile("deep.json", DEEP.encode(), content_type="application/json")
    response = client.post("/admin/scenarios/scenario/import/", {"file": upload, "format": "auto", "name": "x"})
    assert response.status_code == 200
    assert "nested more than 64 levels" in response.content.decode()
    assert Scenario.objects.count() == 0


# Money -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("100000000000000", "too_large"),
        ("99999999999999999999.99", "too_large"),
        ("1e400", "too_large"),
        ("NaN", "not_finite"),
        ("-Infinity", "not_finite"),
    ],
)
def test_money_out_of_the_columns_range_is_refused_naming_item_and_field(api, entity, value, code):
    payload = {"name": "Huge", "items": [{"entity": entity.pk, "daily_budget": value}]}
    body = assert_error(api.post("/api/scenarios/", payload, format="json"), 400, "daily_budget", code)
    assert body["errors"][0]["index"] == 0 and body["errors"][0]["message"].startswith("Item 0, daily_budget")
    assert Scenario.objects.count() == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_bare_json_nan_and_infinity_are_refused_naming_the_field(api, entity, literal):
    text = f'{{"name": "x", "items": [{{"entity": {entity.pk}, "daily_budget": {literal}}}]}}'
    assert_error(post_json(api, "/api/scenarios/", text), 400, "items[0].daily_budget", "not_finite")
    assert Scenario.objects.count() == 0


def test_a_bundle_with_money_of_ten_to_the_fourteen_is_refused_naming_the_entity(api, entity):
    bundle = {
        "plan_id": "p-1",
        "entities": [
            {
                "entity_id": "cmp-1",
                "metadata": {"platform": "sandbox"},
                "sections": {"spend": {"daily_budget": {"value": 100000000000000, "unit": "EUR"}}},
            }
        ],
    }
    body = assert_error(
        api.post("/api/scenarios/import", bundle, format="json"), 400, "sections.spend.daily_budget.value", "too_large"
    )
    assert body["errors"][0]["entity_id"] == "cmp-1" and body["errors"][0]["index"] == 0
    assert Scenario.objects.count() == 0


def test_a_csv_with_money_of_ten_to_the_fourteen_is_refused_naming_the_line(api, entity):
    text = "platform,entity_id,field,value\nsandbox,cmp-1,daily_budget,100000000000000.00\n"
    upload = SimpleUploadedFile("plan.csv", text.encode(), content_type="text/csv")
    body = assert_error(api.post("/api/scenarios/import", {"file": upload}), 400, "daily_budget", "too_large")
    assert body["errors"][0]["line"] == 2 and body["errors"][0]["entity_id"] == "cmp-1"
    assert Scenario.objects.count() == 0


# Text ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("char", "code"), [("\\u0000", "nul_character"), ("\\ud800", "surrogate_character")])
def test_a_nul_or_lone_surrogate_in_a_bundle_plan_id_is_refused_naming_it(api, tenant, entity, char, code):
    entities = '[{"entity_id": "cmp-1", "metadata": {"platform": "sandbox"}, "sections": {"status": null}}]'
    text = f'{{"plan_id": "p{char}1", "entities": {entities}}}'
    assert_error(post_json(api, "/api/scenarios/import", text), 400, "plan_id", code)
    assert_error(post_json(api, f"/api/tenants/{tenant.slug}/ad-pushes/dry-run", text), 400, "plan_id", code)
    assert Scenario.objects.count() == 0


@pytest.mark.parametrize(("char", "code"), [("\\u0000", "nul_character"), ("\\udfff", "surrogate_character")])
def test_nul_and_lone_surrogates_anywhere_in_a_json_body_are_refused_naming_the_path(api, entity, char, code):
    text = f'{{"name": "x", "items": [{{"entity": {entity.pk}, "st{char}atus": "paused"}}]}}'
    # The path shows the character escaped, so the answer itself stays valid text.
    assert_error(post_json(api, "/api/scenarios/", text), 400, f"items[0].st{char}atus", code)
    text = f'{{"name": "a{char}b"}}'
    assert_error(post_json(api, "/api/scenarios/", text), 400, "name", code)
    assert Scenario.objects.count() == 0


def test_a_nul_in_a_query_parameter_is_refused_naming_it(api, entity):
    assert_error(api.get("/api/entities/?search=brand%00"), 400, "search", "nul_character")


def test_a_body_that_is_not_utf8_is_refused(api):
    response = api.post("/api/scenarios/", data=b'{"name": "caf\xe9"}', content_type="application/json")
    assert_error(response, 400, "body", "encoding")


def test_scenario_notes_are_bounded_on_every_door(api, entity, scenario):
    notes = "n" * 10_001
    assert_error(api.post("/api/scenarios/", {"name": "x", "notes": notes}, format="json"), 400, "notes")
    assert_error(api.patch(f"/api/scenarios/{scenario.pk}", {"notes": notes}, format="json"), 400, "notes")
    bundle = {
        "plan_id": "p-1",
        "notes": notes,
        "entities": [
            {"entity_id": "cmp-1", "metadata": {"platform": "sandbox"}, "sections": {"status": None}},
        ],
    }
    assert_error(api.post("/api/scenarios/import", bundle, format="json"), 400, "notes", "too_long")
    assert Scenario.objects.count() == 1 and Scenario.objects.get().notes == ""


def test_reasons_and_rationales_are_bounded(api, entity):
    action = factories.ActionFactory(entity=entity, status=ActionStatus.SUCCEEDED)
    long = "r" * 5_001
    rec = {"entity": entity.pk, "action_type": "pause_campaign", "rationale": long}
    assert_error(api.post("/api/recommendations/", rec, format="json"), 400, "rationale")
    assert_error(api.post(f"/api/actions/{action.pk}/rollback", {"reason": long}, format="json"), 400, "reason")
    pending = factories.ActionFactory(entity=entity)
    approve = api.post(f"/api/actions/approve/{pending.recommendation_id}", {"reason": long}, format="json")
    assert_error(approve, 400, "reason")
    assert_error(api.delete(f"/api/actions/{pending.pk}?reason={'r' * 201}"), 400, "reason")
    assert Action.objects.get(pk=pending.pk).status == ActionStatus.PENDING_APPROVAL


# Unknown fields ------------------------------------------------------------------------------------


def test_unknown_fields_are_refused_with_their_names(api, entity, scenario):
    action = factories.ActionFactory(entity=entity, status=ActionStatus.SUCCEEDED)
    cases = [
        ("post", "/api/scenarios/", {"name": "x", "nots": "typo", "items": []}, "nots"),
        ("patch", f"/api/scenarios/{scenario.pk}", {"nmae": "typo"}, "nmae"),
        ("post", f"/api/scenarios/{scenario.pk}/deploy", {"mode": "dry_run", "idempotency_key": "k", "x": 1}, "x"),
        ("post", f"/api/scenarios/{scenario.pk}/preflight", {"mdoe": "manual"}, "mdoe"),
        ("post", "/api/recommendations/", {"entity": entity.pk, "action_type": "pause_campaign", "why": 1}, "why"),
        ("post", f"/api/actions/{action.pk}/rollback", {"overide_drift": True}, "overide_drift"),
        ("post", f"/api/actions/{action.pk}/execute", {"key": "k"}, "key"),
    ]
    for method, url, payload, field in cases:
        body = assert_error(getattr(api, method)(url, payload, format="json"), 400, field, "unknown_field")
        assert field in body["message"], url
    assert Scenario.objects.count() == 1 and Recommendation.objects.count() == 1


# Size, OPTIONS, 404 and 500 ------------------------------------------------------------------------


def test_a_six_megabyte_body_is_a_json_413(api):
    response = post_json(api, "/api/scenarios/", '{"name": "' + "a" * 6_000_000 + '"}')
    assert_error(response, 413, "body", "too_large")
    assert "limit" in response.json()["message"]


@pytest.mark.parametrize("suffix", ["rollback", "retry-failed"])
def test_options_on_deployment_actions_answers_json(api, suffix):
    response = api.options(f"/api/deployments/1/{suffix}")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.json()["schema"] == "/api/schema/"


@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_api_url_is_a_json_404(api, settings, debug):
    settings.DEBUG = debug
    response = api.get("/api/no-such-thing/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("url", ["/api/test-crash/drf", "/api/test-crash/django"])
def test_an_unexpected_error_is_a_json_500_with_a_logged_request_id(api, settings, caplog, debug, url):
    settings.ROOT_URLCONF = "tests.crash_urls"
    settings.DEBUG = debug
    with caplog.at_level(logging.ERROR, logger="budgetradar.request"):
        response = api.get(url, HTTP_X_REQUEST_ID="client-chosen-id-42")
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "server_error" and body["request_id"] == "client-chosen-id-42"
    assert "Traceback" not in response.content.decode() and "kaboom" not in response.content.decode()
    assert response["X-Request-ID"] == "client-chosen-id-42"
    record = next(r for r in caplog.records if r.name == "budgetradar.request")
    assert record.request_id == "client-chosen-id-42" and record.exc_info[1].args == ("kaboom",)


def test_every_response_carries_a_request_id(api):
    first, second = api.get("/api/entities/"), api.get("/api/entities/")
    assert len(first["X-Request-ID"]) == 32 and first["X-Request-ID"] != second["X-Request-ID"]


def test_a_request_id_that_is_not_a_short_token_is_replaced(api):
    response = api.get("/api/entities/", HTTP_X_REQUEST_ID="<script>" + "x" * 100)
    assert len(response["X-Request-ID"]) == 32 and "<" not in response["X-Request-ID"]


def test_errors_are_never_html_even_when_a_browser_asks(api):
    response = api.get("/api/actions/999999", HTTP_ACCEPT="text/html")
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content)["code"] in {"not_found", "not_acceptable"}
