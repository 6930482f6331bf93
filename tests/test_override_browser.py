"""In a real browser at 1400 px: an override requested by one admin and approved by
another on the override's own page unblocks the live deploy; a live deploy on the sandbox
is rolled back from its deployment page through a confirmation that shows what will be
restored, and the page then says rolled back with the outcome bar."""

from __future__ import annotations

from decimal import Decimal

from budgetradar.roles import Role
from scenarios.models import Deployment, GuardrailOverride, GuardrailPolicy, Scenario, ScenarioItem
from scenarios.services.deploy import deployment_create
from scenarios.services.preflight import preflight_for_scenario
from tests import factories, test_admin_browser
from tests.engine_helpers import run_worker, sandbox_world

# Debian Chromium through Playwright, as in test_admin_browser (skipped when not installed).
browser_page = test_admin_browser.browser_page
pytestmark = test_admin_browser.pytestmark

WIDTH = 1400


def log_in(page, base: str, user) -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth") <= WIDTH


def test_an_override_requested_by_one_admin_and_approved_by_another_unblocks_the_deploy(
    transactional_db, live_server, browser_page
):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    requester = factories.member(tenant, Role.ADMIN, "acme-requester")
    second = factories.member(tenant, Role.ADMIN, "acme-second")
    world = sandbox_world(tenant)
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("20"))
    scenario = Scenario.objects.create(tenant=tenant, name="Black Friday")
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-1"), daily_budget=Decimal("150.00"))
    preflight_for_scenario(scenario=scenario, actor=requester)
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": WIDTH, "height": 900})

    log_in(page, base, requester)
    page.goto(f"{base}/admin/scenarios/scenario/{scenario.pk}/deploy/")
    assert "Live deploy refused" in page.locator("#deploy-blocked").inner_text()
    page.fill("#id_override_reason", "Black Friday push, agreed with the CFO")
    page.click("#override-request-form input[type=submit]")
    page.wait_for_selector("#override-decision")
    override = GuardrailOverride.objects.get()
    told = page.locator(".messagelist").inner_text()
    assert "requested" in told and "Another person than acme-requester" in told
    assert "You requested this override" in page.locator("#override-decision").inner_text()
    assert page.locator("#override-approve").count() == 0
    page.goto(f"{base}/admin/scenarios/scenario/{scenario.pk}/deploy/")
    assert page.locator("#override-request-form").count() == 0  # not offered again while pending

    log_in(page, base, second)
    page.goto(f"{base}/admin/scenarios/guardrailoverride/{override.pk}/change/")
    decision = page.locator("#override-decision").inner_text()
    assert "Max increase per change (%)" in decision and "EUR" in decision
    assert "acme-requester" in decision and "Black Friday push, agreed with the CFO" in decision
    assert fits(page)
    page.click("#override-approve")
    page.wait_for_selector("#decision-consequence")
    assert "Nothing is deployed yet" in page.locator("#decision-consequence").inner_text()
    page.fill("#id_comment", "Checked the forecast")
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector("#override-decision")
    assert "approved" in page.locator(".messagelist").inner_text()
    assert "Approved by acme-second" in page.locator("#override-next-step").inner_text()

    page.click("#override-links >> text=Its Deploy live page")
    page.wait_for_selector("#deploy-form")
    assert "acme-second" in page.locator("#approved-override").inner_text()
    page.click("#deploy-form input[type=submit]")
    page.wait_for_selector("#deployment-results")
    assert Deployment.objects.get().override == override
    run_worker()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")


def test_a_live_deployment_is_rolled_back_from_its_page(transactional_db, live_server, browser_page):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    approver = factories.member(tenant, Role.APPROVER, "acme-approver")
    world = sandbox_world(tenant)
    scenario = Scenario.objects.create(tenant=tenant, name="Q3 shift")
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-1"), daily_budget=Decimal("150.00"))
    preflight_for_scenario(scenario=scenario, actor=approver)
    deployment_create(scenario=scenario, actor=approver, mode="live", idempotency_key="browser-rollback")
    run_worker()
    deployment = Deployment.objects.get()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": WIDTH, "height": 900})

    log_in(page, base, approver)
    page.goto(f"{base}/admin/scenarios/deployment/{deployment.pk}/change/")
    assert "Succeeded" in page.locator(".field-status_badge").inner_text()
    page.click("#tool-rollback")
    page.wait_for_selector("#confirmation-rows")
    rows = page.locator("#confirmation-rows").inner_text()
    assert "Campaign 1" in rows and "live now 150.00 EUR → will restore 100.00 EUR" in rows
    assert "goes back to the value its entity had before the deployment" in page.locator("#content-main").inner_text()
    page.fill("#id_reason", "CPA spike")
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector("#deployment-progress")
    assert "Rollback of deployment" in page.locator(".messagelist").inner_text()

    run_worker()
    page.reload()
    assert "Rolled back" in page.locator(".field-status_badge").inner_text()
    assert page.locator("#tool-rollback").count() == 0
    assert "1 rolled back" in page.locator("#deployment-counts").inner_text()
    segment = page.locator("#deployment-bar rect[data-segment=rolled-back]")
    assert segment.bounding_box()["width"] == page.locator("#deployment-bar").bounding_box()["width"]
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")
