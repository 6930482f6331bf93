"""Google Ads executor: the official ``google-ads`` SDK (API v26) behind ``PlatformExecutor``.

Reads are GAQL through ``GoogleAdsService.SearchStream`` (one round trip per entity type
and 10,000 ids; performance is one round trip per level, campaign and ad group, with
``segments.date`` over the inclusive date range). Writes are update operations with field
masks, ``partial_failure=True``, at most 10,000 operations per request and never the same
resource twice in one request:

- campaign daily / lifetime budget -> ``CampaignBudgetService`` (``amount_micros`` /
  ``total_amount_micros`` of the campaign's budget; a shared budget moves every campaign
  on it);
- campaign status -> ``CampaignService``;
- ad group status and CPC bid -> ``AdGroupService``.

Every SDK failure is classified into the shared ``ErrorCode`` taxonomy; messages carry
the platform's error codes and text, never credentials.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal
from types import SimpleNamespace
from typing import Any, TypeVar

import grpc
from google.ads.googleads.client import GoogleAdsClient
from google.ads.googleads.errors import GoogleAdsException
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.auth.transport import requests as google_auth_requests
from google.oauth2.credentials import Credentials
from google.protobuf import field_mask_pb2

from platforms.base import PlatformExecutor, Throttle, chunked, failed_outcomes, no_throttle
from platforms.bidding import bid_change_refusal
from platforms.conflicts import shared_budget_conflicts
from platforms.credentials import missing_credentials
from platforms.money import MICROS_PER_UNIT, MoneyError, MoneyRules, google_rules
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

T = TypeVar("T")

API_VERSION = "v26"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
# "Mutate requests ... 10,000 operations per request" (system limits,
# https://developers.google.com/google-ads/api/docs/best-practices/quotas); the fake
# refuses more, and ENGINE_JOB_MAX_ACTIONS_GOOGLE_ADS / ENGINE_UNIT_SIZE_GOOGLE_ADS default to it.
MAX_OPERATIONS_PER_REQUEST = 10_000
# Ids per GAQL ``IN`` list. The API refuses "too many values" in a filter
# (QueryError.FILTER_HAS_TOO_MANY_VALUES) without documenting the limit
# (https://developers.google.com/google-ads/api/reference/rpc/v26/QueryErrorEnum.QueryError),
# so reads go out in lists of 1,000: a conservative size, and still 10 per mutate request.
MAX_IDS_PER_QUERY = 1_000
DEFAULT_RETRY_AFTER = 30.0  # seconds, when a quota error does not say how long to wait
FAILURE_METADATA_KEY = f"google.ads.googleads.{API_VERSION}.errors.googleadsfailure-bin"
REQUEST_ID_METADATA_KEY = "request-id"

_CAMPAIGN_FIELDS = (
    "campaign.id",
    "campaign.name",
    "campaign.status",
    "campaign_budget.id",
    "campaign_budget.resource_name",
    "campaign_budget.amount_micros",
    "campaign_budget.total_amount_micros",
    "campaign_budget.explicitly_shared",
    "campaign_budget.reference_count",
    "campaign.bidding_strategy_type",
)
_AD_GROUP_FIELDS = (
    "ad_group.id",
    "ad_group.name",
    "ad_group.status",
    "ad_group.effective_cpc_bid_micros",
    "campaign.id",
    "campaign.bidding_strategy_type",
)
_METRIC_FIELDS = (
    "segments.date",
    "metrics.cost_micros",
    "metrics.impressions",
    "metrics.clicks",
    "metrics.conversions",
    "metrics.conversions_value",
)
_PERFORMANCE_LEVELS = ((EntityType.CAMPAIGN, "campaign"), (EntityType.AD_SET, "ad_group"))
CONVERSIONS_QUANTUM = Decimal("0.01")  # Google reports fractional conversions; the mirror keeps two decimals

_STATUS_FROM_API = {"ENABLED": EntityStatus.ACTIVE, "PAUSED": EntityStatus.PAUSED, "REMOVED": EntityStatus.REMOVED}
_STATUS_TO_API = {EntityStatus.ACTIVE: "ENABLED", EntityStatus.PAUSED: "PAUSED"}

# (entity type, field) -> (mutate target, proto field). Anything else is not supported.
_WRITABLE: dict[tuple[EntityType, Field], tuple[str, str]] = {
    (EntityType.CAMPAIGN, Field.DAILY_BUDGET): ("budget", "amount_micros"),
    (EntityType.CAMPAIGN, Field.LIFETIME_BUDGET): ("budget", "total_amount_micros"),
    (EntityType.CAMPAIGN, Field.STATUS): ("campaign", "status"),
    (EntityType.AD_SET, Field.STATUS): ("ad_group", "status"),
    (EntityType.AD_SET, Field.BID): ("ad_group", "cpc_bid_micros"),
}
_TARGET_ORDER = ("budget", "campaign", "ad_group")

# A whole-request failure with one of these codes would hit every later request of the
# batch too: stop sending instead of hammering the API.
_STOP_BATCH_CODES = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.TRANSIENT, ErrorCode.AUTH_EXPIRED, ErrorCode.PERMISSION_DENIED}
)

_PLATFORM_EXCEPTIONS = (
    GoogleAdsException,
    api_exceptions.GoogleAPIError,
    auth_exceptions.GoogleAuthError,
    grpc.RpcError,
)


@functools.cache
def _sdk() -> SimpleNamespace:
    """The SDK's v26 message classes, imported on first use: importing them loads ~1,000
    modules (~0.5 s), which processes that never talk to Google Ads should not pay."""
    from google.ads.googleads.v26.enums.types.ad_group_status import AdGroupStatusEnum
    from google.ads.googleads.v26.enums.types.campaign_status import CampaignStatusEnum
    from google.ads.googleads.v26.errors.types.errors import GoogleAdsFailure
    from google.ads.googleads.v26.resources.types.ad_group import AdGroup
    from google.ads.googleads.v26.resources.types.campaign import Campaign
    from google.ads.googleads.v26.resources.types.campaign_budget import CampaignBudget
    from google.ads.googleads.v26.services.types import (
        ad_group_service,
        campaign_budget_service,
        campaign_service,
        google_ads_service,
    )

    return SimpleNamespace(
        GoogleAdsFailure=GoogleAdsFailure,
        SearchStreamRequest=google_ads_service.SearchGoogleAdsStreamRequest,
        targets={
            "budget": _Target(
                "CampaignBudgetService",
                "mutate_campaign_budgets",
                "campaignBudgets",
                CampaignBudget,
                campaign_budget_service.CampaignBudgetOperation,
                campaign_budget_service.MutateCampaignBudgetsRequest,
                None,
            ),
            "campaign": _Target(
                "CampaignService",
                "mutate_campaigns",
                "campaigns",
                Campaign,
                campaign_service.CampaignOperation,
                campaign_service.MutateCampaignsRequest,
                CampaignStatusEnum.CampaignStatus,
            ),
            "ad_group": _Target(
                "AdGroupService",
                "mutate_ad_groups",
                "adGroups",
                AdGroup,
                ad_group_service.AdGroupOperation,
                ad_group_service.MutateAdGroupsRequest,
                AdGroupStatusEnum.AdGroupStatus,
            ),
        },
    )


@dataclass(frozen=True)
class _Target:
    """One mutate service and the resource it updates."""

    service: str
    method: str
    collection: str  # in resource names: customers/{id}/{collection}/{id}
    resource_cls: Any
    operation_cls: Any
    request_cls: Any
    status_enum: Any  # the resource's status enum, None when it has no status we write


@dataclass
class _Write:
    """One supported change, converted to the API's value and resource."""

    index: int  # position in apply()'s changes
    change: Change
    target: str  # key of _sdk().targets
    proto_field: str
    value: Any  # micros or a status name
    resource_id: str = ""  # the budget id for budget writes, else the entity id


@dataclass
class _Operation:
    """One update operation: one resource, one or more fields, the changes it carries."""

    resource_id: str
    values: dict[str, Any] = field(default_factory=dict)
    writes: list[_Write] = field(default_factory=list)

    def accepts(self, write: _Write) -> bool:
        """Merging is safe when the field is new to the operation or set to the same value."""
        return self.values.get(write.proto_field, write.value) == write.value

    def add(self, write: _Write) -> None:
        self.values[write.proto_field] = write.value
        self.writes.append(write)


@dataclass
class _Request:
    target: str
    operations: list[_Operation] = field(default_factory=list)

    @property
    def writes(self) -> list[_Write]:
        return [w for op in self.operations for w in op.writes]


class _RequestIdRecorder(grpc.UnaryUnaryClientInterceptor):
    """Keeps the ``request-id`` of the last unary call on this thread.

    The SDK's service methods return only the response message, but the API sends the
    request id (what Google support asks for) in the call's trailing metadata, where the
    SDK's own logging interceptor reads it (``LoggingInterceptor._get_trailing_metadata``
    and ``get_request_id_from_metadata`` in google/ads/googleads/interceptors/); this
    interceptor is the one place it can be read on success. Errors carry it on the
    exception instead. Initial metadata is read only when the trailer has none. (The
    maintainers: "Request ID is actually sent in the trailing metadata of the response",
    https://github.com/googleads/google-ads-ruby/issues/318.)
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        self._local.request_id = None
        outcome = continuation(client_call_details, request)
        # The SDK's ExceptionInterceptor (innermost) wraps the call in a _UnaryUnaryWrapper
        # whose trailing_metadata() returns the *initial* metadata (response_wrappers.py in
        # google-ads 34), so the trailer is read from the call underneath it.
        self._local.request_id = _metadata_value(
            _trailing_metadata(_innermost_call(outcome)), REQUEST_ID_METADATA_KEY
        ) or _metadata_value(outcome.initial_metadata(), REQUEST_ID_METADATA_KEY)
        return outcome

    def last(self) -> str | None:
        return getattr(self._local, "request_id", None)


def _innermost_call(outcome: Any) -> Any:
    """The gRPC call under the interceptors' wrappers (grpc's ``_UnaryOutcome._call``, the
    SDK's ``_UnaryUnaryWrapper._underlay_call``), whose metadata is the server's own."""
    call = outcome
    for _ in range(16):  # a handful of interceptor levels; never loop for ever
        if type(call).__name__ not in _CALL_WRAPPERS:
            break
        call = getattr(call, "_underlay_call", None) or call._call
    return call


_CALL_WRAPPERS = frozenset({"_UnaryOutcome", "_UnaryUnaryWrapper"})


class GoogleAdsExecutor(PlatformExecutor):
    """Reads and writes one Google Ads customer through the official SDK.

    Guarantees beyond ``PlatformExecutor``'s: the SDK client and its service clients are
    built on first use and reused; no request mutates one resource twice or carries more
    than 10,000 operations; timeouts of a mutate yield ``UNKNOWN`` outcomes (it may have
    applied); after a whole-request failure that would repeat (rate limit, 5xx/timeout,
    auth, permission) the rest of the batch is not sent and fails with the same code.
    """

    platform = "google_ads"
    max_operations_per_request = MAX_OPERATIONS_PER_REQUEST
    supported_fields = frozenset({Field.DAILY_BUDGET, Field.LIFETIME_BUDGET, Field.STATUS, Field.BID})

    def __init__(self, config: ConnectionConfig, *, throttle: Throttle = no_throttle) -> None:
        super().__init__(config, throttle=throttle)
        self.customer_id = _digits(config.account_id)
        try:
            # Reads show micros exactly with at least the ISO decimals: no billable unit needed.
            self._display = google_rules(config.currency, config.billable_unit_micros)
        except MoneyError as exc:
            raise ValueError(f"Google Ads connection {config.connection_id}: {exc}") from None
        self._rules: MoneyRules | None = self._display if config.billable_unit_micros else None
        self._rules_error: PlatformError | None = None
        build_credentials(config.credentials)  # refuse missing OAuth fields now, not on the first call
        self._client: GoogleAdsClient | None = None
        self._services: dict[str, Any] = {}
        self._request_ids = _RequestIdRecorder()

    # The SDK ---------------------------------------------------------------------------

    @property
    def client(self) -> GoogleAdsClient:
        if self._client is None:
            self._client = _build_client(self.config)
        return self._client

    def _refresh_token_if_needed(self) -> None:
        """Refresh an expired or missing access token before a call, not inside gRPC's auth
        plugin: there a revoked refresh token surfaces as UNAVAILABLE (transient, retried in
        vain) instead of ``RefreshError`` (auth_expired: reconnect the account)."""
        credentials = self.client.credentials
        if not credentials.valid:
            credentials.refresh(google_auth_requests.Request())

    def _call(self, send: Callable[[], T]) -> T:
        """``send()`` with a fresh token; once more after one refresh if the API refused the
        token (revoked early, or the clocks disagree): only a second refusal, or a refresh
        the token endpoint refuses, counts as ``auth_expired``. Refused requests changed
        nothing, so sending again is safe."""
        self._refresh_token_if_needed()
        try:
            return send()
        except _PLATFORM_EXCEPTIONS as exc:
            credentials = self.client.credentials
            if classify_exception(exc).code != ErrorCode.AUTH_EXPIRED or not credentials.refresh_token:
                raise
            credentials.refresh(google_auth_requests.Request())
            return send()

    def _service(self, name: str) -> Any:
        if name not in self._services:
            self._services[name] = self.client.get_service(name, version=API_VERSION, interceptors=[self._request_ids])
        return self._services[name]

    def close(self) -> None:
        """Close the gRPC channels opened so far (a later call opens new ones)."""
        for service in self._services.values():
            service.transport.close()
        self._services.clear()

    # Money ------------------------------------------------------------------------------

    def money_rules(self) -> MoneyRules:
        """The account currency's rules on Google Ads: micros in steps of its billable unit.

        The unit comes from the connection (stored by the last sync) or, when unknown, from
        one GAQL read of ``currency_constant.billable_unit_micros``, kept for this
        executor's life. Raises ``PlatformCallError`` when that read fails.
        """
        if self._rules is None:
            code = self.config.currency.upper()
            if not code.isalpha():
                raise ValueError(f"{code!r} is not a currency code")
            query = _query(
                ("currency_constant.code", "currency_constant.billable_unit_micros"),
                "currency_constant",
                f"currency_constant.code = '{code}'",
            )
            units = [row.currency_constant.billable_unit_micros for row in self._search(query)]
            self._rules = google_rules(code, units[0] if units and units[0] > 0 else None)
        return self._rules

    def account_facts(self) -> dict[str, Any]:
        """The billable unit of the account currency, for the connection to remember."""
        return {"billable_unit_micros": self.money_rules().grain}

    # Reads -----------------------------------------------------------------------------

    def read_state(self, refs: Iterable[EntityRef]) -> dict[tuple[str, str], EntityState]:
        refs = list(refs)
        states: dict[tuple[str, str], EntityState] = {}
        for entity_type, fields, resource, to_state in self._readers():
            ids = _google_ids(ref.external_id for ref in refs if ref.entity_type == entity_type)
            for ids_chunk in chunked(ids, MAX_IDS_PER_QUERY):
                query = _query(fields, resource, f"{resource}.id IN ({', '.join(ids_chunk)})")
                for row in self._search(query, raw=True):
                    state = to_state(row)
                    states[state.key] = state
        return states

    def list_entities(self) -> list[EntityState]:
        """Every campaign and ad group that is not removed (removed ones are one-way and
        never change again, so a sync has nothing to do with them)."""
        entities: list[EntityState] = []
        for _entity_type, fields, resource, to_state in self._readers():
            where = f"{resource}.status != 'REMOVED'"
            if resource == "ad_group":
                where += " AND campaign.status != 'REMOVED'"
            entities.extend(to_state(row) for row in self._search(_query(fields, resource, where), raw=True))
        return entities

    def read_performance(self, since: dt.date, until: dt.date) -> list[PerformanceRow]:
        """Daily rows of every campaign and ad group with delivery between the dates (inclusive).

        Google leaves out days without delivery; removed entities keep their past rows.
        """
        if since > until:
            raise ValueError(f"since ({since}) is after until ({until})")
        where = f"segments.date BETWEEN '{since.isoformat()}' AND '{until.isoformat()}'"
        rows: list[PerformanceRow] = []
        for entity_type, resource in _PERFORMANCE_LEVELS:
            query = _query((f"{resource}.id", *_METRIC_FIELDS), resource, where)
            for row in self._search(query, raw=True):
                rows.append(self._performance_row(entity_type, str(getattr(row, resource).id), row))
        return rows

    def _performance_row(self, entity_type: EntityType, external_id: str, row: Any) -> PerformanceRow:
        metrics = row.metrics
        quantum = Decimal(1).scaleb(-self._display.display_places)
        return PerformanceRow(
            entity_type=entity_type,
            external_id=external_id,
            date=dt.date.fromisoformat(row.segments.date),
            spend=self._spend(metrics.cost_micros, quantum),
            impressions=metrics.impressions,
            clicks=metrics.clicks,
            conversions=_decimal(metrics.conversions).quantize(CONVERSIONS_QUANTUM, ROUND_HALF_EVEN),
            revenue=_decimal(metrics.conversions_value).quantize(quantum, ROUND_HALF_EVEN),
        )

    def _spend(self, micros: int, quantum: Decimal) -> Decimal:
        """A day's cost in the account currency. Google accrues cost in micros but bills whole
        minor units, so a reported cost is rounded half-even to the display precision (a
        report, never a value BudgetRadar writes back)."""
        return (Decimal(micros) / MICROS_PER_UNIT).quantize(quantum, ROUND_HALF_EVEN)

    def _readers(self) -> list[tuple[EntityType, tuple[str, ...], str, Any]]:
        return [
            (EntityType.CAMPAIGN, _CAMPAIGN_FIELDS, "campaign", self._campaign_state),
            (EntityType.AD_SET, _AD_GROUP_FIELDS, "ad_group", self._ad_group_state),
        ]

    def _search(self, query: str, *, raw: bool = False) -> list[Any]:
        """All rows of one GAQL query in one SearchStream round trip; ``raw`` gives protobuf
        rows instead of proto-plus ones (much faster to read when there are many)."""
        request = _sdk().SearchStreamRequest(customer_id=self.customer_id, query=query)
        self.throttle(1)
        self.round_trips += 1

        def read() -> list[Any]:
            stream = self._service("GoogleAdsService").search_stream(
                request=request, timeout=self.config.request_timeout
            )
            if raw:
                return [row for batch in stream for row in type(batch).pb(batch).results]
            return [row for batch in stream for row in batch.results]

        try:
            return self._call(read)
        except _PLATFORM_EXCEPTIONS as exc:
            raise PlatformCallError(classify_exception(exc)) from exc

    # The readers take raw protobuf rows (``_search(raw=True)``): a 10,000-row read through
    # proto-plus wrappers costs about a second of attribute lookups.

    def _campaign_state(self, row: Any) -> EntityState:
        campaign, budget = row.campaign, row.campaign_budget
        return EntityState(
            entity_type=EntityType.CAMPAIGN,
            external_id=str(campaign.id),
            name=campaign.name,
            status=_entity_status(_enum_name(campaign, "status"), f"campaign {campaign.id}"),
            currency=self.config.currency,
            daily_budget=self._money(budget, "amount_micros"),
            lifetime_budget=self._money(budget, "total_amount_micros"),
            budget_id=str(budget.id) if budget.id else None,
            budget_shared=budget.explicitly_shared,
            budget_reference_count=budget.reference_count,
            bid_strategy=_strategy_name(campaign),
        )

    def _ad_group_state(self, row: Any) -> EntityState:
        ad_group = row.ad_group
        return EntityState(
            entity_type=EntityType.AD_SET,
            external_id=str(ad_group.id),
            name=ad_group.name,
            status=_entity_status(_enum_name(ad_group, "status"), f"ad group {ad_group.id}"),
            currency=self.config.currency,
            parent_external_id=str(row.campaign.id),
            # The bid in force: null under automated bidding, where a CPC bid is ignored.
            bid=self._money(ad_group, "effective_cpc_bid_micros"),
            bid_strategy=_strategy_name(row.campaign),
        )

    def _money(self, message: Any, name: str) -> Decimal | None:
        """An optional micros field as Decimal in the account currency (None when unset),
        exact: a live value finer than the billable unit is shown as it is, never rounded,
        so a diff shows the truth (and reading needs no billable unit)."""
        if not _present(message, name):
            return None
        return self._display.exact(getattr(message, name))

    # Writes ----------------------------------------------------------------------------

    def unsupported(self, change: Change) -> ChangeOutcome | None:
        """NOT_SUPPORTED for anything but campaign budgets/status and ad group status/bid."""
        if (change.ref.entity_type, change.field) in _WRITABLE:
            return None
        return _failed(
            change,
            ErrorCode.NOT_SUPPORTED,
            f"{change.field} of a {change.ref.entity_type} cannot be changed on Google Ads by "
            f"BudgetRadar ({change.ref.entity_type} {change.ref.external_id}).",
        )

    def apply(self, changes: Sequence[Change], *, validate_only: bool = False) -> list[ChangeOutcome]:
        outcomes: dict[int, ChangeOutcome] = {}
        writes: list[_Write] = []
        self._rules_error = None
        if any(change.field in MONEY_FIELDS for change in changes):
            try:
                self.money_rules()
            except PlatformCallError as exc:  # every money change fails with it; nothing is sent
                self._rules_error = exc.error
        for index, change in enumerate(changes):
            prepared = self.unsupported(change) or self._prepare(index, change)
            if isinstance(prepared, ChangeOutcome):
                outcomes[index] = prepared
            else:
                writes.append(prepared)
        writes = self._resolve_budgets(writes, outcomes)
        writes = self._refuse_budget_conflicts(writes, outcomes)
        writes = self._refuse_ignored_bids(writes, outcomes)
        stop_error: PlatformError | None = None
        for request in _plan_requests(writes):
            if stop_error is not None:
                outcomes.update(_not_sent(request, stop_error))
                continue
            sent, stop_error = self._send(request, validate_only)
            outcomes.update(sent)
        return [outcomes[index] for index in range(len(changes))]

    def _prepare(self, index: int, change: Change) -> _Write | ChangeOutcome:
        """Convert the value for the API, or refuse it before anything is sent."""
        target, proto_field = _WRITABLE[(change.ref.entity_type, change.field)]
        if not change.ref.external_id.isdigit():
            return _failed(
                change,
                ErrorCode.NOT_FOUND,
                f"{change.ref.entity_type} {change.ref.external_id!r} is not a Google Ads id.",
            )
        if change.field == Field.STATUS:
            return self._prepare_status(index, change, target)
        if self._rules is None:
            return _failed(
                change,
                self._rules_error.code if self._rules_error else ErrorCode.UNKNOWN,
                f"{change.field} of {change.ref.entity_type} {change.ref.external_id} was not sent: the billable "
                f"unit of {self.config.currency} could not be read. "
                + (self._rules_error.message if self._rules_error else ""),
            )
        try:
            micros = self._rules.to_platform(change.value)
        except MoneyError as exc:
            return _failed(
                change,
                ErrorCode.INVALID_VALUE,
                f"{change.field} of {change.ref.entity_type} {change.ref.external_id}: {exc}",
            )
        if target == "budget":
            # An unknown budget is resolved from the campaign before sending (_resolve_budgets).
            budget_id = change.ref.budget_id or ""
            return _Write(index, change, target, proto_field, micros, budget_id if budget_id.isdigit() else "")
        return _Write(index, change, target, proto_field, micros, change.ref.external_id)

    def _prepare_status(self, index: int, change: Change, target: str) -> _Write | ChangeOutcome:
        try:
            status = EntityStatus(change.value)
        except ValueError:
            return _failed(
                change,
                ErrorCode.INVALID_VALUE,
                f"{change.value!r} is not a status (active, paused) for {change.ref.entity_type} "
                f"{change.ref.external_id}.",
            )
        if status not in _STATUS_TO_API:
            # Removing is one-way and a separate kind of operation; BudgetRadar never does it.
            return _failed(
                change,
                ErrorCode.NOT_SUPPORTED,
                f"Removing {change.ref.entity_type} {change.ref.external_id} is one-way; "
                "BudgetRadar only enables and pauses on Google Ads.",
            )
        return _Write(index, change, target, "status", _STATUS_TO_API[status], change.ref.external_id)

    def _resolve_budgets(self, writes: list[_Write], outcomes: dict[int, ChangeOutcome]) -> list[_Write]:
        """Fill in the budget of budget writes whose ref lacks it, with one GAQL read for all."""
        missing = [w for w in writes if w.target == "budget" and not w.resource_id]
        if not missing:
            return writes
        try:
            budgets = self._budget_ids(_google_ids(w.change.ref.external_id for w in missing))
        except PlatformCallError as exc:
            outcomes.update((w.index, failed_outcomes([w.change], exc.error)[0]) for w in missing)
            return [w for w in writes if w.resource_id]
        for write in missing:
            write.resource_id = budgets.get(write.change.ref.external_id, "")
            if not write.resource_id:
                message = f"campaign {write.change.ref.external_id} was not found on Google Ads."
                outcomes[write.index] = _failed(write.change, ErrorCode.NOT_FOUND, message)
        return [w for w in writes if w.resource_id]

    def _refuse_budget_conflicts(self, writes: list[_Write], outcomes: dict[int, ChangeOutcome]) -> list[_Write]:
        """Two values for one (shared) budget in one apply: refuse every change involved,
        naming the others, instead of letting the last one win."""
        budget_writes = [w for w in writes if w.target == "budget"]
        changes = [w.change for w in budget_writes]
        refused: set[int] = set()
        for conflict in shared_budget_conflicts(changes, [w.resource_id for w in budget_writes]):
            for position in conflict.positions:
                write = budget_writes[position]
                refused.add(write.index)
                outcomes[write.index] = _failed(
                    write.change, ErrorCode.INVALID_VALUE, conflict.message_for(changes, position)
                )
        return [w for w in writes if w.index not in refused]

    def _refuse_ignored_bids(self, writes: list[_Write], outcomes: dict[int, ChangeOutcome]) -> list[_Write]:
        """CPC bids of ad groups whose campaign bids automatically are ignored by Google
        (see ``platforms.bidding``): read the strategies (one GAQL read per 1,000 ad
        groups) and refuse those bids rather than send a change that does nothing."""
        bids = [w for w in writes if w.target == "ad_group" and w.proto_field == "cpc_bid_micros"]
        if not bids:
            return writes
        try:
            strategies = self._bidding_strategies(_google_ids(w.resource_id for w in bids))
        except PlatformCallError as exc:
            outcomes.update((w.index, failed_outcomes([w.change], exc.error)[0]) for w in bids)
            return [w for w in writes if w not in bids]
        refused: set[int] = set()
        for write in bids:
            subject = f"ad group {write.resource_id}"
            reason = bid_change_refusal(self.platform, strategies.get(write.resource_id), subject=subject)
            if reason:
                refused.add(write.index)
                outcomes[write.index] = _failed(write.change, ErrorCode.NOT_SUPPORTED, f"{reason} Not sent.")
        return [w for w in writes if w.index not in refused]

    def _bidding_strategies(self, ad_group_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for ids_chunk in chunked(ad_group_ids, MAX_IDS_PER_QUERY):
            where = f"ad_group.id IN ({', '.join(ids_chunk)})"
            query = _query(("ad_group.id", "campaign.bidding_strategy_type"), "ad_group", where)
            found.update((str(row.ad_group.id), row.campaign.bidding_strategy_type.name) for row in self._search(query))
        return found

    def _budget_ids(self, campaign_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for ids_chunk in chunked(campaign_ids, MAX_IDS_PER_QUERY):
            where = f"campaign.id IN ({', '.join(ids_chunk)})"
            query = _query(("campaign.id", "campaign_budget.id"), "campaign", where)
            found.update((str(row.campaign.id), str(row.campaign_budget.id)) for row in self._search(query))
        return found

    def _send(self, request: _Request, validate_only: bool) -> tuple[dict[int, ChangeOutcome], PlatformError | None]:
        """Send one mutate; outcomes by change index, and the error that should stop the batch."""
        target = _sdk().targets[request.target]
        # Built as raw protobuf and wrapped once: proto-plus marshalling of each operation
        # cost ~50 us, more than the rest of a 10,000-operation mutate (bench/platform_apply.py).
        api_request = target.request_cls.wrap(
            target.request_cls.pb()(
                customer_id=self.customer_id,
                operations=[self._operation(target, op) for op in request.operations],
                partial_failure=True,
                validate_only=validate_only,
            )
        )
        try:
            self.throttle(len(request.operations))
        except PlatformCallError as exc:  # the daily operations budget is spent: nothing sent
            writes = request.writes
            outcomes = failed_outcomes([w.change for w in writes], exc.error)
            return {w.index: o for w, o in zip(writes, outcomes, strict=True)}, exc.error
        started = time.monotonic()
        if not validate_only:
            try:
                started = self.begin_write([w.change for w in request.writes])
            except PlatformCallError as exc:  # the deadline passed inside the fence: nothing sent
                writes = request.writes
                outcomes = failed_outcomes([w.change for w in writes], exc.error)
                return {w.index: o for w, o in zip(writes, outcomes, strict=True)}, exc.error
        self.round_trips += 1
        method = getattr(self._service(target.service), target.method)
        # Only what is left of the deadline: gRPC sends it with the call so the server knows
        # when to give up (https://grpc.io/docs/guides/deadlines/).
        timeout = max(self.seconds_left(started), 0.001)
        try:
            response = self._call(lambda: method(request=api_request, timeout=timeout))
        except _PLATFORM_EXCEPTIONS as exc:
            error = classify_exception(exc)
            # A mutate that timed out may have been applied; a validate-only one changed nothing.
            ambiguous = _timed_out(exc) and not validate_only
            writes = request.writes
            outcomes = failed_outcomes([w.change for w in writes], error, ambiguous=ambiguous)
            by_index = {w.index: o for w, o in zip(writes, outcomes, strict=True)}
            return by_index, error if error.code in _STOP_BATCH_CODES else None
        return self._outcomes(request, response, validate_only), None

    def _operation(self, target: _Target, op: _Operation) -> Any:
        """One update operation as a raw protobuf message."""
        resource = target.resource_cls.pb()(
            resource_name=f"customers/{self.customer_id}/{target.collection}/{op.resource_id}"
        )
        for name, value in op.values.items():
            setattr(resource, name, target.status_enum[value] if name == "status" else value)
        # An explicit mask: protobuf_helpers.field_mask() compares with default values and
        # would silently drop a field set to 0 (a zero bid or budget).
        mask = field_mask_pb2.FieldMask(paths=sorted(op.values))
        return target.operation_cls.pb()(update=resource, update_mask=mask)

    def _outcomes(self, request: _Request, response: Any, validate_only: bool) -> dict[int, ChangeOutcome]:
        """Per-change outcomes from a mutate response: failed operations come from its
        ``partial_failure_error``, located by operation index."""
        request_id = self._request_ids.last()
        errors = _operation_errors(response.partial_failure_error)
        ok_status = OutcomeStatus.VALIDATED if validate_only else OutcomeStatus.APPLIED
        outcomes: dict[int, ChangeOutcome] = {}
        for position, op in enumerate(request.operations):
            error = _error_from_ads_errors(errors[position], request_id) if position in errors else None
            for write in op.writes:
                if error is None:
                    outcomes[write.index] = ChangeOutcome(write.change, ok_status, request_id=request_id)
                    continue
                ref = write.change.ref
                located = replace(error, message=f"{error.message} ({ref.entity_type} {ref.external_id})")
                outcomes[write.index] = ChangeOutcome(write.change, OutcomeStatus.FAILED, located, request_id)
        return outcomes


# Planning ------------------------------------------------------------------------------


def _plan_requests(writes: Sequence[_Write]) -> list[_Request]:
    """Group writes into as few requests as the API allows.

    Writes on one resource merge into one operation while their fields do not clash; a
    clashing write becomes a new operation that goes into a later request than the
    previous one on that resource (so the API sees them in the caller's order and never
    twice in one request). Requests hold at most 10,000 operations.
    """
    requests: list[_Request] = []
    for target in _TARGET_ORDER:
        requests.extend(_plan_target([w for w in writes if w.target == target], target))
    return requests


def _plan_target(writes: Sequence[_Write], target: str) -> list[_Request]:
    requests: list[_Request] = []
    latest: dict[str, tuple[_Operation, int]] = {}  # resource -> (its last operation, its request)
    first_open = 0  # every request before this one is full
    for write in writes:
        previous = latest.get(write.resource_id)
        if previous is not None and previous[0].accepts(write):
            previous[0].add(write)
            continue
        position = max(first_open, previous[1] + 1 if previous else 0)
        while position < len(requests) and len(requests[position].operations) >= MAX_OPERATIONS_PER_REQUEST:
            position += 1
        if position == len(requests):
            requests.append(_Request(target))
        operation = _Operation(write.resource_id)
        operation.add(write)
        requests[position].operations.append(operation)
        latest[write.resource_id] = (operation, position)
        while first_open < len(requests) and len(requests[first_open].operations) >= MAX_OPERATIONS_PER_REQUEST:
            first_open += 1
    return requests


def _not_sent(request: _Request, cause: PlatformError) -> dict[int, ChangeOutcome]:
    error = PlatformError(
        code=cause.code,
        message=f"Not sent: an earlier request of this batch failed ({cause.code}: {cause.message})",
        retry_after=cause.retry_after,
        request_id=None,
    )
    return {w.index: ChangeOutcome(w.change, OutcomeStatus.FAILED, error=error) for w in request.writes}


# Error classification --------------------------------------------------------------------

# GoogleAdsError codes: first by (error type, code name), then by error type alone.
_BY_CODE: dict[tuple[str, str], ErrorCode] = {
    ("request_error", "RESOURCE_NOT_FOUND"): ErrorCode.NOT_FOUND,
    ("mutate_error", "RESOURCE_NOT_FOUND"): ErrorCode.NOT_FOUND,
    ("campaign_budget_error", "CAMPAIGN_BUDGET_REMOVED"): ErrorCode.NOT_FOUND,
    ("operation_access_denied_error", "OPERATION_NOT_PERMITTED_FOR_REMOVED_RESOURCE"): ErrorCode.NOT_FOUND,
    ("database_error", "CONCURRENT_MODIFICATION"): ErrorCode.CONFLICT,
    ("quota_error", "ACCESS_PROHIBITED"): ErrorCode.PERMISSION_DENIED,
}
_BY_TYPE: dict[str, ErrorCode] = {
    "authentication_error": ErrorCode.AUTH_EXPIRED,
    "authorization_error": ErrorCode.PERMISSION_DENIED,
    "operation_access_denied_error": ErrorCode.PERMISSION_DENIED,
    "range_error": ErrorCode.INVALID_VALUE,
    "field_error": ErrorCode.INVALID_VALUE,
    "campaign_budget_error": ErrorCode.INVALID_VALUE,
    "campaign_error": ErrorCode.INVALID_VALUE,
    "ad_group_error": ErrorCode.INVALID_VALUE,
    "bidding_error": ErrorCode.INVALID_VALUE,
    "internal_error": ErrorCode.TRANSIENT,
    "quota_error": ErrorCode.RATE_LIMITED,
}
# gRPC failures that carry no GoogleAdsFailure (or whose status says it all).
_BY_EXCEPTION: tuple[tuple[type[Exception], ErrorCode], ...] = (
    (api_exceptions.ResourceExhausted, ErrorCode.RATE_LIMITED),
    (api_exceptions.InternalServerError, ErrorCode.TRANSIENT),
    (api_exceptions.ServiceUnavailable, ErrorCode.TRANSIENT),
    (api_exceptions.DeadlineExceeded, ErrorCode.TRANSIENT),
    (api_exceptions.Unauthenticated, ErrorCode.AUTH_EXPIRED),
    (api_exceptions.PermissionDenied, ErrorCode.PERMISSION_DENIED),
    (api_exceptions.NotFound, ErrorCode.NOT_FOUND),
    (api_exceptions.Aborted, ErrorCode.CONFLICT),
    (auth_exceptions.RefreshError, ErrorCode.AUTH_EXPIRED),
    (auth_exceptions.TransportError, ErrorCode.TRANSIENT),
)


def classify_exception(exc: BaseException) -> PlatformError:
    """Map anything the SDK raises for a failed call onto the shared taxonomy."""
    if isinstance(exc, grpc.RpcError):  # not wrapped by the SDK's api_core layer
        exc = api_exceptions.from_grpc_error(exc)
    if isinstance(exc, GoogleAdsException):
        return _error_from_ads_errors(list(exc.failure.errors), exc.request_id, grpc_error=exc.error)
    call = getattr(exc, "response", None) if isinstance(exc, api_exceptions.GoogleAPICallError) else None
    metadata = _trailing_metadata(call)
    failure = _failure_from_metadata(metadata)
    request_id = _metadata_value(metadata, REQUEST_ID_METADATA_KEY)
    code = next((code for cls, code in _BY_EXCEPTION if isinstance(exc, cls)), ErrorCode.UNKNOWN)
    detail = _describe(list(failure.errors)) if failure is not None else _exception_text(exc)
    retry_after = None
    if code == ErrorCode.RATE_LIMITED:
        retry_after = _retry_delay(list(failure.errors) if failure else [], exc) or DEFAULT_RETRY_AFTER
    return PlatformError(
        code=code,
        message=f"Google Ads: {detail}",
        retry_after=retry_after,
        request_id=request_id,
        raw={"exception": type(exc).__name__},
    )


def _error_from_ads_errors(errors: list[Any], request_id: str | None, grpc_error: Any = None) -> PlatformError:
    code = _code_of(errors[0]) if errors else ErrorCode.UNKNOWN
    retry_after = (_retry_delay(errors, None) or DEFAULT_RETRY_AFTER) if code == ErrorCode.RATE_LIMITED else None
    raw: dict[str, Any] = {"errors": [_error_code_pair(e) for e in errors]}
    if grpc_error is not None:
        raw["grpc_status"] = grpc_error.code().name
    return PlatformError(
        code=code, message=f"Google Ads: {_describe(errors)}", retry_after=retry_after, request_id=request_id, raw=raw
    )


def _code_of(error: Any) -> ErrorCode:
    error_type, name = _error_code_pair(error)
    return _BY_CODE.get((error_type, name)) or _BY_TYPE.get(error_type, ErrorCode.UNKNOWN)


def _error_code_pair(error: Any) -> tuple[str, str]:
    """("range_error", "TOO_LOW") for a GoogleAdsError."""
    pb = type(error.error_code).pb(error.error_code)
    error_type = pb.WhichOneof("error_code") or "unknown"
    value = getattr(pb, error_type, 0)
    enum_type = pb.DESCRIPTOR.fields_by_name[error_type].enum_type if error_type != "unknown" else None
    enum_value = enum_type.values_by_number.get(value) if enum_type else None
    return error_type, enum_value.name if enum_value else str(value)


def _describe(errors: list[Any]) -> str:
    """The API's own words for up to three errors, with their codes."""
    parts = [f"{'.'.join(_error_code_pair(e))}: {e.message}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more if parts else "request failed without details"


def _retry_delay(errors: list[Any], exc: BaseException | None) -> float | None:
    """Seconds to wait, from the failure's quota details or a google.rpc.RetryInfo."""
    delays = [
        e.details.quota_error_details.retry_delay
        for e in errors
        if "details" in e and "quota_error_details" in e.details
    ]
    delays += [d.retry_delay for d in getattr(exc, "details", None) or [] if hasattr(d, "retry_delay")]
    return next((seconds for seconds in map(_seconds, delays) if seconds > 0), None)


def _seconds(delay: Any) -> float:
    """A Duration as seconds: proto-plus hands out timedelta, raw protobuf a Duration message."""
    if isinstance(delay, dt.timedelta):
        return delay.total_seconds()
    return delay.seconds + delay.nanos / 1e9


def _operation_errors(status: Any) -> dict[int, list[Any]]:
    """GoogleAdsErrors of a partial_failure_error by the operation index they point at."""
    by_index: dict[int, list[Any]] = {}
    for detail in status.details:
        if not detail.type_url.endswith(".GoogleAdsFailure"):
            continue
        for error in _sdk().GoogleAdsFailure.deserialize(detail.value).errors:
            elements = error.location.field_path_elements
            if elements and elements[0].field_name == "operations":
                by_index.setdefault(elements[0].index, []).append(error)
    return by_index


def _timed_out(exc: BaseException) -> bool:
    if isinstance(exc, grpc.RpcError):
        exc = api_exceptions.from_grpc_error(exc)
    return isinstance(exc, api_exceptions.DeadlineExceeded)


def _failure_from_metadata(metadata: Sequence[tuple[str, Any]]) -> Any:
    raw = _metadata_value(metadata, FAILURE_METADATA_KEY)
    return _sdk().GoogleAdsFailure.deserialize(raw) if raw else None


def _trailing_metadata(call: Any) -> Sequence[tuple[str, Any]]:
    try:
        return tuple(call.trailing_metadata() or ()) if call is not None else ()
    except (AttributeError, TypeError):
        return ()


def _metadata_value(metadata: Sequence[tuple[str, Any]] | None, key: str) -> Any:
    return next((value for name, value in metadata or () if name == key), None)


def _exception_text(exc: BaseException) -> str:
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return f"{exc.grpc_status_code.name if exc.grpc_status_code else type(exc).__name__}: {exc.message}"
    # google-auth errors quote the token endpoint's answer, never the refresh token itself.
    return f"{type(exc).__name__}: {exc}"


# Small helpers ---------------------------------------------------------------------------


def build_credentials(secrets: dict[str, Any]) -> Credentials:
    """OAuth credentials from the client id/secret and the refresh token.

    A stored ``access_token`` is only a cache: it is used with its ``token_expiry`` (ISO
    8601) and refreshed before that; without an expiry it is dropped, because google-auth
    would take a token without expiry as valid for ever while Google's last about an hour.
    ``token_uri`` overrides Google's token endpoint (tests point it at a local one).
    Raises ``ValueError`` naming the missing fields.
    """
    missing = missing_credentials("google_ads", secrets)  # the fields the admin form asks for
    if missing:
        raise ValueError(f"Google Ads credentials lack {', '.join(missing)}; reconnect the account.")
    expiry = _expiry(secrets.get("token_expiry"))
    return Credentials(
        token=(secrets.get("access_token") or None) if expiry is not None else None,
        expiry=expiry,
        refresh_token=secrets["refresh_token"],
        token_uri=secrets.get("token_uri") or DEFAULT_TOKEN_URI,
        client_id=secrets["client_id"],
        client_secret=secrets["client_secret"],
    )


def _expiry(raw: Any) -> dt.datetime | None:
    """A stored token expiry as the naive UTC datetime google-auth compares with."""
    if not raw:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(raw))
    except ValueError:
        return None
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _build_client(config: ConnectionConfig) -> GoogleAdsClient:
    """An SDK client from the connection's secrets; never refreshes a token at build time
    (``load_from_dict`` would, over the network, at once): ``build_credentials`` makes
    credentials that google-auth refreshes through ``token_uri`` on first use."""
    secrets = config.credentials
    credentials = build_credentials(secrets)
    login_customer_id = _digits(secrets.get("login_customer_id") or "") or None
    return GoogleAdsClient(
        credentials=credentials,
        developer_token=secrets.get("developer_token") or None,
        endpoint=config.api_base_url or None,
        login_customer_id=login_customer_id,
        version=API_VERSION,
        use_proto_plus=True,
    )


def _strategy_name(campaign: Any) -> str | None:
    """The campaign's (raw protobuf) BiddingStrategyType name; None when the API left it unset."""
    name = _enum_name(campaign, "bidding_strategy_type") if _present(campaign, "bidding_strategy_type") else ""
    return name if name not in ("", "UNSPECIFIED", "UNKNOWN") else None


def _present(message: Any, name: str) -> bool:
    """proto-plus's ``name in message`` for a raw protobuf message: set, for a field that
    tracks presence (``optional``); not the default value, for one that does not."""
    try:
        return message.HasField(name)
    except ValueError:
        return bool(getattr(message, name))


def _enum_name(message: Any, name: str) -> str:
    """The name of a raw protobuf message's enum value (``ENABLED``), as proto-plus gives it."""
    return _enum_names(message.DESCRIPTOR, name).get(getattr(message, name), "UNKNOWN")


@functools.cache
def _enum_names(descriptor: Any, name: str) -> dict[int, str]:
    return {value.number: value.name for value in descriptor.fields_by_name[name].enum_type.values}


def _query(fields: Sequence[str], resource: str, where: str) -> str:
    return f"SELECT {', '.join(fields)} FROM {resource} WHERE {where}"


def _google_ids(ids: Iterable[str]) -> list[str]:
    """Distinct numeric ids in first-seen order; anything else cannot exist on Google Ads
    (and must never reach a GAQL string)."""
    return list(dict.fromkeys(i for i in ids if i.isdigit()))


def _decimal(value: float) -> Decimal:
    """A float the API reports (conversions, their value) as the Decimal it prints as."""
    return Decimal(repr(value))


def _digits(customer_id: str) -> str:
    return customer_id.replace("-", "").strip()


def _entity_status(api_status: str, what: str) -> EntityStatus:
    try:
        return _STATUS_FROM_API[api_status]
    except KeyError:
        raise PlatformCallError(
            PlatformError(
                code=ErrorCode.UNKNOWN,
                message=f"Google Ads reported status {api_status} for {what}, which BudgetRadar does not understand.",
            )
        ) from None


def _failed(change: Change, code: ErrorCode, message: str) -> ChangeOutcome:
    return ChangeOutcome(change=change, status=OutcomeStatus.FAILED, error=PlatformError(code=code, message=message))
