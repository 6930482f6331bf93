"""django-q2 entry points of the core: thin, idempotent."""

from __future__ import annotations

from budgetradar.outbox import outbox_drain, outbox_prune


def outbox_drain_task() -> str:
    return f"processed {outbox_drain()} outbox events"


def outbox_prune_task() -> str:
    return f"pruned {outbox_prune()} processed outbox events"
