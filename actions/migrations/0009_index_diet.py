"""Fewer indexes on actions: each one costs every non-HOT write of an action row an entry.

The foreign keys keep their constraints: only their single-column indexes go (a plain
``AlterField`` would drop and re-add, and so re-validate, each constraint on a large table).
The new indexes are built with a plain ``CREATE INDEX``, which blocks writes to the table
while it runs (seconds per million rows): apply it when no worker is executing.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# (field, its former single-column index): that index is dropped; a composite or partial
# index in Meta.indexes serves the field's lookups instead.
FOREIGN_KEY_INDEXES = [
    ("tenant", "tenant_id", "actions_action_tenant_id_40bd6bc2"),
    ("connection", "connection_id", "actions_action_connection_id_8e4979b8"),
    ("recommendation", "recommendation_id", "actions_action_recommendation_id_a21cbf00"),
    ("rollback_requested_by", "rollback_requested_by_id", "actions_action_rollback_requested_by_id_5fc29a56"),
]

FIELDS = {
    "tenant": models.ForeignKey(
        db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="actions", to="budgetradar.tenant"
    ),
    "connection": models.ForeignKey(
        db_index=False,
        on_delete=django.db.models.deletion.PROTECT,
        related_name="actions",
        to="platforms.platformconnection",
    ),
    "recommendation": models.ForeignKey(
        blank=True,
        db_index=False,
        null=True,
        on_delete=django.db.models.deletion.SET_NULL,
        related_name="actions",
        to="actions.recommendation",
    ),
    "rollback_requested_by": models.ForeignKey(
        blank=True,
        db_index=False,
        null=True,
        on_delete=django.db.models.deletion.SET_NULL,
        related_name="+",
        to=settings.AUTH_USER_MODEL,
    ),
}


def _drop_foreign_key_index(field: str, column: str, index: str) -> migrations.SeparateDatabaseAndState:
    return migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AlterField(model_name="action", name=field, field=FIELDS[field])],
        database_operations=[
            migrations.RunSQL(
                f'DROP INDEX IF EXISTS "{index}"',
                reverse_sql=f'CREATE INDEX "{index}" ON "actions_action" ("{column}")',
            )
        ],
    )


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0008_staff_list_indexes"),
        ("budgetradar", "0005_safety_gate"),
        ("platforms", "0005_staff_list_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="action",
            index=models.Index(fields=["connection", "status"], name="action_connection_status_idx"),
        ),
        migrations.AddIndex(
            model_name="action",
            index=models.Index(
                condition=models.Q(("recommendation__isnull", False)),
                fields=["recommendation"],
                name="action_recommendation_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="action",
            index=models.Index(
                condition=models.Q(("rollback_requested_by__isnull", False)),
                fields=["rollback_requested_by"],
                name="action_rollback_requester_idx",
            ),
        ),
        migrations.RemoveIndex(model_name="action", name="actions_act_tenant__4b393e_idx"),
        *(_drop_foreign_key_index(*entry) for entry in FOREIGN_KEY_INDEXES),
    ]
