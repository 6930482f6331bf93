"""GET /api/actions/{id}/rollback-preview: the admin's rollback confirmation, as JSON, writing nothing."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from actions.models import Action, ActionExecutionLog
from platforms.models import CircuitState, PlatformConnection
from platforms.sandbox.models import SandboxEntity, SandboxRequest
from scenarios.models import GuardrailPolicy
from tests.factories import ActionFactory, ConnectionFactory, EntityFactory
from tests.test_admin_rollback_preview import executed, rollback_confirmation, stored, world, writes
from tests.test_api_actions import client_for

pytestmark = pytest.mark.django_db(transaction=True)

__all__ = ["executed", "world"]  # fixtures shared with the admin's rollback preview tests


def preview(client, action: Action) -> dict:
    before = (*stored(), Action.objects.count(), ActionExecutionLog.objects.count())
    with CaptureQueriesContext(db_connection) as queries:
        response = client.get(f"/api/actions/{action.pk}/rollback-preview/")
    assert writes(queries) == []
    assert (*stored(), Action.objects.count(), ActionExecutionLog.objects.count()) == before
    return response


def test_a_succeeded_action_shows_the_live_value_and_the_change(world, approver, executed):
    reads = SandboxRequest.objects.count()
    response = preview(client_for(approver), executed)
    assert response.status_code == 200
    body = response.json()
    assert SandboxRequest.objects.count() > reads  # the platform was read live
    assert body["action"] == executed.pk and body["possible"] is True and body["refusal"] is None
    assert body["change"] == "Daily budget: live now 150.00 EUR → will restore 100.00 EUR"
    assert body["changes"] == [
        {
            "field": "daily_budget",
            "label": "Daily budget",
            "live": "150.00",
            "live_text": "150.00 EUR",
            "restore": "100.00",
            "restore_text": "100.00 EUR",
            "set_by_budgetradar": "150.00",
            "drifted": False,
        }
    ]
    assert body["live_read_at"] is not None and body["live_found"] is True
    assert body["drift_warning"] is None and body["deadline"].startswith("Until ")


def test_after_someone_changed_the_value_on_the_platform_the_drift_warning_appears(world, approver, executed):
    SandboxEntity.objects.filter(account=world.account, external_id="sandbox-cmp-1").update(
        daily_budget=Decimal("300.00")
    )
    body = preview(client_for(approver), executed).json()
    assert body["change"] == "Daily budget: live now 300.00 EUR → will restore 100.00 EUR"
    assert body["changes"][0]["live"] == "300.00" and body["changes"][0]["drifted"] is True
    assert body["drift_warning"].startswith("Drift: the platform (read ")
    assert "daily budget is 300.00 EUR but BudgetRadar set 150.00 EUR" in body["drift_warning"]
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("300.00")


def test_an_expired_action_says_why_in_the_admins_words(client, world, approver, executed):
    Action.objects.filter(pk=executed.pk).update(rollback_deadline=timezone.now() - timedelta(hours=1))
    executed.refresh_from_db()
    body = preview(client_for(approver), executed).json()
    assert body["possible"] is False
    assert body["refusal"].startswith(f"The rollback instructions of action #{executed.pk} expired at ")
    client.force_login(approver)
    assert body["refusal"] in rollback_confirmation(client, executed)[1]


def test_an_action_that_never_ran_cannot_be_rolled_back_and_says_so(world, approver):
    action = ActionFactory(entity=world.entity("sandbox-cmp-1"))
    body = preview(client_for(approver), action).json()
    assert body["possible"] is False
    assert body["refusal"] == (
        f"Action #{action.pk} is waiting for approval; only succeeded or partially executed actions can be rolled back."
    )
    assert body["change"] == "No rollback instructions: nothing was applied." and body["changes"] == []


def test_a_critical_breach_of_going_back_makes_it_impossible_as_the_request_and_the_admin_say(
    client, world, tenant, approver, executed
):
    GuardrailPolicy.objects.create(
        tenant=tenant, name="Careful", max_decrease_pct=Decimal("20"), severities={"max_decrease_pct": "critical"}
    )
    body = preview(client_for(approver), executed).json()
    assert body["possible"] is False
    assert "1 critical guardrail breach stands and no approved override was given" in body["refusal"]
    assert "falls 33.33%" in body["refusal"]
    assert body["change"] == "Daily budget: live now 150.00 EUR → will restore 100.00 EUR"  # still shown

    client.force_login(approver)
    page = rollback_confirmation(client, executed)[1]
    assert "falls 33.33%" in page and "Nothing to roll back" in page
    refused = client_for(approver).post(f"/api/actions/{executed.pk}/rollback/", {"reason": "undo"}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "critical_breaches"
    same = re.compile(r"pf-[0-9a-f]{20}")  # the preview's run is not stored; the request stores its own
    assert same.sub("pf-", refused.json()["message"]) == same.sub("pf-", body["refusal"])
    assert Action.objects.get(pk=executed.pk).status == "succeeded"


def test_an_open_circuit_makes_it_impossible(world, approver, executed):
    PlatformConnection.objects.filter(pk=executed.connection_id).update(
        circuit_state=CircuitState.OPEN, circuit_opened_at=timezone.now(), circuit_reason="auth expired"
    )
    body = preview(client_for(approver), Action.objects.get(pk=executed.pk)).json()
    assert body["possible"] is False and body["refusal"].startswith("The circuit breaker of connection Sandbox is open")


def test_a_viewer_is_refused_and_another_tenants_action_does_not_exist(world, viewer, approver, executed, other_tenant):
    response = preview(client_for(viewer), executed)
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    theirs = ActionFactory(entity=EntityFactory(connection=ConnectionFactory(tenant=other_tenant)))
    response = preview(client_for(approver), theirs)
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_the_schema_documents_the_preview():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/actions/{id}/rollback-preview/"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RollbackPreview"
    }
