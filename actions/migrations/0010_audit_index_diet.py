"""Fewer indexes on the audit tables, which every execution appends to (three history rows
and four log rows per action): the log's tenant, action and created_at indexes lead its
list indexes; the history's foreign-key indexes serve no lookup (rows are read per action
and by date). The log's foreign keys keep their constraints (SeparateDatabaseAndState)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0009_index_diet"),
        ("budgetradar", "0005_safety_gate"),
        ("platforms", "0005_staff_list_indexes"),
        ("scenarios", "0009_deployment_help_texts"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(  # keep the constraint: drop only its index
            state_operations=[
                migrations.AlterField(
                    model_name="actionexecutionlog",
                    name="action",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="logs",
                        to="actions.action",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "actions_actionexecutionlog_action_id_84970e9a"',
                    reverse_sql='CREATE INDEX "actions_actionexecutionlog_action_id_84970e9a" ON "actions_actionexecutionlog" ("action_id")',
                )
            ],
        ),
        migrations.AlterField(
            model_name="actionexecutionlog",
            name="created_at",
            field=models.DateTimeField(auto_now_add=True),
        ),
        migrations.SeparateDatabaseAndState(  # keep the constraint: drop only its index
            state_operations=[
                migrations.AlterField(
                    model_name="actionexecutionlog",
                    name="tenant",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="budgetradar.tenant",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "actions_actionexecutionlog_tenant_id_374a8e23"',
                    reverse_sql='CREATE INDEX "actions_actionexecutionlog_tenant_id_374a8e23" ON "actions_actionexecutionlog" ("tenant_id")',
                )
            ],
        ),
        migrations.AlterField(
            model_name="historicalaction",
            name="approved_by",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="historicalaction",
            name="connection",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="platforms.platformconnection",
            ),
        ),
        migrations.AlterField(
            model_name="historicalaction",
            name="deployment",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="scenarios.deployment",
            ),
        ),
        migrations.AlterField(
            model_name="historicalaction",
            name="entity",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="platforms.platformentity",
            ),
        ),
        migrations.AlterField(
            model_name="historicalaction",
            name="job",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="actions.actionjob",
            ),
        ),
        migrations.AlterField(
            model_name="historicalaction",
            name="proposed_by",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="historicalaction",
            name="recommendation",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="actions.recommendation",
            ),
        ),
        migrations.AlterField(
            model_name="historicalaction",
            name="rollback_requested_by",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="historicalaction",
            name="tenant",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="budgetradar.tenant",
            ),
        ),
    ]
