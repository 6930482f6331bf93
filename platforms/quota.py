"""The Google Ads daily operations budget of a developer token, shared by every worker.

Google counts operations, not requests: "A single query or report is counted as one
operation ... For any mutate request, each mutated item counts as one operation ... All
other requests count as one operation" (https://developers.google.com/google-ads/api/docs/api-policy/rate-sheet),
and Basic access allows "15,000 API operations per day against both test and production
accounts" (https://developers.google.com/google-ads/api/docs/best-practices/quotas).
The budget belongs to the developer token, so every connection using one token draws
from one ``DeveloperTokenUsage`` row per day (``settings.GOOGLE_ADS_DAILY_OPERATIONS``,
0 for unlimited Standard access; the day in ``settings.GOOGLE_ADS_QUOTA_TIME_ZONE``).

``quota_take`` counts (the connection throttle calls it before every request);
``quota_status`` tells the preflight and the dispatcher what is left.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from platforms.models import DeveloperTokenUsage


@dataclass(frozen=True)
class QuotaStatus:
    """The day's budget of one developer token; ``limit`` 0 means unlimited."""

    limit: int
    used: int
    resets_at: datetime

    @property
    def unlimited(self) -> bool:
        return self.limit == 0

    @property
    def remaining(self) -> int | None:
        return None if self.unlimited else max(self.limit - self.used, 0)

    def allows(self, operations: int) -> bool:
        return self.unlimited or self.used + operations <= self.limit

    def seconds_to_reset(self, now: datetime) -> float:
        return max((self.resets_at - now).total_seconds(), 0.0)

    def as_dict(self) -> dict[str, object]:
        return {
            "limit": self.limit or None,
            "used": self.used,
            "remaining": self.remaining,
            "resets_at": self.resets_at.astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z"),
        }


def token_digest(developer_token: str) -> str:
    return hashlib.sha256(developer_token.encode()).hexdigest()


def _day(now: datetime) -> tuple[date, datetime]:
    zone = ZoneInfo(settings.GOOGLE_ADS_QUOTA_TIME_ZONE)
    local = now.astimezone(zone)
    resets = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
    return local.date(), resets


def quota_status(*, developer_token: str, now: datetime | None = None) -> QuotaStatus:
    """Operations the token has spent today (one query)."""
    now = now or timezone.now()
    day, resets = _day(now)
    used = (
        DeveloperTokenUsage.objects.filter(token_digest=token_digest(developer_token), day=day)
        .values_list("operations", flat=True)
        .first()
    )
    return QuotaStatus(settings.GOOGLE_ADS_DAILY_OPERATIONS, used or 0, resets)


def quota_take(*, developer_token: str, operations: int, now: datetime | None = None) -> tuple[bool, QuotaStatus]:
    """Count ``operations`` against today's budget if they fit. Returns whether they were
    taken, and the status after.

    One statement (an upsert whose update applies only if the sum fits): the row is
    locked by the statement itself, so two workers never both take the last operations,
    and a take costs one round trip, not a lock, a read and a write. A refusal reads the
    row once more to say what is left."""
    now = now or timezone.now()
    day, resets = _day(now)
    limit = settings.GOOGLE_ADS_DAILY_OPERATIONS
    used = _add_if_it_fits(token_digest(developer_token), day, operations, limit)
    if used is None:
        return False, quota_status(developer_token=developer_token, now=now)
    return True, QuotaStatus(limit, used, resets)


def _add_if_it_fits(digest: str, day: date, operations: int, limit: int) -> int | None:
    """Today's operations after adding ``operations``, or None when they would exceed
    ``limit`` (0: unlimited) and nothing was added. PostgreSQL and SQLite (3.35+) alike."""
    table = DeveloperTokenUsage._meta.db_table
    sql = f"""
        INSERT INTO "{table}" ("token_digest", "day", "operations")
        SELECT %(digest)s, %(day)s, %(n)s WHERE %(limit)s = 0 OR %(n)s <= %(limit)s
        ON CONFLICT ("token_digest", "day") DO UPDATE
        SET "operations" = "{table}"."operations" + excluded."operations"
        WHERE %(limit)s = 0 OR "{table}"."operations" + excluded."operations" <= %(limit)s
        RETURNING "operations"
    """
    conn = transaction.get_connection()
    params = {"digest": digest, "day": conn.ops.adapt_datefield_value(day), "n": operations, "limit": limit}
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def connection_quota(connection, now: datetime | None = None) -> QuotaStatus | None:
    """For the dispatcher: the daily operations budget a Google Ads connection draws from
    (None for other platforms or without a developer token). ``.allows(n)`` says whether
    ``n`` more operations fit today; ``.resets_at`` when the budget is whole again."""
    token = connection.credentials.get("developer_token") if connection.platform == "google_ads" else None
    return quota_status(developer_token=str(token), now=now) if token else None
