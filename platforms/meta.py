"""Meta (Facebook) Marketing API executor on the official ``facebook-business`` SDK.

Every read and write goes through the Graph API's Batch API (at most 50 requests per
HTTP request), so N changes cost about N/50 round trips. Listing and performance read
the account's edges page by page (``campaigns``, ``adsets``, and ``insights`` once per
level with one row per entity and day). Each executor builds its own
``FacebookSession`` and ``FacebookAdsApi`` and sends every call through that api: the
SDK's process-wide default api is never read or set, so two connections in one worker
cannot leak into each other.

Batch items are added with ``FacebookAdsApiBatch.add`` rather than through ``AdSet`` /
``Campaign`` objects: those re-check every parameter against the SDK's type tables and
copy the object per call, which cost more than the HTTP request itself at 50 items a
batch (bench/platform_apply.py), while this module already converts and checks values.

Shapes this adapter speaks:
- budgets and ``bid_amount`` are integers on Meta: the amount times Meta's offset for
  the currency (1 for HUF, JPY, TWD and eight others, 100 for the rest, whatever the
  ISO exponent; ``platforms.money.meta_rules``), ``Decimal`` in the account currency here;
- ``Field.SCHEDULE`` is ``{"day_parts": [...]}`` where the list is Meta's
  ``adset_schedule`` (``start_minute``, ``end_minute``, ``days``, ...);
- ``Field.TARGETING`` is Meta's targeting spec as a dict, sent and read unchanged;
- insights report ``spend`` and purchase values as decimal strings in the account
  currency (not minor units) and counts as strings.
"""

from __future__ import annotations

import json
import math
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import partial
from typing import Any, TypeVar

import requests
from facebook_business.api import FacebookAdsApi, FacebookResponse
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession
from urllib3.exceptions import NewConnectionError

from platforms.base import PlatformExecutor, Throttle, chunked, failed_outcomes, no_throttle
from platforms.bidding import bid_change_refusal
from platforms.money import MoneyError, MoneyRules, meta_rules
from platforms.types import (
    ENTITY_SCOPE,
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

GRAPH_API_VERSION = "v26.0"
MAX_BATCH_REQUESTS = 50  # Meta refuses larger batches
# "a read API call is equal to 1 point, and a write API call is equal to 3 points"
# (https://developers.facebook.com/docs/marketing-api/overview/rate-limiting): the throttle
# is asked for points, so writes take three times the tokens of reads.
WRITE_POINTS = 3
DEFAULT_RETRY_AFTER = 60.0  # seconds, when a rate limit names no time to regain access
# "For each ad set, the budget is only allowed to change 4 times per hour, if exceeds the
# limit, the budget change for that ad set is blocked for an hour. Related error code: 17"
# (https://developers.facebook.com/docs/marketing-api/overview/rate-limiting, Ad Set Level).
BUDGET_CHANGE_BLOCK_SECONDS = 3600.0
_BUDGET_PARAMS = frozenset({"daily_budget", "lifetime_budget"})

CAMPAIGN_FIELDS = ("id", "name", "status", "effective_status", "daily_budget", "lifetime_budget", "bid_strategy")
AD_SET_FIELDS = (
    "id",
    "name",
    "status",
    "effective_status",
    "campaign_id",
    "daily_budget",
    "lifetime_budget",
    "bid_amount",
    "targeting",
    "adset_schedule",
    "bid_strategy",
)
INSIGHT_FIELDS = ("spend", "impressions", "clicks", "actions", "action_values")
# (insights level, the row's id field) per entity type.
_INSIGHT_LEVELS = {EntityType.CAMPAIGN: ("campaign", "campaign_id"), EntityType.AD_SET: ("adset", "adset_id")}
# Meta counts one purchase under several overlapping action types: take the first one
# present, in this order, and never add them up.
PURCHASE_ACTION_TYPES = ("omni_purchase", "purchase", "offsite_conversion.fb_pixel_purchase")
CONVERSIONS_QUANTUM = Decimal("0.01")  # attribution can make conversions fractional; the mirror keeps two decimals
_READ_FIELDS = {EntityType.CAMPAIGN: CAMPAIGN_FIELDS, EntityType.AD_SET: AD_SET_FIELDS}
_EDGES = {EntityType.CAMPAIGN: "campaigns", EntityType.AD_SET: "adsets"}

_WRITABLE: dict[EntityType, frozenset[Field]] = {
    EntityType.CAMPAIGN: frozenset({Field.DAILY_BUDGET, Field.LIFETIME_BUDGET, Field.STATUS}),
    EntityType.AD_SET: frozenset(
        {Field.DAILY_BUDGET, Field.LIFETIME_BUDGET, Field.STATUS, Field.BID, Field.TARGETING, Field.SCHEDULE}
    ),
}
_PARAM_NAMES = {
    Field.DAILY_BUDGET: "daily_budget",
    Field.LIFETIME_BUDGET: "lifetime_budget",
    Field.STATUS: "status",
    Field.BID: "bid_amount",
    Field.TARGETING: "targeting",
    Field.SCHEDULE: "adset_schedule",
}
_META_STATUS = {EntityStatus.ACTIVE: "ACTIVE", EntityStatus.PAUSED: "PAUSED"}
_REMOVED_STATUSES = frozenset({"DELETED", "ARCHIVED"})

# Error taxonomy (https://developers.facebook.com/docs/graph-api/guides/error-handling and
# the Marketing API rate-limiting page). Rate-limit codes are checked first because they
# carry subcodes from the 2446xxx family (17/2446079) that would otherwise look invalid.
_RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
_AUTH_CODES = frozenset({102, 190})
_PERMISSION_CODES = frozenset({10, *range(200, 300)})
_INVALID_SUBCODE_FAMILIES = frozenset({1487, 2446})  # subcode // 1000
_TRANSIENT_CODES = frozenset({1, 2})
# Meta has no dedicated code for concurrent edits; it answers a transient error whose text
# says another update is in progress. Recognising it lets the engine re-run a preflight.
_CONFLICT_TEXT = re.compile(r"in progress|being (updated|edited|modified)|concurren", re.IGNORECASE)
_NOT_FOUND_SUBCODE = 33
# Errors about the whole account: sending the remaining waves would only fail the same way.
_ACCOUNT_WIDE = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.AUTH_EXPIRED, ErrorCode.PERMISSION_DENIED})
# Item errors that hold for the whole account (a permission error may be about one object).
_ITEM_HALTS = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.AUTH_EXPIRED})

_TOKEN_IN_URL = re.compile(r"(access_token|appsecret_proof|client_secret)=[^&\s'\"]+")


def normalise_account_id(account_id: str) -> str:
    """``"act_123"`` or ``"123"`` -> ``"act_123"``; anything else raises ``ValueError``."""
    digits = account_id.strip().removeprefix("act_")
    if not digits.isdigit():
        raise ValueError(f"Meta account id {account_id!r} is not 'act_<digits>'; copy it from Ads Manager.")
    return f"act_{digits}"


# Error classification -----------------------------------------------------------------


def classify_graph_error(error: Mapping[str, Any], http_status: int | None = None) -> ErrorCode:
    """Map a Graph API ``error`` object (and the HTTP status it came with) to the taxonomy."""
    code = _as_int(error.get("code"))
    subcode = _as_int(error.get("error_subcode"))
    text = " ".join(str(error.get(key) or "") for key in ("message", "error_user_title", "error_user_msg"))
    if code in _RATE_LIMIT_CODES:
        return ErrorCode.RATE_LIMITED
    if code in _AUTH_CODES:
        return ErrorCode.AUTH_EXPIRED
    if code in _PERMISSION_CODES:
        return ErrorCode.PERMISSION_DENIED
    if code == 100 and (subcode == _NOT_FOUND_SUBCODE or "does not exist" in text.lower()):
        return ErrorCode.NOT_FOUND
    if code == 100 or (subcode is not None and subcode // 1000 in _INVALID_SUBCODE_FAMILIES):
        return ErrorCode.INVALID_VALUE
    if _CONFLICT_TEXT.search(text):
        return ErrorCode.CONFLICT
    if error.get("is_transient") or code in _TRANSIENT_CODES or (http_status or 0) >= 500:
        return ErrorCode.TRANSIENT
    return ErrorCode.UNKNOWN


def retry_after_seconds(headers: Mapping[str, str], *fallbacks: Mapping[str, str]) -> float:
    """Seconds until Meta lifts a rate limit, from its usage headers (lower-cased keys).

    ``estimated_time_to_regain_access`` is in minutes; the longest one named wins. A batch
    item often carries no usage headers of its own: then the first of ``fallbacks`` (the
    batch's top-level headers) that names a time is used, else ``DEFAULT_RETRY_AFTER``.
    """
    for candidate in (headers, *fallbacks):
        minutes = regain_minutes(candidate)
        if minutes:
            return max(minutes) * 60.0
    return DEFAULT_RETRY_AFTER


def regain_minutes(headers: Mapping[str, str]) -> list[float]:
    """Every positive ``estimated_time_to_regain_access`` in the usage headers."""
    return [
        value
        for name in ("x-business-use-case-usage", "x-ad-account-usage", "x-app-usage")
        for value in _values_of(_json_or_none(headers.get(name)), "estimated_time_to_regain_access")
        if isinstance(value, int | float) and value > 0
    ]


def _values_of(document: Any, key: str) -> Iterable[Any]:
    """Every value stored under ``key`` anywhere in a parsed JSON document."""
    if isinstance(document, dict):
        for name, value in document.items():
            if name == key:
                yield value
            else:
                yield from _values_of(value, key)
    elif isinstance(document, list):
        for value in document:
            yield from _values_of(value, key)


def _json_or_none(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _header_map(headers: Any) -> dict[str, str]:
    """Response headers as a lower-cased dict; batch items carry a list of {name, value}."""
    if isinstance(headers, list):
        return {str(h.get("name", "")).lower(): str(h.get("value", "")) for h in headers if isinstance(h, dict)}
    return {str(name).lower(): str(value) for name, value in (headers or {}).items()}


def _request_id(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-fb-trace-id") or headers.get("x-fb-request-id")


class _UnreadableResponse(Exception):
    """The Graph API answered with a body that is not JSON (an HTML page from a proxy).

    Raised from a ``requests`` response hook, before the SDK parses the body: the SDK
    raises ``TypeError`` on some HTML error pages and treats others as a success.
    """

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status} with a body that is not JSON")
        self.status = status
        self.headers = _header_map(headers)


_TRANSPORT_ERRORS = (FacebookRequestError, _UnreadableResponse, requests.RequestException)
_MAYBE_APPLIED = "A proxy may have forwarded it to Meta: read the entities before sending it again."


# Writes -------------------------------------------------------------------------------


@dataclass
class _Post:
    """One POST of one object carrying every change of that entity (merged)."""

    ref: EntityRef
    family: str | None  # the campaign this write touches (its own id for a campaign)
    params: dict[str, Any] = field(default_factory=dict)
    indices: list[int] = field(default_factory=list)  # positions of its changes in ``apply``
    changes: list[Change] = field(default_factory=list)


@dataclass(frozen=True)
class _Accepted:
    """Meta accepted one request inside a batch."""

    request_id: str | None


def pack_batches(posts: Sequence[_Post], size: int = MAX_BATCH_REQUESTS) -> list[list[_Post]]:
    """The fewest batches of at most ``size`` posts with no campaign family twice in one.

    k = max(ceil(n / size), largest family) batches is the lower bound. Posts ordered so
    each family is contiguous are dealt round-robin over k batches: a family of m <= k
    posts lands in m different batches, and every batch gets at most ceil(n / k) <= size.
    """
    if not posts:
        return []
    families: dict[str | None, list[_Post]] = {}
    for post in posts:
        families.setdefault(post.family, []).append(post)
    count = max(math.ceil(len(posts) / size), max(len(members) for members in families.values()))
    batches: list[list[_Post]] = [[] for _ in range(count)]
    ordered = [post for members in families.values() for post in members]
    for position, post in enumerate(ordered):
        batches[position % count].append(post)
    return batches


def pack_waves(posts: Sequence[_Post], *, in_flight: int, size: int = MAX_BATCH_REQUESTS) -> list[list[list[_Post]]]:
    """Waves of at most ``in_flight`` batches that are sent at the same time: no campaign
    family twice in a wave (so never two writes of one campaign in flight at once), as
    few waves as that allows (``pack_batches`` with waves as the unit), each wave dealt
    evenly into the fewest batches of at most ``size``.

    Sources: Meta's batch-requests page (https://developers.facebook.com/docs/graph-api/batch-requests)
    counts each call inside a batch separately against the rate limits, so a wave is
    throttled for the points of all its calls. No Meta page says two edits of one campaign
    may not overlap; this rule is ours, the conservative reading of PLATFORM_NOTES' "never
    two ad sets of one campaign in one batch" and of Meta's "update in progress" answers
    (``_CONFLICT_TEXT``), extended from one batch to everything in flight."""
    waves = pack_batches(posts, size=size * max(in_flight, 1))
    return [[wave[i :: math.ceil(len(wave) / size)] for i in range(math.ceil(len(wave) / size))] for wave in waves]


class MetaExecutor(PlatformExecutor):
    """Reads and writes campaigns and ad sets of one Meta ad account.

    Guarantees beyond ``PlatformExecutor``'s:
    - no two writes of one campaign family (two ad sets of one campaign, or a campaign and
      one of its ad sets) are ever in flight at once: writes go out in waves of up to
      ``write_concurrency`` batches sent together, with no family twice in a wave, and
      waves are as few as that rule allows;
    - a wave is throttled and fenced (``before_write``) once, for all of its changes,
      immediately before its batches leave;
    - several changes of one entity travel as one POST of that object;
    - the access token, app secret and appsecret_proof never appear in an error message;
    - after a whole-request rate limit, auth or permission error the remaining waves are
      not sent and their changes fail with that error (the other batches of the same wave
      were already in flight);
    - not thread-safe: one executor serves one job at a time (it runs its own helper
      threads for the batches it sends at once).
    """

    platform = "meta"
    max_operations_per_request = MAX_BATCH_REQUESTS
    supported_fields = _WRITABLE[EntityType.AD_SET] | _WRITABLE[EntityType.CAMPAIGN]
    page_size = 100  # rows per page when listing the account
    insights_page_size = 500  # rows (entity-days) per page of insights
    read_concurrency = 4  # batch reads in flight at once
    write_concurrency = 4  # batch writes in flight at once (one wave)
    tokens_per_change = 1 + WRITE_POINTS + 1  # a read before (1 point), the write (3), a read back (1)

    def __init__(self, config: ConnectionConfig, *, throttle: Throttle = no_throttle) -> None:
        super().__init__(config, throttle=throttle)
        self.account_id = normalise_account_id(config.account_id)
        try:
            self.money: MoneyRules = meta_rules(config.currency)
        except MoneyError as exc:
            raise ValueError(f"Meta connection {config.connection_id}: {exc}") from None
        self._last_headers: dict[str, str] = {}
        self._api, self._secrets = self._build_api(config)
        self._count_lock = threading.Lock()
        # Executors of this account for the threads that send batches at once (reads and
        # write waves): one each at a time, kept so their HTTP connections are reused.
        self._helpers: queue.SimpleQueue[MetaExecutor] = queue.SimpleQueue()

    def _build_api(self, config: ConnectionConfig) -> tuple[FacebookAdsApi, tuple[str, ...]]:
        token = config.credentials.get("access_token")
        if not token:
            raise ValueError(f"Meta connection {config.connection_id} has no access_token; reconnect the account.")
        # FacebookSession derives appsecret_proof itself when (and only when) it gets a secret.
        session = FacebookSession(
            app_id=config.credentials.get("app_id"),
            app_secret=config.credentials.get("app_secret") or None,
            access_token=token,
            timeout=config.request_timeout,
        )
        if config.api_base_url:
            session.GRAPH = config.api_base_url.rstrip("/")  # instance attribute: other sessions keep the real graph
            session.requests.trust_env = False  # an explicit endpoint is reached directly, never via env proxies
        session.requests.hooks["response"].append(self._inspect_response)
        secrets = (token, config.credentials.get("app_secret"), getattr(session, "appsecret_proof", None))
        return FacebookAdsApi(session, api_version=GRAPH_API_VERSION), tuple(s for s in secrets if s)

    def _inspect_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Keep the headers of every HTTP response; refuse bodies the SDK cannot parse."""
        self._last_headers = _header_map(response.headers)
        try:
            json.loads(response.text)
        except ValueError:
            raise _UnreadableResponse(response.status_code, response.headers) from None

    # Interface ------------------------------------------------------------------------

    def read_state(self, refs: Iterable[EntityRef]) -> dict[tuple[str, str], EntityState]:
        """Live state of the campaigns and ad sets among ``refs`` (other types are not read).

        Batches of 50 reads go out ``read_concurrency`` at a time: reads change nothing, so
        their order does not matter, and waiting for 200 round trips one after another is
        most of a 10,000-entity preflight. The throttle is still taken here, batch by batch.
        """
        unique = {ref.key: ref for ref in refs if ref.entity_type in _READ_FIELDS}
        chunks = list(chunked(list(unique.values()), MAX_BATCH_REQUESTS))
        if len(chunks) <= 1 or self.read_concurrency <= 1:
            return {key: state for chunk in chunks for key, state in self._read_batch(chunk).items()}
        return self._read_concurrently(chunks)

    def _read_concurrently(self, chunks: list[Sequence[EntityRef]]) -> dict[tuple[str, str], EntityState]:
        def read(chunk: Sequence[EntityRef]) -> dict[tuple[str, str], EntityState]:
            # The throttle was taken in the calling thread: the readers never touch the bucket.
            with self._helper() as reader:
                return reader._read_batch(chunk)

        states: dict[tuple[str, str], EntityState] = {}
        with ThreadPoolExecutor(max_workers=self.read_concurrency, thread_name_prefix="meta-read") as pool:
            futures = []
            for chunk in chunks:
                self.throttle(len(chunk))
                futures.append(pool.submit(read, chunk))
            for future in futures:
                states.update(future.result())  # the first failed batch raises its PlatformCallError
        return states

    @contextmanager
    def _helper(self) -> Iterator[MetaExecutor]:
        """Lend one helper executor (session, response-hook headers of its own) to a thread;
        its requests are added to this executor's round trips."""
        try:
            helper = self._helpers.get_nowait()
        except queue.Empty:
            helper = MetaExecutor(self.config)
        try:
            yield helper
        finally:
            with self._count_lock:
                self.round_trips += helper.round_trips
            helper.round_trips = 0
            self._helpers.put(helper)

    def list_entities(self) -> list[EntityState]:
        """Every campaign, then every ad set of the account that Meta lists (not deleted)."""
        return [state for entity_type in _EDGES for state in self._list_edge(entity_type)]

    def read_performance(self, since: date, until: date) -> list[PerformanceRow]:
        """Daily insights of every campaign, then every ad set, between the dates (inclusive,
        in the account's time zone). Meta leaves out days without delivery."""
        if since > until:
            raise ValueError(f"since ({since}) is after until ({until})")
        rows: list[PerformanceRow] = []
        for entity_type, (level, id_field) in _INSIGHT_LEVELS.items():
            params = {
                "level": level,
                "time_increment": 1,
                "time_range": {"since": since.isoformat(), "until": until.isoformat()},
                "fields": ",".join((id_field, *INSIGHT_FIELDS)),
                "limit": self.insights_page_size,
            }
            rows.extend(self._performance_row(entity_type, row, id_field) for row in self._pages("insights", params))
        return rows

    def minimum_budgets(self) -> dict[str, Decimal]:
        """``act_<id>/minimum_budgets``: the smallest daily budget of an ad set per kind of
        optimisation (``min_daily_budget_imp``, ``_high_freq``, ``_low_freq``,
        ``_video_views``), as amounts of the account currency
        (https://developers.facebook.com/docs/marketing-api/reference/ad-account/minimum_budgets)."""
        response = self._request(1, partial(self._api.call, "GET", (self.account_id, "minimum_budgets"), {}))
        rows = response.json().get("data") or []
        row = next((r for r in rows if str(r.get("currency", "")).upper() == self.money.currency), None)
        if row is None:
            return {}
        return {
            name: self.money.from_platform(value)
            for name, value in row.items()
            if name.startswith("min_daily_budget") and _as_int(value) is not None
        }

    def account_facts(self) -> dict[str, Any]:
        """The account's minimum daily budgets, for the connection to remember (and the
        preflight to check against)."""
        return {"minimum_budgets": {name: str(amount) for name, amount in self.minimum_budgets().items()}}

    def test_connection(self) -> str:
        """Read the account and check that its currency is the one money is converted with."""
        response = self._request(1, lambda: self._api.call("GET", (self.account_id,), {"fields": "name,currency"}))
        account = response.json()
        currency = account.get("currency", "")
        if currency.upper() != self.config.currency.upper():
            raise PlatformCallError(
                PlatformError(
                    code=ErrorCode.INVALID_VALUE,
                    message=f"Meta account {self.account_id} bills in {currency}, but the connection is set to "
                    f"{self.config.currency}; fix the connection's currency before changing budgets.",
                )
            )
        return f"meta account {self.account_id} ({account.get('name', '')}, {currency}) is readable"

    def apply(self, changes: Sequence[Change], *, validate_only: bool = False) -> list[ChangeOutcome]:
        """One outcome per change, same order; see the class docstring for batching rules."""
        outcomes, posts = self._prepare(changes)
        posts = self._resolve_families(posts, outcomes)
        halted: PlatformError | None = None
        for wave in pack_waves(posts, in_flight=self.write_concurrency):
            if halted is not None:
                outcomes.update(self._not_sent([post for batch in wave for post in batch], halted))
                continue
            request_error = self._write_wave(wave, validate_only, outcomes)
            if request_error is not None and request_error.code in _ACCOUNT_WIDE:
                halted = request_error
        return [outcomes[index] for index in range(len(changes))]

    def unsupported(self, change: Change) -> ChangeOutcome | None:
        """NOT_SUPPORTED for fields Meta cannot change on that entity type, and for deletes."""
        writable = change.field in _WRITABLE.get(change.ref.entity_type, frozenset())
        deleting = change.field == Field.STATUS and change.value == EntityStatus.REMOVED
        if writable and not deleting:
            return None
        what = "deleting" if deleting else f"changing {change.field} of"
        return ChangeOutcome(
            change=change,
            status=OutcomeStatus.FAILED,
            error=PlatformError(
                code=ErrorCode.NOT_SUPPORTED,
                message=f"BudgetRadar does not support {what} a Meta {change.ref.entity_type} "
                f"({change.ref.external_id}).",
            ),
        )

    # Requests -------------------------------------------------------------------------

    def _request(self, operations: int, send: Callable[[], T]) -> T:
        """Throttle, count and send one HTTP request; raise ``PlatformCallError`` if it failed."""
        try:
            return self._send(operations, send)
        except _TRANSPORT_ERRORS as exc:
            raise PlatformCallError(self._request_error(exc, operations)) from None

    def _send(self, operations: int, send: Callable[[], T]) -> T:
        self.throttle(operations)
        self.round_trips += 1
        self._last_headers = {}
        return send()

    def _request_error(self, exc: Exception, operations: int) -> PlatformError:
        """Classify a failure of a whole HTTP request."""
        subject = f"Meta request with {operations} operation{'s' if operations != 1 else ''}"
        if isinstance(exc, FacebookRequestError):
            body = exc.body() if isinstance(exc.body(), dict) else {}
            return self._graph_error(body.get("error") or {}, exc.http_status(), exc.http_headers(), subject)
        if isinstance(exc, _UnreadableResponse):
            code = ErrorCode.TRANSIENT if exc.status >= 500 else ErrorCode.UNKNOWN
            return PlatformError(
                code=code,
                message=f"{subject} got HTTP {exc.status} with an HTML page instead of a Graph API answer.",
                request_id=_request_id(exc.headers),
                raw={"http_status": exc.status},
            )
        if isinstance(exc, requests.Timeout):
            return PlatformError(
                code=ErrorCode.TRANSIENT,
                message=f"{subject} got no answer within {self.config.request_timeout} s.",
            )
        if isinstance(exc, requests.ConnectionError):
            return PlatformError(code=ErrorCode.TRANSIENT, message=f"{subject} could not reach Meta (no connection).")
        return PlatformError(code=ErrorCode.UNKNOWN, message=f"{subject} failed: {type(exc).__name__}.")

    def _graph_error(
        self,
        error: Mapping[str, Any],
        http_status: int | None,
        headers: Any,
        subject: str,
        *,
        budget_write: bool = False,
    ) -> PlatformError:
        """A ``PlatformError`` from a Graph API ``error`` object, scrubbed of secrets.

        ``budget_write``: the error answers an ad set budget change. Code 17 there, while
        the usage headers name no time to regain access for the account, is the ad set's
        own budget-change limit (the docs: "Verify the error code (17) and API end point to
        confirm the throttling type"): it blocks that ad set for an hour, not the account.
        """
        headers = _header_map(headers)
        code = classify_graph_error(error, http_status)
        text = error.get("error_user_msg") or error.get("message") or f"HTTP {http_status} without an error message"
        numbers = "/".join(str(n) for n in (error.get("code"), error.get("error_subcode")) if n is not None)
        account_throttled = bool(regain_minutes(headers) or regain_minutes(self._last_headers))
        if (
            code == ErrorCode.RATE_LIMITED
            and budget_write
            and _as_int(error.get("code")) == 17
            and not account_throttled
        ):
            return PlatformError(
                code=code,
                message=self._scrub(
                    f"{subject}: Meta allows 4 budget changes per ad set per hour and blocks the ad set's "
                    f"budget for an hour after that; try again in an hour ({text}, Meta error {numbers})."
                ),
                retry_after=BUDGET_CHANGE_BLOCK_SECONDS,
                request_id=error.get("fbtrace_id") or _request_id(headers) or _request_id(self._last_headers),
                raw=json.loads(self._scrub(json.dumps({"http_status": http_status, "error": dict(error)}))),
                scope=ENTITY_SCOPE,
            )
        return PlatformError(
            code=code,
            message=self._scrub(f"{subject}: {text}" + (f" (Meta error {numbers})" if numbers else "")),
            retry_after=retry_after_seconds(headers, self._last_headers) if code == ErrorCode.RATE_LIMITED else None,
            request_id=error.get("fbtrace_id") or _request_id(headers) or _request_id(self._last_headers),
            raw=json.loads(self._scrub(json.dumps({"http_status": http_status, "error": dict(error)}))),
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _TOKEN_IN_URL.sub(r"\1=***", text)

    # Reads ----------------------------------------------------------------------------

    def _read_batch(self, refs: Sequence[EntityRef]) -> dict[tuple[str, str], EntityState]:
        """Read up to 50 entities in one Batch API request; missing ones are left out."""
        batch = self._api.new_batch()
        results: dict[int, dict[str, Any] | PlatformError] = {}
        for index, ref in enumerate(refs):
            batch.add(
                "GET",
                (ref.external_id,),
                params={"fields": ",".join(_READ_FIELDS[ref.entity_type])},
                success=partial(self._on_read, results, index),
                failure=partial(self._on_failure, results, index, f"Reading {_describe(ref)}"),
            )
        self._request(len(refs), batch.execute)
        states: dict[tuple[str, str], EntityState] = {}
        for index, ref in enumerate(refs):
            result = results.get(index)
            if isinstance(result, dict):
                states[ref.key] = self._state(ref.entity_type, result)
            elif result is None:
                raise PlatformCallError(self._unanswered(ref, "read"))
            elif result.code != ErrorCode.NOT_FOUND:
                raise PlatformCallError(result)
        return states

    def _on_read(self, results: dict[int, Any], index: int, response: FacebookResponse) -> None:
        results[index] = response.json()

    def _on_failure(
        self,
        results: dict[int, Any],
        index: int,
        subject: str,
        response: FacebookResponse,
        *,
        budget_write: bool = False,
    ) -> None:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if error is None:  # a body without an error, such as {"success": false}
            error = {"message": f"Meta did not confirm it (answered {str(body)[:200]})"}
        results[index] = self._graph_error(
            error, response.status(), response.headers(), subject, budget_write=budget_write
        )

    def _list_edge(self, entity_type: EntityType) -> list[EntityState]:
        params = {"fields": ",".join(_READ_FIELDS[entity_type]), "limit": self.page_size}
        return [self._state(entity_type, row) for row in self._pages(_EDGES[entity_type], params)]

    def _pages(self, edge: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Rows of an account edge, one request per page (``paging.next`` says more exist)."""
        path = (self.account_id, edge)
        params = dict(params)
        while True:
            page = self._request(1, partial(self._api.call, "GET", path, params=dict(params))).json()
            yield from page.get("data", [])
            paging = page.get("paging") or {}
            if "next" not in paging:
                return
            params["after"] = paging["cursors"]["after"]

    def _performance_row(self, entity_type: EntityType, row: Mapping[str, Any], id_field: str) -> PerformanceRow:
        """One insights row; raises ``PlatformCallError`` when Meta's numbers cannot be read."""
        try:
            return PerformanceRow(
                entity_type=entity_type,
                external_id=str(row[id_field]),
                date=date.fromisoformat(row["date_start"]),
                spend=self._reported_amount(row.get("spend", "0")),
                impressions=int(row.get("impressions", 0)),
                clicks=int(row.get("clicks", 0)),
                conversions=purchases_in(row.get("actions")).quantize(CONVERSIONS_QUANTUM, ROUND_HALF_EVEN),
                revenue=self._reported_amount(purchases_in(row.get("action_values"))),
            )
        except (KeyError, TypeError, ValueError, InvalidOperation):
            raise PlatformCallError(
                PlatformError(
                    code=ErrorCode.UNKNOWN,
                    message=f"Meta reported {entity_type} insights BudgetRadar cannot read: {str(dict(row))[:200]}",
                    request_id=_request_id(self._last_headers),
                )
            ) from None

    def _reported_amount(self, amount: Any) -> Decimal:
        """An amount Meta reports as a decimal string in the account currency, rounded
        half-even to the currency's minor unit (purchase values can carry more decimals)."""
        quantum = Decimal(1).scaleb(-self.money.display_places)
        return Decimal(str(amount)).quantize(quantum, ROUND_HALF_EVEN)

    def _state(self, entity_type: EntityType, row: Mapping[str, Any]) -> EntityState:
        schedule = row.get("adset_schedule")
        return EntityState(
            entity_type=entity_type,
            external_id=str(row["id"]),
            name=row.get("name", ""),
            status=_status(row),
            currency=self.config.currency,
            parent_external_id=row.get("campaign_id"),
            bid_strategy=row.get("bid_strategy") or None,
            daily_budget=self._budget(row.get("daily_budget")),
            lifetime_budget=self._budget(row.get("lifetime_budget")),
            bid=self._money(row.get("bid_amount")),
            targeting=row.get("targeting"),
            schedule={"day_parts": schedule} if schedule is not None else None,
        )

    def _budget(self, minor: Any) -> Decimal | None:
        """Meta reports an unset budget as absent or "0": both mean no budget at that level."""
        return self._money(minor) if _as_int(minor) else None

    def _money(self, minor: Any) -> Decimal | None:
        """Meta's integer (amount x the currency's Meta offset) as an amount."""
        return self.money.from_platform(minor) if minor is not None else None

    # Writes ---------------------------------------------------------------------------

    def _prepare(self, changes: Sequence[Change]) -> tuple[dict[int, ChangeOutcome], list[_Post]]:
        """Refuse what cannot be sent; merge the rest into one POST per entity."""
        outcomes: dict[int, ChangeOutcome] = {}
        posts: dict[tuple[str, str], _Post] = {}
        for index, change in enumerate(changes):
            refusal = self.unsupported(change)
            if refusal is None:
                try:
                    value = self._param_value(change)
                except (MoneyError, ValueError, TypeError) as exc:
                    refusal = _invalid(change, f"{change.field} of {_describe(change.ref)}: {exc}")
            if refusal is not None:
                outcomes[index] = refusal
                continue
            post = posts.setdefault(change.ref.key, _Post(ref=change.ref, family=_family(change.ref)))
            name = _PARAM_NAMES[change.field]
            if post.params.get(name, value) != value:
                outcomes[index] = _invalid(
                    change,
                    f"{change.field} of {_describe(change.ref)} is already set to "
                    "another value by an earlier change in the same request.",
                )
                continue
            post.params[name] = value
            post.indices.append(index)
            post.changes.append(change)
        return outcomes, list(posts.values())

    def _param_value(self, change: Change) -> Any:
        """The Graph API value of a change; raises ``ValueError`` for values Meta cannot take."""
        if change.field in MONEY_FIELDS:
            return self.money.to_platform(change.value)
        if change.field == Field.STATUS:
            return _META_STATUS[EntityStatus(change.value)]
        if change.field == Field.TARGETING and isinstance(change.value, Mapping):
            return dict(change.value)
        day_parts = change.value.get("day_parts") if isinstance(change.value, Mapping) else None
        if change.field == Field.SCHEDULE and isinstance(day_parts, list):
            return list(day_parts)
        raise ValueError(f"{change.value!r} is not a valid {change.field} for Meta.")

    def _resolve_families(self, posts: list[_Post], outcomes: dict[int, ChangeOutcome]) -> list[_Post]:
        """Find the campaign of ad sets whose ref does not name it (batching needs it), and
        refuse bids that the ad set's bid strategy does not use (read in the same batches)."""
        bidding = [post for post in posts if "bid_amount" in post.params]
        unknown = [post for post in posts if post.family is None or post in bidding]
        if not unknown:
            return posts
        try:
            states = self.read_state(post.ref for post in unknown)
        except PlatformCallError as exc:
            for post in unknown:
                outcomes.update(zip(post.indices, failed_outcomes(post.changes, exc.error), strict=True))
            return [post for post in posts if post.family is not None]
        strategies = self._campaign_strategies(states, bidding)
        for post in unknown:
            state = states.get(post.ref.key)
            if state is None:
                error = PlatformError(code=ErrorCode.NOT_FOUND, message=f"{_describe(post.ref)} is not on Meta.")
                outcomes.update(zip(post.indices, failed_outcomes(post.changes, error), strict=True))
                post.family = None
                continue
            post.family = state.parent_external_id
            strategy = state.bid_strategy or strategies.get(state.parent_external_id or "")
            reason = bid_change_refusal("meta", strategy, subject=_describe(post.ref)) if post in bidding else None
            if reason:
                error = PlatformError(code=ErrorCode.NOT_SUPPORTED, message=f"{reason} It was not sent to Meta.")
                outcomes.update(zip(post.indices, failed_outcomes(post.changes, error), strict=True))
                post.family = None
        return [post for post in posts if post.family is not None]

    def _campaign_strategies(
        self, states: dict[tuple[str, str], EntityState], bidding: list[_Post]
    ) -> dict[str, str | None]:
        """Bid strategies of the campaigns of bidding ad sets that report none of their own
        (a campaign budget campaign sets the strategy for its ad sets)."""
        parents = {
            state.parent_external_id
            for post in bidding
            if (state := states.get(post.ref.key)) is not None and not state.bid_strategy and state.parent_external_id
        }
        if not parents:
            return {}
        campaigns = self.read_state(EntityRef(EntityType.CAMPAIGN, campaign_id) for campaign_id in sorted(parents))
        return {state.external_id: state.bid_strategy for state in campaigns.values()}

    def _write_wave(
        self, wave: list[list[_Post]], validate_only: bool, outcomes: dict[int, ChangeOutcome]
    ) -> PlatformError | None:
        """Throttle and fence one wave, send its batches together and record an outcome per
        change; return the first error that holds for the whole account (or None)."""
        posts = [post for batch in wave for post in batch]
        try:
            self.throttle(len(posts) * WRITE_POINTS)
            if not validate_only:
                self.begin_write([c for p in posts for c in p.changes])  # raises when the deadline passed: not sent
        except PlatformCallError as exc:  # the throttle refused to wait that long, or the deadline passed: nothing sent
            for post in posts:
                outcomes.update(zip(post.indices, failed_outcomes(post.changes, exc.error), strict=True))
            return exc.error
        if len(wave) == 1:
            errors = [self._write_batch(wave[0], validate_only, outcomes)]
        else:
            errors = self._write_concurrently(wave, validate_only, outcomes)
        return next((e for e in errors if e is not None and e.code in _ACCOUNT_WIDE), None)

    def _write_concurrently(
        self, wave: list[list[_Post]], validate_only: bool, outcomes: dict[int, ChangeOutcome]
    ) -> list[PlatformError | None]:
        def write(batch: list[_Post]) -> tuple[dict[int, ChangeOutcome], PlatformError | None]:
            # The wave was throttled and fenced in the calling thread.
            own: dict[int, ChangeOutcome] = {}
            with self._helper() as writer:
                return own, writer._write_batch(batch, validate_only, own)

        with ThreadPoolExecutor(max_workers=len(wave), thread_name_prefix="meta-write") as pool:
            answers = list(pool.map(write, wave))
        for own, _error in answers:
            outcomes.update(own)
        return [error for _own, error in answers]

    def _write_batch(
        self, posts: Sequence[_Post], validate_only: bool, outcomes: dict[int, ChangeOutcome]
    ) -> PlatformError | None:
        """Send one batch (already throttled and fenced) and record an outcome per change;
        return a whole-request error."""
        batch = self._api.new_batch()
        results: dict[int, _Accepted | PlatformError] = {}
        for index, post in enumerate(posts):
            params = {**post.params, **({"execution_options": ["validate_only"]} if validate_only else {})}
            batch.add(
                "POST",
                (post.ref.external_id,),
                params=params,
                success=partial(self._on_write, results, index),
                failure=partial(
                    self._on_failure,
                    results,
                    index,
                    f"Changing {_describe(post.ref)}",
                    budget_write=post.ref.entity_type == EntityType.AD_SET
                    and bool(_BUDGET_PARAMS & post.params.keys()),
                ),
            )
        try:
            self.round_trips += 1
            self._last_headers = {}
            batch.execute()
        except _TRANSPORT_ERRORS as exc:
            error = self._request_error(exc, len(posts))
            # A validate-only request changes nothing, so losing its answer is never ambiguous.
            ambiguous = _maybe_sent(exc) and not validate_only
            if ambiguous and isinstance(exc, _UnreadableResponse):
                error = replace(error, message=f"{error.message} {_MAYBE_APPLIED}")
            for post in posts:
                outcomes.update(
                    zip(post.indices, failed_outcomes(post.changes, error, ambiguous=ambiguous), strict=True)
                )
            return error
        applied = OutcomeStatus.VALIDATED if validate_only else OutcomeStatus.APPLIED
        for index, post in enumerate(posts):
            outcomes.update(zip(post.indices, self._post_outcomes(post, results.get(index), applied), strict=True))
        # An item-level throttle of the account (80004 and the other codes of a whole-account
        # limit) holds for the next batches too: hand it back so they are not sent.
        return next(
            (
                r
                for r in results.values()
                if isinstance(r, PlatformError) and r.code in _ITEM_HALTS and r.scope != ENTITY_SCOPE
            ),
            None,
        )

    def _on_write(self, results: dict[int, Any], index: int, response: FacebookResponse) -> None:
        results[index] = _Accepted(request_id=_request_id(self._last_headers))

    def _post_outcomes(
        self, post: _Post, result: _Accepted | PlatformError | None, applied: OutcomeStatus
    ) -> list[ChangeOutcome]:
        if result is None:  # Meta answers null for a batch item it did not finish in time
            return failed_outcomes(post.changes, self._unanswered(post.ref, "change"), ambiguous=True)
        if isinstance(result, PlatformError):
            return failed_outcomes(post.changes, result)
        return [ChangeOutcome(change=c, status=applied, request_id=result.request_id) for c in post.changes]

    def _unanswered(self, ref: EntityRef, what: str) -> PlatformError:
        return PlatformError(
            code=ErrorCode.TRANSIENT,
            message=f"Meta gave no answer for the {what} of {_describe(ref)} inside a batch (it timed out"
            + ("; the change may have been applied)." if what == "change" else ")."),
            request_id=_request_id(self._last_headers),
        )

    def _not_sent(self, posts: Sequence[_Post], cause: PlatformError) -> dict[int, ChangeOutcome]:
        error = PlatformError(
            code=cause.code,
            message=f"Not sent: an earlier request of this apply failed for the whole account. {cause.message}",
            retry_after=cause.retry_after,
            request_id=cause.request_id,
        )
        return {i: o for post in posts for i, o in zip(post.indices, failed_outcomes(post.changes, error), strict=True)}


def _family(ref: EntityRef) -> str | None:
    """The campaign a write locks: the campaign itself, or an ad set's parent (None if unknown)."""
    return ref.external_id if ref.entity_type == EntityType.CAMPAIGN else ref.parent_external_id


def _maybe_sent(exc: Exception) -> bool:
    """True when a write may have been applied although no Graph API answer came back.

    Transport failures qualify (a timeout waiting for the answer, a dropped connection),
    but not when the connection was never made. So does an HTML 5xx page: it comes from a
    proxy in front of the Graph API, which may have failed after forwarding the request.
    A Graph API error answer (JSON) is Meta's own word and is not ambiguous.
    """
    if isinstance(exc, _UnreadableResponse):
        return exc.status >= 500
    if not isinstance(exc, requests.RequestException):
        return False
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, NewConnectionError)


def purchases_in(actions: Any) -> Decimal:
    """The purchases among an insights row's ``actions`` or ``action_values`` (0 if none)."""
    by_type = {a.get("action_type"): a.get("value") for a in actions or () if isinstance(a, Mapping)}
    value = next((by_type[t] for t in PURCHASE_ACTION_TYPES if t in by_type), "0")
    return Decimal(str(value))


def _status(row: Mapping[str, Any]) -> EntityStatus:
    if {row.get("status"), row.get("effective_status")} & _REMOVED_STATUSES:
        return EntityStatus.REMOVED
    return EntityStatus.PAUSED if row.get("status") == "PAUSED" else EntityStatus.ACTIVE


def _describe(ref: EntityRef) -> str:
    return f"{str(ref.entity_type).replace('_', ' ')} {ref.external_id}"


def _invalid(change: Change, message: str) -> ChangeOutcome:
    error = PlatformError(code=ErrorCode.INVALID_VALUE, message=f"{message} It was not sent to Meta.")
    return ChangeOutcome(change=change, status=OutcomeStatus.FAILED, error=error)
