"""Lifecycle transitions that need no platform: approve, reject, cancel.

Every service here:
- refuses another tenant's action as not found, and a role without the permission as
  ``PermissionDenied`` (authorization is checked here, never only in the admin);
- refuses a transition the state does not allow with ``InvalidState`` naming the state;
- states its refusals once, in ``action_<verb>_refusal``, which a confirmation page calls
  to judge without writing (``actions.services.judgement``);
- changes state through ``settlement.transition_one`` (history with actor and reason and
  an execution-log row in the same transaction; ``Conflict`` if the row moved on).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from actions.changes import bid_strategy_refusal
from actions.models import Action, ActionStatus, LogEvent
from actions.selectors import action_status_phrase
from actions.services.settlement import transition_one
from budgetradar.audit import actor_label
from budgetradar.entitlements import ApprovalQuota, entitlement_check_action_approvals
from budgetradar.errors import DomainError, InvalidState, ValidationFailed
from budgetradar.tenancy import require_perm, require_same_tenant
from safety.gate import Approval, gate_approval
from scenarios.models import PreflightRun


def _refuse_transition(action: Action, verb: str) -> InvalidState:
    return InvalidState(
        f"Action #{action.pk} {action_status_phrase(action)} and cannot be {verb}.",
        code=f"already_{action.status}" if action.status != ActionStatus.PENDING_APPROVAL else "invalid_state",
    )


def action_approve(*, action: Action, actor, reason: str = "") -> Action:
    """Approve a pending (or failed, i.e. re-approve) action.

    Guarantees: the actor has the approver role; the safety gate passed (``safety.gate``:
    four-eyes, value sanity, the one-entity preflight whose live values become the drift
    baseline, critical breaches only with an approved override) before anything is
    written; the execution policy sets when it runs (``next_attempt_at``); the plan's
    monthly quota is checked under a lock on the tenant row, so concurrent approvals at
    the limit cannot both pass (HTTP 402). The refusals are ``action_approve_refusal``'s.
    """
    decision = _approve_judge(action, actor, previews=None)  # reads the platform: outside the transaction
    with transaction.atomic():
        entitlement_check_action_approvals(tenant=action.tenant)
        return transition_one(
            action,
            "approve",
            actor=actor,
            reason=reason or "approved",
            event=LogEvent.APPROVED,
            message=decision.message(reason or f"Approved by {actor_label(actor)}."),
            args={"by": actor, "at": timezone.now(), **decision.approve_args()},
        )


def action_approve_refusal(
    *, action: Action, actor, previews: dict[int, PreflightRun], quota: ApprovalQuota
) -> DomainError | None:
    """Why ``action_approve`` would refuse ``action`` now, or None, writing and locking
    nothing: its rules in its order, the gate judging the unsaved preflight ``previews``
    by action id (``safety.gate.actions_preflight_preview``) and the plan's monthly rule
    judging ``quota`` (``budgetradar.entitlements.approval_quota``; the caller counts each
    approval that passes with ``quota.use``)."""
    try:
        _approve_judge(action, actor, previews=previews)
    except DomainError as exc:
        return exc
    return quota.refusal()


def _approve_judge(action: Action, actor, *, previews: dict[int, PreflightRun] | None) -> Approval:
    require_same_tenant(actor, action.tenant, what="action")
    require_perm(actor, "actions.approve_action", doing="approve actions")
    if not can_proceed(action.approve):
        raise _refuse_transition(action, "approved")
    refusal = bid_strategy_refusal(action.action_type, action.params, action.entity)
    if refusal:  # the strategy may have changed since the action was proposed
        raise ValidationFailed(f"Action #{action.pk} cannot be approved: {refusal}", details={"params": refusal})
    return gate_approval(action=action, actor=actor, previews=previews)


def action_reject(*, action: Action, actor, reason: str) -> Action:
    """Reject a pending action; the reason is required and recorded (refusals:
    ``action_reject_refusal``)."""
    refused = action_reject_refusal(action=action, actor=actor, reason=reason)
    if refused is not None:
        raise refused
    return transition_one(
        action,
        "reject",
        actor=actor,
        reason=f"rejected: {reason}",
        event=LogEvent.REJECTED,
        message=reason,
        args={"reason": reason, "at": timezone.now()},
    )


def action_reject_refusal(*, action: Action, actor, reason: str | None = None) -> DomainError | None:
    """Why ``action_reject`` would refuse ``action`` now, or None; ``reason=None`` leaves
    the reason out of the judgement (a confirmation page asks for it)."""
    try:
        require_same_tenant(actor, action.tenant, what="action")
        require_perm(actor, "actions.reject_action", doing="reject actions")
    except DomainError as exc:
        return exc
    if reason is not None and not reason.strip():
        return DomainError("A reason is required to reject an action.", code="reason_required")
    if not can_proceed(action.reject):
        return _refuse_transition(action, "rejected")
    return None


def action_cancel(*, action: Action, actor, reason: str = "") -> Action:
    """Cancel an action that has not started executing (pending, approved or queued;
    refusals: ``action_cancel_refusal``)."""
    refused = action_cancel_refusal(action=action, actor=actor)
    if refused is not None:
        raise refused
    return transition_one(
        action,
        "cancel",
        actor=actor,
        reason=f"cancelled: {reason}" if reason else "cancelled",
        event=LogEvent.CANCELLED,
        message=reason or "Cancelled.",
        args={"reason": reason or "cancelled", "at": timezone.now()},
    )


def action_cancel_refusal(*, action: Action, actor) -> DomainError | None:
    """Why ``action_cancel`` would refuse ``action`` now, or None."""
    try:
        require_same_tenant(actor, action.tenant, what="action")
        require_perm(actor, "actions.cancel_action", doing="cancel actions")
    except DomainError as exc:
        return exc
    if not can_proceed(action.cancel):
        return _refuse_transition(action, "cancelled")
    return None


@dataclass(frozen=True)
class BulkResult:
    """What a bulk operation did to one action (shown on the admin's result page)."""

    action: Action
    done: bool
    reason: str = ""


def actions_apply_bulk(*, actions: list[Action], actor, operation, **kwargs) -> list[BulkResult]:
    """Run ``operation`` (action_approve, action_reject, action_cancel) on each action in its
    own transaction: one refusal never undoes the others. Returns done/skipped with why."""
    results: list[BulkResult] = []
    for action in actions:
        try:
            operation(action=action, actor=actor, **kwargs)
            results.append(BulkResult(action=action, done=True))
        except DomainError as exc:
            results.append(BulkResult(action=action, done=False, reason=exc.message))
    return results
