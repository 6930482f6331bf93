"""What a lifecycle operation would do to each action, judged without doing it.

A confirmation page (the admin's approve / reject / cancel / execute / roll back) and the
API's rollback preview show, for each action, whether the operation will go through or
why it will be refused, before anyone confirms. ``actions_judge`` answers with the
services' own refusal functions (``action_<verb>_refusal``: the rules the write services
apply, in their order, stated once), so the verdict shown is the verdict the POST gets:
role and permission, state, four-eyes, value sanity, the plan's monthly quota (read
without a lock and used up by the earlier actions of the same request, as the approvals
themselves use it one after the other), an open circuit, an expired rollback, and the
safety gate's critical-breach rule on the one-entity preflights the page shows.

It writes nothing and locks nothing: those preflights are unsaved previews
(``safety.gate.actions_preflight_preview``: the platform is read outside any
transaction, a fresh stored run is reused, no run is stored and the mirror is left as it
is), and the gate judges them as they are. Confirming runs the services, which store
the preflight they judge.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django_fsm import can_proceed

from actions.models import Action
from actions.services.execution import action_execute_refusal, underway_refusal
from actions.services.lifecycle import action_approve_refusal, action_cancel_refusal, action_reject_refusal
from actions.services.rollback import action_rollback_refusal, rollback_underway_refusal
from actions.services.rollback_preview import RollbackPreview, rollback_preview
from budgetradar.entitlements import ApprovalQuota, approval_quota
from budgetradar.errors import DomainError
from budgetradar.tenancy import require_perm, require_same_tenant
from safety.gate import actions_preflight_preview, latest_preflight
from scenarios.models import PreflightRun

OPERATIONS = ("approve", "reject", "cancel", "execute", "rollback")
# The operations the safety gate judges, by the transition that tells whether it would run.
GATED = {"approve": "approve", "execute": "enqueue", "rollback": "start_rollback"}


@dataclass(frozen=True)
class Judgement:
    """What an operation would do to one action: ``refusal`` is the sentence the service
    would refuse it with ("" when it would go through); ``preflight`` the unsaved (or fresh
    stored) one-entity preflight the gate judged, for the page to show."""

    action: Action
    refusal: str = ""
    preflight: PreflightRun | None = None

    @property
    def done(self) -> bool:
        return not self.refusal


def actions_judge(
    *, operation: str, actions: Iterable[Action], actor, now: datetime | None = None
) -> dict[int, Judgement]:
    """The judgement of ``operation`` on each action, in the order given (the order the
    confirmation applies them in), by action id; writes nothing and locks nothing.

    ``execute`` and ``rollback`` are the buttons: an action already sent to the engine (or
    already rolling back) is refused with the reason, where the API's requests return it
    as it is.
    """
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}")
    actions = list(actions)
    previews = _previews(operation, actions, actor, now)
    quotas: dict[int, ApprovalQuota] = {}
    judged = {}
    for action in actions:
        refused = _refusal(operation, action, actor, previews, quotas, now)
        judged[action.pk] = Judgement(
            action=action, refusal=refused.message if refused else "", preflight=previews.get(action.pk)
        )
    return judged


def action_rollback_preview(*, action: Action, actor) -> tuple[str, RollbackPreview]:
    """What a rollback of ``action`` would do, as the admin's confirmation shows it, writing
    nothing: (why it would be refused, "" when it would not; the preview of the change).

    The refusal is ``actions_judge``'s for the Roll back button, so it includes the gate's
    critical-breach rule on the unsaved rollback preflight that read the live value; when
    no live read is available the preview falls back to the latest stored preflight and
    says "last known"."""
    require_same_tenant(actor, action.tenant, what="action")
    require_perm(actor, "actions.rollback_action", doing="preview rollbacks")
    judged = actions_judge(operation="rollback", actions=[action], actor=actor)[action.pk]
    return judged.refusal, rollback_preview(action, judged.preflight or latest_preflight(action))


def _refusal(
    operation: str,
    action: Action,
    actor,
    previews: dict[int, PreflightRun],
    quotas: dict[int, ApprovalQuota],
    now: datetime | None,
) -> DomainError | None:
    if operation == "approve":
        if action.tenant_id not in quotas:
            quotas[action.tenant_id] = approval_quota(tenant=action.tenant, now=now)
        quota = quotas[action.tenant_id]
        refused = action_approve_refusal(action=action, actor=actor, previews=previews, quota=quota)
        if refused is None:
            quota.use(action)
        return refused
    if operation == "reject":
        return action_reject_refusal(action=action, actor=actor)
    if operation == "cancel":
        return action_cancel_refusal(action=action, actor=actor)
    if operation == "execute":
        return underway_refusal(action) or action_execute_refusal(action=action, actor=actor, previews=previews)
    return rollback_underway_refusal(action) or action_rollback_refusal(action=action, actor=actor, previews=previews)


def _previews(operation: str, actions: list[Action], actor, now: datetime | None) -> dict[int, PreflightRun]:
    """The unsaved one-entity preflights the gate will judge: one batch per tenant (each
    connection read once) of the actions whose state lets the operation run."""
    transition = GATED.get(operation)
    if transition is None:
        return {}
    by_tenant: dict[int, list[Action]] = {}
    for action in actions:
        if can_proceed(getattr(action, transition)):
            by_tenant.setdefault(action.tenant_id, []).append(action)
    previews: dict[int, PreflightRun] = {}
    for group in by_tenant.values():
        # An action whose params cannot be read refuses the batch; the gate then reads each
        # action on its own (unsaved) and refuses that one with the reason.
        with contextlib.suppress(DomainError):
            previews.update(
                actions_preflight_preview(actions=group, actor=actor, rollback=operation == "rollback", now=now)
            )
    return previews
