"""API plumbing shared by every app: pagination, error shape, tenant-scoped base view."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from budgetradar.errors import DomainError


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
            body["details"] = exc.details
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
