"""The action confirmation page judges without writing, and its verdicts are what the POST does.

A GET of the page runs no write service (not even in a transaction it rolls back): no
INSERT, UPDATE, DELETE or SELECT ... FOR UPDATE reaches the database, except what reading
the platform writes by itself (the simulated platform's own tables and request log, the
rate limiter's bucket) and the session that holds the confirmation. Each rule the
services apply (four-eyes, the monthly quota used up by the earlier rows, an open
circuit, an expired rollback, a critical guardrail breach and its override) gives the
same verdict on the page as the POST then gives.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection as db_connection
from django.urls import reverse
from django.utils import timezone

from actions.models import Action, ActionStatus
from budgetradar.models import ExecutionMode, Plan
from budgetradar.roles import Role
from platforms.models import CircuitState
from scenarios.models import GuardrailPolicy
from tests import factories
from tests.engine_helpers import approved, run_worker, sandbox_world
from tests.test_safety_gate import grant

pytestmark = pytest.mark.django_db(transaction=True)

# What reading a platform writes by itself (the sandbox platform lives in the database),
# and the session, which holds the confirmation.
PLATFORM_OWN = ('"django_session"', '"platforms_ratelimitbucket"', '"platforms_developertokenusage"', '"sandbox_')
WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
LOCK = re.compile(r"\bFOR\s+(NO\s+KEY\s+)?UPDATE\b", re.IGNORECASE)
RUN_ID = re.compile(r"pf-[0-9a-f]{20}")


class Statements:
    """Every SQL statement run while installed as ``connection.execute_wrapper``."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.sql.append(sql)
        return execute(sql, params, many, context)

    def writes_and_locks(self) -> list[str]:
        return [
            sql
            for sql in self.sql
            if (WRITE.match(sql) or LOCK.search(sql)) and not any(table in sql for table in PLATFORM_OWN)
        ]


def url(view: str, *args) -> str:
    return reverse(f"admin:actions_action_{view}", args=args)


def start(client, operation: str, actions: list[Action]) -> str:
    """Select ``actions`` in the changelist and pick the bulk ``operation``: the confirmation's URL."""
    response = client.post(
        url("changelist"), {"action": f"{operation}_selected", "_selected_action": [a.pk for a in actions]}
    )
    assert response.status_code == 302, response.content.decode()[:500]
    return response["Location"]


def _reason(cell: str) -> str:
    text = html.unescape(re.sub(r"<[^>]+>", " ", cell.split("Skipped</span>", 1)[1]))
    return RUN_ID.sub("pf-…", " ".join(text.split()))  # a preview's run id is not the stored run's


def verdicts(page: str) -> dict[int, str]:
    """Per action on a confirmation page: "" when it will go through, else why not."""
    rows = re.findall(r'<tr class="br-(will|skip)" data-action="(\d+)">(.*?)</tr>', page, re.DOTALL)
    return {int(pk): "" if kind == "will" else _reason(cells) for kind, pk, cells in rows}


def outcomes(page: str) -> dict[int, str]:
    """Per action on a bulk result page: "" when it was done, else why not."""
    rows = re.findall(r'<tr data-action="(\d+)">(.*?)</tr>', page, re.DOTALL)
    return {int(pk): "" if "Skipped</span>" not in cells else _reason(cells) for pk, cells in rows}


def confirm_and_compare(client, operation: str, actions: list[Action], **form) -> dict[int, str]:
    """The confirmation's verdicts, checked to be exactly what its POST then did."""
    confirm = start(client, operation, actions)
    shown = verdicts(client.get(confirm).content.decode())
    assert set(shown) == {a.pk for a in actions}
    response = client.post(confirm, form)
    assert response.status_code == 302
    done = outcomes(client.get(response["Location"]).content.decode())
    assert done == shown
    return shown


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant, campaigns=3, ad_sets_per_campaign=0)


def executed(world, approver, external_id: str, amount: str) -> Action:
    action = approved(world.entity(external_id), approver, new_budget=amount)
    run_worker()
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED
    return action


# A GET writes nothing and locks nothing ----------------------------------------------------------


@pytest.mark.parametrize("operation", ["approve", "reject", "cancel", "execute", "rollback"])
def test_a_get_of_the_confirmation_page_writes_nothing_and_locks_no_row(
    client, world, tenant, approver, operator, operation
):
    if operation == "rollback":
        action = executed(world, approver, "sandbox-cmp-1", "150.00")
    else:
        tenant.execution_mode = ExecutionMode.MANUAL  # an approval waits for Execute
        tenant.save()
        status = ActionStatus.APPROVED if operation == "execute" else ActionStatus.PENDING_APPROVAL
        action = factories.ActionFactory(entity=world.entity("sandbox-cmp-1"), proposed_by=operator, status=status)
    client.force_login(approver)
    confirm = client.get(url(operation, action.pk))["Location"]
    statements = Statements()
    with db_connection.execute_wrapper(statements):
        page = client.get(confirm).content.decode()
    assert verdicts(page) == {action.pk: ""}, page
    assert statements.sql  # the recorder saw the page's queries
    assert statements.writes_and_locks() == []
    assert Action.objects.get(pk=action.pk).status == action.status


# The page's verdicts are the POST's -------------------------------------------------------------


def test_four_eyes_and_the_quota_used_up_by_earlier_rows_are_judged_as_the_approvals_do(
    client, tenant, approver, operator, campaign
):
    tenant.four_eyes_required = True
    tenant.save()
    Plan.objects.filter(code="pro").update(actions_per_month=3)
    factories.ActionFactory(entity=campaign, status=ActionStatus.APPROVED, approved_at=timezone.now())  # 1 used
    first = factories.ActionFactory(entity=campaign, proposed_by=operator)
    own = factories.ActionFactory(entity=campaign, proposed_by=approver)  # four-eyes: not counted
    second = factories.ActionFactory(entity=campaign, proposed_by=operator)  # the last one left
    third = factories.ActionFactory(entity=campaign, proposed_by=operator)
    client.force_login(approver)

    shown = confirm_and_compare(client, "approve", [first, own, second, third], reason="")

    assert shown[first.pk] == "" and shown[second.pk] == ""
    assert shown[own.pk].startswith("Four-eyes approval is required: you created or last changed action #")
    assert shown[third.pk].startswith("The Pro plan allows 3 approved actions a month; 3 are used this month")
    statuses = dict(Action.objects.filter(pk__in=[first.pk, own.pk, second.pk, third.pk]).values_list("pk", "status"))
    assert statuses == {
        first.pk: "approved",
        own.pk: "pending_approval",
        second.pk: "approved",
        third.pk: "pending_approval",
    }


def test_an_open_circuit_is_judged_as_execute_does(client, tenant, approver, campaign):
    tenant.execution_mode = ExecutionMode.MANUAL
    tenant.save()
    ready = factories.ActionFactory(entity=campaign, status=ActionStatus.APPROVED)
    broken = factories.ConnectionFactory(
        tenant=tenant,
        name="Broken",
        circuit_state=CircuitState.OPEN,
        circuit_opened_at=timezone.now(),
        circuit_reason="auth expired three times",
    )
    blocked = factories.ActionFactory(entity=factories.EntityFactory(connection=broken), status=ActionStatus.APPROVED)
    pending = factories.ActionFactory(entity=campaign)
    client.force_login(approver)

    shown = confirm_and_compare(client, "execute", [ready, blocked, pending])

    assert shown[ready.pk] == ""
    assert shown[blocked.pk].startswith("The circuit breaker of connection Broken is open: auth expired three times.")
    assert shown[pending.pk].endswith("only approved actions can be executed.")
    assert Action.objects.get(pk=ready.pk).status == ActionStatus.QUEUED
    assert Action.objects.get(pk=blocked.pk).status == ActionStatus.APPROVED


def test_an_expired_rollback_and_a_critical_breach_of_going_back_are_judged_as_the_rollbacks_do(
    client, world, tenant, approver
):
    small = executed(world, approver, "sandbox-cmp-1", "110.00")  # back to 100.00: -9 %
    expired = executed(world, approver, "sandbox-cmp-2", "110.00")
    large = executed(world, approver, "sandbox-cmp-3", "150.00")  # back to 100.00: -33 %
    Action.objects.filter(pk=expired.pk).update(rollback_deadline=timezone.now() - timedelta(minutes=1))
    GuardrailPolicy.objects.create(
        tenant=tenant, name="Careful", max_decrease_pct=Decimal("20"), severities={"max_decrease_pct": "critical"}
    )
    client.force_login(approver)

    shown = confirm_and_compare(client, "rollback", [small, expired, large], reason="CPA spike")

    assert shown[small.pk] == ""
    assert shown[expired.pk].startswith(f"The rollback instructions of action #{expired.pk} expired at ")
    assert "1 critical guardrail breach stands and no approved override was given" in shown[large.pk]
    assert "falls 33.33%" in shown[large.pk]
    statuses = dict(Action.objects.filter(pk__in=[small.pk, expired.pk, large.pk]).values_list("pk", "status"))
    assert statuses == {small.pk: "rolling_back", expired.pk: "succeeded", large.pk: "succeeded"}


def test_a_critical_breach_refuses_on_the_page_as_on_approval_until_an_override_is_approved(
    client, world, tenant, approver, operator, tenant_admin
):
    GuardrailPolicy.objects.create(tenant=tenant, name="Max +50 %", max_increase_pct=Decimal("50"))
    fine = factories.ActionFactory(entity=world.entity("sandbox-cmp-1"), proposed_by=operator)
    tenfold = factories.ActionFactory(
        entity=world.entity("sandbox-cmp-2"),
        proposed_by=operator,
        params={"new_budget": "1000.00", "budget_type": "daily"},
    )
    client.force_login(approver)

    shown = confirm_and_compare(client, "approve", [fine, tenfold], reason="")
    assert shown[fine.pk] == ""
    assert "1 critical guardrail breach stands and no approved override was given" in shown[tenfold.pk]
    assert Action.objects.get(pk=tenfold.pk).status == ActionStatus.PENDING_APPROVAL

    second_admin = factories.member(tenant, Role.ADMIN, "acme-admin-2")
    grant(Action.objects.get(pk=tenfold.pk), tenant_admin, second_admin, reason="Launch week")
    shown = confirm_and_compare(client, "approve", [tenfold], reason="")
    assert shown == {tenfold.pk: ""}
    assert Action.objects.get(pk=tenfold.pk).status == ActionStatus.APPROVED
