"""DRF default classes named in ``REST_FRAMEWORK`` that ``rest_framework.views`` loads
while it is being imported, so this module must not import it (nor ``budgetradar.api``)."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.metadata import BaseMetadata

from budgetradar.errors import ValidationFailed
from budgetradar.inputs import BadInput, load_json


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with the input limits of ``budgetradar.inputs``: depth, NUL and
    lone surrogates, non-finite numbers and 64-bit integers, each refused as a 400 that
    names the field, never a RecursionError or a database error later."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        encoding = parsers.get_encoding(parser_context or {})
        raw = stream.read() if stream is not None else b""
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            message = f"The body is not {encoding} text (invalid byte at position {exc.start})."
            raise ValidationFailed(
                message, details=[{"field": "body", "code": "encoding", "message": message}]
            ) from None
        try:
            return load_json(text)
        except BadInput as exc:
            raise ValidationFailed(exc.message, details=[exc.as_dict()]) from None


class Metadata(BaseMetadata):
    """OPTIONS answers name, description and media types; the request and response
    shapes are in the OpenAPI schema (DRF's default metadata instantiates serializers,
    which views that answer service dicts do not have)."""

    def determine_metadata(self, request, view) -> dict[str, Any]:
        return {
            "name": view.get_view_name(),
            "description": view.get_view_description(),
            "renders": [renderer.media_type for renderer in view.renderer_classes],
            "parses": [parser.media_type for parser in view.parser_classes],
            "schema": "/api/schema/",
        }
