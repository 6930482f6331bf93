"""Per-entity change-rate limits of the platforms (pure functions, no I/O).

Meta, ad set level: "For each ad set, the budget is only allowed to change 4 times per
hour, if exceeds the limit, the budget change for that ad set is blocked for an hour.
Related error code: 17" (https://developers.facebook.com/docs/marketing-api/overview/rate-limiting).
BudgetRadar plans around it from the times it changed an ad set's budget itself: a
change is allowed while fewer than 4 of them fall in the last hour, and the next one is
allowed an hour after the oldest of the last 4. Changes made by others (Ads Manager) are
not known here, so a code-17 refusal can still come; the executor reports it as an
entity-scoped rate limit with a one-hour retry-after.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from budgetradar.timefmt import format_time
from platforms.types import EntityType, Field

META_BUDGET_CHANGES_PER_HOUR = 4
META_BUDGET_WINDOW = timedelta(hours=1)
BUDGET_FIELDS = frozenset({Field.DAILY_BUDGET, Field.LIFETIME_BUDGET})


@dataclass(frozen=True)
class ChangeAllowance:
    """Whether one more change of an entity may go now, and if not, when."""

    allowed: bool
    next_allowed_at: datetime
    recent_changes: int
    limit: int

    def describe(self, subject: str, *, time_zone: str | None) -> str:
        """What the limit allows ``subject``; the next allowed moment in ``time_zone`` (the account's), zone named."""
        if self.allowed:
            return f"{subject}: {self.recent_changes} of {self.limit} budget changes used in the last hour."
        return (
            f"{subject}: Meta allows {self.limit} budget changes per ad set per hour and BudgetRadar made "
            f"{self.recent_changes} in the last hour; the next is allowed at "
            f"{format_time(self.next_allowed_at, time_zone)} "
            "(sent earlier, Meta blocks the ad set's budget for an hour)."
        )


def is_limited(platform: str, entity_type: str, fields: Iterable[str]) -> bool:
    """Whether a change of ``fields`` on the entity counts against Meta's budget-change limit."""
    return platform == "meta" and entity_type == EntityType.AD_SET and any(Field(f) in BUDGET_FIELDS for f in fields)


def next_budget_change(
    changed_at: Iterable[datetime],
    now: datetime,
    *,
    limit: int = META_BUDGET_CHANGES_PER_HOUR,
    window: timedelta = META_BUDGET_WINDOW,
) -> ChangeAllowance:
    """Given when the entity's budget was changed (any order, older ones ignored), whether
    another change may go at ``now`` and when the next one is allowed (``now`` if it may)."""
    recent = sorted(t for t in changed_at if now - window < t <= now)
    if len(recent) < limit:
        return ChangeAllowance(True, now, len(recent), limit)
    return ChangeAllowance(False, recent[-limit] + window, len(recent), limit)


def budget_change_schedule(
    changed_at: Iterable[datetime],
    count: int,
    now: datetime,
    *,
    limit: int = META_BUDGET_CHANGES_PER_HOUR,
    window: timedelta = META_BUDGET_WINDOW,
) -> list[datetime]:
    """The earliest times at which ``count`` more budget changes of one entity can go, in order."""
    history = [t for t in changed_at if t <= now]
    times: list[datetime] = []
    moment = now
    for _ in range(count):
        moment = next_budget_change(history, moment, limit=limit, window=window).next_allowed_at
        times.append(moment)
        history.append(moment)
    return times
