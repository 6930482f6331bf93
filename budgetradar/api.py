"""API plumbing shared by every app: pagination, error shape, tenant-scoped base view."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.views import exception_handler as drf_exception_handler

from budgetradar.errors import DomainError, PermissionDenied, ValidationFailed
from budgetradar.idempotency import clean_key


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def _code_for(exc: Exception) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "invalid"
    return getattr(exc, "default_code", "error")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error is JSON ``{"code": ..., "message": ..., "errors"?: ...}``.

    Domain errors raised by services carry their own HTTP status (402, 403, 404, 409).
    """
    if isinstance(exc, DomainError):
        body = {"code": exc.code, "message": exc.message}
        if exc.details:
            body["errors" if isinstance(exc, ValidationFailed) else "details"] = exc.details
        return Response(body, status=exc.http_status)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {
            "code": "invalid",
            "message": "The request is invalid; see errors for each field.",
            "errors": response.data,
        }
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"code": _code_for(exc), "message": str(response.data["detail"])}
    if response.status_code == status.HTTP_404_NOT_FOUND:
        response.data = {"code": "not_found", "message": "Not found."}
    return response


class TenantScopedMixin:
    """Narrows ``queryset`` to the requesting user's tenant; other tenants' ids are 404."""

    tenant_field = "tenant"

    def get_queryset(self):
        from budgetradar.tenancy import scope_to_user

        return scope_to_user(super().get_queryset(), self.request.user, tenant_field=self.tenant_field)


def tenant_for_request(request):
    """The tenant the requesting user acts for; platform staff must act as a member."""
    from budgetradar.tenancy import tenant_of

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
