"""Settings helpers fail loudly on values they cannot use."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from budgetradar import settings as s


@pytest.mark.parametrize(
    ("url", "engine"),
    [
        ("sqlite:///db.sqlite3", "django.db.backends.sqlite3"),
        ("sqlite:////tmp/x.db", "django.db.backends.sqlite3"),
        ("postgres://u:p@127.0.0.1:5432/budgetradar", "django.db.backends.postgresql"),
    ],
)
def test_database_url_is_parsed(url, engine):
    assert s.database_from_url(url)["ENGINE"] == engine


def test_sqlite_uses_wal_mode():
    assert "journal_mode=WAL" in s.database_from_url("sqlite:///db.sqlite3")["OPTIONS"]["init_command"]


@pytest.mark.parametrize("url", ["mysql://x/y", "postgres://127.0.0.1:5432/", "sqlite:///"])
def test_unusable_database_url_fails_loudly(url):
    with pytest.raises(ImproperlyConfigured):
        s.database_from_url(url)


@pytest.mark.parametrize(("helper", "value"), [(s.env_bool, "maybe"), (s.env_int, "ten")])
def test_bad_env_values_fail_loudly(monkeypatch, helper, value):
    monkeypatch.setenv("SOME_SETTING", value)
    with pytest.raises(ImproperlyConfigured, match="SOME_SETTING"):
        helper("SOME_SETTING", 1)


def test_django_q_timeout_is_shorter_than_its_retry(settings):
    assert settings.Q_CLUSTER["timeout"] < settings.Q_CLUSTER["retry"]
