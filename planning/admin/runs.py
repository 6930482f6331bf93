"""Planner runs, read-only, with the allocation and curve charts and the reasoning per entity."""

from __future__ import annotations

from django.contrib import admin

from budgetradar.admin_base import (
    AMBER,
    GREEN,
    GREY,
    RED,
    ReadOnlyAdminMixin,
    TenantScopedAdmin,
    admin_link,
    pretty_json,
)
from planning.models import PlannerRun
from planning.services.charts import allocation_chart, curve_charts

LIGHT_TONES = {"green": GREEN, "yellow": AMBER, "red": RED, "grey": GREY}


@admin.register(PlannerRun)
class PlannerRunAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    list_display = [
        "id",
        "connection",
        "local_date",
        "trigger",
        "status",
        "mode",
        "outcome",
        "fallback_level",
        "created_at",
    ]
    list_filter = ["status", "outcome", "mode", "trigger", "fallback_level"]
    list_select_related = ["connection"]
    change_form_template = "admin/planning/plannerrun/change_form.html"
    fields = [
        "connection",
        "local_date",
        "trigger",
        "status",
        "attempts",
        "mode",
        "outcome",
        "outcome_message",
        "fallback_level",
        "date_from",
        "date_to",
        "data_hash",
        "scenario_link",
        "deployment_link",
        "error_message",
        "shadow_json",
        "summary_json",
    ]
    readonly_fields = fields

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("planning.view_plannerrun")

    @admin.display(description="Scenario")
    def scenario_link(self, obj: PlannerRun):
        return admin_link(obj.scenario)

    @admin.display(description="Deployment")
    def deployment_link(self, obj: PlannerRun):
        return admin_link(obj.deployment)

    @admin.display(description="Shadow comparison")
    def shadow_json(self, obj: PlannerRun):
        return pretty_json(obj.shadow)

    @admin.display(description="Summary")
    def summary_json(self, obj: PlannerRun):
        return pretty_json(obj.summary)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        rows = [{**r, "tone": LIGHT_TONES.get(r["light_after"], GREY)} for r in (run.reasoning or [])]
        extra = {
            "allocation": allocation_chart(run),
            "curves": curve_charts(run),
            "reasoning_rows": rows[:500],
            "reasoning_total": len(rows),
        }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})
