"""Fast bulk writes the ORM does not offer.

Django's ``bulk_update`` emits ``CASE WHEN id = … THEN …`` for every row and field (the
database then tests every case for every row), and ``bulk_create`` compiles an
expression per value; at 10,000 rows both cost seconds. These helpers prepare one
small statement and send it with ``executemany``: psycopg 3 pipelines the rows in one
round trip and SQLite loops in C, so the cost is linear and the statement is parsed once.
Values go through each field's own database preparation, exactly as ``save()`` would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import connection as default_connection
from django.db.models import Model


def bulk_set(objs: Sequence[Model], fields: Sequence[str], *, only_if: dict[str, object] | None = None) -> int:
    """Write ``fields`` of each object to its row (by primary key); return rows updated.

    ``only_if`` adds equality conditions (``{"status": "executing"}``) so rows that moved
    on meanwhile are left alone.
    """
    if not objs or not fields:
        return 0
    conn = default_connection
    quote = conn.ops.quote_name
    meta = type(objs[0])._meta
    columns = [meta.get_field(name) for name in fields]
    conditions = [(meta.get_field(name), value) for name, value in (only_if or {}).items()]
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(f'{quote(f.column)} = %s' for f in columns)} "
        f"WHERE {' AND '.join([f'{quote(meta.pk.column)} = %s'] + [f'{quote(f.column)} = %s' for f, _ in conditions])}"
    )
    fixed = [f.get_db_prep_value(value, conn) for f, value in conditions]
    rows = [[f.get_db_prep_save(getattr(obj, f.attname), conn) for f in columns] + [obj.pk] + fixed for obj in objs]
    with conn.cursor() as cursor:
        cursor.executemany(sql, rows)
        return cursor.rowcount


def bulk_insert(objs: Sequence[Model]) -> None:
    """Insert unsaved instances of one model (``pre_save`` runs, so ``auto_now_add`` is set).

    Primary keys are not read back: use it for rows nothing refers to afterwards
    (history, logs).
    """
    if not objs:
        return
    fields = insert_fields(type(objs[0]))
    insert_rows(type(objs[0]), fields, ([f.pre_save(obj, add=True) for f in fields] for obj in objs))


def insert_fields(model: type[Model]) -> list:
    """The columns an insert writes (every concrete field but an auto-increment key)."""
    return [f for f in model._meta.concrete_fields if not _is_auto_pk(f)]


def insert_rows(model: type[Model], fields: Sequence, rows: Iterable[Sequence]) -> None:
    """Insert Python values (one sequence per row, in ``fields`` order) with one prepared statement."""
    conn = default_connection
    quote = conn.ops.quote_name
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    prepared = [[f.get_db_prep_save(v, conn) for f, v in zip(fields, row, strict=True)] for row in rows]
    if prepared:
        with conn.cursor() as cursor:
            cursor.executemany(sql, prepared)


def _is_auto_pk(field) -> bool:
    return field.primary_key and field.get_internal_type().endswith("AutoField")
