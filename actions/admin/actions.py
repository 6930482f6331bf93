"""The action admin: the list, the change page with its timeline and gate, and the confirmation flow.

Its parts live in their own modules: ``fields`` (columns and read-only fields), ``gate``
(the safety gate's section and buttons) and ``confirmation`` (the operations' bulk
actions, buttons and confirmation pages); this module puts them together with the list,
the fieldsets, the permissions and the URLs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse

from actions.admin.confirmation import ActionConfirmationMixin
from actions.admin.fields import ActionFieldsMixin
from actions.admin.gate import ActionGateMixin
from actions.admin.inlines import ExecutionLogInline
from actions.admin.operations import OPERATIONS
from actions.admin.presentation import ACTION_RELATED, REFRESH_SECONDS
from actions.models import IN_MOTION, Action
from actions.selectors import actions_needing_attention
from budgetradar.admin_base import DATE_FILTER, TenantScopedHistoryAdmin


class AttentionFilter(admin.SimpleListFilter):
    """Actions a person may want to look at: parked, being reconciled, or stuck."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin):
        return [
            ("parked", "Waiting for a later attempt"),
            ("reconciling", "Awaiting reconciliation"),
            ("stuck", f"Blocking its entity over {settings.ENGINE_STUCK_AFTER_MINUTES} minutes"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return actions_needing_attention(queryset, self.value()) if self.value() else queryset


@admin.register(Action)
class ActionAdmin(ActionFieldsMixin, ActionGateMixin, ActionConfirmationMixin, TenantScopedHistoryAdmin):
    """Every change to every entity, with its lifecycle, state, errors and timeline."""

    list_display = [
        "number",
        "status_badge",
        "entity_display",
        "platform",
        "action_type",
        "change_summary",
        "proposed_by",
        "approved_by",
        "created_at",
        "approved_at",
    ]
    list_display_links = ["number"]
    list_select_related = ["entity", "connection", "proposed_by", "approved_by"]
    list_filter = ["status", AttentionFilter, "platform", "action_type", "connection", DATE_FILTER]
    search_fields = ["=id", "entity__name", "entity__external_id"]
    search_help_text = "Search by action id, entity name or platform id."
    actions = ["approve_selected", "reject_selected", "cancel_selected", "execute_selected", "rollback_selected"]
    inlines = [ExecutionLogInline]
    readonly_fields = [
        "status_badge",
        "entity_link",
        "connection",
        "platform",
        "action_type",
        "change_summary",
        "params_display",
        "rationale",
        "proposer",
        "approver",
        "decided_reason",
        "state_table",
        "before_after",
        "when_display",
        "gate_display",
        "rollback_deadline_display",
        "rollback_display",
        "rollback_requester",
        "rollback_reason",
        "rollback_override_drift",
        "error_kind",
        "error_message",
        "error_retryable",
        "error_hint",
        "waiting_display",
        "job",
        "deployment_link",
        "attempts",
        "idempotency_key",
        "created_at",
        "approved_at",
        "queued_at",
        "started_at",
        "finished_at",
        "rolled_back_at",
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Action | None = None):
        fieldsets = [
            (
                None,
                {"fields": ["status_badge", "entity_link", "connection", "platform", "action_type", "change_summary"]},
            ),
            (
                "Why and who",
                {"fields": ["rationale", "params_display", "proposer", "approver", "decided_reason"]},
            ),
            ("Safety gate", {"fields": ["when_display", "gate_display"]}),
            (
                "State and rollback",
                {
                    "fields": [
                        "before_after",
                        "state_table",
                        "rollback_deadline_display",
                        "rollback_display",
                        "rollback_requester",
                        "rollback_reason",
                        "rollback_override_drift",
                    ]
                },
            ),
            ("Execution", {"fields": ["waiting_display", "job", "deployment_link", "attempts", "idempotency_key"]}),
            (
                "Timing",
                {"fields": ["created_at", "approved_at", "queued_at", "started_at", "finished_at", "rolled_back_at"]},
            ),
        ]
        if obj is not None and obj.error_code:
            fieldsets.insert(1, ("Error", {"fields": ["error_kind", "error_message", "error_retryable", "error_hint"]}))
        if obj is None or not obj.rollback_override_drift:  # only worth a line when someone did override
            for _name, options in fieldsets:
                options["fields"] = [f for f in options["fields"] if f != "rollback_override_drift"]
        return fieldsets

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related(*ACTION_RELATED, "recommendation", "rollback_requested_by")

    # Actions change only through services.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Action | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Action | None = None) -> bool:
        return False

    # Object buttons -----------------------------------------------------------------------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        action = self.get_object(request, object_id)
        buttons = [
            {"name": op.name, "label": op.label, "url": self._url(op.name, action.pk)}
            for op in OPERATIONS.values()
            if op.possible(action) and request.user.has_perm(op.perm)
        ]
        extra_context = {
            **(extra_context or {}),
            "operation_buttons": buttons,
            "gate": self._gate(request, action),
            # Only while a worker moves it on; a settled action's page stays put.
            "in_motion": action is not None and action.status in IN_MOTION,
            "refresh_seconds": REFRESH_SECONDS,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        view = self.admin_site.admin_view
        name = self._url_name
        return [
            # Before the operations: "<id>/override/<n>/approve/" would otherwise match "approve".
            path(
                "<path:object_id>/override/<int:override_id>/approve/",
                view(self.override_approve_view),
                name=name("override_approve"),
            ),
            path("<path:object_id>/override/", view(self.override_request_view), name=name("override_request")),
            path("<path:object_id>/preflight/", view(self.preflight_view), name=name("preflight")),
            *(
                path(f"<path:object_id>/{op}/", view(self.operation_view), {"operation": op}, name=name(op))
                for op in OPERATIONS
            ),
            path("confirm/<str:token>/", view(self.confirm_view), name=name("confirm")),
            path("confirm/<str:token>/result/", view(self.result_view), name=name("result")),
            *super().get_urls(),
        ]

    @staticmethod
    def _url_name(suffix: str) -> str:
        return f"actions_action_{suffix}"

    def _url(self, suffix: str, *args: Any) -> str:
        return reverse(f"admin:{self._url_name(suffix)}", args=args)
