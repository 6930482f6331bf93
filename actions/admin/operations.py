"""Approve, reject, cancel, execute and roll back as the admin offers them, their
confirmation form, and the rows of what each would do (judged by
``actions.services.judgement``, which writes nothing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django_fsm import can_proceed

from actions.admin.presentation import (
    action_change,
    status_badge,
)
from actions.models import (
    Action,
)
from actions.services.execution import action_execute_now
from actions.services.lifecycle import action_approve, action_cancel, action_reject
from actions.services.rollback import action_rollback_now
from actions.services.rollback_preview import rollback_deadline_text, rollback_preview
from safety.gate import (
    latest_preflight,
)
from scenarios.models import PreflightRun


@dataclass(frozen=True)
class Operation:
    """One lifecycle operation as the admin offers it.

    ``options`` are the service's keyword arguments the confirmation form asks for.
    """

    name: str
    label: str
    past: str
    perm: str
    transition: str
    service: Callable[..., Action]
    reason_required: bool
    consequence: str
    options: tuple[str, ...] = ("reason",)

    def possible(self, action: Action) -> bool:
        return can_proceed(getattr(action, self.transition))


OPERATIONS = {
    op.name: op
    for op in [
        Operation(
            name="approve",
            label="Approve",
            past="approved",
            perm="actions.approve_action",
            transition="approve",
            service=action_approve,
            reason_required=False,
            consequence="Approved actions run when their execution policy says (each row below says when: at "
            "once, in the next change window, or once someone presses Execute); the execution engine then "
            "changes the live ad account and confirms each change by reading the platform back. Every approval "
            "counts towards the plan's monthly limit.",
        ),
        Operation(
            name="reject",
            label="Reject",
            past="rejected",
            perm="actions.reject_action",
            transition="reject",
            service=action_reject,
            reason_required=True,
            consequence="Rejected actions are closed and never executed; the reason is recorded in their history.",
        ),
        Operation(
            name="cancel",
            label="Cancel",
            past="cancelled",
            perm="actions.cancel_action",
            transition="cancel",
            service=action_cancel,
            reason_required=False,
            consequence="Cancelled actions are closed and never executed, including approved or queued ones "
            "that no worker has started yet.",
        ),
        Operation(
            name="execute",
            label="Execute now",
            past="queued for execution",
            perm="actions.execute_action",
            transition="enqueue",
            service=action_execute_now,
            reason_required=False,
            options=(),
            consequence="Each action is queued now and a worker changes the live ad account. The worker first "
            "reads the entity: if its live value differs from the value seen at approval (shown below as "
            "the value before the arrow), the action is marked stale and nothing is sent. Otherwise the new "
            "value is applied and confirmed by reading the platform back; rollback instructions are kept for "
            "24 hours.",
        ),
        Operation(
            name="rollback",
            label="Roll back",
            past="queued for rollback",
            perm="actions.rollback_action",
            transition="start_rollback",
            service=action_rollback_now,
            reason_required=False,
            options=("reason", "override_drift"),
            consequence="Each action is rolled back by a worker to the value the entity had before execution "
            "(the last known live value → the value it goes back to, below). The worker reads the entity "
            "first: if it changed since execution, the rollback is refused rather than overwrite that "
            "change, unless the drift check is overridden with a reason. Removed entities cannot be rolled "
            "back.",
        ),
    ]
}


class OperationForm(forms.Form):
    """What a confirmation asks: a reason or note, and for rollbacks the drift override
    (offered only to those whose role allows it)."""

    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=1000)
    override_drift = forms.BooleanField(
        required=False,
        label="Override the drift check",
        help_text="Roll back even if the entity changed since execution, overwriting that change. Needs a reason.",
    )

    def __init__(self, *args: Any, operation: Operation, user, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.operation = operation
        if "reason" not in operation.options:
            del self.fields["reason"]
        else:
            field = self.fields["reason"]
            field.required = operation.reason_required
            field.label = "Reason" if operation.reason_required else "Note (optional)"
            if "override_drift" in operation.options:
                field.label = "Reason (required to override the drift check)"
            field.help_text = "Recorded in each action's history and execution log."
        if "override_drift" not in operation.options or not user.has_perm("actions.override_rollback_drift"):
            del self.fields["override_drift"]

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("override_drift") and not (cleaned.get("reason") or "").strip():
            self.add_error("reason", "A reason is required to override the drift check.")
        return cleaned

    def options(self) -> dict[str, Any]:
        """The service's keyword arguments."""
        defaults = {"reason": "", "override_drift": False}
        return {name: self.cleaned_data.get(name, defaults[name]) for name in self.operation.options}


def action_row(
    action: Action, operation: Operation | None = None, *, run: PreflightRun | None = None, **extra: Any
) -> dict[str, Any]:
    """One action as the confirmation and result pages list it; a rollback shows its own
    change (live value back to the before-value), its deadline and any drift seen, from
    ``run`` (a preview) or else the action's latest stored preflight."""
    if operation is not None and operation.name == "rollback":
        rollback = rollback_preview(action, run or latest_preflight(action))
        return {
            "action": action,
            "change": rollback.change_text(),
            "deadline": rollback_deadline_text(action),
            "warning": rollback.drift_warning(),
            "status": status_badge(action),
            **extra,
        }
    return {"action": action, "change": action_change(action), "status": status_badge(action), **extra}
