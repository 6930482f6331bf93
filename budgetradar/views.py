"""Small project-level views."""

from django.contrib import admin
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

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
