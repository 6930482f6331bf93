"""The OpenAPI schema documents every operation's request body and every answer it can
give, errors with the one Error shape (schemathesis checks the live answers: .ci/api_fuzz)."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

ERROR = {"$ref": "#/components/schemas/Error"}
# Operations that take no body (any field sent is refused by name, see NoBodySerializer).
BODILESS = {
    ("delete", "/api/actions/{id}/"),
    ("post", "/api/overrides/{override_id}/approve/"),
    ("post", "/api/actions/{id}/preflight/"),  # runs the action's preflight; nothing to send
    ("post", "/api/automation-settings/for-connection/{connection_id}/"),  # creates the settings row
}


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if path.startswith("/api/") and not path.startswith("/api/schema"):
                yield path, method, operation


def test_every_operation_documents_its_errors_with_the_error_shape(schema):
    seen = 0
    for path, method, operation in operations(schema):
        expected = {"400", "401", "403", "404", "413", "429"}
        if method in {"post", "put", "patch", "delete"}:
            expected |= {"402", "409", "415"}
        responses = operation["responses"]
        assert expected <= set(responses), (method, path, sorted(expected - set(responses)))
        for code in expected:
            assert responses[code]["content"]["application/json"]["schema"] == ERROR, (method, path, code)
        assert "414" in responses
        seen += 1
    assert seen >= 25


def test_every_write_documents_its_request_body_and_every_success_has_a_body_schema(schema):
    for path, method, operation in operations(schema):
        if method in {"post", "put", "patch"} and (method, path) not in BODILESS:
            assert "requestBody" in operation, (method, path)
        for code, response in operation["responses"].items():
            if code.startswith("2") and code != "204":  # 204 No Content has no body by definition
                body = response["content"]["application/json"]["schema"]
                assert body.get("$ref") or body.get("type") == "array", (method, path, code, body)


def test_the_error_component_names_fields_and_items(schema):
    error = schema["components"]["schemas"]["Error"]
    assert {"code", "message"} <= set(error["required"])
    item = schema["components"]["schemas"]["ErrorItem"]
    assert {"field", "code", "message"} <= set(item["required"]) and {"index", "line"} <= set(item["properties"])
