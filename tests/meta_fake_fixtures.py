"""Pytest fixtures for the local Meta Graph API fake.

One fake server per test module (starting threads is cheap, but not per test), reset
before every test: no objects, no faults, an empty request log, one EUR account.

PYTEST_DONT_REWRITE: test modules import the constants below before pytest loads this
module as a plugin; it holds no asserts, so skipping assertion rewriting loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from platforms.fakes.meta_fake import MetaGraphFake
from platforms.meta import MetaExecutor
from platforms.types import ConnectionConfig

META_TOKEN = "meta-test-token-7f3a9c"  # distinctive, so a leak into a message is easy to find
META_ACCOUNT = "act_1000"
META_TIMEOUT = 0.5  # seconds; timeout faults hang a little longer than this
META_HANG = META_TIMEOUT + 0.3


@pytest.fixture(scope="module")
def meta_fake_server() -> Iterator[MetaGraphFake]:
    with MetaGraphFake(access_token=META_TOKEN) as fake:
        yield fake


@pytest.fixture
def meta_fake(meta_fake_server: MetaGraphFake) -> MetaGraphFake:
    """The module's fake, emptied, with the EUR account ``META_ACCOUNT``."""
    meta_fake_server.reset()
    meta_fake_server.faults.hang_seconds = META_HANG
    meta_fake_server.add_account(META_ACCOUNT, currency="EUR")
    return meta_fake_server


@pytest.fixture
def meta_config(meta_fake: MetaGraphFake) -> ConnectionConfig:
    return ConnectionConfig(
        connection_id=1,
        platform="meta",
        account_id=META_ACCOUNT,
        currency="EUR",
        credentials={"access_token": META_TOKEN, "app_id": "1234567890"},
        api_base_url=meta_fake.base_url,
        request_timeout=META_TIMEOUT,
    )


@pytest.fixture
def meta_executor(meta_config: ConnectionConfig) -> MetaExecutor:
    return MetaExecutor(meta_config)
