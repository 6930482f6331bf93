"""One way to show a moment to a person: in the account's (or tenant's) zone, zone named.

``format_time`` is the only format the admin uses for moments it writes itself
(``2026-12-02 14:03:07 CET``, seconds always, so how long a request took is visible);
Django's own displays of date-time fields use the same pattern through
``budgetradar/formats/en/formats.py`` and the tenant zone that
``budgetradar.middleware.TenantTimeZoneMiddleware`` activates for admin pages.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings

EMPTY = "—"
PATTERN = "%Y-%m-%d %H:%M:%S"


def zone_of(obj) -> str:
    """The zone a row's moments are shown in: its connection's, else its tenant's, else UTC."""
    for path in ("connection", "entity.connection", "tenant"):
        target = obj
        for part in path.split("."):
            target = getattr(target, part, None)
            if target is None:
                break
        zone = getattr(target, "time_zone", None)
        if zone:
            return zone
    return getattr(obj, "time_zone", None) or settings.TIME_ZONE


def zone_label(local: datetime, zone: str) -> str:
    """The zone's abbreviation (CET, CEST, EST) or, where it has only an offset (``+03``), its name."""
    abbreviation = local.tzname() or ""
    return abbreviation if abbreviation[:1].isalpha() else zone


def format_time(at: datetime | None, zone: str | None = None) -> str:
    """``2026-12-02 14:03:07 CET``: ``at`` in ``zone`` (default UTC) with the zone named; a dash when empty."""
    if at is None:
        return EMPTY
    name = zone or settings.TIME_ZONE
    local = at.astimezone(ZoneInfo(name))
    return f"{local:{PATTERN}} {zone_label(local, name)}"


def format_duration(span: timedelta | None) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``: the two largest units that matter."""
    if span is None:
        return EMPTY
    seconds = max(int(span.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"
