"""The override flow on the override's own page: the breaches as sentences, who asked and
why, what happens next, Approve / Reject through a confirmation page with a comment, the
same rules as the service (not the requester; four-eyes on the scenario's authors), and
the history recording the decision with its comment. GET writes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from budgetradar.roles import Role
from scenarios.models import GuardrailOverride, GuardrailPolicy, Scenario
from tests import factories
from tests.engine_helpers import sandbox_world
from tests.test_scenario_admin import deploy_page, make_scenario, preflight, url


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant)


@pytest.fixture
def people(tenant):
    return {
        "requester": factories.member(tenant, Role.ADMIN, "acme-requester"),
        "author": factories.member(tenant, Role.ADMIN, "acme-author"),
        "approver": factories.member(tenant, Role.ADMIN, "acme-second"),
    }


@pytest.fixture
def blocked(tenant, world, people):
    """A scenario written by ``author`` whose preflight breaches a critical +20 % rule."""
    tenant.four_eyes_required = True
    tenant.save(update_fields=["four_eyes_required"])
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("20"))
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    Scenario.objects.filter(pk=scenario.pk).update(created_by=people["author"], changed_by=people["author"])
    scenario.refresh_from_db()
    return scenario, preflight(scenario, people["requester"])


def page_of(override: GuardrailOverride) -> str:
    return reverse("admin:scenarios_guardrailoverride_change", args=[override.pk])


def decide(override: GuardrailOverride, decision: str) -> str:
    return reverse("admin:scenarios_guardrailoverride_decide", args=[override.pk, decision])


def request_override(client, scenario, run, user, reason="Launch day"):
    client.force_login(user)
    return client.post(
        url(Scenario, "override_request", scenario.pk), {"preflight": run.pk, "reason": reason}, follow=True
    )


def test_the_requester_is_told_what_happens_next_and_not_offered_a_second_request(client, blocked, people):
    scenario, run = blocked
    response = request_override(client, scenario, run, people["requester"])
    override = GuardrailOverride.objects.get()
    assert response.redirect_chain[-1][0] == page_of(override)
    page = response.content.decode()
    assert "Another person than acme-requester with the override permission" in page
    assert "on this override&#x27;s page" in page or "on this override's page" in page
    assert 'id="override-approve"' not in page and "You requested this override" in page

    deploy = client.get(url(Scenario, "deploy", scenario.pk)).content.decode()
    assert 'id="override-request-form"' not in deploy and f'id="override-page-{override.pk}"' in deploy
    # A second request (a stale form, or the API) is refused by the service too.
    request_override(client, scenario, run, people["requester"], reason="again")
    assert GuardrailOverride.objects.count() == 1


def test_the_requester_and_the_author_cannot_approve_under_four_eyes(client, blocked, people):
    scenario, run = blocked
    request_override(client, scenario, run, people["requester"])
    override = GuardrailOverride.objects.get()

    response = client.post(decide(override, "approve"), {"comment": "mine"}, follow=True)
    assert "You requested this override; another person" in response.content.decode()

    client.force_login(people["author"])
    page = client.get(page_of(override)).content.decode()
    assert 'id="override-approve"' not in page and "Four-eyes approval is required" in page
    response = client.post(decide(override, "approve"), {"comment": "I wrote it"}, follow=True)
    assert "Four-eyes approval is required" in response.content.decode()
    override.refresh_from_db()
    assert not override.approved


def test_the_approver_sees_the_breaches_confirms_with_a_comment_and_history_records_it(client, blocked, people):
    scenario, run = blocked
    request_override(client, scenario, run, people["requester"])
    override = GuardrailOverride.objects.get()

    client.force_login(people["approver"])
    page = client.get(page_of(override)).content.decode()
    assert "Max increase per change (%)" in page and "max_increase_pct" not in page.split('id="override-decision"')[1]
    assert "EUR" in page.split('id="override-breaches"')[1].split("</ul>")[0]
    assert "acme-requester" in page and "Launch day" in page
    assert reverse("admin:scenarios_scenario_deploy", args=[scenario.pk]) in page
    assert reverse("admin:scenarios_scenario_change", args=[scenario.pk]) in page

    confirm = client.get(decide(override, "approve")).content.decode()
    override.refresh_from_db()
    assert not override.approved  # GET writes nothing
    assert "Approving lets a live deploy of scenario" in confirm and "Nothing is deployed yet" in confirm
    assert 'name="comment"' in confirm and "Max increase per change (%)" in confirm

    response = client.post(decide(override, "approve"), {"comment": "CFO agreed by phone"}, follow=True)
    assert response.redirect_chain[-1][0] == page_of(override)
    override.refresh_from_db()
    assert override.approved_by == people["approver"]
    latest = override.history.order_by("-history_date").first()
    assert latest.history_user == people["approver"]
    assert latest.history_change_reason == "override approved: CFO agreed by phone"
    history = client.get(reverse("admin:scenarios_guardrailoverride_history", args=[override.pk])).content.decode()
    assert "CFO agreed by phone" in history

    # The deploy page now offers the live deploy with the approved override.
    client.force_login(people["requester"])
    deploy, fields = deploy_page(client, scenario)
    assert 'id="approved-override"' in deploy and fields["override"] == str(override.pk)


def test_a_rejection_needs_a_comment_keeps_the_block_and_allows_a_new_request(client, blocked, people):
    scenario, run = blocked
    request_override(client, scenario, run, people["requester"])
    override = GuardrailOverride.objects.get()

    client.force_login(people["approver"])
    confirm = client.get(decide(override, "reject")).content.decode()
    assert "Rejecting keeps the 1 critical breach below blocking" in confirm
    client.post(decide(override, "reject"), {"comment": ""})
    override.refresh_from_db()
    assert not override.rejected  # the form asks for the comment first
    client.post(decide(override, "reject"), {"comment": "Too big a jump before the weekend"})
    override.refresh_from_db()
    assert override.rejected_by == people["approver"] and not override.approved
    assert override.history.order_by("-history_date").first().history_change_reason == (
        "override rejected: Too big a jump before the weekend"
    )
    response = client.post(decide(override, "approve"), {"comment": "changed my mind"}, follow=True)
    assert "was rejected" in response.content.decode()

    client.force_login(people["requester"])
    page = client.get(page_of(override)).content.decode()
    assert "Rejected by acme-second" in page and 'id="override-buttons"' not in page
    assert 'id="override-request-form"' in client.get(url(Scenario, "deploy", scenario.pk)).content.decode()


def test_a_viewer_cannot_open_the_decision_page(client, blocked, people, viewer):
    scenario, run = blocked
    request_override(client, scenario, run, people["requester"])
    override = GuardrailOverride.objects.get()
    client.force_login(viewer)
    assert client.get(decide(override, "approve")).status_code == 403
    assert client.post(decide(override, "approve"), {"comment": "x"}).status_code == 403
