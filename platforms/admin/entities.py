"""The entity mirror (campaigns, ad sets, ads, creatives as of the last sync), read-only,
with each entity's performance chart and the actions on it.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from actions.admin import RelatedActionsInline
from budgetradar.admin_base import AMBER, GREEN, GREY, ReadOnlyAdminMixin, TenantScopedAdmin, badge, format_money
from budgetradar.dashboard import entity_performance
from platforms.models import PlatformEntity

ENTITY_STATUS_TONES = {"active": GREEN, "paused": AMBER, "removed": GREY}


class EntityActionsInline(RelatedActionsInline):
    fk_name = "entity"
    verbose_name_plural = "Actions on this entity"


@admin.register(PlatformEntity)
class PlatformEntityAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """The mirror of campaigns, ad sets, ads and creatives, as of the last sync."""

    list_display = [
        "name",
        "entity_type",
        "external_id",
        "connection",
        "parent",
        "status_badge",
        "daily",
        "lifetime",
        "bid_amount",
        "budget_shared",
        "synced_at",
    ]
    list_select_related = ["connection", "parent"]
    list_filter = ["entity_type", "status", "connection__platform", "connection", "budget_shared"]
    search_fields = ["name", "external_id", "=id"]
    search_help_text = "Search by name, platform id or BudgetRadar id."
    inlines = [EntityActionsInline]
    # Money on the entity's page with its currency at the currency's precision, not "400.0000".
    readonly_fields = ["daily", "lifetime", "bid_amount"]
    MONEY_DISPLAYS = {"daily_budget": "daily", "lifetime_budget": "lifetime", "bid": "bid_amount"}

    def get_fields(self, request: HttpRequest, obj: PlatformEntity | None = None) -> list[str]:
        fields = [self.MONEY_DISPLAYS.get(f, f) for f in super().get_fields(request, obj)]
        return list(dict.fromkeys(fields))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        performance = entity_performance(self.get_object(request, object_id))
        extra_context = {**(extra_context or {}), "performance": performance, "charts": [performance.chart_data()]}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, entity: PlatformEntity):
        return badge(entity.status, ENTITY_STATUS_TONES.get(entity.status, GREY))

    @admin.display(description="Daily budget", ordering="daily_budget")
    def daily(self, entity: PlatformEntity) -> str:
        return format_money(entity.daily_budget, entity.connection.currency)

    @admin.display(description="Lifetime budget", ordering="lifetime_budget")
    def lifetime(self, entity: PlatformEntity) -> str:
        return format_money(entity.lifetime_budget, entity.connection.currency)

    @admin.display(description="Bid", ordering="bid")
    def bid_amount(self, entity: PlatformEntity) -> str:
        return format_money(entity.bid, entity.connection.currency)
