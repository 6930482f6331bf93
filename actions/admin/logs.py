"""The execution log: append-only evidence, newest first."""

from __future__ import annotations

from django.contrib import admin
from django.utils.text import Truncator

from actions.admin.presentation import (
    EVENT_TONES,
)
from actions.models import (
    ActionExecutionLog,
)
from actions.selectors import (
    TIMELINE_ORDER,
    log_request_id,
)
from budgetradar.admin_base import (
    BLUE,
    DATE_FILTER,
    EMPTY,
    ReadOnlyAdminMixin,
    TenantScopedAdmin,
    admin_link,
    badge,
    pretty_json,
)
from budgetradar.words import actor_display


@admin.register(ActionExecutionLog)
class ActionExecutionLogAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """The append-only evidence of every event and platform call. Nobody can add,
    change or delete a row here, superusers included."""

    list_display = ["created_at", "event_badge", "action_link", "job", "actor_name", "summary", "request_id"]
    list_select_related = ["action__entity", "job__connection"]
    list_filter = ["event", "action__platform", DATE_FILTER]
    search_fields = ["=action__id", "message", "actor", "platform_request_id"]
    list_per_page = 100
    ordering = list(TIMELINE_ORDER)
    fields = [
        "created_at",
        "event_badge",
        "action_link",
        "job",
        "actor_name",
        "message",
        "request_id",
        "request_display",
        "response_display",
        "snapshot_display",
        "error_display",
    ]

    @admin.display(description="Event", ordering="event")
    def event_badge(self, entry: ActionExecutionLog):
        return badge(entry.get_event_display(), EVENT_TONES.get(entry.event, BLUE))

    @admin.display(description="Action", ordering="action")
    def action_link(self, entry: ActionExecutionLog):
        action = entry.action
        return admin_link(action, f"#{action.pk} on {action.entity.name}") if action else EMPTY

    @admin.display(description="By", ordering="actor")
    def actor_name(self, entry: ActionExecutionLog) -> str:
        return actor_display(entry.actor)

    @admin.display(description="Platform request id", ordering="platform_request_id")
    def request_id(self, entry: ActionExecutionLog) -> str:
        return log_request_id(entry) or EMPTY

    @admin.display(description="Message")
    def summary(self, entry: ActionExecutionLog) -> str:
        return Truncator(entry.message).chars(100) or EMPTY

    @admin.display(description="Request")
    def request_display(self, entry: ActionExecutionLog):
        return pretty_json(entry.request)

    @admin.display(description="Response")
    def response_display(self, entry: ActionExecutionLog):
        return pretty_json(entry.response)

    @admin.display(description="State snapshot")
    def snapshot_display(self, entry: ActionExecutionLog):
        return pretty_json(entry.state_snapshot)

    @admin.display(description="Error")
    def error_display(self, entry: ActionExecutionLog):
        return pretty_json(entry.error)
