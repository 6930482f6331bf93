"""The sandbox admin shows each tenant admin only the sandbox accounts it holds a token for."""

from __future__ import annotations

import pytest
from django.urls import reverse

from budgetradar.roles import Role
from platforms.sandbox.models import SandboxFault
from tests.factories import (
    SandboxAccountFactory,
    SandboxCampaignFactory,
    SandboxFaultFactory,
    UserFactory,
    member,
    sandbox_connection,
)


@pytest.fixture
def ours(tenant):
    account = SandboxAccountFactory(account_id="sbx-ours", name="Our account")
    sandbox_connection(tenant, account)
    return account


@pytest.fixture
def theirs(other_tenant):
    account = SandboxAccountFactory(account_id="sbx-theirs", name="Their account")
    sandbox_connection(other_tenant, account)
    return account


def changelist(model: str) -> str:
    return reverse(f"admin:sandbox_{model}_changelist")


def test_a_tenant_admin_sees_only_accounts_connected_in_the_tenant(client, tenant_admin, ours, theirs):
    client.force_login(tenant_admin)
    page = client.get(changelist("sandboxaccount")).content.decode()
    assert "sbx-ours" in page
    assert "sbx-theirs" not in page
    change_page = client.get(reverse("admin:sandbox_sandboxaccount_change", args=[ours.pk]))
    assert change_page.status_code == 200
    assert "Injected faults" in change_page.content.decode()
    assert ours.access_token_digest not in change_page.content.decode()


def test_another_tenants_sandbox_rows_are_not_found(client, tenant_admin, theirs):
    campaign = SandboxCampaignFactory(account=theirs)
    client.force_login(tenant_admin)
    assert client.get(reverse("admin:sandbox_sandboxentity_change", args=[campaign.pk])).status_code == 404
    assert client.get(reverse("admin:sandbox_sandboxaccount_change", args=[theirs.pk])).status_code == 404


def test_knowing_an_account_id_without_its_token_shows_nothing(client, other_tenant, other_admin, ours):
    sandbox_connection(other_tenant, ours, token="guessed")
    client.force_login(other_admin)
    assert "sbx-ours" not in client.get(changelist("sandboxaccount")).content.decode()


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.APPROVER])
def test_roles_below_admin_have_no_sandbox_admin(client, tenant, ours, role):
    client.force_login(member(tenant, role))
    assert client.get(changelist("sandboxentity")).status_code == 403


def test_platform_staff_see_every_account(client, ours, theirs):
    client.force_login(UserFactory(username="root", is_superuser=True))
    page = client.get(changelist("sandboxaccount")).content.decode()
    assert "sbx-ours" in page and "sbx-theirs" in page


def test_the_entity_list_costs_the_same_queries_for_many_rows(
    client, tenant_admin, ours, django_assert_max_num_queries
):
    for _ in range(40):
        SandboxCampaignFactory(account=ours)
    client.force_login(tenant_admin)
    with django_assert_max_num_queries(15):
        assert client.get(changelist("sandboxentity")).status_code == 200


def test_a_tenant_admin_injects_a_fault_for_named_entities(client, tenant_admin, ours):
    client.force_login(tenant_admin)
    response = client.post(
        reverse("admin:sandbox_sandboxfault_add"),
        {
            "account": ours.pk,
            "kind": "rate_limit",
            "scope": "write",
            "remaining": "2",
            "entity_ids": "sandbox-cmp-1001, sandbox-adset-2003",
            "retry_after": "5",
        },
    )
    assert response.status_code == 302
    fault = SandboxFault.objects.get()
    assert (fault.account, fault.remaining, fault.entity_ids) == (ours, 2, ["sandbox-cmp-1001", "sandbox-adset-2003"])


def test_a_fault_cannot_be_injected_into_another_tenants_account(client, tenant_admin, theirs):
    client.force_login(tenant_admin)
    response = client.post(
        reverse("admin:sandbox_sandboxfault_add"),
        {"account": theirs.pk, "kind": "rate_limit", "scope": "write", "remaining": "1", "retry_after": "1"},
    )
    assert response.status_code == 200  # the form refuses the account choice
    assert not SandboxFault.objects.exists()


def test_a_write_only_fault_on_reads_is_refused_with_a_reason(client, tenant_admin, ours):
    client.force_login(tenant_admin)
    response = client.post(
        reverse("admin:sandbox_sandboxfault_add"),
        {"account": ours.pk, "kind": "silent_noop", "scope": "read", "remaining": "1", "retry_after": "1"},
    )
    assert "only affects writes" in response.content.decode()


def test_the_request_log_is_read_only(client, tenant_admin, ours):
    client.force_login(tenant_admin)
    assert client.get(reverse("admin:sandbox_sandboxrequest_add")).status_code == 403
    assert client.get(changelist("sandboxrequest")).status_code == 200


def test_the_fault_list_says_how_many_uses_are_left(client, tenant_admin, ours):
    SandboxFaultFactory(account=ours, remaining=None)
    SandboxFaultFactory(account=ours, kind="server_error", remaining=0)
    client.force_login(tenant_admin)
    page = client.get(changelist("sandboxfault")).content.decode()
    assert "forever" in page and "used up" in page
