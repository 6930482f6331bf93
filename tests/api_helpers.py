"""Reading the API's one error shape in tests."""

from __future__ import annotations

from typing import Any


def field_errors(body: Any) -> dict[str, str]:
    """``{field: message}`` from an error body (or a response) of the shape
    ``{"code", "message", "errors": [{"field", "code", "message"}, ...]}``."""
    if hasattr(body, "json"):
        body = body.json()
    return {error["field"]: error["message"] for error in body.get("errors", [])}
