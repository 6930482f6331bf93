"""The run page draws the allocation and the curves; the rollout page promotes on a click."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from django.conf import settings

from budgetradar.roles import Role
from planning.models import CurveFit, DecisionLogEntry, Mode, PlannerRun, RolloutStep
from planning.services.automation import automation_for
from platforms.models import PlatformEntity
from tests import factories


def reasoning_row(entity, current, proposed):
    return {
        "entity_id": entity.pk,
        "name": entity.name,
        "external_id": entity.external_id,
        "entity_type": "campaign",
        "current_budget": current,
        "proposed_budget": proposed,
        "current_spend": float(current),
        "proposed_spend": float(proposed),
        "marginal_before": 4.2,
        "marginal_after": 5.0,
        "light_before": "green",
        "light_after": "yellow",
        "predicted_before": 10.0,
        "predicted_after": 12.0,
        "confidence": "high",
        "why": "Raised 100.00 -> 150.00: its marginal CPA 4.2 was below the plan's.",
    }


def test_run_page_shows_allocation_chart_curves_and_reasons(tenant, client):
    admin = factories.member(tenant, Role.ADMIN, "acme-admin")
    connection = factories.ConnectionFactory(tenant=tenant)
    entity = factories.EntityFactory(tenant=tenant, connection=connection, daily_budget="100.00")
    run = PlannerRun.objects.create(
        tenant=tenant,
        connection=connection,
        trigger="manual",
        local_date=date(2026, 6, 1),
        status="succeeded",
        reasoning=[reasoning_row(entity, "100.00", "150.00")],
        fallback_level="curves",
    )
    CurveFit.objects.create(
        tenant=tenant,
        connection=connection,
        entity=entity,
        run=run,
        status="ok",
        vmax=20,
        half_saturation=100,
        shape=1.0,
        adstock=0.1,
        r_squared=0.9,
        confidence="high",
        max_spend=120,
    )
    client.force_login(admin)
    page = client.get(f"/admin/planning/plannerrun/{run.pk}/change/").content.decode()
    assert 'src="/static/vendor/chartjs/chart.umd.min.js"' in page
    assert 'id="br-allocation"' in page and 'id="br-curve-1"' in page
    assert "its marginal CPA 4.2 was below the plan" in page
    assert (Path(settings.BASE_DIR) / "budgetradar/static/vendor/chartjs/chart.umd.min.js").stat().st_size > 100_000


def test_rollout_page_promotes_from_shadow_on_a_click(tenant, client):
    tenant.plan = factories.plan("enterprise")
    tenant.save()
    admin = factories.member(tenant, Role.ADMIN, "acme-admin")
    connection = factories.ConnectionFactory(tenant=tenant)
    automation = automation_for(connection)
    client.force_login(admin)
    url = f"/admin/planning/automationsettings/{automation.pk}/rollout/"
    page = client.get(url).content.decode()
    assert "Promote to 25 %" in page and "conversions at least +10%" in page
    response = client.post(url, {"reason": "shadow looked right"})
    assert response.status_code == 302
    automation.refresh_from_db()
    assert automation.mode == Mode.AUTOPILOT and automation.rollout_step == "25"
    assert automation.consent_by == admin and automation.holdout_share == 75
    assert RolloutStep.objects.get().promoted_by == admin
    assert DecisionLogEntry.objects.filter(kind="rollout_promoted").exists()


def test_viewer_cannot_promote(tenant, client):
    viewer = factories.member(tenant, Role.VIEWER, "acme-viewer")
    connection = factories.ConnectionFactory(tenant=tenant)
    automation = automation_for(connection)
    client.force_login(viewer)
    client.post(f"/admin/planning/automationsettings/{automation.pk}/rollout/", {"reason": "x"})
    automation.refresh_from_db()
    assert automation.rollout_step == "shadow" and not RolloutStep.objects.exists()
    assert PlatformEntity.objects.count() == 0
