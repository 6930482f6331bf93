"""The run page's charts draw in a real browser with every non-local request refused (offline)."""

from __future__ import annotations

from datetime import date

import pytest

from budgetradar.roles import Role
from planning.models import CurveFit, PlannerRun
from tests import factories
from tests.test_admin_browser import CHROMIUM, browser_page  # noqa: F401 (fixture)
from tests.test_planning_admin import reasoning_row

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian Chromium is not installed at /usr/bin/chromium"),
]


def test_allocation_and_curve_charts_render_offline(transactional_db, live_server, browser_page):  # noqa: F811
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    admin = factories.member(tenant, Role.ADMIN, "acme-admin")
    connection = factories.ConnectionFactory(tenant=tenant)
    entity = factories.EntityFactory(tenant=tenant, connection=connection, name="EU Search - Brand")
    run = PlannerRun.objects.create(
        tenant=tenant,
        connection=connection,
        trigger="manual",
        local_date=date(2026, 6, 1),
        status="succeeded",
        reasoning=[reasoning_row(entity, "100.00", "150.00")],
        fallback_level="curves",
    )
    CurveFit.objects.create(
        tenant=tenant,
        connection=connection,
        entity=entity,
        run=run,
        status="ok",
        vmax=20,
        half_saturation=100,
        shape=1.0,
        adstock=0.1,
        r_squared=0.9,
        confidence="high",
        max_spend=120,
    )
    page = browser_page
    refused = []

    def only_local(route):
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", admin.username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/planning/plannerrun/{run.pk}/change/")
    page.wait_for_function("() => window.Chart && Chart.getChart('br-allocation') && Chart.getChart('br-curve-1')")
    bars = page.evaluate("() => Chart.getChart('br-allocation').data.datasets.map(d => d.data)")
    assert bars == [[100.0], [150.0]]
    points = page.evaluate("() => Chart.getChart('br-curve-1').data.datasets.map(d => d.data.length)")
    assert points[0] == 40 and points[1:] == [1, 1]
    assert "its marginal CPA 4.2 was below the plan" in page.locator("#br-reasoning").inner_text()
    assert refused == []
