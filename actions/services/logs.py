"""Writing the append-only execution log."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from actions.models import Action, ActionExecutionLog, ActionJob, LogEvent
from budgetradar.audit import actor_label
from budgetradar.bulk import insert_fields, insert_rows


def log_event(
    *,
    action: Action | None,
    event: LogEvent,
    actor=None,
    job: ActionJob | None = None,
    message: str = "",
    request: Any = None,
    response: Any = None,
    state_snapshot: Any = None,
    error: Any = None,
    platform_request_id: str | None = "",
    tenant_id: int | None = None,
    attempt: int | None = None,
) -> ActionExecutionLog:
    """Append one log row; never updates an existing one."""
    return ActionExecutionLog.objects.create(
        **_row(
            action=action,
            event=event,
            actor=actor,
            job=job,
            message=message,
            request=request,
            response=response,
            state_snapshot=state_snapshot,
            error=error,
            platform_request_id=platform_request_id,
            tenant_id=tenant_id,
            attempt=attempt,
        )
    )


def log_events(rows: Iterable[dict[str, Any]]) -> None:
    """Append many log rows in one query (the engine logs per batch, not per action).

    A row may carry its own ``created_at`` (an event observed earlier and written with
    the next batch); the others are stamped now.
    """
    now = timezone.now()
    logs = [ActionExecutionLog(**_row(**row)) for row in rows]
    if not logs:
        return
    fields = insert_fields(ActionExecutionLog)
    for log in logs:
        log.created_at = log.created_at or now
    insert_rows(ActionExecutionLog, fields, ([getattr(log, f.attname) for f in fields] for log in logs))


def _row(
    *,
    action,
    event,
    actor=None,
    job=None,
    message="",
    request=None,
    response=None,
    state_snapshot=None,
    error=None,
    platform_request_id="",
    tenant_id=None,
    attempt=None,
    created_at=None,
) -> dict[str, Any]:
    tenant_id = tenant_id or (action.tenant_id if action is not None else job.tenant_id)
    return {
        "tenant_id": tenant_id,
        "action": action,
        "job": job,
        "event": event,
        "message": message,
        "request": request,
        "response": response,
        "state_snapshot": state_snapshot,
        "error": error,
        "actor": actor if isinstance(actor, str) else actor_label(actor),
        "platform_request_id": platform_request_id or "",
        "attempt": attempt if attempt is not None else (action.attempts if action is not None else None),
    } | ({"created_at": created_at} if created_at is not None else {})
