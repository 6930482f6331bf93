"""Execution logs are evidence: append-only in the model and, on PostgreSQL, in the database."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from actions.models import ActionExecutionLog, AppendOnlyError, LogEvent
from actions.services.logs import log_event
from tests.factories import ActionFactory


@pytest.fixture
def entry(campaign):
    return log_event(action=ActionFactory(entity=campaign), event=LogEvent.REQUEST_SENT, message="sent")


def test_saving_an_existing_log_row_is_refused(entry):
    entry.message = "rewritten"
    with pytest.raises(AppendOnlyError):
        entry.save()


def test_deleting_a_log_row_is_refused(entry):
    with pytest.raises(AppendOnlyError):
        entry.delete()


def test_bulk_update_and_delete_are_refused(entry):
    with pytest.raises(AppendOnlyError):
        ActionExecutionLog.objects.filter(pk=entry.pk).update(message="x")
    with pytest.raises(AppendOnlyError):
        ActionExecutionLog.objects.all().delete()
    assert ActionExecutionLog.objects.get(pk=entry.pk).message == "sent"


@pytest.mark.postgres(reason="needs PostgreSQL: the append-only trigger exists only there (SQLite relies on the model)")
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE actions_actionexecutionlog SET message = 'x' WHERE id = %s",
        "DELETE FROM actions_actionexecutionlog WHERE id = %s",
    ],
)
def test_postgres_trigger_rejects_raw_update_and_delete(entry, sql):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [entry.pk])
    assert ActionExecutionLog.objects.get(pk=entry.pk).message == "sent"
