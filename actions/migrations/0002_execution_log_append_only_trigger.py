"""On PostgreSQL, reject UPDATE and DELETE of execution log rows in the database itself.

The model already refuses both; the trigger also stops raw SQL and bulk operations.
SQLite relies on the model-level guard only.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION actions_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'actions_actionexecutionlog is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER actions_log_no_update_delete
    BEFORE UPDATE OR DELETE ON actions_actionexecutionlog
    FOR EACH ROW EXECUTE FUNCTION actions_log_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS actions_log_no_update_delete ON actions_actionexecutionlog;
DROP FUNCTION IF EXISTS actions_log_append_only();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("actions", "0001_initial")]
    operations = [migrations.RunPython(create_trigger, drop_trigger)]
