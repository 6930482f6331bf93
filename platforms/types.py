"""The vocabulary every platform executor speaks.

Executors (sandbox, Google Ads, Meta) take and return these plain values, never Django
models, so the adapters can be exercised against fake servers without a database and
the engine can treat every platform the same way.

Money is always ``Decimal`` in the account currency here; conversion to micros or
minor units happens inside the adapters (``platforms.money``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any


class EntityType(enum.StrEnum):
    CAMPAIGN = "campaign"
    AD_SET = "ad_set"  # Meta ad set, Google ad group
    AD = "ad"
    CREATIVE = "creative"


class EntityStatus(enum.StrEnum):
    """Normalised delivery status. ``removed`` is one-way on every platform."""

    ACTIVE = "active"
    PAUSED = "paused"
    REMOVED = "removed"


class Field(enum.StrEnum):
    """A writable property of an entity."""

    DAILY_BUDGET = "daily_budget"
    LIFETIME_BUDGET = "lifetime_budget"
    STATUS = "status"
    BID = "bid"
    TARGETING = "targeting"
    SCHEDULE = "schedule"


MONEY_FIELDS = frozenset({Field.DAILY_BUDGET, Field.LIFETIME_BUDGET, Field.BID})


class ErrorCode(enum.StrEnum):
    """One error taxonomy for all platforms."""

    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    AUTH_EXPIRED = "auth_expired"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    INVALID_VALUE = "invalid_value"
    CONFLICT = "conflict"
    NOT_SUPPORTED = "not_supported"
    UNKNOWN = "unknown"


ACCOUNT_SCOPE = "account"
ENTITY_SCOPE = "entity"

RETRYABLE_CODES = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.TRANSIENT, ErrorCode.CONFLICT})

HINTS: dict[ErrorCode, str] = {
    ErrorCode.RATE_LIMITED: "The platform is rate limiting this account. BudgetRadar waits "
    "and retries automatically; if it keeps happening, spread the changes over time.",
    ErrorCode.TRANSIENT: "The platform had a temporary problem (5xx or timeout). It is safe "
    "to retry; BudgetRadar checks the live value first so nothing is applied twice.",
    ErrorCode.AUTH_EXPIRED: "The connection's access token has expired or was revoked. "
    "Reconnect the account (update its credentials) and approve the action again.",
    ErrorCode.PERMISSION_DENIED: "The connected user may not change this entity. Ask an "
    "account admin to grant edit access, then approve the action again.",
    ErrorCode.NOT_FOUND: "The entity no longer exists on the platform (deleted or removed). "
    "Sync the connection and drop it from the plan.",
    ErrorCode.INVALID_VALUE: "The platform refused the value. Check the platform's limits "
    "(minimum budget, bid strategy, currency precision) and propose a new value.",
    ErrorCode.CONFLICT: "Someone else changed the entity at the same moment. Run a new "
    "preflight to see its current state.",
    ErrorCode.NOT_SUPPORTED: "This platform adapter cannot change that field. Change it in "
    "the platform's own interface.",
    ErrorCode.UNKNOWN: "The platform returned an error BudgetRadar does not recognise. "
    "See the execution log for the raw response and contact support if it persists.",
}


@dataclass(frozen=True)
class PlatformError:
    """A classified platform error, safe to show to a person (no secrets)."""

    code: ErrorCode
    message: str
    retry_after: float | None = None  # seconds, when the platform said so
    request_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    # What a rate limit blocks: "account" (every request of the connection must wait) or
    # "entity" (only this entity: Meta's per-ad-set budget-change limit), so the engine
    # can park just that entity's action until ``retry_after`` has passed.
    scope: str = "account"

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES

    @property
    def hint(self) -> str:
        return HINTS[self.code]

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": str(self.code),
            "message": self.message,
            "retryable": self.retryable,
            "hint": self.hint,
            "retry_after": self.retry_after,
            "request_id": self.request_id,
            "scope": self.scope,
        }


class PlatformCallError(Exception):
    """A whole request failed (the platform answered with an error or did not answer).

    ``ambiguous`` is True when the request may have been applied anyway (a timeout
    after the request was sent): callers must read the platform before retrying.
    """

    def __init__(self, error: PlatformError, *, ambiguous: bool = False) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error
        self.ambiguous = ambiguous


@dataclass(frozen=True, order=True)
class EntityRef:
    """Identifies one entity on one platform account.

    ``budget_id`` is the Google Ads CampaignBudget id behind a campaign when the caller
    knows it (from the mirror); adapters resolve it themselves when it is missing.
    ``parent_external_id`` is the campaign of an ad set (Meta batches need it).
    """

    entity_type: EntityType
    external_id: str
    parent_external_id: str | None = None
    budget_id: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (str(self.entity_type), self.external_id)


@dataclass(frozen=True)
class EntityState:
    """The live state of one entity as the platform reports it."""

    entity_type: EntityType
    external_id: str
    name: str
    status: EntityStatus
    currency: str
    parent_external_id: str | None = None
    daily_budget: Decimal | None = None
    lifetime_budget: Decimal | None = None
    bid: Decimal | None = None
    budget_id: str | None = None
    budget_shared: bool = False
    budget_reference_count: int = 0
    targeting: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    # The platform's own bidding strategy name (Google BiddingStrategyType, Meta bid_strategy)
    # in force for the entity; None when the platform has none or BudgetRadar did not read it.
    bid_strategy: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (str(self.entity_type), self.external_id)

    def value_of(self, field_: Field) -> Any:
        return getattr(self, str(field_))

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot (money as decimal strings)."""
        out: dict[str, Any] = {}
        for name in (
            "entity_type",
            "external_id",
            "name",
            "status",
            "currency",
            "parent_external_id",
            "daily_budget",
            "lifetime_budget",
            "bid",
            "budget_id",
            "budget_shared",
            "budget_reference_count",
            "targeting",
            "schedule",
            "bid_strategy",
        ):
            value = getattr(self, name)
            if isinstance(value, Decimal | enum.Enum):
                value = str(value)
            out[name] = value
        return out


@dataclass(frozen=True)
class PerformanceRow:
    """One day of delivery for one entity (money in the account currency)."""

    entity_type: EntityType
    external_id: str
    date: date
    spend: Decimal
    impressions: int
    clicks: int
    conversions: Decimal
    revenue: Decimal

    @property
    def key(self) -> tuple[str, str]:
        return (str(self.entity_type), self.external_id)


@dataclass(frozen=True)
class Change:
    """Set one field of one entity to an absolute value.

    Absolute values make a change naturally repeatable: applying it twice leaves the
    platform in the same state. ``key`` is the caller's correlation id (an action id);
    outcomes carry it back.
    """

    ref: EntityRef
    field: Field
    value: Any  # Decimal for money, EntityStatus for status, dict for targeting/schedule
    key: str = ""


class OutcomeStatus(enum.StrEnum):
    APPLIED = "applied"
    VALIDATED = "validated"  # validate_only: the platform accepted it, nothing changed
    FAILED = "failed"
    UNKNOWN = "unknown"  # the request may or may not have been applied (timeout after send)


@dataclass(frozen=True)
class ChangeOutcome:
    change: Change
    status: OutcomeStatus
    error: PlatformError | None = None
    request_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (OutcomeStatus.APPLIED, OutcomeStatus.VALIDATED)


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything an executor needs to talk to one account; no Django model involved.

    ``credentials`` is the decrypted secret dict; it must never be logged.
    ``api_base_url`` overrides the platform endpoint (tests point it at a local fake).
    """

    connection_id: int
    platform: str
    account_id: str
    currency: str
    time_zone: str = "UTC"
    credentials: dict[str, Any] = field(default_factory=dict, repr=False)
    api_base_url: str = ""
    request_timeout: float = 30.0  # seconds before a request counts as timed out
    # Google Ads: the account currency's billable unit as last read (None: read it on use).
    billable_unit_micros: int | None = None
