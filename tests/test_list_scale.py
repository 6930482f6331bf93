"""Lists that stay fast as tables grow: keyset pages in the API, capped counts and cheap
filters in the admin, bounded query counts, and (PostgreSQL) index scans for the main
list queries at 20,000 rows."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import pytest
from django.core.paginator import EmptyPage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from actions.models import Action, ActionExecutionLog, ActionJob, ActionStatus, LogEvent, Recommendation
from budgetradar.admin_base import CappedCountPaginator
from budgetradar.tenancy import is_platform_staff
from platforms.models import PlatformEntity
from scenarios.models import Deployment, DeploymentResult, PreflightRun
from tests.factories import ActionFactory, ConnectionFactory, EntityFactory


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def api(approver):
    return client_for(approver)


def walk(api, url: str) -> list[dict]:
    """Every page of a keyset list, following ``next``."""
    pages = []
    while url:
        body = api.get(url).json()
        assert "count" not in body
        pages.append(body)
        url = body["next"]
    return pages


def same_instant(queryset) -> None:
    """Ties on the sort key: the id alone must order them."""
    queryset.update(created_at=timezone.now() - timedelta(hours=1))


# The API: keyset pages ------------------------------------------------------------------------


def test_action_pages_follow_next_newest_first_without_repeats_even_on_ties(api, campaign):
    actions = ActionFactory.create_batch(7, entity=campaign, status=ActionStatus.SUCCEEDED)
    same_instant(Action.objects.filter(pk__in=[a.pk for a in actions[2:6]]))
    expected = list(Action.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    pages = walk(api, "/api/actions/?page_size=3")
    assert [len(p["results"]) for p in pages] == [3, 3, 1]
    assert [r["id"] for p in pages for r in p["results"]] == expected
    assert pages[0]["previous"] is None and pages[-1]["next"] is None


def test_previous_returns_the_page_before(api, campaign):
    ActionFactory.create_batch(7, entity=campaign)
    first = api.get("/api/actions/?page_size=3").json()
    second = api.get(first["next"]).json()
    back = api.get(second["previous"]).json()
    assert [r["id"] for r in back["results"]] == [r["id"] for r in first["results"]]
    assert back["previous"] is None and back["next"]


def test_rows_added_meanwhile_never_repeat_a_row_already_seen(api, campaign):
    ActionFactory.create_batch(4, entity=campaign)
    first = api.get("/api/actions/?page_size=2").json()
    ActionFactory.create_batch(3, entity=campaign)  # newer: they belong before page 1
    rest = walk(api, first["next"])
    seen = [r["id"] for r in first["results"]] + [r["id"] for p in rest for r in p["results"]]
    assert len(seen) == len(set(seen)) == 4


def test_next_keeps_the_filters(api, campaign):
    ActionFactory.create_batch(3, entity=campaign, status=ActionStatus.SUCCEEDED)
    ActionFactory.create_batch(3, entity=campaign)
    pages = walk(api, "/api/actions/?status=succeeded&page_size=2")
    assert "status=succeeded" in pages[0]["next"]
    assert {r["status"] for p in pages for r in p["results"]} == {"succeeded"}
    assert sum(len(p["results"]) for p in pages) == 3


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        base64.urlsafe_b64encode(b'{"v": "not a date", "id": 1}').decode(),
        base64.urlsafe_b64encode(json.dumps({"v": None, "id": 1}).encode()).decode(),
    ],
)
def test_a_cursor_the_list_did_not_give_out_is_400_naming_cursor(api, campaign, cursor):
    response = api.get(f"/api/actions/?cursor={cursor}")
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["cursor"]


def test_an_actions_log_pages_oldest_first(api, campaign, tenant):
    action = ActionFactory(entity=campaign)
    events = [LogEvent.APPROVED, LogEvent.STATE_CAPTURED, LogEvent.REQUEST_SENT, LogEvent.SUCCEEDED]
    for event in events:  # append-only: no update can make ties here
        ActionExecutionLog.objects.create(tenant=tenant, action=action, event=event)
    pages = walk(api, f"/api/actions/{action.pk}/logs?page_size=3")
    assert [r["event"] for p in pages for r in p["results"]] == events


def test_a_deployments_results_page_in_id_order(tenant, tenant_admin, campaign):
    preflight = PreflightRun.objects.create(tenant=tenant, run_id="pf-scale", payload={"entities": []})
    deployment = Deployment.objects.create(tenant=tenant, preflight=preflight, mode="dry_run", idempotency_key="k")
    entities = [campaign, *(EntityFactory(connection=campaign.connection) for _ in range(4))]
    DeploymentResult.objects.bulk_create(DeploymentResult(deployment=deployment, entity=e) for e in entities)
    pages = walk(client_for(tenant_admin), f"/api/deployments/{deployment.pk}/results?page_size=2")
    assert [r["entity"]["id"] for p in pages for r in p["results"]] == [e.pk for e in entities]


def test_another_tenants_deployment_results_are_404(tenant_admin, other_tenant):
    preflight = PreflightRun.objects.create(tenant=other_tenant, run_id="pf-theirs", payload={"entities": []})
    theirs = Deployment.objects.create(tenant=other_tenant, preflight=preflight, mode="dry_run", idempotency_key="k")
    assert client_for(tenant_admin).get(f"/api/deployments/{theirs.pk}/results").status_code == 404


def test_an_action_list_page_takes_a_bounded_number_of_queries(api, campaign, django_assert_max_num_queries):
    ActionFactory.create_batch(60, entity=campaign)
    first = api.get("/api/actions/").json()
    with django_assert_max_num_queries(6):
        assert len(api.get(first["next"]).json()["results"]) == 10


# The admin: counts and filters ------------------------------------------------------------------


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def test_a_long_list_says_more_than_or_about_instead_of_counting(client, approver, campaign, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "exact_up_to", 5)
    monkeypatch.setattr("actions.admin.ActionAdmin.list_per_page", 2)
    ActionFactory.create_batch(8, entity=campaign)
    client.force_login(approver)
    html = client.get(changelist(Action)).content.decode()
    said = re.search(r"(more than 5|about [\d,]+) actions", html)
    assert said, "the paginator names its figure"
    assert "more than 5" in said.group(1) if connection.vendor == "sqlite" else said.group(1).startswith("about")


def test_a_short_list_counts_exactly(client, approver, campaign):
    ActionFactory.create_batch(3, entity=campaign)
    client.force_login(approver)
    assert re.search(r"\b3 actions", client.get(changelist(Action)).content.decode())


def capped(exact_up_to: int, per_page: int) -> CappedCountPaginator:
    paginator = CappedCountPaginator(Action.objects.order_by("-created_at", "-id"), per_page)
    paginator.exact_up_to = exact_up_to
    return paginator


def test_past_an_estimated_count_every_page_is_reachable_and_full(approver, campaign):
    ActionFactory.create_batch(5, entity=campaign)
    newest_first = list(Action.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    paginator = capped(1, 2)
    assert paginator.count_text.startswith(("more than", "about"))
    pages = [[a.pk for a in paginator.page(n).object_list] for n in (1, 2, 3, 4)]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5], []]


def test_an_exact_count_keeps_djangos_page_rules(approver, campaign):
    ActionFactory.create_batch(3, entity=campaign)
    paginator = capped(10, 2)
    assert (paginator.count, paginator.count_text, paginator.num_pages) == (3, "3", 2)
    assert len(paginator.page(2).object_list) == 1
    with pytest.raises(EmptyPage):
        paginator.page(3)


@pytest.mark.parametrize("model", [Action, ActionExecutionLog, Deployment, PreflightRun])
def test_changelists_never_count_every_row_nor_scan_for_distinct_filter_choices(
    client, tenant_admin, campaign, model, django_assert_max_num_queries
):
    ActionFactory.create_batch(3, entity=campaign)
    client.force_login(tenant_admin)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(changelist(model)).status_code == 200
    listed = model._meta.db_table
    for query in queries.captured_queries:
        sql = query["sql"]
        if f'FROM "{listed}"' in sql:
            assert "DISTINCT" not in sql, sql
            if "COUNT(" in sql:
                assert "LIMIT" in sql, f"a count over every row: {sql}"
    ActionFactory.create_batch(20, entity=campaign)
    with django_assert_max_num_queries(len(queries.captured_queries)):
        client.get(changelist(model))


def test_the_connection_filter_lists_the_tenants_connections_from_their_own_table(
    client, tenant_admin, other_tenant, connection_
):
    ConnectionFactory(tenant=other_tenant, name="Globex account")
    unused = ConnectionFactory(tenant=connection_.tenant, name="Unused account")
    client.force_login(tenant_admin)
    html = client.get(changelist(Action)).content.decode()
    # A connection without actions is offered too: the choices come from connections, not actions.
    assert unused.name in html and "Globex account" not in html


def test_the_action_list_filters_by_date_without_a_date_hierarchy(client, approver, campaign):
    old = ActionFactory(entity=campaign)
    Action.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))
    recent = ActionFactory(entity=campaign)
    client.force_login(approver)
    dates = next(f for f in client.get(changelist(Action)).context["cl"].filter_specs if f.title == "created at")
    past_week = dict(dates.links)["Past 7 days"]
    response = client.get(changelist(Action), past_week)
    shown = [a.pk for a in response.context["cl"].result_list]
    assert shown == [recent.pk]
    assert response.context["cl"].date_hierarchy is None


# PostgreSQL: the main list queries read an index ---------------------------------------------

ROWS = 20_000


def bulk_actions(tenant, entity, n: int) -> None:
    start = timezone.now() - timedelta(days=30)
    Action.objects.bulk_create(
        (
            Action(
                tenant=tenant,
                connection=entity.connection,
                entity=entity,
                platform=entity.connection.platform,
                action_type="adjust_budget",
                params={"new_budget": "10.00"},
                status=ActionStatus.SUCCEEDED,
                created_at=start + timedelta(seconds=i),
            )
            for i in range(n)
        ),
        batch_size=2000,
    )
    # auto_now_add overwrote created_at; spread the rows over a month as a real table is.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE actions_action SET created_at = %s + (id || ' seconds')::interval WHERE tenant_id = %s",
            [start, tenant.pk],
        )


def bulk_logs(tenant, n: int) -> None:
    actions = list(Action.objects.filter(tenant=tenant).values_list("id", flat=True)[:n])
    ActionExecutionLog.objects.bulk_create(
        (ActionExecutionLog(tenant=tenant, action_id=a, event=LogEvent.SUCCEEDED) for a in actions), batch_size=2000
    )


def plans_of(sqls: list[str]) -> list[str]:
    plans = []
    with connection.cursor() as cursor:
        for sql in sqls:
            cursor.execute(f"EXPLAIN {sql}")
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    return plans


def page_queries(queries, table: str) -> list[str]:
    """The queries that read a page of ``table`` (ordered and limited)."""
    return [
        q["sql"]
        for q in queries.captured_queries
        if f'FROM "{table}"' in q["sql"] and "ORDER BY" in q["sql"] and "LIMIT" in q["sql"] and "COUNT(" not in q["sql"]
    ]


@pytest.mark.postgres(reason="EXPLAIN plans are PostgreSQL's; SQLite's planner says nothing about this deployment")
@pytest.mark.django_db(transaction=True)
def test_the_main_list_queries_use_an_index_at_20000_rows(approver, campaign, other_tenant, client):
    theirs = EntityFactory(connection=ConnectionFactory(tenant=other_tenant))
    bulk_actions(campaign.tenant, campaign, ROWS)
    bulk_actions(other_tenant, theirs, ROWS // 4)
    bulk_logs(campaign.tenant, ROWS)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE actions_action")
        cursor.execute("ANALYZE actions_actionexecutionlog")

    api = client_for(approver)
    client.force_login(approver)
    with CaptureQueriesContext(connection) as queries:
        middle = api.get("/api/actions/?page_size=50").json()["next"]
        for _ in range(3):
            middle = api.get(middle).json()["next"]
        api.get(middle)
        api.get("/api/actions/?status=succeeded")
        client.get(changelist(Action), {"p": "20"})
        client.get(changelist(ActionExecutionLog), {"p": "20"})
        client.get(changelist(ActionExecutionLog), {"event__exact": "succeeded"})
    sqls = page_queries(queries, "actions_action") + page_queries(queries, "actions_actionexecutionlog")
    assert len(sqls) >= 8
    for sql, plan in zip(sqls, plans_of(sqls), strict=True):
        assert re.search(r"Index (Only )?Scan( Backward)? using \w+_list_idx", plan), f"{sql}\n{plan}"
        assert "Seq Scan on actions_action " not in plan and "Seq Scan on actions_actionexecutionlog" not in plan


def spread_over_a_month(table: str) -> None:
    """``auto_now_add`` stamped every bulk row alike; spread them as a real table is."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET created_at = %s + (id || ' seconds')::interval",
            [timezone.now() - timedelta(days=30)],
        )
        cursor.execute(f"ANALYZE {table}")


def bulk_platform_rows(tenants_entities: list, n: int) -> None:
    """Deployments, preflight runs, recommendations, jobs and entities of several tenants."""
    for tenant, entity in tenants_entities:
        preflight = PreflightRun.objects.create(tenant=tenant, run_id=f"pf-bulk-{tenant.pk}", payload={})
        PreflightRun.objects.bulk_create(
            (PreflightRun(tenant=tenant, run_id=f"pf-{tenant.pk}-{i}", status="succeeded") for i in range(n)),
            batch_size=2000,
        )
        Deployment.objects.bulk_create(
            (
                Deployment(
                    tenant=tenant, preflight=preflight, mode="dry_run", idempotency_key=f"k{i}", status="succeeded"
                )
                for i in range(n)
            ),
            batch_size=2000,
        )
        Recommendation.objects.bulk_create(
            (Recommendation(tenant=tenant, entity=entity, action_type="adjust_budget") for _ in range(n)),
            batch_size=2000,
        )
        ActionJob.objects.bulk_create(
            (ActionJob(tenant=tenant, connection=entity.connection, status="succeeded") for _ in range(n)),
            batch_size=2000,
        )
        PlatformEntity.objects.bulk_create(
            (
                PlatformEntity(
                    tenant=tenant,
                    connection=entity.connection,
                    entity_type="ad",
                    external_id=f"ad-{i}",
                    name=f"Ad {i:06d}",
                    status="active",
                )
                for i in range(n)
            ),
            batch_size=2000,
        )
    for model in (PreflightRun, Deployment, Recommendation, ActionJob):
        spread_over_a_month(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {PlatformEntity._meta.db_table}")


STAFF_TABLES = (Action, ActionExecutionLog, Deployment, PreflightRun, Recommendation, ActionJob, PlatformEntity)


@pytest.mark.postgres(reason="EXPLAIN plans are PostgreSQL's; SQLite's planner says nothing about this deployment")
@pytest.mark.django_db(transaction=True)
def test_platform_staffs_lists_across_tenants_use_an_index_for_their_default_order(
    campaign, other_tenant, client, admin_user
):
    """Platform staff see every tenant's rows: their lists sort the whole table, so each
    default ordering needs an index of its own, not one that starts with the tenant."""
    theirs = EntityFactory(connection=ConnectionFactory(tenant=other_tenant))
    bulk_actions(campaign.tenant, campaign, ROWS // 2)
    bulk_actions(other_tenant, theirs, ROWS // 2)
    bulk_logs(campaign.tenant, ROWS // 2)
    bulk_logs(other_tenant, ROWS // 2)
    bulk_platform_rows([(campaign.tenant, campaign), (other_tenant, theirs)], ROWS // 4)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE actions_action SET created_at = %s + (id || ' seconds')::interval", [timezone.now()])
        cursor.execute("ANALYZE actions_action")
        cursor.execute("ANALYZE actions_actionexecutionlog")
    staff = admin_user
    assert is_platform_staff(staff)

    api = client_for(staff)
    client.force_login(staff)
    with CaptureQueriesContext(connection) as queries:
        api.get(api.get("/api/actions/?page_size=50").json()["next"])
        api.get("/api/recommendations/")
        api.get("/api/deployments/")
        api.get("/api/entities/")
        for model in STAFF_TABLES:
            assert client.get(changelist(model), {"p": "3"}).status_code == 200, model
    pages = {model._meta.db_table: page_queries(queries, model._meta.db_table) for model in STAFF_TABLES}
    assert all(pages.values()), pages
    unindexed = {
        table: plan
        for table, sqls in pages.items()
        for plan in plans_of(sqls)
        if not re.search(r"Index (Only )?Scan( Backward)? using \w+_list_idx", plan)
    }
    assert not unindexed, "\n\n".join(f"{table}:\n{plan}" for table, plan in unindexed.items())
