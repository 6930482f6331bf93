"""Pages of work a worker moves on refresh themselves until the work settles, and say so."""

from __future__ import annotations

import pytest
from django.urls import reverse

from actions.models import ActionStatus
from tests import factories

REFRESH = '<meta http-equiv="refresh" content="5">'


def action_page(client, action) -> str:
    return client.get(reverse("admin:actions_action_change", args=[action.pk])).content.decode()


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (ActionStatus.QUEUED, "This action is queued"),
        (ActionStatus.EXECUTING, "This action is executing"),
        (ActionStatus.ROLLING_BACK, "This action is rolling back"),
    ],
)
def test_an_action_in_motion_refreshes_its_page_and_says_so(client, approver, campaign, status, words):
    action = factories.ActionFactory(entity=campaign, status=status)
    client.force_login(approver)
    page = action_page(client, action)
    assert REFRESH in page
    assert f"{words}: this page refreshes every 5 seconds until it settles." in page


@pytest.mark.parametrize(
    "status",
    [
        ActionStatus.PENDING_APPROVAL,
        ActionStatus.APPROVED,
        ActionStatus.SUCCEEDED,
        ActionStatus.FAILED,
        ActionStatus.ROLLED_BACK,
        ActionStatus.ROLLBACK_FAILED,
    ],
)
def test_a_settled_action_page_stays_put(client, approver, campaign, status):
    action = factories.ActionFactory(entity=campaign, status=status)
    client.force_login(approver)
    page = action_page(client, action)
    assert 'http-equiv="refresh"' not in page
    assert "this page refreshes" not in page
