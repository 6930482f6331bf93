"""Outbox consumers: engine events become watches, alerts and counted transitions.

Subscribed in ``ObservabilityConfig.ready``. They run inside the drain's transaction, so
they only write rows (deliveries are sent later by a worker) and count metrics after
commit. Each event is handled in its own savepoint and a failure is logged, never
raised: a bug here must not hold back the outbox that the engine, deployments and the
circuit breaker depend on (the cost: that one event is not watched or alerted).

Topics and payloads (the engine's contract):
- ``action.settled`` {action_id, connection_id, entity_id, platform, deployment_id, status, error_code}
- ``action.parked`` {action_id, connection_id, next_attempt_at, reason}
- ``job.finished`` {job_id, connection_id, kind, status, connection_failed, round_trips}
- ``circuit.opened`` / ``circuit.closed`` {connection_id, reason}
- ``deployment.finished`` {deployment_id, status}
- ``planner.run_finished`` {run_id, connection_id, status, fallback_level, error} (the planner's)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from budgetradar.outbox import Event
from budgetradar.timefmt import format_time
from observability import metrics
from observability.models import AlertKind, CircuitOpening, Severity
from observability.services.alerts import Condition, alert_raise, alert_resolve_key, dedup_key
from observability.services.settings import settings_for
from observability.services.watch import (
    watch_entities_rolled_back,
    watch_restore_deployed,
    watches_for_actions,
    watches_for_deployment,
)
from platforms.models import PlatformConnection

logger = logging.getLogger(__name__)

APPLIED = {"succeeded", "partially_executed"}
FINAL_DEPLOYMENT = {"succeeded", "partially_succeeded", "failed", "cancelled", "rolled_back", "partially_rolled_back"}
QUOTA_CODES = {"rate_limited"}
AUTH_CODES = {"auth_expired"}

SUBSCRIPTIONS = {
    "action.settled": "observability.consumers.on_action_settled",
    "action.parked": "observability.consumers.on_action_parked",
    "job.finished": "observability.consumers.on_job_finished",
    "circuit.opened": "observability.consumers.on_circuit_opened",
    "circuit.closed": "observability.consumers.on_circuit_closed",
    "deployment.finished": "observability.consumers.on_deployment_finished",
    "planner.run_finished": "observability.consumers.on_planner_run_finished",
}


def _each(events: list[Event], handle: Callable[[Event], None]) -> None:
    for event in events:
        try:
            with transaction.atomic():
                handle(event)
        except Exception:
            logger.exception("Observability could not handle outbox event %s (%s)", event.id, event.topic)


def _connection(connection_id) -> PlatformConnection | None:
    return PlatformConnection.objects.select_related("tenant").filter(pk=connection_id).first()


def _connection_key(kind: str, connection: PlatformConnection) -> str:
    return dedup_key(kind, connection.tenant_id, "connection", connection.pk)


# action.settled ------------------------------------------------------------------------------


def on_action_settled(events: list[Event]) -> None:
    """Watches for applied actions outside deployments and the end of watches of rolled
    back ones, each in one batch; alerts for quota and credential failures per event."""
    applied = [e.payload["action_id"] for e in events if e.payload.get("status") in APPLIED]
    rolled_back = [e.payload["action_id"] for e in events if e.payload.get("status") == "rolled_back"]
    if applied:
        _guarded(events, "watches", lambda: watches_for_actions(applied))
    if rolled_back:
        _guarded(events, "rolled-back watches", lambda: watch_entities_rolled_back(rolled_back))
    _each([e for e in events if _is_connection_failure(e)], _action_failed)
    by_status: dict[str, list[str]] = {}
    for event in events:
        by_status.setdefault(str(event.payload.get("status")), []).append(str(event.payload.get("platform")))
    transaction.on_commit(lambda: _count_transitions(by_status))


def _guarded(events: list[Event], what: str, work: Callable[[], object]) -> None:
    """Run ``work`` for a whole batch in a savepoint; a failure is logged, never blocks the outbox."""
    try:
        with transaction.atomic():
            work()
    except Exception:
        logger.exception("Observability could not update %s for outbox events %s-%s", what, events[0].id, events[-1].id)


def _count_transitions(by_status: dict[str, list[str]]) -> None:
    for status, platforms in by_status.items():
        metrics.action_transitions_record(status=status, platforms=platforms)


def _is_connection_failure(event: Event) -> bool:
    code = event.payload.get("error_code") or ""
    return event.payload.get("status") == "failed" and code in QUOTA_CODES | AUTH_CODES


def _action_failed(event: Event) -> None:
    payload = event.payload
    connection = _connection(payload.get("connection_id"))
    if connection is not None:
        alert_raise(_connection_failure(connection, payload["error_code"], payload["action_id"]))


def _connection_failure(connection: PlatformConnection, code: str, action_id: int) -> Condition:
    if code in AUTH_CODES:
        kind, title = AlertKind.TOKEN_EXPIRED, f"Access to {connection.name} expired or was revoked"
        message = (
            f"Action #{action_id} on {connection.name} failed because the platform refused the connection's "
            "credentials. Reconnect the account (update its credentials), then approve the failed actions again."
        )
    else:
        kind, title = AlertKind.QUOTA_EXCEEDED, f"Platform quota exceeded on {connection.name}"
        message = (
            f"Action #{action_id} on {connection.name} failed because the platform's rate limit or quota held "
            "after every retry. Spread changes over time or ask the platform for more quota; approve the failed "
            "actions again once the limit resets."
        )
    return Condition(
        kind=kind,
        severity=Severity.CRITICAL,
        dedup_key=_connection_key(kind, connection),
        title=title,
        message=message,
        tenant_id=connection.tenant_id,
        connection_id=connection.pk,
        action_id=action_id,
        details={"error_code": code},
    )


# action.parked --------------------------------------------------------------------------------


def on_action_parked(events: list[Event]) -> None:
    _each(events, _action_parked)


def _action_parked(event: Event) -> None:
    """Parked far into the future (beyond the tenant's bound) needs a person now; the
    detector resolves the alert once nothing waits that long."""
    payload = event.payload
    connection = _connection(payload.get("connection_id"))
    at = parse_datetime(str(payload.get("next_attempt_at") or ""))
    if connection is None or at is None:
        return
    bound = timedelta(hours=settings_for(connection.tenant).parked_action_hours)
    if at - timezone.now() <= bound:
        return
    alert_raise(
        Condition(
            kind=AlertKind.PARKED_ACTIONS,
            severity=Severity.WARNING,
            dedup_key=_connection_key(AlertKind.PARKED_ACTIONS, connection),
            title=f"Actions parked on {connection.name}",
            message=f"Action #{payload.get('action_id')} on {connection.name} was parked until "
            f"{format_time(at, connection.time_zone)}, "
            f"longer than {bound.total_seconds() / 3600:.0f} hours: {payload.get('reason') or 'no reason given'}.",
            tenant_id=connection.tenant_id,
            connection_id=connection.pk,
            action_id=payload.get("action_id"),
        )
    )


# job.finished -----------------------------------------------------------------------------------


def on_job_finished(events: list[Event]) -> None:
    _each(events, _job_finished)


def _job_finished(event: Event) -> None:
    """A job that reached the platform without a connection-level failure proves the
    quota and the credentials work again."""
    payload = event.payload
    if payload.get("connection_failed") or payload.get("status") not in ("succeeded", "partially_succeeded"):
        return
    connection = _connection(payload.get("connection_id"))
    if connection is None:
        return
    for kind in (AlertKind.QUOTA_EXCEEDED, AlertKind.TOKEN_EXPIRED):
        alert_resolve_key(_connection_key(kind, connection), reason=f"job #{payload.get('job_id')} succeeded")


# circuits ----------------------------------------------------------------------------------------


def on_circuit_opened(events: list[Event]) -> None:
    _each(events, _circuit_opened)


def _circuit_opened(event: Event) -> None:
    connection = _connection(event.payload.get("connection_id"))
    if connection is None:
        return
    reason = str(event.payload.get("reason") or "")[:500]
    CircuitOpening.objects.get_or_create(
        event_id=event.id,
        defaults={
            "tenant_id": connection.tenant_id,
            "connection": connection,
            "opened_at": timezone.now(),
            "reason": reason,
        },
    )
    connection.refresh_from_db()
    if connection.circuit_state == "closed":
        return  # read current state: it closed again before this event was drained
    alert_raise(
        Condition(
            kind=AlertKind.CIRCUIT_OPEN,
            severity=Severity.CRITICAL,
            dedup_key=_connection_key(AlertKind.CIRCUIT_OPEN, connection),
            title=f"Circuit breaker open on {connection.name}",
            message=f"Live work on {connection.name} is refused: {reason or 'repeated failures'}. Fix the cause "
            "(credentials, permissions, platform outage), then reset the circuit on the connection.",
            tenant_id=connection.tenant_id,
            connection_id=connection.pk,
            details={"state": connection.circuit_state},
        )
    )


def on_circuit_closed(events: list[Event]) -> None:
    _each(events, _circuit_closed)


def _circuit_closed(event: Event) -> None:
    connection = _connection(event.payload.get("connection_id"))
    if connection is not None and connection.circuit_state == "closed":
        alert_resolve_key(_connection_key(AlertKind.CIRCUIT_OPEN, connection), reason="the circuit closed")


# deployments and the planner ----------------------------------------------------------------------


def on_deployment_finished(events: list[Event]) -> None:
    _each(events, _deployment_finished)
    statuses = [str(e.payload.get("status")) for e in events if e.payload.get("status") in FINAL_DEPLOYMENT]
    transaction.on_commit(lambda: [metrics.deployment_finished_record(status=s) for s in statuses])


def _deployment_finished(event: Event) -> None:
    deployment_id = event.payload.get("deployment_id")
    watch_restore_deployed(deployment_id)
    watches_for_deployment(deployment_id)


def on_planner_run_finished(events: list[Event]) -> None:
    _each(events, _planner_run_finished)
    runs = [(str(e.payload.get("fallback_level") or ""), str(e.payload.get("status"))) for e in events]
    transaction.on_commit(lambda: [metrics.planner_run_record(fallback_level=f, status=s) for f, s in runs])


def _planner_run_finished(event: Event) -> None:
    payload = event.payload
    connection = _connection(payload.get("connection_id"))
    if connection is None:
        return
    key = _connection_key(AlertKind.OPTIMIZER_FAILURE, connection)
    if payload.get("status") != "failed":
        alert_resolve_key(key, reason=f"planner run {payload.get('run_id')} succeeded")
        return
    alert_raise(
        Condition(
            kind=AlertKind.OPTIMIZER_FAILURE,
            severity=Severity.CRITICAL,
            dedup_key=key,
            title=f"Optimizer failed on {connection.name}",
            message=f"Planner run {payload.get('run_id')} on {connection.name} failed: "
            f"{payload.get('error') or 'no reason given'}. No new plan is proposed until a run succeeds; read the "
            "run's decision log.",
            tenant_id=connection.tenant_id,
            connection_id=connection.pk,
            details={"run_id": payload.get("run_id")},
        )
    )
