"""Pytest fixtures that run the real Google Ads SDK against the local fake server.

``google_ads_fake_server`` starts one fake per test module (over TLS on 127.0.0.1);
``google_ads_fake`` hands it to a test with empty state, log and faults;
``google_ads_config`` / ``google_ads_executor`` point a GoogleAdsExecutor at it.
No fixture needs the database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from platforms.fakes.google_ads_fake import GoogleAdsFake, ensure_test_tls_roots
from platforms.google_ads import GoogleAdsExecutor
from platforms.money import default_billable_unit_micros
from platforms.types import ConnectionConfig

GOOGLE_CUSTOMER_ID = "1234567890"
GOOGLE_LOGIN_CUSTOMER_ID = "9998887776"


def google_test_credentials(fake: GoogleAdsFake, **extra: str) -> dict[str, str]:
    """Credentials for ``fake``: an OAuth client registered with its local token endpoint
    (so every test refreshes a real, expiring bearer token), a developer token and a
    login customer id."""
    return fake.credentials(login_customer_id="999-888-7776", **extra)


def google_ads_connection(fake: GoogleAdsFake, **overrides: object) -> ConnectionConfig:
    """A ConnectionConfig for the fake's customer, EUR, 5 s timeout unless overridden."""
    values: dict[str, object] = {
        "connection_id": 1,
        "platform": "google_ads",
        "account_id": "123-456-7890",
        "currency": "EUR",
        "credentials": google_test_credentials(fake),
        "api_base_url": fake.endpoint,
        "request_timeout": 5.0,
    }
    values.update(overrides)
    # As sync stores it on the connection (the ISO minor unit, the fake's default); tests of
    # the read itself pass None.
    values.setdefault("billable_unit_micros", default_billable_unit_micros(str(values["currency"])))
    return ConnectionConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def google_ads_fake_server() -> Iterator[GoogleAdsFake]:
    # Before any Google Ads client of the process: gRPC reads its TLS roots only once.
    ensure_test_tls_roots()
    with GoogleAdsFake() as fake:
        yield fake


@pytest.fixture
def google_ads_fake(google_ads_fake_server: GoogleAdsFake) -> Iterator[GoogleAdsFake]:
    google_ads_fake_server.reset()
    google_ads_fake_server.add_customer(GOOGLE_CUSTOMER_ID, currency="EUR")
    yield google_ads_fake_server
    google_ads_fake_server.reset()


@pytest.fixture
def google_ads_config(google_ads_fake: GoogleAdsFake) -> ConnectionConfig:
    return google_ads_connection(google_ads_fake)


@pytest.fixture
def google_ads_executor(google_ads_config: ConnectionConfig) -> Iterator[GoogleAdsExecutor]:
    executor = GoogleAdsExecutor(google_ads_config)
    yield executor
    executor.close()
