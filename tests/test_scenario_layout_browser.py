"""At 1400 px the scenario page (its items inline with the Delete column), the scenario list
and the deployment list fit the window: nothing scrolls sideways."""

from __future__ import annotations

from decimal import Decimal

import pytest

from budgetradar.roles import Role
from scenarios.models import Scenario, ScenarioItem
from scenarios.services.deploy import deployment_create
from scenarios.services.preflight import preflight_for_scenario
from tests import factories, test_admin_browser
from tests.engine_helpers import run_worker, sandbox_world
from tests.test_override_browser import WIDTH, log_in

browser_page = test_admin_browser.browser_page
pytestmark = test_admin_browser.pytestmark


@pytest.mark.parametrize(
    "page_of",
    [
        pytest.param(lambda s: f"/admin/scenarios/scenario/{s.pk}/change/", id="scenario-with-items"),
        pytest.param(lambda s: "/admin/scenarios/scenario/", id="scenario-list"),
        pytest.param(lambda s: "/admin/scenarios/deployment/", id="deployment-list"),
    ],
)
def test_scenario_pages_fit_1400_px(transactional_db, live_server, browser_page, page_of):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    approver = factories.member(tenant, Role.ADMIN, "acme-admin")  # may edit the items
    world = sandbox_world(tenant)
    scenario = Scenario.objects.create(tenant=tenant, name="Q3 shift across every European search campaign")
    for c, i in [(1, 1), (1, 2), (2, 1), (2, 2)]:
        ScenarioItem.objects.create(
            scenario=scenario, entity=world.entity(f"sandbox-adset-{c}-{i}"), daily_budget=Decimal("44.00")
        )
    preflight_for_scenario(scenario=scenario, actor=approver)
    deployment_create(scenario=scenario, actor=approver, mode="live", idempotency_key="layout")
    run_worker()
    page = browser_page
    page.set_viewport_size({"width": WIDTH, "height": 900})
    log_in(page, live_server.url, approver)

    page.goto(live_server.url + page_of(scenario))
    page.wait_for_selector("#content")
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    if "change" in page_of(scenario):
        delete = page.locator("#items-group td.delete").first  # the items' Delete column is on screen
        box = delete.bounding_box()
        assert box is not None and box["x"] + box["width"] <= WIDTH
