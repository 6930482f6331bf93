"""Settlement: the one place that changes ``Action.status``.

Every state change of an action — an approval, a dispatch, a worker's start, a
verified success, a reconciler's verdict, a rollback — goes through
``transition_actions`` (many) or ``transition_one`` (one, for people's requests), and
both take the same path:

1. lock the rows that are still in one of the transition's source states (and, for a
   lease holder, still carry its lease token: every write a holder makes is fenced);
2. call the model's own ``@transition`` method on each (django-fsm-2 checks the source
   state and conditions and sets the target; the method body records the facts), and
   collect the fields it changed;
3. write those fields with one UPDATE per value shape and batch (never a query per
   action), one history row per action (actor and reason), the execution-log rows and
   the outbox events, and refresh the entity mirror from verified read-backs —
   all in one transaction.

Rows that moved on meanwhile (another worker, a cancel, the reconciler) are left
alone and are not returned: a caller learns exactly which actions it moved.
"""

from __future__ import annotations

import json
import marshal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from actions.models import Action, ActionStatus, LogEvent
from actions.services.logs import log_events
from budgetradar import outbox
from budgetradar.bulk import bulk_set, insert_fields
from budgetradar.errors import Conflict
from observability.metrics import action_transitions_record
from platforms.mirror import mirror_update
from platforms.types import EntityState

BATCH = 1000  # rows per INSERT of new actions (each row carries every column as a parameter)
# Rows locked and written per statement when moving: a whole unit (Google's 10,000), so a
# settlement costs the same few statements for one action or ten thousand; each statement
# takes the ids as parameters (PostgreSQL and SQLite take far more than this).
MOVE_BATCH = 10_000
S = ActionStatus
SETTLED = {S.SUCCEEDED, S.FAILED, S.PARTIALLY_EXECUTED, S.ROLLED_BACK, S.ROLLBACK_FAILED}


@dataclass
class Settlement:
    """How one action moves: the transition, its arguments, and what to record.

    ``after`` is a state read back from the platform (verified): the entity mirror is
    refreshed from it. ``log`` holds extra execution-log fields (request, response,
    error, platform_request_id).
    """

    action: Action
    transition: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    event: LogEvent | None = None
    message: str = ""
    after: EntityState | None = None
    log: dict[str, Any] = field(default_factory=dict)


def transition_states(name: str) -> tuple[set[str], str]:
    """(allowed source states, target state) of an ``Action`` transition method."""
    meta = getattr(Action, name)._django_fsm
    sources = {str(source) for source in meta.transitions}
    targets = {str(t.target) for t in meta.transitions.values()}
    if len(targets) != 1:
        raise ValueError(f"Transition {name} has several targets: {targets}")
    return sources, targets.pop()


def settle(
    settlements: Sequence[Settlement],
    *,
    actor,
    reason: str,
    lease: str | None = None,
    job=None,
    logs: Iterable[dict[str, Any]] = (),
) -> list[Action]:
    """Apply many settlements (grouped by transition) in one transaction; return the moved actions.

    Each history row's reason is ``"<reason>: <transition>"`` (e.g. ``worker:…: succeed``).
    ``logs`` are further execution-log rows (``log_events``' form) written with the
    settlements' own, in one statement, whether or not anything moved.
    """
    by_transition: dict[str, list[Settlement]] = {}
    for item in settlements:
        by_transition.setdefault(item.transition, []).append(item)
    moved: list[Action] = []
    rows = list(logs)
    with transaction.atomic(savepoint=False):  # part of the caller's transaction, if any
        for name, group in by_transition.items():
            moved += _apply(group, name, actor=actor, reason=f"{reason}: {name}", lease=lease, job=job, logs=rows)
        log_events(rows)
    return moved


def transition_actions(
    actions: Iterable[Action],
    name: str,
    *,
    actor,
    reason: str,
    kwargs: dict[str, Any] | Callable[[Action], dict[str, Any]] | None = None,
    event: LogEvent | None = None,
    message: str | Callable[[Action], str] = "",
    log: Callable[[Action], dict[str, Any]] | None = None,
    lease: str | None = None,
    job=None,
) -> list[Action]:
    """Move ``actions`` through transition ``name``; return those that moved.

    ``kwargs`` are the transition method's arguments (the same for all, or per action);
    ``event`` and ``message`` describe the execution-log row written for each moved
    action (none when ``event`` is None).
    """
    items = [
        Settlement(
            action,
            name,
            kwargs=kwargs(action) if callable(kwargs) else dict(kwargs or {}),
            event=event,
            message=message(action) if callable(message) else message,
            log=log(action) if log else {},
        )
        for action in actions
    ]
    rows: list[dict[str, Any]] = []
    with transaction.atomic(savepoint=False):  # part of the caller's transaction, if any
        moved = _apply(items, name, actor=actor, reason=reason, lease=lease, job=job, logs=rows)
        log_events(rows)
    return moved


def transition_one(
    action: Action, name: str, *, actor, reason: str, event: LogEvent, message: str, args: dict[str, Any]
) -> Action:
    """One person's request on one action (``args`` are the transition method's
    arguments); ``Conflict`` if the row moved on meanwhile."""
    moved = transition_actions([action], name, actor=actor, reason=reason, kwargs=args, event=event, message=message)
    if not moved:
        raise Conflict(f"Action #{action.pk} was changed by someone else at the same moment; reload and retry.")
    return moved[0]


# The path every change takes --------------------------------------------------------------


def _apply(
    items: list[Settlement], name: str, *, actor, reason: str, lease: str | None, job, logs: list[dict[str, Any]]
) -> list[Action]:
    """Move ``items`` through ``name``: rows, history, outbox and mirror written here; the
    execution-log rows appended to ``logs`` for the caller to write in the same transaction."""
    sources, target = transition_states(name)
    moved: list[Settlement] = []
    for start in range(0, len(items), MOVE_BATCH):
        moved += _move_batch(items[start : start + MOVE_BATCH], name, sources, lease)
    if not moved:
        return []
    actions = [m.action for m in moved]
    write_history(actions, actor=actor, reason=reason)
    logs += [_log_row(m, actor, job) for m in moved if m.event is not None]
    outbox.publish_many(event for m in moved if (event := _event(m, target)) is not None)
    verified = [(m.action.entity_id, m.after) for m in moved if m.after is not None]
    if verified:
        mirror_update(verified)
    if target not in SETTLED:  # settled ones are counted from their outbox events
        platforms = [a.platform for a in actions]
        transaction.on_commit(lambda: action_transitions_record(status=target, platforms=platforms))
    return actions


def _move_batch(items: list[Settlement], name: str, sources: set[str], lease: str | None) -> list[Settlement]:
    """Lock the rows still in a source state (and held by ``lease``), transition, write."""
    rows = Action.objects.select_for_update().filter(pk__in_array=[i.action.pk for i in items], status__in=sources)
    if lease is not None:
        rows = rows.filter(lease_owner=lease)
    live = dict(rows.values_list("pk", "status"))
    moved: list[Settlement] = []
    changed: set[str] = set()
    for item in items:
        action = item.action
        if action.pk not in live:
            continue
        # The database row is locked and authoritative: start from its state.
        action.__dict__["status"] = live[action.pk]
        before = _snapshot(action)
        getattr(action, name)(**item.kwargs)
        changed |= _changed(before, _snapshot(action))
        moved.append(item)
    if moved:
        now = timezone.now()
        for item in moved:
            item.action.updated_at = now
            item.action._update_initial_state()
        _write([m.action for m in moved], sorted(changed | {"status", "updated_at"}))
    return moved


_FIELDS = [f for f in Action._meta.concrete_fields if not f.primary_key]
_JSON = [f.attname for f in _FIELDS if f.get_internal_type() == "JSONField"]
_PLAIN = [f.attname for f in _FIELDS if f.attname not in _JSON]
_plain_values = attrgetter(*_PLAIN)


def _snapshot(action: Action) -> tuple[tuple[Any, ...], tuple[bytes, ...]]:
    """The action's field values: plain ones as they are, JSON ones each as a serialised
    copy (so a dict changed in place is seen as changed)."""
    return _plain_values(action), tuple(_frozen(getattr(action, n)) for n in _JSON)


def _frozen(value: Any) -> bytes:
    """A JSON value's content as bytes: equal bytes, equal content. ``marshal`` format 2
    (no back-references, so the bytes depend on the content alone; fast C code) takes
    every JSON type; anything else (a ``Decimal`` not yet dumped) goes through JSON."""
    try:
        return marshal.dumps(value, 2)
    except ValueError:
        return json.dumps(value, sort_keys=True, default=str).encode()


def _changed(
    before: tuple[tuple[Any, ...], tuple[bytes, ...]], after: tuple[tuple[Any, ...], tuple[bytes, ...]]
) -> set[str]:
    changed = {n for n, old, new in zip(_PLAIN, before[0], after[0], strict=True) if old != new}
    return changed | {n for n, old, new in zip(_JSON, before[1], after[1], strict=True) if old != new}


def _write(actions: list[Action], attnames: list[str]) -> None:
    """One UPDATE for the batch: a plain one when every field has one value for the whole
    batch; otherwise the fields that differ per row travel per row (one statement on
    PostgreSQL) and the others are set once in that same statement."""
    common, varying = {}, []
    for attname in attnames:
        if _one_value(actions, attname):
            common[attname] = getattr(actions[0], attname)
        else:
            varying.append(_field_name(attname))
    if varying:
        bulk_set(actions, varying, same=common)
    else:
        Action.objects.filter(pk__in_array=[a.pk for a in actions]).update(**common)


def _one_value(actions: list[Action], attname: str) -> bool:
    """Whether every action has the same value of the field. A JSON field counts as one
    value only when all hold the very same object (or ``None``): per row otherwise, which
    is always correct and saves serialising every value to compare."""
    first = getattr(actions[0], attname)
    if attname in _JSON:
        return all(getattr(a, attname) is first for a in actions)
    return all(getattr(a, attname) == first for a in actions)


def _field_name(attname: str) -> str:
    return next(f.name for f in _FIELDS if f.attname == attname)


def _log_row(item: Settlement, actor, job) -> dict[str, Any]:
    action = item.action
    row = {
        "action": action,
        "event": item.event,
        "actor": actor,
        "job": job,
        "message": item.message,
        "attempt": action.attempts,
        "state_snapshot": item.after.as_dict() if item.after is not None else None,
    }
    if action.status in SETTLED and action.error_code and "error" not in item.log:
        row["error"] = {
            "code": action.error_code,
            "message": action.error_message,
            "retryable": action.error_retryable,
            "hint": action.error_hint,
        }
    return row | item.log


def _event(item: Settlement, target: str) -> tuple[str, int, dict[str, Any]] | None:
    """The outbox event of a move: settled, or parked to wait for a later attempt."""
    action = item.action
    base = {
        "action_id": action.pk,
        "connection_id": action.connection_id,
        "entity_id": action.entity_id,
        "platform": action.platform,
        "deployment_id": action.deployment_id,
        "status": target,
    }
    if target in SETTLED:
        return "action.settled", action.tenant_id, base | {"error_code": action.error_code}
    if item.transition == "release":
        return (
            "action.parked",
            action.tenant_id,
            base | {"next_attempt_at": _iso(action.next_attempt_at), "reason": action.wait_reason},
        )
    return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# History ------------------------------------------------------------------------------------


def write_history(actions: list[Action], *, actor, reason: str, history_type: str = "~") -> None:
    """One history row per action, as django-simple-history would write it
    (``history_type`` "+" for rows just created, "~" for changes), in the caller's
    transaction, after the caller has written the actions' rows.

    The database copies each history row from the action's row as it stands at that
    moment of the transaction (one ``INSERT … SELECT``), with the row's who, when and
    why: the history records exactly what was written (a field the caller's instance
    holds stale is recorded as the row has it), and no row travels to Python and back.
    """
    if not actions:
        return
    conn = connections[DEFAULT_DB_ALIAS]
    quote = conn.ops.quote_name
    history = Action.history.model
    constants = [
        field.get_db_prep_save(value, conn)
        for field, value in zip(
            _HISTORY_EXTRA,
            (timezone.now(), getattr(_user(actor), "pk", None), reason[:1000], history_type),
            strict=True,
        )
    ]
    columns = ", ".join(quote(f.column) for f in [*_HISTORY_EXTRA, *_HISTORY_TRACKED])
    placeholders = ", ".join(["%s"] * len(constants))
    table = quote(history._meta.db_table)
    pks = [a.pk for a in actions]
    for start in range(0, len(pks), MOVE_BATCH):  # the ids are parameters: as many a statement as a move takes
        rows = Action.objects.filter(pk__in_array=pks[start : start + MOVE_BATCH]).order_by("pk")
        source, params = rows.values_list(*_TRACKED).query.sql_with_params()
        if not source.startswith("SELECT "):
            raise RuntimeError(f"Unexpected history source query: {source[:60]}")
        with conn.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {placeholders}, {source.removeprefix('SELECT ')}",
                [*constants, *params],
            )


def _history_columns() -> tuple[list, list, list[str]]:
    """The history table's columns: those copied from the action's row (in the order
    ``_TRACKED`` selects them) and the row's who, when and why."""
    history = Action.history.model
    tracked = [f.attname for f in history.tracked_fields]
    by_name = {f.attname: f for f in insert_fields(history)}
    extra = ["history_date", "history_user_id", "history_change_reason", "history_type"]
    unknown = set(by_name) - set(tracked) - set(extra)
    if unknown:
        raise RuntimeError(f"History columns with no source: {sorted(unknown)}")
    return [by_name[n] for n in tracked], [by_name[n] for n in extra], tracked


_HISTORY_TRACKED, _HISTORY_EXTRA, _TRACKED = _history_columns()


def actions_create(actions: list[Action], *, actor, reason: str, event: LogEvent) -> list[Action]:
    """Create actions (e.g. a deployment's approved actions) with their history and log rows."""
    with transaction.atomic():
        created = Action.objects.bulk_create(actions, batch_size=BATCH)
        write_history(created, actor=actor, reason=reason, history_type="+")
        log_events({"action": a, "event": event, "actor": actor, "message": reason} for a in created)
    return created


def _user(actor: Any):
    return actor if getattr(actor, "is_authenticated", False) else None
