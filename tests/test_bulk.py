"""The bulk write helpers store exactly what the ORM would store."""

from __future__ import annotations

from actions.models import Action, ActionExecutionLog, LogEvent
from actions.services.settlement import write_history
from budgetradar.bulk import bulk_insert, bulk_set
from tests.factories import ActionFactory


def test_bulk_set_writes_values_as_save_would_and_respects_conditions(campaign):
    first, second = ActionFactory(entity=campaign), ActionFactory(entity=campaign)
    first.before_state, second.before_state = {"daily_budget": "100.00"}, {"status": "paused"}
    first.error_message = second.error_message = "checked"
    updated = bulk_set([first, second], ["before_state", "error_message"], only_if={"status": "pending_approval"})
    assert updated == 2
    assert Action.objects.get(pk=first.pk).before_state == {"daily_budget": "100.00"}
    assert Action.objects.get(pk=second.pk).error_message == "checked"
    assert bulk_set([first], ["error_message"], only_if={"status": "succeeded"}) == 0


def test_bulk_insert_and_history_rows_read_back_like_orm_rows(campaign, approver):
    action = ActionFactory(entity=campaign, params={"new_budget": "120.00", "budget_type": "daily"})
    bulk_insert(
        [
            ActionExecutionLog(
                tenant_id=action.tenant_id,
                action=action,
                event=LogEvent.REQUEST_SENT,
                request=[{"field": "daily_budget", "value": "120.00"}],
                actor="worker:x",
            )
        ]
    )
    log = ActionExecutionLog.objects.get(action=action)
    assert log.request == [{"field": "daily_budget", "value": "120.00"}] and log.created_at is not None
    write_history([action], actor=approver, reason="checked")
    row = action.history.first()
    assert (row.history_user, row.history_change_reason, row.params) == (approver, "checked", action.params)


def test_bulk_set_writes_the_shared_fields_in_the_same_statement(campaign, django_assert_num_queries):
    first, second = ActionFactory(entity=campaign), ActionFactory(entity=campaign)
    first.before_state, second.before_state = {"daily_budget": "100.00"}, {"daily_budget": "200.00"}
    with django_assert_num_queries(1):
        updated = bulk_set([first, second], ["before_state"], same={"error_message": "checked", "attempts": 3})
    assert updated == 2
    rows = Action.objects.filter(pk__in=[first.pk, second.pk]).order_by("pk")
    assert [(a.before_state, a.error_message, a.attempts) for a in rows] == [
        ({"daily_budget": "100.00"}, "checked", 3),
        ({"daily_budget": "200.00"}, "checked", 3),
    ]
