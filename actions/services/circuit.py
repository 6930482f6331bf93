"""The per-connection circuit breaker, stored on ``PlatformConnection`` (shared by all workers).

Rule: an *execution* is one job run. It counts as failed when the platform refused the
connection itself (auth expired, permission denied, or rate limits/5xx/timeouts that
outlasted the retries) and nothing was applied. Entity-level refusals (invalid value,
not found, stale) prove the connection works and reset the count. After
``CIRCUIT_BREAKER_THRESHOLD`` (3) consecutive failed executions the circuit opens:
dispatch and live execution on that connection are refused. After
``CIRCUIT_BREAKER_COOLDOWN_SECONDS`` one half-open probe job may run; its success
closes the circuit, its failure opens it again. An admin can reset it at any time.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from actions.models import ActionJob
from budgetradar import outbox
from budgetradar.audit import audited_save
from budgetradar.errors import DomainError
from budgetradar.tenancy import require_perm, require_same_tenant
from budgetradar.timefmt import format_time
from platforms.models import CircuitState, PlatformConnection


class CircuitOpen(DomainError):
    code = "circuit_open"
    http_status = 409


def _cooled_down(connection: PlatformConnection) -> bool:
    opened = connection.circuit_opened_at
    cooldown = timedelta(seconds=settings.CIRCUIT_BREAKER_COOLDOWN_SECONDS)
    return opened is None or timezone.now() - opened >= cooldown


def circuit_refusal(connection: PlatformConnection) -> str | None:
    """Why live work on ``connection`` is refused right now, or None when it may run."""
    if connection.circuit_state == CircuitState.CLOSED:
        return None
    if connection.circuit_state == CircuitState.OPEN and _cooled_down(connection):
        return None  # a half-open probe may run
    until = ""
    if connection.circuit_opened_at:
        probe_at = connection.circuit_opened_at + timedelta(seconds=settings.CIRCUIT_BREAKER_COOLDOWN_SECONDS)
        until = f" until {format_time(probe_at, connection.time_zone)}"
    return (
        f"The circuit breaker of connection {connection.name} is {connection.circuit_state}: "
        f"{connection.circuit_reason or 'repeated failures'}. Live work is paused{until}; "
        "fix the cause and ask an admin to reset the circuit."
    )


def circuit_check(connection: PlatformConnection) -> None:
    """Raise ``CircuitOpen`` (HTTP 409) with the reason when live work is refused."""
    reason = circuit_refusal(connection)
    if reason:
        raise CircuitOpen(reason)


def circuit_acquire(connection_id: int) -> bool:
    """May a worker run a job on this connection now? Takes the half-open probe slot
    with a compare-and-set, so exactly one worker probes after the cool-down."""
    connection = PlatformConnection.objects.get(pk=connection_id)
    if connection.circuit_state == CircuitState.CLOSED:
        return True
    if connection.circuit_state == CircuitState.OPEN and _cooled_down(connection):
        return (
            PlatformConnection.objects.filter(pk=connection_id, circuit_state=CircuitState.OPEN).update(
                circuit_state=CircuitState.HALF_OPEN
            )
            == 1
        )
    return False


def circuit_record_success(connection_id: int) -> None:
    """A job that reached the platform: the count resets and an open circuit closes."""
    with transaction.atomic():
        was_open = PlatformConnection.objects.filter(pk=connection_id).exclude(circuit_state=CircuitState.CLOSED)
        tenant_id = was_open.values_list("tenant_id", flat=True).first()
        PlatformConnection.objects.filter(pk=connection_id).exclude(
            circuit_state=CircuitState.CLOSED, consecutive_failures=0
        ).update(circuit_state=CircuitState.CLOSED, consecutive_failures=0, circuit_opened_at=None, circuit_reason="")
        if tenant_id is not None:
            outbox.publish(
                "circuit.closed",
                tenant_id=tenant_id,
                payload={"connection_id": connection_id, "reason": "a job succeeded"},
            )


def circuit_record_failure(connection_id: int, *, reason: str) -> bool:
    """Count a failed execution; open the circuit at the threshold. True if it opened."""
    threshold = settings.CIRCUIT_BREAKER_THRESHOLD
    with transaction.atomic():
        PlatformConnection.objects.filter(pk=connection_id).update(consecutive_failures=F("consecutive_failures") + 1)
        opened = (
            PlatformConnection.objects.filter(pk=connection_id, consecutive_failures__gte=threshold)
            .exclude(circuit_state=CircuitState.OPEN)
            .update(circuit_state=CircuitState.OPEN, circuit_opened_at=timezone.now(), circuit_reason=reason[:500])
        )
        # A failed half-open probe re-opens (the update above), restarting the cool-down.
        if opened:
            tenant_id = PlatformConnection.objects.filter(pk=connection_id).values_list("tenant_id", flat=True).first()
            outbox.publish(
                "circuit.opened", tenant_id=tenant_id, payload={"connection_id": connection_id, "reason": reason}
            )
    return opened == 1


def on_jobs_finished(events) -> None:
    """Outbox consumer of ``job.finished``: count failed executions, close on success.

    Jobs that sent nothing and met no connection-level refusal (all parked or all
    refused as stale) change nothing.
    """
    for event in events:
        payload = event.payload
        if payload.get("connection_failed"):
            circuit_record_failure(payload["connection_id"], reason=_reason(payload))
        elif payload.get("status") in ("succeeded", "partially_succeeded", "failed"):
            circuit_record_success(payload["connection_id"])


def _reason(payload: dict) -> str:
    summary = ActionJob.objects.filter(pk=payload["job_id"]).values_list("error_summary", flat=True).first()
    return summary or "the platform refused the connection"


def circuit_reset(*, connection: PlatformConnection, actor, reason: str = "") -> PlatformConnection:
    """Close the circuit by hand (admin only), recorded in the connection's history."""
    require_same_tenant(actor, connection.tenant, what="connection")
    require_perm(actor, "platforms.reset_circuit", doing="reset circuit breakers")
    connection.circuit_state = CircuitState.CLOSED
    connection.consecutive_failures = 0
    connection.circuit_opened_at = None
    connection.circuit_reason = ""
    audited_save(connection, actor=actor, reason=f"circuit reset: {reason}" if reason else "circuit reset")
    return connection
