"""A local gRPC fake of the Google Ads API (v26) that the real ``google-ads`` SDK talks to.

A test and benchmark tool: nothing in the product imports it. It serves, over TLS on
127.0.0.1, the methods BudgetRadar's executor calls (GoogleAdsService Search and
SearchStream, CampaignBudgetService, CampaignService and AdGroupService mutates,
CustomerService ListAccessibleCustomers) with the SDK's own message classes, and keeps
its own accounts: budgets (shared ones with a computed ``reference_count``), campaigns and
ad groups. Reads show writes.

Where BudgetRadar depends on the API's behaviour, the fake behaves like the API (each
rule cites its page where it is implemented):
- bearer tokens come from its OAuth endpoint (``oauth``, ``google_oauth_fake``), are
  refreshed with a registered client and refresh token (``credentials()``) and expire;
  an unknown or expired token is UNAUTHENTICATED (OAUTH_TOKEN_INVALID / _EXPIRED);
- the ``request-id`` of a successful call travels in the trailing metadata;
- money must be a multiple of the currency's billable unit, served as
  ``currency_constant.billable_unit_micros`` (``set_billable_unit``);
- a campaign has a ``bidding_strategy_type`` (``set_bidding_strategy``); an ad group's
  ``effective_cpc_bid_micros`` is null, and a CPC bid change accepted but without effect,
  unless the strategy is Manual CPC, Enhanced CPC, Page One Promoted or Target Outrank Share;
- an IN list of more than ``MAX_FILTER_VALUES`` values is FILTER_HAS_TOO_MANY_VALUES;
- errors are aborted with the ``googleadsfailure-bin`` trailer and a ``request-id``, so
  the SDK raises ``GoogleAdsException`` (or ``ResourceExhausted``, ``InternalServerError``,
  ``ServiceUnavailable``, ``DeadlineExceeded`` for those statuses);
- mutates honour ``validate_only`` and ``partial_failure`` (failed operations are located
  by their index), refuse more than 10,000 operations, the same resource twice in one
  request, negative amounts and amounts that are not a whole number of the currency's
  minor unit;
- GAQL is parsed (a small subset: SELECT fields FROM resource WHERE conditions joined by
  AND, with IN, NOT IN, =, != and BETWEEN) and only the requested rows and fields come
  back; Search pages hold 10,000 rows and end with an empty ``next_page_token``;
- ``metrics.*`` and ``segments.date`` of campaigns and ad groups need a finite date range
  on ``segments.date`` (BETWEEN, = or IN), give one row per entity and day, and leave out
  days without any delivery. The numbers are deterministic per customer seed, entity and
  day (``generated_metrics``), can be pinned per day (``set_daily_metrics``), and a
  campaign with ad groups reports the sum of its ad groups.

Every request is recorded in ``requests``; faults come from ``faults`` (a ``FaultPlan``,
READ scope for Search/SearchStream/ListAccessibleCustomers, WRITE for mutates):
``latency_seconds`` sleeps before every request; RATE_LIMIT is RESOURCE_EXHAUSTED with a
quota_error and its retry_delay; SERVER_ERROR is INTERNAL (internal_error); HTML_502 is a
bare UNAVAILABLE, as a proxy's 502 reaches gRPC; TIMEOUT_BEFORE/AFTER_APPLY sleep
``hang_seconds`` (or until the client gives up) before/after changing state;
AUTH_EXPIRED is UNAUTHENTICATED (OAUTH_TOKEN_EXPIRED); PERMISSION_DENIED is
USER_PERMISSION_DENIED; CONFLICT is ABORTED (CONCURRENT_MODIFICATION); INVALID_VALUE
refuses the whole request (field_error); ENTITY_DELETED removes the listed (or targeted)
entities first; PARTIAL_FAILURE refuses the operations on the listed entities (a budget
also matches the ids of its campaigns) with a range error; SILENT_NOOP answers success
and changes nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import re
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.ads.googleads.v26.enums.types.ad_group_status import AdGroupStatusEnum
from google.ads.googleads.v26.enums.types.bidding_strategy_type import BiddingStrategyTypeEnum
from google.ads.googleads.v26.enums.types.budget_status import BudgetStatusEnum
from google.ads.googleads.v26.enums.types.campaign_status import CampaignStatusEnum
from google.ads.googleads.v26.errors.types import errors as ads_errors
from google.ads.googleads.v26.errors.types.authentication_error import AuthenticationErrorEnum
from google.ads.googleads.v26.errors.types.authorization_error import AuthorizationErrorEnum
from google.ads.googleads.v26.errors.types.bidding_error import BiddingErrorEnum
from google.ads.googleads.v26.errors.types.campaign_budget_error import CampaignBudgetErrorEnum
from google.ads.googleads.v26.errors.types.campaign_error import CampaignErrorEnum
from google.ads.googleads.v26.errors.types.database_error import DatabaseErrorEnum
from google.ads.googleads.v26.errors.types.field_error import FieldErrorEnum
from google.ads.googleads.v26.errors.types.field_mask_error import FieldMaskErrorEnum
from google.ads.googleads.v26.errors.types.internal_error import InternalErrorEnum
from google.ads.googleads.v26.errors.types.mutate_error import MutateErrorEnum
from google.ads.googleads.v26.errors.types.operation_access_denied_error import OperationAccessDeniedErrorEnum
from google.ads.googleads.v26.errors.types.query_error import QueryErrorEnum
from google.ads.googleads.v26.errors.types.quota_error import QuotaErrorEnum
from google.ads.googleads.v26.errors.types.range_error import RangeErrorEnum
from google.ads.googleads.v26.errors.types.request_error import RequestErrorEnum
from google.ads.googleads.v26.services.types import (
    ad_group_service,
    campaign_budget_service,
    campaign_service,
    customer_service,
    google_ads_service,
)
from google.protobuf import any_pb2, duration_pb2
from google.rpc import status_pb2

from platforms.fakes.faults import Fault, FaultKind, FaultPlan, FaultScope
from platforms.fakes.google_oauth_fake import OAuthTokenFake
from platforms.money import KNOWN_CURRENCIES, MICROS_PER_UNIT, currency_exponent

API_VERSION = "v26"
FAILURE_METADATA_KEY = f"google.ads.googleads.{API_VERSION}.errors.googleadsfailure-bin"
REQUEST_ID_METADATA_KEY = "request-id"
MAX_OPERATIONS_PER_REQUEST = 10_000
SEARCH_PAGE_SIZE = 10_000
# The API refuses a filter with too many values (QueryError.FILTER_HAS_TOO_MANY_VALUES,
# "The number of values (right-hand-side operands) in a filter exceeds the limit",
# https://developers.google.com/google-ads/api/reference/rpc/v26/QueryErrorEnum.QueryError)
# without documenting the limit. The fake enforces this one: below the 10,000 ids the
# executor once sent in one IN list, above the 1,000 it sends now.
MAX_FILTER_VALUES = 5_000
# ad_group.effective_cpc_bid_micros "will be same as that of the CPC (cost-per-click) bid
# value when the bidding strategy is one of manual cpc, enhanced cpc, page one promoted or
# target outrank share, otherwise the value will be null"; cpc_bid_micros "is used when the
# ad group's effective bidding strategy is Manual CPC ... and will be ignored" otherwise
# (https://developers.google.com/google-ads/api/reference/rpc/v26/AdGroup).
CPC_BIDDING_STRATEGIES = frozenset({"MANUAL_CPC", "ENHANCED_CPC", "PAGE_ONE_PROMOTED", "TARGET_OUTRANK_SHARE"})
_SERVICES = f"google.ads.googleads.{API_VERSION}.services"
FAKE_OAUTH_CLIENT = {
    "client_id": "fake-client-id.apps.googleusercontent.com",
    "client_secret": "fake-client-secret",
    "refresh_token": "1//fake-refresh-token",
}
_FIRST_BUDGET_ID = 8_000_000_001
_FAILURE_TYPE_URL = f"type.googleapis.com/google.ads.googleads.{API_VERSION}.errors.GoogleAdsFailure"


# TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsMaterial:
    """The fake's self-signed certificate (for 127.0.0.1 and localhost) and its key."""

    cert_path: Path
    cert_pem: bytes
    key_pem: bytes


_tls_lock = threading.Lock()
_tls: TlsMaterial | None = None


def ensure_test_tls_roots() -> TlsMaterial:
    """Create the fake's certificate once per process and make gRPC trust it.

    The SDK always opens TLS channels, and gRPC reads ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``
    only once, when the process creates its first TLS channel: call this before any
    Google Ads client is built. From then on gRPC in this process trusts only this
    certificate, so no channel could verify a real Google endpoint by accident.
    """
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = _write_self_signed_certificate(Path(tempfile.mkdtemp(prefix="google-ads-fake-")))
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(_tls.cert_path)
        return _tls


def _write_self_signed_certificate(directory: Path) -> TlsMaterial:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_path = directory / "fake-google-ads.pem"
    cert_path.write_bytes(cert_pem)
    return TlsMaterial(cert_path=cert_path, cert_pem=cert_pem, key_pem=key_pem)


# State -----------------------------------------------------------------------------------


@dataclass
class FakeBudget:
    id: int
    name: str
    amount_micros: int | None
    total_amount_micros: int | None
    explicitly_shared: bool
    status: str = "ENABLED"  # BudgetStatus name: ENABLED or REMOVED


@dataclass
class FakeCampaign:
    id: int
    name: str
    status: str  # CampaignStatus name: ENABLED, PAUSED or REMOVED
    budget_id: int
    bidding_strategy_type: str = "MANUAL_CPC"  # BiddingStrategyType name


@dataclass
class FakeAdGroup:
    id: int
    name: str
    status: str  # AdGroupStatus name
    campaign_id: int
    cpc_bid_micros: int | None


@dataclass(frozen=True)
class FakeMetrics:
    """One entity's delivery on one day, in the API's units (cost in micros)."""

    cost_micros: int = 0
    impressions: int = 0
    clicks: int = 0
    conversions: float = 0.0
    conversions_value: float = 0.0

    def __add__(self, other: FakeMetrics) -> FakeMetrics:
        return FakeMetrics(
            self.cost_micros + other.cost_micros,
            self.impressions + other.impressions,
            self.clicks + other.clicks,
            round(self.conversions + other.conversions, 6),
            round(self.conversions_value + other.conversions_value, 6),
        )

    @property
    def is_zero(self) -> bool:
        return self == NO_METRICS


NO_METRICS = FakeMetrics()
LEVELS = ("campaign", "ad_group")  # the GAQL resources that report metrics here


def generated_metrics(seed: int, currency: str, level: str, entity_id: int, day: dt.date) -> FakeMetrics:
    """Deterministic delivery of one entity on one day (a pure function of its arguments).

    About one day in ten has no delivery at all; cost is a whole number of the currency's
    minor units, conversions and their value have two decimals, as the API's usually do.
    """

    def draw(name: str) -> float:
        digest = hashlib.sha256(f"{seed}|{level}|{entity_id}|{day.isoformat()}|{name}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    if draw("delivery") < 0.1:
        return NO_METRICS
    impressions = 200 + int(draw("impressions") * 5_000)
    clicks = int(impressions * (0.01 + 0.04 * draw("ctr")))
    cost_minor_units = clicks * (20 + int(draw("cpc") * 180)) + int(draw("cpm") * 300)
    conversions = round(clicks * 0.12 * draw("cvr"), 2)
    return FakeMetrics(
        cost_micros=cost_minor_units * _minimum_unit_micros(currency),
        impressions=impressions,
        clicks=clicks,
        conversions=conversions,
        conversions_value=round(conversions * (20 + 80 * draw("value")), 2),
    )


@dataclass
class FakeCustomer:
    id: int
    currency: str
    budgets: dict[int, FakeBudget] = field(default_factory=dict)
    campaigns: dict[int, FakeCampaign] = field(default_factory=dict)
    ad_groups: dict[int, FakeAdGroup] = field(default_factory=dict)
    performance_seed: int = 0
    pinned_metrics: dict[tuple[str, int, dt.date], FakeMetrics] = field(default_factory=dict)
    # Money amounts must be multiples of the currency's billable unit: "Billed amounts should
    # be multiples of this value" (CurrencyConstant.billable_unit_micros,
    # https://developers.google.com/google-ads/api/reference/rpc/v26/CurrencyConstant); a
    # budget that is not fails NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT.
    billable_unit_micros: int = 10_000

    def metrics(
        self, level: str, entity_id: int, day: dt.date, ad_group_ids: Sequence[int] | None = None
    ) -> FakeMetrics:
        """What the API reports for one entity and day: pinned numbers, else for a campaign
        with ad groups (``ad_group_ids``, looked up when None) their sum, else generated."""
        pinned = self.pinned_metrics.get((level, entity_id, day))
        if pinned is not None:
            return pinned
        if level == "campaign":
            if ad_group_ids is None:
                ad_group_ids = [a.id for a in self.ad_groups.values() if a.campaign_id == entity_id]
            if ad_group_ids:
                return sum((self.metrics("ad_group", a, day) for a in ad_group_ids), NO_METRICS)
        return generated_metrics(self.performance_seed, self.currency, level, entity_id, day)

    def reference_counts(self) -> Counter[int]:
        """Campaigns (not removed) using each budget, as the API computes reference_count."""
        return Counter(c.budget_id for c in self.campaigns.values() if c.status != "REMOVED")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    request_id: str
    at: float  # time.monotonic() on arrival
    customer_id: str = ""
    validate_only: bool = False
    partial_failure: bool = False
    operation_count: int = 0
    resource_names: tuple[str, ...] = ()
    query: str = ""
    has_developer_token: bool = False
    has_bearer_token: bool = False
    login_customer_id: str | None = None

    @property
    def is_mutate(self) -> bool:
        return self.method.startswith("Mutate")


# Errors ----------------------------------------------------------------------------------

GoogleAdsError = ads_errors.GoogleAdsError


class _Refusal(Exception):
    """The whole request is refused: abort with ``code`` and a GoogleAdsFailure trailer."""

    def __init__(self, code: grpc.StatusCode, errors: Sequence[GoogleAdsError] = (), message: str = "") -> None:
        super().__init__(message or (errors[0].message if errors else code.name))
        self.code = code
        self.errors = list(errors)


def _error(
    message: str,
    *,
    index: int | None = None,
    path: Sequence[str] = (),
    retry_delay: float | None = None,
    **error_code: Any,
) -> GoogleAdsError:
    """A GoogleAdsError; ``index`` locates it at ``operations[index]`` like the API does."""
    error = GoogleAdsError(error_code=ads_errors.ErrorCode(**error_code), message=message)
    if index is not None:
        elements = [ads_errors.ErrorLocation.FieldPathElement(field_name="operations", index=index)]
        elements += [ads_errors.ErrorLocation.FieldPathElement(field_name=name) for name in path]
        error.location = ads_errors.ErrorLocation(field_path_elements=elements)
    if retry_delay is not None:
        seconds = int(retry_delay)
        error.details = ads_errors.ErrorDetails(
            quota_error_details=ads_errors.QuotaErrorDetails(
                rate_scope=ads_errors.QuotaErrorDetails.QuotaRateScope.ACCOUNT,
                rate_name="Requests per account",
                retry_delay=duration_pb2.Duration(seconds=seconds, nanos=int((retry_delay - seconds) * 1e9)),
            )
        )
    return error


def _failure(errors: Sequence[GoogleAdsError], request_id: str) -> ads_errors.GoogleAdsFailure:
    return ads_errors.GoogleAdsFailure(errors=list(errors), request_id=request_id)


def _fault_refusal(fault: Fault) -> _Refusal | None:
    """The refusal a fault stands for, or None for faults that shape the answer instead."""
    kind = fault.kind
    if kind is FaultKind.RATE_LIMIT:
        return _Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            [
                _error(
                    "Too many requests. Retry in the time given in retry_delay.",
                    retry_delay=fault.retry_after,
                    quota_error=QuotaErrorEnum.QuotaError.RESOURCE_EXHAUSTED,
                )
            ],
        )
    if kind is FaultKind.SERVER_ERROR:
        return _Refusal(
            grpc.StatusCode.INTERNAL,
            [_error("An internal error has occurred.", internal_error=InternalErrorEnum.InternalError.INTERNAL_ERROR)],
        )
    if kind is FaultKind.HTML_502:
        # A proxy's 502 page reaches a gRPC client as UNAVAILABLE without API details.
        return _Refusal(grpc.StatusCode.UNAVAILABLE, message="Received http2 header with status: 502")
    if kind is FaultKind.AUTH_EXPIRED:
        return _Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            [
                _error(
                    "The OAuth token in the header has expired.",
                    authentication_error=AuthenticationErrorEnum.AuthenticationError.OAUTH_TOKEN_EXPIRED,
                )
            ],
        )
    if kind is FaultKind.PERMISSION_DENIED:
        return _Refusal(
            grpc.StatusCode.PERMISSION_DENIED,
            [
                _error(
                    "User doesn't have permission to access customer.",
                    authorization_error=AuthorizationErrorEnum.AuthorizationError.USER_PERMISSION_DENIED,
                )
            ],
        )
    if kind is FaultKind.CONFLICT:
        return _Refusal(
            grpc.StatusCode.ABORTED,
            [
                _error(
                    "Multiple requests were attempting to modify the same resource at once. Retry the request.",
                    database_error=DatabaseErrorEnum.DatabaseError.CONCURRENT_MODIFICATION,
                )
            ],
        )
    if kind is FaultKind.INVALID_VALUE:
        return _Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            [_error("The field's value is invalid.", index=0, field_error=FieldErrorEnum.FieldError.INVALID_VALUE)],
        )
    return None


# Mutable resources -----------------------------------------------------------------------


@dataclass(frozen=True)
class _ResourceKind:
    """How one mutate service finds, checks and updates its resources."""

    collection: str  # as in resource names: customers/{id}/{collection}/{id}
    table: str  # FakeCustomer attribute
    writable: frozenset[str]
    removed_error: Callable[[int], GoogleAdsError]
    check: Callable[[FakeCustomer, Any, Any, str, int], list[GoogleAdsError]]  # (customer, target, update, path, index)
    apply: Callable[[Any, Any, str], None]  # (target, update, path)


def _check_budget(
    customer: FakeCustomer, budget: FakeBudget, update: Any, path: str, index: int
) -> list[GoogleAdsError]:
    amount = getattr(update, path)
    where = ("update", path)
    if amount < 0:
        return [_error("Too low.", index=index, path=where, range_error=RangeErrorEnum.RangeError.TOO_LOW)]
    if amount % customer.billable_unit_micros:
        return [
            _error(
                "A money amount was not a multiple of a minimum unit.",
                index=index,
                path=where,
                campaign_budget_error=CampaignBudgetErrorEnum.CampaignBudgetError.NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT,
            )
        ]
    if path == "amount_micros" and budget.total_amount_micros is not None:
        return [
            _error(
                "A total budget cannot have a daily amount.",
                index=index,
                path=where,
                campaign_budget_error=CampaignBudgetErrorEnum.CampaignBudgetError.BUDGET_AMOUNT_MUST_BE_UNSET_FOR_CUSTOM_BUDGET_PERIOD,
            )
        ]
    if path == "total_amount_micros" and budget.amount_micros is not None:
        return [
            _error(
                "A daily budget cannot have a total amount.",
                index=index,
                path=where,
                campaign_budget_error=CampaignBudgetErrorEnum.CampaignBudgetError.TOTAL_BUDGET_AMOUNT_MUST_BE_UNSET_FOR_BUDGET_PERIOD_DAILY,
            )
        ]
    return []


def _check_status(name: str, path: str, index: int, removed_error: GoogleAdsError) -> list[GoogleAdsError]:
    if name == "REMOVED":
        return [removed_error]
    if name not in ("ENABLED", "PAUSED"):
        return [
            _error(
                "Enum value is not permitted.",
                index=index,
                path=("update", path),
                request_error=RequestErrorEnum.RequestError.INVALID_ENUM_VALUE,
            )
        ]
    return []


def _check_campaign(
    customer: FakeCustomer, campaign: FakeCampaign, update: Any, path: str, index: int
) -> list[GoogleAdsError]:
    invalid = _error(
        "Campaigns are removed with a remove operation, not by status.",
        index=index,
        path=("update", path),
        campaign_error=CampaignErrorEnum.CampaignError.INVALID_STATUS_CHANGE,
    )
    return _check_status(_enum_name(CampaignStatusEnum.CampaignStatus, update.status), path, index, invalid)


def _check_ad_group(
    customer: FakeCustomer, ad_group: FakeAdGroup, update: Any, path: str, index: int
) -> list[GoogleAdsError]:
    if path == "status":
        invalid = _error(
            "Ad groups are removed with a remove operation, not by status.",
            index=index,
            path=("update", path),
            field_error=FieldErrorEnum.FieldError.INVALID_VALUE,
        )
        return _check_status(_enum_name(AdGroupStatusEnum.AdGroupStatus, update.status), path, index, invalid)
    bid = update.cpc_bid_micros
    if bid < 0:
        return [_error("Too low.", index=index, path=("update", path), range_error=RangeErrorEnum.RangeError.TOO_LOW)]
    if bid % customer.billable_unit_micros:
        return [
            _error(
                "Bid has too many fractional digit precision.",
                index=index,
                path=("update", path),
                bidding_error=BiddingErrorEnum.BiddingError.BID_TOO_MANY_FRACTIONAL_DIGITS,
            )
        ]
    return []


def _apply_budget(budget: FakeBudget, update: Any, path: str) -> None:
    setattr(budget, path, getattr(update, path))


def _apply_campaign(campaign: FakeCampaign, update: Any, path: str) -> None:
    campaign.status = CampaignStatusEnum.CampaignStatus(update.status).name


def _apply_ad_group(ad_group: FakeAdGroup, update: Any, path: str) -> None:
    if path == "status":
        ad_group.status = AdGroupStatusEnum.AdGroupStatus(update.status).name
    else:
        ad_group.cpc_bid_micros = update.cpc_bid_micros


def _removed_resource(index: int) -> GoogleAdsError:
    return _error(
        "The operation is not permitted for removed resources.",
        index=index,
        operation_access_denied_error=OperationAccessDeniedErrorEnum.OperationAccessDeniedError.OPERATION_NOT_PERMITTED_FOR_REMOVED_RESOURCE,
    )


def _removed_budget(index: int) -> GoogleAdsError:
    return _error(
        "The campaign budget is removed.",
        index=index,
        campaign_budget_error=CampaignBudgetErrorEnum.CampaignBudgetError.CAMPAIGN_BUDGET_REMOVED,
    )


_BUDGETS = _ResourceKind(
    "campaignBudgets",
    "budgets",
    frozenset({"amount_micros", "total_amount_micros"}),
    _removed_budget,
    _check_budget,
    _apply_budget,
)
_CAMPAIGNS = _ResourceKind(
    "campaigns", "campaigns", frozenset({"status"}), _removed_resource, _check_campaign, _apply_campaign
)
_AD_GROUPS = _ResourceKind(
    "adGroups",
    "ad_groups",
    frozenset({"status", "cpc_bid_micros"}),
    _removed_resource,
    _check_ad_group,
    _apply_ad_group,
)


def _enum_name(enum_cls: Any, number: int) -> str:
    try:
        return enum_cls(number).name
    except ValueError:
        return "UNKNOWN"


def _minimum_unit_micros(currency: str) -> int:
    """Micros of the currency's ISO minor unit: 10,000 for EUR/USD, 1,000,000 for JPY (the
    fake's default billable unit; ``GoogleAdsFake.set_billable_unit`` overrides it)."""
    return MICROS_PER_UNIT // 10 ** currency_exponent(currency)


# GAQL ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RowSource:
    customer: FakeCustomer
    reference_counts: Counter[int]
    campaign: FakeCampaign | None = None
    budget: FakeBudget | None = None
    ad_group: FakeAdGroup | None = None
    day: dt.date | None = None
    metrics: FakeMetrics | None = None
    currency: tuple[str, int] | None = None  # a currency_constant row: (code, billable unit micros)


def _effective_cpc_bid(s: _RowSource) -> int | None:
    campaign = s.customer.campaigns[s.ad_group.campaign_id]
    return s.ad_group.cpc_bid_micros if campaign.bidding_strategy_type in CPC_BIDDING_STRATEGIES else None


def _customer_name(s: _RowSource) -> str:
    return f"customers/{s.customer.id}"


_FIELDS: dict[str, Callable[[_RowSource], Any]] = {
    "customer.id": lambda s: s.customer.id,
    "customer.resource_name": _customer_name,
    "customer.currency_code": lambda s: s.customer.currency,
    "campaign.id": lambda s: s.campaign.id,
    "campaign.resource_name": lambda s: f"{_customer_name(s)}/campaigns/{s.campaign.id}",
    "campaign.name": lambda s: s.campaign.name,
    "campaign.status": lambda s: CampaignStatusEnum.CampaignStatus[s.campaign.status],
    "campaign.campaign_budget": lambda s: f"{_customer_name(s)}/campaignBudgets/{s.campaign.budget_id}",
    "campaign.bidding_strategy_type": lambda s: BiddingStrategyTypeEnum.BiddingStrategyType[
        s.campaign.bidding_strategy_type
    ],
    "campaign_budget.id": lambda s: s.budget.id,
    "campaign_budget.resource_name": lambda s: f"{_customer_name(s)}/campaignBudgets/{s.budget.id}",
    "campaign_budget.name": lambda s: s.budget.name,
    "campaign_budget.status": lambda s: BudgetStatusEnum.BudgetStatus[s.budget.status],
    "campaign_budget.amount_micros": lambda s: s.budget.amount_micros,
    "campaign_budget.total_amount_micros": lambda s: s.budget.total_amount_micros,
    "campaign_budget.explicitly_shared": lambda s: s.budget.explicitly_shared,
    "campaign_budget.reference_count": lambda s: s.reference_counts[s.budget.id],
    "ad_group.id": lambda s: s.ad_group.id,
    "ad_group.resource_name": lambda s: f"{_customer_name(s)}/adGroups/{s.ad_group.id}",
    "ad_group.name": lambda s: s.ad_group.name,
    "ad_group.status": lambda s: AdGroupStatusEnum.AdGroupStatus[s.ad_group.status],
    "ad_group.campaign": lambda s: f"{_customer_name(s)}/campaigns/{s.ad_group.campaign_id}",
    "ad_group.cpc_bid_micros": lambda s: s.ad_group.cpc_bid_micros,
    "ad_group.effective_cpc_bid_micros": _effective_cpc_bid,
    "currency_constant.code": lambda s: s.currency[0],
    "currency_constant.resource_name": lambda s: f"currencyConstants/{s.currency[0]}",
    "currency_constant.billable_unit_micros": lambda s: s.currency[1],
    "segments.date": lambda s: s.day.isoformat(),
    "metrics.cost_micros": lambda s: s.metrics.cost_micros,
    "metrics.impressions": lambda s: s.metrics.impressions,
    "metrics.clicks": lambda s: s.metrics.clicks,
    "metrics.conversions": lambda s: s.metrics.conversions,
    "metrics.conversions_value": lambda s: s.metrics.conversions_value,
}

# Which resources' fields each FROM resource can select (its own and attributed ones).
_SELECTABLE = {
    "campaign": ("campaign", "campaign_budget", "customer", "segments", "metrics"),
    "ad_group": ("ad_group", "campaign", "customer", "segments", "metrics"),
    "campaign_budget": ("campaign_budget", "customer"),
    "currency_constant": ("currency_constant",),
}

_QUERY = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<resource>\w+)(?:\s+WHERE\s+(?P<where>.+?))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(r"^(?P<field>[\w.]+)\s*(?P<op>NOT\s+IN|IN|!=|=)\s*(?P<value>.+)$", re.IGNORECASE | re.DOTALL)
_BETWEEN = re.compile(r"^(?P<field>[\w.]+)\s+BETWEEN\s+(?P<low>\S+)\s+AND\s+(?P<high>\S+)$", re.IGNORECASE | re.DOTALL)
_AND = re.compile(r"\s+AND\s+", re.IGNORECASE)
_OPEN_BETWEEN = re.compile(r"\sBETWEEN\s+\S+$", re.IGNORECASE)  # "x BETWEEN a", before its "AND b"
MAX_DATE_RANGE_DAYS = 3_660


@dataclass(frozen=True)
class _Condition:
    field: str
    negated: bool
    values: frozenset[str]

    def matches(self, source: _RowSource) -> bool:
        return (_comparable(_FIELDS[self.field](source)) in self.values) != self.negated

    def days(self) -> set[dt.date] | None:
        """The dates a condition on segments.date allows, None when it is not a finite set."""
        if self.field != "segments.date" or self.negated:
            return None
        return {_parse_date(value) for value in self.values}


@dataclass(frozen=True)
class _Between:
    """``field BETWEEN low AND high``, both ends included (dates compare as ISO strings)."""

    field: str
    low: str
    high: str

    def matches(self, source: _RowSource) -> bool:
        return self.low <= _comparable(_FIELDS[self.field](source)) <= self.high

    def days(self) -> set[dt.date] | None:
        low, high = _parse_date(self.low), _parse_date(self.high)
        if (high - low).days >= MAX_DATE_RANGE_DAYS:
            raise _query_error("The date range is too wide.", QueryErrorEnum.QueryError.DATE_RANGE_TOO_WIDE)
        return {low + dt.timedelta(days=n) for n in range((high - low).days + 1)}


@dataclass(frozen=True)
class _Query:
    fields: tuple[str, ...]
    resource: str
    conditions: tuple[_Condition | _Between, ...]
    days: tuple[dt.date, ...] | None = None  # rows are per entity and day when set


def _query_error(message: str, code: QueryErrorEnum.QueryError) -> _Refusal:
    return _Refusal(grpc.StatusCode.INVALID_ARGUMENT, [_error(message, query_error=code)])


def _parse_query(text: str) -> _Query:
    """Parse the GAQL subset the fake understands; anything else is a query error."""
    match = _QUERY.match(text)
    if not match:
        raise _query_error(f"Cannot parse query: {text!r}", QueryErrorEnum.QueryError.QUERY_ERROR)
    resource = match["resource"].lower()
    if resource not in _SELECTABLE:
        raise _query_error(
            f"Unsupported resource {resource!r}.", QueryErrorEnum.QueryError.BAD_RESOURCE_TYPE_IN_FROM_CLAUSE
        )
    fields = tuple(name.strip() for name in match["fields"].split(","))
    conditions = tuple(_parse_condition(part) for part in _split_where(match["where"])) if match["where"] else ()
    for name in fields + tuple(c.field for c in conditions):
        if name not in _FIELDS or name.split(".")[0] not in _SELECTABLE[resource]:
            raise _query_error(
                f"Unrecognized field {name!r} for {resource}.", QueryErrorEnum.QueryError.UNRECOGNIZED_FIELD
            )
    return _Query(fields, resource, conditions, _query_days(fields, conditions))


def _split_where(where: str) -> list[str]:
    """Conditions joined by AND, keeping the AND inside ``x BETWEEN a AND b``."""
    parts: list[str] = []
    for part in _AND.split(where):
        if parts and _OPEN_BETWEEN.search(parts[-1]):
            parts[-1] = f"{parts[-1]} AND {part}"
        else:
            parts.append(part)
    return parts


def _query_days(fields: tuple[str, ...], conditions: tuple[_Condition | _Between, ...]) -> tuple[dt.date, ...] | None:
    """The days of a metrics query (None for a query without segments.date or metrics).

    Like the API, selecting segments.date needs a finite date range in WHERE; the fake
    also reports metrics only per day, so metrics without segments.date are refused.
    """
    segmented = "segments.date" in fields
    names = fields + tuple(c.field for c in conditions)
    if not segmented and any(name.startswith(("metrics.", "segments.")) for name in names):
        raise _query_error(
            "The fake reports metrics per day only: select segments.date with them.",
            QueryErrorEnum.QueryError.QUERY_ERROR,
        )
    if not segmented:
        return None
    allowed = [days for c in conditions if c.field == "segments.date" and (days := c.days()) is not None]
    if not allowed:
        raise _query_error(
            "Selecting segments.date needs a finite date range on segments.date in WHERE.",
            QueryErrorEnum.QueryError.EXPECTED_FILTERS_ON_DATE_RANGE,
        )
    return tuple(sorted(set.intersection(*allowed)))


def _parse_date(value: str) -> dt.date:
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _query_error(
            f"Invalid date {value!r}: dates are 'YYYY-MM-DD'.", QueryErrorEnum.QueryError.INVALID_DATE_FORMAT
        ) from None


def _parse_condition(text: str) -> _Condition | _Between:
    between = _BETWEEN.match(text.strip())
    if between:
        if between["field"] != "segments.date":
            raise _query_error(
                "The fake supports BETWEEN on segments.date only.", QueryErrorEnum.QueryError.UNEXPECTED_INPUT
            )
        return _Between(between["field"], _unquote(between["low"]), _unquote(between["high"]))
    match = _CONDITION.match(text.strip())
    if not match:
        raise _query_error(f"Cannot parse condition {text!r}.", QueryErrorEnum.QueryError.UNEXPECTED_INPUT)
    op = " ".join(match["op"].upper().split())
    raw = match["value"].strip()
    if op in ("IN", "NOT IN"):
        if not (raw.startswith("(") and raw.endswith(")")):
            raise _query_error(f"Expected a list in {text!r}.", QueryErrorEnum.QueryError.EXPECTED_LIST)
        values = [_unquote(v) for v in raw[1:-1].split(",") if v.strip()]
        if not values:
            raise _query_error("Empty list.", QueryErrorEnum.QueryError.PROHIBITED_EMPTY_LIST_IN_CONDITION)
        if len(values) > MAX_FILTER_VALUES:
            raise _query_error(
                "The number of values (right-hand-side operands) in a filter exceeds the limit.",
                QueryErrorEnum.QueryError.FILTER_HAS_TOO_MANY_VALUES,
            )
    else:
        values = [_unquote(raw)]
    return _Condition(match["field"], op in ("NOT IN", "!="), frozenset(values))


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _comparable(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if hasattr(value, "name") and isinstance(value, int):  # a proto enum member
        return value.name
    return str(value)


def _sources(customer: FakeCustomer, query: _Query, units: dict[str, int] | None = None) -> Iterator[_RowSource]:
    resource = query.resource
    if resource == "currency_constant":  # a global table, not the customer's
        for code in sorted(KNOWN_CURRENCIES):
            unit = (units or {}).get(code) or _minimum_unit_micros(code)
            yield _RowSource(customer, Counter(), currency=(code, unit))
        return
    if query.days is not None:
        yield from _daily_sources(customer, resource, query.days)
        return
    counts = customer.reference_counts()
    if resource == "campaign":
        for campaign in sorted(customer.campaigns.values(), key=lambda c: c.id):
            yield _RowSource(customer, counts, campaign=campaign, budget=customer.budgets[campaign.budget_id])
    elif resource == "ad_group":
        for ad_group in sorted(customer.ad_groups.values(), key=lambda a: a.id):
            yield _RowSource(customer, counts, campaign=customer.campaigns[ad_group.campaign_id], ad_group=ad_group)
    else:
        for budget in sorted(customer.budgets.values(), key=lambda b: b.id):
            yield _RowSource(customer, counts, budget=budget)


def _daily_sources(customer: FakeCustomer, resource: str, days: Sequence[dt.date]) -> Iterator[_RowSource]:
    """One source per entity and day with delivery (the API leaves out days without any)."""
    counts = customer.reference_counts()
    ad_groups_of: dict[int, list[int]] = defaultdict(list)
    for ad_group in customer.ad_groups.values():
        ad_groups_of[ad_group.campaign_id].append(ad_group.id)
    for source in _sources(customer, _Query((), resource, ())):
        if resource == "campaign":
            entity_id, children = source.campaign.id, ad_groups_of[source.campaign.id]
        else:
            entity_id, children = source.ad_group.id, None
        for day in days:
            metrics = customer.metrics(resource, entity_id, day, children)
            if not metrics.is_zero:
                yield _RowSource(
                    customer,
                    counts,
                    campaign=source.campaign,
                    budget=source.budget,
                    ad_group=source.ad_group,
                    day=day,
                    metrics=metrics,
                )


def _row(query: _Query, source: _RowSource) -> Any:
    """A GoogleAdsRow (raw protobuf, for speed) with only the selected fields set."""
    row = google_ads_service.GoogleAdsRow.pb()()
    for name in query.fields:
        value = _FIELDS[name](source)
        if value is not None:
            resource, attribute = name.split(".", 1)
            setattr(getattr(row, resource), attribute, value)
    return row


# The server ------------------------------------------------------------------------------


class GoogleAdsFake:
    """A Google Ads API v26 server on 127.0.0.1 with its own state, request log and faults.

    Use as a context manager (or ``start()``/``stop()``); point clients at ``endpoint``.
    Call ``ensure_test_tls_roots()`` before the first Google Ads client of the process.
    """

    def __init__(self, *, max_workers: int = 16) -> None:
        self.faults = FaultPlan()
        self._max_workers = max_workers
        self._lock = threading.RLock()
        self._customers: dict[int, FakeCustomer] = {}
        self._requests: list[RecordedRequest] = []
        self._next_budget_id = _FIRST_BUDGET_ID
        self._billable_units: dict[str, int] = {}
        # CPU seconds its request threads spent decoding, handling and encoding requests:
        # in process it shares the interpreter with its client, so a benchmark reports it apart.
        self.served_cpu_seconds = 0.0
        self._server: grpc.Server | None = None
        self._port = 0
        # Bearer tokens must be ones this endpoint issued and that have not expired.
        self.oauth = OAuthTokenFake()

    # Lifecycle ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if not self._port:
            raise RuntimeError("The Google Ads fake is not started.")
        return f"127.0.0.1:{self._port}"

    def start(self) -> GoogleAdsFake:
        tls = ensure_test_tls_roots()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="gads-fake"))
        server.add_generic_rpc_handlers(self._handlers())
        credentials = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)])
        self._port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        self._server = server
        self.oauth.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
            self._port = 0
        self.oauth.stop()

    def __enter__(self) -> GoogleAdsFake:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every account, request and fault (the server keeps running)."""
        with self._lock:
            self._customers.clear()
            self._requests.clear()
            self._next_budget_id = _FIRST_BUDGET_ID
            self._billable_units.clear()
        self.faults = FaultPlan()
        self.oauth.reset()

    # Seeding and inspection --------------------------------------------------------------

    def add_customer(self, customer_id: str | int, currency: str = "EUR") -> FakeCustomer:
        """The customer, created with ``currency`` (an ISO 4217 code) if it is new."""
        currency_exponent(currency)  # refuse an unknown currency now, not inside a request
        code = currency.upper()
        with self._lock:
            key = _id(customer_id)
            unit = self._billable_units.get(code) or _minimum_unit_micros(code)
            return self._customers.setdefault(key, FakeCustomer(id=key, currency=code, billable_unit_micros=unit))

    def credentials(self, **extra: str) -> dict[str, str]:
        """Connection credentials that work against this fake: an OAuth client registered
        with its token endpoint (``token_uri``) and a developer token; ``extra`` adds or
        overrides fields (``login_customer_id``, an ``access_token`` cache, ...)."""
        self.oauth.register(
            client_id=FAKE_OAUTH_CLIENT["client_id"],
            client_secret=FAKE_OAUTH_CLIENT["client_secret"],
            refresh_token=FAKE_OAUTH_CLIENT["refresh_token"],
        )
        return {
            **FAKE_OAUTH_CLIENT,
            "developer_token": "fake-developer-token",
            "token_uri": self.oauth.token_uri,
            **extra,
        }

    def set_billable_unit(self, currency: str, micros: int) -> None:
        """``currency_constant.billable_unit_micros`` of ``currency`` (a global constant, so it
        applies to every customer billed in it)."""
        code = currency.upper()
        with self._lock:
            self._billable_units[code] = micros
            for customer in self._customers.values():
                if customer.currency == code:
                    customer.billable_unit_micros = micros

    def set_bidding_strategy(self, customer_id: str | int, campaign_id: str | int, strategy: str) -> None:
        """A campaign's ``bidding_strategy_type`` (a BiddingStrategyType name such as TARGET_CPA)."""
        BiddingStrategyTypeEnum.BiddingStrategyType[strategy]  # refuse a name the API does not know
        with self._lock:
            self.campaign(customer_id, campaign_id).bidding_strategy_type = strategy

    def add_campaign(
        self,
        customer_id: str | int,
        campaign_id: str | int,
        name: str | None = None,
        status: str = "ENABLED",
        budget_micros: int | None = 10_000_000,
        *,
        total_budget_micros: int | None = None,
        shared_budget_id: str | int | None = None,
        budget_id: str | int | None = None,
    ) -> FakeCampaign:
        """A campaign on its own budget, or on the shared budget ``shared_budget_id``
        (created with the given amounts the first time it is named)."""
        with self._lock:
            customer = self.add_customer(customer_id)
            if shared_budget_id is not None:
                budget = self._budget_for(customer, _id(shared_budget_id), budget_micros, total_budget_micros, True)
            else:
                new_id = _id(budget_id) if budget_id is not None else self._allocate_budget_id()
                budget = self._budget_for(customer, new_id, budget_micros, total_budget_micros, False)
            campaign = FakeCampaign(
                id=_id(campaign_id), name=name or f"Campaign {campaign_id}", status=status, budget_id=budget.id
            )
            customer.campaigns[campaign.id] = campaign
            return campaign

    def add_ad_group(
        self,
        customer_id: str | int,
        ad_group_id: str | int,
        campaign_id: str | int,
        name: str | None = None,
        status: str = "ENABLED",
        cpc_bid_micros: int | None = 1_000_000,
    ) -> FakeAdGroup:
        with self._lock:
            customer = self.add_customer(customer_id)
            if _id(campaign_id) not in customer.campaigns:
                raise KeyError(f"Add campaign {campaign_id} before its ad groups.")
            ad_group = FakeAdGroup(
                id=_id(ad_group_id),
                name=name or f"Ad group {ad_group_id}",
                status=status,
                campaign_id=_id(campaign_id),
                cpc_bid_micros=cpc_bid_micros,
            )
            customer.ad_groups[ad_group.id] = ad_group
            return ad_group

    def campaign(self, customer_id: str | int, campaign_id: str | int) -> FakeCampaign:
        return self._customers[_id(customer_id)].campaigns[_id(campaign_id)]

    def budget(self, customer_id: str | int, budget_id: str | int) -> FakeBudget:
        return self._customers[_id(customer_id)].budgets[_id(budget_id)]

    def budget_of(self, customer_id: str | int, campaign_id: str | int) -> FakeBudget:
        return self.budget(customer_id, self.campaign(customer_id, campaign_id).budget_id)

    def ad_group(self, customer_id: str | int, ad_group_id: str | int) -> FakeAdGroup:
        return self._customers[_id(customer_id)].ad_groups[_id(ad_group_id)]

    def seed_performance(self, customer_id: str | int, seed: int) -> None:
        """Choose the customer's generated daily metrics (see ``generated_metrics``)."""
        with self._lock:
            self.add_customer(customer_id).performance_seed = seed

    def set_daily_metrics(
        self, customer_id: str | int, level: str, entity_id: str | int, day: dt.date, **values: Any
    ) -> FakeMetrics:
        """Pin one entity's metrics on one day (``level`` "campaign" or "ad_group"; fields of
        ``FakeMetrics``, unset ones 0). All zero means no delivery: the day has no row."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
        metrics = FakeMetrics(**values)
        with self._lock:
            self.add_customer(customer_id).pinned_metrics[(level, _id(entity_id), day)] = metrics
        return metrics

    def daily_metrics(self, customer_id: str | int, level: str, entity_id: str | int, day: dt.date) -> FakeMetrics:
        """What a metrics query reports for one entity and day (NO_METRICS: no row)."""
        with self._lock:
            return self._customers[_id(customer_id)].metrics(level, _id(entity_id), day)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def mutate_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.is_mutate]

    def _budget_for(
        self, customer: FakeCustomer, budget_id: int, amount: int | None, total: int | None, shared: bool
    ) -> FakeBudget:
        if budget_id not in customer.budgets:
            customer.budgets[budget_id] = FakeBudget(
                id=budget_id,
                name=f"Budget {budget_id}",
                amount_micros=amount,
                total_amount_micros=total,
                explicitly_shared=shared,
            )
        return customer.budgets[budget_id]

    def _allocate_budget_id(self) -> int:
        # Budget ids come from their own range so a test cannot pass by mixing them up with campaign ids.
        self._next_budget_id += 1
        return self._next_budget_id - 1

    # gRPC plumbing -----------------------------------------------------------------------

    def _handlers(self) -> list[grpc.GenericRpcHandler]:
        def unary(
            method: str, body: Callable[..., Any], request_cls: Any, response_cls: Any, scope: FaultScope
        ) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                self._timed(self._unary(method, body, scope)),
                request_deserializer=self._timed(request_cls.deserialize),
                response_serializer=self._timed(response_cls.serialize),
            )

        gas = google_ads_service
        return [
            grpc.method_handlers_generic_handler(
                f"{_SERVICES}.GoogleAdsService",
                {
                    "Search": unary(
                        "Search", self._search, gas.SearchGoogleAdsRequest, gas.SearchGoogleAdsResponse, FaultScope.READ
                    ),
                    "SearchStream": grpc.unary_stream_rpc_method_handler(
                        self._timed_stream(self._search_stream),
                        request_deserializer=self._timed(gas.SearchGoogleAdsStreamRequest.deserialize),
                        response_serializer=self._timed(gas.SearchGoogleAdsStreamResponse.serialize),
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                f"{_SERVICES}.CampaignBudgetService",
                {
                    "MutateCampaignBudgets": unary(
                        "MutateCampaignBudgets",
                        self._mutator(_BUDGETS, campaign_budget_service.MutateCampaignBudgetsResponse),
                        campaign_budget_service.MutateCampaignBudgetsRequest,
                        campaign_budget_service.MutateCampaignBudgetsResponse,
                        FaultScope.WRITE,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                f"{_SERVICES}.CampaignService",
                {
                    "MutateCampaigns": unary(
                        "MutateCampaigns",
                        self._mutator(_CAMPAIGNS, campaign_service.MutateCampaignsResponse),
                        campaign_service.MutateCampaignsRequest,
                        campaign_service.MutateCampaignsResponse,
                        FaultScope.WRITE,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                f"{_SERVICES}.AdGroupService",
                {
                    "MutateAdGroups": unary(
                        "MutateAdGroups",
                        self._mutator(_AD_GROUPS, ad_group_service.MutateAdGroupsResponse),
                        ad_group_service.MutateAdGroupsRequest,
                        ad_group_service.MutateAdGroupsResponse,
                        FaultScope.WRITE,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                f"{_SERVICES}.CustomerService",
                {
                    "ListAccessibleCustomers": unary(
                        "ListAccessibleCustomers",
                        self._list_accessible_customers,
                        customer_service.ListAccessibleCustomersRequest,
                        customer_service.ListAccessibleCustomersResponse,
                        FaultScope.READ,
                    ),
                },
            ),
        ]

    def _timed(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` adding the CPU time of its thread to ``served_cpu_seconds``."""

        def timed(*args: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args)
            finally:
                spent = time.thread_time() - started
                with self._lock:
                    self.served_cpu_seconds += spent

        return timed

    def _timed_stream(self, function: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        """A streaming handler whose every step counts in ``served_cpu_seconds``."""

        def timed(*args: Any) -> Iterator[Any]:
            responses = self._timed(function)(*args)
            step = self._timed(next)
            while True:
                try:
                    yield step(responses)
                except StopIteration:
                    return

        return timed

    def _unary(
        self, method: str, body: Callable[[_Call, Any], Any], scope: FaultScope
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            call = self._begin(method, request, context)
            try:
                self._before(call, scope)
                response = body(call, request)
            except _Refusal as refusal:
                self._abort(call, refusal)
            # The request id travels in the trailing metadata, where the SDK's own logging
            # interceptor reads it (google/ads/googleads/interceptors/logging_interceptor.py,
            # _get_trailing_metadata / get_request_id_from_metadata).
            context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, call.request_id),))
            return response

        return handler

    def _begin(self, method: str, request: Any, context: grpc.ServicerContext) -> _Call:
        """Record the request and give it a request id."""
        metadata = dict(context.invocation_metadata())
        call = _Call(context=context, request_id=uuid.uuid4().hex[:22], metadata=metadata)
        pb = type(request).pb(request)
        operations = list(getattr(pb, "operations", ()))
        entry = RecordedRequest(
            method=method,
            request_id=call.request_id,
            at=time.monotonic(),
            customer_id=getattr(pb, "customer_id", ""),
            validate_only=getattr(pb, "validate_only", False),
            partial_failure=getattr(pb, "partial_failure", False),
            operation_count=len(operations),
            resource_names=tuple(_operation_resource(op) for op in operations),
            query=getattr(pb, "query", ""),
            has_developer_token=bool(metadata.get("developer-token")),
            has_bearer_token=str(metadata.get("authorization", "")).startswith("Bearer "),
            login_customer_id=metadata.get("login-customer-id"),
        )
        with self._lock:
            self._requests.append(entry)
        return call

    def _before(self, call: _Call, scope: FaultScope) -> None:
        """Checks the API makes before any work: headers, latency, injected faults."""
        if not call.metadata.get("developer-token"):
            raise _Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                [
                    _error(
                        "Developer token is missing.",
                        request_error=RequestErrorEnum.RequestError.DEVELOPER_TOKEN_PARAMETER_MISSING,
                    )
                ],
            )
        if not str(call.metadata.get("authorization", "")).startswith("Bearer "):
            raise _Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                [
                    _error(
                        "Authorization header is missing or invalid.",
                        authentication_error=AuthenticationErrorEnum.AuthenticationError.OAUTH_TOKEN_HEADER_INVALID,
                    )
                ],
            )
        # Only tokens from the OAuth endpoint, and only for their lifetime: the API answers
        # UNAUTHENTICATED with AuthenticationError OAUTH_TOKEN_EXPIRED / OAUTH_TOKEN_INVALID
        # (https://developers.google.com/google-ads/api/reference/rpc/v26/AuthenticationErrorEnum.AuthenticationError).
        verdict = self.oauth.accepts(str(call.metadata["authorization"]).removeprefix("Bearer "))
        if verdict != "valid":
            expired = verdict == "expired"
            raise _Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                [
                    _error(
                        "The OAuth token in the header has expired." if expired else "The OAuth token is not valid.",
                        authentication_error=AuthenticationErrorEnum.AuthenticationError.OAUTH_TOKEN_EXPIRED
                        if expired
                        else AuthenticationErrorEnum.AuthenticationError.OAUTH_TOKEN_INVALID,
                    )
                ],
            )
        if self.faults.latency_seconds:
            time.sleep(self.faults.latency_seconds)
        call.fault = self.faults.take(scope)
        if call.fault is None:
            return
        if call.fault.kind is FaultKind.TIMEOUT_BEFORE_APPLY:
            self._hang(call)
        refusal = _fault_refusal(call.fault)
        if refusal is not None:
            raise refusal

    def _hang(self, call: _Call) -> None:
        """Sleep past the client's deadline (or until it gives up), then fail the call."""
        deadline = time.monotonic() + self.faults.hang_seconds
        while time.monotonic() < deadline and call.context.is_active():
            time.sleep(0.01)
        raise _Refusal(grpc.StatusCode.DEADLINE_EXCEEDED, message="Deadline exceeded.")

    def _abort(self, call: _Call, refusal: _Refusal) -> None:
        metadata: list[tuple[str, str | bytes]] = [(REQUEST_ID_METADATA_KEY, call.request_id)]
        if refusal.errors:
            failure = _failure(refusal.errors, call.request_id)
            metadata.append((FAILURE_METADATA_KEY, ads_errors.GoogleAdsFailure.serialize(failure)))
        call.context.set_trailing_metadata(tuple(metadata))
        call.context.abort(refusal.code, str(refusal))

    def _customer(self, customer_id: str) -> FakeCustomer:
        customer = self._customers.get(_id(customer_id)) if customer_id.isdigit() else None
        if customer is None:
            raise _Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                [
                    _error(
                        "User doesn't have permission to access customer.",
                        authorization_error=AuthorizationErrorEnum.AuthorizationError.USER_PERMISSION_DENIED,
                    )
                ],
            )
        return customer

    # Reads -------------------------------------------------------------------------------

    def _rows(self, call: _Call, customer_id: str, text: str) -> tuple[_Query, list[Any]]:
        query = _parse_query(text)
        with self._lock:
            customer = self._customer(customer_id)
            if call.kind_is(FaultKind.ENTITY_DELETED):
                self._delete(customer, call.fault.entity_ids)
            sources = _sources(customer, query, self._billable_units)
            rows = [_row(query, s) for s in sources if all(c.matches(s) for c in query.conditions)]
        if call.kind_is(FaultKind.TIMEOUT_AFTER_APPLY):
            self._hang(call)
        return query, rows

    def _search(self, call: _Call, request: Any) -> Any:
        pb = type(request).pb(request)
        query, rows = self._rows(call, pb.customer_id, pb.query)
        offset = _page_offset(pb.page_token)
        response = google_ads_service.SearchGoogleAdsResponse.pb()()
        response.results.extend(rows[offset : offset + SEARCH_PAGE_SIZE])
        response.field_mask.paths.extend(query.fields)
        if offset + SEARCH_PAGE_SIZE < len(rows):
            response.next_page_token = base64.urlsafe_b64encode(str(offset + SEARCH_PAGE_SIZE).encode()).decode()
        return google_ads_service.SearchGoogleAdsResponse.wrap(response)

    def _search_stream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = self._begin("SearchStream", request, context)
        pb = type(request).pb(request)
        try:
            self._before(call, FaultScope.READ)
            query, rows = self._rows(call, pb.customer_id, pb.query)
        except _Refusal as refusal:
            self._abort(call, refusal)
        context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, call.request_id),))
        # Like the API: batches of up to 10,000 rows, and one (empty) batch for no rows.
        for start in range(0, max(len(rows), 1), SEARCH_PAGE_SIZE):
            batch = google_ads_service.SearchGoogleAdsStreamResponse.pb()()
            batch.results.extend(rows[start : start + SEARCH_PAGE_SIZE])
            batch.field_mask.paths.extend(query.fields)
            batch.request_id = call.request_id
            yield google_ads_service.SearchGoogleAdsStreamResponse.wrap(batch)

    def _list_accessible_customers(self, call: _Call, request: Any) -> Any:
        with self._lock:
            names = [f"customers/{customer_id}" for customer_id in sorted(self._customers)]
        return customer_service.ListAccessibleCustomersResponse(resource_names=names)

    # Writes ------------------------------------------------------------------------------

    def _mutator(self, kind: _ResourceKind, response_cls: Any) -> Callable[[_Call, Any], Any]:
        def mutate(call: _Call, request: Any) -> Any:
            return self._mutate(call, type(request).pb(request), kind, response_cls)

        return mutate

    def _mutate(self, call: _Call, pb: Any, kind: _ResourceKind, response_cls: Any) -> Any:
        if len(pb.operations) > MAX_OPERATIONS_PER_REQUEST:
            raise _Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                [
                    _error(
                        "Received too many entries in request.",
                        request_error=RequestErrorEnum.RequestError.TOO_MANY_MUTATE_OPERATIONS,
                    )
                ],
            )
        with self._lock:
            customer = self._customer(pb.customer_id)
            if call.kind_is(FaultKind.ENTITY_DELETED):
                self._delete(customer, call.fault.entity_ids or self._targeted_ids(customer, kind, pb.operations))
            errors = self._check_operations(customer, kind, pb.operations, call.fault)
            if errors and not pb.partial_failure:
                raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, [e for found in errors.values() for e in found])
            if not pb.validate_only and not call.kind_is(FaultKind.SILENT_NOOP):
                self._apply_operations(customer, kind, pb.operations, errors)
        if call.kind_is(FaultKind.TIMEOUT_AFTER_APPLY):
            self._hang(call)
        return self._mutate_response(response_cls, pb, errors, call.request_id)

    def _check_operations(
        self, customer: FakeCustomer, kind: _ResourceKind, operations: Sequence[Any], fault: Fault | None
    ) -> dict[int, list[GoogleAdsError]]:
        """Errors by operation index, as the API would report them."""
        counts = Counter(_operation_resource(op) for op in operations)
        errors: dict[int, list[GoogleAdsError]] = {}
        for index, op in enumerate(operations):
            found = self._check_operation(customer, kind, index, op, counts)
            if not found and self._fails_by_fault(customer, kind, op, fault):
                found = [
                    _error("Too high.", index=index, path=("update",), range_error=RangeErrorEnum.RangeError.TOO_HIGH)
                ]
            if found:
                errors[index] = found
        return errors

    def _fails_by_fault(self, customer: FakeCustomer, kind: _ResourceKind, op: Any, fault: Fault | None) -> bool:
        """PARTIAL_FAILURE: refuse the operations on the fault's entities (all when it lists none)."""
        if fault is None or fault.kind is not FaultKind.PARTIAL_FAILURE:
            return False
        return fault.entity_ids is None or bool(fault.entity_ids & self._entity_ids(customer, kind, op))

    def _check_operation(
        self, customer: FakeCustomer, kind: _ResourceKind, index: int, op: Any, counts: Counter[str]
    ) -> list[GoogleAdsError]:
        if op.WhichOneof("operation") != "update":
            return [
                _error(
                    "The fake only supports update operations.",
                    index=index,
                    request_error=RequestErrorEnum.RequestError.OPERATION_REQUIRED,
                )
            ]
        name = op.update.resource_name
        if counts[name] > 1:
            return [
                _error(
                    "Cannot mutate the same resource twice in one request.",
                    index=index,
                    mutate_error=MutateErrorEnum.MutateError.ID_EXISTS_IN_MULTIPLE_MUTATES,
                )
            ]
        target = self._target(customer, kind, name)
        if target is None:
            return [
                _error(
                    "Requested resource was not found.",
                    index=index,
                    mutate_error=MutateErrorEnum.MutateError.RESOURCE_NOT_FOUND,
                )
            ]
        if target.status == "REMOVED":
            return [kind.removed_error(index)]
        paths = [p for p in op.update_mask.paths if p != "resource_name"]
        if not paths:
            return [
                _error(
                    "The field mask is missing.",
                    index=index,
                    field_mask_error=FieldMaskErrorEnum.FieldMaskError.FIELD_MASK_MISSING,
                )
            ]
        if unknown := [p for p in paths if p not in kind.writable]:
            return [
                _error(
                    f"The fake cannot update {unknown}.",
                    index=index,
                    field_mask_error=FieldMaskErrorEnum.FieldMaskError.FIELD_NOT_FOUND,
                )
            ]
        return [e for path in paths for e in kind.check(customer, target, op.update, path, index)]

    def _apply_operations(
        self,
        customer: FakeCustomer,
        kind: _ResourceKind,
        operations: Sequence[Any],
        errors: dict[int, list[GoogleAdsError]],
    ) -> None:
        for index, op in enumerate(operations):
            if index in errors:
                continue
            target = self._target(customer, kind, op.update.resource_name)
            for path in op.update_mask.paths:
                if path != "resource_name":
                    kind.apply(target, op.update, path)

    def _mutate_response(
        self, response_cls: Any, pb: Any, errors: dict[int, list[GoogleAdsError]], request_id: str
    ) -> Any:
        response = response_cls.pb()()
        if not pb.validate_only:  # validate-only answers carry errors only, never results
            for index, op in enumerate(pb.operations):
                response.results.add(resource_name="" if index in errors else op.update.resource_name)
        if errors:
            failure = _failure([e for found in errors.values() for e in found], request_id)
            detail = any_pb2.Any(type_url=_FAILURE_TYPE_URL, value=ads_errors.GoogleAdsFailure.serialize(failure))
            response.partial_failure_error.CopyFrom(
                status_pb2.Status(
                    code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                    message=f"Multiple errors in 'details'. First error: {failure.errors[0].message}",
                    details=[detail],
                )
            )
        return response_cls.wrap(response)

    def _target(self, customer: FakeCustomer, kind: _ResourceKind, name: str) -> Any:
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "customers" or parts[2] != kind.collection or not parts[3].isdigit():
            return None
        if parts[1] != str(customer.id):
            return None
        return getattr(customer, kind.table).get(int(parts[3]))

    def _entity_ids(self, customer: FakeCustomer, kind: _ResourceKind, op: Any) -> set[str]:
        """Ids a fault's entity_ids may name for this operation: the resource's own id, and for a
        budget the campaigns on it (tests think in campaigns)."""
        resource_id = op.update.resource_name.rsplit("/", 1)[-1]
        ids = {resource_id}
        if kind is _BUDGETS and resource_id.isdigit():
            ids |= {str(c.id) for c in customer.campaigns.values() if c.budget_id == int(resource_id)}
        return ids

    def _targeted_ids(self, customer: FakeCustomer, kind: _ResourceKind, operations: Sequence[Any]) -> frozenset[str]:
        return frozenset(i for op in operations for i in self._entity_ids(customer, kind, op))

    def _delete(self, customer: FakeCustomer, entity_ids: frozenset[str] | None) -> None:
        """ENTITY_DELETED: the listed campaigns, ad groups and budgets become REMOVED (a
        campaign's own budget with it, as the API does)."""
        for entity_id in entity_ids or ():
            key = _id(entity_id)
            if key in customer.campaigns:
                campaign = customer.campaigns[key]
                campaign.status = "REMOVED"
                budget = customer.budgets[campaign.budget_id]
                if not budget.explicitly_shared:
                    budget.status = "REMOVED"
            if key in customer.ad_groups:
                customer.ad_groups[key].status = "REMOVED"
            if key in customer.budgets:
                customer.budgets[key].status = "REMOVED"


@dataclass
class _Call:
    """One request in flight."""

    context: grpc.ServicerContext
    request_id: str
    metadata: dict[str, Any]
    fault: Fault | None = None

    def kind_is(self, kind: FaultKind) -> bool:
        return self.fault is not None and self.fault.kind is kind


def _operation_resource(op: Any) -> str:
    return op.update.resource_name if op.WhichOneof("operation") == "update" else getattr(op, "remove", "")


def _page_offset(token: str) -> int:
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError:
        raise _Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            [_error("Page token is invalid.", request_error=RequestErrorEnum.RequestError.INVALID_PAGE_TOKEN)],
        ) from None


def _id(value: str | int) -> int:
    return int(str(value).replace("-", ""))
