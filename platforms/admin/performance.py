"""Daily delivery per entity, read-only, money in the account's currency."""

from __future__ import annotations

from django.contrib import admin

from budgetradar.admin_base import EMPTY, ReadOnlyAdminMixin, TenantScopedAdmin, format_money
from platforms.models import EntityPerformanceDaily


@admin.register(EntityPerformanceDaily)
class EntityPerformanceDailyAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """Daily delivery per entity, in the account's currency."""

    list_display = [
        "date",
        "entity",
        "spend_amount",
        "impressions",
        "clicks",
        "ctr",
        "conversions",
        "revenue_amount",
        "roas",
    ]
    list_select_related = ["entity__connection"]
    list_filter = ["entity__connection", "entity__entity_type"]
    search_fields = ["entity__name", "entity__external_id"]
    date_hierarchy = "date"
    list_per_page = 100

    @admin.display(description="Spend", ordering="spend")
    def spend_amount(self, row: EntityPerformanceDaily) -> str:
        return format_money(row.spend, row.entity.connection.currency)

    @admin.display(description="Revenue", ordering="revenue")
    def revenue_amount(self, row: EntityPerformanceDaily) -> str:
        return format_money(row.revenue, row.entity.connection.currency)

    @admin.display(description="CTR")
    def ctr(self, row: EntityPerformanceDaily) -> str:
        return f"{row.clicks / row.impressions:.2%}" if row.impressions else EMPTY

    @admin.display(description="ROAS")
    def roas(self, row: EntityPerformanceDaily) -> str:
        return f"{row.revenue / row.spend:.2f}" if row.spend else EMPTY
