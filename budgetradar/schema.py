"""The OpenAPI schema's error answers: the ``Error`` component and an AutoSchema that
documents, on every operation, each error status it can answer."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ErrorItemSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="Path of the refused value: name, items[3].daily_budget, body, file.")
    code = serializers.CharField(help_text="Machine word: required, invalid, unknown_field, too_long, precision...")
    message = serializers.CharField(help_text="Names the item and the field on its own.")
    index = serializers.IntegerField(required=False, help_text="Position of the item in a list or bundle.")
    line = serializers.IntegerField(required=False, help_text="Line of a CSV or JSON file.")
    entity = serializers.JSONField(required=False, help_text="The entity id the item gave.")
    entity_id = serializers.CharField(required=False, help_text="The platform's id of the entity (bundles, CSV).")


class ErrorSerializer(serializers.Serializer):
    """Every 4xx (and the 500 that should never happen) answers this."""

    code = serializers.CharField(help_text="Machine word: invalid, not_found, permission_denied, not_entitled...")
    message = serializers.CharField(help_text="What went wrong and what to do next, for a person.")
    errors = ErrorItemSerializer(many=True, required=False, help_text="400: one entry per refused value.")
    details = serializers.JSONField(required=False, help_text="What else the refusal knows (breaches, platform error).")
    request_id = serializers.CharField(required=False, help_text="500: quote it when reporting the problem.")


ERROR_DESCRIPTIONS = {
    400: "Invalid input; `errors` names each refused field (and item).",
    401: "No or invalid credentials.",
    402: "The tenant's plan does not include this; the message names the limit.",
    403: "Your role does not allow this (or four-eyes: someone else must).",
    404: "No such object in your tenant.",
    409: "The object's state or an idempotency key conflicts with the request.",
    413: "The request body is larger than the limit.",
    415: "The body's media type is not accepted.",
    429: "Too many failed authentications from your address; Retry-After says when to try again.",
}


# gunicorn (like most proxies) refuses a request line over 4 KB itself, before Django, with
# its own short HTML page; the application never sees that request.
URI_TOO_LONG = "URI too long: the HTTP server refuses request lines over 4 KB before the application (not JSON)."


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's schema plus the error answers every operation can give, all
    with the ``Error`` shape: 400, 401, 403, 404, 413 and 429 everywhere, and 402, 409
    and 415 for writes (entitlements, states and media types are checked there); and
    the HTTP server's 414, which has no body we control."""

    def _get_response_bodies(self, direction="response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in self.error_statuses():
            if str(code) not in responses:
                described = _described(ErrorSerializer, ERROR_DESCRIPTIONS[code])
                responses[str(code)] = self._get_response_for_code(described, str(code), direction=direction)
        responses.setdefault("414", {"description": URI_TOO_LONG})
        return responses

    def error_statuses(self) -> list[int]:
        statuses = [400, 401, 403, 404, 413, 429]
        if self.method in UNSAFE_METHODS:
            statuses += [402, 409, 415]
        return sorted(statuses)


def _described(serializer, description: str) -> OpenApiResponse:
    return OpenApiResponse(response=serializer, description=description)
