"""Times inside service messages (alerts, guardrail breaches) are in the account's zone
with the zone named, through ``budgetradar.timefmt``, not bare UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from observability.models import Alert, AlertKind
from observability.services.detectors import system_detectors_run
from platforms.models import CircuitState
from scenarios.models import GuardrailPolicy
from scenarios.services import guardrails as g

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)  # 13:00 CET in Berlin


def test_the_cooldown_end_is_shown_in_the_accounts_zone():
    breach = g.evaluate_cooldown(
        GuardrailPolicy(cooldown_hours=24),
        subject="Campaign 1",
        key="sandbox:campaign:cmp-1",
        last_change=NOW - timedelta(hours=1),
        now=NOW,
        time_zone="Europe/Berlin",
    )
    assert "Wait until 2026-03-21 12:00:00 CET" in breach["message"]  # 11:00 UTC + 1 h
    assert "UTC" not in breach["message"]


def test_the_cooldown_end_without_a_zone_names_utc():
    breach = g.evaluate_cooldown(
        GuardrailPolicy(cooldown_hours=24), subject="C", key="k", last_change=NOW, now=NOW + timedelta(hours=1)
    )
    assert "Wait until 2026-03-21 12:00:00 UTC" in breach["message"]


def test_connection_alerts_show_times_in_the_connections_zone(connection_):
    connection_.time_zone = "Europe/Berlin"
    connection_.last_synced_at = datetime(2026, 3, 18, 6, 30, tzinfo=UTC)
    connection_.circuit_state = CircuitState.OPEN
    connection_.circuit_opened_at = datetime(2026, 3, 20, 11, 15, tzinfo=UTC)
    connection_.save()
    system_detectors_run(now=NOW)
    ingestion = Alert.objects.get(kind=AlertKind.INGESTION_FAILURE)
    assert "last synced 2026-03-18 07:30:00 CET" in ingestion.message
    circuit = Alert.objects.get(kind=AlertKind.CIRCUIT_OPEN)
    assert "since 2026-03-20 12:15:00 CET" in circuit.message
    assert "UTC" not in ingestion.message + circuit.message
