"""API plumbing shared by every app: pagination, the one error shape, serializers
that refuse unknown fields and the tenant-scoped base view
(the schema's error responses are in ``budgetradar.schema``).

Every error the API gives is JSON ``{"code", "message", "errors"?, "details"?}``:
``errors`` (400) is a list of ``{"field", "code", "message", "index"?, "line"?, ...}``,
one per refused value, each message naming the item and the field on its own;
``details`` carries what other refusals know (breaches, the platform's error).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, Q, QuerySet
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import exception_handler as drf_exception_handler

from budgetradar.errors import DomainError, PermissionDenied, ValidationFailed
from budgetradar.idempotency import clean_key
from budgetradar.inputs import REASON_MAX_LENGTH
from budgetradar.tenancy import scope_to_user, tenant_of


class Pagination(PageNumberPagination):
    """Page numbers with a total ``count``: for the lists that stay small (scenarios,
    entities, policies). The lists that grow without bound use ``KeysetPagination``."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class KeysetPagination(CursorPagination):
    """Keyset ("cursor") pagination for the lists that grow without bound.

    A page is the ``page_size`` rows after (or, for ``previous``, before) the row the
    cursor names, in ``ordering``: a sort key and ``id`` as the tie-break, the order an
    index of the list keeps (``(tenant, -created_at, -id)`` for actions). The query is a
    range of that index, ``key <= v AND (key < v OR id < pk)``, so page 1,000 costs what
    page 1 costs; there is no total count (counting would read every row) and no page
    numbers, only ``next`` and ``previous`` links that keep the request's filters.
    A cursor names a position, not a page: rows added meanwhile never repeat or skip
    a row already seen. A cursor this list did not give out answers 400 naming ``cursor``.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering: tuple[str, ...] = ("-created_at", "-id")
    cursor_query_description = "Where the page starts: the value of `next` or `previous` of the previous answer."

    def paginate_queryset(self, queryset: QuerySet, request: Request, view=None) -> list[Model]:
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        position = self._decoded(request, queryset.model)
        backwards = bool(position and position["r"])
        order = [_flipped(term) for term in self.ordering] if backwards else list(self.ordering)
        queryset = queryset.order_by(*order)
        if position:
            queryset = queryset.filter(self._after(position, order))
        rows = list(queryset[: self.page_size + 1])
        more, rows = len(rows) > self.page_size, rows[: self.page_size]
        if backwards:
            rows.reverse()
        self.has_next = more if not backwards else True
        self.has_previous = more if backwards else position is not None
        self.page = rows
        return rows

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data})

    def get_next_link(self) -> str | None:
        if not self.has_next or not self.page:
            return None
        return self._link(self.page[-1], backwards=False)

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        if not self.page:  # past the end: back to the first page
            return remove_query_param(self.base_url, self.cursor_query_param)
        return self._link(self.page[0], backwards=True)

    def get_paginated_response_schema(self, schema: dict) -> dict:
        described = super().get_paginated_response_schema(schema)
        described["required"] = ["next", "previous", "results"]
        described["description"] = "A page of a keyset list: follow `next` until it is null (no total count)."
        return described

    def _link(self, row: Model, *, backwards: bool) -> str:
        key = self._names()[0]
        value = getattr(row, key)
        position = {"v": value.isoformat() if hasattr(value, "isoformat") else value, "id": row.pk, "r": int(backwards)}
        token = base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()
        return replace_query_param(self.base_url, self.cursor_query_param, token)

    def _names(self) -> list[str]:
        return [term.lstrip("-") for term in self.ordering]

    def _decoded(self, request: Request, model: type[Model]) -> dict[str, Any] | None:
        token = request.query_params.get(self.cursor_query_param)
        if not token:
            return None
        try:
            position = json.loads(base64.urlsafe_b64decode(token.encode()))
            position["v"] = model._meta.get_field(self._names()[0]).to_python(position["v"])
            position["id"] = int(position["id"])
            position["r"] = bool(position.get("r"))
        except (ValueError, TypeError, KeyError, binascii.Error, DjangoValidationError, UnicodeDecodeError):
            raise ValidationFailed(
                "The cursor is not one this list gave out; start again from the first page (no cursor).",
                details={"cursor": exceptions.ErrorDetail("not a cursor of this list.", "invalid_cursor")},
            ) from None
        if position["v"] is None:
            raise ValidationFailed("The cursor is empty.", details={"cursor": "not a cursor of this list."})
        return position

    def _after(self, position: dict[str, Any], order: list[str]) -> Q:
        """Rows strictly after ``position`` in ``order``, written so that the database
        reads them as one index range: ``key <= v`` bounds the scan, the rest decides ties."""
        names = [term.lstrip("-") for term in order]
        descending = order[0].startswith("-")
        strict, loose = ("lt", "lte") if descending else ("gt", "gte")
        if len(names) == 1:
            return Q(**{f"{names[0]}__{strict}": position["id"]})
        key, tie = names
        tie_strict = "lt" if order[1].startswith("-") else "gt"
        return Q(**{f"{key}__{loose}": position["v"]}) & (
            Q(**{f"{key}__{strict}": position["v"]}) | Q(**{f"{tie}__{tie_strict}": position["id"]})
        )


def _flipped(term: str) -> str:
    return term[1:] if term.startswith("-") else f"-{term}"


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
