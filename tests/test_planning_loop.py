"""The planner on a sandbox account: locks, fallbacks, modes, rollout share, breaker, queue, log, API."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from unittest import mock

import numpy as np
import pytest
from django.db import connection as db_connection
from django.db import connections, transaction
from django.db.utils import DatabaseError
from django.utils import timezone
from django_q.models import OrmQ

from budgetradar.roles import Role
from planning.curves import HillCurve
from planning.models import (
    AppendOnlyError,
    AutomationSettings,
    DecisionKind,
    DecisionLogEntry,
    EntityConstraint,
    FallbackLevel,
    Mode,
    Outcome,
    PlannerRun,
    RunStatus,
)
from planning.services import automation as auto
from planning.services.decisions import decision_append, decisions_export, decisions_purge
from planning.services.planner import PlanRequest, plan_build
from planning.services.runs import claim, planner_run_process, planner_run_request
from platforms.models import EntityPerformanceDaily, PlatformEntity
from platforms.registry import get_executor
from platforms.sync import sync_connection
from scenarios.models import Deployment, GuardrailPolicy, Scenario
from tests import factories

TODAY = date(2026, 6, 10)  # a Wednesday
NOW = datetime(2026, 6, 10, 7, 0, tzinfo=UTC)  # 09:00 in Europe/Berlin
CURVES = [(30, 80, 1.0), (10, 150, 1.0), (25, 60, 0.9), (15, 120, 1.1), (20, 100, 1.0), (8, 200, 1.0)]


@pytest.fixture
def account(tenant):
    tenant.plan = factories.plan("enterprise")
    tenant.save()
    sandbox = factories.SandboxAccountFactory(account_id="planner-acct")
    for i, _ in enumerate(CURVES):
        factories.SandboxCampaignFactory(account=sandbox, external_id=f"cmp-{i}", daily_budget=Decimal("100.00"))
    conn = factories.sandbox_connection(tenant, sandbox, name="Planner sandbox")
    sync_connection(connection=conn, executor=get_executor(conn), days=1, now=NOW)
    EntityPerformanceDaily.objects.all().delete()
    return conn


def history(conn, *, days=60, curves=CURVES, conversions=True):
    """Known Hill curves, budgets varying 0.5-1.5x, 3 % noise; yesterday is the last day."""
    rng = np.random.default_rng(7)
    entities = list(PlatformEntity.objects.filter(connection=conn).order_by("external_id"))
    rows = []
    for e, (v, h, k) in zip(entities, curves, strict=True):
        for d in range(days):
            spend = float(e.daily_budget) * rng.uniform(0.5, 1.5)
            conv = HillCurve(v, h, k).response(spend) * rng.uniform(0.97, 1.03) if conversions else 0
            rows.append(
                EntityPerformanceDaily(
                    tenant_id=conn.tenant_id,
                    entity=e,
                    date=TODAY - timedelta(days=days - d),
                    spend=Decimal(f"{spend:.2f}"),
                    conversions=Decimal(f"{conv:.2f}"),
                    revenue=Decimal(f"{conv * 50:.2f}"),
                )
            )
    EntityPerformanceDaily.objects.bulk_create(rows)
    return entities


def build(conn, **kwargs):
    return plan_build(connection=conn, request=PlanRequest(**kwargs), as_of=TODAY - timedelta(days=1), previous={})


# The planner -------------------------------------------------------------------------


def test_plan_moves_budget_to_the_cheapest_marginal_conversions_and_keeps_the_total(account):
    history(account)
    plan = build(account)
    assert plan.fallback_level == FallbackLevel.CURVES
    assert sum(e.proposed for e in plan.entities) == Decimal("600.00")
    rows = {r["external_id"]: r for r in plan.reasoning}
    assert Decimal(rows["cmp-0"]["proposed_budget"]) > Decimal("100.00")  # strong curve gains
    assert Decimal(rows["cmp-5"]["proposed_budget"]) < Decimal("100.00")  # weak curve gives
    interior = [
        r for r in plan.reasoning if Decimal(r["min_budget"]) < Decimal(r["proposed_budget"]) < Decimal(r["max_budget"])
    ]
    after = [r["marginal_after"] for r in interior]
    assert len(after) >= 2 and max(after) / min(after) < 1.05  # marginal CPA equalised
    assert all(r["light_before"] in {"green", "yellow", "red"} for r in plan.reasoning)
    assert "marginal CPA" in rows["cmp-0"]["why"]
    assert plan.summary["predicted_conversions_after"] > plan.summary["predicted_conversions_before"]


def test_plan_is_deterministic(account):
    history(account)
    first, second = build(account), build(account)
    assert first.data_hash == second.data_hash
    assert first.reasoning == second.reasoning


def test_locks_and_bounds_hold_under_a_percent_total(account):
    entities = history(account)
    EntityConstraint.objects.create(tenant=account.tenant, connection=account, entity=entities[0], locked=True)
    EntityConstraint.objects.create(
        tenant=account.tenant, connection=account, entity=entities[2], max_daily_budget=Decimal("110.00")
    )
    plan = build(account, budget_mode="percent", budget_change_pct=Decimal("10"))
    proposed = {e.entity.external_id: e.proposed for e in plan.entities}
    assert proposed["cmp-0"] == Decimal("100.00")  # locked
    assert proposed["cmp-2"] <= Decimal("110.00")  # its maximum
    assert sum(proposed.values()) == Decimal("660.00")  # +10 %
    assert "locked" in next(r["why"] for r in plan.reasoning if r["external_id"] == "cmp-0")


def test_low_confidence_block_policy_proposes_nothing(account):
    history(account)
    EntityPerformanceDaily.objects.filter(entity__external_id="cmp-1").update(conversions=Decimal("3.00"))
    noisy = EntityPerformanceDaily.objects.filter(entity__external_id="cmp-1").order_by("date")
    for i, row in enumerate(noisy):
        EntityPerformanceDaily.objects.filter(pk=row.pk).update(conversions=Decimal(str(1 + (i * 7) % 5)))
    assert build(account, low_confidence_policy="block").blocked
    held = build(account, low_confidence_policy="hold")
    assert not held.blocked
    assert next(e for e in held.entities if e.entity.external_id == "cmp-1").proposed == Decimal("100.00")


# Fallbacks ---------------------------------------------------------------------------


def test_fallback_previous_allocation_when_curves_cannot_support_a_plan(account):
    entities = history(account, days=10)  # too few days for any curve
    previous = {e.pk: Decimal("50.00") + 20 * i for i, e in enumerate(entities)}
    plan = plan_build(connection=account, request=PlanRequest(), as_of=TODAY - timedelta(days=1), previous=previous)
    assert plan.fallback_level == FallbackLevel.PREVIOUS
    budgets = [e.proposed for e in plan.entities]
    assert sum(budgets) == Decimal("600.00") and budgets == sorted(budgets)


def test_fallback_rolling_average_then_cpa_then_equal_split(account):
    history(account, days=10)
    assert build(account).fallback_level == FallbackLevel.ROLLING_AVERAGE
    EntityPerformanceDaily.objects.filter(date__gte=TODAY - timedelta(days=7)).delete()
    assert build(account).fallback_level == FallbackLevel.CPA
    EntityPerformanceDaily.objects.update(conversions=Decimal("0"))
    plan = build(account)
    assert plan.fallback_level == FallbackLevel.EQUAL_SPLIT
    assert {e.proposed for e in plan.entities} == {Decimal("100.00")}
    assert any("does not apply" in note for note in plan.notes)


# Modes, rollout share, breaker --------------------------------------------------------


def settings_for(conn, **fields):
    automation = auto.automation_for(conn)
    AutomationSettings.objects.filter(pk=automation.pk).update(**fields)
    automation.refresh_from_db()
    return automation


def run_once(conn, actor=None, now=NOW):
    run = planner_run_request(connection=conn, actor=actor, now=now)
    return planner_run_process(run.pk, now=now)


def test_shadow_records_and_changes_nothing(account):
    history(account)
    settings_for(account, mode=Mode.SHADOW)
    run = run_once(account)
    assert run.status == RunStatus.SUCCEEDED and run.outcome == Outcome.SHADOW_RECORDED
    assert not Scenario.objects.exists()
    assert DecisionLogEntry.objects.filter(run=run, kind=DecisionKind.RUN_COMPLETED).count() == 1


def test_assist_creates_a_scenario_with_its_preflight(account):
    history(account)
    settings_for(account, mode=Mode.ASSIST)
    run = run_once(account)
    assert run.outcome == Outcome.AWAITING_APPROVAL
    assert run.scenario.items.count() == run.summary["changed"] > 0
    assert run.preflight.mode == "assist" and run.preflight.status == "succeeded"
    assert not Deployment.objects.exists()


def test_autopilot_without_consent_falls_back_to_assist(account):
    history(account)
    settings_for(account, mode=Mode.AUTOPILOT)
    run = run_once(account)
    assert run.outcome == Outcome.FELL_BACK_TO_ASSIST and "consent" in run.outcome_message
    assert not Deployment.objects.exists()


def test_autopilot_deploys_live_as_the_consenting_person(account, tenant):
    history(account)
    admin = factories.member(tenant, Role.ADMIN, "acme-admin")
    automation = auto.automation_for(account)
    auto.automation_update(automation=automation, actor=admin, changes={"mode": "autopilot"}, consent_reason="trial")
    run = run_once(account)
    assert run.outcome == Outcome.DEPLOYED, run.outcome_message
    deployment = run.deployment
    assert deployment.mode == "live" and deployment.requested_by == admin
    assert run.preflight.mode == "autopilot"


def test_autopilot_needs_entitlement_and_a_reason(account, tenant):
    admin = factories.member(tenant, Role.ADMIN, "acme-admin")
    automation = auto.automation_for(account)
    with pytest.raises(Exception, match="consent"):
        auto.automation_update(automation=automation, actor=admin, changes={"mode": "autopilot"})
    tenant.plan = factories.plan("pro")
    tenant.save()
    automation.refresh_from_db()
    with pytest.raises(Exception, match="does not include autopilot"):
        auto.automation_update(automation=automation, actor=admin, changes={"mode": "autopilot"}, consent_reason="x")


def test_critical_breach_never_overridden_automatically(account, tenant):
    history(account)
    # A rule the planner does not plan around: at most one entity per deploy (critical).
    GuardrailPolicy.objects.create(tenant=tenant, max_entities_per_deploy=1)
    admin = factories.member(tenant, Role.ADMIN, "acme-admin")
    auto.automation_update(
        automation=auto.automation_for(account), actor=admin, changes={"mode": "autopilot"}, consent_reason="trial"
    )
    run = run_once(account)
    assert run.outcome == Outcome.FELL_BACK_TO_ASSIST, run.outcome_message
    assert "never overridden automatically" in run.outcome_message
    assert run.preflight.has_critical and not Deployment.objects.exists()


def test_rollout_share_weekdays_and_holdout(account):
    automation = settings_for(account, rollout_weekdays=[0, 2], holdout_share=Decimal("50"))
    assert auto.is_autopilot_day(automation, date(2026, 6, 8))  # Monday
    assert not auto.is_autopilot_day(automation, date(2026, 6, 9))  # Tuesday
    ids = list(range(1, 2001))
    held = auto.held_out(automation, ids)
    assert 0.45 < len(held) / len(ids) < 0.55
    assert held == auto.held_out(automation, ids)  # stable
    assert auto.held_out(automation, ids, Decimal("25")) <= held  # nested as the share shrinks


def test_three_failed_runs_open_the_breaker_and_autopilot_drops_to_assist(account, tenant, settings):
    settings.PLANNER_RETRIES = 0
    admin = factories.member(tenant, Role.ADMIN, "acme-admin")
    history(account)
    auto.automation_update(
        automation=auto.automation_for(account), actor=admin, changes={"mode": "autopilot"}, consent_reason="trial"
    )
    account.credentials = {"access_token": "wrong"}  # the sandbox refuses it: every preflight fails
    account.save()
    for _ in range(3):
        run = run_once(account)
        assert run.status == RunStatus.FAILED
    automation = AutomationSettings.objects.get(connection=account)
    assert automation.breaker_open and automation.mode == Mode.ASSIST
    assert DecisionLogEntry.objects.filter(kind=DecisionKind.BREAKER_OPENED).count() == 1
    reset = auto.breaker_reset(automation=automation, actor=admin, reason="token fixed")
    assert not reset.breaker_open and reset.mode == Mode.AUTOPILOT and reset.consecutive_failed_runs == 0


def test_a_failed_attempt_is_retried_with_backoff(account, settings):
    settings.PLANNER_RETRIES = 3
    run = planner_run_request(connection=account, actor=None, now=NOW)  # no entity has a daily budget? it has
    PlatformEntity.objects.filter(connection=account).update(daily_budget=None)  # nothing to plan: an error
    run = planner_run_process(run.pk, now=NOW)
    assert run.status == RunStatus.QUEUED and run.attempts == 1
    assert run.next_attempt_at == NOW + timedelta(seconds=settings.PLANNER_RETRY_BACKOFF_SECONDS)
    assert planner_run_process(run.pk, now=NOW) is None  # not due yet


def test_a_second_run_of_the_connection_waits_while_one_runs(account):
    first = planner_run_request(connection=account, actor=None, now=NOW)
    second = planner_run_request(connection=account, actor=None, now=NOW)
    assert claim(first.pk, now=NOW) is not None
    assert claim(second.pk, now=NOW) is None
    second.refresh_from_db()
    assert second.status == RunStatus.QUEUED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_run_two_runs_of_one_connection(tenant):
    sandbox = factories.SandboxAccountFactory(account_id="race-acct")
    conn = factories.sandbox_connection(tenant, sandbox, name="Race")
    runs = [planner_run_request(connection=conn, actor=None, now=NOW) for _ in range(4)]
    barrier = threading.Barrier(len(runs))
    claimed = []

    def worker(pk):
        try:
            barrier.wait()
            claimed.append(claim(pk, now=NOW) is not None)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(r.pk,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert claimed.count(True) == 1
    assert PlannerRun.objects.filter(connection=conn, status=RunStatus.RUNNING).count() == 1


# Decision log ------------------------------------------------------------------------


def test_decision_log_is_append_only(account):
    entry = decision_append(connection=account, kind=DecisionKind.RUN_COMPLETED, actor="planner")
    entry.kind = DecisionKind.RUN_FAILED
    with pytest.raises(AppendOnlyError):
        entry.save()
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with pytest.raises(AppendOnlyError):
        DecisionLogEntry.objects.filter(pk=entry.pk).update(kind="x")
    with pytest.raises(AppendOnlyError):
        DecisionLogEntry.objects.all().delete()


@pytest.mark.postgres
def test_postgres_trigger_refuses_raw_update_and_delete_of_kept_rows(account):
    entry = decision_append(connection=account, kind=DecisionKind.RUN_COMPLETED, actor="planner")
    table = DecisionLogEntry._meta.db_table
    for sql in (f"UPDATE {table} SET kind = 'x' WHERE id = %s", f"DELETE FROM {table} WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), db_connection.cursor() as cursor:
            cursor.execute(sql, [entry.pk])


def test_purge_respects_retention_and_export_writes_json_lines(account, tmp_path):
    now = timezone.now()
    past = now - timedelta(days=7 * 365 + 30)
    with mock.patch("django.utils.timezone.now", return_value=past):
        old = decision_append(connection=account, kind=DecisionKind.RUN_COMPLETED, actor="planner")
    kept = decision_append(connection=account, kind=DecisionKind.RUN_COMPLETED, actor="planner")
    young = decision_append(
        connection=account, kind=DecisionKind.RUN_COMPLETED, actor="planner", now=now - timedelta(days=8 * 365)
    )  # an expired promise, but written today
    out = tmp_path / "log.jsonl"
    with out.open("w") as handle:
        assert decisions_export(out=handle) == 3
    assert len(out.read_text().splitlines()) == 3
    assert decisions_purge(now=now, dry_run=True) == 1
    assert decisions_purge(now=now) == 1  # the young row is within the current retention
    assert set(DecisionLogEntry.objects.values_list("pk", flat=True)) == {kept.pk, young.pk}
    assert old.pk not in DecisionLogEntry.objects.values_list("pk", flat=True)


# API ---------------------------------------------------------------------------------


def test_run_now_answers_202_and_enqueues_the_run(account, operator, client, django_capture_on_commit_callbacks):
    client.force_login(operator)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/planner-runs/", {"connection": account.pk}, content_type="application/json")
    assert response.status_code == 202, response.json()
    run = PlannerRun.objects.get(pk=response.json()["id"])
    assert run.status == RunStatus.QUEUED
    assert OrmQ.objects.count() == 1


def test_planner_runs_are_paginated_and_tenant_scoped(
    account, operator, other_tenant, client, django_assert_max_num_queries
):
    for _ in range(3):
        PlannerRun.objects.create(tenant=account.tenant, connection=account, trigger="manual", local_date=TODAY)
    other = factories.sandbox_connection(other_tenant, factories.SandboxAccountFactory(account_id="other"), name="O")
    foreign = PlannerRun.objects.create(tenant=other_tenant, connection=other, trigger="manual", local_date=TODAY)
    client.force_login(operator)
    with django_assert_max_num_queries(8):
        body = client.get("/api/planner-runs/?page_size=2").json()
    assert body["count"] == 3 and len(body["results"]) == 2
    assert client.get(f"/api/planner-runs/{foreign.pk}/").status_code == 404
    bad = client.post("/api/planner-runs/", {"connection": other.pk}, content_type="application/json")
    assert bad.status_code == 404 and bad.json()["code"] == "not_found"


def test_external_plan_refused_with_the_field_and_entity(account, operator, client):
    client.force_login(operator)
    entity = PlatformEntity.objects.filter(connection=account).first()
    response = client.post(
        "/api/planner-runs/",
        {"connection": account.pk, "source": "items", "items": [{"entity": entity.pk, "daily_budget": "-3"}]},
        content_type="application/json",
    )
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "items[0].daily_budget" and error["entity"] == entity.pk
    assert not PlannerRun.objects.exists()


def test_automation_settings_patch_needs_an_admin_and_records_consent(account, tenant, operator, client):
    automation = auto.automation_for(account)
    client.force_login(operator)
    url = f"/api/automation-settings/{automation.pk}/"
    assert client.patch(url, {"changes": {"mode": "shadow"}}, content_type="application/json").status_code == 403
    admin = factories.member(tenant, Role.ADMIN, "acme-admin")
    client.force_login(admin)
    response = client.patch(
        url, {"changes": {"mode": "autopilot"}, "consent_reason": "pilot week"}, content_type="application/json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["consent_by"] == "acme-admin" and response.json()["consent_reason"] == "pilot week"
    bad = client.patch(url, {"changes": {"rollout_weekdays": [9]}}, content_type="application/json")
    assert bad.status_code == 400 and [e["field"] for e in bad.json()["errors"]] == ["rollout_weekdays"]


def test_schema_documents_the_planning_endpoints(client, operator):
    client.force_login(operator)
    schema = client.get("/api/schema/?format=json").json()
    assert "/api/planner-runs/" in schema["paths"] and "/api/automation-settings/{id}/" in schema["paths"]
