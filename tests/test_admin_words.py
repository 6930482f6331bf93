"""Words a person reads on admin pages: labels, grammar, currency, actors in history."""

from __future__ import annotations

import re

from django.urls import reverse

from actions.models import Action, ActionStatus, LogEvent
from actions.selectors import action_status_phrase
from actions.services.logs import log_event
from budgetradar.audit import audited_save
from budgetradar.words import actor_display, article, entity_type_label, error_label, plural
from scenarios.models import Deployment, DeploymentResult, GuardrailPolicy, PreflightRun
from tests import factories


def test_codes_become_words():
    assert article(entity_type_label("ad_set")) == "an ad set"
    assert article(entity_type_label("campaign")) == "a campaign"
    assert error_label("auth_expired") == "Access to the account expired"
    assert error_label("some_new_code") == "Some new code"
    assert plural(1, "action") == "1 action" and plural(3, "entity", "entities") == "3 entities"
    assert actor_display("worker:vm:12040:ab12cd34") == "scheduled worker (vm, process 12040)"
    assert actor_display("reconciler:vm:7:ff00") == "reconciler (vm, process 7)"
    assert actor_display("acme-approver") == "acme-approver"
    assert actor_display("") == "BudgetRadar"


def test_an_actions_state_reads_as_a_sentence(campaign):
    action = factories.ActionFactory(entity=campaign, status=ActionStatus.SUCCEEDED)
    assert f"Action #{action.pk} {action_status_phrase(action)}" == f"Action #{action.pk} has already succeeded"


def test_history_names_the_worker_and_shows_empty_fields_as_a_dash(client, viewer, approver, campaign):
    action = factories.ActionFactory(entity=campaign)
    action.approved_by = approver
    audited_save(action, actor=approver, reason="approved in the admin")
    audited_save(action, actor=None, reason="worker:vm:12040:ab12cd34 started job #5")
    client.force_login(viewer)

    html = client.get(reverse("admin:actions_action_history", args=[action.pk])).content.decode()

    assert "scheduled worker (vm, process 12040)" in html
    assert "scheduled worker (vm, process 12040) started job #5" in html
    assert "acme-approver" in html
    assert "pk=None" not in html and not re.search(r">\s*None\s*<", html)


def test_the_timeline_names_the_worker(client, viewer, campaign):
    action = factories.ActionFactory(entity=campaign)
    log_event(action=action, event=LogEvent.REQUEST_SENT, actor="worker:vm:12040:ab12cd34", message="sent")
    client.force_login(viewer)
    html = client.get(reverse("admin:actions_action_change", args=[action.pk])).content.decode()
    assert "scheduled worker (vm, process 12040)" in html
    assert "worker:vm:12040" not in html


def test_a_failed_action_shows_what_went_wrong_in_words(client, viewer, campaign):
    action = factories.ActionFactory(entity=campaign, status=ActionStatus.FAILED)
    Action.objects.filter(pk=action.pk).update(error_code="auth_expired", error_message="Token expired.")
    client.force_login(viewer)
    html = client.get(reverse("admin:actions_action_change", args=[action.pk])).content.decode()
    assert "Access to the account expired" in html
    assert "auth_expired" not in html
    assert "Rollback override drift" not in html  # only shown when someone overrode drift


def test_deployment_results_show_action_types_and_errors_in_words(client, viewer, tenant, campaign):
    preflight = PreflightRun.objects.create(tenant=tenant, run_id="pf-w", status="succeeded")
    deployment = Deployment.objects.create(
        tenant=tenant, preflight=preflight, mode="live", status="failed", idempotency_key="w", total=1, failed=1
    )
    DeploymentResult.objects.create(
        deployment=deployment,
        entity=campaign,
        action_type="set_values",
        status="failed",
        error_code="auth_expired",
        error_message="Token expired.",
    )
    client.force_login(viewer)
    html = client.get(reverse("admin:scenarios_deployment_change", args=[deployment.pk])).content.decode()
    assert "Apply scenario values" in html and "set_values" not in html
    assert "Access to the account expired" in html and "auth_expired" not in html
    assert "Sandbox · campaign · " in html


def test_an_entity_constraint_shows_money_with_its_currency(client, viewer, campaign):
    from planning.models import EntityConstraint

    EntityConstraint.objects.create(
        tenant=campaign.tenant, connection=campaign.connection, entity=campaign, min_daily_budget="400.0000"
    )
    client.force_login(viewer)
    html = client.get(reverse("admin:planning_entityconstraint_changelist")).content.decode()
    assert "400.00 EUR" in html and "400.0000" not in html


def test_an_entity_page_shows_its_budget_with_currency(client, viewer, campaign):
    client.force_login(viewer)
    html = client.get(reverse("admin:platforms_platformentity_change", args=[campaign.pk])).content.decode()
    assert "100.00 EUR" in html and "100.0000" not in html


def test_the_policy_form_names_the_currency_and_shows_amounts_at_its_precision(client, tenant_admin, tenant):
    policy = GuardrailPolicy.objects.create(tenant=tenant, name="Budgets", max_daily_budget="1000.00")
    client.force_login(tenant_admin)
    page = client.get(reverse("admin:scenarios_guardrailpolicy_change", args=[policy.pk])).content.decode()
    assert "Max daily budget (EUR)" in page
    assert 'value="1000.00"' in page and "1000.0000" not in page
