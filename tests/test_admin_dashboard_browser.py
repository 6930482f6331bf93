"""The dashboard in a real browser: what needs a person, and charts drawn under the CSP."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connections
from django.utils import timezone

from actions.models import Action, ActionStatus
from budgetradar.roles import Role
from tests import factories

# Debian Chromium through Playwright, as in test_admin_browser (skipped when not installed).
from tests.test_admin_browser import CHROMIUM, CHROMIUM_ARGS, pytestmark  # noqa: F401


@pytest.fixture
def browser_page(monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls while Playwright's loop runs
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(15_000)
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.problems = problems
        yield page
        browser.close()
        connections.close_all()


def test_a_person_sees_what_waits_and_the_accounts_charts(transactional_db, live_server, browser_page):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    viewer = factories.member(tenant, Role.VIEWER, "acme-viewer")
    connection = factories.ConnectionFactory(tenant=tenant, name="Acme Search")
    brand = factories.EntityFactory(connection=connection, name="EU Search - Brand")
    today = timezone.now().astimezone(ZoneInfo(connection.time_zone)).date()
    for n in range(1, 31):
        factories.PerformanceFactory(entity=brand, date=today - timedelta(days=n), spend=Decimal(100 + n))
    pending = factories.ActionFactory(entity=brand)
    Action.objects.filter(pk=pending.pk).update(created_at=timezone.now() - timedelta(hours=2))
    changed = factories.ActionFactory(entity=brand, status=ActionStatus.SUCCEEDED)
    Action.objects.filter(pk=changed.pk).update(finished_at=timezone.now() - timedelta(days=3))
    page = browser_page

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", viewer.username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#needs-person")

    assert page.locator("h1").inner_text() == "Dashboard"
    approvals = page.locator("#pending-approvals")
    assert approvals.get_attribute("data-count") == "1"
    assert f"#{pending.pk} Adjust budget on EU Search - Brand" in approvals.inner_text()
    assert "waiting 2 h" in approvals.inner_text()

    page.wait_for_selector(f"#performance-{connection.pk}[data-charts-drawn=true]")
    marker = page.evaluate(
        "() => Chart.getChart('br-dash-volume-0').data.datasets.find(d => d.type === 'scatter').data[0]"
    )
    assert marker["label"] == f"#{changed.pk} Adjust budget on EU Search - Brand"
    assert marker["url"].endswith(f"/admin/actions/action/{changed.pk}/change/")
    assert page.evaluate("() => Chart.getChart('br-dash-efficiency-0').data.datasets.length") == 2
    assert page.problems == []

    # A click on the marker in the chart opens the change it stands for.
    point = page.evaluate(
        "() => { const c = Chart.getChart('br-dash-volume-0');"
        " const i = c.data.datasets.findIndex(d => d.type === 'scatter');"
        " const e = c.getDatasetMeta(i).data[0]; return {x: e.x, y: e.y}; }"
    )
    page.locator("#br-dash-volume-0").click(position=point)  # scrolls it into view; x, y within the canvas
    page.wait_for_url(f"**/admin/actions/action/{changed.pk}/change/")

    # Without the chart, the list of changes links there too.
    page.go_back()
    page.locator(f"#performance-{connection.pk} .br-dash-markers a").first.click()
    page.wait_for_url(f"**/admin/actions/action/{changed.pk}/change/")
