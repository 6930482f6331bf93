"""The planner's read-only records: curve fits, the decision log and ingestion runs."""

from __future__ import annotations

from django.contrib import admin

from budgetradar.admin_base import ReadOnlyAdminMixin, TenantScopedAdmin
from planning.models import CurveFit, DecisionLogEntry, IngestionRun


@admin.register(CurveFit)
class CurveFitAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    list_display = ["entity", "status", "confidence", "r_squared", "days_used", "date_from", "date_to", "created_at"]
    list_filter = ["status", "confidence"]
    list_select_related = ["entity"]

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("planning.view_curvefit")


@admin.register(DecisionLogEntry)
class DecisionLogAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    list_display = ["created_at", "connection", "kind", "mode", "fallback_level", "actor", "retain_until"]
    list_filter = ["kind", "mode"]
    list_select_related = ["connection"]

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("planning.view_decisionlogentry")


@admin.register(IngestionRun)
class IngestionRunAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    list_display = ["connection", "local_date", "status", "since", "until", "rows", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["connection"]

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("planning.view_ingestionrun")
