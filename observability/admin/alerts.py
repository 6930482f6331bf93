"""Alerts, open first, with their deliveries; acknowledge and resolve (from the list or the
alert's page) call the alert services, which check roles and tenants.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from budgetradar.admin_base import (
    AMBER,
    BLUE,
    GREEN,
    GREY,
    RED,
    ReadOnlyAdminMixin,
    TenantScopedAdmin,
    admin_link,
    badge,
    pretty_json,
    scope_for_user,
)
from budgetradar.errors import DomainError
from observability.models import Alert, AlertStatus, Delivery, Severity
from observability.selectors import alerts_ordered
from observability.services.alerts import alert_acknowledge, alert_resolve

SEVERITY_TONES = {Severity.CRITICAL: RED, Severity.WARNING: AMBER, Severity.INFO: BLUE}


STATUS_TONES = {AlertStatus.OPEN: RED, AlertStatus.ACKNOWLEDGED: AMBER, AlertStatus.RESOLVED: GREEN}


class DeliveryInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Delivery
    fields = ["channel", "event", "status", "attempts", "next_attempt_at", "sent_at", "last_error"]
    readonly_fields = fields
    extra = 0
    ordering = ["id"]


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """Alerts, open first; acknowledge and resolve from the list or the alert's page."""

    list_display = ["severity_badge", "title", "kind", "status_badge", "connection", "last_seen_at", "occurrences"]
    list_display_links = ["title"]
    list_filter = ["status", "severity", "kind", "connection"]
    list_select_related = ["connection"]
    search_fields = ["title", "message", "dedup_key"]
    actions = ["acknowledge_selected", "resolve_selected"]
    inlines = [DeliveryInline]
    change_form_template = "admin/observability/alert/change_form.html"
    fields = [
        "severity",
        "kind",
        "status",
        "title",
        "message",
        "subject",
        "first_seen_at",
        "last_seen_at",
        "occurrences",
        "acknowledged_by",
        "acknowledged_at",
        "resolved_by",
        "resolved_at",
        "resolution",
        "details_json",
        "dedup_key",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest):
        # Annotated before any ordering: ModelAdmin.get_queryset would order by the ranks first.
        return scope_for_user(alerts_ordered(Alert.objects.all()), request.user)

    def get_ordering(self, request: HttpRequest) -> list[str]:
        return ["status_rank", "severity_rank", "-last_seen_at", "-id"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm("observability.view_alert")

    @admin.display(description="Severity", ordering="severity_rank")
    def severity_badge(self, alert: Alert):
        return badge(alert.get_severity_display(), SEVERITY_TONES.get(alert.severity, GREY))

    @admin.display(description="Status", ordering="status_rank")
    def status_badge(self, alert: Alert):
        return badge(alert.get_status_display(), STATUS_TONES.get(alert.status, GREY))

    @admin.display(description="About")
    def subject(self, alert: Alert):
        links = [admin_link(o) for o in (alert.connection, alert.deployment, alert.action) if o is not None]
        return format_html(" · ".join(["{}"] * len(links)), *links) if links else "—"

    @admin.display(description="Details")
    def details_json(self, alert: Alert):
        return pretty_json(alert.details)

    def get_urls(self):
        return [
            path("<int:pk>/acknowledge/", self.admin_site.admin_view(self.acknowledge_view), name="alert_acknowledge"),
            path("<int:pk>/resolve/", self.admin_site.admin_view(self.resolve_view), name="alert_resolve"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        alert = self.get_object(request, object_id)
        extra = {
            "can_acknowledge": alert.status == AlertStatus.OPEN
            and request.user.has_perm("observability.acknowledge_alert"),
            "can_resolve": alert.is_active and request.user.has_perm("observability.resolve_alert"),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra)

    def acknowledge_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self._act(request, pk, lambda alert: alert_acknowledge(alert=alert, actor=request.user), "acknowledged")

    def resolve_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        reason = request.POST.get("reason", "").strip()
        return self._act(
            request, pk, lambda alert: alert_resolve(alert=alert, actor=request.user, reason=reason), "resolved"
        )

    def _act(self, request: HttpRequest, pk: int, service, done: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        alert = self.get_object(request, str(pk))
        try:
            service(alert)
            messages.success(request, f"Alert “{alert.title}” {done}.")
        except DomainError as exc:
            messages.error(request, exc.message)
        return HttpResponseRedirect(reverse("admin:observability_alert_change", args=[alert.pk]))

    @admin.action(description="Acknowledge selected alerts")
    def acknowledge_selected(self, request: HttpRequest, queryset) -> None:
        self._bulk(request, queryset, lambda a: alert_acknowledge(alert=a, actor=request.user), "acknowledged")

    @admin.action(description="Resolve selected alerts")
    def resolve_selected(self, request: HttpRequest, queryset) -> None:
        self._bulk(request, queryset, lambda a: alert_resolve(alert=a, actor=request.user), "resolved")

    def _bulk(self, request: HttpRequest, queryset, service, done: str) -> None:
        count = 0
        for alert in queryset:
            try:
                service(alert)
                count += 1
            except DomainError as exc:
                messages.error(request, exc.message)
                return
        messages.success(request, f"{count} alert{'s' if count != 1 else ''} {done}.")
