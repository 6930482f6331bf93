"""Scenario input: the proposed push bundle (JSON), CSV and API/admin item lists.

Every reader turns its input into ``TargetItem``s or refuses the whole input with
``ValidationFailed`` whose ``details`` is a list of row errors
(``{"line" | "index", "entity_id"?, "field", "code", "message"}``), each message naming
the row and the field on its own. Nothing is written by a parser; the writers
(``scenario_create``, ``scenario_update``, ``scenario_import``) write all or nothing.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from budgetradar.audit import audited_save
from budgetradar.errors import InvalidState, ValidationFailed
from budgetradar.inputs import NOTES_MAX_LENGTH, BadInput, check_document, check_text, load_json, money_limit
from budgetradar.models import Tenant
from budgetradar.tenancy import require_perm
from platforms.bidding import bid_change_refusal
from platforms.models import Platform, PlatformEntity
from platforms.money import MoneyError, check_precision, money_rules
from platforms.types import EntityStatus, EntityType
from scenarios.models import Scenario, ScenarioItem
from scenarios.services.items import TARGET_FIELDS, TargetItem

MONEY_FIELDS = ("daily_budget", "lifetime_budget", "bid")
# The smallest amount the item columns cannot store (10^14 with 18 digits, 4 places); a
# larger one would overflow the database column instead of being refused here.
MONEY_LIMIT = min(money_limit(ScenarioItem, name) for name in MONEY_FIELDS)
# Bundle/CSV field name -> TargetItem field. ``bid_amount`` is Meta's name for a bid cap.
FIELD_ALIASES = {
    "daily_budget": "daily_budget",
    "lifetime_budget": "lifetime_budget",
    "bid_amount": "bid",
    "bid": "bid",
    "status": "status",
}
# Where each field lives in a bundle's ``sections``.
SECTION_OF = {"daily_budget": "spend", "lifetime_budget": "spend", "bid": "spend", "status": "delivery"}
# The entity types a deployment can change each field on (set_values actions).
FIELD_ENTITY_TYPES = {
    "daily_budget": frozenset({EntityType.CAMPAIGN, EntityType.AD_SET}),
    "lifetime_budget": frozenset({EntityType.CAMPAIGN, EntityType.AD_SET}),
    "bid": frozenset({EntityType.AD_SET}),
    "status": frozenset({EntityType.CAMPAIGN, EntityType.AD_SET}),
}
CSV_COLUMNS = ("platform", "entity_id", "field", "value")
CSV_OPTIONAL_COLUMNS = ("entity_type",)
REMOVAL_WORDS = frozenset({"removed", "remove", "deleted", "delete", "archived", "archive"})
MAX_REPORTED_ERRORS = 200
RESOLVE_BATCH = 5000
KNOWN_FIELDS_TEXT = "daily_budget, lifetime_budget, bid_amount (or bid) and status"

ImportFormat = Literal["bundle", "csv"]


@dataclass(frozen=True)
class RowError:
    """One refused value: where (``row``), which field, a machine code and a message."""

    row: dict[str, Any]
    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.row, "field": self.field, "code": self.code, "message": self.message}


class _Refused(Exception):
    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field, self.code, self.message = field, code, message


def refuse(errors: list[RowError], *, what: str) -> ValidationFailed:
    """The ``ValidationFailed`` for ``errors``: the first one in the message, all in details."""
    count = len(errors)
    shown = [e.as_dict() for e in errors[:MAX_REPORTED_ERRORS]]
    more = f", the first {MAX_REPORTED_ERRORS} listed" if count > MAX_REPORTED_ERRORS else ""
    plural = "error" if count == 1 else "errors"
    return ValidationFailed(
        f"{what} was refused and nothing was imported ({count} {plural}{more}). {errors[0].message}", details=shown
    )


def check_size(size: int, *, what: str = "The file") -> None:
    """Refuse inputs larger than ``settings.IMPORT_MAX_BYTES``, stating the limit."""
    limit = settings.IMPORT_MAX_BYTES
    if size > limit:
        error = RowError(
            {},
            "file",
            "too_large",
            f"{what} is {_size_text(size)}; the limit is {_size_text(limit)} ({limit} bytes). "
            "Split it into several imports.",
        )
        raise refuse([error], what=what)


def _size_text(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{size / 1024:.1f} KB"


# Value parsing -------------------------------------------------------------------------


def _money(raw: Any, *, field: str, currency: str, entity: PlatformEntity | None = None) -> Decimal:
    """A finite amount > 0 that ``currency`` represents exactly (on the entity's platform:
    Meta's offsets, Google's billable unit, when the entity is known)."""
    if isinstance(raw, bool) or raw is None or (isinstance(raw, str) and not raw.strip()):
        raise _Refused(field, "required", 'needs a decimal amount such as "120.00".')
    if not isinstance(raw, Decimal | int | float | str):
        raise _Refused(field, "invalid", f'must be a decimal amount such as "120.00"; got {raw!r}.')
    try:
        amount = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip())
    except (InvalidOperation, ValueError):
        raise _Refused(field, "invalid", f'must be a decimal amount such as "120.00"; got {raw!r}.') from None
    if not amount.is_finite():
        raise _Refused(field, "not_finite", f"must be a finite amount; got {raw}.")
    if amount < 0:
        raise _Refused(field, "negative", f"cannot be negative; got {amount}.")
    if amount == 0:
        raise _Refused(field, "zero", f"must be greater than zero; got {amount}.")
    if amount >= MONEY_LIMIT:
        raise _Refused(field, "too_large", f"must be less than {MONEY_LIMIT:,}; got {_short(raw)}.")
    try:
        if entity is not None:
            connection = entity.connection
            return money_rules(
                connection.platform, currency, billable_unit_micros=connection.billable_unit_micros
            ).check(amount)
        return check_precision(amount, currency)
    except MoneyError as exc:
        raise _Refused(field, "precision", str(exc)) from None


def _short(raw: Any) -> str:
    text = str(raw)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _status(raw: Any, *, field: str = "status") -> str:
    """``active`` or ``paused`` (any case); removal is refused with its own message."""
    text = raw.strip().lower() if isinstance(raw, str) else raw
    if text in (EntityStatus.ACTIVE, EntityStatus.PAUSED):
        return str(text)
    if text in REMOVAL_WORDS:
        raise _Refused(
            field,
            "removal_refused",
            f"{raw!r} would delete or remove the entity; BudgetRadar only sets active or paused. "
            "Remove entities in the platform's own interface.",
        )
    raise _Refused(field, "invalid_status", f"must be active or paused; got {raw!r}.")


def _value(name: str, raw: Any, *, currency: str, field: str, entity: PlatformEntity | None = None) -> Decimal | str:
    if name == "status":
        return _status(raw, field=field)
    return _money(raw, field=field, currency=currency, entity=entity)


def _check_entity_type(entity: PlatformEntity, name: str, *, field: str) -> None:
    """The field can be set on this entity: its type takes it, and for a bid, its bidding
    strategy uses bids (``platforms.bidding``)."""
    if name == "bid":
        subject = f"{entity.entity_type.replace('_', ' ')} {entity.external_id}"
        refusal = bid_change_refusal(entity.connection.platform, entity.bid_strategy or None, subject=subject)
        if refusal:
            raise _Refused(field, "bid_ignored", refusal)
    allowed = FIELD_ENTITY_TYPES[name]
    if entity.entity_type not in allowed:
        kinds = " and ".join(sorted(str(t).replace("_", " ") + "s" for t in allowed))
        raise _Refused(
            field,
            "not_supported",
            f"{name} can be set on {kinds} only, not on the {entity.entity_type.replace('_', ' ')} "
            f"{entity.external_id}.",
        )


def _platform(raw: Any, *, field: str) -> str:
    if raw in Platform.values:
        return str(raw)
    raise _Refused(
        field, "unsupported_platform", f"platform {raw!r} is not supported; use one of {', '.join(Platform.values)}."
    )


# Entity resolution -------------------------------------------------------------------------


def _resolve(tenant: Tenant, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[PlatformEntity]]:
    """Mirror entities of ``tenant`` by (platform, external id): one query per
    ``RESOLVE_BATCH`` ids (databases cap the parameters of one statement)."""
    pairs = sorted(set(keys))
    found: dict[tuple[str, str], list[PlatformEntity]] = {}
    for start in range(0, len(pairs), RESOLVE_BATCH):
        wanted: dict[str, list[str]] = {}
        for platform, external_id in pairs[start : start + RESOLVE_BATCH]:
            wanted.setdefault(platform, []).append(external_id)
        condition = Q()
        for platform, ids in wanted.items():
            condition |= Q(connection__platform=platform, external_id__in=ids)
        rows = PlatformEntity.objects.filter(condition, tenant=tenant).select_related("connection", "parent")
        for entity in rows.order_by("pk"):
            found.setdefault((entity.connection.platform, entity.external_id), []).append(entity)
    return found


def _pick(
    candidates: list[PlatformEntity], *, platform: str, external_id: str, entity_type: str | None, field: str
) -> PlatformEntity:
    """The one entity a (platform, external id[, type]) names, or a refusal."""
    matches = [e for e in candidates if entity_type is None or e.entity_type == entity_type]
    if not matches:
        kind = f"{entity_type.replace('_', ' ')} " if entity_type else "entity "
        raise _Refused(field, "unknown_entity", f"{platform} {kind}{external_id} does not exist in your tenant.")
    if len(matches) > 1:
        where = ", ".join(f"{e.entity_type} on connection {e.connection.name!r}" for e in matches)
        raise _Refused(
            field,
            "ambiguous_entity",
            f"{platform} {external_id} matches {len(matches)} entities in your tenant ({where}); "
            "give the entity_type or import per connection.",
        )
    return matches[0]


# The proposed push bundle ---------------------------------------------------------------


def load_bundle(data: bytes | str | dict) -> dict[str, Any]:
    """The bundle as a dict with exact decimals, or ``ValidationFailed`` (size, encoding, JSON).

    Bytes may carry a UTF-8 byte-order mark; numbers become ``Decimal`` (never float),
    and ``NaN``/``Infinity`` are kept as non-finite decimals so the field that holds
    them is named in the refusal. A bundle nested deeper than ``JSON_MAX_DEPTH``, or with
    a NUL or lone surrogate in any key or string, is refused naming where.
    """
    if isinstance(data, dict):
        document = data
        _check_loaded(document)
        check_size(len(json.dumps(data, default=str).encode()), what="The bundle")
    else:
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
        check_size(len(raw), what="The bundle")
        document = _parse_json(_decode(raw, what="The bundle"))
    if not isinstance(document, dict) or not isinstance(document.get("entities"), list):
        error = RowError(
            {},
            "entities",
            "malformed",
            'The bundle must be a JSON object with an "entities" list (the proposed push bundle shape).',
        )
        raise refuse([error], what="The bundle")
    return document


def _parse_json(text: str) -> Any:
    try:
        return load_json(text, what="The bundle", parse_float=Decimal, parse_constant=Decimal)
    except BadInput as exc:
        raise refuse([_bad_input_row(exc)], what="The bundle") from None


def _bad_input_row(exc: BadInput) -> RowError:
    return RowError(exc.where, "file" if exc.field == "body" else exc.field, exc.code, exc.message)


def _check_loaded(document: Any) -> None:
    try:
        check_document(document, what="The bundle")
    except BadInput as exc:
        raise refuse([_bad_input_row(exc)], what="The bundle") from None


def _decode(raw: bytes, *, what: str) -> str:
    """UTF-8 text (a BOM is dropped; UTF-16 with a BOM is accepted) or a refusal."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        error = RowError(
            {"byte": exc.start},
            "file",
            "encoding",
            f"{what} is not UTF-8 text (invalid byte at position {exc.start}). Save it as UTF-8 and import again.",
        )
        raise refuse([error], what=what) from None


def parse_bundle(*, tenant: Tenant, data: bytes | str | dict) -> tuple[str, list[TargetItem]]:
    """The plan id and the items of a proposed push bundle, or ``ValidationFailed`` naming
    each refused value by entity index, external id and field path.

    Targets come from ``sections.spend`` (daily_budget, lifetime_budget, bid_amount -> bid)
    and ``sections.delivery.status``. An entity's top-level ``status`` describes it and is
    not a target, except that a removal status is refused. Money units must be the
    connection's currency. Entities resolve by (tenant, platform, external id, type) in
    one query per 5,000 entities. Nothing is written.
    """
    document = load_bundle(data)
    return bundle_items(tenant=tenant, document=document)


def bundle_items(*, tenant: Tenant, document: dict[str, Any]) -> tuple[str, list[TargetItem]]:
    """``parse_bundle`` for an already loaded bundle document."""
    plan_id = document.get("plan_id") or ""
    errors: list[RowError] = []
    if not isinstance(plan_id, str) or len(plan_id) > 200:
        errors.append(RowError({}, "plan_id", "invalid", "plan_id must be a string of at most 200 characters."))
        plan_id = ""
    notes = document.get("notes")
    if isinstance(notes, str) and len(notes) > NOTES_MAX_LENGTH:
        message = f"notes is {len(notes)} characters long; the limit is {NOTES_MAX_LENGTH}."
        errors.append(RowError({}, "notes", "too_long", message))
    rows = document["entities"]
    if not rows:
        errors.append(RowError({}, "entities", "empty", "The bundle has no entities; there is nothing to import."))
    headers: list[tuple[int, dict[str, Any], str, str, str | None]] = []
    for index, row in enumerate(rows):
        try:
            headers.append((index, row, *_bundle_header(row)))
        except _Refused as exc:
            errors.append(_bundle_error(index, row, exc))
    entities = _resolve(tenant, ((platform, external_id) for _, _, platform, external_id, _ in headers))
    items: list[TargetItem] = []
    first_seen: dict[int, int] = {}
    for index, row, platform, external_id, entity_type in headers:
        try:
            entity = _pick(
                entities.get((platform, external_id), []),
                platform=platform,
                external_id=external_id,
                entity_type=entity_type,
                field="entity_id",
            )
            if entity.pk in first_seen:
                raise _Refused(
                    "entity_id",
                    "duplicate",
                    f"{platform} {external_id} is already listed at entities[{first_seen[entity.pk]}]; "
                    "list each entity once.",
                )
            first_seen[entity.pk] = index
            items.append(TargetItem(entity=entity, targets=_bundle_targets(row, entity)))
        except _Refused as exc:
            errors.append(_bundle_error(index, row, exc))
        except _RowErrors as exc:
            errors.extend(_bundle_error(index, row, e) for e in exc.errors)
    if errors:
        raise refuse(errors, what="The bundle")
    return plan_id, items


class _RowErrors(Exception):
    def __init__(self, errors: list[_Refused]) -> None:
        super().__init__(errors[0].message)
        self.errors = errors


def _bundle_error(index: int, row: Any, exc: _Refused) -> RowError:
    external_id = row.get("entity_id") if isinstance(row, dict) else None
    label = f"entities[{index}]" + (f" ({external_id})" if external_id not in (None, "") else "")
    where = {"index": index}
    if external_id not in (None, ""):
        where["entity_id"] = str(external_id)
    return RowError(where, exc.field, exc.code, f"{label}, {exc.field}: {exc.message}")


def _bundle_header(row: Any) -> tuple[str, str, str | None]:
    """(platform, external id, entity type) of one bundle entity."""
    if not isinstance(row, dict):
        raise _Refused("entity", "malformed", "each entity must be a JSON object.")
    metadata = row.get("metadata")
    platform = _platform(metadata.get("platform") if isinstance(metadata, dict) else None, field="metadata.platform")
    external_id = row.get("entity_id")
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)
    if not isinstance(external_id, str) or not external_id.strip():
        raise _Refused("entity_id", "required", "entity_id (the platform's id of the entity) is required.")
    entity_type = row.get("entity_type")
    if entity_type is not None and entity_type not in EntityType._value2member_map_:
        raise _Refused(
            "entity_type",
            "invalid",
            f"entity_type must be one of {', '.join(t.value for t in EntityType)}; got {entity_type!r}.",
        )
    if row.get("status") is not None:
        _status(row["status"])
    return platform, external_id.strip(), entity_type


def _bundle_targets(row: dict[str, Any], entity: PlatformEntity) -> dict[str, Decimal | str]:
    sections = row.get("sections")
    if not isinstance(sections, dict):
        raise _Refused("sections", "malformed", "sections must be an object with spend and/or delivery fields.")
    targets: dict[str, Decimal | str] = {}
    problems: list[_Refused] = []
    for section, fields in sections.items():
        if fields is None:
            continue
        if not isinstance(fields, dict):
            problems.append(_Refused(f"sections.{section}", "malformed", "must be an object of fields."))
            continue
        for key, spec in fields.items():
            try:
                name, value = _bundle_field(section, key, spec, entity)
                if name in targets:
                    raise _Refused(f"sections.{section}.{key}", "duplicate", f"sets {name} a second time.")
                targets[name] = value
            except _Refused as exc:
                problems.append(exc)
    if problems:
        raise _RowErrors(problems)
    if not targets:
        raise _Refused(
            "sections",
            "empty",
            f"sets nothing; give at least one of {KNOWN_FIELDS_TEXT} "
            "(spend: daily_budget, lifetime_budget, bid_amount; delivery: status).",
        )
    return targets


def _bundle_field(section: str, key: str, spec: Any, entity: PlatformEntity) -> tuple[str, Decimal | str]:
    path = f"sections.{section}.{key}"
    name = FIELD_ALIASES.get(key)
    if name is None or SECTION_OF[name] != section:
        raise _Refused(
            path,
            "unknown_field",
            "unknown field; BudgetRadar changes spend.daily_budget, spend.lifetime_budget, spend.bid_amount "
            "and delivery.status only.",
        )
    if not isinstance(spec, dict) or "value" not in spec:
        raise _Refused(path, "malformed", 'must be an object with a "value".')
    _check_entity_type(entity, name, field=path)
    currency = entity.connection.currency
    unit = spec.get("unit")
    if name in MONEY_FIELDS and unit not in (None, "") and str(unit).upper() != currency:
        raise _Refused(
            f"{path}.unit",
            "wrong_currency",
            f"the amount is in {unit} but the account of {entity.external_id} is in {currency}; "
            f"convert it to {currency}.",
        )
    return name, _value(name, spec["value"], currency=currency, field=f"{path}.value", entity=entity)


# CSV -----------------------------------------------------------------------------------------


def parse_csv(*, tenant: Tenant, data: bytes | str) -> list[TargetItem]:
    """Items of a CSV with columns platform, entity_id, field, value (one field per row;
    rows of the same entity merge into one item), or ``ValidationFailed`` naming each
    refused value by line number and field.

    A UTF-8 BOM, CRLF line ends and ``;`` or tab delimiters are accepted; an optional
    ``entity_type`` column disambiguates an id used by two entity types. Unknown,
    repeated and unnamed columns are refused by name, and so is a NUL character (with
    its line). Entities resolve in one query per 5,000. Nothing is written.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    check_size(len(raw), what="The CSV")
    text = _decode(raw, what="The CSV")
    nul_line = _nul_line(text)
    if nul_line is not None:
        message = f"Line {nul_line} contains a NUL character (\\u0000); save the file as plain UTF-8 text."
        raise refuse([RowError({"line": nul_line}, "file", "nul_character", message)], what="The CSV")
    rows, errors = _csv_rows(text)
    entities = _resolve(tenant, ((r.platform, r.external_id) for r in rows))
    merged: dict[int, dict[str, Decimal | str]] = {}
    by_pk: dict[int, PlatformEntity] = {}
    set_at: dict[tuple[int, str], int] = {}
    for row in rows:
        try:
            entity = _pick(
                entities.get((row.platform, row.external_id), []),
                platform=row.platform,
                external_id=row.external_id,
                entity_type=row.entity_type,
                field="entity_id",
            )
            name = FIELD_ALIASES[row.field]
            earlier = set_at.get((entity.pk, name))
            if earlier is not None:
                raise _Refused(
                    name, "duplicate", f"{name} of {row.external_id} is already set on line {earlier}; set it once."
                )
            _check_entity_type(entity, name, field=name)
            value = _value(name, row.value, currency=entity.connection.currency, field=name, entity=entity)
        except _Refused as exc:
            errors.append(_csv_error(row.line, row.external_id, exc))
            continue
        set_at[(entity.pk, name)] = row.line
        by_pk[entity.pk] = entity
        merged.setdefault(entity.pk, {})[name] = value
    if errors:
        raise refuse(sorted(errors, key=lambda e: e.row.get("line", 0)), what="The CSV")
    return [TargetItem(entity=by_pk[pk], targets=targets) for pk, targets in merged.items()]


@dataclass(frozen=True)
class _CsvRow:
    line: int
    platform: str
    external_id: str
    entity_type: str | None
    field: str
    value: str


def _csv_error(line: int, external_id: str | None, exc: _Refused) -> RowError:
    where: dict[str, Any] = {"line": line}
    label = f"Line {line}"
    if external_id:
        where["entity_id"] = external_id
        label += f" ({external_id})"
    return RowError(where, exc.field, exc.code, f"{label}, {exc.field}: {exc.message}")


def _csv_rows(text: str) -> tuple[list[_CsvRow], list[RowError]]:
    """Well-formed rows and the errors of the others; a bad header refuses at once."""
    first_line = text.split("\n", 1)[0]
    delimiter = max([",", ";", "\t"], key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records = _csv_records(reader)
    try:
        line, header = next(records)
    except StopIteration:
        empty = RowError({"line": 1}, "file", "empty", "The CSV is empty; expected a header row.")
        raise refuse([empty], what="The CSV") from None
    columns = [c.strip().lower() for c in header]
    _check_header(line, columns)
    position = {name: columns.index(name) for name in (*CSV_COLUMNS, *CSV_OPTIONAL_COLUMNS) if name in columns}
    rows: list[_CsvRow] = []
    errors: list[RowError] = []
    for line, cells in records:
        if isinstance(cells, _Refused):
            errors.append(_csv_error(line, None, cells))
            continue
        try:
            rows.append(_csv_row(line, cells, position))
        except _Refused as exc:
            external_id = cells[position["entity_id"]].strip() if len(cells) > position["entity_id"] else None
            errors.append(_csv_error(line, external_id, exc))
    if not rows and not errors:
        errors.append(RowError({"line": line + 1}, "file", "empty", "The CSV has a header but no rows to import."))
    return rows, errors


def _check_header(line: int, columns: list[str]) -> None:
    """Refuse a header that lacks a column, repeats one or has one we do not read
    (silently dropping a column would drop what the file meant to say)."""
    missing = [c for c in CSV_COLUMNS if c not in columns]
    if missing:
        error = RowError(
            {"line": line},
            missing[0],
            "missing_column",
            f"Line {line}: the header lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
            f"expected {','.join(CSV_COLUMNS)} (in any order).",
        )
        raise refuse([error], what="The CSV")
    errors = []
    for name in sorted({c for c in columns if c not in CSV_OPTIONAL_COLUMNS and c not in CSV_COLUMNS}):
        shown = repr(name) if name else "an unnamed column (a trailing delimiter?)"
        errors.append(
            RowError(
                {"line": line},
                name or "(unnamed)",
                "unknown_column",
                f"Line {line}: the header has the unknown column {shown}; the columns are "
                f"{','.join(CSV_COLUMNS)} and optionally {','.join(CSV_OPTIONAL_COLUMNS)}. Remove it.",
            )
        )
    for name in sorted({c for c in columns if columns.count(c) > 1 and c}):
        errors.append(
            RowError(
                {"line": line},
                name,
                "duplicate_column",
                f"Line {line}: the header names the column {name!r} more than once.",
            )
        )
    if errors:
        raise refuse(errors, what="The CSV")


def _nul_line(text: str) -> int | None:
    index = text.find("\x00")
    return None if index < 0 else text.count("\n", 0, index) + 1


def _csv_records(reader) -> Iterator[tuple[int, list[str] | _Refused]]:
    """(line number, cells) of non-blank records; a broken record yields a refusal."""
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, _Refused("file", "malformed", f"this line is not valid CSV ({exc}).")
            return
        if any(cell.strip() for cell in cells):
            yield start, cells


def _csv_row(line: int, cells: list[str], position: dict[str, int]) -> _CsvRow:
    needed = max(position.values()) + 1
    if len(cells) < needed:
        raise _Refused("file", "malformed", f"has {len(cells)} cells; expected at least {needed}.")
    value = {name: cells[index].strip() for name, index in position.items()}
    platform = _platform(value["platform"], field="platform")
    if not value["entity_id"]:
        raise _Refused("entity_id", "required", "entity_id is empty.")
    entity_type = value.get("entity_type") or None
    if entity_type is not None and entity_type not in EntityType._value2member_map_:
        raise _Refused(
            "entity_type", "invalid", f"entity_type must be one of {', '.join(t.value for t in EntityType)}."
        )
    field = value["field"].lower()
    if field not in FIELD_ALIASES:
        raise _Refused(
            value["field"] or "field", "unknown_field", f"unknown field {value['field']!r}; use {KNOWN_FIELDS_TEXT}."
        )
    return _CsvRow(line, platform, value["entity_id"], entity_type, field, value["value"])


# API and admin item lists --------------------------------------------------------------------


def parse_item_list(*, tenant: Tenant, items: list[dict[str, Any]]) -> list[TargetItem]:
    """Items like ``{"entity": 17, "daily_budget": "120.00", "status": "paused"}`` (entity
    is a mirror id from /api/entities/; null or "" leaves a field as it is), or
    ``ValidationFailed`` naming each refused value by item index and field.
    Entities resolve in one query per 5,000. Nothing is written.
    """
    if not isinstance(items, list):
        raise refuse([RowError({}, "items", "malformed", "items must be a list of objects.")], what="The items")
    raw_ids = [item.get("entity") for item in items if isinstance(item, dict)]
    pks = sorted({int(i) for i in raw_ids if _is_id(i)})
    by_pk: dict[int, PlatformEntity] = {}
    for start in range(0, len(pks), RESOLVE_BATCH):
        batch = pks[start : start + RESOLVE_BATCH]
        entities = PlatformEntity.objects.filter(tenant=tenant, pk__in=batch).select_related("connection", "parent")
        by_pk.update((e.pk, e) for e in entities)
    result: list[TargetItem] = []
    errors: list[RowError] = []
    first_seen: dict[int, int] = {}
    for index, item in enumerate(items):
        try:
            entity = _item_entity(item, by_pk, first_seen)
            first_seen[entity.pk] = index
            result.append(TargetItem(entity=entity, targets=_item_targets(item, entity)))
        except _Refused as exc:
            errors.append(_item_error(index, item, exc))
        except _RowErrors as exc:
            errors.extend(_item_error(index, item, e) for e in exc.errors)
    if errors:
        raise refuse(errors, what="The items")
    return result


def _item_error(index: int, item: Any, exc: _Refused) -> RowError:
    where: dict[str, Any] = {"index": index}
    if isinstance(item, dict) and item.get("entity") not in (None, ""):
        where["entity"] = item["entity"]
    return RowError(where, exc.field, exc.code, f"Item {index}, {exc.field}: {exc.message}")


def _is_id(raw: Any) -> bool:
    return (isinstance(raw, int) and not isinstance(raw, bool)) or (isinstance(raw, str) and raw.isdigit())


def _item_entity(item: Any, by_pk: dict[int, PlatformEntity], first_seen: dict[int, int]) -> PlatformEntity:
    if not isinstance(item, dict):
        raise _Refused("item", "malformed", "each item must be an object.")
    raw = item.get("entity")
    if raw is None or raw == "":
        raise _Refused("entity", "required", "entity (an id from /api/entities/) is required.")
    if not _is_id(raw):
        raise _Refused("entity", "invalid", f"entity must be an entity id from /api/entities/; got {raw!r}.")
    entity = by_pk.get(int(raw))
    if entity is None:
        raise _Refused("entity", "unknown_entity", f"Entity {raw} does not exist in your tenant.")
    if entity.pk in first_seen:
        raise _Refused(
            "entity", "duplicate", f"entity {raw} is already listed as item {first_seen[entity.pk]}; list it once."
        )
    return entity


def _item_targets(item: dict[str, Any], entity: PlatformEntity) -> dict[str, Decimal | str]:
    problems: list[_Refused] = []
    targets: dict[str, Decimal | str] = {}
    for key, raw in item.items():
        if key in ("entity", "id"):
            continue
        if key not in TARGET_FIELDS:
            problems.append(
                _Refused(key, "unknown_field", "unknown field; use daily_budget, lifetime_budget, status and bid.")
            )
            continue
        if raw is None or raw == "":
            continue
        try:
            _check_entity_type(entity, key, field=key)
            targets[key] = _value(key, raw, currency=entity.connection.currency, field=key, entity=entity)
        except _Refused as exc:
            problems.append(exc)
    if problems:
        raise _RowErrors(problems)
    if not targets:
        raise _Refused("entity", "empty", "the item sets nothing; give daily_budget, lifetime_budget, status or bid.")
    return targets


# Writes ------------------------------------------------------------------------------------------


def _clean_notes(notes: Any) -> str:
    """Notes as stored: text without NUL or lone surrogates, at most ``NOTES_MAX_LENGTH``."""
    try:
        return check_text(notes if isinstance(notes, str) else "", field="notes", max_length=NOTES_MAX_LENGTH)
    except BadInput as exc:
        raise ValidationFailed(f"The scenario's {exc.message}", details=[exc.as_dict()]) from None


def _clean_name(name: Any) -> str:
    text = name.strip() if isinstance(name, str) else ""
    try:
        check_text(text, field="name")
    except BadInput as exc:
        raise ValidationFailed(f"The scenario's {exc.message}", details=[exc.as_dict()]) from None
    if not text:
        raise ValidationFailed(
            "A scenario needs a name.",
            details=[{"field": "name", "code": "required", "message": "A scenario needs a name."}],
        )
    if len(text) > 200:
        message = "The scenario name is longer than 200 characters."
        raise ValidationFailed(message, details=[{"field": "name", "code": "too_long", "message": message}])
    return text


def _check_items(tenant: Tenant, items: list[TargetItem]) -> None:
    """Items built elsewhere must still belong to the tenant and name each entity once."""
    errors: list[RowError] = []
    seen: set[int] = set()
    for index, item in enumerate(items):
        if item.entity.tenant_id != tenant.pk:
            errors.append(
                RowError(
                    {"index": index},
                    "entity",
                    "unknown_entity",
                    f"Item {index}: Entity {item.entity.pk} does not exist in your tenant.",
                )
            )
        elif item.entity.pk in seen:
            errors.append(
                RowError({"index": index}, "entity", "duplicate", f"Item {index}: entity {item.entity.pk} is repeated.")
            )
        unknown = sorted(set(item.targets) - set(TARGET_FIELDS))
        if unknown:
            errors.append(
                RowError({"index": index}, unknown[0], "unknown_field", f"Item {index}: unknown field {unknown[0]}.")
            )
        seen.add(item.entity.pk)
    if errors:
        raise refuse(errors, what="The items")


def _item_rows(scenario: Scenario, items: list[TargetItem]) -> list[ScenarioItem]:
    return [
        ScenarioItem(
            scenario=scenario,
            entity=item.entity,
            daily_budget=item.targets.get("daily_budget"),
            lifetime_budget=item.targets.get("lifetime_budget"),
            status=item.targets.get("status", ""),
            bid=item.targets.get("bid"),
        )
        for item in items
    ]


def scenario_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    items: list[TargetItem],
    notes: str = "",
    source_plan_id: str = "",
    reason: str = "",
) -> Scenario:
    """Create a draft scenario with ``items``, all or nothing.

    Guarantees: the actor needs ``scenarios.add_scenario`` (a None actor is the system);
    items must be the tenant's entities, each once; the scenario and its items commit
    together with a history row carrying the actor and ``reason``.
    """
    if actor is not None:
        require_perm(actor, "scenarios.add_scenario", doing="create scenarios")
    clean = _clean_name(name)
    clean_notes = _clean_notes(notes)
    _check_items(tenant, items)
    author = actor if getattr(actor, "is_authenticated", False) else None
    scenario = Scenario(
        tenant=tenant,
        name=clean,
        notes=clean_notes,
        source_plan_id=(source_plan_id or "")[:200],
        created_by=author,
        changed_by=author,
    )
    with transaction.atomic():
        audited_save(scenario, actor=actor, reason=reason or f"created with {len(items)} item(s)")
        ScenarioItem.objects.bulk_create(_item_rows(scenario, items))
    return scenario


def scenario_update(
    *,
    scenario: Scenario,
    actor,
    name: str | None = None,
    notes: str | None = None,
    items: list[TargetItem] | None = None,
    reason: str = "",
) -> Scenario:
    """Change a scenario's name, notes and/or items (given items replace all of them).

    Guarantees: the actor needs ``scenarios.change_scenario``; an archived scenario is
    refused (``InvalidState``); the change commits whole, under a row lock so two
    concurrent replacements cannot interleave, bumps ``updated_at`` (older preflights
    are then visibly older than the plan), records the actor as ``changed_by`` when
    anything changed (four-eyes) and writes a history row with actor and reason.
    """
    if actor is not None:
        require_perm(actor, "scenarios.change_scenario", doing="change scenarios")
    changed: list[str] = []
    clean_name = _clean_name(name) if name is not None else None
    notes = _clean_notes(notes) if notes is not None else None
    if items is not None:
        _check_items(scenario.tenant, items)
    with transaction.atomic():
        locked = Scenario.objects.select_for_update().get(pk=scenario.pk)
        if locked.status == Scenario.Status.ARCHIVED:
            raise InvalidState(f"Scenario {locked.name!r} is archived; copy it into a new scenario to change it.")
        if clean_name is not None and clean_name != locked.name:
            locked.name = clean_name
            changed.append("name")
        if notes is not None and notes != locked.notes:
            locked.notes = notes
            changed.append("notes")
        if items is not None:
            locked.items.all().delete()
            ScenarioItem.objects.bulk_create(_item_rows(locked, items))
            changed.append(f"items ({len(items)})")
        if changed:  # four-eyes: whoever last changed the plan cannot alone deploy it
            locked.changed_by = actor if getattr(actor, "is_authenticated", False) else None
        audited_save(locked, actor=actor, reason=reason or f"changed {', '.join(changed) or 'nothing'}")
    for field in ("name", "notes", "updated_at", "changed_by"):
        setattr(scenario, field, getattr(locked, field))
    return scenario


def scenario_import(
    *,
    tenant: Tenant,
    actor,
    name: str = "",
    data: bytes | str | dict,
    format: ImportFormat,
    notes: str = "",
) -> Scenario:
    """Create a scenario from a proposed push bundle or a CSV, all or nothing.

    Guarantees: the permission is checked before the input is read; any refused value
    refuses the whole input (``ValidationFailed`` with row errors) and writes nothing;
    a bundle's ``plan_id`` becomes the scenario's source plan id and, without a ``name``,
    its name (a bundle's own ``name`` and ``notes`` are used when given).
    """
    if actor is not None:
        require_perm(actor, "scenarios.add_scenario", doing="import scenarios")
    if format == "bundle":
        document = load_bundle(data)
        plan_id, items = bundle_items(tenant=tenant, document=document)
        bundle_name = document.get("name") if isinstance(document.get("name"), str) else ""
        bundle_notes = document.get("notes") if isinstance(document.get("notes"), str) else ""
        return scenario_create(
            tenant=tenant,
            actor=actor,
            name=name or bundle_name or plan_id or "Imported plan",
            items=items,
            notes=notes or bundle_notes,
            source_plan_id=plan_id,
            reason=f"imported from bundle {plan_id or '(no plan id)'} with {len(items)} item(s)",
        )
    if format == "csv":
        if isinstance(data, dict):
            raise refuse([RowError({}, "file", "malformed", "A CSV import needs the file's text.")], what="The CSV")
        items = parse_csv(tenant=tenant, data=data)
        return scenario_create(
            tenant=tenant,
            actor=actor,
            name=name or "CSV import",
            items=items,
            notes=notes,
            reason=f"imported from CSV with {len(items)} item(s)",
        )
    message = f"format must be bundle or csv; got {format!r}."
    raise ValidationFailed(message, details=[{"field": "format", "code": "invalid", "message": message}])
