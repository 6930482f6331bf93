"""A connection's automation settings (changed only through ``automation_update``), the
planner breaker reset and Run now actions, and the rollout page with its evidence and
promotion.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from budgetradar.admin_base import GREEN, RED, AuditedForm, TenantScopedHistoryAdmin, badge, change_reason_for
from budgetradar.errors import DomainError
from budgetradar.timefmt import format_time
from planning.models import AutomationSettings, RolloutStep
from planning.services.automation import EDITABLE, automation_update, breaker_reset
from planning.services.rollout import rollout_evidence, rollout_promote
from planning.services.runs import planner_run_request


class AutomationSettingsForm(AuditedForm):
    consent_reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Needed when you switch autopilot on: your name, the time and this reason are recorded.",
    )

    class Meta:
        model = AutomationSettings
        fields = [*EDITABLE]


@admin.register(AutomationSettings)
class AutomationSettingsAdmin(TenantScopedHistoryAdmin):
    form = AutomationSettingsForm
    list_display = ["connection", "mode", "rollout_step", "breaker", "consent_by", "updated_at"]
    list_select_related = ["connection", "consent_by"]
    readonly_fields = [
        "connection",
        "consent_by",
        "consent_at",
        "consent_reason_given",
        "breaker_state",
        "rollout_link",
    ]
    actions = ["reset_breaker", "run_now"]

    def get_fields(self, request, obj=None):
        return [
            "connection",
            *EDITABLE,
            "consent_reason",
            "change_reason",
            "consent_by",
            "consent_at",
            "consent_reason_given",
            "breaker_state",
            "rollout_link",
        ]

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # created with the connection's first use (service)

    @admin.display(description="Breaker")
    def breaker(self, obj: AutomationSettings):
        return badge("open", RED) if obj.breaker_open else badge("closed", GREEN)

    @admin.display(description="Breaker state")
    def breaker_state(self, obj: AutomationSettings) -> str:
        if not obj.breaker_open:
            return f"closed ({obj.consecutive_failed_runs} consecutive failed runs)"
        return f"open since {format_time(obj.breaker_opened_at, obj.connection.time_zone)}: {obj.breaker_reason}"

    @admin.display(description="Consent reason")
    def consent_reason_given(self, obj: AutomationSettings) -> str:
        return obj.consent_reason or "—"

    @admin.display(description="Rollout")
    def rollout_link(self, obj: AutomationSettings):
        return _rollout_anchor(obj)

    def save_model(self, request: HttpRequest, obj: AutomationSettings, form, change: bool) -> None:
        original = AutomationSettings.objects.get(pk=obj.pk)
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in EDITABLE}
        updated = automation_update(
            automation=original,
            actor=request.user,
            changes=changes,
            consent_reason=form.cleaned_data.get("consent_reason", ""),
            reason=change_reason_for(form, change=change),
        )
        obj.__dict__.update(updated.__dict__)

    @admin.action(description="Reset the planner breaker of the selected connections")
    def reset_breaker(self, request: HttpRequest, queryset) -> None:
        for automation in queryset:
            try:
                breaker_reset(automation=automation, actor=request.user, reason="reset in the admin")
                self.message_user(request, f"{automation.connection.name}: planner breaker reset.")
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)

    @admin.action(description="Run the planner now for the selected connections")
    def run_now(self, request: HttpRequest, queryset) -> None:
        for automation in queryset:
            try:
                run = planner_run_request(connection=automation.connection, actor=request.user)
                self.message_user(request, f"{automation.connection.name}: planner run #{run.pk} queued.")
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)

    def get_urls(self):
        return [
            path("<path:object_id>/rollout/", self.admin_site.admin_view(self.rollout_view), name="planning_rollout"),
            *super().get_urls(),
        ]

    def rollout_view(self, request: HttpRequest, object_id: str):
        automation = get_object_or_404(self.get_queryset(request), pk=object_id)
        if request.method == "POST":
            try:
                step = rollout_promote(automation=automation, actor=request.user, reason=request.POST.get("reason", ""))
                self.message_user(request, f"Rollout promoted to {step.get_step_display()}.")
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(request.path)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Autopilot rollout of {automation.connection.name}",
            "automation": automation,
            "evidence": rollout_evidence(automation),
            "steps": RolloutStep.objects.filter(connection=automation.connection).select_related("promoted_by"),
            "can_promote": request.user.has_perm("planning.promote_rollout"),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/planning/automationsettings/rollout.html", context)


def _rollout_anchor(obj: AutomationSettings):
    return format_html(
        '<a href="{}">Rollout evidence and promotion</a>', reverse("admin:planning_rollout", args=[obj.pk])
    )
