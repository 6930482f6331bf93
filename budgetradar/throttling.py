"""Throttling of failed logins (admin, through django-axes) and failed API tokens.

Both key on the same client address (``client_ip``): ``REMOTE_ADDR``, or the address the
trusted proxies put in ``X-Forwarded-For`` when ``NUM_PROXIES`` says there are some. A
client cannot pick its own address by sending the header when no proxy is trusted.
"""

from __future__ import annotations

import math
from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.throttling import SimpleRateThrottle


def client_ip(request: HttpRequest) -> str:
    """The client's address as the last ``NUM_PROXIES`` trusted proxies saw it."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = settings.NUM_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if not proxies or not forwarded:
        return remote
    addresses = [part.strip() for part in forwarded.split(",") if part.strip()]
    return addresses[-min(proxies, len(addresses))] if addresses else remote


class FailedTokenThrottle(SimpleRateThrottle):
    """Counts failed token authentications per client address (rate
    ``settings.API_FAILED_AUTH_RATE``, e.g. ``20/min``), in the default cache."""

    scope = "failed_token"

    def get_rate(self) -> str:
        return settings.API_FAILED_AUTH_RATE

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request)}

    def is_locked(self, request) -> bool:
        """True while the address has used up its failures (``wait()`` says for how long)."""
        self.key = self.get_cache_key(request, None)
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        return len(self.history) >= self.num_requests

    def record_failure(self) -> None:
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)


class ThrottledTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, refusing (429) an address after too many wrong tokens.

    DRF's own throttles run after authentication, so they never see a failed one; this
    class counts the failures itself. While an address is locked out, even a valid
    token is refused, so guessing cannot go on between the refusals.
    """

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.lower().startswith(f"{self.keyword.lower()} "):
            return super().authenticate(request)  # no token offered: nothing to count
        throttle = FailedTokenThrottle()
        if throttle.is_locked(request):
            raise _locked(throttle.wait())
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            throttle.record_failure()
            raise


def _locked(wait: float | None) -> exceptions.Throttled:
    # DRF appends "Expected available in N seconds." and sets Retry-After from ``wait``.
    return exceptions.Throttled(
        wait=max(1, math.ceil(wait or 1)),
        detail="Too many failed token authentications from your address; every token is refused until then.",
    )


def login_locked_out(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """django-axes' lockout answer: a 429 admin page that says what happened and when
    the next attempt is allowed (``Retry-After`` says the same to machines)."""
    cool_off: timedelta = settings.AXES_COOLOFF_TIME
    retry_at = timezone.now() + cool_off
    context = {
        "title": "Too many failed logins",
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cool_off_minutes": math.ceil(cool_off.total_seconds() / 60),
        "retry_at": retry_at,
        "site_header": "BudgetRadar",
        "site_title": "BudgetRadar",
    }
    response = render(request, "admin/locked_out.html", context, status=429)
    response["Retry-After"] = str(math.ceil(cool_off.total_seconds()))
    return response
