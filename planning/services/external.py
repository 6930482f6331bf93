"""External plans: the planner's shape from outside (API items, a push bundle, MMM allocators).

Every importer returns the same normalised proposals, ``[{"entity_id", "daily_budget",
"reason"}]`` for one connection, validated completely before anything is written
(``ValidationFailed`` naming the field, row and entity). A run then takes them through
the same modes and the same gate as the planner's own plan (``plan_external``).

- ``items``: ``[{"entity": id, "daily_budget": "120.00", "reason": "..."}]``.
- ``bundle``: the proposed push bundle (``scenarios.services.imports``); only daily
  budgets of this connection's entities are taken.
- ``robyn``: Robyn's allocator export (``<solID>_reallocated.csv``, written by
  ``robyn_allocator(export = TRUE)`` from ``dt_optimOut``): columns ``channels``,
  ``optmSpendUnit`` (optimised mean spend per model time unit) and ``periods`` (e.g.
  "8 weeks"); the unit (day, week, month) gives the days per unit, so the daily spend is
  ``optmSpendUnit / days``.
- ``meridian``: Meridian's optimized spend table (``OptimizationResults.optimized_data``
  exported with ``to_dataframe()``): columns ``channel`` and ``spend``, the spend over the
  optimisation period; the period's length in days comes from ``start_date``/``end_date``
  columns (end = the start of the last time period, plus ``interval_days``, 7 by
  default, as Meridian's own summary counts it) or the ``days`` argument.

MMM outputs are per channel: ``mapping`` names each channel's entities (entity ids or
external ids) and the channel's daily amount is split over them in proportion to their
current daily budgets (equally when those are zero), rounded to the currency.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from budgetradar.errors import ValidationFailed
from platforms.models import PlatformConnection, PlatformEntity
from platforms.money import currency_exponent
from scenarios.services.imports import bundle_items, load_bundle

SOURCES = ("items", "bundle", "robyn", "meridian")
DAYS_PER_UNIT = {"day": Decimal(1), "week": Decimal(7), "month": Decimal("30.4375")}
MAX_ROWS = 50000


def _refuse(message: str, field: str, **context: Any) -> ValidationFailed:
    return ValidationFailed(message, details=[{"field": field, "message": message, **context}])


def _money(raw: Any, *, field: str, currency: str, **context: Any) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float, Decimal)):
        raise _refuse(f'{field} must be a decimal amount, e.g. "120.00".', field, **context)
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise _refuse(f"{field} {raw!r} is not a number.", field, **context) from None
    if not value.is_finite() or value <= 0 or value >= Decimal("1e12"):
        raise _refuse(f"{field} must be a positive amount below 10^12; got {raw!r}.", field, **context)
    return value.quantize(Decimal(1).scaleb(-currency_exponent(currency)), rounding=ROUND_DOWN)


def _entities(connection: PlatformConnection) -> tuple[dict[int, PlatformEntity], dict[str, PlatformEntity]]:
    rows = list(PlatformEntity.objects.filter(connection=connection).select_related("connection"))
    return {e.pk: e for e in rows}, {e.external_id: e for e in rows}


def _budgeted(entity: PlatformEntity, *, field: str, **context: Any) -> PlatformEntity:
    if entity.daily_budget is None:
        raise _refuse(
            f"{entity.name} ({entity.external_id}) has no daily budget of its own; plan the entity that holds it.",
            field,
            entity=entity.pk,
            **context,
        )
    return entity


def from_items(*, connection: PlatformConnection, items: Any) -> list[dict[str, str]]:
    if not isinstance(items, list) or not items:
        raise _refuse("items must be a non-empty list of {entity, daily_budget, reason}.", "items")
    by_pk, _ = _entities(connection)
    seen: set[int] = set()
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _refuse("Each item must be an object.", f"items[{index}]", index=index)
        unknown = sorted(set(item) - {"entity", "daily_budget", "reason"})
        if unknown:
            raise _refuse(f"Unknown field(s) {', '.join(unknown)}.", f"items[{index}]", index=index)
        pk = item.get("entity")
        entity = by_pk.get(pk) if isinstance(pk, int) and not isinstance(pk, bool) else None
        if entity is None:
            raise _refuse(f"No entity {pk!r} on connection {connection.name}.", f"items[{index}].entity", index=index)
        if entity.pk in seen:
            raise _refuse(f"Entity {entity.pk} appears twice.", f"items[{index}].entity", index=index, entity=entity.pk)
        seen.add(entity.pk)
        _budgeted(entity, field=f"items[{index}].entity", index=index)
        budget = _money(
            item.get("daily_budget"),
            field=f"items[{index}].daily_budget",
            currency=connection.currency,
            index=index,
            entity=entity.pk,
        )
        reason = item.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 500:
            raise _refuse("reason must be text of at most 500 characters.", f"items[{index}].reason", index=index)
        out.append({"entity_id": entity.pk, "daily_budget": str(budget), "reason": reason})
    return out


def from_bundle(*, connection: PlatformConnection, data: Any) -> list[dict[str, str]]:
    document = load_bundle(data)
    plan_id, items = bundle_items(tenant=connection.tenant, document=document)
    out = []
    for index, item in enumerate(items):
        if item.entity.connection_id != connection.pk:
            raise _refuse(
                f"{item.entity.name} belongs to another connection than {connection.name}.",
                "entities",
                index=index,
                entity=item.entity.pk,
            )
        if "daily_budget" in item.targets:
            out.append(
                {
                    "entity_id": item.entity.pk,
                    "daily_budget": str(item.targets["daily_budget"]),
                    "reason": f"bundle {plan_id}" if plan_id else "bundle",
                }
            )
    if not out:
        raise _refuse("The bundle sets no daily budget of this connection's entities.", "entities")
    return out


def _rows(data: bytes | str, required: tuple[str, ...], what: str) -> list[dict[str, str]]:
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in required if c not in header]
    if missing:
        raise _refuse(f"The {what} has no column {', '.join(missing)} (found: {', '.join(header) or 'none'}).", "file")
    rows = []
    for row in reader:
        rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items()})
        if len(rows) > MAX_ROWS:
            raise _refuse(f"The {what} has more than {MAX_ROWS} rows.", "file")
    if not rows:
        raise _refuse(f"The {what} has no rows.", "file")
    return rows


def _split(
    connection: PlatformConnection, daily: dict[str, Decimal], mapping: Any, source: str
) -> list[dict[str, str]]:
    if not isinstance(mapping, dict) or not mapping:
        raise _refuse(
            'mapping must name each channel\'s entities: {"channel": [entity ids or external ids]}.', "mapping"
        )
    by_pk, by_external = _entities(connection)
    quantum = Decimal(1).scaleb(-currency_exponent(connection.currency))
    out: dict[int, dict[str, str]] = {}
    for channel, amount in sorted(daily.items()):
        refs = mapping.get(channel)
        if not isinstance(refs, list) or not refs:
            raise _refuse(f"Channel {channel!r} is not in the mapping.", "mapping", channel=channel)
        entities = []
        for ref in refs:
            entity = by_pk.get(ref) if isinstance(ref, int) else by_external.get(str(ref))
            if entity is None:
                raise _refuse(
                    f"Channel {channel!r} maps to {ref!r}, which is not an entity of {connection.name}.",
                    "mapping",
                    channel=channel,
                )
            if entity.pk in out:
                raise _refuse(f"{entity.name} is mapped to two channels.", "mapping", channel=channel, entity=entity.pk)
            entities.append(_budgeted(entity, field="mapping", channel=channel))
        weights = [e.daily_budget for e in entities]
        total_weight = sum(weights, Decimal(0))
        shares = [w / total_weight if total_weight > 0 else Decimal(1) / len(entities) for w in weights]
        parts = [(amount * share).quantize(quantum, rounding=ROUND_DOWN) for share in shares]
        parts[0] += amount.quantize(quantum, rounding=ROUND_DOWN) - sum(parts, Decimal(0))
        for entity, part in zip(entities, parts, strict=True):
            if part <= 0:
                raise _refuse(f"Channel {channel!r} gives {entity.name} no budget.", "mapping", channel=channel)
            out[entity.pk] = {
                "entity_id": entity.pk,
                "daily_budget": str(part),
                "reason": f"{source} channel {channel}",
            }
    return [out[pk] for pk in sorted(out)]


def from_robyn(*, connection: PlatformConnection, data: bytes | str, mapping: Any) -> list[dict[str, str]]:
    rows = _rows(data, ("channels", "optmSpendUnit", "periods"), "Robyn allocator CSV")
    daily: dict[str, Decimal] = {}
    for line, row in enumerate(rows, start=2):
        unit = row["periods"].split()[-1].rstrip("s").lower() if row["periods"].split() else ""
        if unit not in DAYS_PER_UNIT:
            raise _refuse(f"Line {line}: periods {row['periods']!r} names no day, week or month.", "periods", line=line)
        zero = row["optmSpendUnit"] in ("0", "0.0", "0.00")  # a channel the allocator switched off
        spend = (
            Decimal(0)
            if zero
            else _money(row["optmSpendUnit"], field="optmSpendUnit", currency=connection.currency, line=line)
        )
        daily[row["channels"]] = daily.get(row["channels"], Decimal(0)) + spend / DAYS_PER_UNIT[unit]
    return _split(connection, {k: v for k, v in daily.items() if v > 0}, mapping, "Robyn")


def from_meridian(
    *, connection: PlatformConnection, data: bytes | str, mapping: Any, days: int | None = None, interval_days: int = 7
) -> list[dict[str, str]]:
    rows = _rows(data, ("channel", "spend"), "Meridian optimized spend table")
    period = days or _meridian_days(rows, interval_days)
    daily = {}
    for line, row in enumerate(rows, start=2):
        spend = _money(row["spend"], field="spend", currency=connection.currency, line=line)
        daily[row["channel"]] = daily.get(row["channel"], Decimal(0)) + spend / Decimal(period)
    return _split(connection, daily, mapping, "Meridian")


def _meridian_days(rows: list[dict[str, str]], interval_days: int) -> int:
    try:
        start = date.fromisoformat(rows[0]["start_date"])
        end = date.fromisoformat(rows[0]["end_date"])
    except (KeyError, ValueError):
        raise _refuse("Give the optimisation period: start_date and end_date columns, or days.", "days") from None
    length = (end - start).days + interval_days
    if length <= 0:
        raise _refuse(f"The period {start} to {end} is empty.", "days")
    return length


def external_proposals(*, connection: PlatformConnection, source: str, payload: dict[str, Any]) -> list[dict[str, str]]:
    """Dispatch on ``source`` (one of ``SOURCES``)."""
    if source == "items":
        return from_items(connection=connection, items=payload.get("items"))
    if source == "bundle":
        return from_bundle(connection=connection, data=payload.get("bundle"))
    if source in ("robyn", "meridian"):
        data = payload.get("csv")
        if not isinstance(data, str) or not data.strip():
            raise _refuse("csv must hold the file's text.", "csv")
        if source == "robyn":
            return from_robyn(connection=connection, data=data, mapping=payload.get("mapping"))
        days = payload.get("days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3660):
            raise _refuse("days must be a whole number of days between 1 and 3660.", "days")
        return from_meridian(connection=connection, data=data, mapping=payload.get("mapping"), days=days)
    raise _refuse(f"source must be one of {', '.join(SOURCES)}; got {source!r}.", "source")
