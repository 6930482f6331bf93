"""Middleware for what DRF never sees: request ids, body size, query strings, and error
pages that would otherwise be HTML.

``RequestIdMiddleware`` goes first: every request gets an id (the client's
``X-Request-ID`` when it is a short token, else a new one), every log line of the request
carries it, and every response returns it. ``ApiErrorMiddleware`` goes right after it and
keeps the API's promise that every error is JSON ``{code, message, errors?}``: a body over
the limit is a 413 before anyone reads it, a NUL in a query parameter is a 400 naming the
parameter, an exception no handler took is a logged JSON 500 with the request id (never a
traceback, also with DEBUG on), and any other non-JSON error answer under ``/api/`` (a
404 from the URL resolver, a CSRF 403) is rewritten into the error shape.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from budgetradar.api import body_too_large_body, error_body
from budgetradar.inputs import printable, text_problem
from budgetradar.logging import request_id_var
from budgetradar.tenancy import tenant_of

logger = logging.getLogger("budgetradar.request")

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    429: "throttled",
}


def is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


class RequestIdMiddleware:
    """Gives each request an id, puts it on its log lines and in ``X-Request-ID``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get("X-Request-ID", "")
        request.request_id = offered if _CLIENT_ID.match(offered) else uuid.uuid4().hex
        token = request_id_var.set(request.request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request.request_id
        return response


class ApiErrorMiddleware:
    """JSON errors under ``/api/`` for what happens outside DRF's exception handler."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_api(request):
            return self.get_response(request)
        refused = _refuse_early(request)
        response = refused if refused is not None else self.get_response(request)
        return _as_json_error(request, response)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api(request):
            return None
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse(body_too_large_body(request.META), status=413)
        return server_error_response(request, exception)


def _refuse_early(request: HttpRequest) -> JsonResponse | None:
    """413 for a declared body over the limit, 400 for a query parameter that cannot be text."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        message = "The Content-Length header is not a number."
        return JsonResponse(_field_error("bad_request", "Content-Length", message), status=400)
    if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return JsonResponse(body_too_large_body(request.META), status=413)
    for name, values in request.GET.lists():
        for value in [name, *values]:
            problem = text_problem(value)
            if problem is not None:
                what = "a NUL character" if problem == "nul" else "a lone surrogate"
                message = f"The query parameter {printable(name)!r} contains {what}; remove it."
                return JsonResponse(
                    _field_error("invalid", printable(name), message, item_code=f"{problem}_character"), status=400
                )
    return None


def _field_error(code: str, field: str, message: str, *, item_code: str | None = None) -> dict:
    return error_body(code, message, errors=[{"field": field, "code": item_code or code, "message": message}])


def server_error_response(request: HttpRequest, exception: BaseException | None) -> JsonResponse:
    """The JSON 500: logged with the traceback and the request id, answered without them."""
    request_id = getattr(request, "request_id", None) or uuid.uuid4().hex
    logger.error(
        "Unhandled error on %s %s (request id %s)",
        request.method,
        request.path,
        request_id,
        exc_info=(type(exception), exception, exception.__traceback__) if exception is not None else None,
        extra={"request_id": request_id},
    )
    message = (
        f"Something went wrong on our side (request id {request_id}). It has been logged; "
        "check whether the change was made before repeating it, and quote the id when you report it."
    )
    body = {**error_body("server_error", message), "request_id": request_id}
    return JsonResponse(body, status=500)


def _as_json_error(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """A 4xx/5xx answer that is not JSON, rewritten into the error shape."""
    if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
        return response
    if response.status_code >= 500:
        replacement = server_error_response(request, None)
    else:
        code = STATUS_CODES.get(response.status_code, "error")
        replacement = JsonResponse(error_body(code, _message_for(response.status_code)), status=response.status_code)
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            replacement[header] = response[header]
    return replacement


def _message_for(status_code: int) -> str:
    return {
        400: "The request is malformed.",
        403: "Forbidden: the request was refused (for a browser session, a CSRF token may be missing).",
        404: "Not found: no API endpoint has this URL; see /api/schema/.",
        405: "This method is not allowed here; see /api/schema/.",
        413: "The request body is larger than the limit.",
    }.get(status_code, "The request was refused.")


class TenantTimeZoneMiddleware:
    """Admin pages show moments in the signed-in member's tenant zone (platform staff: UTC).

    Django's date-time displays (list columns, read-only fields, the ``date`` filter) use
    the active zone and ``DATETIME_FORMAT`` (``Y-m-d H:i:s T``), so every such time on an
    admin page is in one zone, in one format, with the zone named. Moments that belong to
    one account (an action's run time) are formatted in that account's zone by
    ``budgetradar.timefmt.format_time``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = tenant_of(request.user) if request.path_info.startswith("/admin/") else None
        if tenant is None:
            return self.get_response(request)
        timezone.activate(tenant.time_zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
