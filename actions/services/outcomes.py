"""How an attempt ends, as ``Settlement`` values the settlement module writes.

Shared by the engine, the rollback worker and the reconciler, so the three describe
one outcome the same way (message, error code, retryable, hint, rollback instructions).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from actions.models import Action, LogEvent
from actions.services.settlement import Settlement
from actions.services.verification import describe
from platforms.types import Change, EntityState, ErrorCode, Field, PlatformError

STALE_HINT = (
    "Someone changed this entity on the platform after the approval or preflight. Nothing was "
    "applied; run a new preflight (or re-approve with the current value) and try again."
)
UNKNOWN_OUTCOME_HINT = "Check the entity on the platform. Approve the action again to retry it."
PARTIAL_HINT = "Roll back the applied part or propose the remaining change again."
DRIFT_HINT = (
    "Check who changed the entity and whether their change should stay. To roll back anyway, an admin can "
    "retry the rollback with 'override drift' and a reason."
)


def error_payload(code: str, message: str, *, retryable: bool, hint: str) -> dict[str, Any]:
    """The stored error of a code outside the platform taxonomy (stale, drifted, ...),
    shaped like ``PlatformError.as_dict()`` so actions, results and logs read one way."""
    return {
        "code": code,
        "message": message,
        "retryable": retryable,
        "hint": hint,
        "request_id": None,
        "retry_after": None,
    }


def taxonomy_or_payload(code: str, message: str, *, hint: str = DRIFT_HINT) -> dict[str, Any]:
    """A taxonomy code carries its own retryable and hint; others get ``hint``."""
    if code in ErrorCode._value2member_map_:
        return PlatformError(code=ErrorCode(code), message=message).as_dict()
    return error_payload(code, message, retryable=False, hint=hint)


def rollback_deadline(now: datetime) -> datetime:
    return now + timedelta(hours=settings.ROLLBACK_VALID_HOURS)


def rollback_instructions(before: dict[str, Any] | EntityState | None, fields: Iterable[Field]) -> dict | None:
    """``{"changes": [{field, value}]}`` putting back ``before``'s value of each field."""
    if before is None:
        return None
    value_of = before.value_of if isinstance(before, EntityState) else (lambda f: before.get(str(f)))
    changes = [{"field": str(f), "value": json_value(value_of(f))} for f in fields]
    return {"changes": changes} if changes else None


# Execution outcomes ----------------------------------------------------------------------------


def succeeded(action: Action, *, after: EntityState, now, rollback_fields=(), before=None, message: str) -> Settlement:
    instructions = rollback_instructions(before, rollback_fields)
    return Settlement(
        action,
        "succeed",
        kwargs={
            "at": now,
            "after_state": after.as_dict(),
            "rollback_params": instructions,
            "rollback_deadline": rollback_deadline(now) if instructions else None,
        },
        event=LogEvent.SUCCEEDED,
        message=message,
        after=after,
    )


def failed(
    action: Action, error: dict[str, Any], *, now, after: EntityState | None = None, event=LogEvent.FAILED
) -> Settlement:
    return Settlement(
        action,
        "fail",
        kwargs={"error": error, "at": now, "after_state": after.as_dict() if after else None},
        event=event,
        message=error["message"],
        after=after,
        log={"error": error},
    )


def partially_executed(
    action: Action, error: dict[str, Any], *, now, after: EntityState, rollback_fields, before
) -> Settlement:
    instructions = rollback_instructions(before, rollback_fields)
    return Settlement(
        action,
        "partially_execute",
        kwargs={
            "error": error,
            "at": now,
            "after_state": after.as_dict(),
            "rollback_params": instructions,
            "rollback_deadline": rollback_deadline(now) if instructions else None,
        },
        event=LogEvent.FAILED,
        message=error["message"],
        after=after,
        log={"error": error},
    )


def released(action: Action, *, reason: str, next_attempt_at, event=LogEvent.PARKED) -> Settlement:
    """Nothing of this attempt reached the platform: run again at ``next_attempt_at``."""
    return Settlement(
        action,
        "release",
        kwargs={"reason": reason, "next_attempt_at": next_attempt_at},
        event=event,
        message=reason,
    )


def not_found_error(action: Action) -> PlatformError:
    entity = action.entity
    return PlatformError(
        code=ErrorCode.NOT_FOUND,
        message=f"{entity.get_entity_type_display().capitalize()} {entity.name} ({entity.external_id}) "
        "no longer exists on the platform.",
    )


def stale(action: Action, drift, *, now) -> Settlement:
    details = "; ".join(f"{f} was {describe(seen)} at approval, is {describe(live)} now" for f, seen, live in drift)
    message = f"Not applied: {action.entity.name} changed on the platform since it was approved ({details})."
    error = error_payload("stale", message, retryable=False, hint=STALE_HINT)
    return failed(action, error, now=now, event=LogEvent.STALE)


def not_applied_error(change: Change, live: Any, request_id: str | None) -> PlatformError:
    return PlatformError(
        code=ErrorCode.UNKNOWN,
        message=f"The platform reported success, but reading it back shows {change.field} = {describe(live)} "
        f"instead of {describe(change.value)}: the change did not take effect.",
        request_id=request_id,
    )


def merge_errors(errors: Iterable[PlatformError | None]) -> dict[str, Any]:
    errors = [e for e in errors if e is not None]
    payload = errors[0].as_dict()
    if len(errors) > 1:
        payload["message"] = " ".join(dict.fromkeys(e.message for e in errors))
        payload["retryable"] = all(e.retryable for e in errors)
    return payload


# Rollback outcomes ----------------------------------------------------------------------------


def rolled_back(action: Action, *, after: EntityState | None, now, message: str) -> Settlement:
    return Settlement(
        action,
        "finish_rollback",
        kwargs={"at": now, "after_state": after.as_dict() if after else None},
        event=LogEvent.ROLLBACK_SUCCEEDED,
        message=message,
        after=after,
    )


def rollback_failed(action: Action, code: str, message: str, *, after: EntityState | None = None) -> Settlement:
    error = taxonomy_or_payload(str(code), message)
    return Settlement(
        action,
        "fail_rollback",
        kwargs={"error": error},
        event=LogEvent.ROLLBACK_FAILED,
        message=message,
        after=after,
        log={"error": error},
    )


# JSON helpers ------------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    if value is None or isinstance(value, dict | bool | int):
        return value
    return str(value)


def change_json(change: Change) -> dict[str, Any]:
    return {
        "entity_type": str(change.ref.entity_type),
        "external_id": change.ref.external_id,
        "field": str(change.field),
        "value": json_value(change.value),
    }
