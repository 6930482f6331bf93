"""The safety gate in the admin: the action page shows its one-entity preflight and
breaches, and the override of a single action is requested and approved there."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.models import Action, ActionStatus
from budgetradar.roles import Role
from safety.gate import action_preflight_request
from safety.overrides import action_override_request, override_reject
from scenarios.models import GuardrailOverride, GuardrailPolicy
from tests.factories import ActionFactory, member

pytestmark = pytest.mark.django_db


def url(name: str, *args) -> str:
    return reverse(f"admin:actions_action_{name}", args=args)


def confirmation(client, operation: str, action: Action) -> str:
    response = client.get(url(operation, action.pk))
    assert response.status_code == 302
    return response["Location"]


def test_a_single_actions_override_is_requested_and_approved_on_its_page(
    client, tenant, campaign, approver, tenant_admin
):
    second_admin = member(tenant, Role.ADMIN, "acme-admin-2")
    GuardrailPolicy.objects.create(tenant=tenant, name="Tight", max_increase_pct=Decimal("10"))
    action = ActionFactory(entity=campaign, params={"new_budget": "150.00", "budget_type": "daily"})

    client.force_login(approver)
    page = client.get(confirmation(client, "approve", action)).content.decode()
    assert "Skipped" in page and "1 critical guardrail breach stands" in page
    assert "daily budget 100.00 → 150.00 EUR (+50.00%); 1 critical, " in page
    assert not action.preflights.exists()  # the confirmation (a GET) stores nothing; the button does
    client.post(url("preflight", action.pk))
    change = client.get(url("change", action.pk)).content.decode()
    assert 'id="gate-changes"' in change and "rises 50.00%" in change
    assert 'id="request-override"' not in change  # approvers cannot override

    client.force_login(tenant_admin)
    run_id = action.preflights.get().run_id
    client.post(url("override_request", action.pk), {"preflight": run_id, "reason": "Black Friday"})
    override = GuardrailOverride.objects.get(preflight__action=action)
    page = client.get(url("change", action.pk)).content.decode()
    assert "Override requested by acme-admin: “Black Friday”" in page
    assert f'id="approve-override-button-{override.pk}"' not in page  # not by the requester

    client.force_login(second_admin)
    page = client.get(url("change", action.pk)).content.decode()
    assert f'id="approve-override-button-{override.pk}"' in page
    client.post(url("override_approve", action.pk, override.pk))
    assert GuardrailOverride.objects.get(pk=override.pk).approved_by == second_admin

    client.force_login(approver)
    confirm = confirmation(client, "approve", action)
    assert "Will be approved" in client.get(confirm).content.decode()
    client.post(confirm, {"reason": ""})
    assert Action.objects.get(pk=action.pk).status == ActionStatus.APPROVED


def test_run_a_preflight_from_the_action_page(client, campaign, approver):
    action = ActionFactory(entity=campaign, params={"new_budget": "120.00", "budget_type": "daily"})
    client.force_login(approver)
    assert 'id="gate-none"' in client.get(url("change", action.pk)).content.decode()
    response = client.post(url("preflight", action.pk), follow=True)
    page = response.content.decode()
    assert "daily budget 100.00 → 120.00 EUR (+20.00%); 0 critical, " in page
    assert 'id="gate-changes"' in page
    assert client.get(url("preflight", action.pk)).status_code == 405


def test_an_absurd_amount_in_the_admin_is_a_form_error_naming_the_ceiling(client, operator, campaign):
    client.force_login(operator)
    data = {"entity": campaign.pk, "action_type": "adjust_budget", "new_budget": "99999999999999999999.99"}
    response = client.post(reverse("admin:actions_recommendation_add"), data)
    assert response.status_code == 200
    assert "above the ceiling of 1000000.00 EUR" in response.content.decode()
    assert not Action.objects.exists()


def test_a_rejected_override_is_shown_as_rejected_with_who_and_when(client, tenant, campaign, tenant_admin):
    second_admin = member(tenant, Role.ADMIN, "acme-admin-2")
    GuardrailPolicy.objects.create(tenant=tenant, name="Tight", max_increase_pct=Decimal("10"))
    action = ActionFactory(entity=campaign, params={"new_budget": "150.00", "budget_type": "daily"})
    action_preflight_request(action=action, actor=tenant_admin)
    override = action_override_request(action=action, actor=tenant_admin, reason="Black Friday")
    override_reject(override=override, actor=second_admin, comment="Too much")

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=tenant_admin)[0].key}")
    [shown] = api.get(f"/api/actions/{action.pk}").json()["preflight"]["overrides"]
    override.refresh_from_db()
    assert (shown["state"], shown["requested_by"], shown["rejected_by"]) == ("rejected", "acme-admin", "acme-admin-2")
    assert shown["rejected_at"] == override.rejected_at.isoformat() and shown["approved_at"] is None

    client.force_login(second_admin)
    page = client.get(url("change", action.pk)).content.decode()
    assert "was rejected by acme-admin-2 at " in page
    assert f'id="approve-override-button-{override.pk}"' not in page  # a rejected override is not pending
