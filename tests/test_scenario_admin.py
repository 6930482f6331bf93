"""The scenario admin: pages render and stay flat in queries, tenants stay apart, roles
gate the buttons, the preflight shows as a diff with guardrail badges, and a live deploy
is confirmed on a page whose idempotency key makes a second submit return the same
deployment."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from actions.models import Action, ActionStatus
from actions.services.rollback import action_rollback_request
from budgetradar.models import Tenant
from budgetradar.roles import Role
from platforms.models import CircuitState, PlatformConnection
from scenarios.models import (
    Deployment,
    DeploymentResult,
    GuardrailOverride,
    GuardrailPolicy,
    PreflightEntity,
    PreflightRun,
    Scenario,
    ScenarioItem,
)
from tests import factories
from tests.engine_helpers import run_worker, sandbox_world

MODELS = [Scenario, PreflightRun, Deployment, GuardrailPolicy, GuardrailOverride]


def url(model, view: str = "changelist", *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def superuser(db):
    return factories.UserFactory(username="root", is_superuser=True)


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant)


def make_scenario(tenant: Tenant, items: dict, *, name: str = "Q3 shift", world=None) -> Scenario:
    """A scenario of ``{entity: {field: value}}`` (entities or, with ``world``, external ids)."""
    scenario = Scenario.objects.create(tenant=tenant, name=name)
    for entity, targets in items.items():
        entity = world.entity(entity) if world is not None else entity
        ScenarioItem.objects.create(scenario=scenario, entity=entity, **targets)
    return scenario


def preflight(scenario: Scenario, actor) -> PreflightRun:
    from scenarios.services.preflight import preflight_for_scenario

    return preflight_for_scenario(scenario=scenario, actor=actor)


def document(entity, *, before: str = "100.00", after: str = "150.00", breaches: list | None = None) -> dict:
    """A small preflight document in the contract's shape (for pages, without a platform)."""
    change = {
        "field": "daily_budget",
        "field_path": "campaign.daily_budget",
        "label": "Daily budget",
        "before": before,
        "after": after,
        "delta": str(Decimal(after) - Decimal(before)),
        "percent_delta": "50.00",
        "unit": "EUR",
        "changed": True,
        "forecast_delta": {"conversions": "1.20", "revenue": "48.00"},
        "breaches": breaches or [],
    }
    key = f"sandbox:campaign:{entity.external_id}"
    return {
        "run_id": "pf-x",
        "entities": [
            {
                "key": key,
                "entity_id": entity.pk,
                "connection_id": entity.connection_id,
                "platform": "sandbox",
                "entity_type": "campaign",
                "external_id": entity.external_id,
                "name": entity.name,
                "currency": "EUR",
                "change_type": "update",
                "before": {"daily_budget": before, "lifetime_budget": None, "status": "active", "bid": None},
                "after": {"daily_budget": after, "lifetime_budget": None, "status": "active", "bid": None},
                "sections": {"spend": [change], "delivery": [], "audience": [], "creative": []},
                "shared_budget": None,
                "forecast": None,
                "forecast_status": "no_data",
                "breaches": [],
            }
        ],
        "summary": {
            "entities": 1,
            "changed": 1,
            "noop": 0,
            "by_section": {"spend": {"changes": 1, "entities": 1}},
            "by_platform": {
                "sandbox": {
                    "entities": 1,
                    "changed": 1,
                    "currency": "EUR",
                    "daily_budget_before": before,
                    "daily_budget_after": after,
                    "daily_budget_delta": "50.00",
                }
            },
            "total": {"daily_budget_delta_by_currency": {"EUR": "50.00"}, "forecast": {}},
        },
        "breaches": breaches or [],
        "has_critical": any(b["severity"] == "critical" for b in breaches or []),
    }


def seed(tenant: Tenant, n: int) -> None:
    """``n`` rows of every scenario admin's kind in ``tenant`` (and ``n`` more tenants)."""
    for i in range(n):
        conn = factories.ConnectionFactory(tenant=tenant)
        entity = factories.EntityFactory(connection=conn)
        author = factories.MembershipFactory(tenant=tenant, user=factories.UserFactory(password=None)).user
        scenario = Scenario.objects.create(tenant=tenant, name=f"Plan {i}", created_by=author)
        ScenarioItem.objects.create(scenario=scenario, entity=entity, daily_budget=Decimal("150.00"))
        breach = {"code": "max_increase_pct", "severity": "critical", "message": "Too much.", "key": "k", "field": None}
        head = document(entity, breaches=[breach])
        [entity_doc] = head.pop("entities")
        run = PreflightRun.objects.create(
            tenant=tenant,
            run_id=f"pf-{tenant.pk}-{entity.pk}",
            scenario=scenario,
            status=PreflightRun.Status.SUCCEEDED,
            payload=head,
            has_critical=True,
            created_by=author,
        )
        PreflightEntity.objects.create(
            run=run,
            position=0,
            entity_id=entity.pk,
            connection_id=conn.pk,
            change_type="update",
            breaches=1,
            document=entity_doc,
        )
        override = GuardrailOverride.objects.create(
            tenant=tenant, preflight=run, reason="Launch day", requested_by=author, approved_by=author
        )
        deployment = Deployment.objects.create(
            tenant=tenant,
            scenario=scenario,
            preflight=run,
            mode=Deployment.Mode.LIVE,
            idempotency_key=f"key-{entity.pk}",
            override=override,
            requested_by=author,
            total=1,
            failed=1,
            status=Deployment.Status.FAILED,
        )
        DeploymentResult.objects.create(
            deployment=deployment,
            entity=entity,
            status=DeploymentResult.Status.FAILED,
            before={"daily_budget": "100.00"},
            after={"daily_budget": "100.00"},
            error_code="invalid_value",
            error_message="Below the minimum.",
            retryable=False,
            hint="Propose a new value.",
        )
        GuardrailPolicy.objects.create(tenant=tenant, connection=conn, name=f"Policy {i}", max_increase_pct=20)
        factories.TenantFactory()


# Every page renders ------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["tenant_admin", "superuser"])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label)
def test_changelist_change_and_history_pages_render(client, request, tenant, who, model):
    seed(tenant, 2)
    client.force_login(request.getfixturevalue(who))
    assert client.get(url(model)).status_code == 200
    obj = model.objects.filter(tenant=tenant).order_by("pk").first()
    assert client.get(url(model, "change", obj.pk)).status_code == 200
    if hasattr(model, "history"):
        assert client.get(url(model, "history", obj.pk)).status_code == 200


@pytest.mark.parametrize("model", [Scenario, GuardrailPolicy])
def test_add_pages_render_for_a_tenant_admin(client, tenant_admin, model):
    client.force_login(tenant_admin)
    assert client.get(url(model, "add")).status_code == 200


@pytest.mark.parametrize("who", ["tenant_admin", "superuser"])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label)
def test_changelist_query_count_does_not_grow_with_rows(client, request, tenant, who, model):
    client.force_login(request.getfixturevalue(who))
    seed(tenant, 2)
    client.get(url(model))
    with CaptureQueriesContext(db_connection) as few:
        assert client.get(url(model)).status_code == 200
    seed(tenant, 10)
    with CaptureQueriesContext(db_connection) as many:
        assert client.get(url(model)).status_code == 200
    assert len(many) == len(few), "\n".join(q["sql"] for q in many.captured_queries)


def test_people_are_named_not_linked_to_the_user_admin(client, tenant_admin, tenant):
    seed(tenant, 1)
    client.force_login(tenant_admin)
    for model in MODELS:
        obj = model.objects.filter(tenant=tenant).first()
        page = client.get(url(model, "change", obj.pk)).content.decode()
        assert "/admin/auth/user/" not in page, model


def test_history_is_one_click_away(client, tenant_admin, tenant):
    seed(tenant, 1)
    client.force_login(tenant_admin)
    for model in [Scenario, Deployment, GuardrailPolicy, GuardrailOverride]:
        obj = model.objects.filter(tenant=tenant).first()
        assert url(model, "history", obj.pk) in client.get(url(model)).content.decode(), model


def test_the_scenario_list_shows_items_and_the_latest_preflight(client, approver, tenant, campaign):
    seed(tenant, 1)
    make_scenario(tenant, {campaign: {"daily_budget": Decimal("120.00")}}, name="Fresh plan")
    client.force_login(approver)
    page = client.get(url(Scenario)).content.decode()
    assert "Plan 0" in page and "Critical breaches" in page
    assert "Fresh plan" in page and "No preflight" in page


# Tenant scoping -------------------------------------------------------------------------------


def test_another_tenants_rows_are_invisible_and_404(client, tenant_admin, other_tenant):
    seed(other_tenant, 1)
    client.force_login(tenant_admin)
    for model in MODELS:
        obj = model.objects.get(tenant=other_tenant)
        assert client.get(url(model, "change", obj.pk)).status_code == 404, model
        assert "Plan 0" not in client.get(url(model)).content.decode(), model
    scenario = Scenario.objects.get(tenant=other_tenant)
    deployment = Deployment.objects.get(tenant=other_tenant)
    assert client.get(url(Scenario, "history", scenario.pk)).status_code == 404
    assert client.get(url(Scenario, "deploy", scenario.pk)).status_code == 404
    assert client.post(url(Scenario, "preflight", scenario.pk)).status_code == 404
    assert client.post(url(Scenario, "dry_run", scenario.pk), {"idempotency_key": "k"}).status_code == 404
    assert client.post(url(Scenario, "deploy", scenario.pk), {"idempotency_key": "k"}).status_code == 404
    assert client.get(url(Deployment, "retry", deployment.pk)).status_code == 404
    assert client.get(url(Deployment, "rollback", deployment.pk)).status_code == 404
    assert Deployment.objects.filter(tenant=other_tenant).count() == 1


def test_item_entities_are_offered_and_accepted_only_from_the_tenant(client, operator, campaign, other_tenant):
    theirs = factories.EntityFactory(tenant=other_tenant, name="EU Search - Globex")
    client.force_login(operator)
    params = {"app_label": "scenarios", "model_name": "scenarioitem", "field_name": "entity", "term": "EU Search"}
    results = client.get(reverse("admin:autocomplete"), params).json()["results"]
    assert [r["id"] for r in results] == [str(campaign.pk)]
    response = client.post(url(Scenario, "add"), scenario_form("Stolen", [(theirs.pk, {"daily_budget": "120.00"})]))
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Scenario.objects.exists()


# Editing items -----------------------------------------------------------------------------------


def scenario_form(name: str, items: list[tuple[int, dict]], *, initial: int = 0, **extra) -> dict:
    data = {
        "name": name,
        "source_plan_id": "",
        "notes": "",
        "items-TOTAL_FORMS": str(len(items)),
        "items-INITIAL_FORMS": str(initial),
        "items-MIN_NUM_FORMS": "0",
        "items-MAX_NUM_FORMS": "1000",
        **extra,
    }
    for i, (entity_id, targets) in enumerate(items):
        data[f"items-{i}-entity"] = str(entity_id)
        for field in ("daily_budget", "lifetime_budget", "status", "bid"):
            data[f"items-{i}-{field}"] = targets.get(field, "")
    return data


def test_a_scenario_with_items_is_created_through_the_service(client, operator, tenant, campaign):
    client.force_login(operator)
    data = scenario_form("Q3 shift", [(campaign.pk, {"daily_budget": "120.00", "status": "paused"})])
    response = client.post(url(Scenario, "add"), {**data, "change_reason": "Black Friday plan"})
    assert response.status_code == 302, response.content.decode()[:3000]
    scenario = Scenario.objects.get(name="Q3 shift")
    assert scenario.tenant == tenant and scenario.created_by == operator
    [item] = scenario.items.all()
    assert (item.entity, item.daily_budget, item.status) == (campaign, Decimal("120.00"), "paused")
    latest = scenario.history.latest()
    assert latest.history_user == operator and latest.history_change_reason == "Black Friday plan"


def test_items_are_validated_with_the_import_rules_and_nothing_is_written(client, operator, campaign, connection_):
    ad_set = factories.AdSetFactory(connection=connection_, parent=campaign)
    client.force_login(operator)
    data = scenario_form("Bad plan", [(campaign.pk, {"daily_budget": "-5.00"}), (ad_set.pk, {"bid": "1.234"})])
    response = client.post(url(Scenario, "add"), data)
    page = response.content.decode()
    assert response.status_code == 200
    assert "Item 0, daily_budget: cannot be negative; got -5.00." in page
    assert "Item 1, bid: 1.234 EUR has more than 2 decimal places" in page
    assert not Scenario.objects.exists() and not ScenarioItem.objects.exists()
    duplicate = scenario_form("Twice", [(campaign.pk, {"daily_budget": "120.00"}), (campaign.pk, {"status": "paused"})])
    assert "Please correct the duplicate" in client.post(url(Scenario, "add"), duplicate).content.decode()
    assert not Scenario.objects.exists()


def test_the_import_rules_reach_the_form_row(client, operator, campaign):
    client.force_login(operator)
    response = client.post(url(Scenario, "add"), scenario_form("Bid on a campaign", [(campaign.pk, {"bid": "2.00"})]))
    assert response.status_code == 200
    assert "bid can be set on ad sets only" in response.content.decode()
    assert not Scenario.objects.exists()


def test_editing_items_replaces_them_through_the_service(client, operator, tenant, campaign, connection_):
    other = factories.EntityFactory(connection=connection_, name="EU Display")
    scenario = make_scenario(tenant, {campaign: {"daily_budget": Decimal("120.00")}})
    item = scenario.items.get()
    client.force_login(operator)
    data = scenario_form("Q3 shift", [(campaign.pk, {"daily_budget": "130.00"}), (other.pk, {"status": "paused"})])
    data["items-INITIAL_FORMS"] = "1"
    data["items-0-id"] = str(item.pk)
    data["items-0-scenario"] = str(scenario.pk)
    response = client.post(url(Scenario, "change", scenario.pk), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    targets = {i.entity_id: i.targets() for i in scenario.items.all()}
    assert targets == {campaign.pk: {"daily_budget": Decimal("130.00")}, other.pk: {"status": "paused"}}
    assert scenario.history.latest().history_change_reason == "changed in the admin: items"


def test_a_big_scenario_lists_its_items_read_only_and_keeps_them_on_save(
    client, operator, tenant, connection_, monkeypatch
):
    monkeypatch.setattr("scenarios.admin.scenarios.MAX_INLINE_ITEMS", 2)
    monkeypatch.setattr("scenarios.admin.scenarios.ITEMS_PAGE_SIZE", 2)
    entities = [factories.EntityFactory(connection=connection_, name=f"Big {i}") for i in range(3)]
    scenario = make_scenario(tenant, {e: {"daily_budget": Decimal("120.00")} for e in entities})
    client.force_login(operator)
    page = client.get(url(Scenario, "change", scenario.pk)).content.decode()
    assert 'id="scenario-items"' in page and "Items 1–2 of 3" in page and "items-TOTAL_FORMS" not in page
    data = {"name": "Bigger", "notes": "", "source_plan_id": ""}
    assert client.post(url(Scenario, "change", scenario.pk), data).status_code == 302
    scenario.refresh_from_db()
    assert scenario.name == "Bigger" and scenario.items.count() == 3


# Import ------------------------------------------------------------------------------------------


def test_a_csv_file_is_imported_into_a_scenario(client, operator, tenant, world):
    client.force_login(operator)
    assert url(Scenario, "import") in client.get(url(Scenario)).content.decode()
    csv = (
        b"platform,entity_id,field,value\n"
        b"sandbox,sandbox-cmp-1,daily_budget,120.00\n"
        b"sandbox,sandbox-cmp-2,status,paused\n"
    )
    upload = SimpleUploadedFile("plan.csv", csv, content_type="text/csv")
    response = client.post(url(Scenario, "import"), {"file": upload, "format": "auto", "name": "From CSV"})
    scenario = Scenario.objects.get(name="From CSV")
    assert response["Location"] == url(Scenario, "change", scenario.pk)
    assert scenario.items.count() == 2


def test_a_bad_file_lists_every_row_error_and_imports_nothing(client, operator, world):
    client.force_login(operator)
    csv = b"platform,entity_id,field,value\nsandbox,sandbox-cmp-1,daily_budget,-1\nsandbox,nope,status,paused\n"
    upload = SimpleUploadedFile("plan.csv", csv, content_type="text/csv")
    page = client.post(url(Scenario, "import"), {"file": upload, "format": "auto"}).content.decode()
    assert "nothing was imported" in page
    table = page.split('id="import-errors"')[1]
    assert "line 2" in table and "cannot be negative" in table
    assert "line 3" in table and "nope" in table
    assert not Scenario.objects.exists()


def test_a_viewer_cannot_import(client, viewer):
    client.force_login(viewer)
    assert client.get(url(Scenario, "import")).status_code == 403


# Buttons by role ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "preflight_", "dry_run", "deploy"),
    [
        ("viewer", False, False, False),
        ("operator", True, True, False),
        ("approver", True, True, True),
    ],
)
def test_buttons_follow_the_role(client, request, tenant, campaign, who, preflight_, dry_run, deploy):
    scenario = make_scenario(tenant, {campaign: {"daily_budget": Decimal("120.00")}})
    client.force_login(request.getfixturevalue(who))
    page = client.get(url(Scenario, "change", scenario.pk)).content.decode()
    assert ('id="tool-preflight"' in page) is preflight_
    assert ('id="tool-dry-run"' in page) is dry_run
    assert ('id="tool-deploy"' in page) is deploy


def test_refused_roles_get_403_not_a_service_call(client, viewer, operator, tenant, campaign):
    scenario = make_scenario(tenant, {campaign: {"daily_budget": Decimal("120.00")}})
    client.force_login(viewer)
    assert client.post(url(Scenario, "preflight", scenario.pk)).status_code == 403
    assert client.post(url(Scenario, "dry_run", scenario.pk), {"idempotency_key": "k"}).status_code == 403
    client.force_login(operator)
    assert client.get(url(Scenario, "deploy", scenario.pk)).status_code == 403
    assert client.post(url(Scenario, "deploy", scenario.pk), {"idempotency_key": "k"}).status_code == 403
    assert not PreflightRun.objects.exists() and not Deployment.objects.exists()


# Preflight and the diff ----------------------------------------------------------------------


def test_the_preflight_button_shows_the_diff_with_guardrail_badges(client, operator, tenant, world):
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("20"), max_decrease_pct=Decimal("10"))
    scenario = make_scenario(
        tenant,
        {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}, "sandbox-cmp-2": {"daily_budget": Decimal("80.00")}},
        world=world,
    )
    client.force_login(operator)
    response = client.post(url(Scenario, "preflight", scenario.pk), follow=True)
    page = response.content.decode()
    run = PreflightRun.objects.get(scenario=scenario)
    assert f"Preflight {run.run_id}: 2 of 2 entities change; 1 critical and 3 warning" in page
    diff = page.split('id="preflight"')[1]
    raised = diff.split('data-key="sandbox:campaign:sandbox-cmp-1"')[1].split("br-diff-entity")[0]
    assert "Spend" in raised and "Daily budget" in raised
    assert "100.00 EUR" in raised and "150.00 EUR" in raised and "+50.00 EUR" in raised and "+50.00 %" in raised
    assert re.search(r'br-badge-red"[^>]*>critical · Max increase per change \(%\)', raised)
    lowered = diff.split('data-key="sandbox:campaign:sandbox-cmp-2"')[1]
    assert "-20.00 EUR" in lowered and "-20.00 %" in lowered
    assert re.search(r'br-badge-amber"[^>]*>warning · Max decrease per change \(%\)', lowered)
    summary = diff.split('id="diff-summary"')[1].split("</table>")[0]
    assert "200.00 EUR" in summary and "230.00 EUR" in summary and "+30.00 EUR" in summary
    assert "live deploy is refused" in diff


def test_a_failed_preflight_is_an_error_message(client, operator, tenant, world):
    world.fault("auth_expired", scope="any", remaining=None)
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    client.force_login(operator)
    response = client.post(url(Scenario, "preflight", scenario.pk), follow=True)
    assert response.status_code == 200
    assert f"The preflight of {scenario.name} failed" in response.content.decode()


def test_the_preflight_page_shows_the_same_diff(client, viewer, tenant, world, operator):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    run = preflight(scenario, operator)
    client.force_login(viewer)
    page = client.get(url(PreflightRun, "change", run.pk)).content.decode()
    assert run.run_id in page and "+50.00 EUR" in page


# Dry run -------------------------------------------------------------------------------------


def test_the_dry_run_button_validates_and_changes_nothing(client, operator, tenant, world):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    client.force_login(operator)
    page = client.get(url(Scenario, "change", scenario.pk)).content.decode()
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
    response = client.post(url(Scenario, "dry_run", scenario.pk), {"idempotency_key": key}, follow=True)
    deployment = Deployment.objects.get()
    assert response.redirect_chain[-1][0] == url(Deployment, "change", deployment.pk)
    page = response.content.decode()
    assert "Nothing was changed on the platforms" in page
    assert 'data-status="validated"' in page
    client.post(url(Scenario, "dry_run", scenario.pk), {"idempotency_key": key})  # double click
    assert Deployment.objects.count() == 1
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")
    assert world.applied_count("sandbox-cmp-1") == 0


# Live deploy -----------------------------------------------------------------------------------


def deploy_page(client, scenario: Scenario) -> tuple[str, dict]:
    page = client.get(url(Scenario, "deploy", scenario.pk)).content.decode()
    form = page.split('id="deploy-form"')[1].split("</form>")[0]
    fields = dict(re.findall(r'name="(idempotency_key|preflight|override)" value="([^"]*)"', form))
    return page, fields


def test_the_deploy_confirmation_shows_the_diff_and_carries_a_key(client, approver, tenant, world):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    run = preflight(scenario, approver)
    client.force_login(approver)
    page, fields = deploy_page(client, scenario)
    assert re.fullmatch(r"[0-9a-f-]{36}", fields["idempotency_key"])
    assert fields["preflight"] == str(run.pk)
    assert "Yes, deploy 1 change live" in page
    assert "+50.00 EUR" in page and 'id="diff-summary"' in page and 'id="deploy-breaches"' in page
    assert deploy_page(client, scenario)[1]["idempotency_key"] != fields["idempotency_key"]  # new per render
    assert not Deployment.objects.exists()


def test_the_deploy_confirmation_says_four_eyes_refuses_the_author_in_the_deploys_own_words(
    client, approver, tenant, world
):
    tenant.four_eyes_required = True
    tenant.save()
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    Scenario.objects.filter(pk=scenario.pk).update(created_by=approver)
    preflight(scenario, approver)
    client.force_login(approver)
    page, fields = deploy_page(client, scenario)
    said = (
        "Four-eyes approval is required: you created or last changed scenario Q3 shift, so another person must "
        "deploy it live."
    )
    assert f'<p class="errornote" id="deploy-four-eyes">{said}</p>' in page
    client.post(url(Scenario, "deploy", scenario.pk), fields)
    assert not Deployment.objects.exists()
    assert said in client.get(url(Scenario, "change", scenario.pk)).content.decode()


def test_submitting_the_confirmation_twice_creates_one_deployment(client, approver, tenant, world):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    preflight(scenario, approver)
    client.force_login(approver)
    _page, fields = deploy_page(client, scenario)
    first = client.post(url(Scenario, "deploy", scenario.pk), fields, follow=True)
    deployment = Deployment.objects.get()
    assert first.redirect_chain[-1][0] == url(Deployment, "change", deployment.pk)
    assert f"Deployment #{deployment.pk} is" in first.content.decode()
    second = client.post(url(Scenario, "deploy", scenario.pk), fields, follow=True)
    assert second.redirect_chain[-1][0] == url(Deployment, "change", deployment.pk)
    assert "already submitted" in second.content.decode()
    assert Deployment.objects.count() == 1
    assert Action.objects.filter(deployment=deployment).count() == 1


def test_a_confirmation_of_an_older_preflight_is_refused(client, approver, tenant, world):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    preflight(scenario, approver)
    client.force_login(approver)
    _page, fields = deploy_page(client, scenario)
    preflight(scenario, approver)  # someone ran a new preflight meanwhile
    response = client.post(url(Scenario, "deploy", scenario.pk), fields, follow=True)
    assert "A newer preflight exists than the one you confirmed" in response.content.decode()
    assert not Deployment.objects.exists()


def test_deploy_without_a_preflight_says_to_run_one(client, approver, tenant, world):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    client.force_login(approver)
    response = client.get(url(Scenario, "deploy", scenario.pk), follow=True)
    assert "has no successful preflight yet; run a preflight first" in response.content.decode()


def test_a_too_old_preflight_is_refused_with_the_reason(client, approver, tenant, world):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    run = preflight(scenario, approver)
    two_hours_ago = timezone.now() - timedelta(hours=2)
    PreflightRun.objects.filter(pk=run.pk).update(created_at=two_hours_ago, reads_finished_at=two_hours_ago)
    client.force_login(approver)
    page, fields = deploy_page(client, scenario)
    assert "older than 30 minutes" in page
    response = client.post(url(Scenario, "deploy", scenario.pk), fields, follow=True)
    assert "was not deployed" in response.content.decode()
    assert "older than 30 minutes" in response.content.decode()
    assert not Deployment.objects.exists()


def test_a_plan_without_live_deploy_is_refused_with_the_limit(client, approver, tenant, world):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    preflight(scenario, approver)
    Tenant.objects.filter(pk=tenant.pk).update(plan=factories.plan("growth"))
    client.force_login(approver)
    _page, fields = deploy_page(client, scenario)
    response = client.post(url(Scenario, "deploy", scenario.pk), fields, follow=True)
    page = response.content.decode()
    assert "was not deployed" in page and "Growth" in page
    assert not Deployment.objects.exists()


def test_an_open_circuit_refuses_the_deploy(client, approver, tenant, world):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    preflight(scenario, approver)
    PlatformConnection.objects.filter(pk=world.connection.pk).update(
        circuit_state=CircuitState.OPEN, circuit_opened_at=timezone.now(), circuit_reason="auth_expired"
    )
    client.force_login(approver)
    _page, fields = deploy_page(client, scenario)
    response = client.post(url(Scenario, "deploy", scenario.pk), fields, follow=True)
    assert "circuit breaker" in response.content.decode()
    assert not Deployment.objects.exists()


def test_critical_breaches_need_an_override_approved_by_a_second_person(client, tenant, world, approver):
    first_admin = factories.member(tenant, Role.ADMIN, "acme-admin")
    second_admin = factories.member(tenant, Role.ADMIN, "acme-admin-2")
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("20"))
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    run = preflight(scenario, approver)

    client.force_login(approver)
    page = client.get(url(Scenario, "deploy", scenario.pk)).content.decode()
    assert 'id="deploy-blocked"' in page and 'id="deploy-form"' not in page
    assert 'id="override-request-form"' not in page  # approvers may not override guardrails
    assert client.post(url(Scenario, "deploy", scenario.pk), {"idempotency_key": "x", "preflight": run.pk})
    assert not Deployment.objects.exists()

    client.force_login(first_admin)
    assert 'id="override-request-form"' in client.get(url(Scenario, "deploy", scenario.pk)).content.decode()
    client.post(url(Scenario, "override_request", scenario.pk), {"preflight": run.pk, "reason": "Launch day"})
    override = GuardrailOverride.objects.get()
    page = client.get(url(Scenario, "deploy", scenario.pk)).content.decode()
    assert "Launch day" in page and f'id="approve-override-{override.pk}"' not in page  # not their own
    response = client.post(url(Scenario, "override_approve", scenario.pk, override.pk), follow=True)
    assert "You requested this override; another person" in response.content.decode()

    client.force_login(second_admin)
    client.post(url(Scenario, "override_approve", scenario.pk, override.pk))
    override.refresh_from_db()
    assert override.approved_by == second_admin

    client.force_login(approver)
    page, fields = deploy_page(client, scenario)
    assert 'id="approved-override"' in page and fields["override"] == str(override.pk)
    client.post(url(Scenario, "deploy", scenario.pk), fields)
    assert Deployment.objects.get().override == override


# The deployment page -------------------------------------------------------------------------


def bar(page: str) -> dict[str, tuple[str, str]]:
    """The deployment page's progress bar: segment name → (x, width) in percent."""
    svg = page.split('id="deployment-bar"')[1].split("</svg>")[0]
    found = re.findall(r'data-segment="([a-z-]+)" x="([\d.]+)" y="0" width="([\d.]+)"', svg)
    return {name: (x, width) for name, x, width in found}


def counts(page: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page.split('id="deployment-counts">')[1].split("</p>")[0]).split())


def test_a_running_deployment_refreshes_and_a_finished_one_does_not(client, approver, tenant, world):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    preflight(scenario, approver)
    client.force_login(approver)
    client.post(url(Scenario, "deploy", scenario.pk), deploy_page(client, scenario)[1])
    deployment = Deployment.objects.get()
    page = client.get(url(Deployment, "change", deployment.pk)).content.decode()
    assert deployment.status in ("queued", "running")
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "0 of 1 entities settled" in page and bar(page) == {"pending": ("0.00", "100.00")}
    Deployment.objects.filter(pk=deployment.pk).update(status=Deployment.Status.SUCCEEDED, pending=0, succeeded=1)
    page = client.get(url(Deployment, "change", deployment.pk)).content.decode()
    assert 'http-equiv="refresh"' not in page
    assert url(PreflightRun, "change", deployment.preflight_id) in page
    action = Action.objects.get(deployment=deployment)
    assert url(Action, "change", action.pk) in page
    assert url(Deployment, "change", deployment.pk) in client.get(url(Action, "change", action.pk)).content.decode()


def test_retry_and_rollback_buttons_follow_role_and_state(client, tenant, operator, approver):
    seed(tenant, 1)
    deployment = Deployment.objects.get(tenant=tenant)
    client.force_login(approver)
    page = client.get(url(Deployment, "change", deployment.pk)).content.decode()
    assert 'id="tool-retry"' in page
    assert 'id="tool-rollback"' not in page  # nothing succeeded
    assert bar(page) == {"failed": ("0.00", "100.00")}  # every entity failed: no green
    assert "Below the minimum." in page and "Propose a new value." in page and "Value refused by the platform" in page
    client.force_login(operator)
    page = client.get(url(Deployment, "change", deployment.pk)).content.decode()
    assert 'id="tool-retry"' not in page
    assert client.get(url(Deployment, "retry", deployment.pk)).status_code == 403
    assert client.get(url(Deployment, "rollback", deployment.pk)).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_deploy_partial_failure_retry_and_rollback_through_the_admin(client):
    tenant = factories.TenantFactory(slug="acme", name="Acme")
    approver = factories.member(tenant, Role.APPROVER, "acme-approver")
    world = sandbox_world(tenant)
    world.fault("partial_failure", entity_ids=["sandbox-cmp-2"])
    scenario = make_scenario(
        tenant,
        {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}, "sandbox-cmp-2": {"daily_budget": Decimal("120.00")}},
        world=world,
    )
    preflight(scenario, approver)
    client.force_login(approver)
    client.post(url(Scenario, "deploy", scenario.pk), deploy_page(client, scenario)[1])
    deployment = Deployment.objects.get()
    run_worker()

    page = client.get(url(Deployment, "change", deployment.pk)).content.decode()
    assert "Partially succeeded" in page
    assert counts(page) == "1 succeeded 1 failed"
    assert bar(page) == {"succeeded": ("0.00", "50.00"), "failed": ("50.00", "50.00")}
    ok = page.split(f'data-entity="{world.entity("sandbox-cmp-1").pk}"')[1].split("</tr>")[0]
    bad = page.split(f'data-entity="{world.entity("sandbox-cmp-2").pk}"')[1].split("</tr>")[0]
    assert "Succeeded" in ok and "100.00 EUR → 150.00 EUR" in ok
    assert "Failed" in bad and "Value refused by the platform" in bad
    assert 'id="tool-retry"' in page and 'id="tool-rollback"' in page

    confirm = client.get(url(Deployment, "retry", deployment.pk)).content.decode()
    assert "Campaign 2" in confirm and "Campaign 1" not in confirm.split('id="confirmation-rows"')[1]
    token = re.search(r'name="token" value="([^"]+)"', confirm).group(1)
    response = client.post(url(Deployment, "retry", deployment.pk), {"token": token})
    retry = Deployment.objects.exclude(pk=deployment.pk).get()
    assert response["Location"] == url(Deployment, "change", retry.pk)
    assert client.post(url(Deployment, "retry", deployment.pk), {"token": token})["Location"] == response["Location"]
    assert Deployment.objects.count() == 2
    run_worker()
    assert Deployment.objects.get(pk=retry.pk).status == Deployment.Status.SUCCEEDED
    assert world.platform("sandbox-cmp-2").daily_budget == Decimal("120.00")

    confirm = client.get(url(Deployment, "rollback", deployment.pk)).content.decode()
    assert "Daily budget: live now 150.00 EUR → will restore 100.00 EUR" in confirm  # read first
    token = re.search(r'name="token" value="([^"]+)"', confirm).group(1)
    client.post(url(Deployment, "rollback", deployment.pk), {"token": token, "reason": "CPA spike"})
    run_worker()
    assert world.platform("sandbox-cmp-1").daily_budget == Decimal("100.00")
    assert Action.objects.get(deployment=deployment, entity=world.entity("sandbox-cmp-1")).status == (
        ActionStatus.ROLLED_BACK
    )
    page = client.get(url(Deployment, "change", deployment.pk)).content.decode()
    assert Deployment.objects.get(pk=deployment.pk).status == Deployment.Status.ROLLED_BACK
    assert '<span class="br-badge br-badge-grey">Rolled back</span>' in page and 'id="tool-rollback"' not in page
    assert counts(page) == "1 failed 1 rolled back"
    assert bar(page) == {"failed": ("0.00", "50.00"), "rolled-back": ("50.00", "50.00")}


@pytest.mark.django_db(transaction=True)
def test_a_partly_rolled_back_deployment_shows_each_outcome_and_refreshes_while_rolling_back(
    client, approver, tenant, world
):
    scenario = make_scenario(
        tenant,
        {
            "sandbox-cmp-1": {"daily_budget": Decimal("150.00")},
            "sandbox-cmp-2": {"daily_budget": Decimal("150.00")},
            "sandbox-adset-1-1": {"status": "paused"},
        },
        world=world,
    )
    preflight(scenario, approver)
    client.force_login(approver)
    client.post(url(Scenario, "deploy", scenario.pk), deploy_page(client, scenario)[1])
    run_worker()
    deployment = Deployment.objects.get()
    first, second = deployment.actions.order_by("entity__external_id")[:2]
    action_rollback_request(action=first, actor=approver, reason="only this one")
    run_worker()
    action_rollback_request(action=second, actor=approver, reason="this one too")  # a worker has not run yet

    page = client.get(url(Deployment, "change", deployment.pk)).content.decode()
    assert '<span class="br-badge br-badge-amber">Partially rolled back</span>' in page
    assert counts(page) == "2 succeeded 1 rolled back"
    assert bar(page) == {"succeeded": ("0.00", "66.67"), "rolled-back": ("66.67", "33.33")}
    assert "3 of 3 entities settled, 1 rolling back — this page refreshes every 5 seconds." in page
    assert '<meta http-equiv="refresh" content="5">' in page

    run_worker()
    page = client.get(url(Deployment, "change", deployment.pk)).content.decode()
    assert counts(page) == "1 succeeded 2 rolled back"
    assert 'http-equiv="refresh"' not in page


# Guardrail policies --------------------------------------------------------------------------------


def policy_form(**extra) -> dict:
    return {"name": "Acme guardrails", "learning_phase_change_pct": "20", "blackout_dates": "", **extra}


def test_a_policy_edits_severities_days_and_blackouts_readably(client, tenant_admin, tenant, connection_):
    client.force_login(tenant_admin)
    page = client.get(url(GuardrailPolicy, "add")).content.decode()
    assert 'name="severity_max_increase_pct"' in page and "Default (critical)" in page
    assert 'name="severity_entity_missing"' not in page  # always critical
    data = policy_form(
        max_increase_pct="25",
        severity_max_increase_pct="warning",
        severity_cooldown="off",
        change_window_days=["0", "1", "4"],
        blackout_dates="2026-12-24\n2026-12-31",
        connection=connection_.pk,
    )
    response = client.post(url(GuardrailPolicy, "add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    policy = GuardrailPolicy.objects.get()
    assert policy.tenant == tenant and policy.connection == connection_
    assert policy.severities == {"max_increase_pct": "warning", "cooldown": "off"}
    assert policy.change_window_days == [0, 1, 4]
    assert policy.blackout_dates == ["2026-12-24", "2026-12-31"]
    page = client.get(url(GuardrailPolicy, "change", policy.pk)).content.decode()
    assert '<option value="warning" selected>' in page and "2026-12-24\n2026-12-31" in page


def test_a_policy_refuses_bad_dates_and_half_windows(client, tenant_admin):
    client.force_login(tenant_admin)
    response = client.post(
        url(GuardrailPolicy, "add"), policy_form(blackout_dates="2026-13-01", change_window_start="09:00")
    )
    page = response.content.decode()
    assert "Not a date (use YYYY-MM-DD): 2026-13-01" in page
    assert "Give both the start and the end of the change window" in page
    assert not GuardrailPolicy.objects.exists()


def test_policy_connections_are_the_tenants_own(client, tenant_admin, connection_, other_tenant):
    theirs = factories.ConnectionFactory(tenant=other_tenant, name="Globex Ads")
    client.force_login(tenant_admin)
    page = client.get(url(GuardrailPolicy, "add")).content.decode()
    assert "Acme Sandbox" in page and "Globex Ads" not in page
    response = client.post(url(GuardrailPolicy, "add"), policy_form(connection=theirs.pk))
    assert "Select a valid choice" in response.content.decode()


def test_only_admins_edit_policies(client, approver, tenant):
    policy = GuardrailPolicy.objects.create(tenant=tenant, name="Default")
    client.force_login(approver)
    assert client.get(url(GuardrailPolicy, "change", policy.pk)).status_code == 200  # view only
    response = client.post(url(GuardrailPolicy, "change", policy.pk), policy_form(max_increase_pct="99"))
    assert response.status_code == 403
    assert client.get(url(GuardrailPolicy, "add")).status_code == 403
