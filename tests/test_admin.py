"""The Django admin: pages render, stay flat in queries, keep tenants apart, never show
credentials, and approve/reject/cancel only through confirmed service calls."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from actions.models import Action, ActionExecutionLog, ActionJob, ActionStatus, JobStatus, LogEvent, Recommendation
from actions.services.logs import log_event
from budgetradar.models import Membership, Plan, Tenant
from budgetradar.roles import Role
from platforms.models import EntityPerformanceDaily, PlatformConnection, PlatformEntity
from tests import factories

SECRET = "shh-7f3a-do-not-render-9c1e"
OUR_APPS = {"budgetradar", "platforms", "actions"}
MODELS = [
    Plan,
    Tenant,
    Membership,
    PlatformConnection,
    PlatformEntity,
    EntityPerformanceDaily,
    Recommendation,
    Action,
    ActionJob,
    ActionExecutionLog,
]
REGISTERED = sorted(
    (model for model in admin.site._registry if model._meta.app_label in OUR_APPS), key=lambda m: m._meta.label
)


def url(model, view: str = "changelist", *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def seed(tenant: Tenant, n: int) -> None:
    """``n`` rows of every admin-listed kind in ``tenant`` (and ``n`` more tenants).

    Members get no password: hashing one per row would dominate the test's run time.
    """
    for _ in range(n):
        conn = factories.ConnectionFactory(tenant=tenant)
        entity = factories.EntityFactory(connection=conn)
        factories.PerformanceFactory(entity=entity)
        proposer = factories.MembershipFactory(tenant=tenant, user=factories.UserFactory(password=None)).user
        action = factories.ActionFactory(entity=entity, proposed_by=proposer, approved_by=proposer)
        job = ActionJob.objects.create(tenant=tenant, connection=conn, status=JobStatus.SUCCEEDED, total=1)
        log_event(action=action, job=job, event=LogEvent.APPROVED, actor="seed", message="seeded")
        factories.TenantFactory()


def sample(model, tenant: Tenant):
    if model is Plan:
        return tenant.plan
    if model is Tenant:
        return tenant
    return model.objects.filter(tenant=tenant).order_by("pk").first()


@pytest.fixture
def superuser(db):
    return factories.UserFactory(username="root", is_superuser=True)


@pytest.fixture
def pending(campaign, operator):
    return factories.ActionFactory(entity=campaign, proposed_by=operator)


def test_every_model_of_the_apps_is_registered():
    assert set(REGISTERED) == set(MODELS)


# Smoke: every page renders -----------------------------------------------------------------


@pytest.mark.parametrize("who", ["tenant_admin", "superuser"])
@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.label)
def test_changelist_and_change_page_render(client, request, tenant, who, model):
    seed(tenant, 2)
    user = request.getfixturevalue(who)
    client.force_login(user)
    assert client.get(url(model)).status_code == 200
    obj = sample(model, tenant)
    assert client.get(url(model, "change", obj.pk)).status_code == 200
    assert client.get(url(model, "history", obj.pk)).status_code == 200


@pytest.mark.parametrize("model", [PlatformConnection, Membership, Recommendation])
def test_add_pages_render_for_a_tenant_admin(client, tenant_admin, model):
    client.force_login(tenant_admin)
    assert client.get(url(model, "add")).status_code == 200


@pytest.mark.parametrize("who", ["tenant_admin", "superuser"])
@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.label)
def test_changelist_query_count_does_not_grow_with_rows(client, request, tenant, who, model):
    client.force_login(request.getfixturevalue(who))
    seed(tenant, 2)
    client.get(url(model))  # warm caches (content types, sessions)
    with CaptureQueriesContext(db_connection) as few:
        assert client.get(url(model)).status_code == 200
    seed(tenant, 10)
    with CaptureQueriesContext(db_connection) as many:
        assert client.get(url(model)).status_code == 200
    assert len(many) == len(few), "\n".join(q["sql"] for q in many.captured_queries)


def test_staff_without_membership_sees_nothing(client, tenant, db):
    seed(tenant, 1)
    client.force_login(factories.UserFactory(username="drifter"))
    for model in MODELS:
        assert client.get(url(model)).status_code == 403
    assert "Recommendations and actions" not in client.get(reverse("admin:index")).content.decode()


# Tenant scoping -------------------------------------------------------------------------------


def test_another_tenants_rows_are_invisible_and_404(client, tenant_admin, other_tenant, tenant):
    theirs = factories.ActionFactory(entity=factories.EntityFactory(tenant=other_tenant, name="Globex Secret Campaign"))
    client.force_login(tenant_admin)
    for model, obj in [
        (Action, theirs),
        (PlatformConnection, theirs.connection),
        (PlatformEntity, theirs.entity),
        (Recommendation, theirs.recommendation),
        (Tenant, other_tenant),
    ]:
        assert "Globex" not in client.get(url(model)).content.decode(), model
        assert client.get(url(model, "change", obj.pk)).status_code == 404, model
    for model, obj in [(Action, theirs), (PlatformConnection, theirs.connection), (Tenant, other_tenant)]:
        assert client.get(url(model, "history", obj.pk)).status_code == 404, model
        version = obj.history.latest().history_id
        assert client.get(url(model, "simple_history", obj.pk, version)).status_code == 404, model


def test_relation_filters_list_only_own_rows(client, tenant_admin, other_tenant, connection_):
    second = factories.ConnectionFactory(tenant=connection_.tenant, name="Acme Second")
    factories.ActionFactory(entity=factories.EntityFactory(tenant=other_tenant, name="Globex Account"))
    for conn in [connection_, second]:
        factories.ActionFactory(entity=factories.EntityFactory(connection=conn))
    client.force_login(tenant_admin)
    page = client.get(url(Action)).content.decode()
    assert "Acme Sandbox" in page and "Acme Second" in page  # the connection filter
    assert "Globex" not in page


def test_a_tenant_member_sees_only_their_plan_and_cannot_change_it(client, tenant_admin, tenant):
    client.force_login(tenant_admin)
    page = client.get(url(Plan)).content.decode()
    assert "Pro" in page and "Enterprise" not in page
    assert client.get(url(Plan, "change", factories.plan("enterprise").pk)).status_code == 404
    response = client.post(url(Plan, "change", tenant.plan.pk), {"code": "pro", "name": "Free for us"})
    assert response.status_code == 403
    assert Plan.objects.get(code="pro").name == "Pro"


def test_a_tenant_admin_cannot_upgrade_their_own_plan(client, tenant_admin, tenant):
    client.force_login(tenant_admin)
    data = {
        "name": "Acme",
        "slug": "acme",
        "plan": factories.plan("enterprise").pk,
        "currency": "EUR",
        "time_zone": "Europe/Berlin",
        "execution_mode": "on_approval",
    }
    assert client.post(url(Tenant, "change", tenant.pk), data).status_code == 302
    tenant.refresh_from_db()
    assert tenant.plan.code == "pro"


def test_other_tenants_memberships_are_invisible(client, tenant_admin, other_admin):
    client.force_login(tenant_admin)
    assert "globex-admin" not in client.get(url(Membership)).content.decode()
    assert client.get(url(Membership, "change", other_admin.membership.pk)).status_code == 404


def test_a_tenant_admin_adds_a_member_to_their_own_tenant(client, tenant_admin, tenant, other_tenant):
    client.force_login(tenant_admin)
    data = {"tenant": other_tenant.pk, "username": "newbie", "email": "n@example.com", "password": "a-long-pw-1"}
    response = client.post(url(Membership, "add"), {**data, "role": Role.VIEWER})
    assert response.status_code == 302
    membership = Membership.objects.get(user__username="newbie")
    assert membership.tenant == tenant  # not the tenant posted
    assert membership.user.is_staff and membership.user.check_password("a-long-pw-1")
    assert membership.history.latest().history_user == tenant_admin


def test_autocomplete_offers_only_own_entities(client, operator, campaign, other_tenant):
    factories.EntityFactory(tenant=other_tenant, name="EU Search - Globex")
    client.force_login(operator)
    params = {"app_label": "actions", "model_name": "recommendation", "field_name": "entity", "term": "EU Search"}
    results = client.get(reverse("admin:autocomplete"), params).json()["results"]
    assert [r["id"] for r in results] == [str(campaign.pk)]


def test_a_form_cannot_pick_another_tenants_entity(client, operator, other_tenant, campaign):
    theirs = factories.EntityFactory(tenant=other_tenant)
    client.force_login(operator)
    data = {"action_type": "adjust_budget", "new_budget": "150.00", "budget_type": "daily", "rationale": "x"}
    response = client.post(url(Recommendation, "add"), {**data, "entity": theirs.pk})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Recommendation.objects.exists()
    assert client.post(url(Recommendation, "add"), {**data, "entity": campaign.pk}).status_code == 302
    action = Action.objects.get(entity=campaign)
    assert action.status == ActionStatus.PENDING_APPROVAL and action.proposed_by == operator


def test_invalid_params_are_a_form_error(client, operator, campaign):
    client.force_login(operator)
    data = {"entity": campaign.pk, "action_type": "adjust_budget", "budget_type": "daily", "new_budget": "-3"}
    response = client.post(url(Recommendation, "add"), data)
    assert response.status_code == 200
    assert "must be greater than zero" in response.content.decode()


def test_a_new_connection_belongs_to_the_members_tenant(client, tenant_admin, tenant, other_tenant):
    client.force_login(tenant_admin)
    data = {
        "tenant": other_tenant.pk,
        "name": "New account",
        "platform": "sandbox",
        "account_id": "sbx-new",
        "currency": "EUR",
        "time_zone": "UTC",
        "is_active": "on",
        "cred_sandbox__access_token": SECRET,
    }
    assert client.post(url(PlatformConnection, "add"), data).status_code == 302
    created = PlatformConnection.objects.get(account_id="sbx-new")
    assert created.tenant == tenant
    assert created.credentials == {"access_token": SECRET}
    response = client.post(url(PlatformConnection, "add"), data)  # same account again
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


# Credentials --------------------------------------------------------------------------------


def test_credentials_never_appear_in_admin_html(client, tenant_admin, connection_):
    connection_.credentials = {"access_token": SECRET, "refresh_token": SECRET + "-r"}
    connection_.save()
    client.force_login(tenant_admin)
    change = client.get(url(PlatformConnection, "change", connection_.pk)).content.decode()
    assert "access_token, refresh_token set" in change
    history = client.get(url(PlatformConnection, "history", connection_.pk)).content.decode()
    version = client.get(
        url(PlatformConnection, "simple_history", connection_.pk, connection_.history.latest().history_id)
    ).content.decode()
    for html in [change, history, version, client.get(url(PlatformConnection)).content.decode()]:
        assert SECRET not in html


def test_credentials_are_replaced_write_only_field_by_field(client, tenant_admin, connection_):
    client.force_login(tenant_admin)
    data = {
        "name": connection_.name,
        "currency": "EUR",
        "time_zone": "Europe/Berlin",
        "is_active": "on",
        "cred_sandbox__access_token": SECRET,
    }
    invalid = client.post(url(PlatformConnection, "change", connection_.pk), {**data, "currency": "XXX"})
    assert invalid.status_code == 200 and SECRET not in invalid.content.decode()
    assert client.post(url(PlatformConnection, "change", connection_.pk), data).status_code == 302
    connection_.refresh_from_db()
    assert connection_.credentials == {"access_token": SECRET}
    latest = connection_.history.latest()
    assert latest.history_user == tenant_admin
    assert "access token" in latest.history_change_reason
    assert client.post(url(PlatformConnection, "change", connection_.pk), {**data, "cred_sandbox__access_token": ""})
    connection_.refresh_from_db()
    assert connection_.credentials == {"access_token": SECRET}  # blank keeps them


def test_the_google_form_asks_for_each_credential_by_name_and_says_which_are_required(client, tenant_admin):
    client.force_login(tenant_admin)
    page = client.get(url(PlatformConnection, "add")).content.decode()
    for label in ("developer token", "OAuth client id", "OAuth client secret", "refresh token"):
        assert f"Google Ads: {label}" in page
    assert "Required." in page and "Optional." in page
    assert "<textarea" not in page.split("Credentials")[1][:3000]  # no raw JSON

    data = {
        "name": "Google",
        "platform": "google_ads",
        "account_id": "123-456-7890",
        "currency": "EUR",
        "time_zone": "UTC",
        "cred_google_ads__developer_token": SECRET,
        "cred_google_ads__client_id": "client",
    }
    refused = client.post(url(PlatformConnection, "add"), data)
    body = refused.content.decode()
    assert refused.status_code == 200 and SECRET not in body
    assert "OAuth client secret is required for a Google Ads connection." in body
    assert "refresh token is required for a Google Ads connection." in body
    assert not PlatformConnection.objects.filter(account_id="123-456-7890").exists()

    data.update({"cred_google_ads__client_secret": "s3", "cred_google_ads__refresh_token": "1//r"})
    assert client.post(url(PlatformConnection, "add"), data).status_code == 302
    created = PlatformConnection.objects.get(account_id="123-456-7890")
    assert created.credentials == {
        "developer_token": SECRET,
        "client_id": "client",
        "client_secret": "s3",
        "refresh_token": "1//r",
    }


def test_a_field_of_another_platform_is_refused_on_the_add_page(client, tenant_admin):
    client.force_login(tenant_admin)
    data = {
        "name": "x",
        "platform": "sandbox",
        "account_id": "sbx-x",
        "currency": "EUR",
        "time_zone": "UTC",
        "cred_sandbox__access_token": "token",
        "cred_meta__access_token": SECRET,
    }
    response = client.post(url(PlatformConnection, "add"), data)
    assert "This is a Meta field" in response.content.decode()
    assert SECRET not in response.content.decode()
    assert not PlatformConnection.objects.filter(account_id="sbx-x").exists()


def test_the_change_page_shows_only_the_connections_own_credential_fields(client, tenant_admin, connection_):
    client.force_login(tenant_admin)
    page = client.get(url(PlatformConnection, "change", connection_.pk)).content.decode()
    assert "Sandbox: access token" in page and "Google Ads: refresh token" not in page


def test_connection_buttons_are_permission_gated(client, tenant_admin, viewer, connection_):
    client.force_login(tenant_admin)
    page = client.get(url(PlatformConnection, "change", connection_.pk)).content.decode()
    assert "Test connection" in page and "Sync now" in page
    assert client.get(url(PlatformConnection, "test", connection_.pk)).status_code == 405
    client.force_login(viewer)
    page = client.get(url(PlatformConnection, "change", connection_.pk)).content.decode()
    assert "Test connection" not in page and "Sync now" not in page
    assert client.post(url(PlatformConnection, "test", connection_.pk)).status_code == 403
    assert client.post(url(PlatformConnection, "sync", connection_.pk)).status_code == 403


def test_test_connection_button_reports_the_platforms_answer(client, tenant_admin, tenant):
    pytest.importorskip("platforms.services", reason="platforms.services (connection_test) is not written yet")
    account = factories.SandboxAccountFactory()
    conn = factories.sandbox_connection(tenant, account, token="wrong-token")
    client.force_login(tenant_admin)
    response = client.post(url(PlatformConnection, "test", conn.pk), follow=True)
    assert response.status_code == 200
    conn.refresh_from_db()
    assert conn.last_test_ok is False
    assert f"Connection {conn.name} failed" in response.content.decode()


# Execution log ------------------------------------------------------------------------------


def test_execution_log_is_read_only_even_for_superusers(client, superuser, pending):
    entry = log_event(action=pending, event=LogEvent.APPROVED, actor="x", message="original")
    client.force_login(superuser)
    assert client.get(url(ActionExecutionLog, "add")).status_code == 403
    assert client.post(url(ActionExecutionLog, "change", entry.pk), {"message": "rewritten"}).status_code == 403
    assert client.post(url(ActionExecutionLog, "delete", entry.pk), {"post": "yes"}).status_code == 403
    assert 'name="action"' not in client.get(url(ActionExecutionLog)).content.decode()  # no bulk delete
    assert ActionExecutionLog.objects.get(pk=entry.pk).message == "original"


def test_action_page_shows_the_timeline_newest_first(client, approver, pending):
    log_event(action=pending, event=LogEvent.REQUEST_SENT, actor="worker:1", message="first event")
    log_event(action=pending, event=LogEvent.FAILED, actor="worker:1", message="second event")
    client.force_login(approver)
    page = client.get(url(Action, "change", pending.pk)).content.decode()
    assert "Timeline" in page
    assert page.index("second event") < page.index("first event")


# Approve / reject / cancel ------------------------------------------------------------------


def start_bulk(client, operation: str, actions: list[Action]):
    response = client.post(
        url(Action), {"action": f"{operation}_selected", "_selected_action": [a.pk for a in actions]}
    )
    assert response.status_code == 302, response.content.decode()[:500]
    return response["Location"]


def test_bulk_approve_confirms_then_approves_only_the_allowed(client, approver, operator, tenant, campaign):
    tenant.four_eyes_required = True
    tenant.save()
    ok = factories.ActionFactory(entity=campaign, proposed_by=operator)
    done = factories.ActionFactory(entity=campaign, proposed_by=operator, status=ActionStatus.SUCCEEDED)
    own = factories.ActionFactory(entity=campaign, proposed_by=approver)
    client.force_login(approver)
    confirm_url = start_bulk(client, "approve", [ok, done, own])

    page = client.get(confirm_url).content.decode()
    assert all(f'data-action="{a.pk}"' in page for a in [ok, done, own])
    assert page.count("Will be approved") == 1
    assert f"Action #{done.pk} has already succeeded and cannot be approved." in page
    assert "Four-eyes approval is required" in page
    assert "Four-eyes approval is on for Acme" in page
    assert "100.00 EUR → 120.00 EUR" in page
    assert Action.objects.get(pk=ok.pk).status == ActionStatus.PENDING_APPROVAL  # the preview changed nothing
    assert not ActionExecutionLog.objects.exists()

    response = client.post(confirm_url, {"reason": ""})
    assert response.status_code == 302
    result = client.get(response["Location"]).content.decode()
    assert "1 action approved" in result and "2 actions skipped" in result
    assert "Four-eyes approval is required" in result
    statuses = dict(Action.objects.values_list("pk", "status"))
    assert statuses == {ok.pk: "approved", done.pk: "succeeded", own.pk: "pending_approval"}

    again = client.post(confirm_url, {"reason": ""})  # double submit
    assert again["Location"] == response["Location"]
    assert ActionExecutionLog.objects.filter(event=LogEvent.APPROVED).count() == 1


def test_bulk_approve_stops_at_the_monthly_quota(client, approver, campaign):
    Plan.objects.filter(code="pro").update(actions_per_month=1)
    first, second = factories.ActionFactory(entity=campaign), factories.ActionFactory(entity=campaign)
    client.force_login(approver)
    confirm_url = start_bulk(client, "approve", [first, second])
    page = client.get(confirm_url).content.decode()
    assert "allows 1 approved actions a month: 0 used, 1 left" in page
    assert page.count("Will be approved") == 1
    assert "so 1 more cannot be approved" in page
    client.post(confirm_url, {"reason": ""})
    assert list(Action.objects.order_by("pk").values_list("status", flat=True)) == ["approved", "pending_approval"]


def test_bulk_reject_requires_a_reason(client, approver, pending):
    client.force_login(approver)
    confirm_url = start_bulk(client, "reject", [pending])
    response = client.post(confirm_url, {"reason": "  "})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    client.post(confirm_url, {"reason": "Budget freeze"})
    pending.refresh_from_db()
    assert pending.status == ActionStatus.REJECTED and pending.decided_reason == "Budget freeze"


def test_a_viewer_cannot_approve(client, viewer, pending):
    client.force_login(viewer)
    page = client.get(url(Action, "change", pending.pk)).content.decode()
    assert url(Action, "approve", pending.pk) not in page
    assert "approve_selected" not in client.get(url(Action)).content.decode()
    assert client.get(url(Action, "approve", pending.pk)).status_code == 403
    client.post(url(Action), {"action": "approve_selected", "_selected_action": [pending.pk]})
    assert Action.objects.get(pk=pending.pk).status == ActionStatus.PENDING_APPROVAL


def test_an_operator_may_cancel_but_not_approve(client, operator, pending):
    client.force_login(operator)
    page = client.get(url(Action, "change", pending.pk)).content.decode()
    assert url(Action, "cancel", pending.pk) in page
    assert url(Action, "approve", pending.pk) not in page and url(Action, "reject", pending.pk) not in page


def test_buttons_follow_the_state(client, approver, campaign):
    done = factories.ActionFactory(entity=campaign, status=ActionStatus.SUCCEEDED)
    client.force_login(approver)
    page = client.get(url(Action, "change", done.pk)).content.decode()
    assert all(url(Action, op, done.pk) not in page for op in ["approve", "reject", "cancel"])


def test_approve_button_confirms_and_records_history_with_the_user(client, approver, pending, operator):
    client.force_login(approver)
    page = client.get(url(Action, "change", pending.pk)).content.decode()
    assert url(Action, "approve", pending.pk) in page
    confirm_url = client.get(url(Action, "approve", pending.pk))["Location"]
    confirmation = client.get(confirm_url).content.decode()
    assert "EU Search - Brand" in confirmation
    assert "Daily budget: 100.00 EUR → 120.00 EUR" in confirmation
    assert "acme-operator" in confirmation
    assert "Four-eyes approval is off for Acme" in confirmation
    response = client.post(confirm_url, {"reason": "Looks right"}, follow=True)
    assert response.redirect_chain[-1][0] == url(Action, "change", pending.pk)
    assert f"Action #{pending.pk} was approved." in response.content.decode()
    pending.refresh_from_db()
    assert pending.status == ActionStatus.APPROVED and pending.approved_by == approver
    latest = pending.history.latest()
    assert latest.history_user == approver and latest.history_change_reason == "Looks right"
    history = client.get(url(Action, "history", pending.pk)).content.decode()
    assert "acme-approver" in history and "Looks right" in history


def test_reject_and_cancel_buttons_work(client, approver, campaign):
    to_reject, to_cancel = factories.ActionFactory(entity=campaign), factories.ActionFactory(entity=campaign)
    client.force_login(approver)
    confirm_url = client.get(url(Action, "reject", to_reject.pk))["Location"]
    assert "Reason" in client.get(confirm_url).content.decode()
    client.post(confirm_url, {"reason": "Too aggressive"})
    confirm_url = client.get(url(Action, "cancel", to_cancel.pk))["Location"]
    client.post(confirm_url, {"reason": ""})
    to_reject.refresh_from_db()
    to_cancel.refresh_from_db()
    assert (to_reject.status, to_reject.decided_reason) == (ActionStatus.REJECTED, "Too aggressive")
    assert to_cancel.status == ActionStatus.CANCELLED
    assert to_cancel.history.latest().history_user == approver


def test_a_refusal_after_confirmation_is_a_message_not_an_error(client, approver, pending):
    client.force_login(approver)
    confirm_url = client.get(url(Action, "approve", pending.pk))["Location"]
    Action.objects.filter(pk=pending.pk).update(status=ActionStatus.CANCELLED)  # someone was faster
    response = client.post(confirm_url, {"reason": ""}, follow=True)
    assert response.status_code == 200
    refusal = f"Action #{pending.pk} was not approved: Action #{pending.pk} was cancelled and cannot be approved."
    assert refusal in response.content.decode()


def test_history_versions_are_read_only(client, tenant_admin, tenant):
    client.force_login(tenant_admin)
    version_url = url(Tenant, "simple_history", tenant.pk, tenant.history.latest().history_id)
    page = client.get(version_url).content.decode()
    assert "Revert" not in page and "<form" not in page.split('id="content-main"')[1]
    assert client.post(version_url, {"name": "Hijacked", "slug": "acme"}).status_code == 405
    tenant.refresh_from_db()
    assert tenant.name == "Acme"


def test_admin_saves_record_the_change_reason(client, tenant_admin, tenant):
    client.force_login(tenant_admin)
    data = {
        "name": "Acme",
        "slug": "acme",
        "currency": "EUR",
        "time_zone": "Europe/Berlin",
        "execution_mode": "on_approval",
    }
    client.post(url(Tenant, "change", tenant.pk), {**data, "four_eyes_required": "on", "change_reason": "SOX audit"})
    client.post(url(Tenant, "change", tenant.pk), data)
    first, second = tenant.history.order_by("history_date")[1:]
    assert (first.history_change_reason, first.history_user) == ("SOX audit", tenant_admin)
    assert second.history_change_reason == "changed in the admin: Four eyes required"
