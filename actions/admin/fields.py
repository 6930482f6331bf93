"""The action page's columns and read-only fields: what the list and the change page show."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from actions.admin.presentation import action_change, change_targets, gate_summary, status_badge
from actions.models import Action
from actions.selectors import action_wait_state, when_texts
from actions.services.rollback_preview import FIELD_LABELS, rollback_deadline_text
from actions.services.rollback_preview import show_value as _show
from actions.services.verification import same_value
from budgetradar.admin_base import EMPTY, admin_link, pretty_json
from budgetradar.words import error_label
from platforms.types import Field


class ActionFieldsMixin:
    """Columns and read-only fields of ``ActionAdmin`` (each a ``readonly_fields`` name)."""

    @admin.display(description="Error")
    def error_kind(self, action: Action) -> str:
        return error_label(action.error_code) if action.error_code else EMPTY

    @admin.display(description="Waiting for")
    def waiting_display(self, action: Action) -> str:
        return action_wait_state(action) or "—"

    @admin.display(description="#", ordering="id")
    def number(self, action: Action) -> str:
        return f"#{action.pk}"

    @admin.display(description="Status", ordering="status")
    def status_badge(self, action: Action):
        return status_badge(action)

    @admin.display(description="Entity", ordering="entity__name")
    def entity_display(self, action: Action):
        entity = action.entity
        return format_html('{}<div class="help">{} {}</div>', entity.name, entity.entity_type, entity.external_id)

    @admin.display(description="Entity")
    def entity_link(self, action: Action):
        entity = action.entity
        return format_html("{} ({} {})", admin_link(entity, entity.name), entity.entity_type, entity.external_id)

    @admin.display(description="Change")
    def change_summary(self, action: Action) -> str:
        return action_change(action)

    @admin.display(description="Params")
    def params_display(self, action: Action):
        return pretty_json(action.params)

    @admin.display(description="What will happen")
    def when_display(self, action: Action) -> str:
        return when_texts([action])[action.pk] or EMPTY

    @admin.display(description="Guardrails")
    def gate_display(self, action: Action) -> str:
        return gate_summary(action)

    @admin.display(description="Rationale")
    def rationale(self, action: Action) -> str:
        return action.recommendation.rationale if action.recommendation and action.recommendation.rationale else EMPTY

    # People are shown by name: links would lead tenant members to the user admin they may not see.
    @admin.display(description="Proposed by")
    def proposer(self, action: Action) -> str:
        return str(action.proposed_by or "an optimizer")

    @admin.display(description="Approved by")
    def approver(self, action: Action) -> str:
        return str(action.approved_by or EMPTY)

    @admin.display(description="Rollback requested by")
    def rollback_requester(self, action: Action) -> str:
        return str(action.rollback_requested_by or EMPTY)

    @admin.display(description="Rollback instructions")
    def rollback_display(self, action: Action):
        return pretty_json(action.rollback_params)

    @admin.display(description="Before → after")
    def before_after(self, action: Action):
        """``Daily budget: 100.00 EUR → 150.00 EUR`` per field, once the action ran: the value
        captured just before the change and the value read back after it."""
        before, after = action.before_state or {}, action.after_state or {}
        if not before and not after:
            return "Not executed yet."
        currency = action.connection.currency
        fields = [f for f in Field if f.value in before or f.value in after]
        lines = [
            (
                FIELD_LABELS[f],
                _show(f, before.get(f.value), currency),
                _show(f, after.get(f.value), currency),
                "" if same_value(f, before.get(f.value), after.get(f.value)) else " br-changed",
            )
            for f in fields
            if f in change_targets(action.action_type, action.params)
            or not same_value(f, before.get(f.value), after.get(f.value))
        ]
        if not lines:
            return "No field changed."
        return format_html_join(
            "",
            '<div class="br-before-after{}"><strong>{}:</strong> {} → {}</div>',
            ((changed, label, old, new) for label, old, new, changed in lines),
        )

    @admin.display(description="Deployment")
    def deployment_link(self, action: Action):
        """The scenario deployment this action belongs to, if any."""
        if action.deployment_id is None:
            return EMPTY
        url = reverse("admin:scenarios_deployment_change", args=[action.deployment_id])
        return format_html('<a href="{}">Deployment #{}</a>', url, action.deployment_id)

    @admin.display(description="Rollback")
    def rollback_deadline_display(self, action: Action) -> str:
        return rollback_deadline_text(action)

    @admin.display(description="Values")
    def state_table(self, action: Action):
        """Approval baseline, before, after (read back) and target of each field, side by side."""
        currency = action.connection.currency
        targets = change_targets(action.action_type, action.params)
        states = [action.baseline_state or {}, action.before_state or {}, action.after_state or {}]
        fields = [f for f in Field if f in targets or any(f.value in state for state in states)]
        if not fields:
            return EMPTY
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    FIELD_LABELS[f],
                    *(_show(f, state.get(f.value), currency) for state in states),
                    _show(f, targets.get(f), currency),
                )
                for f in fields
            ),
        )
        return format_html(
            '<table class="br-state"><thead><tr><th>Field</th><th>Seen at approval</th><th>Before</th>'
            "<th>After (read back)</th><th>Target</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )
