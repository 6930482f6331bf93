"""Admin for recommendations, actions, jobs and the execution log.

Approve, reject, cancel, execute and roll back are offered as object buttons and bulk
actions. Each goes to a confirmation page that lists exactly what will happen to every
selected action — done or skipped, and why — and only its POST calls the services
(never the FSM transition: django-fsm-2's admin buttons do not re-check permissions). The
confirmation is single-use and answered with a redirect, so a double click or a reload
cannot apply anything twice. Nothing here is editable directly: actions change only
through services, and the execution log is evidence.

One module per model or flow: ``presentation`` (tones, badges, change and gate texts),
``inlines``, ``recommendations``, ``operations`` (the lifecycle operations, their form
and rows), ``actions`` (the action admin) with its parts ``fields``, ``gate`` and
``confirmation``, ``jobs`` and ``logs``. Importing the package registers
every admin; the names other apps import are re-exported here.
"""

from actions.admin import jobs, logs, recommendations  # noqa: F401 (registers the admins)
from actions.admin.actions import ActionAdmin, AttentionFilter
from actions.admin.inlines import ExecutionLogInline, ReadOnlyInline, RelatedActionsInline
from actions.admin.jobs import ActionJobAdmin
from actions.admin.logs import ActionExecutionLogAdmin
from actions.admin.operations import OPERATIONS, Operation, OperationForm, action_row
from actions.admin.presentation import (
    action_change,
    describe_change,
    gate_summary,
    status_badge,
)
from actions.admin.recommendations import RecommendationAdmin, RecommendationForm
from actions.services.rollback_preview import rollback_deadline_text

__all__ = [
    "OPERATIONS",
    "ActionAdmin",
    "ActionExecutionLogAdmin",
    "ActionJobAdmin",
    "AttentionFilter",
    "ExecutionLogInline",
    "Operation",
    "OperationForm",
    "ReadOnlyInline",
    "RecommendationAdmin",
    "RecommendationForm",
    "RelatedActionsInline",
    "action_change",
    "action_row",
    "describe_change",
    "gate_summary",
    "rollback_deadline_text",
    "status_badge",
]
