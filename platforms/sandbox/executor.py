"""BudgetRadar's client for the sandbox platform.

The sandbox behaves like a remote platform that happens to live in the same database:
every request is authenticated with the connection's access token, logged in
``SandboxRequest``, may meet an injected ``SandboxFault``, and commits on its own.

Callers must not call an executor inside ``transaction.atomic``. A real platform's
change cannot be rolled back by our database; the sandbox's can, if the caller's
transaction rolls back, and the caller would then believe in a change that vanished.
The engine, sync and services call executors outside any transaction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import InterfaceError, InternalError, OperationalError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from budgetradar.bulk import bulk_set
from platforms.base import PlatformExecutor, Throttle, chunked, failed_outcomes, no_throttle
from platforms.money import MoneyError, check_precision, currency_exponent
from platforms.sandbox.faults import FaultKind, FaultScope
from platforms.sandbox.models import (
    WRITE_ONLY_FAULT_KINDS,
    SandboxAccount,
    SandboxEntity,
    SandboxFault,
    SandboxRequest,
)
from platforms.sandbox.simulation import simulate_performance
from platforms.types import (
    MONEY_FIELDS,
    Change,
    ChangeOutcome,
    ConnectionConfig,
    EntityRef,
    EntityState,
    EntityStatus,
    EntityType,
    ErrorCode,
    Field,
    OutcomeStatus,
    PerformanceRow,
    PlatformCallError,
    PlatformError,
)

Method = SandboxRequest.Method

# Which entity types accept which field (anything else is NOT_SUPPORTED).
FIELD_TARGETS: dict[Field, frozenset[EntityType]] = {
    Field.DAILY_BUDGET: frozenset({EntityType.CAMPAIGN, EntityType.AD_SET}),
    Field.LIFETIME_BUDGET: frozenset({EntityType.CAMPAIGN, EntityType.AD_SET}),
    Field.STATUS: frozenset({EntityType.CAMPAIGN, EntityType.AD_SET, EntityType.AD}),
    Field.BID: frozenset({EntityType.AD_SET}),
    Field.TARGETING: frozenset({EntityType.AD_SET}),
    Field.SCHEDULE: frozenset({EntityType.AD_SET}),
}
WRITE_COLUMNS = ("id", "external_id", "entity_type", "status", *(str(f) for f in FIELD_TARGETS), "updated_at")
MAX_AMOUNT = Decimal("1000000000")  # the platform refuses absurd amounts instead of overflowing
TYPE_ORDER = {EntityType.CAMPAIGN: 0, EntityType.AD_SET: 1, EntityType.AD: 2}

# Faults that refuse the whole request before anything happens.
REQUEST_FAULTS: dict[FaultKind, tuple[ErrorCode, str]] = {
    FaultKind.RATE_LIMIT: (ErrorCode.RATE_LIMITED, "Too many requests for account {account}; retry after {retry}s."),
    FaultKind.SERVER_ERROR: (ErrorCode.TRANSIENT, "The sandbox had an internal error (HTTP 500)."),
    FaultKind.HTML_502: (ErrorCode.TRANSIENT, "The sandbox answered with an HTML 502 Bad Gateway page, not JSON."),
    FaultKind.AUTH_EXPIRED: (ErrorCode.AUTH_EXPIRED, "The access token for account {account} has expired."),
    FaultKind.PERMISSION_DENIED: (
        ErrorCode.PERMISSION_DENIED,
        "The token's user has no {access} access to account {account}.",
    ),
    FaultKind.INVALID_VALUE: (ErrorCode.INVALID_VALUE, "The sandbox refused the request as invalid."),
    FaultKind.CONFLICT: (ErrorCode.CONFLICT, "Concurrent modification: another change to these entities is running."),
}
TIMEOUT_FAULTS = frozenset({FaultKind.TIMEOUT_BEFORE_APPLY, FaultKind.TIMEOUT_AFTER_APPLY})


def _new_request_id() -> str:
    return f"sbx-{uuid.uuid4().hex[:20]}"


@dataclass
class _Call:
    """One request in flight: what the sandbox knows about it while serving it."""

    account: SandboxAccount
    request_id: str
    method: str
    entity_ids: list[str]
    operations: int
    validate_only: bool
    fault: SandboxFault | None = None
    outcome: str = ""
    applied: int = 0
    started: float = 0.0  # time.monotonic() when the client sent it (the deadline runs from here)
    logged: bool = False

    def live_entities(self) -> QuerySet[SandboxEntity]:
        return SandboxEntity.objects.filter(account=self.account, deleted_at__isnull=True)

    def fault_hits(self, external_id: str, kind: FaultKind) -> bool:
        """True when the request's fault is ``kind`` and targets ``external_id``."""
        if self.fault is None or self.fault.kind != kind:
            return False
        return not self.fault.entity_ids or external_id in self.fault.entity_ids

    def error(self, code: ErrorCode, message: str, *, retry_after: float | None = None) -> PlatformError:
        return PlatformError(code=code, message=message, retry_after=retry_after, request_id=self.request_id)


def take_fault(
    account: SandboxAccount, *, scope: FaultScope, entity_ids: Collection[str] | None
) -> SandboxFault | None:
    """Consume and return the oldest fault matching a request, or None.

    ``entity_ids`` None marks an account-wide request (list, performance), which every
    entity-narrowed fault matches. Consumption is a compare-and-set on ``remaining``, so
    concurrent requests never consume the last use twice.
    """
    faults = SandboxFault.objects.filter(
        Q(remaining__isnull=True) | Q(remaining__gt=0), account=account, scope__in=[scope, FaultScope.ANY]
    ).order_by("id")
    if scope == FaultScope.READ:
        faults = faults.exclude(kind__in=WRITE_ONLY_FAULT_KINDS)
    named = set(entity_ids) if entity_ids is not None else None
    for fault in faults:
        if fault.entity_ids and named is not None and not named.intersection(fault.entity_ids):
            continue
        if fault.remaining is None:
            return fault
        if SandboxFault.objects.filter(pk=fault.pk, remaining__gt=0).update(remaining=F("remaining") - 1):
            fault.remaining -= 1
            return fault
    return None


def delete_entities(account: SandboxAccount, external_ids: Collection[str] | None) -> None:
    """Delete entities (all when ``external_ids`` is None) with their descendants."""
    live = SandboxEntity.objects.filter(account=account, deleted_at__isnull=True)
    if external_ids is not None:
        live = live.filter(external_id__in=list(external_ids))
    now = timezone.now()
    level = list(live.values_list("pk", flat=True))
    while level:  # one query pair per level of the graph, never per entity
        SandboxEntity.objects.filter(pk__in=level).update(deleted_at=now)
        level = list(
            SandboxEntity.objects.filter(parent_id__in=level, deleted_at__isnull=True).values_list("pk", flat=True)
        )


def entity_state(row: SandboxEntity, currency: str) -> EntityState:
    quantum = Decimal(1).scaleb(-currency_exponent(currency))

    def money(value: Decimal | None) -> Decimal | None:
        """Shown with the currency's decimals when that is exact; a stored value finer than
        the minor unit (written past the sandbox's own checks) as it is, never rounded."""
        if value is None:
            return None
        shown = value.quantize(quantum)
        return shown if shown == value else value.normalize()

    return EntityState(
        entity_type=EntityType(row.entity_type),
        external_id=row.external_id,
        name=row.name,
        status=EntityStatus(row.status),
        currency=currency,
        parent_external_id=row.parent.external_id if row.parent_id else None,
        daily_budget=money(row.daily_budget),
        lifetime_budget=money(row.lifetime_budget),
        bid=money(row.bid),
        targeting=dict(row.targeting) if row.targeting is not None else None,
        schedule=dict(row.schedule) if row.schedule is not None else None,
    )


class SandboxExecutor(PlatformExecutor):
    """Reads and writes a ``SandboxAccount`` in batches of up to 1,000 operations.

    Keeps every guarantee of ``PlatformExecutor``. Budgets apply to campaigns and ad
    sets, bids, targeting and schedules to ad sets, status to all three types; anything
    else fails ``not_supported``. A change to a removed entity fails ``not_found``
    (removal is one-way). ``sleep`` is injectable so tests never wait for latency.
    """

    platform = "sandbox"
    max_operations_per_request = 1000
    supported_fields = frozenset(FIELD_TARGETS)

    def __init__(
        self, config: ConnectionConfig, *, throttle: Throttle = no_throttle, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        super().__init__(config, throttle=throttle)
        self.sleep = sleep

    # The executor contract ------------------------------------------------------------

    def read_state(self, refs: Iterable[EntityRef]) -> dict[tuple[str, str], EntityState]:
        found: dict[tuple[str, str], EntityState] = {}
        for batch in chunked(list(refs), self.max_operations_per_request):
            wanted = {ref.key for ref in batch}
            ids = sorted({ref.external_id for ref in batch})
            with self._request(Method.READ, entity_ids=ids, operations=len(batch)) as call:
                rows = call.live_entities().filter(external_id__in=ids).select_related("parent")
                states = [entity_state(row, self.config.currency) for row in rows]
                found.update({s.key: s for s in states if s.key in wanted})
                call.outcome = f"read {len(states)} of {len(ids)} entities"
        return found

    def apply(self, changes: Sequence[Change], *, validate_only: bool = False) -> list[ChangeOutcome]:
        outcomes: list[ChangeOutcome] = []
        for batch in chunked(list(changes), self.max_operations_per_request):
            outcomes.extend(self._apply_batch(batch, validate_only=validate_only))
        return outcomes

    def list_entities(self) -> list[EntityState]:
        with self._request(Method.LIST, entity_ids=None, operations=1) as call:
            rows = call.live_entities().select_related("parent")
            states = [entity_state(row, self.config.currency) for row in rows]
            call.outcome = f"listed {len(states)} entities"
        return sorted(states, key=lambda s: (TYPE_ORDER[s.entity_type], s.external_id))

    def read_performance(self, since: date, until: date) -> list[PerformanceRow]:
        if since > until:
            raise ValueError(f"since ({since}) is after until ({until})")
        with self._request(Method.PERFORMANCE, entity_ids=None, operations=1) as call:
            entities = list(
                call.live_entities().filter(entity_type__in=[EntityType.CAMPAIGN, EntityType.AD_SET]).order_by("pk")
            )
            rows = simulate_performance(entities, currency=self.config.currency, since=since, until=until)
            call.outcome = f"{len(rows)} rows from {since} to {until}"
        return rows

    def test_connection(self) -> str:
        """Read the account; refuse a connection whose currency differs from the account's."""
        with self._request(Method.LIST, entity_ids=None, operations=1) as call:
            account = call.account
            if account.currency != self.config.currency:
                raise PlatformCallError(
                    call.error(
                        ErrorCode.INVALID_VALUE,
                        f"Sandbox account {account.account_id} is billed in {account.currency} but the "
                        f"connection says {self.config.currency}; every amount would be misread.",
                    )
                )
            count = call.live_entities().count()
            call.outcome = f"connection test: {count} entities"
        return f"Sandbox account {account.name} ({account.account_id}, {account.currency}): {count} entities readable."

    # One request ----------------------------------------------------------------------

    @contextmanager
    def _request(
        self,
        method: str,
        *,
        entity_ids: list[str] | None,
        operations: int,
        validate_only: bool = False,
        changes: Sequence[Change] | None = None,
    ) -> Iterator[_Call]:
        """Serve one request: throttle, latency, authentication, faults; then log it.

        Raises ``PlatformCallError`` for whole-request failures. The body runs only when
        the request was accepted; a timeout-after-apply fault fires once it has run.
        """
        self.throttle(operations)
        started = time.monotonic()
        if changes is not None and not validate_only:
            started = self.begin_write(changes)  # the deadline runs from before request_sent
        self.round_trips += 1
        account = SandboxAccount.objects.filter(account_id=self.config.account_id).first()
        if account is None:
            raise PlatformCallError(
                PlatformError(
                    code=ErrorCode.NOT_FOUND,
                    message=f"The sandbox has no account {self.config.account_id!r}.",
                    request_id=_new_request_id(),
                )
            )
        if account.latency_ms:
            self.sleep(account.latency_ms / 1000)
        call = _Call(
            account=account,
            request_id=_new_request_id(),
            method=method,
            entity_ids=entity_ids or [],
            operations=operations,
            validate_only=validate_only,
            started=started,
        )
        try:
            self._authenticate(call)
            write = method == Method.APPLY
            call.fault = take_fault(
                account, scope=FaultScope.WRITE if write else FaultScope.READ, entity_ids=entity_ids
            )
            self._refuse_for_fault(call, write=write)
            yield call
            if write and call.fault is not None and call.fault.kind == FaultKind.TIMEOUT_AFTER_APPLY:
                call.outcome += "; the response was lost (timeout)"
                raise self._timeout(call, ambiguous=True)
        except PlatformCallError as exc:
            call.outcome = call.outcome or f"refused: {exc.error.code}: {exc.error.message}"
            if not call.logged:
                self._log(call)
            raise
        if not call.logged:
            self._log(call)

    def _authenticate(self, call: _Call) -> None:
        if not call.account.accepts(self.config.credentials.get("access_token")):
            raise PlatformCallError(
                call.error(
                    ErrorCode.AUTH_EXPIRED,
                    f"The sandbox refused the access token for account {call.account.account_id} "
                    "(expired, revoked or not this account's token).",
                )
            )

    def _refuse_for_fault(self, call: _Call, *, write: bool) -> None:
        fault = call.fault
        if fault is None:
            return
        if fault.kind == FaultKind.ENTITY_DELETED:
            delete_entities(call.account, fault.entity_ids or (call.entity_ids if call.entity_ids else None))
            return
        if fault.kind == FaultKind.TIMEOUT_BEFORE_APPLY or (fault.kind in TIMEOUT_FAULTS and not write):
            # A read has no effect, so a lost read answer is never ambiguous.
            raise self._timeout(call, ambiguous=write)
        if fault.kind in REQUEST_FAULTS:
            code, template = REQUEST_FAULTS[FaultKind(fault.kind)]
            message = template.format(
                account=call.account.account_id, retry=f"{fault.retry_after:g}", access="write" if write else "read"
            )
            retry_after = fault.retry_after if code == ErrorCode.RATE_LIMITED else None
            raise PlatformCallError(call.error(code, message, retry_after=retry_after))

    def _within_deadline(self, call: _Call, *, outermost: bool) -> None:
        # ``outermost``: this transaction commits the change (not a savepoint in a caller's).
        """Like a gRPC server honouring the client's deadline, the sandbox does not commit a
        write that arrives or finishes after the client stopped waiting (the request
        timeout): the transaction rolls back and the client sees a timeout.

        The sandbox runs inside the worker, so a worker paused between this check and its
        COMMIT would otherwise commit late. On PostgreSQL the server itself holds the line:
        the check runs on the database clock and leaves the transaction an idle timeout of
        exactly what is left, so a COMMIT that does not arrive in time is never made (the
        server ends the session and rolls back). Called last before the COMMIT."""
        if self.seconds_left(call.started) > 0 and (not outermost or self._server_deadline_holds(call)):
            return
        call.applied = 0
        call.logged = False  # the request log row rolls back with the change
        call.outcome = "deadline exceeded before commit: nothing applied"
        raise self._timeout(call, ambiguous=True)

    def _server_deadline_holds(self, call: _Call) -> bool:
        """On PostgreSQL: True when the database clock is still before the deadline, and
        the rest of the transaction may idle no longer than what is left of it."""
        if connection.vendor != "postgresql":
            return True
        deadline = timezone.now() + timedelta(seconds=self.seconds_left(call.started))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', left_ms::text, true) FROM "
                "(SELECT ceil(extract(epoch FROM (%s::timestamptz - clock_timestamp())) * 1000)::int AS left_ms) t "
                "WHERE left_ms > 0",
                [deadline],
            )
            return cursor.fetchone() is not None

    def _timeout(self, call: _Call, *, ambiguous: bool) -> PlatformCallError:
        message = f"The sandbox did not answer within {self.config.request_timeout:g}s (request timed out)."
        if ambiguous:
            message += " The changes may or may not have been applied: read the entities before retrying."
        return PlatformCallError(call.error(ErrorCode.TRANSIENT, message), ambiguous=ambiguous)

    def _log(self, call: _Call) -> None:
        call.logged = True
        SandboxRequest.objects.create(
            account=call.account,
            request_id=call.request_id,
            method=call.method,
            validate_only=call.validate_only,
            operation_count=call.operations,
            entity_ids=call.entity_ids,
            fault=call.fault.kind if call.fault is not None else "",
            applied_count=call.applied,
            outcome=call.outcome[:300],
        )

    # Writes ---------------------------------------------------------------------------

    def _apply_batch(self, batch: Sequence[Change], *, validate_only: bool) -> list[ChangeOutcome]:
        ids = sorted({change.ref.external_id for change in batch})
        try:
            with self._request(
                Method.APPLY, entity_ids=ids, operations=len(batch), validate_only=validate_only, changes=batch
            ) as call:
                outcomes = self._write(call, batch)
        except PlatformCallError as exc:
            return failed_outcomes(batch, exc.error, ambiguous=exc.ambiguous)
        return outcomes

    def _write(self, call: _Call, batch: Sequence[Change]) -> list[ChangeOutcome]:
        """Validate every change, apply the valid ones in one transaction (unless validate-only)."""
        outcomes: list[ChangeOutcome] = []
        outermost = not connection.in_atomic_block
        try:
            self._write_in_transaction(call, batch, outcomes, outermost=outermost)
        except (OperationalError, InterfaceError, InternalError):
            if not outermost:
                raise
            # The database ended the session: the COMMIT missed the deadline (or the
            # database went away mid-request). Either way the client sees a timeout.
            call.applied = 0
            call.logged = False
            call.outcome = "no COMMIT before the deadline: the session was ended, nothing applied"
            raise self._timeout(call, ambiguous=True) from None
        if not call.logged:
            call.outcome = _summary(outcomes)
        return outcomes

    def _write_in_transaction(
        self, call: _Call, batch: Sequence[Change], outcomes: list[ChangeOutcome], *, outermost: bool
    ) -> None:
        with transaction.atomic():
            # Only what validation and the writes touch: the response-curve columns would be
            # converted to Decimal for every row and never read here.
            live = call.live_entities().select_for_update().filter(external_id__in=call.entity_ids)
            rows = {row.external_id: row for row in live.only(*WRITE_COLUMNS)}
            dirty: dict[int, SandboxEntity] = {}
            fields: set[str] = set()
            for change in batch:
                row = rows.get(change.ref.external_id)
                error = self._refusal(call, change, row)
                if error is not None:
                    outcomes.append(self._outcome(call, change, OutcomeStatus.FAILED, error))
                    continue
                if call.validate_only:
                    outcomes.append(self._outcome(call, change, OutcomeStatus.VALIDATED))
                    continue
                if not call.fault_hits(row.external_id, FaultKind.SILENT_NOOP):
                    setattr(row, str(change.field), _stored_value(change))
                    dirty[row.pk] = row
                    fields.add(str(change.field))
                    call.applied += 1
                outcomes.append(self._outcome(call, change, OutcomeStatus.APPLIED))
            if dirty:
                now = timezone.now()
                for row in dirty.values():
                    row.updated_at = now
                _save_rows(list(dirty.values()), sorted(fields), updated_at=now)
            if dirty:
                # The request log commits with the change it records: a change is never
                # on the platform without its request in the log.
                lost = call.fault is not None and call.fault.kind == FaultKind.TIMEOUT_AFTER_APPLY
                call.outcome = _summary(outcomes) + ("; the response was lost (timeout)" if lost else "")
                self._log(call)
            self._within_deadline(call, outermost=outermost and bool(dirty))

    def _outcome(
        self, call: _Call, change: Change, status: OutcomeStatus, error: PlatformError | None = None
    ) -> ChangeOutcome:
        return ChangeOutcome(change=change, status=status, error=error, request_id=call.request_id)

    def _refusal(self, call: _Call, change: Change, row: SandboxEntity | None) -> PlatformError | None:
        """Why the platform refuses ``change`` (None when it accepts it)."""
        ref = change.ref
        what = f"{ref.entity_type} {ref.external_id}"
        if row is None or row.entity_type != ref.entity_type:
            return call.error(ErrorCode.NOT_FOUND, f"The sandbox has no {what} (deleted, or a wrong id).")
        unsupported = self.unsupported(change)
        if unsupported is not None:
            return unsupported.error
        allowed = FIELD_TARGETS[change.field]
        if ref.entity_type not in allowed:
            kinds = " and ".join(sorted(t.replace("_", " ") + "s" for t in allowed))
            return call.error(ErrorCode.NOT_SUPPORTED, f"{change.field} cannot be set on {what}: only on {kinds}.")
        if row.status == EntityStatus.REMOVED:
            return call.error(ErrorCode.NOT_FOUND, f"{what} is removed; a removed entity cannot be changed.")
        problem = _value_problem(change, self.config.currency)
        if problem:
            return call.error(ErrorCode.INVALID_VALUE, f"{what}: {problem}")
        if call.fault_hits(row.external_id, FaultKind.PARTIAL_FAILURE):
            return call.error(ErrorCode.INVALID_VALUE, f"{what}: the sandbox rejected {change.field} (injected fault).")
        return None


def _summary(outcomes: Sequence[ChangeOutcome]) -> str:
    counts = {status: sum(1 for o in outcomes if o.status == status) for status in OutcomeStatus}
    return ", ".join(f"{count} {status}" for status, count in counts.items() if count)


def _save_rows(rows: Sequence[SandboxEntity], fields: Sequence[str], *, updated_at: datetime) -> None:
    """Write ``fields`` and ``updated_at`` of every row with one prepared statement
    (``bulk_update``'s per-row CASE expressions cost ~1 ms a row at 10,000 changes)."""
    for row in rows:
        row.updated_at = updated_at
    bulk_set(rows, [*fields, "updated_at"])


def _value_problem(change: Change, currency: str) -> str:
    """What is wrong with the change's value, or an empty string."""
    value = change.value
    if change.field in MONEY_FIELDS:
        return _money_problem(change.field, value, currency)
    if change.field == Field.STATUS:
        if not isinstance(value, str) or value not in EntityStatus._value2member_map_:
            return f"status must be active, paused or removed; got {value!r}."
        return ""
    if not isinstance(value, dict):
        return f"{change.field} must be a JSON object; got {type(value).__name__}."
    return ""


def _money_problem(field: Field, value: Any, currency: str) -> str:
    if isinstance(value, float | bool) or not isinstance(value, Decimal | int | str):
        return f"{field} must be a decimal amount, not {type(value).__name__}."
    try:
        amount = check_precision(value, currency)
    except MoneyError as exc:
        return str(exc)
    if amount <= 0:
        return f"{field} must be greater than zero; got {amount} {currency}."
    if amount > MAX_AMOUNT:
        return f"{field} of {amount} {currency} exceeds the sandbox's maximum of {MAX_AMOUNT}."
    return ""


def _stored_value(change: Change) -> Any:
    if change.field in MONEY_FIELDS:
        return Decimal(change.value)
    if change.field == Field.STATUS:
        return str(EntityStatus(change.value))
    return change.value
