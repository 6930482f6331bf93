"""Per-entity budget bounds and locks the planner respects, money in the account's currency."""

from __future__ import annotations

from django.contrib import admin

from budgetradar.admin_base import TenantScopedHistoryAdmin, format_money
from planning.models import EntityConstraint


@admin.register(EntityConstraint)
class EntityConstraintAdmin(TenantScopedHistoryAdmin):
    list_display = ["entity", "connection", "min_budget", "max_budget", "locked", "note"]
    list_select_related = ["entity", "connection"]
    autocomplete_fields = []
    raw_id_fields = ["entity"]

    @admin.display(description="Min daily budget", ordering="min_daily_budget")
    def min_budget(self, obj: EntityConstraint) -> str:
        return format_money(obj.min_daily_budget, obj.connection.currency)

    @admin.display(description="Max daily budget", ordering="max_daily_budget")
    def max_budget(self, obj: EntityConstraint) -> str:
        return format_money(obj.max_daily_budget, obj.connection.currency)

    def save_model(self, request, obj, form, change):
        obj.connection_id = obj.entity.connection_id
        obj.tenant_id = obj.entity.tenant_id
        super().save_model(request, obj, form, change)
