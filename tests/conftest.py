"""Suite-wide fixtures and the PostgreSQL-only marker."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import override_settings

from budgetradar.roles import Role
from tests import factories
from tests.google_fake_fixtures import (  # noqa: F401 (pytest fixtures)
    google_ads_config,
    google_ads_executor,
    google_ads_fake,
    google_ads_fake_server,
)
from tests.meta_fake_fixtures import meta_config, meta_executor, meta_fake, meta_fake_server  # noqa: F401

POSTGRES_ONLY_REASON = "needs PostgreSQL: SQLite serialises all writers, so concurrent transactions cannot race there"


def pytest_collection_modifyitems(config, items):
    """Skip ``@pytest.mark.postgres`` tests on SQLite, saying why (never silently)."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    for item in items:
        marker = item.get_closest_marker("postgres")
        if marker is not None:
            reason = marker.kwargs.get("reason", POSTGRES_ONLY_REASON)
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    """Every factory user has a password; the production hasher spends ~0.3 s on each."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def _state_dir_in_tmp(settings, tmp_path):
    """Preflight exports (state/ad_push_diffs.json) go to a per-test folder, never the repo."""
    settings.STATE_DIR = tmp_path / "state"


@pytest.fixture
def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def tenant(db):
    return factories.TenantFactory(slug="acme", name="Acme")


@pytest.fixture
def other_tenant(db):
    return factories.TenantFactory(slug="globex", name="Globex")


@pytest.fixture
def approver(tenant):
    return factories.member(tenant, Role.APPROVER, "acme-approver")


@pytest.fixture
def second_approver(tenant):
    return factories.member(tenant, Role.APPROVER, "acme-approver-2")


@pytest.fixture
def operator(tenant):
    return factories.member(tenant, Role.OPERATOR, "acme-operator")


@pytest.fixture
def viewer(tenant):
    return factories.member(tenant, Role.VIEWER, "acme-viewer")


@pytest.fixture
def tenant_admin(tenant):
    return factories.member(tenant, Role.ADMIN, "acme-admin")


@pytest.fixture
def other_admin(other_tenant):
    return factories.member(other_tenant, Role.ADMIN, "globex-admin")


@pytest.fixture
def connection_(tenant):
    """A sandbox connection whose account exists, so the safety gate's preflights can read it."""
    connection = factories.ConnectionFactory(tenant=tenant, name="Acme Sandbox")
    factories.SandboxAccountFactory(
        account_id=connection.account_id,
        token=connection.credentials["access_token"],
        currency=connection.currency,
        time_zone=connection.time_zone,
    )
    return connection


@pytest.fixture
def campaign(connection_):
    """A mirrored campaign and its twin on the sandbox platform (same values)."""
    entity = factories.EntityFactory(connection=connection_, name="EU Search - Brand", external_id="cmp-1001")
    factories.on_sandbox(entity)
    return entity
