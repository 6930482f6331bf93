"""Admin: alerts (open first), channels per tenant with a test button, watch settings, watches.

Every page presents what ``observability.services`` decides: acknowledging, resolving,
sending a test and saving settings call the services, which check roles and tenants.
Channel secrets are write-only: the form never shows a stored value, and an empty
secret field on an existing channel keeps what is stored.
"""

from __future__ import annotations

from django import forms
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
    AuditedForm,
    ReadOnlyAdminMixin,
    TenantScopedAdmin,
    TenantScopedHistoryAdmin,
    admin_link,
    badge,
    pretty_json,
    scope_for_user,
)
from budgetradar.errors import DomainError
from observability.channels import CONFIG_FIELDS, SECRET_FIELDS, ChannelConfigError, config_validate
from observability.models import (
    Alert,
    AlertStatus,
    Channel,
    ChannelKind,
    Delivery,
    ObservabilitySettings,
    Severity,
    Watch,
    WatchDay,
)
from observability.selectors import alerts_ordered
from observability.services.alerts import alert_acknowledge, alert_resolve, channel_send_test
from observability.services.settings import observability_settings_save

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


# Channels -----------------------------------------------------------------------------------


class ChannelForm(AuditedForm):
    """A channel's settings; the secrets are write-only fields merged into ``config``."""

    severities = forms.MultipleChoiceField(
        choices=Severity.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="Alerts of these severities go to this channel (e.g. critical to PagerDuty, warning to Slack).",
    )
    webhook_url = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label="Slack webhook URL",
        help_text="Slack: https://hooks.slack.com/services/T…/B…/…. Stored encrypted; leave empty to keep it.",
    )
    routing_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label="PagerDuty routing key",
        help_text="PagerDuty: the Events API v2 integration key. Stored encrypted; leave empty to keep it.",
    )
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label="PagerDuty REST API key (optional)",
    )
    recipients = forms.CharField(
        required=False, label="Email recipients", help_text="Email: comma-separated addresses."
    )
    url = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label="Webhook URL",
        help_text="Webhook: https://…",
    )
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label="Webhook signing secret",
        help_text="Webhook: at least 16 characters; the receiver verifies X-BudgetRadar-Signature with it.",
    )

    class Meta:
        model = Channel
        fields = ["tenant", "name", "kind", "severities", "is_active"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.kind == ChannelKind.EMAIL:
            self.initial["recipients"] = ", ".join(self.instance.config.get("recipients", []))

    def clean(self) -> dict:
        data = super().clean()
        kind = data.get("kind")
        if not kind:
            return data
        stored = dict(self.instance.config) if self.instance.pk and self.instance.kind == kind else {}
        given = {name: data.get(name) for name in CONFIG_FIELDS[kind]}
        merged = {**stored, **{k: v for k, v in given.items() if v not in (None, "") or k not in SECRET_FIELDS}}
        try:
            self.cleaned_config = config_validate(kind, merged)
        except ChannelConfigError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return data


@admin.register(Channel)
class ChannelAdmin(TenantScopedHistoryAdmin):
    """A tenant's alert channels; the change page has a "Send test alert" button."""

    form = ChannelForm
    list_display = ["name", "kind", "severity_list", "is_active", "updated_at"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name"]
    change_form_template = "admin/observability/channel/change_form.html"

    def get_fieldsets(self, request: HttpRequest, obj=None):
        base = super().get_fieldsets(request, obj)
        secrets = (
            "Delivery settings",
            {"fields": ["webhook_url", "routing_key", "api_key", "recipients", "url", "secret"]},
        )
        general = [(name, opts) for name, opts in base if name != "Audit"]
        audit = [(name, opts) for name, opts in base if name == "Audit"]
        for _name, opts in general:
            opts["fields"] = [f for f in opts["fields"] if f not in secrets[1]["fields"]]
        return [*general, secrets, *audit]

    @admin.display(description="Severities")
    def severity_list(self, channel: Channel) -> str:
        return ", ".join(channel.severities or []) or "none"

    def save_model(self, request: HttpRequest, obj: Channel, form: ChannelForm, change: bool) -> None:
        obj.config = form.cleaned_config
        super().save_model(request, obj, form, change)

    def get_urls(self):
        return [
            path("<int:pk>/test/", self.admin_site.admin_view(self.test_view), name="channel_test"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        channel = self.get_object(request, object_id)
        deliveries = list(
            channel.deliveries.select_related("alert").prefetch_related("attempt_rows").order_by("-id")[:20]
        )
        extra = {
            "deliveries": deliveries,
            "can_test": request.user.has_perm("observability.test_channel"),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra)

    def test_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        channel = self.get_object(request, str(pk))
        try:
            channel_send_test(channel=channel, actor=request.user)
            messages.success(request, f"Test alert queued for {channel.name}; its delivery attempts appear below.")
        except DomainError as exc:
            messages.error(request, exc.message)
        return HttpResponseRedirect(reverse("admin:observability_channel_change", args=[channel.pk]))


# Settings and watches ---------------------------------------------------------------------------


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
