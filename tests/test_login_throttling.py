"""Guessing is throttled: admin logins (django-axes) and API tokens (per client address)."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from budgetradar.roles import Role
from tests import factories


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()  # the failed-token history lives in the default cache
    yield
    cache.clear()


@pytest.fixture
def approver(tenant):
    return factories.member(tenant, Role.APPROVER, "acme-approver")


def login(client, username: str, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_forty_wrong_passwords_are_not_followed_by_a_successful_login(client, approver):
    for _ in range(40):
        login(client, approver.username, "wrong")
    response = login(client, approver.username, "pw")
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins" in page and "5 failed login attempts" in page
    assert "Logins are refused until" in page and "15 minutes from now" in page
    assert response["Retry-After"] == "900"
    assert client.get("/admin/").status_code == 302  # not logged in
    assert AccessAttempt.objects.get(username=approver.username).failures_since_start >= 5


def test_the_lockout_is_per_username_and_address(client, approver, tenant):
    other = factories.member(tenant, Role.VIEWER, "acme-viewer")
    for _ in range(5):
        login(client, approver.username, "wrong")
    assert login(client, approver.username, "pw").status_code == 429
    assert login(client, other.username, "pw").status_code == 302  # someone else at the same address
    elsewhere = client.__class__(REMOTE_ADDR="203.0.113.9")
    assert login(elsewhere, approver.username, "pw").status_code == 302


def test_a_successful_login_below_the_limit_resets_the_count(client, approver):
    for _ in range(4):
        login(client, approver.username, "wrong")
    assert login(client, approver.username, "pw").status_code == 302
    client.logout()
    for _ in range(4):
        login(client, approver.username, "wrong")
    assert login(client, approver.username, "pw").status_code == 302


def token_client(key: str, address: str = "198.51.100.7", **headers) -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}", **headers)
    return client


def test_wrong_api_tokens_lock_the_address_out_even_for_a_valid_token(approver, settings):
    settings.API_FAILED_AUTH_RATE = "5/min"
    good = Token.objects.create(user=approver).key
    for attempt in range(5):
        assert token_client(f"{attempt:040d}").get("/api/entities/").status_code == 401
    refused = token_client(good).get("/api/entities/")
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "throttled" and "failed token authentications" in body["message"]
    assert "Expected available in" in body["message"] and 1 <= int(refused["Retry-After"]) <= 60
    assert token_client(good, address="198.51.100.8").get("/api/entities/").status_code == 200


def test_a_forwarded_for_header_cannot_pick_a_fresh_address_without_trusted_proxies(approver, settings):
    settings.API_FAILED_AUTH_RATE = "3/min"
    for attempt in range(3):
        spoofed = token_client(f"{attempt:040d}", HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}")
        assert spoofed.get("/api/entities/").status_code == 401
    assert token_client("0" * 40, HTTP_X_FORWARDED_FOR="10.0.0.99").get("/api/entities/").status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(approver, settings):
    settings.API_FAILED_AUTH_RATE = "3/min"
    settings.NUM_PROXIES = 1
    for attempt in range(3):
        token_client(f"{attempt:040d}", HTTP_X_FORWARDED_FOR="192.0.2.1").get("/api/entities/")
    assert token_client("0" * 40, HTTP_X_FORWARDED_FOR="192.0.2.1").get("/api/entities/").status_code == 429
    good = Token.objects.create(user=approver).key
    assert token_client(good, HTTP_X_FORWARDED_FOR="192.0.2.2").get("/api/entities/").status_code == 200


def test_valid_tokens_are_never_counted(approver, settings):
    settings.API_FAILED_AUTH_RATE = "3/min"
    good = Token.objects.create(user=approver).key
    assert all(token_client(good).get("/api/entities/").status_code == 200 for _ in range(6))
