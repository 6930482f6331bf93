"""A tenant's alert channels with a Send test alert button; secrets are write-only fields
merged into the stored config, and an empty one keeps what is stored.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse

from budgetradar.admin_base import AuditedForm, TenantScopedHistoryAdmin
from budgetradar.errors import DomainError
from observability.channels import CONFIG_FIELDS, SECRET_FIELDS, ChannelConfigError, config_validate
from observability.models import Channel, ChannelKind, Severity
from observability.services.alerts import channel_send_test


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
