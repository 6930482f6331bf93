"""An approver approves a pending action in a real browser, through the bulk confirmation."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connections

from actions.models import Action, ActionStatus
from budgetradar.roles import Role
from tests import factories

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian Chromium is not installed at /usr/bin/chromium"),
]


@pytest.fixture
def browser_page(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; without this Django refuses
    # the ORM calls the test makes while the browser is open.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        yield page
        browser.close()
        # While Playwright's loop runs, Django opens separate connections for the test's
        # ORM calls; close them here, or PostgreSQL refuses to drop the test database.
        connections.close_all()


def test_approver_bulk_approves_a_pending_action(transactional_db, live_server, browser_page):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    approver = factories.member(tenant, Role.APPROVER, "acme-approver")
    operator = factories.member(tenant, Role.OPERATOR, "acme-operator")
    connection = factories.ConnectionFactory(tenant=tenant)
    factories.SandboxAccountFactory(account_id=connection.account_id, token=connection.credentials["access_token"])
    entity = factories.EntityFactory(connection=connection, name="EU Search - Brand", daily_budget="100.00")
    factories.on_sandbox(entity)  # the safety gate reads the entity on the platform before approving
    action = factories.ActionFactory(entity=entity, proposed_by=operator)
    page = browser_page

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", approver.username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/actions/action/")
    page.check(f"input[name=_selected_action][value='{action.pk}']")
    page.select_option("select[name=action]", "approve_selected")
    page.click("button[name=index]")

    rows = page.locator("#confirmation-rows tbody tr")
    assert rows.count() == 1
    assert "EU Search - Brand" in rows.first.inner_text()
    assert "100.00 EUR → 120.00 EUR" in rows.first.inner_text()
    assert "Will be approved" in rows.first.inner_text()
    page.click("#confirm-form input[type=submit]")

    page.wait_for_selector("#result-rows")
    assert "1 action approved" in page.locator(".messagelist").inner_text()
    assert "Approved" in page.locator(f"#result-rows tr[data-action='{action.pk}']").inner_text()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.APPROVED
