"""On PostgreSQL, the decision log is append-only in the database itself.

UPDATE is always refused. DELETE is refused unless the row is past its ``retain_until``
and the transaction set ``budgetradar.decision_log_purge`` (only the retention purge
does, with ``set_config(..., true)``: local to its transaction). SQLite relies on the
model-level guard only.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION planning_decision_log_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.retain_until < now()
       AND coalesce(current_setting('budgetradar.decision_log_purge', true), '') = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'planning_decisionlogentry is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER planning_decision_log_append_only
    BEFORE UPDATE OR DELETE ON planning_decisionlogentry
    FOR EACH ROW EXECUTE FUNCTION planning_decision_log_guard();
"""

DROP = """
DROP TRIGGER IF EXISTS planning_decision_log_append_only ON planning_decisionlogentry;
DROP FUNCTION IF EXISTS planning_decision_log_guard();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("planning", "0001_initial")]
    operations = [migrations.RunPython(create_trigger, drop_trigger)]
