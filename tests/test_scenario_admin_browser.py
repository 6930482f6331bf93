"""An approver preflights a scenario, reads the diff, deploys it live through the
confirmation page and watches the deployment settle, in a real browser."""

from __future__ import annotations

from decimal import Decimal

from budgetradar.roles import Role
from scenarios.models import Deployment, Scenario, ScenarioItem
from tests import factories, test_admin_browser
from tests.engine_helpers import run_worker, sandbox_world

# Debian Chromium through Playwright, as in test_admin_browser (skipped when not installed).
browser_page = test_admin_browser.browser_page
pytestmark = test_admin_browser.pytestmark


def test_approver_preflights_and_deploys_a_scenario_live(transactional_db, live_server, browser_page):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    approver = factories.member(tenant, Role.APPROVER, "acme-approver")
    world = sandbox_world(tenant)
    scenario = Scenario.objects.create(tenant=tenant, name="Q3 shift")
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-1"), daily_budget=Decimal("150.00"))
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-2"), status="paused")
    page = browser_page

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", approver.username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/scenarios/scenario/{scenario.pk}/change/")
    assert "No preflight yet" in page.locator("#preflight").inner_text()

    page.click("#tool-preflight")
    page.wait_for_selector(".br-diff-entity")
    assert "2 of 2 entities change" in page.locator(".messagelist").inner_text()
    raised = page.locator(".br-diff-entity[data-key='sandbox:campaign:sandbox-cmp-1']").inner_text()
    assert "100.00 EUR" in raised and "150.00 EUR" in raised and "+50.00 EUR" in raised
    paused = page.locator(".br-diff-entity[data-key='sandbox:campaign:sandbox-cmp-2']").inner_text()
    assert "Delivery" in paused and "active" in paused and "paused" in paused
    assert "+50.00 EUR" in page.locator("#diff-summary").inner_text()

    page.click("#tool-deploy")
    page.wait_for_selector("#deploy-form")
    key = page.locator("#deploy-form input[name=idempotency_key]").input_value()
    assert len(key) == 36
    assert "+50.00 EUR" in page.locator("#preflight").inner_text()
    page.click("#deploy-form input[type=submit]")

    page.wait_for_selector("#deployment-results")
    deployment = Deployment.objects.get()
    assert deployment.idempotency_key == key
    assert "This page follows its progress" in page.locator(".messagelist").inner_text()
    assert page.locator("meta[http-equiv=refresh]").count() == 1  # refreshes while it runs

    run_worker()
    page.reload()
    assert "Succeeded" in page.locator(".field-status_badge").inner_text()
    results = page.locator("#deployment-results").inner_text()
    assert "Daily budget: 100.00 EUR → 150.00 EUR" in results
    assert "Status: active → paused" in results
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    # The bar is green from the stylesheet (the CSP refuses inline styles) and spans the bar.
    succeeded = page.locator("#deployment-bar rect[data-segment=succeeded]")
    assert succeeded.evaluate("r => getComputedStyle(r).fill") == "rgb(46, 125, 50)"
    assert succeeded.bounding_box()["width"] == page.locator("#deployment-bar").bounding_box()["width"]
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")
    assert world.platform("sandbox-cmp-2").status == "paused"
