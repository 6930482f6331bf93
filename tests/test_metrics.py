"""/metrics: protected, parsed with prometheus-client's own parser, right across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from actions.models import ActionStatus
from observability import metrics
from observability.instrument import apply_outcome
from observability.models import AlertKind, Severity
from observability.services.alerts import Condition, alert_raise
from platforms.models import CircuitState
from platforms.registry import get_executor
from platforms.types import ChangeOutcome, ErrorCode, OutcomeStatus, PlatformError
from tests import factories
from tests.engine_helpers import sandbox_world

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def scrape(client: Client | None = None, **headers) -> dict[str, dict]:
    """family name -> {labels tuple: value} from a real GET /metrics."""
    response = (client or Client()).get("/metrics", REMOTE_ADDR=headers.pop("REMOTE_ADDR", "127.0.0.1"), **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    families = {}
    for family in text_string_to_metric_families(response.content.decode()):
        families[family.name] = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
    return families


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_loopback_may_scrape_without_configuration_and_others_may_not(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    refused = Client().get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"


def test_a_token_or_an_allowed_network_is_required_once_configured(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "t0ken-value", ["10.8.0.0/16"]
    client = Client()
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_AUTHORIZATION="Bearer t0ken-value").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.8.3.4").status_code == 200
    assert client.post("/metrics", REMOTE_ADDR="10.8.3.4").status_code == 405


def test_counters_recorded_by_the_instrumentation_functions_are_exposed():
    before = sample("preflight_runs_total", mode="autopilot", status="failed")
    metrics.preflight_run_record(mode="autopilot", status="failed")
    metrics.action_transitions_record(status="succeeded", platforms=["meta", "meta", "google_ads"])
    metrics.planner_run_record(fallback_level="rolling_average", status="succeeded")
    metrics.rate_limit_wait_record(platform="meta", seconds=12.5, source="retry_after")
    families = scrape()
    assert families["preflight_runs"][(("mode", "autopilot"), ("status", "failed"))] == before + 1
    transitions = families["budgetradar_action_transitions"]
    assert transitions[(("platform", "meta"), ("status", "succeeded"))] >= 2
    assert families["budgetradar_planner_runs"][(("fallback_level", "rolling_average"), ("status", "succeeded"))] >= 1
    waits = families["budgetradar_rate_limit_wait_seconds"]
    assert waits[(("le", "15.0"), ("platform", "meta"), ("source", "retry_after"))] >= 1


def test_database_state_is_read_at_scrape_time(tenant, connection_):
    now = timezone.now()
    connection_.circuit_state = CircuitState.OPEN
    connection_.save()
    factories.ActionFactory(
        entity=factories.EntityFactory(connection=connection_),
        status=ActionStatus.EXECUTING,
        lease_owner="worker-1",
        lease_expires_at=now - timedelta(seconds=90),
    )
    alert_raise(Condition(AlertKind.CIRCUIT_OPEN, Severity.CRITICAL, "k", "Open", "Reset it.", tenant.pk))
    campaign = factories.EntityFactory(connection=connection_)
    yesterday = now.astimezone(ZoneInfo(connection_.time_zone)).date() - timedelta(days=1)
    factories.PerformanceFactory(entity=campaign, date=yesterday, spend=Decimal("120.00"), conversions=Decimal("8"))
    families = scrape()
    labels = (
        ("connection", connection_.name),
        ("connection_id", str(connection_.pk)),
        ("platform", "sandbox"),
        ("tenant", "acme"),
    )
    assert families["budgetradar_circuit_state"][labels] == 2
    assert 85 <= families["budgetradar_reconciler_lag_seconds"][()] <= 200
    assert families["budgetradar_alerts_open"][(("kind", "circuit_open"), ("severity", "critical"))] == 1
    assert families["budgetradar_daily_spend"][labels] == 120.0
    assert families["budgetradar_daily_conversions"][labels] == 8.0
    assert families["budgetradar_daily_cpa"][labels] == 15.0
    assert "budgetradar_task_queue_depth" in families and "budgetradar_platform_operation_quota" in families


def test_a_scrape_costs_a_bounded_number_of_queries(tenant, django_assert_max_num_queries):
    for _ in range(5):
        connection = factories.ConnectionFactory(tenant=tenant)
        factories.PerformanceFactory(entity=factories.EntityFactory(connection=connection))
    with django_assert_max_num_queries(14):
        scrape()


def test_executors_from_the_registry_count_requests_outcomes_and_latency(tenant):
    world = sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=1)
    executor = get_executor(world.connection)
    labels = {"platform": "sandbox", "operation": "read", "outcome": "ok"}
    before = sample("budgetradar_platform_requests_total", **labels)
    before_latency = sample("budgetradar_platform_request_duration_seconds_count", platform="sandbox", operation="read")
    executor.read_state([world.entity("sandbox-cmp-1").to_ref()])
    assert sample("budgetradar_platform_requests_total", **labels) == before + executor.round_trips
    assert (
        sample("budgetradar_platform_request_duration_seconds_count", platform="sandbox", operation="read")
        == before_latency + executor.round_trips
    )
    assert sample("budgetradar_platform_operations_total", platform="sandbox") >= 1


def test_an_apply_is_labelled_by_its_outcome():
    def outcome(status, code=None):
        error = PlatformError(code=code, message="x") if code else None
        return ChangeOutcome(change=None, status=status, error=error)

    applied, failed = outcome(OutcomeStatus.APPLIED), outcome(OutcomeStatus.FAILED, ErrorCode.RATE_LIMITED)
    assert apply_outcome([applied, applied]) == "ok"
    assert apply_outcome([applied, failed]) == "partial"
    assert apply_outcome([failed, failed]) == "rate_limited"
    assert apply_outcome([applied, outcome(OutcomeStatus.UNKNOWN)]) == "unknown"


def test_multiprocess_mode_adds_up_every_process(tmp_path, monkeypatch):
    """Two processes (as gunicorn workers and a qcluster would) count; one scrape sees the sum."""
    script = (
        "import sys; from observability import metrics; "
        "[metrics.preflight_run_record(mode='assist', status='succeeded') for _ in range(int(sys.argv[1]))]"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for count in (2, 3):
        subprocess.run([sys.executable, "-c", script, str(count)], check=True, env=env, cwd=ROOT, timeout=60)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    families = scrape()
    assert families["preflight_runs"][(("mode", "assist"), ("status", "succeeded"))] == 5


def test_the_exporter_serves_a_hosts_processes_to_allowed_scrapers(tmp_path, settings):
    from wsgiref.util import setup_testing_defaults

    from observability.management.commands.metrics_exporter import exporter_app

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    script = "from observability import metrics; metrics.deployment_finished_record(status='succeeded')"
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=ROOT, timeout=60)
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "tok", []
    answers = {}

    def call(**extra):
        environ = {"REMOTE_ADDR": "192.0.2.9", **extra}
        setup_testing_defaults(environ)
        body = b"".join(exporter_app(str(tmp_path))(environ, lambda status, headers: answers.update(status=status)))
        return answers["status"], body.decode()

    assert call()[0].startswith("403")
    status, text = call(HTTP_AUTHORIZATION="Bearer tok")
    assert status.startswith("200")
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "budgetradar_deployments_finished"]
    assert [s.value for s in family.samples if s.name.endswith("_total")] == [1.0]


def test_a_real_preflight_counts_itself_by_mode_and_status(tenant, approver):
    from scenarios.models import Scenario, ScenarioItem
    from scenarios.services.preflight import PreflightFailed, preflight_for_scenario

    world = sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=1)
    scenario = Scenario.objects.create(tenant=tenant, name="Counted", created_by=approver)
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-1"), daily_budget=Decimal("120.00"))
    succeeded = sample("preflight_runs_total", mode="manual", status="succeeded")
    failed = sample("preflight_runs_total", mode="manual", status="failed")
    preflight_for_scenario(scenario=scenario, actor=approver)
    world.fault("server_error", scope="read", remaining=50)
    with pytest.raises(PreflightFailed):
        preflight_for_scenario(scenario=scenario, actor=approver)
    assert sample("preflight_runs_total", mode="manual", status="succeeded") == succeeded + 1
    assert sample("preflight_runs_total", mode="manual", status="failed") == failed + 1
