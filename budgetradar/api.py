"""API plumbing shared by every app: pagination, the one error shape, serializers
that refuse unknown fields and the tenant-scoped base view
(the schema's error responses are in ``budgetradar.schema``).

Every error the API gives is JSON ``{"code", "message", "errors"?, "details"?}``:
``errors`` (400) is a list of ``{"field", "code", "message", "index"?, "line"?, ...}``,
one per refused value, each message naming the item and the field on its own;
``details`` carries what other refusals know (breaches, the platform's error).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.views import exception_handler as drf_exception_handler

from budgetradar.errors import DomainError, PermissionDenied, ValidationFailed
from budgetradar.idempotency import clean_key
from budgetradar.inputs import REASON_MAX_LENGTH
from budgetradar.tenancy import scope_to_user, tenant_of


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


# The error shape ---------------------------------------------------------------------------


def error_items(details: Any, *, where: dict[str, Any] | None = None, prefix: str = "") -> list[dict[str, Any]]:
    """``details`` as a flat list of ``{field, code, message, index?...}``.

    Accepts what services and DRF produce: lists of row errors (kept as they are), DRF's
    ``{field: [messages]}`` (nested serializers become dotted paths), per-item dicts keyed
    by index (``{"1": {"params.new_budget": "..."}}``) and bare messages.
    """
    where = where or {}
    if isinstance(details, Mapping):
        return _mapping_items(details, where=where, prefix=prefix)
    if isinstance(details, list | tuple):
        if details and all(isinstance(d, Mapping) and "field" in d for d in details):
            return [_row_item(d, where) for d in details]
        if all(not isinstance(d, Mapping | list | tuple) for d in details):
            return [_item(prefix or "non_field_errors", d, where) for d in details]
        items: list[dict[str, Any]] = []
        for index, child in enumerate(details):
            if not child:
                continue
            if prefix:
                items += error_items(child, where=where, prefix=f"{prefix}[{index}]")
            else:
                items += error_items(child, where={**where, "index": index})
        return items
    return [_item(prefix or "non_field_errors", details, where)]


def _mapping_items(details: Mapping, *, where: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for key, value in details.items():
        is_index = isinstance(key, int) or (isinstance(key, str) and key.isdigit())
        if is_index and not prefix and "index" not in where:
            items += error_items(value, where={**where, "index": int(key)})
        elif is_index and prefix:
            items += error_items(value, where=where, prefix=f"{prefix}[{key}]")
        else:
            items += error_items(value, where=where, prefix=f"{prefix}.{key}" if prefix else str(key))
    return items


def _row_item(row: Mapping, where: dict[str, Any]) -> dict[str, Any]:
    item = {**where, **row}
    item.setdefault("code", "invalid")
    item.setdefault("message", f"{item['field']}: invalid.")
    return item


def _item(field: str, message: Any, where: dict[str, Any]) -> dict[str, Any]:
    label = f"Item {where['index']}, " if "index" in where else ""
    text = str(message)
    if field not in text:  # services often name the field (and the entity) themselves
        text = f"{field}: {text}"
    return {
        **where,
        "field": field,
        "code": getattr(message, "code", "invalid"),
        "message": f"{label}{text}",
    }


def error_body(code: str, message: str, *, errors: list[dict] | None = None, details: Any = None) -> dict[str, Any]:
    """The JSON every error answer carries (also used by the middleware and handlers)."""
    body: dict[str, Any] = {"code": code, "message": message}
    if errors:
        body["errors"] = errors
    if details:
        body["details"] = details
    return body


def _with_first(message: str, errors: list[dict[str, Any]]) -> str:
    """The message, followed by the first error when it does not say it already."""
    if not errors or errors[0]["message"] in message:
        return message
    more = f" ({len(errors) - 1} more in errors)" if len(errors) > 1 else ""
    return f"{message} {errors[0]['message']}{more}"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error is JSON ``{"code": ..., "message": ..., "errors"?: [...]}``.

    Domain errors raised by services carry their own HTTP status (402, 403, 404, 409);
    anything left unhandled here becomes the middleware's JSON 500.
    """
    if isinstance(exc, ValidationFailed):
        errors = error_items(exc.details) if exc.details else []
        return Response(error_body(exc.code, _with_first(exc.message, errors), errors=errors), status=exc.http_status)
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, details=exc.details), status=exc.http_status)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, RequestDataTooBig):
        return Response(body_too_large_body(context["request"].META), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = error_items(exc.detail)
        response.data = error_body("invalid", _with_first("The request is invalid.", errors), errors=errors)
    elif response.status_code == status.HTTP_404_NOT_FOUND:
        response.data = error_body("not_found", _not_found_message(exc))
    elif isinstance(exc, exceptions.ParseError):
        message = str(exc.detail)
        response.data = error_body(
            "malformed", message, errors=[{"field": "body", "code": "malformed", "message": message}]
        )
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = error_body(getattr(exc, "default_code", "error"), str(response.data["detail"]))
    return response


def _not_found_message(exc: Exception) -> str:
    # "Invalid page." is worth saying; Django's Http404 texts may name models, so not those.
    if isinstance(exc, exceptions.NotFound) and "page" in str(exc.detail).lower():
        return str(exc.detail)
    return "Not found."


def body_too_large_body(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The 413 answer: how big the body was and what the limit is."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        size = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        size = 0
    said = f"is {size} bytes; the" if size else "is larger than the"
    message = f"The request body {said} limit is {limit} bytes. Split the import into several requests."
    return error_body("too_large", message, errors=[{"field": "body", "code": "too_large", "message": message}])


# Parsing and strict input ---------------------------------------------------------------------


class StrictSerializer(serializers.Serializer):
    """A request serializer that refuses fields it does not know, naming each of them
    (a typo such as ``"nots"`` would otherwise be dropped without a word)."""

    def to_internal_value(self, data: Any) -> Any:
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, Mapping) else []
        try:
            value = super().to_internal_value(data)
        except exceptions.ValidationError as exc:
            if not unknown or not isinstance(exc.detail, dict):
                raise
            errors = dict(exc.detail)
        else:
            if not unknown:
                return value
            errors = {}
        accepted = ", ".join(self.fields) or "no fields"
        for name in unknown:
            errors[name] = [exceptions.ErrorDetail(f"unknown field; this request accepts {accepted}.", "unknown_field")]
        raise exceptions.ValidationError(errors)


class NoBodySerializer(StrictSerializer):
    """For operations that take no fields: any field sent is refused by name."""


class ReasonSerializer(StrictSerializer):
    """An optional free-text reason, bounded like every free text the API takes."""

    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=REASON_MAX_LENGTH)


class IdempotencyKeySerializer(StrictSerializer):
    idempotency_key = serializers.CharField(
        required=False, max_length=200, help_text="Or the Idempotency-Key header (it wins when both are given)."
    )


# Tenancy and routing -------------------------------------------------------------------------


class TenantScopedMixin:
    """Narrows ``queryset`` to the requesting user's tenant; other tenants' ids are 404."""

    tenant_field = "tenant"

    def get_queryset(self):
        return scope_to_user(super().get_queryset(), self.request.user, tenant_field=self.tenant_field)


def tenant_for_request(request):
    """The tenant the requesting user acts for; platform staff must act as a member."""
    tenant = tenant_of(request.user)
    if tenant is None:
        raise PermissionDenied("Your user is not a member of any tenant; ask an admin for a membership.")
    return tenant


def idempotency_key_from(request) -> str | None:
    """The ``Idempotency-Key`` header, else the body's ``idempotency_key``, else None."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None and isinstance(request.data, dict):
        raw = request.data.get("idempotency_key")
    return None if raw is None else clean_key(raw)


class OptionalSlashRouter(DefaultRouter):
    """Routes answer with or without a trailing slash (``/api/actions`` and ``/api/actions/``)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
