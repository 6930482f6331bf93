"""Preflight: the diff between a plan and the live platforms, with guardrails, persisted.

``preflight_run`` reads the live state of exactly the items' entities (one
``read_state`` call per connection; executors batch internally), builds the document of
DESIGN.md section 6, evaluates the guardrails and saves it as a ``PreflightRun``.

Guarantees:
- Nothing changes on any platform; entities that are not in the inputs never appear;
  an item never becomes a create or a delete (out of scope: only ``update``/``noop``).
- The mirror rows of the entities read get their live values and ``synced_at`` in the
  same step as the read (``platforms.mirror``), so a later drift check compares against
  what this preflight saw.
- Deterministic: the same inputs and the same live state give the same document, byte
  for byte with ``json.dumps(payload, sort_keys=True)``, apart from ``run_id`` and
  ``generated_at`` (entities, campaigns, connections and breaches are sorted; money is
  formatted with the currency's exponent; percentages have two decimals, half-even).
- Database work is bounded per batch, never per entity: mirror rows, shared-budget
  campaigns, performance sums, cooldown facts and account totals each take a constant
  number of queries per batch of ``ENTITY_BATCH`` entities.
- Platforms are read outside any transaction. When a read fails (after retries of
  transient errors) the run is saved as failed with the reason and ``PreflightFailed``
  (HTTP 502) is raised.
- Storage is bounded per row: the document's entities are ``PreflightEntity`` rows in
  document order, written in the same transaction as the run's success (a reader sees
  all of them or none); ``payload`` keeps the rest (summary, connections) and a bounded
  list of breaches: every run-level one and the first ``BREACHES_STORED`` of the
  entities', with ``breaches_total`` and the summary's counts by severity and by rule.
  ``preflight_document`` puts the whole document together (every breach),
  ``preflight_breaches`` lists every breach without it, ``preflight_entities_page``
  reads the entities page by page.
- Progress is visible while it reads: ``entities_read`` grows after every batch of
  ``ENTITY_BATCH`` entities, and ``reads_finished_at`` records when the last read
  returned. A preflight's age is counted from there, against the limit of the slowest-
  to-trust platform it covers (``preflight_max_age``, ``PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Sum
from django.utils import timezone

from actions.change_limits import budget_change_allowance
from budgetradar.errors import DomainError, ValidationFailed
from budgetradar.memory import collector_paused
from budgetradar.models import Tenant
from budgetradar.tenancy import require_perm, require_same_tenant
from observability.metrics import preflight_run_record
from platforms.base import chunked
from platforms.change_limits import ChangeAllowance, is_limited
from platforms.mirror import mirror_refresh
from platforms.models import PlatformConnection, PlatformEntity
from platforms.money import quantize
from platforms.quota import QuotaStatus, connection_quota
from platforms.ratelimit import rate_limit_backoff
from platforms.registry import get_executor
from platforms.retry import with_retries
from platforms.types import EntityState, ErrorCode, PlatformCallError
from scenarios.models import GuardrailPolicy, PreflightEntity, PreflightRun
from scenarios.services import guardrails as g
from scenarios.services.forecast import (
    FORECAST_MODEL,
    Curve,
    curve_stats,
    entity_forecast,
    fit_curve,
    forecast_cpa,
    forecast_delta,
    forecast_roas,
    spend_moves,
)
from scenarios.services.items import TARGET_FIELDS, TargetItem, items_of_scenario

logger = logging.getLogger(__name__)

ENTITY_BATCH = 2000
RUN_ID_PREFIX = "pf-"
MONEY_FIELDS = ("daily_budget", "lifetime_budget", "bid")
SECTIONS = ("spend", "delivery", "audience", "creative")
SECTION_FIELDS = {"spend": ("daily_budget", "lifetime_budget", "bid"), "delivery": ("status",)}
LABELS = {"daily_budget": "Daily budget", "lifetime_budget": "Lifetime budget", "bid": "Bid", "status": "Status"}
CHANGE_TYPES = ("create", "update", "delete", "noop")
SPEND_FIELDS = ("daily_budget", "status")  # the fields the forecast models
# Actions that changed the platform: their finish time starts an entity's cooldown.
APPLIED_ACTION_STATUSES = ("succeeded", "partially_executed", "rolling_back", "rolled_back", "rollback_failed")


CONNECTION_FIELD = PlatformEntity._meta.get_field("connection")
PARENT_FIELD = PlatformEntity._meta.get_field("parent")


class PreflightFailed(DomainError):
    """A platform could not be read; the run is saved as failed with the reason."""

    code = "platform_error"
    http_status = 502


def new_run_id() -> str:
    return RUN_ID_PREFIX + uuid.uuid4().hex[:20]


# The stored document ---------------------------------------------------------------------

ENTITY_PAGE_SIZE = 100
ENTITY_PAGE_MAX = 1000


def preflight_entities(run: PreflightRun) -> list[dict[str, Any]]:
    """The document's entities in document order (from a prefetch of ``entity_documents``
    when there is one, else one query)."""
    cached = getattr(run, "_entity_documents", None)
    if cached is not None:
        return cached
    if run.pk is None:
        return []  # an unsaved preview that read nothing (it failed)
    return [row.document for row in run.entity_documents.all()]


BREACHES_STORED = 50  # entity breaches the stored summary keeps (after every run-level one)


def preflight_document(run: PreflightRun) -> dict[str, Any]:
    """The whole document of DESIGN.md section 6 (empty while the run has none), with
    the flat list of every breach put together from the run's and its entities' own."""
    if not run.payload:
        return {}
    entities = preflight_entities(run)
    breaches = _run_level(run.payload) + [b for doc in entities for b in _breaches_of(doc)]
    breaches.sort(key=g.breach_sort_key)
    return {**run.payload, "breaches": breaches, "breaches_total": len(breaches), "entities": entities}


def preflight_breaches(run: PreflightRun, *, severity: str | None = None) -> list[dict[str, Any]]:
    """Every breach of the run (of ``severity`` if given) in the document's order: the
    run-level ones from the summary, the entities' from the rows that have any (the
    summary keeps only the first ``BREACHES_STORED`` of those)."""
    payload = run.payload or {}
    if not payload:
        return []
    stored = payload.get("breaches") or []
    if payload.get("breaches_total", len(stored)) <= len(stored):
        found = list(stored)  # the summary holds them all (small runs, runs stored before the bound)
    else:
        documents = getattr(run, "_entity_documents", None)
        if documents is None:
            documents = (
                run.entity_documents.filter(breaches__gt=0).order_by("position").values_list("document", flat=True)
            )
        found = _run_level(payload) + [b for doc in documents for b in _breaches_of(doc)]
        found.sort(key=g.breach_sort_key)
    return [b for b in found if severity is None or b["severity"] == severity]


def breach_counts(run: PreflightRun) -> tuple[int, int]:
    """(critical, warning) breaches of the whole run: the summary counts every breach,
    while the stored list may hold only the first ``BREACHES_STORED`` entity breaches."""
    payload = run.payload or {}
    counts = (payload.get("summary") or {}).get("breaches")
    if counts is None:
        stored = payload.get("breaches") or []
        counts = {
            severity: sum(1 for b in stored if b.get("severity") == severity) for severity in (g.CRITICAL, g.WARNING)
        }
    return counts.get(g.CRITICAL, 0), counts.get(g.WARNING, 0)


def _run_level(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The breaches of no entity (per connection or plan: a handful, always stored)."""
    return [b for b in payload.get("breaches") or [] if not b.get("key")]


def _bounded(document: dict[str, Any]) -> dict[str, Any]:
    """The document as stored (without entities): every run-level breach and the first
    ``BREACHES_STORED`` entity breaches; ``breaches_total`` counts them all, and the
    summary counts them by severity and by rule."""
    breaches = document["breaches"]
    entity_level = [b for b in breaches if b.get("key")]
    kept = _run_level(document) + entity_level[:BREACHES_STORED]
    kept.sort(key=g.breach_sort_key)
    by_rule: dict[str, dict[str, int]] = {}
    for breach in breaches:
        counts = by_rule.setdefault(breach["code"], {})
        counts[breach["severity"]] = counts.get(breach["severity"], 0) + 1
    summary = {**document["summary"], "breaches_by_rule": dict(sorted(by_rule.items()))}
    return {**document, "summary": summary, "breaches": kept, "breaches_total": len(breaches)}


def preflight_entities_page(
    *, run: PreflightRun, cursor: int = 0, limit: int = ENTITY_PAGE_SIZE
) -> tuple[list[dict[str, Any]], int | None]:
    """Entities from position ``cursor`` on, at most ``limit`` (one indexed range query);
    returns them and the next cursor (None after the last)."""
    limit = max(1, min(limit, ENTITY_PAGE_MAX))
    rows = list(
        PreflightEntity.objects.filter(run=run, position__gte=cursor)
        .order_by("position")
        .values_list("position", "document")[: limit + 1]
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return [doc for _position, doc in rows], (rows[-1][0] + 1 if more else None)


def _entity_row(run: PreflightRun, position: int, doc: dict[str, Any]) -> PreflightEntity:
    found = len(doc.get("breaches", []))
    for changes in doc.get("sections", {}).values():
        found += sum(len(change.get("breaches", [])) for change in changes)
    return PreflightEntity(
        run=run,
        position=position,
        entity_id=doc["entity_id"],
        connection_id=doc["connection_id"],
        change_type=doc["change_type"],
        breaches=found,
        document=doc,
    )


# Freshness -------------------------------------------------------------------------------


def preflight_read_at(run: PreflightRun) -> datetime:
    """When the preflight's platform reads finished (older rows: when it finished or began)."""
    return run.reads_finished_at or run.finished_at or run.created_at


def preflight_platforms(run: PreflightRun) -> list[str]:
    """The platforms of the connections the document covers, sorted."""
    return sorted({c["platform"] for c in (run.payload or {}).get("connections", [])})


def preflight_max_age(run: PreflightRun) -> timedelta:
    """How long a live deploy (or a single action's reuse) may trust ``run``: the smallest
    limit of its platforms in ``PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM`` (a platform not
    listed there, or a document without connections, gets ``PREFLIGHT_MAX_AGE_MINUTES``)."""
    limits = settings.PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM
    platforms = preflight_platforms(run)
    minutes = min((limits.get(p, settings.PREFLIGHT_MAX_AGE_MINUTES) for p in platforms), default=None)
    return timedelta(minutes=minutes if minutes is not None else settings.PREFLIGHT_MAX_AGE_MINUTES)


def preflight_is_fresh(run: PreflightRun, *, now: datetime | None = None) -> bool:
    """Succeeded, and its reads finished at most ``preflight_max_age`` ago."""
    now = now or timezone.now()
    return run.status == PreflightRun.Status.SUCCEEDED and now - preflight_read_at(run) <= preflight_max_age(run)


def preflight_age_rule(run: PreflightRun) -> str:
    """The rule in words: "30 minutes (sandbox)"."""
    minutes = int(preflight_max_age(run).total_seconds() // 60)
    platforms = ", ".join(preflight_platforms(run)) or "no platform"
    return f"{minutes} minutes ({platforms})"


@dataclass
class _Entry:
    """One item during a preflight: the mirror row, the targets and the live state.

    The derived values are cached: they are read many times per entity, and ``live`` is
    set once, before any of them is read.
    """

    entity: PlatformEntity
    targets: dict[str, Any]
    live: EntityState | None = None

    @property
    def connection(self) -> PlatformConnection:
        return self.entity.connection

    @cached_property
    def currency(self) -> str:
        return self.entity.connection.currency

    @cached_property
    def key(self) -> str:
        return f"{self.connection.platform}:{self.entity.entity_type}:{self.entity.external_id}"

    @cached_property
    def sort_key(self) -> tuple:
        return (self.connection.platform, self.entity.entity_type, self.entity.external_id, self.connection.pk)

    @property
    def missing(self) -> bool:
        return self.live is None or self.live.status == "removed"

    @cached_property
    def subject(self) -> str:
        return f"{self.live.name if self.live else self.entity.name} ({self.key})"

    def before(self, field: str) -> Any:
        if self.live is None:
            return None
        return str(self.live.status) if field == "status" else getattr(self.live, field)

    def after(self, field: str) -> Any:
        return self.targets[field] if field in self.targets else self.before(field)

    @cached_property
    def changed_fields(self) -> list[str]:
        return [f for f in TARGET_FIELDS if f in self.targets and self.before(f) != self.targets[f]]

    @cached_property
    def shared_budget_id(self) -> str | None:
        """The shared Google budget this campaign is on (mirror or live says so), if any."""
        shared = self.entity.budget_shared or (self.live is not None and self.live.budget_shared)
        budget_id = self.entity.budget_id or (self.live.budget_id if self.live else None)
        if self.entity.entity_type != "campaign" or not shared or not budget_id:
            return None
        return budget_id


# Entry points --------------------------------------------------------------------------


def preflight_for_scenario(*, scenario, actor, mode: str = "manual", now: datetime | None = None) -> PreflightRun:
    """Preflight of a scenario's items with its plan id and notes."""
    return preflight_run(
        tenant=scenario.tenant,
        items=items_of_scenario(scenario),
        actor=actor,
        mode=mode,
        plan_id=scenario.source_plan_id,
        notes=scenario.notes,
        scenario=scenario,
        now=now,
    )


def preflight_run(
    *,
    tenant: Tenant,
    items: Sequence[TargetItem],
    actor,
    mode: str = "manual",
    plan_id: str = "",
    notes: str = "",
    scenario=None,
    run: PreflightRun | None = None,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PreflightRun:
    """Read, diff, check and persist; return the succeeded run (see the module docstring).

    ``actor`` None means the system (a command or a worker); a user needs the
    ``scenarios.run_preflight`` permission in ``tenant``. Input that cannot be diffed
    (another tenant's or unknown entity, the same entity twice, an unknown field or mode)
    raises ``ValidationFailed`` and saves nothing, except that a given queued ``run`` is
    marked failed. A given ``run`` that already succeeded is returned as it is (a task
    that runs twice does the work once).
    """
    if actor is not None:
        require_same_tenant(actor, tenant, what="tenant")
        require_perm(actor, "scenarios.run_preflight", doing="run preflights")
    if run is not None and run.status == PreflightRun.Status.SUCCEEDED:
        return run
    now = now or timezone.now()
    try:
        _check_mode(mode)
        entries = _load_entries(tenant, items)
    except ValidationFailed as exc:
        if run is not None:
            _fail(run, exc.message)
        raise
    run = _start(tenant, items, actor, mode, plan_id, notes, scenario, run, now)
    try:
        with collector_paused():
            _read_live(entries, sleep, progress=_progress_of(run))
            run.reads_finished_at = timezone.now()
            document = _build_document(
                tenant=tenant, entries=entries, run=run, mode=mode, plan_id=plan_id, notes=notes, now=now
            )
    except PreflightFailed as exc:
        _fail(run, exc.message)
        raise
    except Exception:
        logger.exception("preflight %s stopped on an internal error", run.run_id, extra={"tenant_id": tenant.pk})
        _fail(run, "The preflight stopped on an internal error; see the server log. Nothing was changed.")
        raise
    return _succeed(run, document)


def preflight_each(
    *,
    tenant: Tenant,
    runs: Sequence[tuple[PreflightRun, TargetItem]],
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[PreflightRun]:
    """A one-entity preflight per queued run (a single action's, see ``safety.gate``).

    Each run gets the document of its one item, exactly as ``preflight_run`` would build
    it for that item alone; the platforms are read once per connection for all of them.
    Never raises for a platform or input problem: a run whose item cannot be diffed, or
    whose connection cannot be read, is saved failed with the reason, and the others
    still succeed. Returns the runs in the order given.
    """
    return _each(tenant, runs, now or timezone.now(), sleep, store=True)


def preflight_each_preview(
    *,
    tenant: Tenant,
    runs: Sequence[tuple[PreflightRun, TargetItem]],
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[PreflightRun]:
    """``preflight_each`` for unsaved runs, writing nothing: the platforms are read and
    each run gets its status and document in memory, but no run or entity row is stored
    and the mirror is not refreshed. For pages that show a judgement before a person
    confirms (a GET must not write); ``safety.gate`` judges them as they are."""
    return _each(tenant, runs, now or timezone.now(), sleep, store=False)


def _each(
    tenant: Tenant,
    runs: Sequence[tuple[PreflightRun, TargetItem]],
    now: datetime,
    sleep: Callable[[float], None],
    *,
    store: bool,
) -> list[PreflightRun]:
    entries: dict[int, _Entry] = {}  # by position: unsaved runs have no id
    for index, (run, item) in enumerate(runs):
        try:
            _check_mode(run.mode)
            [entries[index]] = _load_entries(tenant, [item])
        except ValidationFailed as exc:
            _fail(run, exc.message, store=store)
            continue
        _start(tenant, [item], None, run.mode, run.plan_id, run.notes, run.scenario, run, now, store=store)
    try:
        failed = _read_live_each(list(entries.values()), sleep, refresh_mirror=store)
        reads_finished_at = timezone.now()
        with collector_paused():
            for index, (run, _item) in enumerate(runs):
                entry = entries.pop(index, None)
                if entry is None:
                    continue
                if entry.connection.pk in failed:
                    _fail(run, failed[entry.connection.pk], store=store)
                    continue
                run.reads_finished_at = reads_finished_at
                document = _build_document(
                    tenant=tenant,
                    entries=[entry],
                    run=run,
                    mode=run.mode,
                    plan_id=run.plan_id,
                    notes=run.notes,
                    now=now,
                )
                _succeed(run, document, store=store)
    except Exception:
        logger.exception("one-entity preflights stopped on an internal error", extra={"tenant_id": tenant.pk})
        for index, (run, _item) in enumerate(runs):
            if index in entries:
                message = "The preflight stopped on an internal error; see the server log. Nothing was changed."
                _fail(run, message, store=store)
        raise
    return [run for run, _item in runs]


def _succeed(run: PreflightRun, document: dict[str, Any], *, store: bool = True) -> PreflightRun:
    entities = document.pop("entities")
    run.payload = _bounded(document)
    run.has_critical = document["has_critical"]
    run.status = PreflightRun.Status.SUCCEEDED
    run.error_message = ""
    run.finished_at = timezone.now()
    run.entities_read = run.entities_total
    run._entity_documents = entities  # what was just built, for readers in this process
    if not store:
        return run
    rows = [_entity_row(run, position, doc) for position, doc in enumerate(entities)]
    with transaction.atomic():
        PreflightEntity.objects.filter(run=run).delete()  # a claim taken over from a dead worker
        PreflightEntity.objects.bulk_create(rows, batch_size=1000)
        run.save(
            update_fields=[
                "payload",
                "has_critical",
                "status",
                "error_message",
                "finished_at",
                "reads_finished_at",
                "entities_read",
            ]
        )
    preflight_run_record(mode=run.mode, status="succeeded")
    logger.info(
        "preflight %s: %s entities, %s changed, %s breaches",
        run.run_id,
        document["summary"]["entities"],
        document["summary"]["changed"],
        run.payload["breaches_total"],
        extra={"tenant_id": run.tenant_id, "preflight": run.run_id},
    )
    return run


# Steps ---------------------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in PreflightRun.Mode.values:
        raise ValidationFailed(
            f"Unknown preflight mode {mode!r}; expected one of {', '.join(PreflightRun.Mode.values)}.",
            details={"mode": [f"must be one of {', '.join(PreflightRun.Mode.values)}"]},
        )


def _load_entries(tenant: Tenant, items: Sequence[TargetItem]) -> list[_Entry]:
    """The items' mirror rows with their connection and parent.

    Rows the caller loaded with both (``items_of_scenario``, the importers) are used as
    they are; the others are reloaded, one query per batch plus one for their connections
    (whose credentials are decrypted once per connection, not once per row).
    """
    errors: dict[str, list[str]] = {}
    seen: set[int] = set()
    for index, item in enumerate(items):
        unknown = sorted(set(item.targets) - set(TARGET_FIELDS))
        if unknown:
            errors[f"items[{index}]"] = [f"unknown field {unknown[0]!r}; expected {', '.join(TARGET_FIELDS)}"]
        if item.entity.pk in seen:
            errors[f"items[{index}]"] = [f"entity {item.entity.pk} appears more than once"]
        seen.add(item.entity.pk)
    rows = {item.entity.pk: item.entity for item in items if _usable(item.entity, tenant)}
    reloaded: list[PlatformEntity] = []
    for chunk in chunked(sorted(seen - set(rows)), ENTITY_BATCH):
        reloaded.extend(PlatformEntity.objects.filter(tenant=tenant, pk__in=chunk).select_related("parent"))
    if reloaded:
        connections = PlatformConnection.objects.in_bulk({entity.connection_id for entity in reloaded})
        for entity in reloaded:
            entity.connection = connections[entity.connection_id]
            rows[entity.pk] = entity
    for index, item in enumerate(items):
        if item.entity.pk not in rows:
            errors[f"items[{index}]"] = [f"no entity {item.entity.pk} in tenant {tenant.slug}"]
    if errors:
        raise ValidationFailed("The preflight's items cannot be diffed; see errors.", details=errors)
    return [_Entry(entity=rows[item.entity.pk], targets=dict(item.targets)) for item in items]


def _usable(entity: PlatformEntity, tenant: Tenant) -> bool:
    """Loaded with its connection and parent, and the tenant's."""
    if entity.pk is None or entity.tenant_id != tenant.pk or not CONNECTION_FIELD.is_cached(entity):
        return False
    return entity.parent_id is None or PARENT_FIELD.is_cached(entity)


def _start(tenant, items, actor, mode, plan_id, notes, scenario, run, now, *, store: bool = True) -> PreflightRun:
    fields = {
        "status": PreflightRun.Status.RUNNING,
        "mode": mode,
        "plan_id": plan_id,
        "notes": notes,
        "started_at": now,
        "error_message": "",
        "entities_total": len(items),
        "entities_read": 0,
        "reads_finished_at": None,
    }
    if run is None:
        creator = actor if actor is not None and actor.is_authenticated else None
        return PreflightRun.objects.create(
            tenant=tenant,
            run_id=new_run_id(),
            scenario=scenario,
            inputs=[item.as_input() for item in items],
            created_by=creator,
            **fields,
        )
    for name, value in fields.items():
        setattr(run, name, value)
    if not run.inputs:
        run.inputs = [item.as_input() for item in items]
    if store:
        run.save(update_fields=[*fields, "inputs"])
    return run


def _fail(run: PreflightRun, message: str, *, store: bool = True) -> None:
    run.status = PreflightRun.Status.FAILED
    run.error_message = message
    run.finished_at = timezone.now()
    if store:
        run.save(update_fields=["status", "error_message", "finished_at"])
        preflight_run_record(mode=run.mode, status="failed")


def _progress_of(run: PreflightRun) -> Callable[[int], None]:
    """Count entities read on the run's row (one UPDATE per batch), so the admin and the
    API show how far a preflight in a worker has come."""

    def advance(count: int) -> None:
        PreflightRun.objects.filter(pk=run.pk).update(entities_read=F("entities_read") + count)

    return advance


def _read_live(
    entries: list[_Entry],
    sleep: Callable[[float], None],
    progress: Callable[[int], None] | None = None,
    *,
    refresh_mirror: bool = True,
) -> None:
    """``read_state`` per connection and batch of ``ENTITY_BATCH`` (retrying transient
    failures); fills ``entry.live`` and (unless a preview) refreshes the mirror rows of the
    entities read, so drift is later judged against what this preflight saw; ``progress``
    hears each batch."""
    by_connection: dict[int, list[_Entry]] = defaultdict(list)
    for entry in entries:
        by_connection[entry.connection.pk].append(entry)
    for connection_pk in sorted(by_connection):
        group = by_connection[connection_pk]
        connection = group[0].connection
        states = _read_connection(connection, [e.entity for e in group], sleep, progress)
        if refresh_mirror:
            mirror_refresh((e.entity for e in group), states)
        for entry in group:
            entry.live = states.get((entry.entity.entity_type, entry.entity.external_id))


def _read_live_each(
    entries: list[_Entry], sleep: Callable[[float], None], *, refresh_mirror: bool = True
) -> dict[int, str]:
    """Fill ``entry.live`` of entries that may share entities, reading each entity once;
    return the reason per connection that could not be read."""
    distinct: dict[int, _Entry] = {}
    for entry in entries:
        distinct.setdefault(entry.entity.pk, entry)
    by_connection: dict[int, list[_Entry]] = defaultdict(list)
    for entry in distinct.values():
        by_connection[entry.connection.pk].append(entry)
    failed: dict[int, str] = {}
    for connection_pk in sorted(by_connection):
        try:
            _read_live(by_connection[connection_pk], sleep, refresh_mirror=refresh_mirror)
        except PreflightFailed as exc:
            failed[connection_pk] = exc.message
    for entry in entries:
        # One instance per entity, so every entry sees the mirror values the read wrote.
        entry.entity = distinct[entry.entity.pk].entity
        entry.live = distinct[entry.entity.pk].live
    return failed


def _read_connection(
    connection: PlatformConnection,
    entities: list[PlatformEntity],
    sleep: Callable[[float], None],
    progress: Callable[[int], None] | None = None,
) -> dict[tuple[str, str], EntityState]:
    executor = get_executor(connection)
    refs = [entity.to_ref() for entity in entities]

    def backoff(attempt: int, exc: PlatformCallError, delay: float) -> None:
        logger.warning(
            "preflight read failed (attempt %s), retrying in %.1fs: %s",
            attempt,
            delay,
            exc.error.message,
            extra={"connection_id": connection.pk},
        )
        if exc.error.code == ErrorCode.RATE_LIMITED and exc.error.retry_after:
            rate_limit_backoff(connection=connection, seconds=exc.error.retry_after)

    states: dict[tuple[str, str], EntityState] = {}
    try:
        for chunk in chunked(refs, ENTITY_BATCH):
            states.update(with_retries(lambda chunk=chunk: executor.read_state(chunk), on_retry=backoff, sleep=sleep))
            if progress is not None:
                progress(len(chunk))
        return states
    except PlatformCallError as exc:
        raise PreflightFailed(
            f"Could not read the live state of {_count(len(refs), 'entity', 'entities')} on {connection}: "
            f"{exc.error.message} {exc.error.hint}",
            details=exc.error.as_dict(),
        ) from None
    finally:
        close = getattr(executor, "close", None)
        if close is not None:
            close()


# The document --------------------------------------------------------------------------


def _build_document(
    *, tenant: Tenant, entries: list[_Entry], run: PreflightRun, mode: str, plan_id: str, notes: str, now: datetime
) -> dict[str, Any]:
    """The diff document of entries whose live state has been read."""
    entries = sorted(entries, key=lambda e: e.sort_key)
    connections = {e.connection.pk: e.connection for e in entries}
    policies = g.policies_for(tenant=tenant, connections=connections.values())
    siblings = _shared_budget_campaigns(entries)
    changed = [e for e in entries if e.changed_fields]
    forecasting = [e for e in changed if not e.missing and set(e.changed_fields) & set(SPEND_FIELDS)]
    stats = curve_stats(entity_ids=[e.entity.pk for e in forecasting], until=now.date())
    cooldown_ids = [e.entity.pk for e in changed if policies[e.connection.pk].cooldown_hours is not None]
    last_changes = _last_changes(tenant, cooldown_ids)
    totals = _account_totals(entries, siblings)
    allowances = _change_allowances(changed, now)
    conflicts = _budget_conflicts(changed)
    quotas = _google_quotas(connections, now)

    forecast_ids = {e.entity.pk for e in forecasting}
    documents = []
    for entry in entries:
        curve = fit_curve(stats.get(entry.entity.pk)) if entry.entity.pk in forecast_ids else None
        documents.append(
            _entity_document(
                entry,
                policy=policies[entry.connection.pk],
                siblings=siblings,
                forecasting=entry.entity.pk in forecast_ids,
                curve=curve,
                last_change=last_changes.get(entry.entity.pk),
                now=now,
                allowance=allowances.get(entry.entity.pk),
                conflicts=conflicts.get(entry.key, {}),
            )
        )
    run_breaches = _run_breaches(changed, connections, policies, totals, notes, now, quotas)
    breaches = [b for doc in documents for b in _breaches_of(doc)] + run_breaches
    breaches.sort(key=g.breach_sort_key)
    summary = _summary(documents)
    summary["breaches"] = {
        severity: sum(1 for b in breaches if b["severity"] == severity) for severity in (g.CRITICAL, g.WARNING)
    }
    return {
        "run_id": run.run_id,
        "tenant": tenant.slug,
        "generation_mode": mode,
        "generated_at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "source_plan_id": plan_id,
        "notes": notes,
        "forecast_model": FORECAST_MODEL,
        "connections": _connection_documents(connections, policies, entries, totals, quotas),
        "entities": documents,
        "summary": summary,
        "breaches": breaches,
        "has_critical": any(b["severity"] == g.CRITICAL for b in breaches),
    }


def _money(value: Decimal | None, currency: str) -> str | None:
    return None if value is None else str(quantize(value, currency))


def _values(entry: _Entry, pick: Callable[[str], Any]) -> dict[str, Any]:
    out = {}
    for field in TARGET_FIELDS:
        value = pick(field)
        out[field] = value if field == "status" else _money(value, entry.currency)
    return out


def _entity_document(
    entry: _Entry,
    *,
    policy: GuardrailPolicy,
    siblings: dict[tuple[int, str], list[dict[str, Any]]],
    forecasting: bool,
    curve: Curve | None,
    last_change: datetime | None,
    now: datetime,
    allowance: ChangeAllowance | None = None,
    conflicts: dict[str, list[tuple[str, Any]]] | None = None,
) -> dict[str, Any]:
    changed = entry.changed_fields
    shared = _shared_budget_document(entry, siblings)
    forecast = None
    if forecasting:
        forecast = entity_forecast(
            curve,
            currency=entry.currency,
            before={"status": entry.before("status"), "daily_budget": entry.before("daily_budget")},
            after={"status": entry.after("status"), "daily_budget": entry.after("daily_budget")},
        )
    delta_field = next((f for f in SPEND_FIELDS if f in changed), None) if forecasting else None
    sections: dict[str, list[dict[str, Any]]] = {name: [] for name in SECTIONS}
    for section, fields in SECTION_FIELDS.items():
        for field in fields:
            if field not in entry.targets:
                continue
            change = _field_change(entry, field, forecast_delta(forecast) if field == delta_field else None)
            if change["changed"] and not entry.missing:
                change["breaches"] = _field_breaches(entry, field, policy, shared, (conflicts or {}).get(field, []))
            sections[section].append(change)
    breaches = _entity_breaches(entry, policy, bool(changed), forecasting, forecast, last_change, now)
    if not entry.missing and changed:
        breaches += [
            b
            for b in [
                g.evaluate_change_rate_limit(
                    policy,
                    subject=entry.subject,
                    key=entry.key,
                    allowance=allowance,
                    time_zone=entry.connection.time_zone,
                )
            ]
            if b
        ]
    return {
        "key": entry.key,
        "entity_id": entry.entity.pk,
        "connection_id": entry.connection.pk,
        "platform": entry.connection.platform,
        "entity_type": entry.entity.entity_type,
        "external_id": entry.entity.external_id,
        "name": entry.live.name if entry.live else entry.entity.name,
        "currency": entry.currency,
        "change_type": "update" if changed else "noop",
        "live_found": entry.live is not None,
        "before": _values(entry, entry.before),
        "after": _values(entry, entry.after),
        "sections": sections,
        "shared_budget": shared,
        "forecast": forecast,
        "forecast_status": ("fitted" if forecast else "no_data") if forecasting else "not_applicable",
        "breaches": sorted(breaches, key=g.breach_sort_key),
    }


def _field_change(entry: _Entry, field: str, delta: dict[str, str] | None) -> dict[str, Any]:
    before, after = entry.before(field), entry.after(field)
    change: dict[str, Any] = {
        "field": field,
        "field_path": f"{entry.entity.entity_type}.{field}",
        "label": LABELS[field],
        "changed": before != after,
        "forecast_delta": delta,
        "breaches": [],
    }
    if field == "status":
        change.update(before=before, after=after, delta=None, percent_delta=None, from_zero=False, unit=None)
        return change
    pct = g.percent_change(before, after)
    change.update(
        before=_money(before, entry.currency),
        after=_money(after, entry.currency),
        delta=_money(after - (before or 0), entry.currency),
        percent_delta=None if pct is None else str(pct),
        from_zero=pct is None and before != after,
        unit=entry.currency,
    )
    return change


def _field_breaches(
    entry: _Entry,
    field: str,
    policy: GuardrailPolicy,
    shared: dict[str, Any] | None,
    conflicting: list[tuple[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    if field == "status":
        return []
    before, after, unit = entry.before(field), entry.after(field), entry.currency
    common = {"subject": entry.subject, "key": entry.key}
    found = [
        g.evaluate_max_increase_pct(policy, field=field, before=before, after=after, unit=unit, **common),
        g.evaluate_max_decrease_pct(policy, field=field, before=before, after=after, unit=unit, **common),
        g.evaluate_learning_phase(
            policy,
            field=field,
            platform=entry.connection.platform,
            entity_type=entry.entity.entity_type,
            before=before,
            after=after,
            **common,
        ),
    ]
    if field == "daily_budget":
        found.append(g.evaluate_min_daily_budget(policy, after=after, unit=unit, **common))
        found.append(g.evaluate_max_daily_budget(policy, after=after, unit=unit, **common))
        if entry.connection.platform == "meta":
            found.append(
                g.evaluate_platform_minimum_budget(
                    policy, after=after, unit=unit, minimums=entry.connection.minimum_budgets, **common
                )
            )
    if shared is not None and field in ("daily_budget", "lifetime_budget"):
        found.append(
            g.evaluate_shared_budget_reach(
                policy, field=field, budget_id=shared["budget_id"], campaigns=shared["reference_count"], **common
            )
        )
        found.append(
            g.evaluate_shared_budget_conflict(
                policy, field=field, budget_id=shared["budget_id"], others=conflicting or [], **common
            )
        )
    return sorted((b for b in found if b is not None), key=g.breach_sort_key)


def _entity_breaches(
    entry: _Entry,
    policy: GuardrailPolicy,
    changed: bool,
    forecasting: bool,
    forecast: dict[str, Any] | None,
    last_change: datetime | None,
    now: datetime,
) -> list[dict[str, Any]]:
    common = {"subject": entry.subject, "key": entry.key}
    if entry.missing:
        return [b for b in [g.evaluate_entity_missing(policy, removed=entry.live is not None, **common)] if b]
    if not changed:
        return []
    found = [
        g.evaluate_cooldown(policy, last_change=last_change, now=now, time_zone=entry.connection.time_zone, **common)
    ]
    if forecasting:
        found.append(g.evaluate_low_confidence_forecast(policy, forecast=forecast, **common))
    if spend_moves(forecast):
        confidence = forecast["confidence"]
        found.append(g.evaluate_roas_floor(policy, roas=forecast_roas(forecast), confidence=confidence, **common))
        found.append(
            g.evaluate_cpa_ceiling(
                policy, cpa=forecast_cpa(forecast, entry.currency), unit=entry.currency, confidence=confidence, **common
            )
        )
    return [b for b in found if b is not None]


def _breaches_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(document["breaches"])
    for changes in document["sections"].values():
        for change in changes:
            found.extend(change["breaches"])
    return found


def _run_breaches(
    changed: list[_Entry],
    connections: dict[int, PlatformConnection],
    policies: dict[int | None, GuardrailPolicy],
    totals: dict[int, tuple[Decimal, Decimal]],
    notes: str,
    now: datetime,
    quotas: dict[int, QuotaStatus] | None = None,
) -> list[dict[str, Any]]:
    """Per connection with changes: window, blackout, account total, Google's daily
    operations; per policy: count, notes."""
    found = []
    changed_by_connection: dict[int, int] = defaultdict(int)
    for entry in changed:
        changed_by_connection[entry.connection.pk] += 1
    by_policy: dict[int | None, list[int]] = defaultdict(list)
    for pk in sorted(changed_by_connection):
        connection, policy = connections[pk], policies[pk]
        account = str(connection)
        found.append(g.evaluate_change_window(policy, account=account, now=now, time_zone=connection.time_zone))
        found.append(g.evaluate_blackout_date(policy, account=account, now=now, time_zone=connection.time_zone))
        before, after = totals[pk]
        unit = connection.currency
        found.append(
            g.evaluate_max_account_daily_spend(
                policy, account=account, before=quantize(before, unit), after=quantize(after, unit), unit=unit
            )
        )
        if pk in (quotas or {}):
            needed = _google_operations_needed([e for e in changed if e.connection.pk == pk])
            found.append(g.evaluate_google_operations_quota(policy, account=account, needed=needed, status=quotas[pk]))
        by_policy[policy.pk].append(pk)
    for connection_pks in by_policy.values():
        policy = policies[connection_pks[0]]
        count = sum(changed_by_connection[pk] for pk in connection_pks)
        scope = f"The plan (guardrail policy “{policy.name}”)"
        found.append(g.evaluate_max_entities_per_deploy(policy, scope=scope, changed=count))
        found.append(g.evaluate_notes_required(policy, scope=scope, notes=notes))
    return [b for b in found if b is not None]


# Facts from the database (a constant number of queries per batch) ---------------------------


def _change_allowances(changed: list[_Entry], now: datetime) -> dict[int, ChangeAllowance]:
    """Meta ad sets whose budget the plan changes: may one more change go now (one query)."""
    limited = [
        e.entity.pk
        for e in changed
        if not e.missing and is_limited(e.connection.platform, e.entity.entity_type, e.changed_fields)
    ]
    return budget_change_allowance(entity_ids=limited, now=now) if limited else {}


def _budget_conflicts(changed: list[_Entry]) -> dict[str, dict[str, list[tuple[str, Any]]]]:
    """Per entry key and budget field: the other items that set the same shared budget to
    a different value (each named by its subject, with its value)."""
    groups: dict[tuple[int, str, str], list[_Entry]] = defaultdict(list)
    for entry in changed:
        if entry.shared_budget_id is None:
            continue
        for field in ("daily_budget", "lifetime_budget"):
            if field in entry.changed_fields:
                groups[(entry.connection.pk, entry.shared_budget_id, field)].append(entry)
    found: dict[str, dict[str, list[tuple[str, Any]]]] = defaultdict(dict)
    for (_, _, field), members in groups.items():
        if len({m.after(field) for m in members}) < 2:
            continue
        for entry in members:
            others = [(m.subject, _money(m.after(field), m.currency)) for m in members if m is not entry]
            found[entry.key][field] = others
    return found


def _google_quotas(connections: dict[int, PlatformConnection], now: datetime) -> dict[int, QuotaStatus]:
    """Today's operations budget of each Google connection's developer token."""
    quotas = {pk: connection_quota(connection, now) for pk, connection in connections.items()}
    return {pk: status for pk, status in quotas.items() if status is not None}


def _google_operations_needed(changed: list[_Entry]) -> int:
    """Operations a live deploy of ``changed`` costs on Google Ads (rate sheet: one per mutated
    item, one per query): a mutate per changed field, and reads before and after."""
    mutations = sum(len(e.changed_fields) for e in changed)
    reads = 2 * (-(-len(changed) // 1000)) * 2  # campaigns and ad groups, before and after
    return mutations + reads


def _shared_budget_campaigns(entries: list[_Entry]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    """Every mirrored campaign (not removed) on each shared budget the entries touch."""
    wanted = {(e.connection.pk, e.shared_budget_id) for e in entries if e.shared_budget_id}
    found: dict[tuple[int, str], list[dict[str, Any]]] = {key: [] for key in wanted}
    connection_ids = sorted({c for c, _ in wanted})
    for chunk in chunked(sorted({b for _, b in wanted}), ENTITY_BATCH):
        rows = (
            PlatformEntity.objects.filter(connection_id__in=connection_ids, entity_type="campaign", budget_id__in=chunk)
            .exclude(status="removed")
            .values("pk", "connection_id", "budget_id", "external_id", "name", "status")
        )
        for row in rows:
            key = (row["connection_id"], row["budget_id"])
            if key in found:
                found[key].append(row)
    for campaigns in found.values():
        campaigns.sort(key=lambda row: (row["external_id"], row["pk"]))
    return found


def _shared_budget_document(
    entry: _Entry, siblings: dict[tuple[int, str], list[dict[str, Any]]]
) -> dict[str, Any] | None:
    budget_id = entry.shared_budget_id
    if budget_id is None:
        return None
    campaigns = siblings.get((entry.connection.pk, budget_id), [])
    live_count = entry.live.budget_reference_count if entry.live is not None and entry.live.budget_shared else 0
    return {
        "budget_id": budget_id,
        "reference_count": live_count or len(campaigns),
        "campaigns": [{"external_id": row["external_id"], "name": row["name"]} for row in campaigns],
    }


def _last_changes(tenant: Tenant, entity_ids: list[int]) -> dict[int, datetime]:
    """When each entity was last changed by BudgetRadar (an applied action or its rollback)."""
    from actions.models import Action

    last: dict[int, datetime] = {}
    for chunk in chunked(sorted(entity_ids), ENTITY_BATCH):
        rows = (
            Action.objects.filter(tenant=tenant, entity_id__in=chunk, status__in=APPLIED_ACTION_STATUSES)
            .values("entity_id")
            .annotate(finished=Max("finished_at"), rolled_back=Max("rolled_back_at"))
            .order_by()
        )
        for row in rows:
            moments = [m for m in (row["finished"], row["rolled_back"]) if m is not None]
            if moments:
                last[row["entity_id"]] = max(moments)
    return last


def _account_totals(
    entries: list[_Entry], siblings: dict[tuple[int, str], list[dict[str, Any]]]
) -> dict[int, tuple[Decimal, Decimal]]:
    """Sum of daily budgets of each connection's active campaigns, before and after.

    Live values for the entries' campaigns, mirror values for every other campaign; a
    shared budget counts once (every campaign on it reports the same amount). Two
    queries for all connections: the mirror's non-shared sum and its shared budgets.
    """
    connection_ids = sorted({e.connection.pk for e in entries})
    base: dict[int, Decimal] = {pk: Decimal(0) for pk in connection_ids}
    mirror_sums = (
        PlatformEntity.objects.filter(
            connection_id__in=connection_ids,
            entity_type="campaign",
            status="active",
            budget_shared=False,
            daily_budget__isnull=False,
        )
        .values("connection_id")
        .annotate(total=Sum("daily_budget"))
        .order_by()
    )
    for row in mirror_sums:
        base[row["connection_id"]] = Decimal(row["total"])
    units: dict[tuple[int, str], Decimal] = {}
    shared_rows = (
        PlatformEntity.objects.filter(
            connection_id__in=connection_ids, entity_type="campaign", status="active", budget_shared=True
        )
        .exclude(budget_id="")
        .values("connection_id", "budget_id")
        .annotate(amount=Max("daily_budget"))
        .order_by()
    )
    for row in shared_rows:
        units[(row["connection_id"], row["budget_id"])] = Decimal(row["amount"] or 0)

    before = dict(base)
    after = dict(base)
    touched: dict[tuple[int, str], list[_Entry]] = defaultdict(list)
    for entry in entries:
        entity, pk = entry.entity, entry.connection.pk
        if entity.entity_type != "campaign":
            continue
        if entity.budget_shared and entity.budget_id:
            touched[(pk, entity.budget_id)].append(entry)
            continue
        if entity.status == "active" and entity.daily_budget is not None:
            before[pk] -= entity.daily_budget
            after[pk] -= entity.daily_budget
        before[pk] += _active_budget(entry.before("status"), entry.before("daily_budget"))
        after[pk] += _active_budget(entry.after("status"), entry.after("daily_budget"))
    for (pk, budget_id), amount in units.items():
        if (pk, budget_id) not in touched:
            before[pk] += amount
            after[pk] += amount
    for (pk, budget_id), on_budget in touched.items():
        items = {e.entity.pk: e for e in on_budget}
        others = [row for row in siblings.get((pk, budget_id), []) if row["pk"] not in items]
        for totals, pick in ((before, _Entry.before), (after, _Entry.after)):
            active = any(pick(e, "status") == "active" for e in on_budget) or any(
                row["status"] == "active" for row in others
            )
            amounts = [pick(e, "daily_budget") for e in on_budget if pick(e, "daily_budget") is not None]
            if active and amounts:
                totals[pk] += max(amounts)
    return {pk: (before[pk], after[pk]) for pk in connection_ids}


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _active_budget(status: str | None, daily_budget: Decimal | None) -> Decimal:
    return daily_budget if status == "active" and daily_budget is not None else Decimal(0)


# Summaries -----------------------------------------------------------------------------


def _connection_documents(
    connections: dict[int, PlatformConnection],
    policies: dict[int | None, GuardrailPolicy],
    entries: list[_Entry],
    totals: dict[int, tuple[Decimal, Decimal]],
    quotas: dict[int, QuotaStatus] | None = None,
) -> list[dict[str, Any]]:
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for entry in entries:
        counts[entry.connection.pk][0] += 1
        counts[entry.connection.pk][1] += bool(entry.changed_fields)
    out = []
    for pk in sorted(connections):
        connection, policy = connections[pk], policies[pk]
        before, after = totals[pk]
        out.append(
            {
                "connection_id": pk,
                "name": connection.name,
                "platform": connection.platform,
                "account_id": connection.account_id,
                "currency": connection.currency,
                "time_zone": connection.time_zone,
                "policy": {"id": policy.pk, "name": policy.name},
                "entities": counts[pk][0],
                "changed": counts[pk][1],
                "account_daily_budget_before": _money(before, connection.currency),
                "account_daily_budget_after": _money(after, connection.currency),
                "account_daily_budget_delta": _money(after - before, connection.currency),
                "google_operations": (quotas or {})[pk].as_dict() if pk in (quotas or {}) else None,
            }
        )
    return out


def _summary(documents: list[dict[str, Any]]) -> dict[str, Any]:
    by_change_type = dict.fromkeys(CHANGE_TYPES, 0)
    by_section = {name: {"changes": 0, "entities": 0} for name in SECTIONS}
    by_platform: dict[str, dict[str, Any]] = {}
    budget_delta: dict[str, Decimal] = defaultdict(Decimal)
    conversions, revenue = Decimal(0), defaultdict(Decimal)
    confidence = {"high": 0, "medium": 0, "low": 0, "none": 0}
    for doc in documents:
        by_change_type[doc["change_type"]] += 1
        for name, changes in doc["sections"].items():
            moved = sum(1 for c in changes if c["changed"])
            by_section[name]["changes"] += moved
            by_section[name]["entities"] += bool(moved)
        platform = by_platform.setdefault(doc["platform"], {"entities": 0, "changed": 0, "by_currency": {}})
        platform["entities"] += 1
        platform["changed"] += doc["change_type"] != "noop"
        money = platform["by_currency"].setdefault(doc["currency"], [Decimal(0), Decimal(0)])
        if doc["before"]["daily_budget"] is not None:
            money[0] += Decimal(doc["before"]["daily_budget"])
        if doc["after"]["daily_budget"] is not None:
            money[1] += Decimal(doc["after"]["daily_budget"])
        if doc["change_type"] != "noop":
            budget_delta[doc["currency"]] += Decimal(doc["after"]["daily_budget"] or 0) - Decimal(
                doc["before"]["daily_budget"] or 0
            )
        forecast = doc["forecast"]
        if forecast is not None:
            confidence[forecast["confidence"]] += 1
            delta = forecast_delta(forecast)
            conversions += Decimal(delta["conversions"])
            revenue[doc["currency"]] += Decimal(delta["revenue"])
        elif doc["forecast_status"] == "no_data":
            confidence["none"] += 1
    revenue_by_currency = {cur: _money(value, cur) for cur, value in sorted(revenue.items())}
    return {
        "entities": len(documents),
        "changed": len(documents) - by_change_type["noop"],
        "noop": by_change_type["noop"],
        "by_change_type": by_change_type,
        "by_section": by_section,
        "by_platform": {name: _platform_summary(values) for name, values in sorted(by_platform.items())},
        "total": {
            "daily_budget_delta_by_currency": {cur: _money(v, cur) for cur, v in sorted(budget_delta.items())},
            "forecast": {
                "entities": sum(confidence[c] for c in ("high", "medium", "low")),
                "confidence": confidence,
                "conversions_delta": str(conversions.quantize(Decimal("0.01"))),
                "revenue_delta": next(iter(revenue_by_currency.values())) if len(revenue_by_currency) == 1 else None,
                "revenue_delta_by_currency": revenue_by_currency,
            },
        },
    }


def _platform_summary(values: dict[str, Any]) -> dict[str, Any]:
    """Counts, and daily budget sums of the platform's items per currency (top level when only one)."""
    by_currency = {
        cur: {
            "daily_budget_before": _money(before, cur),
            "daily_budget_after": _money(after, cur),
            "daily_budget_delta": _money(after - before, cur),
        }
        for cur, (before, after) in sorted(values["by_currency"].items())
    }
    single = next(iter(by_currency.items())) if len(by_currency) == 1 else None
    return {
        "entities": values["entities"],
        "changed": values["changed"],
        "currency": single[0] if single else None,
        "daily_budget_before": single[1]["daily_budget_before"] if single else None,
        "daily_budget_after": single[1]["daily_budget_after"] if single else None,
        "daily_budget_delta": single[1]["daily_budget_delta"] if single else None,
        "by_currency": by_currency,
    }
