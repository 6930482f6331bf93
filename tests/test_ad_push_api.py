"""The ad-push API: a bundle dry-run is queued, run by the worker task, then read back."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from platforms.sandbox.models import SandboxRequest
from scenarios.models import PreflightRun
from scenarios.tasks import preflight_task
from tests.engine_helpers import sandbox_world
from tests.factories import ConnectionFactory, EntityFactory


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def bundle_entity(external_id: str, sections: dict, entity_type: str = "campaign") -> dict:
    return {
        "entity_type": entity_type,
        "entity_id": external_id,
        "metadata": {"platform": "sandbox"},
        "sections": sections,
    }


BUNDLE = {
    "plan_id": "plan-2026-11-20-eu",
    "notes": "Shift budget to brand",
    "entities": [
        bundle_entity("sandbox-cmp-1", {"spend": {"daily_budget": {"unit": "EUR", "value": "120.00"}}}),
        bundle_entity("sandbox-adset-1-1", {"spend": {"bid_amount": {"unit": "EUR", "value": "1.80"}}}, "ad_set"),
        bundle_entity("sandbox-cmp-2", {"delivery": {"status": {"value": "paused"}}}),
    ],
}


@pytest.fixture
def state_dir(tmp_path, settings):
    settings.STATE_DIR = tmp_path / "state"
    return settings.STATE_DIR


@pytest.fixture
def world(tenant, state_dir):
    return sandbox_world(tenant)


@pytest.fixture
def api(operator):
    return client_for(operator)


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    """What would be handed to django-q2 (the tests run the task themselves)."""
    calls: list[tuple] = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: calls.append(args))
    return calls


def dry_run(api, tenant_ref="acme", body=BUNDLE, query="") -> object:
    return api.post(
        f"/api/tenants/{tenant_ref}/ad-pushes/dry-run{query}", json.dumps(body), content_type="application/json"
    )


def queued(api, django_capture_on_commit_callbacks, **kwargs) -> PreflightRun:
    with django_capture_on_commit_callbacks(execute=True):
        response = dry_run(api, **kwargs)
    assert response.status_code == 202, response.json()
    return PreflightRun.objects.get(run_id=response.json()["run_id"])


# Dry run: validated now, run by the task ------------------------------------------------------------


def test_a_dry_run_is_queued_with_its_items_and_enqueued_after_commit(
    api, world, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = dry_run(api)
    assert response.status_code == 202
    run = PreflightRun.objects.get()
    assert response.json() == {"run_id": run.run_id, "status": "queued"}
    assert run.run_id.startswith("pf-") and len(run.run_id) == 23
    assert (run.plan_id, run.notes, run.mode, run.status) == (
        "plan-2026-11-20-eu",
        "Shift budget to brand",
        "manual",
        "queued",
    )
    assert run.inputs == [
        {"entity": world.entity("sandbox-cmp-1").pk, "targets": {"daily_budget": "120.00"}},
        {"entity": world.entity("sandbox-adset-1-1").pk, "targets": {"bid": "1.80"}},
        {"entity": world.entity("sandbox-cmp-2").pk, "targets": {"status": "paused"}},
    ]
    assert enqueued == [] and len(callbacks) == 1
    callbacks[0]()
    assert enqueued == [("scenarios.tasks.preflight_task", run.pk)]
    assert not SandboxRequest.objects.filter(account=world.account, method="read").exists(), "read by the task"


def test_the_task_runs_the_preflight_and_the_document_is_served(
    api, world, enqueued, django_capture_on_commit_callbacks, state_dir
):
    run = queued(api, django_capture_on_commit_callbacks)
    pending = api.get(f"/api/tenants/acme/ad-pushes/{run.run_id}").json()
    assert pending["status"] == "queued" and pending["source_plan_id"] == "plan-2026-11-20-eu"
    assert "entities" not in pending

    assert preflight_task(run.pk) == f"preflight {run.run_id}: succeeded"

    document = api.get(f"/api/tenants/acme/ad-pushes/{run.run_id}").json()
    assert document["status"] == "succeeded" and document["run_id"] == run.run_id
    assert document["tenant"] == "acme" and document["source_plan_id"] == "plan-2026-11-20-eu"
    assert document["summary"]["entities"] == 3 and document["summary"]["changed"] == 3
    changes = {e["external_id"]: e for e in document["entities"]}
    [budget] = changes["sandbox-cmp-1"]["sections"]["spend"]
    assert (budget["before"], budget["after"], budget["delta"]) == ("100.00", "120.00", "20.00")
    assert api.get("/api/tenants/acme/ad-pushes/latest").json() == document
    assert json.loads((state_dir / "ad_push_diffs.json").read_text())[0]["run_id"] == run.run_id
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00"), "a dry run changes nothing"


def test_the_task_is_idempotent(api, world, enqueued, django_capture_on_commit_callbacks, state_dir):
    run = queued(api, django_capture_on_commit_callbacks)
    preflight_task(run.pk)
    reads = SandboxRequest.objects.filter(account=world.account, method="read").count()
    finished = PreflightRun.objects.get(pk=run.pk)
    assert preflight_task(run.pk) == f"preflight {run.pk}: already claimed or finished"
    assert reads == 1 and SandboxRequest.objects.filter(account=world.account, method="read").count() == reads
    assert PreflightRun.objects.get(pk=run.pk).finished_at == finished.finished_at
    assert len(json.loads((state_dir / "ad_push_diffs.json").read_text())) == 1


def test_a_run_left_running_by_a_dead_worker_is_picked_up_again(
    api, world, enqueued, django_capture_on_commit_callbacks, settings
):
    run = queued(api, django_capture_on_commit_callbacks)
    PreflightRun.objects.filter(pk=run.pk).update(status="running", started_at=timezone.now())
    assert preflight_task(run.pk).endswith("already claimed or finished")
    long_ago = timezone.now() - timedelta(seconds=settings.Q_TIMEOUT + 1)
    PreflightRun.objects.filter(pk=run.pk).update(started_at=long_ago)
    assert preflight_task(run.pk).endswith("succeeded")


def test_a_platform_failure_is_shown_on_the_run(api, world, enqueued, django_capture_on_commit_callbacks, state_dir):
    run = queued(api, django_capture_on_commit_callbacks)
    world.connection.credentials = {"access_token": "revoked"}
    world.connection.save()
    assert preflight_task(run.pk).endswith("failed")
    body = api.get(f"/api/tenants/acme/ad-pushes/{run.run_id}").json()
    assert body["status"] == "failed" and "refused the access token" in body["error"]
    assert api.get("/api/tenants/acme/ad-pushes/latest").status_code == 404
    assert not (state_dir / "ad_push_diffs.json").exists()


def test_an_entity_removed_from_the_mirror_since_queueing_fails_the_run_with_its_id(
    api, world, enqueued, django_capture_on_commit_callbacks
):
    run = queued(api, django_capture_on_commit_callbacks)
    gone = world.entity("sandbox-cmp-2")
    gone_pk = gone.pk
    gone.delete()
    assert preflight_task(run.pk).endswith("failed")
    assert f"Entity {gone_pk}" in PreflightRun.objects.get(pk=run.pk).error_message


def test_mode_and_plan_id_can_be_given_in_the_query_or_the_body(
    api, world, enqueued, django_capture_on_commit_callbacks
):
    from_query = queued(api, django_capture_on_commit_callbacks, query="?mode=autopilot&plan_id=run-42")
    assert (from_query.mode, from_query.plan_id) == ("autopilot", "run-42")
    from_body = queued(api, django_capture_on_commit_callbacks, body={**BUNDLE, "mode": "assist"})
    assert (from_body.mode, from_body.plan_id) == ("assist", "plan-2026-11-20-eu")
    response = dry_run(api, query="?mode=yolo")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "mode"


def test_a_bad_bundle_is_refused_at_once_with_row_errors_and_nothing_is_queued(
    api, world, enqueued, django_capture_on_commit_callbacks
):
    body = json.loads(json.dumps(BUNDLE))
    body["entities"][0]["sections"]["spend"]["daily_budget"]["unit"] = "USD"
    body["entities"][2]["entity_id"] = "sandbox-cmp-9"
    with django_capture_on_commit_callbacks(execute=True):
        response = dry_run(api, body=body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [(e["index"], e["entity_id"], e["field"], e["code"]) for e in errors] == [
        (0, "sandbox-cmp-1", "sections.spend.daily_budget.unit", "wrong_currency"),
        (2, "sandbox-cmp-9", "entity_id", "unknown_entity"),
    ]
    assert PreflightRun.objects.count() == 0 and enqueued == []


def test_malformed_json_is_refused(api, world, enqueued):
    response = api.post("/api/tenants/acme/ad-pushes/dry-run", "{nope", content_type="application/json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["message"]


# Tenants, runs and roles ---------------------------------------------------------------------------------


def test_the_tenant_may_be_named_by_id_or_slug(api, world, tenant, enqueued, django_capture_on_commit_callbacks):
    run = queued(api, django_capture_on_commit_callbacks, tenant_ref=str(tenant.pk))
    preflight_task(run.pk)
    assert api.get(f"/api/tenants/{tenant.pk}/ad-pushes/{run.run_id}").json()["run_id"] == run.run_id
    assert api.get("/api/tenants/acme/ad-pushes/latest").json()["run_id"] == run.run_id


def test_unknown_or_foreign_tenants_and_runs_are_404(
    api, world, other_tenant, other_admin, enqueued, django_capture_on_commit_callbacks
):
    run = queued(api, django_capture_on_commit_callbacks)
    preflight_task(run.pk)
    for url in (
        f"/api/tenants/globex/ad-pushes/{run.run_id}",
        f"/api/tenants/{other_tenant.pk}/ad-pushes/latest",
        "/api/tenants/no-such-tenant/ad-pushes/latest",
        "/api/tenants/acme/ad-pushes/pf-00000000000000000000",
    ):
        response = api.get(url)
        assert response.status_code == 404, url
        assert response.json()["code"] == "not_found"
    assert dry_run(api, tenant_ref="globex").status_code == 404
    foreign = client_for(other_admin)
    assert foreign.get(f"/api/tenants/acme/ad-pushes/{run.run_id}").status_code == 404
    assert foreign.get(f"/api/tenants/globex/ad-pushes/{run.run_id}").status_code == 404


def test_a_tenant_without_preflights_has_no_latest(api, world):
    response = api.get("/api/tenants/acme/ad-pushes/latest")
    assert response.status_code == 404 and "has no preflight yet" in response.json()["message"]


def test_viewers_read_ad_pushes_but_cannot_start_one(api, world, viewer, enqueued, django_capture_on_commit_callbacks):
    run = queued(api, django_capture_on_commit_callbacks)
    preflight_task(run.pk)
    reader = client_for(viewer)
    assert reader.get("/api/tenants/acme/ad-pushes/latest").status_code == 200
    refused = dry_run(reader)
    assert refused.status_code == 403 and refused.json()["message"] == "Your role does not allow you to run preflights."
    assert PreflightRun.objects.count() == 1


def test_another_tenants_entities_in_a_bundle_do_not_exist(api, world, other_tenant, enqueued):
    EntityFactory(connection=ConnectionFactory(tenant=other_tenant, platform="sandbox"), external_id="globex-cmp-1")
    body = {"entities": [bundle_entity("globex-cmp-1", {"delivery": {"status": {"value": "paused"}}})]}
    response = dry_run(api, body=body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"].endswith(
        "sandbox campaign globex-cmp-1 does not exist in your tenant."
    )
