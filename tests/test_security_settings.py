"""With DEBUG off the settings are production-grade (``check --deploy`` is clean); with
DEBUG on the demo still works over plain http; every page carries the CSP."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from budgetradar import settings as s

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "k" * 20 + "unique-enough-production-secret-0123456789",
    "FIELD_ENCRYPTION_KEYS": "ZGV2LW9ubHktYnVkZ2V0cmFkYXIta2V5LTMyYnl0ZXM=",
    "ALLOWED_HOSTS": "budgetradar.example.com",
}
SHOWN = [
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_PROXY_SSL_HEADER",
    "NUM_PROXIES",
]


def run_manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DEBUG", "SECURE", "SECRET", "NUM_PROXIES"))}
    clean["DATABASE_URL"] = f"sqlite:///{Path(tempfile.gettempdir()) / 'budgetradar-settings-check.sqlite3'}"
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True
    )


def settings_of(env: dict[str, str], monkeypatch) -> dict:
    """The settings module evaluated under ``env`` (in-process: no Django start-up)."""
    for name in [*SHOWN, "DEBUG", "SECRET_KEY", "TRUST_X_FORWARDED_PROTO", "SECURE_COOKIES"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    values = runpy.run_path(str(ROOT / "budgetradar" / "settings.py"))
    return {name: values.get(name) for name in SHOWN}


def test_check_deploy_is_clean_with_production_settings():
    result = run_manage(PRODUCTION, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_production_defaults_are_https_only_and_a_proxy_can_take_tls(monkeypatch):
    assert settings_of(PRODUCTION, monkeypatch) == {
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_PROXY_SSL_HEADER": None,
        "NUM_PROXIES": 0,
    }
    behind = settings_of({**PRODUCTION, "TRUST_X_FORWARDED_PROTO": "true", "NUM_PROXIES": "1"}, monkeypatch)
    assert behind["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https") and behind["NUM_PROXIES"] == 1


def test_the_demo_with_debug_on_stays_plain_http(monkeypatch):
    demo = settings_of({}, monkeypatch)
    assert demo["SECURE_SSL_REDIRECT"] is False and demo["SESSION_COOKIE_SECURE"] is False
    assert demo["SECURE_HSTS_SECONDS"] == 0


@pytest.mark.parametrize(("value", "ok"), [("20/min", True), ("5/s", True), ("twenty", False), ("0/min", False)])
def test_the_failed_token_rate_is_checked(monkeypatch, value, ok):
    monkeypatch.setenv("API_FAILED_AUTH_RATE", value)
    if ok:
        assert s.env_rate("API_FAILED_AUTH_RATE", "20/min") == value
    else:
        with pytest.raises(ImproperlyConfigured, match="API_FAILED_AUTH_RATE"):
            s.env_rate("API_FAILED_AUTH_RATE", "20/min")


def test_admin_pages_carry_a_content_security_policy_without_inline_scripts(client, db):
    policy = client.get("/admin/login/")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"


def test_only_redoc_may_use_inline_styles(client, db):
    assert "'unsafe-inline'" in client.get("/api/redoc/")["Content-Security-Policy"]
    assert "'unsafe-inline'" not in client.get("/api/docs/")["Content-Security-Policy"]
