"""Read-only inlines: related actions and an action's timeline."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator

from actions.admin.presentation import (
    ACTION_RELATED,
    EVENT_TONES,
    action_change,
    status_badge,
)
from actions.models import (
    Action,
    ActionExecutionLog,
)
from actions.selectors import (
    TIMELINE_ORDER,
    log_request_id,
    log_wait_text,
)
from budgetradar.admin_base import (
    BLUE,
    EMPTY,
    admin_link,
    badge,
)
from budgetradar.timefmt import format_time
from budgetradar.words import actor_display


class ReadOnlyInline(admin.TabularInline):
    """An inline that lists rows and never offers to add, change or delete them."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RelatedActionsInline(ReadOnlyInline):
    """Actions linked to the page's object, newest first."""

    model = Action
    fields = ["action", "status_badge", "change_summary", "proposed_by", "approved_by", "created_at"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related(*ACTION_RELATED)

    @admin.display(description="Action")
    def action(self, action: Action):
        return admin_link(action, f"#{action.pk} {action.get_action_type_display()}")

    @admin.display(description="Status")
    def status_badge(self, action: Action):
        return status_badge(action)

    @admin.display(description="Change")
    def change_summary(self, action: Action) -> str:
        return action_change(action)


class RecommendationActionsInline(RelatedActionsInline):
    fk_name = "recommendation"
    verbose_name_plural = "Action proposed by this recommendation"


class JobActionsInline(RelatedActionsInline):
    fk_name = "job"
    verbose_name_plural = "Actions in this job"


class ExecutionLogInline(ReadOnlyInline):
    """The action's timeline: every event, attempt, wait and platform call, newest first,
    each at its moment in the account's zone."""

    model = ActionExecutionLog
    fk_name = "action"
    verbose_name_plural = "Timeline (execution log, newest first)"
    fields = ["when", "event_badge", "actor_name", "message", "wait", "error_summary", "request_id"]
    readonly_fields = fields
    ordering = list(TIMELINE_ORDER)
    show_change_link = True
    template = "admin/actions/action/timeline_inline.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("action__connection")

    @admin.display(description="When")
    def when(self, entry: ActionExecutionLog) -> str:
        return format_time(entry.created_at, entry.action.connection.time_zone)

    @admin.display(description="By")
    def actor_name(self, entry: ActionExecutionLog) -> str:
        return actor_display(entry.actor)

    @admin.display(description="Event")
    def event_badge(self, entry: ActionExecutionLog):
        return badge(entry.get_event_display(), EVENT_TONES.get(entry.event, BLUE))

    @admin.display(description="Wait")
    def wait(self, entry: ActionExecutionLog) -> str:
        return log_wait_text(entry) or EMPTY

    @admin.display(description="Platform request id")
    def request_id(self, entry: ActionExecutionLog) -> str:
        return log_request_id(entry) or EMPTY

    @admin.display(description="Error")
    def error_summary(self, entry: ActionExecutionLog) -> str:
        if not entry.error:
            return EMPTY
        if isinstance(entry.error, dict):
            return Truncator(entry.error.get("message") or entry.error.get("code") or entry.error).chars(160)
        return Truncator(entry.error).chars(160)
