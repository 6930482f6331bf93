"""Lease renewals and fences as heap-only updates on PostgreSQL.

A worker's lease keeper renews every unsettled action it holds every third of the lease's
time to live (10,000 rows every 10 s for a long Meta unit), and each fence before a write
request stores before-states on the same rows. Neither changes the status, but the
unsettled-lease index was keyed on ``lease_expires_at``, so every renewal gave each row a
new version with an entry in each of the table's indexes. Now the index is keyed on ``id``
(same rows: the unsettled ones), and a fill factor of 80 leaves a fifth of each new page
free, where PostgreSQL writes such an update as a heap-only tuple: no index entries, and
(on the same page) a write-ahead log record without the row's unchanged head and tail.

The fill factor applies to pages written from now on; existing pages are not rewritten
(that would lock the table), they get room as rows move on. SQLite has no such setting.
The new index is built with a plain ``CREATE INDEX``, which blocks writes to the table while
it runs: apply it when no worker is executing.
"""

from django.db import migrations, models

FILL_FACTOR = 80


def set_fill_factor(apps, schema_editor, value: int | None = FILL_FACTOR) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("actions", "Action")._meta.db_table)
    if value is None:
        schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    else:
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {int(value)})")


def reset_fill_factor(apps, schema_editor) -> None:
    set_fill_factor(apps, schema_editor, None)


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0010_audit_index_diet"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="action",
            index=models.Index(
                condition=models.Q(("status__in", ["executing", "rolling_back"])),
                fields=["id"],
                name="action_unsettled_idx",
            ),
        ),
        migrations.RemoveIndex(model_name="action", name="action_unsettled_lease_idx"),
        migrations.RunPython(set_fill_factor, reset_fill_factor),
    ]
