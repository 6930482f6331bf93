"""Bulk state transitions that keep the FSM's rules, the audit trail and a bounded query count.

The engine moves thousands of actions at once; saving them one by one would cost a
query (and a history insert) per action. ``bulk_transition`` reads the allowed source
states and the target from the model's own ``@transition`` definition, applies the
change with a single conditional UPDATE per batch (rows that moved on meanwhile are
left alone and not returned), and writes their history rows in bulk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from actions.models import Action
from budgetradar.bulk import bulk_set, insert_fields, insert_rows

BATCH = 1000


def transition_states(name: str) -> tuple[set[str], str]:
    """(allowed source states, target state) of an ``Action`` transition method."""
    meta = getattr(Action, name)._django_fsm
    sources = {str(source) for source in meta.transitions}
    targets = {str(t.target) for t in meta.transitions.values()}
    if len(targets) != 1:
        raise ValueError(f"Transition {name} has several targets: {targets}")
    return sources, targets.pop()


def bulk_transition(
    actions: Iterable[Action],
    name: str,
    *,
    reason: str,
    actor=None,
    prepare: Callable[[Action], None] | None = None,
    fields: Iterable[str] = (),
) -> list[Action]:
    """Move ``actions`` through transition ``name``; return those that moved.

    ``prepare`` sets per-action facts (errors, after-state...) on each instance before
    the write; ``fields`` names them. An action whose state in the database no longer
    allows the transition is skipped (compare-and-set), so two workers cannot both move
    it. Guarantees: one UPDATE and one history INSERT per batch of 1,000, all in one
    transaction.
    """
    sources, target = transition_states(name)
    candidates = [a for a in actions if a.status in sources]
    update_fields = sorted({"status", "updated_at", *fields})
    moved: list[Action] = []
    with transaction.atomic():
        for start in range(0, len(candidates), BATCH):
            moved.extend(_move_batch(candidates[start : start + BATCH], sources, target, update_fields, prepare))
        if moved:
            write_history(moved, actor=actor, reason=reason)
    return moved


def _move_batch(batch, sources, target, update_fields, prepare) -> list[Action]:
    ids = [a.pk for a in batch]
    # Lock and re-read the rows still in a source state; on SQLite the IMMEDIATE
    # transaction already serialises writers.
    live = set(Action.objects.select_for_update().filter(pk__in=ids, status__in=sources).values_list("pk", flat=True))
    batch = [a for a in batch if a.pk in live]
    now = timezone.now()
    for action in batch:
        if prepare is not None:
            prepare(action)
        _set_status(action, target)
        action.updated_at = now
    if batch:
        _write(batch, sources, update_fields)
    return batch


def _write(batch: list[Action], sources: set[str], update_fields: list[str]) -> None:
    """Fields with one value for the whole batch go in a single plain UPDATE; only the
    fields that differ per row pay for Django's per-row CASE expressions."""
    common, varying = {}, []
    for name in update_fields:
        attname = Action._meta.get_field(name).attname
        values = {_hashable(getattr(a, attname)) for a in batch}
        if len(values) == 1:
            common[attname] = getattr(batch[0], attname)
        else:
            varying.append(name)
    ids = [a.pk for a in batch]
    Action.objects.filter(pk__in=ids, status__in=sources).update(**common)
    if varying:
        # The UPDATE above already moved the rows out of ``sources``; they are ours (locked).
        bulk_set(batch, varying)


def _hashable(value: Any) -> Any:
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, sort_keys=True, default=str)
    return value


def _set_status(action: Action, target: str) -> None:
    # The field is protected against assignment; this is the sanctioned bulk path. The
    # concurrency mixin's remembered state follows, so a later save() stays consistent.
    action.__dict__["status"] = target
    action._update_initial_state()


def write_history(actions: list[Action], *, actor, reason: str, history_type: str = "~") -> None:
    """One history row per action, as django-simple-history would write it
    (``history_type`` "+" for rows just created, "~" for changes)."""
    history = Action.history.model
    fields = insert_fields(history)
    tracked = {f.attname for f in history.tracked_fields}
    extra = {
        "history_date": timezone.now(),
        "history_user_id": getattr(_user(actor), "pk", None),
        "history_change_reason": reason[:1000],
        "history_type": history_type,
    }
    names = [f.attname for f in fields]
    unknown = [n for n in names if n not in tracked and n not in extra]
    if unknown:
        raise RuntimeError(f"History columns with no source: {unknown}")
    insert_rows(
        history,
        fields,
        ([getattr(action, n) if n in tracked else extra[n] for n in names] for action in actions),
    )


def _user(actor: Any):
    return actor if getattr(actor, "is_authenticated", False) else None
