"""Adding a recommendation in the admin: typed fields per action type, never JSON."""

from __future__ import annotations

from decimal import Decimal

from django.urls import reverse

from actions.models import Action, ActionStatus
from actions.services.recommendation_params import params_from_values

ADD = "admin:actions_recommendation_add"


def post(client, **data):
    return client.post(reverse(ADD), data, follow=True)


def test_the_form_offers_typed_fields_with_the_accounts_currency_and_no_json(client, operator, campaign):
    client.force_login(operator)
    page = client.get(reverse(ADD)).content.decode()
    assert 'name="params"' not in page
    for name in ("new_budget", "budget_change_pct", "new_bid", "daily_budget", "status", "budget_type"):
        assert f'name="{name}"' in page
    assert "Amount in the account's currency (EUR)." in page
    assert '<option value="paused">Paused</option>' in page


def test_a_new_budget_becomes_an_action_that_needs_approval(client, operator, campaign):
    client.force_login(operator)
    response = post(client, entity=campaign.pk, action_type="adjust_budget", budget_type="daily", new_budget="450")
    action = Action.objects.get(entity=campaign)
    assert action.status == ActionStatus.PENDING_APPROVAL
    assert action.params == {"new_budget": "450", "budget_type": "daily"}
    page = response.content.decode()
    assert f"action #{action.pk}" in page and "needs approval before anything changes" in page
    assert response.redirect_chain[-1][0] == reverse("admin:actions_action_change", args=[action.pk])


def test_a_percentage_changes_the_current_budget(client, operator, campaign):
    current = Decimal(campaign.daily_budget)
    client.force_login(operator)
    post(client, entity=campaign.pk, action_type="adjust_budget", budget_change_pct="10")
    action = Action.objects.get(entity=campaign)
    assert Decimal(action.params["new_budget"]) == (current * Decimal("1.10")).quantize(Decimal("0.01"))


def test_errors_name_the_field_they_are_about(client, operator, campaign):
    client.force_login(operator)
    page = post(client, entity=campaign.pk, action_type="adjust_budget", new_budget="-3").content.decode()
    assert "New budget must be greater than zero" in page and "params." not in page
    page = post(
        client, entity=campaign.pk, action_type="adjust_budget", new_budget="200", budget_change_pct="5"
    ).content.decode()
    assert "Give either a new budget or a change in percent, not both." in page
    page = post(client, entity=campaign.pk, action_type="set_values", status="archived").content.decode()
    assert "Select a valid choice" in page
    page = post(client, entity=campaign.pk, action_type="set_values").content.decode()
    assert "Give at least one value" in page
    assert not Action.objects.exists()


def test_status_and_values_are_built_into_params(campaign):
    params = params_from_values("set_values", {"status": "paused", "daily_budget": Decimal("80")}, entity=campaign)
    assert params == {"status": "paused", "daily_budget": "80"}
    assert params_from_values("pause_campaign", {"new_budget": Decimal("5")}, entity=campaign) == {}


def test_an_ad_set_only_action_on_a_campaign_names_the_entity(client, operator, campaign):
    client.force_login(operator)
    page = post(client, entity=campaign.pk, action_type="adjust_bid", new_bid="1.20").content.decode()
    assert "applies to an ad set, not a campaign" in page
