"""Migration 0005 moves every stored document's entities into their own rows."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("scenarios", "0004_background_work")]
AFTER = [("scenarios", "0005_preflight_entities")]


def migrated_to(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


def test_existing_documents_are_split_into_entity_rows(tenant):
    old = migrated_to(BEFORE)
    entities = [
        {"entity_id": 7, "connection_id": 3, "change_type": "update", "breaches": [{"code": "a"}], "sections": {}},
        {"entity_id": 8, "connection_id": 3, "change_type": "noop", "breaches": [], "sections": {"spend": []}},
    ]
    old.get_model("scenarios", "PreflightRun").objects.create(
        tenant_id=tenant.pk,
        run_id="pf-old",
        status="succeeded",
        payload={"summary": {"entities": 2}, "entities": entities},
    )
    try:
        new = migrated_to(AFTER)
        run = new.get_model("scenarios", "PreflightRun").objects.get(run_id="pf-old")
        rows = new.get_model("scenarios", "PreflightEntity").objects.filter(run=run).order_by("position")
        assert run.payload == {"summary": {"entities": 2}}
        assert [(r.position, r.entity_id, r.change_type, r.breaches, r.document) for r in rows] == [
            (0, 7, "update", 1, entities[0]),
            (1, 8, "noop", 0, entities[1]),
        ]
    finally:
        migrated_to(MigrationExecutor(connection).loader.graph.leaf_nodes())
