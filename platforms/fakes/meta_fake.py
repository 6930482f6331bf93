"""A local fake of the Graph API subset that ``MetaExecutor`` uses (tests and benchmarks).

The real ``facebook-business`` SDK talks to it over HTTP on 127.0.0.1, so the SDK's
own request building, JSON encoding, batch parsing and error raising are exercised.
Nothing in the product imports this module.

What it serves (``/v26.0`` only):
- ``GET /{id}?fields=``, ``GET /?ids=a,b&fields=`` (error 803 when an id is missing),
  ``GET /act_X/campaigns|adsets`` with ``limit`` and ``after`` cursors;
- ``POST /{id}`` updates (form parameters), honouring ``execution_options=["validate_only"]``;
- ``POST /`` with a ``batch`` form field: at most 50 requests, answered as a list of
  ``{code, headers, body}`` (``null`` for an item that did not finish in time);
- ``GET /act_X/insights`` with ``level`` campaign or adset, ``time_increment=1`` and a
  ``time_range``: one row per entity and day with delivery (days without any are left
  out, as Meta does), ``spend`` as a decimal string in the account currency, numbers as
  strings, purchases under ``actions``/``action_values``, paged with ``after`` cursors.
  The numbers are deterministic per ``performance_seed``, entity and day
  (``generated_insights``), can be pinned per day (``set_insights``), and a campaign with
  ad sets reports the sum of its ad sets.

Rules from Meta's documentation (each cited where it is implemented): money is the
amount times Meta's offset for the currency (``platforms.money.meta_offset``); an
account answers ``act_<id>/minimum_budgets`` and refuses a daily budget below its
impression minimum; an ad set's budget may change 4 times an hour, then code 17 and a
one-hour block (``clock`` is injectable); ``bid_amount`` is taken only under
LOWEST_COST_WITH_BID_CAP or COST_CAP, an ad set without its own ``bid_strategy`` bidding
as its campaign; an item-level rate limit is code 80004 with the usage header on the
batch's HTTP response.

Faults come from a ``FaultPlan``. A fault without ``entity_ids`` hits the whole HTTP
request; one with ``entity_ids`` hits only those entities' requests inside it, the way
Meta fails single items of a batch. A fault is consumed by the next request of its scope
even when its entities are not in that request.

Error subcode 33 is Meta's "object does not exist"; ``SUBCODE_INVALID_PARAMETER`` is an
illustrative member of Meta's 1487xxx invalid-parameter family, not a specific Meta rule.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from platforms.fakes.faults import Fault, FaultKind, FaultPlan, FaultScope
from platforms.money import meta_offset

API_VERSION = "v26.0"
MAX_BATCH_REQUESTS = 50
DEFAULT_PAGE_LIMIT = 25
SUBCODE_MISSING_OBJECT = 33
SUBCODE_INVALID_PARAMETER = 1487100
SUBCODE_RATE_LIMIT = 2446079
SUBCODE_SESSION_EXPIRED = 463
# Ad set level rate limiting: "For each ad set, the budget is only allowed to change 4 times
# per hour, if exceeds the limit, the budget change for that ad set is blocked for an hour.
# Related error code: 17, Message: User request limit reached"
# (https://developers.facebook.com/docs/marketing-api/overview/rate-limiting). The page
# gives no subcode for this limit; the fake answers 17 with the account-level subcode
# 2446079, which is what the page lists for code 17.
BUDGET_CHANGES_PER_HOUR = 4
BUDGET_BLOCK_SECONDS = 3600.0
# bid_amount is the cap of LOWEST_COST_WITH_BID_CAP and the target of COST_CAP
# (https://developers.facebook.com/docs/marketing-api/bidding/overview/bid-strategy).
BID_AMOUNT_STRATEGIES = frozenset({"LOWEST_COST_WITH_BID_CAP", "COST_CAP"})
MINIMUM_BUDGET_FIELDS = (
    "min_daily_budget_imp",
    "min_daily_budget_high_freq",
    "min_daily_budget_low_freq",
    "min_daily_budget_video_views",
)

CAMPAIGN = "campaign"
AD_SET = "adset"
ACCOUNT = "account"
_READABLE = {
    ACCOUNT: {"id", "account_id", "name", "currency", "account_status"},
    CAMPAIGN: {
        "id",
        "account_id",
        "name",
        "status",
        "effective_status",
        "daily_budget",
        "lifetime_budget",
        "bid_strategy",
    },
    AD_SET: {
        "id",
        "account_id",
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
    },
}
_WRITABLE = {
    CAMPAIGN: {"name", "status", "daily_budget", "lifetime_budget", "bid_strategy"},
    AD_SET: {
        "name",
        "status",
        "daily_budget",
        "lifetime_budget",
        "bid_amount",
        "targeting",
        "adset_schedule",
        "bid_strategy",
    },
}
_NODE_TYPES = {ACCOUNT: "AdAccount", CAMPAIGN: "Campaign", AD_SET: "AdSet"}
_STATUSES = {"ACTIVE", "PAUSED", "ARCHIVED", "DELETED"}
_GONE = {"DELETED", "ARCHIVED"}
_MONEY_PARAMS = ("daily_budget", "lifetime_budget", "bid_amount")
_EXECUTION_OPTIONS = {"validate_only", "include_recommendations"}
_REQUEST_FAULTS = {
    FaultKind.RATE_LIMIT,
    FaultKind.SERVER_ERROR,
    FaultKind.AUTH_EXPIRED,
    FaultKind.PERMISSION_DENIED,
    FaultKind.INVALID_VALUE,
    FaultKind.CONFLICT,
    FaultKind.TIMEOUT_BEFORE_APPLY,
    FaultKind.TIMEOUT_AFTER_APPLY,
    FaultKind.HTML_502,
}
_HTML_502 = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway - error</title></head><body>"
    "<h1>Service Unavailable</h1><p>Sorry, something went wrong. The server encountered a temporary error.</p>"
    "</body></html>"
)


_INSIGHT_LEVELS = {"campaign": CAMPAIGN, "adset": AD_SET}
_INSIGHT_FIELDS = {
    "account_id",
    "account_currency",
    "campaign_id",
    "campaign_name",
    "adset_id",
    "adset_name",
    "date_start",
    "date_stop",
    "spend",
    "impressions",
    "clicks",
    "actions",
    "action_values",
}
# Meta counts one website purchase under each of these action types (they overlap).
PURCHASE_ACTION_TYPES = ("omni_purchase", "purchase", "offsite_conversion.fb_pixel_purchase")
MAX_INSIGHT_DAYS = 37 * 31  # Meta keeps 37 months of insights


@dataclass(frozen=True)
class FakeInsights:
    """One entity's delivery on one day; money in minor units of the account currency."""

    spend: int = 0
    impressions: int = 0
    clicks: int = 0
    purchases: int = 0
    purchase_value: int = 0

    def __add__(self, other: FakeInsights) -> FakeInsights:
        return FakeInsights(
            self.spend + other.spend,
            self.impressions + other.impressions,
            self.clicks + other.clicks,
            self.purchases + other.purchases,
            self.purchase_value + other.purchase_value,
        )

    @property
    def is_zero(self) -> bool:
        return self == NO_INSIGHTS


NO_INSIGHTS = FakeInsights()


def generated_insights(seed: int, node_id: str, day: dt.date) -> FakeInsights:
    """Deterministic delivery of one campaign or ad set on one day (a pure function of its
    arguments). About one day in ten has no delivery at all."""

    def draw(name: str) -> float:
        digest = hashlib.sha256(f"{seed}|{node_id}|{day.isoformat()}|{name}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    if draw("delivery") < 0.1:
        return NO_INSIGHTS
    impressions = 200 + int(draw("impressions") * 5_000)
    clicks = int(impressions * (0.01 + 0.04 * draw("ctr")))
    purchases = int(clicks * 0.12 * draw("cvr"))
    return FakeInsights(
        spend=clicks * (20 + int(draw("cpc") * 180)) + int(draw("cpm") * 300),
        impressions=impressions,
        clicks=clicks,
        purchases=purchases,
        purchase_value=purchases * (2_000 + int(draw("value") * 8_000)),
    )


@dataclass
class Reply:
    """One HTTP answer (or one batch item's answer)."""

    status: int
    body: dict[str, Any] | list[Any] | str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the fake received it (the access token is never recorded)."""

    method: str
    path: str
    params: dict[str, str]  # query and form parameters minus the token, proof and batch field
    batch_size: int | None  # number of requests in a Batch API call, None otherwise
    item_ids: tuple[str, ...]  # ids of the objects the request (or its items) addressed
    item_methods: tuple[str, ...]
    validate_only: bool
    repeated_campaigns: tuple[str, ...]  # campaigns with two or more ad-set writes in this batch
    # campaigns this batch writes (a campaign or its ad sets) that another write batch,
    # still unanswered, was writing when this one arrived
    overlapping_campaigns: tuple[str, ...]
    fault: str | None
    at: float  # time.monotonic() on arrival

    @property
    def is_batch(self) -> bool:
        return self.batch_size is not None

    @property
    def is_write(self) -> bool:
        return "POST" in self.item_methods


@dataclass(frozen=True)
class _Op:
    """One Graph API operation: a top-level request or one item of a batch."""

    method: str
    segments: tuple[str, ...]  # path below the version, e.g. ("act_1", "campaigns")
    params: dict[str, str]

    @property
    def node_id(self) -> str:
        return self.segments[0] if self.segments else ""

    @property
    def validate_only(self) -> bool:
        return "validate_only" in self.params.get("execution_options", "")


@dataclass
class _Node:
    kind: str
    data: dict[str, Any]


def graph_error(
    status: int,
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    transient: bool = False,
    title: str | None = None,
    user_msg: str | None = None,
    error_type: str = "OAuthException",
    headers: dict[str, str] | None = None,
) -> Reply:
    """A Graph API error answer shaped like Meta's."""
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code, "is_transient": transient}
    if subcode is not None:
        error["error_subcode"] = subcode
    if title:
        error["error_user_title"] = title
    if user_msg:
        error["error_user_msg"] = user_msg
    error["fbtrace_id"] = _trace_id()
    return Reply(status, {"error": error}, headers or {})


def _trace_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(8)).decode().rstrip("=")


def _missing(method: str, node_id: str) -> Reply:
    return graph_error(
        400,
        100,
        f"Unsupported {method.lower()} request. Object with ID '{node_id}' does not exist, cannot be loaded due "
        "to missing permissions, or does not support this operation. Please read the Graph API documentation at "
        "https://developers.facebook.com/docs/graph-api",
        subcode=SUBCODE_MISSING_OBJECT,
        error_type="GraphMethodException",
    )


def _invalid(title: str, user_msg: str) -> Reply:
    return graph_error(400, 100, "Invalid parameter", subcode=SUBCODE_INVALID_PARAMETER, title=title, user_msg=user_msg)


def _usage_header(account: str, regain_minutes: int) -> dict[str, str]:
    usage = {
        "type": "ads_management",
        "call_count": 100 if regain_minutes else 4,
        "total_cputime": 3,
        "total_time": 3,
        "estimated_time_to_regain_access": regain_minutes,
    }
    return {"X-Business-Use-Case-Usage": json.dumps({account.removeprefix("act_"): [usage]})}


class MetaGraphFake:
    """A Graph API v26.0 fake on 127.0.0.1 with its own accounts, campaigns and ad sets.

    Seed with ``add_account``/``add_campaign``/``add_ad_set`` (money in minor units, as
    Meta stores it), inspect with ``node`` and ``requests``, inject faults via ``faults``.
    Thread-safe: the server answers every request on its own thread.
    """

    def __init__(self, *, access_token: str = "fake-meta-token", app_secret: str | None = None) -> None:
        self.access_token = access_token
        self.app_secret = app_secret
        self.faults = FaultPlan()
        self._lock = threading.RLock()
        self._nodes: dict[str, _Node] = {}
        # campaign id -> its ad sets' ids, so per-campaign checks never scan every node
        self._ad_sets_of: dict[str, dict[str, None]] = {}
        self._log: list[RecordedRequest] = []
        self._writing: Counter[str] = Counter()  # campaign families of write batches not yet answered
        self._ids = itertools.count(120_000_000_000_001)
        self.performance_seed = 0
        self._pinned_insights: dict[tuple[str, dt.date], FakeInsights] = {}
        self._minimum_budgets: dict[str, dict[str, int]] = {}
        # ad set id -> when its budget changed (clock seconds), and until when it is blocked
        self._budget_changes: dict[str, list[float]] = {}
        self._budget_blocked_until: dict[str, float] = {}
        self.clock: Callable[[], float] = time.monotonic
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle ------------------------------------------------------------------------

    def start(self) -> MetaGraphFake:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.block_on_close = False  # a handler hanging on a timeout fault must not block stop()
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="meta-graph-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> MetaGraphFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        """Forget every object, request and fault; latency and hang time go back to defaults.

        ``faults`` stays the same object, so references to it remain valid.
        """
        with self._lock:
            self._nodes.clear()
            self._ad_sets_of.clear()
            self._log.clear()
            self._pinned_insights.clear()
            self._minimum_budgets.clear()
            self._budget_changes.clear()
            self._budget_blocked_until.clear()
            self.clock = time.monotonic
            self.performance_seed = 0
            self.faults.clear()
            self.faults.hang_seconds = FaultPlan().hang_seconds

    # Seeding and inspection -----------------------------------------------------------

    def add_account(
        self,
        account_id: str = "act_1000",
        *,
        currency: str = "EUR",
        name: str = "Fake account",
        minimum_budgets: dict[str, int] | None = None,
    ) -> str:
        """An ad account billed in ``currency`` (one Meta lists, or ``MoneyError``).

        ``minimum_budgets`` are what ``act_<id>/minimum_budgets`` answers (fields of Meta's
        MinimumBudget, integers in the currency's offset units,
        https://developers.facebook.com/docs/marketing-api/reference/minimum-budget);
        a daily budget below ``min_daily_budget_imp`` is refused as too low.
        """
        meta_offset(currency)
        account_id = f"act_{account_id.removeprefix('act_')}"
        self._minimum_budgets[account_id] = dict(minimum_budgets or {})
        with self._lock:
            self._nodes[account_id] = _Node(
                ACCOUNT,
                {
                    "id": account_id,
                    "account_id": account_id[4:],
                    "name": name,
                    "currency": currency,
                    "account_status": 1,
                },
            )
        return account_id

    def add_campaign(
        self,
        account_id: str,
        *,
        campaign_id: str | None = None,
        name: str = "",
        status: str = "ACTIVE",
        daily_budget: int | None = None,
        lifetime_budget: int | None = None,
        bid_strategy: str = "LOWEST_COST_WITHOUT_CAP",
    ) -> str:
        """A campaign; a budget here makes it a CBO campaign (its ad sets carry none)."""
        node_id = campaign_id or str(next(self._ids))
        data = {
            "id": node_id,
            "account_id": account_id.removeprefix("act_"),
            "name": name or f"Campaign {node_id}",
            "status": status,
            "daily_budget": daily_budget,
            "lifetime_budget": lifetime_budget,
            "bid_strategy": bid_strategy,
        }
        with self._lock:
            self._nodes[node_id] = _Node(CAMPAIGN, data)
        return node_id

    def add_ad_set(
        self,
        campaign_id: str,
        *,
        ad_set_id: str | None = None,
        name: str = "",
        status: str = "ACTIVE",
        daily_budget: int | None = None,
        lifetime_budget: int | None = None,
        bid_amount: int | None = None,
        targeting: dict[str, Any] | None = None,
        adset_schedule: list[dict[str, Any]] | None = None,
        bid_strategy: str | None = None,
    ) -> str:
        """An ad set; without ``bid_strategy`` it bids as its campaign does."""
        node_id = ad_set_id or str(next(self._ids))
        with self._lock:
            campaign = self._nodes[campaign_id].data
            self._ad_sets_of.setdefault(campaign_id, {})[node_id] = None
            self._nodes[node_id] = _Node(
                AD_SET,
                {
                    "id": node_id,
                    "account_id": campaign["account_id"],
                    "campaign_id": campaign_id,
                    "name": name or f"Ad set {node_id}",
                    "status": status,
                    "daily_budget": daily_budget,
                    "lifetime_budget": lifetime_budget,
                    "bid_amount": bid_amount,
                    "targeting": targeting or {"geo_locations": {"countries": ["DE"]}},
                    "adset_schedule": adset_schedule,
                    "bid_strategy": bid_strategy,
                },
            )
        return node_id

    def node(self, node_id: str) -> dict[str, Any]:
        """A copy of an object's stored fields (money in minor units)."""
        with self._lock:
            return json.loads(json.dumps(self._nodes[node_id].data))

    def remove(self, node_id: str) -> None:
        """Make an object unknown: reads and writes of it fail with code 100, subcode 33."""
        with self._lock:
            node = self._nodes.pop(node_id, None)
            if node is not None and node.kind == AD_SET:
                self._ad_sets_of.get(node.data["campaign_id"], {}).pop(node_id, None)

    def set_insights(self, node_id: str, day: dt.date, **values: int) -> FakeInsights:
        """Pin one campaign's or ad set's delivery on one day (fields of ``FakeInsights``,
        money in minor units, unset ones 0). All zero means no delivery: the day has no row."""
        insights = FakeInsights(**values)
        with self._lock:
            self._pinned_insights[(node_id, day)] = insights
        return insights

    def insights(self, node_id: str, day: dt.date) -> FakeInsights:
        """What the insights edge reports for one entity and day (NO_INSIGHTS: no row)."""
        with self._lock:
            return self._insights_of(node_id, day)

    def _insights_of(self, node_id: str, day: dt.date) -> FakeInsights:
        pinned = self._pinned_insights.get((node_id, day))
        if pinned is not None:
            return pinned
        ad_set_ids = self._ad_sets_of.get(node_id)
        if self._nodes[node_id].kind == CAMPAIGN and ad_set_ids:
            return sum((self._insights_of(i, day) for i in ad_set_ids), NO_INSIGHTS)
        return generated_insights(self.performance_seed, node_id, day)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def batches(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.is_batch]

    # Request handling -----------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, str]) -> Reply | None:
        """Answer one HTTP request; None means no answer (the client has given up)."""
        token = params.pop("access_token", None)
        proof = params.pop("appsecret_proof", None)
        version, _, rest = path.strip("/").partition("/")
        request = _Op(method, tuple(s for s in rest.split("/") if s), params)
        ops = self._batch_ops(params) if method == "POST" and not request.segments and "batch" in params else None
        if isinstance(ops, Reply):
            return ops
        scope = FaultScope.WRITE if "POST" in {op.method for op in (ops or [request])} else FaultScope.READ
        fault = self.faults.take(scope, _touched(ops or [request]))
        families = self._record(method, path, request, ops, fault)
        try:
            time.sleep(self.faults.latency_seconds)
            refusal = self._refuse(token, proof, version, ops)
            if refusal is not None:
                return refusal
            if fault is not None and fault.kind == FaultKind.ENTITY_DELETED:
                self._delete(fault.entity_ids or {op.node_id for op in (ops or [request])})
            if fault is not None and _hits_whole_request(fault):
                return self._fail_request(fault, lambda: self._answer(request, ops, None))
            return self._answer(request, ops, fault)
        finally:
            with self._lock:
                self._writing.subtract(families)
                self._writing += Counter()  # drop the zeros

    def _answer(self, request: _Op, ops: list[_Op] | None, fault: Fault | None) -> Reply | None:
        if ops is None:
            reply = self._answer_op(request, fault, first_write=True)
            return reply if reply is not None else self._hang(None)
        first_write = next((op for op in ops if op.method == "POST"), None)
        items = [self._answer_op(op, fault, first_write=op is first_write) for op in ops]
        throttled = (
            fault is not None
            and fault.kind == FaultKind.RATE_LIMIT
            and any(_targets(fault, op, op is first_write) for op in ops)
        )
        body = [
            None
            if item is None
            else {
                "code": item.status,
                "headers": [
                    {"name": name, "value": value}
                    for name, value in {"Content-Type": "text/javascript; charset=UTF-8", **item.headers}.items()
                ],
                "body": json.dumps(item.body),
            }
            for item in items
        ]
        return Reply(200, body, self._rate_limit_headers(fault) if throttled else {})

    def _answer_op(self, op: _Op, fault: Fault | None, *, first_write: bool) -> Reply | None:
        """One operation, with the fault applied if it targets it; None = no answer in time."""
        kind = fault.kind if fault is not None and _targets(fault, op, first_write) else None
        if kind == FaultKind.TIMEOUT_BEFORE_APPLY:
            return None
        if kind == FaultKind.TIMEOUT_AFTER_APPLY:
            self._dispatch(op, apply=True)
            return None
        if kind in _ITEM_ERRORS:
            return _ITEM_ERRORS[kind](self, fault, op)
        return self._dispatch(op, apply=kind != FaultKind.SILENT_NOOP)

    def _fail_request(self, fault: Fault, run: Callable[[], Reply | None]) -> Reply | None:
        """A fault that hits the whole HTTP request."""
        if fault.kind == FaultKind.TIMEOUT_BEFORE_APPLY:
            return self._hang(None)
        if fault.kind == FaultKind.TIMEOUT_AFTER_APPLY:
            return self._hang(run())
        if fault.kind == FaultKind.HTML_502:
            return Reply(502, _HTML_502, {"Content-Type": "text/html; charset=utf-8"})
        if fault.kind == FaultKind.RATE_LIMIT:
            return graph_error(
                400,
                80004,
                "There have been too many calls to this ad-account. Wait a bit and try again. For more "
                "info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
                subcode=SUBCODE_RATE_LIMIT,
                headers=self._rate_limit_headers(fault),
            )
        return _ITEM_ERRORS[fault.kind](self, fault, None)

    def _hang(self, reply: Reply | None) -> Reply | None:
        """Stay silent past the client's timeout, then answer into the void."""
        time.sleep(self.faults.hang_seconds)
        return reply

    def _refuse(self, token: str | None, proof: str | None, version: str, ops: list[_Op] | None) -> Reply | None:
        if token != self.access_token:
            return graph_error(400, 190, "Invalid OAuth access token - Cannot parse access token")
        if self.app_secret and proof != _proof(self.app_secret, token):
            return graph_error(
                400, 100, "Invalid appsecret_proof provided in the API argument", error_type="GraphMethodException"
            )
        if version != API_VERSION:
            return graph_error(400, 2635, f"You are calling a deprecated version of the Ads API ({version}).")
        if ops is not None and len(ops) > MAX_BATCH_REQUESTS:
            return graph_error(
                400, 100, f"Too many requests in batch message. Maximum batch size is {MAX_BATCH_REQUESTS}"
            )
        return None

    def _batch_ops(self, params: dict[str, str]) -> list[_Op] | Reply:
        try:
            items = json.loads(params.pop("batch"))
            return [_batch_op(item) for item in items]
        except (ValueError, TypeError, KeyError, AttributeError):
            return graph_error(400, 100, "The parameter batch must be a JSON array of requests")

    def _record(self, method: str, path: str, request: _Op, ops: list[_Op] | None, fault: Fault | None) -> Counter[str]:
        """Log the request; return the campaign families it writes (in flight until answered)."""
        ops_or_request = ops if ops is not None else [request]
        with self._lock:
            writes = [op for op in ops or [] if op.method == "POST" and op.node_id in self._nodes]
            campaigns = Counter(
                self._nodes[op.node_id].data["campaign_id"] for op in writes if self._nodes[op.node_id].kind == AD_SET
            )
            families = Counter(
                self._nodes[op.node_id].data["campaign_id"] if self._nodes[op.node_id].kind == AD_SET else op.node_id
                for op in writes
            )
            self._log.append(
                RecordedRequest(
                    method=method,
                    path=path,
                    params=dict(request.params),
                    batch_size=len(ops) if ops is not None else None,
                    item_ids=tuple(op.node_id for op in ops_or_request),
                    item_methods=tuple(op.method for op in ops_or_request),
                    validate_only=any(op.validate_only for op in ops_or_request),
                    repeated_campaigns=tuple(sorted(c for c, n in campaigns.items() if n > 1)),
                    overlapping_campaigns=tuple(sorted(f for f in families if self._writing[f] > 0)),
                    fault=str(fault.kind) if fault is not None else None,
                    at=time.monotonic(),
                )
            )
            self._writing.update(families)
        return families

    def _delete(self, node_ids: set[str] | frozenset[str]) -> None:
        with self._lock:
            for node_id in node_ids:
                if node_id in self._nodes and self._nodes[node_id].kind != ACCOUNT:
                    self._nodes[node_id].data["status"] = "DELETED"

    # Fault answers --------------------------------------------------------------------

    def _rate_limit_headers(self, fault: Fault) -> dict[str, str]:
        with self._lock:
            account = next((n.data["account_id"] for n in self._nodes.values() if n.kind == ACCOUNT), "0")
        return _usage_header(account, max(1, math.ceil(fault.retry_after / 60)))

    def _item_rate_limit(self, fault: Fault, op: _Op | None) -> Reply:
        """An ads_management business-use-case throttle of the account inside a batch: code
        80004 (https://developers.facebook.com/docs/graph-api/overview/rate-limiting, Business
        Use Case Rate Limits). The item carries no usage header of its own; the usage, with
        ``estimated_time_to_regain_access``, is on the batch's HTTP response (``_answer``)."""
        return graph_error(
            400,
            80004,
            "There have been too many calls to this ad-account. Wait a bit and try again.",
            subcode=SUBCODE_RATE_LIMIT,
        )

    def _server_error(self, fault: Fault, op: _Op | None) -> Reply:
        return graph_error(500, 2, "An unexpected error has occurred. Please retry your request later.", transient=True)

    def _auth_expired(self, fault: Fault, op: _Op | None) -> Reply:
        return graph_error(
            400,
            190,
            "Error validating access token: Session has expired on Friday, 20-Nov-26 "
            "05:00:00 PST. The current time is Friday, 20-Nov-26 06:00:00 PST.",
            subcode=SUBCODE_SESSION_EXPIRED,
        )

    def _permission_denied(self, fault: Fault, op: _Op | None) -> Reply:
        return graph_error(403, 200, "(#200) Requires ads_management permission to manage the object")

    def _invalid_value(self, fault: Fault, op: _Op | None) -> Reply:
        return _invalid("Invalid budget", "The budget you entered is not valid for this ad set.")

    def _conflict(self, fault: Fault, op: _Op | None) -> Reply:
        return graph_error(
            503,
            2,
            "Another update to this object is in progress. Please try again later.",
            transient=True,
            title="Update in progress",
        )

    # Graph API operations -------------------------------------------------------------

    def _dispatch(self, op: _Op, *, apply: bool) -> Reply:
        with self._lock:
            if op.method == "GET" and not op.segments and "ids" in op.params:
                return self._read_many(op.params["ids"].split(","), op.params)
            if op.method == "GET" and len(op.segments) == 1:
                return self._read(op.node_id, op.params)
            if op.method == "GET" and len(op.segments) == 2 and op.segments[1] in ("campaigns", "adsets"):
                return self._list(op.node_id, op.segments[1], op.params)
            if op.method == "GET" and len(op.segments) == 2 and op.segments[1] == "insights":
                return self._insights(op.node_id, op.params)
            if op.method == "GET" and len(op.segments) == 2 and op.segments[1] == "minimum_budgets":
                return self._minimum_budgets_of(op.node_id)
            if op.method == "POST" and len(op.segments) == 1:
                return self._update(op.node_id, dict(op.params), apply=apply)
        return graph_error(400, 2500, f"Unknown path components: /{'/'.join(op.segments)}")

    def _minimum_budgets_of(self, account_id: str) -> Reply:
        """``GET act_<id>/minimum_budgets``: a list of MinimumBudget nodes (one, in the
        account currency)."""
        account = self._nodes.get(account_id)
        if account is None or account.kind != ACCOUNT:
            return _missing("GET", account_id)
        values = self._minimum_budgets.get(account_id, {})
        row = {"currency": account.data["currency"], **{f: values[f] for f in MINIMUM_BUDGET_FIELDS if f in values}}
        return Reply(200, {"data": [row], "paging": {}})

    def _read(self, node_id: str, params: dict[str, str]) -> Reply:
        node = self._nodes.get(node_id)
        if node is None:
            return _missing("GET", node_id)
        fields = [f for f in params.get("fields", "id,name").split(",") if f]
        unknown = [f for f in fields if f not in _READABLE[node.kind]]
        if unknown:
            return graph_error(
                400,
                100,
                f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type ({_NODE_TYPES[node.kind]})",
            )
        return Reply(200, self._render(node, fields))

    def _read_many(self, node_ids: list[str], params: dict[str, str]) -> Reply:
        missing = [node_id for node_id in node_ids if node_id not in self._nodes]
        if missing:
            return graph_error(400, 803, f"(#803) Some of the aliases you requested do not exist: {missing[0]}")
        answers = {node_id: self._read(node_id, params) for node_id in node_ids}
        failed = next((reply for reply in answers.values() if reply.status != 200), None)
        return failed or Reply(200, {node_id: reply.body for node_id, reply in answers.items()})

    def _list(self, account_id: str, edge: str, params: dict[str, str]) -> Reply:
        account = self._nodes.get(account_id)
        if account is None or account.kind != ACCOUNT:
            return _missing("GET", account_id)
        kind = CAMPAIGN if edge == "campaigns" else AD_SET
        rows = [
            n
            for n in self._nodes.values()
            if n.kind == kind and n.data["account_id"] == account_id[4:] and n.data["status"] not in _GONE
        ]
        fields = [f for f in params.get("fields", "id").split(",") if f]
        return self._page(account_id, edge, params, rows, lambda node: self._render(node, fields))

    def _page(
        self, account_id: str, edge: str, params: dict[str, str], rows: list[Any], render: Callable[[Any], Any]
    ) -> Reply:
        """One page of an account edge: ``limit`` rows from the ``after`` cursor on, with
        ``paging.next`` while more rows follow."""
        start = int(base64.b64decode(params["after"]).decode()) + 1 if params.get("after") else 0
        limit = int(params.get("limit", DEFAULT_PAGE_LIMIT))
        page = rows[start : start + limit]
        body: dict[str, Any] = {"data": [render(row) for row in page]}
        if page:
            last = start + len(page) - 1
            body["paging"] = {"cursors": {"before": _cursor(start), "after": _cursor(last)}}
            if last + 1 < len(rows):
                query = {"access_token": self.access_token, **params, "after": _cursor(last)}
                body["paging"]["next"] = f"{self.base_url}/{API_VERSION}/{account_id}/{edge}?{urlencode(query)}"
        return Reply(200, body)

    def _insights(self, account_id: str, params: dict[str, str]) -> Reply:
        """Daily insights of every campaign or ad set of the account with delivery."""
        account = self._nodes.get(account_id)
        if account is None or account.kind != ACCOUNT:
            return _missing("GET", account_id)
        request = _insight_request(params)
        if isinstance(request, Reply):
            return request
        kind, days, fields = request
        entities = [n for n in self._nodes.values() if n.kind == kind and n.data["account_id"] == account_id[4:]]
        rows = [
            (node, day, insights)
            for node in entities
            for day in days
            if not (insights := self._insights_of(node.data["id"], day)).is_zero
        ]
        currency = account.data["currency"]
        return self._page(
            account_id, "insights", params, rows, lambda row: self._insight_row(*row, account, currency, fields)
        )

    def _insight_row(
        self, node: _Node, day: dt.date, insights: FakeInsights, account: _Node, currency: str, fields: list[str]
    ) -> dict[str, Any]:
        campaign = node if node.kind == CAMPAIGN else self._nodes[node.data["campaign_id"]]
        values: dict[str, Any] = {
            "account_id": account.data["account_id"],
            "account_currency": currency,
            "campaign_id": campaign.data["id"],
            "campaign_name": campaign.data["name"],
            "adset_id": node.data["id"] if node.kind == AD_SET else None,
            "adset_name": node.data["name"] if node.kind == AD_SET else None,
            "spend": _amount(insights.spend, currency),
            "impressions": str(insights.impressions),
            "clicks": str(insights.clicks),
        }
        actions = [{"action_type": "link_click", "value": str(insights.clicks)}] if insights.clicks else []
        if insights.purchases:
            actions += [{"action_type": t, "value": str(insights.purchases)} for t in PURCHASE_ACTION_TYPES]
            values["action_values"] = [
                {"action_type": t, "value": _amount(insights.purchase_value, currency)} for t in PURCHASE_ACTION_TYPES
            ]
        values["actions"] = actions or None  # Meta leaves out action lists that would be empty
        row = {name: values[name] for name in fields if values.get(name) is not None}
        return {**row, "date_start": day.isoformat(), "date_stop": day.isoformat()}

    def _render(self, node: _Node, fields: list[str]) -> dict[str, Any]:
        """A node as Meta returns it: money as strings, unset fields left out."""
        values = {**node.data, "effective_status": self._effective_status(node)}
        if node.kind == AD_SET:
            values["bid_strategy"] = self._bid_strategy_of(node.data)
        out: dict[str, Any] = {}
        for name in ["id", *fields]:
            value = values.get(name)
            if value is not None:
                out[name] = str(value) if name in ("daily_budget", "lifetime_budget") else value
        return out

    def _bid_strategy_of(self, ad_set: dict[str, Any]) -> str | None:
        """An ad set's own bid strategy, else its campaign's (CBO campaigns set it there)."""
        return ad_set.get("bid_strategy") or self._nodes[ad_set["campaign_id"]].data.get("bid_strategy")

    def _effective_status(self, node: _Node) -> str | None:
        status = node.data.get("status")
        if node.kind != AD_SET or status in _GONE:
            return status
        campaign_status = self._nodes[node.data["campaign_id"]].data["status"]
        if campaign_status in _GONE:
            return campaign_status
        return "CAMPAIGN_PAUSED" if campaign_status == "PAUSED" and status == "ACTIVE" else status

    def _update(self, node_id: str, params: dict[str, str], *, apply: bool) -> Reply:
        node = self._nodes.get(node_id)
        if node is None or node.kind == ACCOUNT or node.data["status"] == "DELETED":
            return _missing("POST", node_id)
        try:
            options = set(json.loads(params.pop("execution_options", "[]")))
        except (ValueError, TypeError):
            options = {"<unreadable>"}
        if not options <= _EXECUTION_OPTIONS:
            return graph_error(400, 100, "(#100) execution_options must be an array of known options")
        parsed = _parse_update(node.kind, params)
        if isinstance(parsed, Reply):
            return parsed
        refusal = self._check(node, {**node.data, **parsed})
        if refusal is not None:
            return refusal
        changes_budget = node.kind == AD_SET and any(
            name in parsed and parsed[name] != node.data.get(name) for name in ("daily_budget", "lifetime_budget")
        )
        if changes_budget:
            refusal = self._budget_change_limit(node_id)
            if refusal is not None:
                return refusal
        if apply and "validate_only" not in options:
            node.data.update(parsed)
            if changes_budget:
                self._budget_changes.setdefault(node_id, []).append(self.clock())
        return Reply(200, {"success": True})

    def _budget_change_limit(self, ad_set_id: str) -> Reply | None:
        """The 5th budget change of an ad set within an hour is refused with code 17, and
        its budget changes stay blocked for an hour (see BUDGET_CHANGES_PER_HOUR)."""
        now = self.clock()
        recent = [t for t in self._budget_changes.get(ad_set_id, []) if now - t < 3600]
        self._budget_changes[ad_set_id] = recent
        if now >= self._budget_blocked_until.get(ad_set_id, now) and len(recent) < BUDGET_CHANGES_PER_HOUR:
            return None
        if now >= self._budget_blocked_until.get(ad_set_id, now):
            self._budget_blocked_until[ad_set_id] = now + BUDGET_BLOCK_SECONDS
        return graph_error(400, 17, "User request limit reached", subcode=SUBCODE_RATE_LIMIT)

    def _check(self, node: _Node, new: dict[str, Any]) -> Reply | None:
        """Meta's cross-field rules for the state an update would produce."""
        if new.get("daily_budget") and new.get("lifetime_budget"):
            return _invalid("Choose one budget", "An object can have a daily or a lifetime budget, not both.")
        has_budget = bool(new.get("daily_budget") or new.get("lifetime_budget"))
        if has_budget and node.kind == AD_SET:
            campaign = self._nodes[new["campaign_id"]].data
            if campaign.get("daily_budget") or campaign.get("lifetime_budget"):
                return _invalid(
                    "Campaign budget is on",
                    "This ad set's campaign uses a campaign budget, so the ad set cannot have its own budget.",
                )
        if (
            has_budget
            and node.kind == CAMPAIGN
            and any(
                self._nodes[i].data.get("daily_budget") or self._nodes[i].data.get("lifetime_budget")
                for i in self._ad_sets_of.get(new["id"], ())
            )
        ):
            return _invalid("Ad set budgets are on", "Remove the ad set budgets before setting a campaign budget.")
        if node.kind == AD_SET and new.get("bid_amount") and new.get("bid_amount") != node.data.get("bid_amount"):
            strategy = self._bid_strategy_of(new) or "LOWEST_COST_WITHOUT_CAP"
            if strategy not in BID_AMOUNT_STRATEGIES:
                return _invalid(
                    "Bid amount not used",
                    f"bid_amount cannot be set on an ad set bidding with {strategy}; use a bid cap or cost cap.",
                )
        account = self._nodes[f"act_{new['account_id']}"].data
        minimum = self._minimum_budgets.get(account["id"], {}).get("min_daily_budget_imp")
        if minimum and new.get("daily_budget") and new["daily_budget"] < minimum:
            floor = _amount(minimum, account["currency"])
            return _invalid("Budget Is Too Low", f"The daily budget must be at least {floor} {account['currency']}.")
        if node.kind == AD_SET and new.get("adset_schedule") and not new.get("lifetime_budget"):
            return _invalid(
                "Schedule needs a lifetime budget",
                "Ad scheduling is only available for ad sets with a lifetime budget.",
            )
        return None


def _parse_update(kind: str, params: dict[str, str]) -> dict[str, Any] | Reply:
    """Form parameters of an update -> typed values, or the error Meta would answer."""
    parsed: dict[str, Any] = {}
    for name, raw in params.items():
        if name not in _WRITABLE[kind]:
            return graph_error(400, 100, f"(#100) Param {name} is not a valid parameter for {_NODE_TYPES[kind]}")
        if name in _MONEY_PARAMS:
            if not raw.isdigit() or int(raw) <= 0:
                return _invalid(
                    "Invalid amount", f"{name} must be a positive whole number of minor units, got {raw!r}."
                )
            parsed[name] = int(raw)
        elif name == "status" and raw not in _STATUSES:
            return graph_error(400, 100, f"(#100) status must be one of {sorted(_STATUSES)}")
        elif name == "targeting":
            value = _json(raw)
            if not isinstance(value, dict) or "geo_locations" not in value:
                return _invalid("Location missing", "Your audience is missing a location (geo_locations).")
            parsed[name] = value
        elif name == "adset_schedule":
            value = _json(raw)
            if not isinstance(value, list) or not all(_is_day_part(part) for part in value):
                return _invalid("Invalid schedule", "Each schedule entry needs start_minute, end_minute and days.")
            parsed[name] = value
        else:
            parsed[name] = raw
    return parsed


def _insight_request(params: dict[str, str]) -> tuple[str, list[dt.date], list[str]] | Reply:
    """(entity kind, days, fields) of an insights request, or the error Meta would answer."""
    level = params.get("level", "account")
    if level not in _INSIGHT_LEVELS:
        return graph_error(400, 100, f"(#100) The fake serves level=campaign and level=adset only, not {level!r}")
    if params.get("time_increment") != "1":
        return graph_error(400, 100, "(#100) The fake serves daily insights only (time_increment=1)")
    time_range = _json(params.get("time_range", ""))
    try:
        since = dt.date.fromisoformat(time_range["since"])
        until = dt.date.fromisoformat(time_range["until"])
    except (TypeError, KeyError, ValueError):
        return graph_error(400, 100, "(#100) time_range must be {'since':YYYY-MM-DD,'until':YYYY-MM-DD}")
    if since > until or (until - since).days >= MAX_INSIGHT_DAYS:
        return graph_error(400, 100, "(#100) time_range: since must not be after until, nor 37 months before it")
    fields = [f for f in params.get("fields", "spend").split(",") if f]
    unknown = [f for f in fields if f not in _INSIGHT_FIELDS]
    if unknown:
        return graph_error(400, 100, f"(#100) {unknown[0]} is not valid for fields param.")
    days = [since + dt.timedelta(days=n) for n in range((until - since).days + 1)]
    return _INSIGHT_LEVELS[level], days, fields


def _amount(minor: int, currency: str) -> str:
    """Meta's integer (amount x offset) as insights write money: a decimal string in the
    currency (12.34 EUR, 5000 HUF)."""
    return str(Decimal(minor) / meta_offset(currency))


def _is_day_part(part: Any) -> bool:
    return isinstance(part, dict) and {"start_minute", "end_minute", "days"} <= part.keys()


def _json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _hits_whole_request(fault: Fault) -> bool:
    """HTML pages come from proxies in front of the Graph API, so they never hit single items."""
    return fault.kind == FaultKind.HTML_502 or (fault.kind in _REQUEST_FAULTS and fault.entity_ids is None)


def _touched(ops: list[_Op]) -> set[str]:
    """The entity ids a request reads or writes (its nodes, and ``ids=`` lists)."""
    touched = {op.node_id for op in ops}
    for op in ops:
        touched.update(i for i in op.params.get("ids", "").split(",") if i)
    return touched


def _targets(fault: Fault, op: _Op, first_write: bool) -> bool:
    """Whether an item-level fault hits this operation."""
    if fault.scope == FaultScope.WRITE and op.method != "POST":
        return False
    if fault.scope == FaultScope.READ and op.method != "GET":
        return False
    if fault.entity_ids is not None:
        return op.node_id in fault.entity_ids
    if fault.kind == FaultKind.PARTIAL_FAILURE:
        return first_write
    return fault.kind == FaultKind.SILENT_NOOP


_ITEM_ERRORS: dict[FaultKind, Callable[[MetaGraphFake, Fault, _Op | None], Reply]] = {
    FaultKind.RATE_LIMIT: MetaGraphFake._item_rate_limit,
    FaultKind.SERVER_ERROR: MetaGraphFake._server_error,
    FaultKind.AUTH_EXPIRED: MetaGraphFake._auth_expired,
    FaultKind.PERMISSION_DENIED: MetaGraphFake._permission_denied,
    FaultKind.INVALID_VALUE: MetaGraphFake._invalid_value,
    FaultKind.PARTIAL_FAILURE: MetaGraphFake._invalid_value,
    FaultKind.CONFLICT: MetaGraphFake._conflict,
}


def _batch_op(item: dict[str, Any]) -> _Op:
    url = urlsplit(item["relative_url"])
    segments = tuple(s for s in url.path.split("/") if s)
    if segments and segments[0] == API_VERSION:
        segments = segments[1:]
    params = dict(parse_qsl(url.query, keep_blank_values=True))
    params.update(parse_qsl(item.get("body") or "", keep_blank_values=True))
    return _Op(item["method"].upper(), segments, params)


def _cursor(position: int) -> str:
    return base64.b64encode(str(position).encode()).decode()


def _proof(app_secret: str, token: str | None) -> str:
    return hmac.new(app_secret.encode(), msg=(token or "").encode(), digestmod=hashlib.sha256).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One buffered write per answer and no Nagle: otherwise keep-alive answers wait ~40 ms
    # for the client's delayed ACK, which would swamp the latency a benchmark injects.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line."""

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            params.update(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        reply = self.server.fake.handle(method, url.path, params)  # type: ignore[attr-defined]
        if reply is None:
            self.close_connection = True
            return
        self._write(reply)

    def _write(self, reply: Reply) -> None:
        data = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
        headers = {
            "Content-Type": "application/json; charset=UTF-8",
            "x-fb-trace-id": _trace_id(),
            "x-fb-request-id": _trace_id(),
            "facebook-api-version": API_VERSION,
            **reply.headers,
        }
        try:
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped waiting (a timeout fault)
