"""Every index on the tables an execution writes earns its keep.

The engine writes each action's row four times (queued, executing, the fence before its
request, settled) and appends three history rows and four log rows per action; each such
write adds an entry to every index of its table (an UPDATE does when it changes an indexed
column, as the engine's status changes do). An index whose key columns lead another index
(``(tenant)`` beside ``(tenant, created_at, id)``) serves no lookup the longer one cannot,
so it only costs writes; the history's rows are read per action, by date and by user.
These tests pin that, in the models and in the migrated database, and that lease renewals
and fences change no indexed column at all.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection, models
from django.utils import timezone

from actions.models import Action, ActionExecutionLog

History = Action.history.model

pytestmark = pytest.mark.django_db


def model_indexes(model) -> dict[str, tuple[str, ...]]:
    """Name -> key columns of every plain (non-unique, unconditional) index the model asks for."""
    indexes: dict[str, tuple[str, ...]] = {}
    for index in model._meta.indexes:
        if index.condition is None and not index.expressions:
            indexes[index.name] = tuple(model._meta.get_field(f.lstrip("-")).column for f in index.fields)
    for field in single_column_indexed(model):
        indexes[f"{field.name} (field index)"] = (field.column,)
    return indexes


def single_column_indexed(model) -> list:
    return [f for f in model._meta.concrete_fields if f.db_index and not f.primary_key and not f.unique]


def redundant(indexes: dict[str, tuple[str, ...]]) -> list[str]:
    """'A leads B' for each index A whose columns are the first columns of another index B."""
    return [
        f"{name} {columns} leads {other} {other_columns}"
        for name, columns in indexes.items()
        for other, other_columns in indexes.items()
        if other != name and other_columns[: len(columns)] == columns
    ]


@pytest.mark.parametrize("model", [Action, ActionExecutionLog], ids=["actions", "execution log"])
def test_no_index_is_the_leading_part_of_another(model):
    assert redundant(model_indexes(model)) == []


def test_history_rows_are_indexed_only_by_what_reads_them():
    """An action's history page (its id), by date, and who made the change (deleting a
    user empties that key on every row it wrote)."""
    assert {f.name for f in single_column_indexed(History)} == {"id", "history_date", "history_user"}
    assert History._meta.indexes == []


def test_mostly_empty_foreign_keys_are_indexed_only_where_set():
    partial = {index.name: index for index in Action._meta.indexes if index.condition is not None}
    for field, name in [
        ("recommendation", "action_recommendation_idx"),
        ("rollback_requested_by", "action_rollback_requester_idx"),
    ]:
        assert not Action._meta.get_field(field).db_index
        assert partial[name].fields == [field]
        assert partial[name].condition == models.Q(**{f"{field}__isnull": False})


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's catalogue of the migrated table")
@pytest.mark.parametrize("model", [Action, ActionExecutionLog, History], ids=["actions", "execution log", "history"])
def test_the_migrated_tables_have_no_leftover_index(model):
    """The migrations drop the foreign keys' old indexes by name: a wrong name would
    leave one behind silently (``DROP INDEX IF EXISTS``)."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname, array_agg(a.attname ORDER BY k.ordinality)
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ordinality)
            JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
            WHERE x.indrelid = %s::regclass AND NOT x.indisunique AND x.indpred IS NULL
            GROUP BY i.relname
            """,
            [table],
        )
        plain = {name: tuple(columns) for name, columns in cursor.fetchall()}
    assert redundant(plain) == []
    with connection.schema_editor() as editor:
        field_indexes = {editor._create_index_name(table, [f.column]) for f in single_column_indexed(model)}
    assert set(plain) == {name for name in model_indexes(model) if "(field index)" not in name} | field_indexes


@pytest.mark.postgres(reason="EXPLAIN plans are PostgreSQL's; SQLite's planner says nothing about this deployment")
@pytest.mark.django_db(transaction=True)
def test_the_lookups_the_dropped_indexes_served_still_use_an_index_at_20000_rows(campaign, other_tenant, approver):
    """Dispatch's and the monitors' lookups by connection and status, platform staff's by
    status across tenants, a small tenant's or connection's rows (deleting them checks
    these), the rows a deleted user or recommendation leaves (set to empty), the
    reconciler's expired leases, and an action's or a tenant's log rows each read a range
    of an index, not the whole table nor the whole of an index."""
    from actions.models import ActionStatus
    from actions.services.reconcile import unsettled
    from tests.factories import ActionFactory, ConnectionFactory, EntityFactory, RecommendationFactory
    from tests.test_list_scale import bulk_actions, bulk_logs

    bulk_actions(campaign.tenant, campaign, 20_000)
    small = EntityFactory(connection=ConnectionFactory(tenant=other_tenant))
    bulk_actions(other_tenant, small, 10)
    bulk_logs(campaign.tenant, 20_000)
    bulk_logs(other_tenant, 10)
    one_action = Action.objects.filter(tenant=campaign.tenant).values_list("id", flat=True).first()
    recommendation = RecommendationFactory(tenant=campaign.tenant, entity=campaign)
    ActionFactory(entity=campaign, status=ActionStatus.QUEUED, recommendation=recommendation)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE actions_action")
        cursor.execute("ANALYZE actions_actionexecutionlog")
    in_flight = [ActionStatus.QUEUED, ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK]
    lookups = {
        "in flight on a connection": Action.objects.filter(connection=campaign.connection, status__in=in_flight),
        "queued or executing on connections": Action.objects.filter(
            models.Q(status=ActionStatus.QUEUED) | models.Q(status=ActionStatus.EXECUTING),
            connection_id__in=[campaign.connection_id],
        ),
        "a small connection's rows": Action.objects.filter(connection_id__in=[small.connection_id]),
        "every tenant's pending approvals": Action.objects.filter(status=ActionStatus.PENDING_APPROVAL),
        "a small tenant's rows": Action.objects.filter(tenant_id__in=[other_tenant.pk]),
        "a tenant's recent approvals": Action.objects.filter(tenant=campaign.tenant, approved_at__gte=timezone.now()),
        "a user's rollback requests": Action.objects.filter(rollback_requested_by_id__in=[approver.pk]),
        "a recommendation's actions": Action.objects.filter(recommendation_id__in=[recommendation.pk]),
        "the reconciler's expired leases": unsettled().order_by("lease_expires_at", "id")[:500],
        "the reconciler's lag": Action.objects.filter(
            status__in=[ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK], lease_expires_at__lt=timezone.now()
        ),
        "an action's log rows": ActionExecutionLog.objects.filter(action_id__in=[one_action]),
        "a small tenant's log rows": ActionExecutionLog.objects.filter(tenant_id__in=[other_tenant.pk]),
        "the log since a moment": ActionExecutionLog.objects.filter(created_at__gte=timezone.now()),
    }
    with connection.cursor() as cursor:
        for name, queryset in lookups.items():
            sql, params = queryset.values("id").query.sql_with_params()
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
            assert not [n for n in plan_nodes(plan) if n["Node Type"] == "Seq Scan"], f"{name}: {sql}\n{plan}"
            for node in plan_nodes(plan):
                if "Index Name" in node:
                    assert reads_a_range(cursor, node), f"{name} reads all of {node['Index Name']}: {sql}\n{plan}"


def plan_nodes(plan) -> list[dict]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` plan."""
    nodes, todo = [], [plan[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo += node.get("Plans", [])
    return nodes


def reads_a_range(cursor, node: dict) -> bool:
    """Whether an index scan reads a range of its index, not all of it: its condition is on
    the index's leading column, or the index is partial (its rows are the ones asked for).
    A condition on a later column alone makes PostgreSQL read every entry."""
    cursor.execute(
        """
        SELECT a.attname, x.indpred IS NOT NULL
        FROM pg_class i
        JOIN pg_index x ON x.indexrelid = i.oid
        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
        WHERE i.relname = %s
        """,
        [node["Index Name"]],
    )
    leading, partial = cursor.fetchone()
    return partial or bool(re.search(rf"\b{leading}\b", node.get("Index Cond", "")))


def heap_only_updates() -> tuple[int, int]:
    """(heap-only, all) row updates of the actions table in the current transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_xact_user_tables WHERE relid = %s::regclass",
            [Action._meta.db_table],
        )
        return cursor.fetchone()


@pytest.mark.postgres(reason="heap-only updates and fill factors are PostgreSQL's")
def test_lease_renewals_and_fences_add_no_index_entries(campaign):
    """A worker's keeper renews every action it holds each third of the lease's life, and
    each fence renews and stores before-states: none of those columns is indexed, so
    PostgreSQL writes them as heap-only updates (no entry in any of the table's indexes)
    where the page has room, and the table keeps room on its pages for them. (One row, so
    that its two new versions find room on its page: within one transaction nothing is pruned.)"""
    from datetime import timedelta

    from django.db import transaction

    from actions.models import ActionStatus
    from actions.services.leases import Lease, fence_request, lease_renew, lease_ttl, new_token
    from tests.factories import ActionFactory, EntityFactory

    lease = Lease(token=new_token("worker"), ttl=lease_ttl(), expires_at=timezone.now() + lease_ttl())
    held = [
        ActionFactory(
            entity=EntityFactory(connection=campaign.connection),
            status=ActionStatus.EXECUTING,
            lease_owner=lease.token,
            lease_expires_at=lease.expires_at,
        )
        for _ in range(1)
    ]
    ids = [a.pk for a in held]
    with transaction.atomic():
        hot, updates = heap_only_updates()
        assert lease_renew(lease) is True
        fence_request(lease, ids, before_states={pk: {"daily_budget": "100.00"} for pk in ids})
        assert heap_only_updates() == (hot + 2 * len(ids), updates + 2 * len(ids))
    renewed = Action.objects.filter(pk__in=ids, lease_expires_at__gt=timezone.now() + timedelta(seconds=5))
    assert renewed.count() == len(ids)
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", [Action._meta.db_table])
        assert "fillfactor=80" in cursor.fetchone()[0]


def test_no_index_is_keyed_on_what_a_renewal_or_fence_writes():
    """A column in an index's key, its condition, or a unique constraint's, changed by an
    UPDATE, rules out a heap-only update."""
    written = {"lease_expires_at", "before_state", "updated_at"}
    keyed = {f.attname for f in single_column_indexed(Action)}
    for index in [*Action._meta.indexes, *Action._meta.constraints]:
        keyed |= {Action._meta.get_field(f.lstrip("-")).attname for f in getattr(index, "fields", ())}
        keyed |= condition_columns(getattr(index, "condition", None))
    assert "status" in keyed and "lease_owner" in keyed  # the conditions are read
    assert keyed & written == set()


def condition_columns(condition) -> set[str]:
    """The columns a ``Q`` condition names (``status__in`` -> ``status``)."""
    if condition is None:
        return set()
    columns = set()
    for child in condition.children:
        if isinstance(child, models.Q):
            columns |= condition_columns(child)
        else:
            columns.add(Action._meta.get_field(child[0].split("__")[0]).attname)
    return columns
