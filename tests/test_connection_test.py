"""Testing a connection says clearly what is wrong, records it, and respects tenants and roles."""

from __future__ import annotations

import pytest

from budgetradar.errors import Conflict, NotEntitled, NotFound, PermissionDenied, ValidationFailed
from platforms.base import no_throttle
from platforms.fakes.faults import FaultKind
from platforms.models import PlatformConnection
from platforms.ratelimit import ConnectionThrottle
from platforms.registry import executor_class, get_executor
from platforms.sandbox.executor import SandboxExecutor
from platforms.services import connection_create, connection_test
from tests.factories import (
    ConnectionFactory,
    SandboxAccountFactory,
    SandboxCampaignFactory,
    SandboxFaultFactory,
    plan,
    sandbox_connection,
)


@pytest.fixture
def account(db):
    account = SandboxAccountFactory(account_id="sbx-test", name="Acme EU")
    SandboxCampaignFactory(account=account)
    return account


@pytest.fixture
def conn(tenant, account):
    return sandbox_connection(tenant, account)


def test_a_working_connection_is_reported_and_recorded(conn, tenant_admin):
    result = connection_test(connection=conn, actor=tenant_admin)
    assert result.ok is True
    assert result.message == "Sandbox account Acme EU (sbx-test, EUR): 1 entities readable."
    conn.refresh_from_db()
    assert (conn.last_test_ok, conn.last_test_message) == (True, result.message)
    assert conn.last_tested_at is not None
    latest = conn.history.latest()
    assert (latest.history_user, latest.history_change_reason) == (tenant_admin, "connection test passed")


def test_a_bad_token_says_to_update_the_credentials(tenant, account, tenant_admin):
    conn = sandbox_connection(tenant, account, token="expired-token-value")
    result = connection_test(connection=conn, actor=tenant_admin)
    assert result.ok is False
    assert "access token was refused" in result.message
    assert "update the connection's credentials" in result.message
    assert "expired-token-value" not in result.message
    conn.refresh_from_db()
    assert conn.last_test_ok is False


def test_a_wrong_account_id_says_to_check_the_account_id(tenant, tenant_admin):
    conn = ConnectionFactory(tenant=tenant, account_id="sbx-typo")
    result = connection_test(connection=conn, actor=tenant_admin)
    assert result.ok is False
    assert "Sandbox account sbx-typo was not found: check the account id" in result.message


def test_missing_permission_on_the_account_is_reported(conn, account, tenant_admin):
    SandboxFaultFactory(account=account, kind=FaultKind.PERMISSION_DENIED, scope="read")
    result = connection_test(connection=conn, actor=tenant_admin)
    assert result.ok is False
    assert "ask an account admin to grant access" in result.message


def test_a_currency_mismatch_is_reported(tenant, account, tenant_admin):
    conn = sandbox_connection(tenant, account, currency="USD")
    result = connection_test(connection=conn, actor=tenant_admin)
    assert result.ok is False
    assert "billed in EUR but the connection says USD" in result.message


def test_a_platform_hiccup_says_to_try_again(conn, account, tenant_admin):
    SandboxFaultFactory(account=account, kind=FaultKind.SERVER_ERROR, scope="read")
    result = connection_test(connection=conn, actor=tenant_admin)
    assert result.ok is False
    assert "test again in a minute" in result.message


def test_another_tenants_connection_is_not_found(conn, other_admin):
    with pytest.raises(NotFound):
        connection_test(connection=conn, actor=other_admin)
    conn.refresh_from_db()
    assert conn.last_tested_at is None


def test_a_role_without_the_test_permission_is_refused(conn, approver):
    with pytest.raises(PermissionDenied, match="test platform connections"):
        connection_test(connection=conn, actor=approver)


def test_the_registry_picks_the_executor_and_throttles_by_default(conn):
    executor = get_executor(conn)
    assert isinstance(executor, SandboxExecutor)
    # The throttle is wrapped by the metrics (observability.instrument) around the guard that
    # refuses requests inside a transaction; the limiter is innermost.
    assert isinstance(executor.throttle.inner.inner, ConnectionThrottle)
    assert get_executor(conn, throttle=no_throttle).throttle.inner.inner is no_throttle
    assert executor.config.credentials == {"access_token": conn.credentials["access_token"]}
    with pytest.raises(ValueError, match="No executor for platform 'shopify'"):
        executor_class("shopify")


# Creating connections ---------------------------------------------------------------


def create(tenant, actor, **overrides):
    fields = {
        "name": "EU account",
        "platform": "sandbox",
        "account_id": "sbx-new",
        "currency": "EUR",
        "time_zone": "Europe/Berlin",
        "credentials": {"access_token": "t0k3n"},
    }
    return connection_create(tenant=tenant, actor=actor, **{**fields, **overrides})


def test_an_admin_creates_a_connection_with_encrypted_credentials_and_an_audit_entry(tenant, tenant_admin):
    conn = create(tenant, tenant_admin)
    stored = PlatformConnection.objects.get(pk=conn.pk)
    assert stored.credentials == {"access_token": "t0k3n"}
    assert conn.history.get().history_user == tenant_admin


def test_creating_refuses_duplicates_bad_values_other_tenants_and_other_roles(
    tenant, tenant_admin, operator, other_admin
):
    create(tenant, tenant_admin)
    with pytest.raises(Conflict, match="already connected"):
        create(tenant, tenant_admin)
    with pytest.raises(ValidationFailed) as invalid:
        create(tenant, tenant_admin, account_id="sbx-2", currency="EURO", time_zone="Mars/Olympus")
    assert set(invalid.value.details) == {"currency", "time_zone"}
    with pytest.raises(PermissionDenied):
        create(tenant, operator, account_id="sbx-3")
    with pytest.raises(NotFound):
        create(tenant, other_admin, account_id="sbx-4")


def test_creating_beyond_the_plan_limit_is_refused(tenant, tenant_admin):
    tenant.plan = plan("free")
    tenant.save()
    create(tenant, tenant_admin)
    with pytest.raises(NotEntitled, match="allows 1 platform connection"):
        create(tenant, tenant_admin, account_id="sbx-2")
