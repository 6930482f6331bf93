"""The outbox enqueues one drain per transaction that published, however many events."""

from __future__ import annotations

import pytest
from django.db import transaction

from budgetradar import outbox
from budgetradar.models import OutboxEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def enqueued(monkeypatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(outbox, "enqueue", lambda func, *args, **kwargs: calls.append(func))
    return calls


def test_one_drain_is_enqueued_per_commit_however_many_publishes(enqueued):
    with transaction.atomic():
        outbox.publish("job.started", tenant_id=None, payload={"job_id": 1})
        outbox.publish_many([("action.settled", None, {"action_id": 1}), ("action.settled", None, {"action_id": 2})])
        with transaction.atomic():
            outbox.publish("job.finished", tenant_id=None, payload={"job_id": 1})
        assert enqueued == []  # not before the commit
    assert enqueued == ["budgetradar.tasks.outbox_drain_task"]
    assert OutboxEvent.objects.count() == 4


def test_a_drain_registered_in_a_rolled_back_savepoint_does_not_hide_later_events(enqueued):
    with transaction.atomic():
        try:
            with transaction.atomic():
                outbox.publish("job.started", tenant_id=None, payload={"job_id": 1})
                raise RuntimeError("undo the savepoint")
        except RuntimeError:
            pass
        outbox.publish("job.finished", tenant_id=None, payload={"job_id": 1})
    assert enqueued == ["budgetradar.tasks.outbox_drain_task"]
    assert list(OutboxEvent.objects.values_list("topic", flat=True)) == ["job.finished"]


def test_each_transaction_that_publishes_enqueues_its_drain(enqueued):
    for job_id in (1, 2):
        with transaction.atomic():
            outbox.publish("job.started", tenant_id=None, payload={"job_id": job_id})
    outbox.publish("job.finished", tenant_id=None, payload={"job_id": 2})  # autocommit: at once
    assert len(enqueued) == 3
