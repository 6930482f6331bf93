"""Audit rows at database speed: history rows copied by the database from the action rows
(one INSERT … SELECT) and execution-log rows written as plain tuples (COPY on PostgreSQL,
executemany on SQLite) store exactly what the ORM path stores, and cost no model instance
and no extra query per row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.db import connection
from django.db.models import Model
from django.test.utils import CaptureQueriesContext

from actions.models import Action, ActionExecutionLog, ActionJob, ActionStatus, LogEvent
from actions.services.logs import log_event, log_events
from actions.services.settlement import transition_actions, write_history
from budgetradar.audit import audited_save
from budgetradar.bulk import bulk_set
from tests.factories import ActionFactory

FROZEN = datetime(2026, 12, 2, 5, 30, 12, 345678, tzinfo=UTC)


def raw_rows(table: str, where: str, params: list, exclude: set[str]) -> list[dict]:
    """Rows as the database holds them (text and numbers, no field conversion)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE {where}", params)
        names = [c[0] for c in cursor.description]
        return [{n: v for n, v in zip(names, row, strict=True) if n not in exclude} for row in cursor.fetchall()]


@pytest.fixture
def frozen_now():
    with mock.patch("django.utils.timezone.now", return_value=FROZEN):
        yield FROZEN


@pytest.fixture
def rich_action(campaign, approver):
    """An action whose row has every kind of value: nested JSON, JSON left empty (NULL),
    aware datetimes, booleans, counters, foreign keys, a choice."""
    action = ActionFactory(
        entity=campaign,
        status=ActionStatus.APPROVED,
        approved_by=approver,
        approved_at=FROZEN - timedelta(hours=1),
        baseline_state={"status": "enabled", "daily_budget": "100.00", "nested": {"a": [1, 2.5, None, "ü"]}},
    )
    action.after_state = {"daily_budget": "120.00", "quote": 'say "hi"\\n'}
    action.rollback_params = {"changes": [{"field": "daily_budget", "value": "100.00"}]}
    action.rollback_deadline = FROZEN + timedelta(days=7)
    action.error_retryable = True
    action.error_message = "tab\there, newline\nthere"
    action.attempts = 2
    return action


def test_history_rows_copied_by_the_database_equal_the_rows_simple_history_writes(rich_action, approver, frozen_now):
    audited_save(rich_action, actor=approver, reason="checked by hand")
    write_history([rich_action], actor=approver, reason="checked by hand")
    history = Action.history.model._meta.db_table
    orm, fast = raw_rows(history, "id = %s ORDER BY history_id", [rich_action.pk], exclude={"history_id"})[-2:]
    assert fast == orm
    assert fast["history_type"] == "~" and fast["history_user_id"] == approver.pk


def test_a_history_row_records_the_action_row_as_written_not_a_stale_instance(rich_action, approver):
    audited_save(rich_action, actor=approver, reason="saved")
    Action.objects.filter(pk=rich_action.pk).update(error_message="changed by someone else")
    rich_action.attempts = 9  # held in memory only: never written
    write_history([rich_action], actor=approver, reason="settled")
    row = rich_action.history.order_by("-history_id").first()
    assert (row.error_message, row.attempts, row.history_change_reason) == ("changed by someone else", 2, "settled")


def test_log_rows_written_as_tuples_equal_the_rows_the_orm_writes(rich_action, approver, frozen_now):
    job = ActionJob.objects.create(tenant_id=rich_action.tenant_id, connection_id=rich_action.connection_id)
    fields = {
        "action": rich_action,
        "event": LogEvent.RESPONSE_RECEIVED,
        "actor": approver,
        "job": job,
        "message": "Answer with a 'quote', a \\ and a\ttab.",
        "request": [{"field": "daily_budget", "value": "120.00"}],
        "response": [{"status": "applied", "error": None}],
        "state_snapshot": {"daily_budget": "120.00"},
        "error": {"code": "rate_limited", "retryable": True},
        "platform_request_id": "req-1",
        "attempt": 3,
    }
    log_event(**fields)
    log_events([fields, fields | {"request": None, "error": None, "platform_request_id": None, "actor": "worker:x"}])
    orm, fast, sparse = raw_rows(
        ActionExecutionLog._meta.db_table, "action_id = %s ORDER BY id", [rich_action.pk], exclude={"id"}
    )
    assert fast == orm
    assert (sparse["request"], sparse["error"], sparse["platform_request_id"], sparse["actor"]) == (
        None,
        None,
        "",
        "worker:x",
    )
    assert ActionExecutionLog.objects.filter(action=rich_action, request__isnull=True).count() == 1


def test_settling_200_actions_builds_no_history_or_log_instance_and_a_bounded_number_of_queries(
    campaign, approver, monkeypatch
):
    def pending(n: int) -> list[Action]:
        return Action.objects.bulk_create(
            [
                Action(
                    tenant_id=campaign.tenant_id,
                    connection_id=campaign.connection_id,
                    entity=campaign,
                    platform=campaign.connection.platform,
                    action_type="adjust_budget",
                    params={"new_budget": "120.00"},
                )
                for _ in range(n)
            ]
        )

    def cancel(actions: list[Action]) -> list[Action]:
        return transition_actions(
            actions,
            "cancel",
            actor=approver,
            reason="tidying up",
            kwargs={"reason": "not needed", "at": FROZEN},
            event=LogEvent.CANCELLED,
            message="Cancelled: not needed.",
        )

    built: dict[type, int] = {}
    original = Model.__init__

    def counting_init(self, *args, **kwargs):
        built[type(self)] = built.get(type(self), 0) + 1
        original(self, *args, **kwargs)

    few, many = pending(20), pending(200)
    with CaptureQueriesContext(connection) as few_queries:
        cancel(few)
    monkeypatch.setattr(Model, "__init__", counting_init)
    with CaptureQueriesContext(connection) as many_queries:
        moved = cancel(many)
    monkeypatch.undo()

    assert len(moved) == 200
    assert built.get(Action.history.model, 0) == 0 and built.get(ActionExecutionLog, 0) == 0
    assert len(many_queries) == len(few_queries)  # one statement per table, whatever the number of rows
    assert Action.history.filter(id__in=[a.pk for a in many], history_change_reason="tidying up").count() == 200
    assert ActionExecutionLog.objects.filter(action__in=many, event=LogEvent.CANCELLED).count() == 200


def test_bulk_set_stores_nulls_datetimes_booleans_and_json_as_save_would(campaign):
    first, second = ActionFactory(entity=campaign), ActionFactory(entity=campaign)
    first.before_state, second.before_state = None, {"status": "paused", "list": [1, "two", None]}
    first.rollback_deadline, second.rollback_deadline = FROZEN, None
    first.error_retryable, second.error_retryable = False, None
    first.attempts, second.attempts = 4, 0
    assert bulk_set([first, second], ["before_state", "rollback_deadline", "error_retryable", "attempts"]) == 2
    stored = {a.pk: a for a in Action.objects.filter(pk__in=[first.pk, second.pk])}
    assert (stored[first.pk].rollback_deadline, stored[first.pk].error_retryable, stored[first.pk].attempts) == (
        FROZEN,
        False,
        4,
    )
    assert stored[second.pk].before_state == {"status": "paused", "list": [1, "two", None]}
    assert stored[second.pk].rollback_deadline is None and stored[second.pk].error_retryable is None
    assert Action.objects.filter(pk=first.pk, before_state__isnull=True).exists()  # SQL NULL, not JSON null
