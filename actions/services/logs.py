"""Writing the append-only execution log."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from actions.models import Action, ActionExecutionLog, ActionJob, LogEvent
from budgetradar.audit import actor_label
from budgetradar.bulk import bulk_insert


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
        )
    )


def log_events(rows: Iterable[dict[str, Any]]) -> None:
    """Append many log rows in one query (the engine logs per batch, not per action)."""
    bulk_insert([ActionExecutionLog(**_row(**row)) for row in rows])


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
    }
