"""Enqueueing django-q2 tasks by dotted path, after the current transaction commits.

Services name their task by its dotted path instead of importing the tasks module, so
a service never imports the module that imports it (tasks import services, not the
other way round). ``enqueue_on_commit`` runs ``async_task`` only once the caller's
transaction commits: a worker never sees an id that does not exist yet, and a rolled
back change enqueues nothing.
"""

from __future__ import annotations

from django.db import transaction
from django_q.tasks import async_task


def enqueue(func: str, *args, task_name: str | None = None, group: str | None = None) -> None:
    """Hand ``func(*args)`` to a django-q2 worker now (ids only, never model instances)."""
    kwargs = {}
    if task_name:
        kwargs["task_name"] = task_name
    if group:
        kwargs["group"] = group
    async_task(func, *args, **kwargs)


def enqueue_on_commit(func: str, *args, task_name: str | None = None, group: str | None = None) -> None:
    """Like ``enqueue``, once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: enqueue(func, *args, task_name=task_name, group=group))
