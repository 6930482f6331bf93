"""The Content-Security-Policy breaks nothing: admin pages, their JavaScript, our static
styles and the offline API docs (Swagger UI and Redoc from drf-spectacular-sidecar) run
in Chromium without a single CSP violation."""

from __future__ import annotations

import pytest
from django.db import connections

from budgetradar.roles import Role
from scenarios.models import Scenario
from tests import factories

# Debian Chromium through Playwright, as in test_admin_browser (skipped when not installed).
from tests.test_admin_browser import CHROMIUM, CHROMIUM_ARGS, pytestmark  # noqa: F401


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls while Playwright's loop runs
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = chromium.new_page()
        page.set_default_timeout(20_000)
        violations: list[str] = []
        page.on(
            "console",
            lambda m: violations.append(f"{page.url}: {m.text[:160]}") if "Content Security Policy" in m.text else None,
        )
        page.on("pageerror", lambda e: violations.append(f"page error: {e}"))
        page.violations = violations
        yield page
        chromium.close()
        connections.close_all()


def test_admin_pages_and_api_docs_run_under_the_csp(transactional_db, live_server, browser):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    admin = factories.member(tenant, Role.ADMIN, "acme-admin")
    entity = factories.EntityFactory(tenant=tenant, name="EU Search - Brand")
    action = factories.ActionFactory(entity=entity)
    scenario = Scenario.objects.create(tenant=tenant, name="Q3 shift", created_by=admin)
    page, url = browser, live_server.url

    page.goto(f"{url}/admin/login/")
    page.fill("#id_username", admin.username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    # Our styles come from a static file: a badge is styled, not plain text.
    page.goto(f"{url}/admin/actions/action/")
    assert page.locator(".br-badge").first.evaluate("e => getComputedStyle(e).borderRadius") == "10px"
    # Django's actions.js (a static script) works: "select all" ticks every row.
    rows = page.locator("input[name=_selected_action]").count()
    page.check("#action-toggle")
    assert rows >= 1 and page.locator("input[name=_selected_action]:checked").count() == rows
    assert f"{rows} of {rows} selected" in page.locator(".action-counter").inner_text()
    for path in [
        f"/admin/actions/action/{action.pk}/change/",
        "/admin/scenarios/scenario/",
        f"/admin/scenarios/scenario/{scenario.pk}/change/",
        "/admin/scenarios/scenario/import/",
    ]:
        response = page.goto(f"{url}{path}")
        assert response.status == 200, path
    # Our admin.js: a sent deploy/preflight form disables its button (no double post).
    page.goto(f"{url}/admin/scenarios/scenario/{scenario.pk}/change/")
    form = page.locator("form[data-disable-on-submit]").first
    form.evaluate("f => f.addEventListener('submit', e => e.preventDefault())")
    form.locator("button").click()
    assert form.locator("button").is_disabled()
    # The dark/light theme toggle is Django's own script.
    page.goto(f"{url}/admin/")
    page.click("button.theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") in {"light", "dark", "auto"}

    page.goto(f"{url}/api/docs/")
    page.wait_for_selector(".opblock-summary-path")
    assert page.locator(".opblock").count() > 20
    page.goto(f"{url}/api/redoc/")
    page.wait_for_selector("text=BudgetRadar API")
    # Redoc's menu footer always asks cdn.redoc.ly for a logo; the CSP keeps the docs offline
    # by refusing it, and Redoc hides the image on that error. Nothing else may be refused.
    refused = [v for v in page.violations if "https://cdn.redoc.ly/redoc/logo-mini.svg" not in v]
    assert refused == []
