"""Every index on the actions table earns its keep.

The engine writes each action's row four times (queued, executing, the fence before its
request, settled), and each write that changes an indexed column adds an entry to every
index of the table. An index whose key columns lead another index (``(tenant)`` beside
``(tenant, created_at, id)``) serves no lookup the longer one cannot, so it only costs
writes. These tests pin that none is left, in the models and in the migrated database.
"""

from __future__ import annotations

import pytest
from django.db import connection, models
from django.utils import timezone

from actions.models import Action

pytestmark = pytest.mark.django_db


def model_indexes() -> dict[str, tuple[str, ...]]:
    """Name -> key columns of every plain (non-unique, unconditional) index the model asks for."""
    indexes: dict[str, tuple[str, ...]] = {}
    for index in Action._meta.indexes:
        if index.condition is None and not index.expressions:
            indexes[index.name] = tuple(Action._meta.get_field(f.lstrip("-")).column for f in index.fields)
    for field in Action._meta.concrete_fields:
        if field.db_index and not field.primary_key and not field.unique:
            indexes[f"{field.name} (foreign key index)"] = (field.column,)
    return indexes


def redundant(indexes: dict[str, tuple[str, ...]]) -> list[str]:
    """'A leads B' for each index A whose columns are the first columns of another index B."""
    return [
        f"{name} {columns} leads {other} {other_columns}"
        for name, columns in indexes.items()
        for other, other_columns in indexes.items()
        if other != name and other_columns[: len(columns)] == columns
    ]


def test_no_action_index_is_the_leading_part_of_another():
    assert redundant(model_indexes()) == []


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
def test_the_migrated_table_has_no_leftover_index():
    """The migration drops the foreign keys' old indexes by name: a wrong name would
    leave one behind silently (``DROP INDEX IF EXISTS``)."""
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
            [Action._meta.db_table],
        )
        plain = {name: tuple(columns) for name, columns in cursor.fetchall()}
    assert redundant(plain) == []
    assert set(plain) == {name for name in model_indexes() if "foreign key index" not in name} | {
        connection.schema_editor()._create_index_name(Action._meta.db_table, [field.column])
        for field in Action._meta.concrete_fields
        if field.db_index and not field.primary_key and not field.unique
    }


@pytest.mark.postgres(reason="EXPLAIN plans are PostgreSQL's; SQLite's planner says nothing about this deployment")
@pytest.mark.django_db(transaction=True)
def test_the_lookups_the_dropped_indexes_served_still_use_an_index_at_20000_rows(campaign, other_tenant, approver):
    """Dispatch's and the monitors' lookups by connection and status, a small tenant's or
    connection's rows (deleting them checks these), and the rows a deleted user or
    recommendation leaves (set to empty) each read an index, not the whole table."""
    from actions.models import ActionStatus
    from tests.factories import ActionFactory, ConnectionFactory, EntityFactory, RecommendationFactory
    from tests.test_list_scale import bulk_actions

    bulk_actions(campaign.tenant, campaign, 20_000)
    small = EntityFactory(connection=ConnectionFactory(tenant=other_tenant))
    bulk_actions(other_tenant, small, 10)
    recommendation = RecommendationFactory(tenant=campaign.tenant, entity=campaign)
    ActionFactory(entity=campaign, status=ActionStatus.QUEUED, recommendation=recommendation)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE actions_action")
    in_flight = [ActionStatus.QUEUED, ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK]
    lookups = {
        "in flight on a connection": Action.objects.filter(connection=campaign.connection, status__in=in_flight),
        "queued or executing on connections": Action.objects.filter(
            models.Q(status=ActionStatus.QUEUED) | models.Q(status=ActionStatus.EXECUTING),
            connection_id__in=[campaign.connection_id],
        ),
        "a small connection's rows": Action.objects.filter(connection_id__in=[small.connection_id]),
        "a small tenant's rows": Action.objects.filter(tenant_id__in=[other_tenant.pk]),
        "a tenant's recent approvals": Action.objects.filter(tenant=campaign.tenant, approved_at__gte=timezone.now()),
        "a user's rollback requests": Action.objects.filter(rollback_requested_by_id__in=[approver.pk]),
        "a recommendation's actions": Action.objects.filter(recommendation_id__in=[recommendation.pk]),
    }
    with connection.cursor() as cursor:
        for name, queryset in lookups.items():
            sql, params = queryset.values("id").query.sql_with_params()
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan on actions_action" not in plan, f"{name}: {sql}\n{plan}"
