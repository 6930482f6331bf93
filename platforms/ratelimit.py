"""Per-connection rate limiting shared across workers, processes and machines.

Each connection has one token bucket row (``RateLimitBucket``). Taking tokens locks the
row — on PostgreSQL in the one statement that refills, takes and stores (a ``FOR UPDATE``
CTE), elsewhere in a short transaction (``select_for_update``; on SQLite the IMMEDIATE
transaction serialises writers the same way) — so every worker draws from the same bucket. Waiting
happens outside the transaction: no lock is held while a worker sleeps.

Defaults per platform can be overridden in settings::

    PLATFORM_RATE_LIMITS = {"meta": {"capacity": 600, "refill_per_second": 10}}

A request costs one token, or one per operation where the platform counts every
operation of a batch as a call (Meta's Batch API).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection as db_connection
from django.db import transaction
from django.utils import timezone

from platforms.models import PlatformConnection, RateLimitBucket
from platforms.quota import quota_take
from platforms.types import ErrorCode, PlatformCallError, PlatformError


@dataclass(frozen=True)
class RateLimit:
    capacity: float
    refill_per_second: float
    per_operation: bool = False

    def cost(self, operations: int) -> float:
        """Tokens a request of ``operations`` costs; never more than a full bucket, or it could never run."""
        wanted = float(max(operations, 1)) if self.per_operation else 1.0
        return min(wanted, self.capacity)


DEFAULT_RATE_LIMITS: dict[str, RateLimit] = {
    "sandbox": RateLimit(capacity=20, refill_per_second=10),
    # Google Ads publishes no fixed QPS; a few requests a second per customer stays well clear.
    # Its daily budget counts operations per developer token: platforms.quota.
    "google_ads": RateLimit(capacity=10, refill_per_second=5),
    # Meta scores each call inside a batch, per ad account: "a read API call is equal to 1
    # point, and a write API call is equal to 3 points"; on the Standard tier "your maximum
    # score is 9000, will decay in 300 seconds" (30 points a second), on the development
    # tier 60 in 300 seconds (https://developers.facebook.com/docs/marketing-api/overview/rate-limiting).
    # Tokens are points (MetaExecutor asks for 3 per write): 90 % of the Standard decay
    # rate, and bursts of a tenth of the maximum score. Development-tier apps set
    # PLATFORM_RATE_LIMITS = {"meta": {"capacity": 6, "refill_per_second": 0.18}}.
    "meta": RateLimit(capacity=900, refill_per_second=27, per_operation=True),
}
FALLBACK_RATE_LIMIT = RateLimit(capacity=10, refill_per_second=2)


def rate_limit_for(platform: str) -> RateLimit:
    """The platform's limit with settings overrides applied; refuses nonsense loudly."""
    overrides = getattr(settings, "PLATFORM_RATE_LIMITS", {}).get(platform, {})
    try:
        limit = replace(DEFAULT_RATE_LIMITS.get(platform, FALLBACK_RATE_LIMIT), **overrides)
    except TypeError as exc:
        raise ImproperlyConfigured(f"PLATFORM_RATE_LIMITS[{platform!r}] has an unknown key: {exc}") from None
    if limit.capacity < 1 or limit.refill_per_second <= 0:
        raise ImproperlyConfigured(
            f"PLATFORM_RATE_LIMITS[{platform!r}] needs capacity >= 1 and refill_per_second > 0; got {limit}."
        )
    return limit


def changes_affordable(limit: RateLimit, *, tokens_per_change: float, seconds: float) -> int | None:
    """How many changes of ``tokens_per_change`` tokens one worker can send within
    ``seconds`` from a full bucket (its capacity plus what refills meanwhile); None when
    changes cost nothing per change (the limit counts requests)."""
    if tokens_per_change <= 0:
        return None
    return int((limit.capacity + limit.refill_per_second * seconds) / tokens_per_change)


def _refilled(bucket: RateLimitBucket, limit: RateLimit, now: datetime) -> float:
    # Clocks of different machines disagree a little; a negative interval adds nothing.
    elapsed = max((now - bucket.updated_at).total_seconds(), 0.0)
    return min(limit.capacity, bucket.tokens + elapsed * limit.refill_per_second)


def _locked_bucket(connection_id: int, limit: RateLimit, now: datetime) -> RateLimitBucket:
    bucket, _ = RateLimitBucket.objects.select_for_update().get_or_create(
        connection_id=connection_id,
        defaults={
            "tokens": limit.capacity,
            "capacity": limit.capacity,
            "refill_per_second": limit.refill_per_second,
            "updated_at": now,
        },
    )
    return bucket


def _store(bucket: RateLimitBucket, limit: RateLimit, tokens: float, now: datetime) -> None:
    bucket.tokens = tokens
    bucket.capacity = limit.capacity
    bucket.refill_per_second = limit.refill_per_second
    bucket.updated_at = max(now, bucket.updated_at)
    bucket.save(update_fields=["tokens", "capacity", "refill_per_second", "updated_at"])


# Refills are floats: a bucket short of a request by less than this has enough.
TOKEN_EPSILON = 1e-6
MIN_WAIT_SECONDS = 0.001


def bucket_take(*, connection_id: int, operations: int, limit: RateLimit, now: datetime | None = None) -> float:
    """Take the tokens for one request if the bucket has them.

    Returns 0.0 when the request may go now (tokens taken), otherwise the seconds until
    enough tokens will have refilled (nothing taken).
    """
    return bucket_take_tokens(connection_id=connection_id, tokens=limit.cost(operations), limit=limit, now=now)


def bucket_take_tokens(*, connection_id: int, tokens: float, limit: RateLimit, now: datetime | None = None) -> float:
    """Take ``tokens`` (at most a full bucket) if available; else the seconds to wait."""
    now = now or timezone.now()
    cost = min(tokens, limit.capacity)
    if db_connection.vendor == "postgresql":
        available = _take_in_one_statement(connection_id, cost, limit, now)
        if available is not None:
            return _wait_for(cost, available, limit)
    with transaction.atomic():
        bucket = _locked_bucket(connection_id, limit, now)
        available = _refilled(bucket, limit, now)
        if available + TOKEN_EPSILON >= cost:
            _store(bucket, limit, available - cost, now)
            return 0.0
        _store(bucket, limit, available, now)
    return _wait_for(cost, available, limit)


def _wait_for(cost: float, available: float, limit: RateLimit) -> float:
    if available + TOKEN_EPSILON >= cost:
        return 0.0
    # Never a wait below a millisecond: datetimes count whole microseconds, so a clock
    # could not move by a shorter wait and the caller would ask again for ever.
    return max((cost - available) / limit.refill_per_second, MIN_WAIT_SECONDS)


def _take_in_one_statement(connection_id: int, cost: float, limit: RateLimit, now: datetime) -> float | None:
    """PostgreSQL: refill, take (if enough) and store in one statement; return the tokens
    that were available, or None when the connection has no bucket row yet.

    The CTE locks the row (``FOR UPDATE`` reads its latest committed version, so two
    takers serialise exactly as with ``select_for_update``) and the UPDATE writes what
    it computed from that version; the same arithmetic as ``_refilled`` and ``_store``.
    """
    table, quote = RateLimitBucket._meta.db_table, db_connection.ops.quote_name
    sql = (
        f"WITH b AS (SELECT {quote('id')} AS id, {quote('updated_at')} AS seen, "
        f"LEAST(%(capacity)s, {quote('tokens')} + GREATEST(EXTRACT(EPOCH FROM (%(now)s - {quote('updated_at')})), 0)"
        f" * %(refill)s) AS available "
        f"FROM {quote(table)} WHERE {quote('connection_id')} = %(connection)s FOR UPDATE) "
        f"UPDATE {quote(table)} AS t SET "
        f"{quote('tokens')} = CASE WHEN b.available + %(epsilon)s >= %(cost)s THEN b.available - %(cost)s "
        f"ELSE b.available END, "
        f"{quote('capacity')} = %(capacity)s, {quote('refill_per_second')} = %(refill)s, "
        f"{quote('updated_at')} = GREATEST(%(now)s, b.seen) "
        f"FROM b WHERE t.{quote('id')} = b.id RETURNING b.available"
    )
    params = {
        "capacity": float(limit.capacity),
        "refill": float(limit.refill_per_second),
        "now": now,
        "connection": connection_id,
        "epsilon": TOKEN_EPSILON,
        "cost": float(cost),
    }
    with db_connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else float(row[0])


def rate_limit_backoff(*, connection: PlatformConnection, seconds: float, now: datetime | None = None) -> None:
    """The platform said "retry after ``seconds``": make every worker on the connection wait.

    Drains the bucket below zero so that no request is allowed before ``seconds`` pass.
    """
    now = now or timezone.now()
    limit = rate_limit_for(connection.platform)
    with transaction.atomic():
        bucket = _locked_bucket(connection.pk, limit, now)
        _store(bucket, limit, min(_refilled(bucket, limit, now), -seconds * limit.refill_per_second), now)


class ConnectionThrottle:
    """The executor ``Throttle`` of one connection: blocks until its shared bucket allows a request.

    Must not be called inside ``transaction.atomic`` on PostgreSQL (the lock would be
    held until the caller commits); executors are never called there.
    """

    def __init__(
        self,
        connection: PlatformConnection,
        *,
        clock: Callable[[], datetime] = timezone.now,
        sleep: Callable[[float], None] = time.sleep,
        max_wait: float | None = None,
    ) -> None:
        self.connection_id = connection.pk
        # A wait longer than this is refused as a rate limit instead of slept (the engine
        # parks the work until then rather than holding a worker); None: always wait.
        self.max_wait = max_wait
        self.limit = rate_limit_for(connection.platform)
        # Google Ads: every request also spends the developer token's daily operations.
        self.developer_token = (
            str(connection.credentials.get("developer_token") or "") if connection.platform == "google_ads" else ""
        )
        self.clock = clock
        self.sleep = sleep
        self.waited = 0.0  # seconds spent waiting, for logs and benchmarks

    def __call__(self, operations: int) -> None:
        """Block until the bucket allows the request; raise ``PlatformCallError``
        (rate_limited, with the retry-after) when a Google developer token's daily
        operations would run out or the wait would exceed ``max_wait``: no request is
        sent then."""
        if self.developer_token:
            self._spend_daily_operations(operations)
        cost = self.limit.cost(operations)
        if self._spend_reserved(cost):
            return
        while True:
            if self._reserve(cost):
                return
            wait = bucket_take_tokens(connection_id=self.connection_id, tokens=cost, limit=self.limit, now=self.clock())
            if wait <= 0:
                return
            if self.max_wait is not None and wait > self.max_wait:
                raise PlatformCallError(
                    PlatformError(
                        code=ErrorCode.RATE_LIMITED,
                        message=f"The connection's rate limit allows the next request in {wait:.0f}s, longer than "
                        f"a worker waits ({self.max_wait:.0f}s); it was not sent.",
                        retry_after=wait,
                    )
                )
            self.waited += wait
            self.sleep(wait)

    # Reads cost one operation each: a throttle takes ten at a time from the shared row and
    # spends them locally (a unit's ten reads are one statement, not ten). The day's count
    # runs at most nine operations ahead of what this throttle sent, and a stock never
    # outlives the quota day it was taken on.
    DAILY_STOCK_OPERATIONS = 10

    _daily_stock = 0
    _daily_stock_until: datetime | None = None

    def _spend_daily_operations(self, operations: int) -> None:
        operations = max(operations, 1)
        now = self.clock()
        if self._daily_stock_until is not None and now < self._daily_stock_until and self._daily_stock >= operations:
            self._daily_stock -= operations
            return
        if operations < self.DAILY_STOCK_OPERATIONS:
            taken, status = quota_take(
                developer_token=self.developer_token, operations=self.DAILY_STOCK_OPERATIONS, now=now
            )
            if taken:
                self._daily_stock, self._daily_stock_until = self.DAILY_STOCK_OPERATIONS - operations, status.resets_at
                return
        taken, status = quota_take(developer_token=self.developer_token, operations=operations, now=now)
        if taken:
            return
        raise PlatformCallError(
            PlatformError(
                code=ErrorCode.RATE_LIMITED,
                message=f"The Google Ads developer token has spent {status.used} of its {status.limit} operations "
                f"today; this request needs {operations}. It was not sent; the budget resets at "
                f"{status.resets_at:%Y-%m-%d %H:%M %Z}.",
                retry_after=status.seconds_to_reset(now),
            )
        )

    # A worker sending many requests takes a few requests' worth of tokens per database
    # round trip and spends them locally. Reserved tokens expire after RESERVE_SECONDS, so
    # a worker can never save them up for a burst above the shared rate.
    RESERVE_REQUESTS = 10
    RESERVE_SECONDS = 1.0

    _reserved = 0.0
    _reserved_at: datetime | None = None

    def _spend_reserved(self, cost: float) -> bool:
        fresh = (
            self._reserved_at is not None and (self.clock() - self._reserved_at).total_seconds() < self.RESERVE_SECONDS
        )
        if fresh and self._reserved >= cost:
            self._reserved -= cost
            return True
        return False

    def _reserve(self, cost: float) -> bool:
        """Take a small stock (a tenth of the bucket at most) when the bucket is comfortably full."""
        stock = min(cost * self.RESERVE_REQUESTS, self.limit.capacity / 10)
        if stock <= cost:
            return False
        now = self.clock()
        if bucket_take_tokens(connection_id=self.connection_id, tokens=stock, limit=self.limit, now=now) > 0:
            return False
        self._reserved, self._reserved_at = stock - cost, now
        return True
