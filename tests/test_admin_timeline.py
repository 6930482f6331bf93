"""An action's page tells what really happened: every attempt, wait and read-back, newest first."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from actions.models import ActionExecutionLog, ActionStatus, LogEvent
from actions.services.logs import log_event
from budgetradar.timefmt import format_time
from tests.engine_helpers import approved, run_worker, sandbox_world

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=0)


def timeline_rows(html: str) -> list[str]:
    """The text of each row of the timeline inline, top to bottom."""
    section = html[html.index("Timeline (execution log, newest first)") :]
    section = section[: section.index("</table>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", section, flags=re.S)
    return [html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row))).strip() for row in rows[1:]]


def test_the_timeline_shows_waits_retries_and_a_resolved_timeout_newest_first(client, world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    world.fault("rate_limit", remaining=2, retry_after=3)
    world.fault("timeout_after_apply")
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED

    client.force_login(approver)
    html = client.get(reverse("admin:actions_action_change", args=[action.pk])).content.decode()
    rows = timeline_rows(html)
    logs = list(ActionExecutionLog.objects.filter(action=action).order_by("-created_at", "-id"))
    assert len(rows) == len(logs)
    labels = [log.get_event_display() for log in logs]
    assert "(20" not in "".join(rows)  # no UTC moment without its zone
    for row, label, log in zip(rows, labels, logs, strict=True):
        assert label in row
        assert format_time(log.created_at, world.connection.time_zone) in row
    assert labels[0] == "Succeeded" and labels[-1] == "Approved"
    retries = [row for row in rows if "Waiting to retry" in row]
    assert len(retries) == 2
    assert all("3 s (the platform's retry-after)" in row for row in retries)
    request_ids = [
        log_id
        for log_id in ActionExecutionLog.objects.filter(action=action).values_list("platform_request_id", flat=True)
        if log_id
    ]
    assert request_ids and all(any(rid in row for row in rows) for rid in request_ids)
    [checked] = [row for row in rows if "Outcome checked by reading the platform" in row]
    assert "so it was applied" in checked
    assert rows.index(checked) < rows.index(retries[0])  # the read-back came after the waits
    assert "retrying" not in html.replace("Waiting to retry", "")  # no raw event codes


def test_the_execution_log_list_is_newest_first(client, world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    run_worker()
    client.force_login(approver)
    html = client.get(reverse("admin:actions_actionexecutionlog_changelist")).content.decode()
    body = html[html.index('id="result_list"') :]
    newest = ActionExecutionLog.objects.filter(action=action).latest("created_at", "id")
    assert newest.event == LogEvent.SUCCEEDED
    assert body.index("Succeeded") < body.index("Request sent") < body.index("Approved")


def test_a_longer_timeline_costs_no_extra_queries(client, world, approver):
    action = approved(world.entity("sandbox-cmp-1"), approver, new_budget="150.00")
    client.force_login(approver)
    page = reverse("admin:actions_action_change", args=[action.pk])
    client.get(page)
    with CaptureQueriesContext(connection) as few:
        client.get(page)
    for n in range(20):
        log_event(action=action, event=LogEvent.RETRYING, actor="worker:1", message=f"wait {n}")
    with CaptureQueriesContext(connection) as many:
        client.get(page)
    assert len(many.captured_queries) == len(few.captured_queries)
