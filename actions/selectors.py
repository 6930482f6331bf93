"""Reads about actions that are more than a filter: what an action is waiting for.

The admin and the API present these; the rules (what "awaiting reconciliation" or
"stuck" means) live here and in ``actions.services.reconcile``, not in the views.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from actions.models import Action, ActionStatus
from actions.services.leases import RELEASED_SUFFIX
from budgetradar.entitlements import month_start
from budgetradar.models import Tenant
from budgetradar.timefmt import format_time
from budgetradar.words import actor_display
from safety.schedule import when_it_runs
from scenarios.services.guardrails import policies_for

S = ActionStatus


def _when(at: datetime, action: Action) -> str:
    return format_time(at, action.connection.time_zone)


STATUS_PHRASES = {
    S.PENDING_APPROVAL: "is waiting for approval",
    S.APPROVED: "is already approved",
    S.REJECTED: "was rejected",
    S.CANCELLED: "was cancelled",
    S.QUEUED: "is already queued",
    S.EXECUTING: "is executing",
    S.SUCCEEDED: "has already succeeded",
    S.FAILED: "has failed",
    S.PARTIALLY_EXECUTED: "was only partly executed",
    S.ROLLING_BACK: "is being rolled back",
    S.ROLLED_BACK: "has been rolled back",
    S.ROLLBACK_FAILED: "could not be rolled back",
}


def action_status_phrase(action: Action) -> str:
    """Where the action stands, as the rest of a sentence: "Action #2 has already succeeded"."""
    return STATUS_PHRASES.get(action.status, f"is {action.get_status_display().lower()}")


def action_wait_state(action: Action, *, now: datetime | None = None) -> str:
    """What the action waits for, in words a person reads ("" when it waits for nothing)."""
    now = now or timezone.now()
    if action.status == S.APPROVED:
        if action.next_attempt_at is None:
            return "Waits for someone to press Execute."
        if action.next_attempt_at > now:
            reason = f" {action.wait_reason}" if action.wait_reason else ""
            return f"Runs at {_when(action.next_attempt_at, action)}.{reason}"
        return "Due now: a worker picks it up within a minute."
    if action.status in (S.EXECUTING, S.ROLLING_BACK) and action.lease_owner:
        expired = action.lease_expires_at is None or action.lease_expires_at <= now
        if expired or action.lease_owner.endswith(RELEASED_SUFFIX):
            tries = f" Next try at {_when(action.next_attempt_at, action)}." if action.next_attempt_at else ""
            why = f" {action.wait_reason}" if action.wait_reason else ""
            return f"Awaiting reconciliation: the reconciler reads the platform and settles it.{why}{tries}"
        return f"Held by the {actor_display(action.lease_owner)} until {_when(action.lease_expires_at, action)}."
    if action.status == S.ROLLING_BACK:
        return "Rollback waits for a worker."
    if action.status == S.QUEUED:
        return "Queued for a worker."
    return ""


def actions_needing_attention(
    queryset: QuerySet[Action], kind: str, *, now: datetime | None = None
) -> QuerySet[Action]:
    """Filter ``queryset`` to one of: ``parked`` (waiting for a later attempt),
    ``reconciling`` (outcome being settled by the reconciler), ``stuck`` (blocking its
    entity longer than ENGINE_STUCK_AFTER_MINUTES)."""
    now = now or timezone.now()
    if kind == "parked":
        return queryset.filter(status=S.APPROVED, next_attempt_at__gt=now)
    if kind == "reconciling":
        return (
            queryset.filter(status__in=[S.EXECUTING, S.ROLLING_BACK])
            .exclude(lease_owner="")
            .filter(
                Q(lease_expires_at__lte=now)
                | Q(lease_expires_at__isnull=True)
                | Q(lease_owner__endswith=RELEASED_SUFFIX)
            )
        )
    if kind == "stuck":
        cutoff = now - timedelta(minutes=settings.ENGINE_STUCK_AFTER_MINUTES)
        return queryset.filter(
            Q(status=S.EXECUTING, started_at__lt=cutoff)
            | Q(status=S.QUEUED, queued_at__lt=cutoff)
            | Q(status=S.ROLLING_BACK, updated_at__lt=cutoff)
        )
    raise ValueError(f"unknown attention kind {kind!r}")


# An action's timeline ------------------------------------------------------------------------

TIMELINE_ORDER = ("-created_at", "-id")  # newest first, on the action's page and in the log list


def log_wait_text(entry) -> str:
    """How long the engine waited after this event and why, from the platform error it
    logged: ``3 s (the platform's retry-after)``; "" when the entry records no wait."""
    error = entry.error if isinstance(entry.error, dict) else {}
    retry_after = error.get("retry_after")
    if not retry_after:
        return ""
    return f"{float(retry_after):g} s (the platform's retry-after)"


def log_request_id(entry) -> str:
    """The platform's id for the request this entry is about: the one the entry recorded,
    else the one in the platform error it logged; "" when the platform gave none."""
    if entry.platform_request_id:
        return entry.platform_request_id
    error = entry.error if isinstance(entry.error, dict) else {}
    return str(error.get("request_id") or "")


# What a person approving actions is told -------------------------------------------------------


def when_texts(actions: list[Action]) -> dict[int, str]:
    """What will happen to each action and when (one policy query per tenant)."""
    now = timezone.now()
    texts: dict[int, str] = {}
    by_tenant: dict[int, list[Action]] = {}
    for action in actions:
        by_tenant.setdefault(action.tenant_id, []).append(action)
    for group in by_tenant.values():
        policies = policies_for(tenant=group[0].tenant, connections={a.connection for a in group})
        for action in group:
            texts[action.pk] = when_it_runs(action, policy=policies[action.connection_id], now=now)
    return texts


def approval_notes(tenants: set[Tenant]) -> list[str]:
    """Per tenant in the selection: its four-eyes rule, its execution policy and what is
    left of its monthly quota."""
    notes = []
    for tenant in sorted(tenants, key=lambda t: t.name):
        if tenant.four_eyes_required:
            notes.append(
                f"Four-eyes approval is on for {tenant.name}: nobody may approve an action they proposed "
                "(or a scenario's action they created or last changed)."
            )
        else:
            notes.append(f"Four-eyes approval is off for {tenant.name}: proposers may approve their own actions.")
        notes.append(
            f"{tenant.name}'s execution policy: {tenant.get_execution_mode_display().lower()} (a connection may set "
            "its own); each row below says when the action will run."
        )
        notes.append(
            "Every approval passes the safety gate: a one-entity preflight reads the entity now, and a critical "
            "guardrail breach is refused unless a second person approved an override."
        )
        plan = tenant.plan
        if plan.actions_enabled and plan.actions_per_month is not None:
            used = Action.objects.filter(tenant=tenant, approved_at__gte=month_start(tenant)).count()
            notes.append(
                f"{tenant.name}'s {plan.name} plan allows {plan.actions_per_month} approved actions a month: "
                f"{used} used, {max(plan.actions_per_month - used, 0)} left."
            )
    return notes
