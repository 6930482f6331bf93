"""Fast bulk writes the ORM does not offer.

Django's ``bulk_update`` emits ``CASE WHEN id = … THEN …`` for every row and field (the
database then tests every case for every row), and ``bulk_create`` compiles an
expression per value and builds a model instance per row; at 10,000 rows both cost
seconds. These helpers take plain rows instead:

- ``db_row_converter`` turns a row of Python values (one per field, in order) into the
  values the database driver takes, as the fields' own ``get_db_prep_save`` would:
  JSON dumped with the field's encoder (``None`` stays SQL NULL), datetimes kept aware on
  PostgreSQL and written as naive UTC text on SQLite, choice enums as their plain
  string. Only columns that need a conversion pay for one; the rest pass through. A
  column type it does not know (none in the audit tables) falls back to the field's
  own ``get_db_prep_save``.
- ``insert_rows`` writes such rows with ``COPY … FROM STDIN`` on PostgreSQL (one
  statement, rows streamed in the driver's C code) and one prepared ``executemany`` on
  SQLite, inside the caller's transaction. No model instances, no per-value field calls.
- ``bulk_set`` updates fields of many rows by primary key: on PostgreSQL one
  ``UPDATE … FROM jsonb_to_recordset(document)`` per call, on SQLite one prepared
  ``executemany``; ``bulk_set_values`` does the same from primary keys and plain values,
  without instances.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, Model

Converter = Callable[[Any], Any]


def bulk_set(
    objs: Sequence[Model],
    fields: Sequence[str],
    *,
    only_if: dict[str, object] | None = None,
    same: dict[str, object] | None = None,
) -> int:
    """Write ``fields`` of each object to its row (by primary key); return rows updated.

    ``only_if`` adds equality conditions (``{"status": "executing"}``) so rows that moved
    on meanwhile are left alone. ``same`` sets further fields (by attribute name) to one
    value for every row, in the same statement: a row gets one new version, not two.
    """
    if not objs or not fields:
        return 0
    model = type(objs[0])
    attnames = [model._meta.get_field(name).attname for name in fields]
    values = [[getattr(obj, name) for name in attnames] for obj in objs]
    return bulk_set_values(model, [obj.pk for obj in objs], fields, values, only_if=only_if, same=same)


def bulk_set_values(
    model: type[Model],
    pks: Sequence[Any],
    fields: Sequence[str],
    values: Sequence[Sequence[Any]],
    *,
    only_if: dict[str, object] | None = None,
    same: dict[str, object] | None = None,
) -> int:
    """``bulk_set`` for rows known by primary key alone: ``values[i]`` (Python values, in
    ``fields`` order) go to the row ``pks[i]``; no model instance is needed. Rows that no
    longer exist are skipped. Returns rows updated."""
    if not pks or not fields:
        return 0
    conn = connections[DEFAULT_DB_ALIAS]
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    conditions = [(meta.get_field(name), value) for name, value in (only_if or {}).items()]
    constants = [(_field_by_attname(meta, name), value) for name, value in (same or {}).items()]
    fixed = [f.get_db_prep_value(value, conn) for f, value in conditions]
    shared = [f.get_db_prep_save(value, conn) for f, value in constants]
    quote = conn.ops.quote_name
    shared_sql = [f"{quote(f.column)} = %s" for f, _ in constants]
    if conn.vendor == "postgresql":
        return _update_from_json(conn, meta, columns, conditions, fixed, pks, values, shared_sql, shared)
    convert = db_row_converter(columns, conn)
    rows = [convert(row) for row in values]
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join([*(f'{quote(f.column)} = %s' for f in columns), *shared_sql])} "
        f"WHERE {' AND '.join([f'{quote(meta.pk.column)} = %s'] + [f'{quote(f.column)} = %s' for f, _ in conditions])}"
    )
    with conn.cursor() as cursor:
        cursor.executemany(sql, [[*row, *shared, pk, *fixed] for row, pk in zip(rows, pks, strict=True)])
        return cursor.rowcount


def _field_by_attname(meta, attname: str) -> Field:
    return next(f for f in meta.concrete_fields if f.attname == attname)


def _update_from_json(conn, meta, columns, conditions, fixed, pks, values, shared_sql, shared) -> int:
    """One statement for all rows: the new values travel as one JSON document (encoded in
    C, parsed by the server into typed columns), joined on the primary key."""
    quote = conn.ops.quote_name
    names = [f"c{i}" for i in range(len(columns))]
    encoders = [(i, name, _json_converter(f)) for i, (name, f) in enumerate(zip(names, columns, strict=True))]
    document = []
    for row, pk in zip(values, pks, strict=True):
        item = {"pk": pk}
        for i, name, encode in encoders:
            value = row[i]
            item[name] = encode(value) if encode else value
        document.append(item)
    types = [f"{n} {f.db_type(conn)}" for f, n in zip(columns, names, strict=True)]
    record = ", ".join([f"pk {meta.pk.db_type(conn)}", *types])
    assignments = ", ".join([*(f"{quote(f.column)} = v.{n}" for f, n in zip(columns, names, strict=True)), *shared_sql])
    where = " AND ".join([f"t.{quote(meta.pk.column)} = v.pk"] + [f"t.{quote(f.column)} = %s" for f, _ in conditions])
    sql = (
        f"UPDATE {quote(meta.db_table)} AS t SET {assignments} "
        f"FROM jsonb_to_recordset(%s::jsonb) AS v({record}) WHERE {where}"
    )
    with conn.cursor() as cursor:
        cursor.execute(sql, [*shared, json.dumps(document), *fixed])
        return cursor.rowcount


def _json_converter(field: Field) -> Converter | None:
    """How a value goes into the JSON document ``_update_from_json`` sends: JSON values as
    they are (JSON null becomes SQL NULL), datetimes in ISO form, anything else not
    native to JSON (``Decimal``) as its text."""
    kind = field.get_internal_type()
    if kind == "JSONField":
        if field.encoder:
            return lambda value: None if value is None else json.loads(json.dumps(value, cls=field.encoder))
        return None
    if kind in _PASS_THROUGH or field.is_relation:
        return None
    return _as_text


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


def insert_rows(model: type[Model], fields: Sequence, rows: Iterable[Sequence]) -> int:
    """Insert rows of Python values (one sequence per row, in ``fields`` order); return
    how many. PostgreSQL: one ``COPY``; SQLite: one prepared ``executemany``."""
    conn = connections[DEFAULT_DB_ALIAS]
    convert = db_row_converter(fields, conn)
    return write_db_rows(model._meta.db_table, [f.column for f in fields], (convert(row) for row in rows))


def write_db_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Insert rows already in database form (see ``db_row_converter``) into ``table``.

    The statement runs through the connection's execute wrappers and is logged like any
    other query (one per call), so query counts and benchmarks see it.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    quote = conn.ops.quote_name
    column_list = ", ".join(quote(c) for c in columns)
    if conn.vendor == "postgresql":
        sql = f"COPY {quote(table)} ({column_list}) FROM STDIN"
        return _run(conn, sql, rows, _copy)
    sql = f"INSERT INTO {quote(table)} ({column_list}) VALUES ({', '.join(['%s'] * len(columns))})"
    rows = list(rows)
    if not rows:
        return 0
    with conn.cursor() as cursor:
        cursor.executemany(sql, rows)
    return len(rows)


def _run(conn, sql: str, rows: Iterable[Sequence], executor) -> int:
    rows = rows if isinstance(rows, list) else list(rows)
    if not rows:
        return 0
    with conn.cursor() as cursor:
        context = {"connection": conn, "cursor": cursor}
        run = executor
        for wrapper in reversed(conn.execute_wrappers):
            run = partial(wrapper, run)
        started = time.monotonic()
        run(sql, rows, False, context)
        if conn.queries_logged:
            conn.queries_log.append({"sql": f"{sql} -- {len(rows)} rows", "time": f"{time.monotonic() - started:.3f}"})
    return len(rows)


def _copy(sql: str, rows: list[Sequence], many: bool, context: dict) -> None:
    with context["cursor"].cursor.copy(sql) as copy:
        write = copy.write_row
        for row in rows:
            write(row)


def db_row_converter(fields: Sequence[Field], conn=None) -> Callable[[Sequence], tuple]:
    """A function turning one row of Python values into a tuple the driver takes.

    Decided once per field list; a row then costs one call per column that needs a
    conversion (JSON; text, where a choice enum becomes its plain string; datetimes on
    SQLite) and nothing for the others (numbers, booleans, keys; datetimes on PostgreSQL).
    """
    conn = conn or connections[DEFAULT_DB_ALIAS]
    converters = [(i, c) for i, f in enumerate(fields) if (c := _converter(f, conn)) is not None]

    def convert(row: Sequence) -> tuple:
        values = list(row)
        for i, converter in converters:
            values[i] = converter(values[i])
        return tuple(values)

    return convert


def _converter(field: Field, conn) -> Converter | None:
    kind = field.get_internal_type()
    if kind == "JSONField":
        dumps = partial(json.dumps, cls=field.encoder) if field.encoder else json.dumps
        return lambda value: None if value is None else dumps(value)
    if kind == "DateTimeField":
        return None if conn.vendor == "postgresql" else partial(_naive_text, zone=conn.timezone)
    if kind in ("CharField", "TextField", "SlugField", "EmailField"):
        return _plain_str
    if kind in _PASS_THROUGH or field.is_relation:
        return None
    return partial(_field_prep, field=field, conn=conn)


_PASS_THROUGH = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "IntegerField",
        "BigIntegerField",
        "SmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
        "BooleanField",
        "FloatField",
    }
)


def _plain_str(value: Any) -> Any:
    # Choice enums are str subclasses: store their value, as CharField.to_python would show it.
    return value if value is None or type(value) is str else str(value)


def _naive_text(value: Any, *, zone) -> Any:
    """SQLite stores datetimes as naive text in the connection's zone (UTC), as Django does."""
    if value is None:
        return None
    if value.tzinfo is not None and value.utcoffset() is not None:
        value = value.astimezone(zone).replace(tzinfo=None)
    return str(value)


def _field_prep(value: Any, *, field: Field, conn) -> Any:
    """Any other field type: the field's own preparation (no such column in the audit tables)."""
    return field.get_db_prep_save(value, conn)


def _as_text(value: Any) -> Any:
    """A value as the text PostgreSQL parses for its column type (strings, ``None``,
    booleans and numbers JSON carries natively stay as they are)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _is_auto_pk(field) -> bool:
    return field.primary_key and field.get_internal_type().endswith("AutoField")
