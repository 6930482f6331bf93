"""The tenant's watch settings (saved through the settings service) and the watched
changes with their days, read-only: the schedule evaluates them.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from budgetradar.admin_base import ReadOnlyAdminMixin, TenantScopedAdmin, TenantScopedHistoryAdmin
from observability.models import ObservabilitySettings, Watch, WatchDay
from observability.services.settings import observability_settings_save


@admin.register(ObservabilitySettings)
class ObservabilitySettingsAdmin(TenantScopedHistoryAdmin):
    """The tenant's watch mode, thresholds and anomaly bounds."""

    list_display = ["tenant", "watch_mode", "watch_days", "conversions_drop_pct", "cpa_rise_pct", "updated_at"]
    readonly_fields = ["autopilot_consent_at"]

    def save_model(self, request: HttpRequest, obj: ObservabilitySettings, form, change: bool) -> None:
        observability_settings_save(row=obj, actor=request.user)


class WatchDayInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WatchDay
    fields = [
        "date",
        "status",
        "conversions",
        "baseline_conversions",
        "conversions_change_pct",
        "cpa",
        "baseline_cpa",
        "cpa_change_pct",
        "circuit_openings_7d",
        "breaches",
    ]
    readonly_fields = fields
    extra = 0


@admin.register(Watch)
class WatchAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """Every watched change with its days; read-only (the schedule evaluates)."""

    list_display = ["__str__", "connection", "status", "change_date", "watch_days", "triggered_at"]
    list_filter = ["status", "connection"]
    list_select_related = ["connection"]
    inlines = [WatchDayInline]
    fields = [
        "connection",
        "deployment",
        "action",
        "status",
        "changed_at",
        "change_date",
        "time_zone",
        "watch_days",
        "baseline_weeks",
        "trigger_code",
        "trigger_reason",
        "triggered_at",
        "restoring_scenario",
        "restoring_deployment",
        "restore_note",
    ]
    readonly_fields = fields

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm("observability.view_watch")
