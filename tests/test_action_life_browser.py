"""An action's whole life as a person sees it at 1400 px: recommended in the admin,
approved, executed by the engine, its timeline, and a rollback confirmed after the page
read the live value."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connections

from actions.models import Action, ActionStatus
from budgetradar.roles import Role
from tests import factories
from tests.engine_helpers import run_worker, sandbox_world
from tests.test_admin_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian Chromium is not installed at /usr/bin/chromium"),
]
WIDTH = 1400


@pytest.fixture
def wide_page(monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls while Playwright's loop runs
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
        page.set_default_timeout(15_000)
        yield page
        browser.close()
        connections.close_all()


def log_in(page, base: str, user) -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $BROWSER_ARTEFACTS when CI sets it, else the test's tmp dir."""
    target = Path(os.environ.get("BROWSER_ARTEFACTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def test_an_action_from_recommendation_to_rollback(transactional_db, live_server, wide_page, tmp_path):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    operator = factories.member(tenant, Role.OPERATOR, "acme-operator")
    approver = factories.member(tenant, Role.APPROVER, "acme-approver")
    world = sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=0)
    base, page = live_server.url, wide_page

    # The operator recommends a new budget with typed fields (the entity through its autocomplete).
    log_in(page, base, operator)
    page.goto(f"{base}/admin/actions/recommendation/add/")
    page.click(".field-entity .select2-selection")
    page.fill(".select2-search__field", "Campaign 1")
    page.click(".select2-results__option:has-text('Campaign 1')")
    page.select_option("#id_action_type", "adjust_budget")
    page.fill("#id_new_budget", "150.00")
    page.fill("#id_rationale", "CPA well under target")
    page.click("input[name=_save]")
    assert "needs approval before anything changes" in page.locator(".messagelist").inner_text()
    action = Action.objects.get()
    assert action.status == ActionStatus.PENDING_APPROVAL

    # The approver approves it from its page.
    log_in(page, base, approver)
    page.goto(f"{base}/admin/actions/action/{action.pk}/change/")
    page.click("a.br-op-approve")
    row = page.locator("#confirmation-rows tbody tr").first.inner_text()
    assert "100.00 EUR → 150.00 EUR" in row and "Will be approved" in row
    page.click("#confirm-form input[type=submit]")
    assert f"Action #{action.pk} was approved." in page.locator(".messagelist").inner_text()

    run_worker()  # the engine, synchronously, as the scheduled worker would
    page.reload()
    assert "Succeeded" in page.locator(".field-status_badge").inner_text()
    timeline = page.locator("#logs-group tbody tr.has_original")
    first, last = timeline.first.inner_text(), timeline.last.inner_text()
    assert "Succeeded" in first and "CET" in first  # newest first, in the account's zone
    assert "Approved" in last
    assert "Response received" in page.locator("#logs-group").inner_text()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("150.00")
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    page.screenshot(path=str(screenshot_dir(tmp_path) / "action-life-succeeded.png"), full_page=True)

    # Rolling back: the confirmation read the platform first.
    page.click("a.br-op-rollback")
    row = page.locator("#confirmation-rows tbody tr").first.inner_text()
    assert "Daily budget: live now 150.00 EUR → will restore 100.00 EUR" in row
    assert "Drift" not in row
    page.fill("#id_reason", "Spend spike")
    page.click("#confirm-form input[type=submit]")
    assert f"Action #{action.pk} was queued for rollback." in page.locator(".messagelist").inner_text()

    run_worker()
    page.reload()
    assert "Rolled back" in page.locator(".field-status_badge").inner_text()
    assert "Rolled back at " in page.locator(".field-rollback_deadline_display").inner_text()
    assert "Rollback succeeded" in page.locator("#logs-group tbody tr.has_original").first.inner_text()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")
    page.screenshot(path=str(screenshot_dir(tmp_path) / "action-life-rolled-back.png"), full_page=True)

    # The lists and the execution log fit the window as well.
    for path in ("actions/action/", "actions/recommendation/", "actions/actionexecutionlog/", "actions/actionjob/"):
        page.goto(f"{base}/admin/{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH, path
