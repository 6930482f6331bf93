"""Template filters for the one time and money format: ``{% load br_format %}``.

``{{ action.finished_at|local_time:action.connection.time_zone }}`` →
``2026-12-02 14:03:07 CET``; ``{{ span|duration }}`` → ``3 h 5 min``;
``{{ amount|money:connection.currency }}`` → ``1,234.50 EUR``.
"""

from __future__ import annotations

from django import template

from budgetradar.admin_base import format_money
from budgetradar.timefmt import format_duration, format_time

register = template.Library()


@register.filter
def local_time(value, zone: str | None = None) -> str:
    return format_time(value, zone or None)


@register.filter
def duration(value) -> str:
    return format_duration(value)


@register.filter
def money(value, currency: str) -> str:
    return format_money(value, currency)
