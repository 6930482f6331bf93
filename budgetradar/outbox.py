"""The outbox: domain events written with the change they report, consumed afterwards.

Producers call ``publish`` (or ``publish_many``) inside the transaction that makes the
change. Consumers subscribe to a topic with a dotted path to a function taking the
list of events of that topic (``subscribe("action.settled", "scenarios.consumers.on_settled")``),
usually from their app's ``ready()``: the producer never imports its consumers.

``outbox_drain`` runs every consumer of every unprocessed event, in id order, and marks
the events processed in the same transaction as the consumers' own writes. Guarantees:
- at-least-once and, for consumers that only write to this database, exactly-once in
  effect: a crash before the commit leaves the events unprocessed, and the next drain
  runs them again with nothing half-done;
- concurrent drains never run a consumer twice for one event: a drain locks the rows
  it takes (``select_for_update``; SQLite serialises writers), and an event is selected
  by ``processed_at IS NULL``, never by a cursor, so an event that commits late (a
  lower id after higher ones) is still drained;
- consumers should read current state rather than trust event order: events of one
  topic arrive in id order within a batch, but a late commit can arrive after newer ones;
- consumers must not call platforms or other networks (that would hold the transaction
  open); they write rows and enqueue work with ``transaction.on_commit``.
A drain is enqueued once after every commit that published events, and a schedule runs one
every minute in case a task was lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from budgetradar.bulk import insert_rows
from budgetradar.models import OutboxEvent
from budgetradar.queue import enqueue

# Events per drain transaction: consumers work per batch, so one drain of 10,000 settled
# actions costs each consumer its few statements once (the events are a few hundred bytes
# each in memory; ids of one batch fit PostgreSQL's 65,535 bind parameters).
BATCH = 10_000
_FIELDS = [OutboxEvent._meta.get_field(name) for name in ("topic", "tenant", "payload", "created_at")]
_SUBSCRIBERS: dict[str, list[str]] = defaultdict(list)


@dataclass(frozen=True)
class Event:
    """What a consumer receives: the stored event, without the model."""

    id: int
    topic: str
    tenant_id: int | None
    payload: dict[str, Any]


def subscribe(topic: str, handler: str) -> None:
    """Run ``handler`` (a dotted path) for every event of ``topic``; idempotent."""
    if handler not in _SUBSCRIBERS[topic]:
        _SUBSCRIBERS[topic].append(handler)


def subscribers(topic: str) -> list[str]:
    return list(_SUBSCRIBERS.get(topic, ()))


def publish(topic: str, *, tenant_id: int | None, payload: dict[str, Any]) -> None:
    """Record one event in the current transaction."""
    publish_many([(topic, tenant_id, payload)])


def publish_many(events: Iterable[tuple[str, int | None, dict[str, Any]]]) -> int:
    """Record many events with one statement (COPY on PostgreSQL); a drain is enqueued when
    the transaction commits."""
    now = timezone.now()
    rows = [(topic, tenant_id, payload, now) for topic, tenant_id, payload in events]
    if not rows:
        return 0
    insert_rows(OutboxEvent, _FIELDS, rows)
    _drain_on_commit()
    return len(rows)


def _drain_on_commit() -> None:
    """One drain per transaction, however many times it publishes: a drain takes every
    unprocessed event. A drain already registered in this transaction survives exactly
    when these events do (Django drops an on-commit callback with the savepoint it was
    registered in, and these events are inside every savepoint still open), so none is
    added then."""
    conn = transaction.get_connection()
    if conn.in_atomic_block and any(func is _enqueue_drain for _, func, _ in conn.run_on_commit):
        return
    transaction.on_commit(_enqueue_drain)


def _enqueue_drain() -> None:
    enqueue("budgetradar.tasks.outbox_drain_task", task_name=None, group="outbox")


def outbox_drain(*, max_batches: int = 100) -> int:
    """Run the consumers of every unprocessed event; return how many events were processed."""
    done = 0
    for _ in range(max_batches):
        processed = _drain_batch()
        done += processed
        if processed < BATCH:
            break
    return done


def _drain_batch() -> int:
    with transaction.atomic():
        events = list(OutboxEvent.objects.select_for_update().filter(processed_at__isnull=True).order_by("id")[:BATCH])
        if not events:
            return 0
        by_topic: dict[str, list[Event]] = defaultdict(list)
        for row in events:
            by_topic[row.topic].append(Event(row.pk, row.topic, row.tenant_id, row.payload))
        for topic, batch in by_topic.items():
            for handler in subscribers(topic):
                _resolve(handler)(batch)
        OutboxEvent.objects.filter(pk__in=[e.pk for e in events]).update(processed_at=timezone.now())
        return len(events)


def _resolve(path: str) -> Callable[[list[Event]], None]:
    return import_string(path)


def outbox_prune(*, older_than_days: int = 30) -> int:
    """Delete processed events older than the given age (they are not an audit trail:
    the execution log and history are)."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = OutboxEvent.objects.filter(processed_at__isnull=False, created_at__lt=cutoff).delete()
    return deleted
