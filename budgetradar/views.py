"""Small project-level views."""

from django.contrib import admin
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from budgetradar.dashboard import dashboard_for
from observability.selectors import alerts_needing_a_person


def home(request: HttpRequest) -> HttpResponse:
    return redirect("admin:index")


def health(request: HttpRequest) -> JsonResponse:
    """200 when the database answers; used by load balancers and the README check."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def admin_dashboard(request: HttpRequest) -> HttpResponse:
    """The admin home: presents ``budgetradar.dashboard.dashboard_for`` (the rules live there)."""
    board = dashboard_for(request.user)
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "subtitle": None,
        "dashboard": board,
        "charts": [p.chart_data() for p in board.performance],
        "alerts": _alerts(request),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def _alerts(request: HttpRequest) -> list:
    return alerts_needing_a_person(request.user) if request.user.has_perm("observability.view_alert") else []


def _back_url(request: HttpRequest) -> str:
    """Where "Back" leads: the page the person came from on this site, else the admin home."""
    referer = request.META.get("HTTP_REFERER", "")
    if referer and url_has_allowed_host_and_scheme(referer, {request.get_host()}, require_https=request.is_secure()):
        return referer
    return reverse("admin:index")


def _error_page(request: HttpRequest, template: str, status: int, reason: str) -> HttpResponse:
    context = {**admin.site.each_context(request), "reason": reason, "back_url": _back_url(request)}
    return TemplateResponse(request, template, context, status=status).render()


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """403 in the admin's style: the reason (the refusal's message), a way back."""
    reason = str(exception) or "Your role does not allow this page."
    return _error_page(request, "403.html", 403, reason)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 in the admin's style. It never says whether another tenant has such a row."""
    message = exception.args[0] if exception.args and isinstance(exception.args[0], str) else ""
    return _error_page(request, "404.html", 404, message or "There is no page at this address.")
