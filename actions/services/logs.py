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


def log_events(rows: Iterable[dict[str, Any]]) -> int:
    """Append many log rows in one statement (the engine logs per batch, not per action);
    return how many.

    A row may carry its own ``created_at`` (an event observed earlier and written with
    the next batch); the others are stamped now. Rows go to the database as plain
    tuples (``COPY`` on PostgreSQL): no model instance per row.
    """
    now = timezone.now()
    values = (_values(_row(**row), now) for row in rows)
    return insert_rows(ActionExecutionLog, _FIELDS, values)


_FIELDS = insert_fields(ActionExecutionLog)
_COLUMNS = [f.attname for f in _FIELDS]


def _values(row: dict[str, Any], now) -> list[Any]:
    """One log row's values in ``_FIELDS`` order, from ``_row``'s keyword form."""
    action, job = row.pop("action"), row.pop("job")
    row["action_id"] = action.pk if action is not None else None
    row["job_id"] = job.pk if job is not None else None
    row.setdefault("created_at", now)
    return [row[name] for name in _COLUMNS]


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
