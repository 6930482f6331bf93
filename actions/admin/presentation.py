"""How the actions admin shows actions: tones, badges, change and gate texts."""

from __future__ import annotations

from typing import Any

from actions.changes import target_values
from actions.models import (
    Action,
    ActionStatus,
    JobStatus,
    LogEvent,
)
from actions.services.rollback_preview import FIELD_LABELS
from actions.services.rollback_preview import show_value as _show
from budgetradar.admin_base import (
    AMBER,
    BLUE,
    EMPTY,
    GREEN,
    GREY,
    RED,
    badge,
)
from platforms.models import PlatformEntity
from platforms.types import Field
from safety.gate import (
    latest_preflight,
    preflight_summary,
)
from scenarios.models import PreflightRun
from scenarios.services.guardrails import CRITICAL

STATUS_TONES = {
    ActionStatus.PENDING_APPROVAL: AMBER,
    ActionStatus.APPROVED: BLUE,
    ActionStatus.REJECTED: GREY,
    ActionStatus.CANCELLED: GREY,
    ActionStatus.QUEUED: BLUE,
    ActionStatus.EXECUTING: BLUE,
    ActionStatus.SUCCEEDED: GREEN,
    ActionStatus.FAILED: RED,
    ActionStatus.PARTIALLY_EXECUTED: RED,
    ActionStatus.ROLLING_BACK: AMBER,
    ActionStatus.ROLLED_BACK: GREY,
    ActionStatus.ROLLBACK_FAILED: RED,
}
JOB_TONES = {
    JobStatus.QUEUED: BLUE,
    JobStatus.RUNNING: BLUE,
    JobStatus.SUCCEEDED: GREEN,
    JobStatus.PARTIALLY_SUCCEEDED: AMBER,
    JobStatus.FAILED: RED,
    JobStatus.CANCELLED: GREY,
}
EVENT_TONES = {
    LogEvent.SUCCEEDED: GREEN,
    LogEvent.APPROVED: GREEN,
    LogEvent.ROLLBACK_SUCCEEDED: GREEN,
    LogEvent.FAILED: RED,
    LogEvent.ROLLBACK_FAILED: RED,
    LogEvent.STALE: RED,
    LogEvent.REJECTED: GREY,
    LogEvent.CANCELLED: GREY,
    LogEvent.RETRYING: AMBER,
    LogEvent.PARKED: AMBER,
    LogEvent.AWAITING_RECONCILIATION: AMBER,
    LogEvent.ROLLBACK_STARTED: AMBER,
}
# Everything a page about actions shows, fetched with the actions (never one query per row).
# How often an action's page reloads itself while a worker is moving the action on.
REFRESH_SECONDS = 5
ACTION_RELATED = ["tenant__plan", "entity", "connection", "proposed_by", "approved_by"]


def status_badge(action: Action):
    return badge(action.get_status_display(), STATUS_TONES.get(action.status, GREY))


# Describing a change ------------------------------------------------------------------------


def change_targets(action_type: str, params: dict) -> dict[Field, Any]:
    """The values an action sets; empty (never an error page) for malformed params."""
    try:
        return target_values(action_type, params or {})
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return {}


def describe_change(
    action_type: str, params: dict, entity: PlatformEntity, currency: str, seen: dict | None = None
) -> str:
    """``Daily budget: 100.00 EUR → 120.00 EUR`` for each field the change sets.

    The current value is the one recorded in ``seen`` (before-state or approval
    baseline) when there is one, else the synced mirror.
    """
    parts = []
    for field, target in change_targets(action_type, params).items():
        if field in (Field.TARGETING, Field.SCHEDULE):
            parts.append(f"Replace {FIELD_LABELS[field].lower()}")
            continue
        current = (seen or {}).get(field.value, getattr(entity, field.value, None))
        parts.append(f"{FIELD_LABELS[field]}: {_show(field, current, currency)} → {_show(field, target, currency)}")
    return "; ".join(parts) or f"Params: {params}"


def action_change(action: Action) -> str:
    seen = action.before_state or action.baseline_state
    return describe_change(action.action_type, action.params, action.entity, action.connection.currency, seen)


# The safety gate on an action's page ----------------------------------------------------------

SEVERITY_TONES = {"warning": AMBER, CRITICAL: RED}


def breach_pill(breach: dict) -> str:
    return badge(breach.get("severity", ""), SEVERITY_TONES.get(breach.get("severity"), GREY))


def _change_text(change: dict) -> str:
    text = f"{change['label'].lower()} {change['before'] or EMPTY} → {change['after'] or EMPTY}"
    if change["unit"]:
        text += f" {change['unit']}"
    pct = change["percent_delta"]
    if pct:
        text += f" ({'' if pct.startswith('-') else '+'}{pct}%)"
    return text


def gate_summary(action: Action, run: PreflightRun | None = None) -> str:
    """``Preflight pf-…: daily budget 91.00 → 910.00 EUR (+900.00%); 1 critical breach``, of
    ``run`` (a preview) or else the action's latest stored preflight."""
    summary = preflight_summary(run or latest_preflight(action))
    if summary is None:
        return "No preflight yet: the gate runs one when the action is approved or executed."
    if summary["status"] != PreflightRun.Status.SUCCEEDED:
        return f"Preflight {summary['run_id']} {summary['status']}: {summary['error'] or 'not finished'}"
    changes = "; ".join(
        f"{c['label'].lower()} {c['before'] or EMPTY} → {c['after'] or EMPTY}"
        + (f" {c['unit']}" if c["unit"] else "")
        + (
            f" ({'+' if not c['percent_delta'].startswith('-') else ''}{c['percent_delta']}%)"
            if c["percent_delta"]
            else ""
        )
        for c in summary["changes"]
    )
    critical = sum(1 for b in summary["breaches"] if b["severity"] == CRITICAL)
    warnings = len(summary["breaches"]) - critical
    verdict = f"{critical} critical, {warnings} warning breach{'es' if warnings != 1 else ''}"
    return f"Preflight {summary['run_id']}: {changes or 'no change'}; {verdict}."
