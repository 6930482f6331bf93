"""The rollback confirmation reads the platform first: live value, restore value, drift."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from actions.models import Action, ActionStatus
from actions.services.rollback_preview import rollback_deadline_text, rollback_preview
from platforms.sandbox.models import SandboxEntity
from tests.engine_helpers import approved, run_worker, sandbox_world

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=0)


@pytest.fixture
def executed(world, approver) -> Action:
    """Campaign 1's daily budget changed 100.00 -> 150.00 by BudgetRadar."""
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    return action


def rollback_confirmation(client, action: Action) -> tuple[str, str]:
    response = client.get(reverse("admin:actions_action_rollback", args=[action.pk]))
    confirm = response["Location"]
    return confirm, client.get(confirm).content.decode()


def test_the_confirmation_shows_the_live_value_and_drift_before_anyone_confirms(client, world, approver, executed):
    # Someone changes the budget on the platform; BudgetRadar's mirror still says 150.00.
    SandboxEntity.objects.filter(account=world.account, external_id="sandbox-cmp-1").update(
        daily_budget=Decimal("300.00")
    )
    client.force_login(approver)
    _confirm, page = rollback_confirmation(client, executed)
    assert "Daily budget: live now 300.00 EUR → will restore 100.00 EUR" in page
    assert "Drift: the platform (read " in page
    assert "daily budget is 300.00 EUR but BudgetRadar set 150.00 EUR" in page
    assert Action.objects.get(pk=executed.pk).status == ActionStatus.SUCCEEDED  # GET changed nothing
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("300.00")


def test_without_drift_the_confirmation_shows_the_live_value_and_no_warning(client, world, approver, executed):
    client.force_login(approver)
    confirm, page = rollback_confirmation(client, executed)
    assert "Daily budget: live now 150.00 EUR → will restore 100.00 EUR" in page
    assert "Drift" not in page

    client.post(confirm, {"reason": "CPA spike"})
    run_worker()
    action = Action.objects.get(pk=executed.pk)
    assert action.status == ActionStatus.ROLLED_BACK
    page = client.get(reverse("admin:actions_action_change", args=[action.pk])).content.decode()
    assert "Rolled back at " in page
    assert "Until " not in page and "hours)" not in page
    assert rollback_deadline_text(action).startswith("Rolled back at ")


def test_with_no_live_read_the_preview_says_the_value_is_only_the_last_known(executed):
    preview = rollback_preview(executed, None)
    assert preview.live_read_at is None and not preview.drifted
    assert preview.change_text() == "Daily budget: last known 150.00 EUR → will restore 100.00 EUR"
    assert preview.drift_warning() == ""
