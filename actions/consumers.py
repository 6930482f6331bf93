"""Outbox consumers of the actions app: what happens after a job ends or an action waits.

Consumers write rows and enqueue work after commit; they never call a platform.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from actions.services.dispatch import dispatch_has_waiting_work
from budgetradar.outbox import Event
from budgetradar.queue import enqueue

SOON = timedelta(seconds=5)


def dispatch_after_jobs(events: list[Event]) -> None:
    """A finished job frees its connection: dispatch what waited for it."""
    if any(dispatch_has_waiting_work(connection_id=e.payload["connection_id"]) for e in events):
        _dispatch_on_commit()


def dispatch_when_due(events: list[Event]) -> None:
    """An action parked until now (released by the reconciler) runs again at once; later
    ones are dispatched by the minute sweep when their time comes."""
    soon = timezone.now() + SOON
    if any(_due(e.payload.get("next_attempt_at"), soon) for e in events):
        _dispatch_on_commit()


def _due(value: str | None, soon: datetime) -> bool:
    return value is not None and datetime.fromisoformat(value) <= soon


def _dispatch_on_commit() -> None:
    transaction.on_commit(lambda: enqueue("actions.tasks.dispatch_task", group="actions"))
