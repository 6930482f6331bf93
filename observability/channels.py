"""Sending one alert event to one channel: Slack, PagerDuty, email, signed webhook.

Which library does what, and why:
- **Slack incoming webhooks** and **PagerDuty Events API v2** go through apprise (pinned
  in requirements.txt): ``NotifySlack`` posts the documented incoming-webhook JSON
  (https://api.slack.com/messaging/webhooks) and ``NotifyPagerDuty`` the documented
  Events API v2 event with ``event_action`` trigger or resolve and our ``dedup_key``
  (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/). apprise only
  answers True/False, so the attempt records its warning log lines as the error.
  apprise's PagerDuty plugin insists on a REST API key although the Events API
  authenticates by the routing key alone; without one we give it the routing key,
  which the same request already carries in its body.
- **Email** goes through Django's own mail framework (``EmailMessage`` over the
  project's SMTP settings): apprise's ``mailto://`` would put SMTP credentials into
  every channel, while BudgetRadar has one relay for all tenants.
- **Webhooks signed with HMAC** use ``requests`` directly: apprise's ``json://`` can add
  fixed headers but cannot compute a signature over the body.

Nothing here touches the database: ``observability.services.delivery`` calls ``send``
outside any transaction and records the result.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests
from apprise import LogCapture, NotifyType
from apprise.plugins.pagerduty import NotifyPagerDuty
from apprise.plugins.slack import NotifySlack
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage, get_connection
from django.core.validators import validate_email

from observability.models import ChannelKind, DeliveryEvent, Severity

SIGNATURE_HEADER = "X-BudgetRadar-Signature"
TIMESTAMP_HEADER = "X-BudgetRadar-Timestamp"
EVENT_HEADER = "X-BudgetRadar-Event"
NOTIFY_TYPES = {Severity.CRITICAL: NotifyType.FAILURE, Severity.WARNING: NotifyType.WARNING}
PAGERDUTY_SEVERITIES = {Severity.CRITICAL: "critical", Severity.WARNING: "warning", Severity.INFO: "info"}
PAGERDUTY_DEDUP_MAX = 255  # Events API v2: dedup_key is at most 255 characters
PAGERDUTY_SUMMARY_MAX = 1024


@dataclass(frozen=True)
class Notice:
    """What a channel is told: one alert event, rendered once for every channel."""

    event: str  # DeliveryEvent
    alert_id: int
    kind: str
    severity: str
    title: str
    message: str
    dedup_key: str
    link: str
    tenant: str
    occurred_at: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def heading(self) -> str:
        if self.event == DeliveryEvent.RESOLVE:
            return f"Resolved: {self.title}"
        if self.event == DeliveryEvent.TEST:
            return f"[TEST] {self.title}"
        return f"[{self.severity.upper()}] {self.title}"

    @property
    def body(self) -> str:
        return f"{self.message}\n{self.link}" if self.link else self.message

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "alert_id": self.alert_id,
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
            "dedup_key": self.dedup_key,
            "link": self.link,
            "tenant": self.tenant,
            "occurred_at": self.occurred_at,
            "details": self.details,
        }


@dataclass(frozen=True)
class SendResult:
    ok: bool
    retryable: bool = True
    status_code: int | None = None
    error: str = ""


class ChannelConfigError(ValueError):
    """A channel's configuration cannot be used; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


# Configuration ---------------------------------------------------------------------------

CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    ChannelKind.SLACK: ("webhook_url",),
    ChannelKind.PAGERDUTY: ("routing_key", "api_key"),
    ChannelKind.EMAIL: ("recipients",),
    ChannelKind.WEBHOOK: ("url", "secret"),
}
SECRET_FIELDS = frozenset({"webhook_url", "routing_key", "api_key", "url", "secret"})


def config_validate(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The cleaned configuration of a channel of ``kind``; ``ChannelConfigError`` names the bad field."""
    if kind == ChannelKind.SLACK:
        url = _url(config, "webhook_url")
        if NotifySlack.parse_native_url(url) is None:
            raise ChannelConfigError(
                "webhook_url", "A Slack incoming webhook URL looks like https://hooks.slack.com/services/T…/B…/…."
            )
        return {"webhook_url": url}
    if kind == ChannelKind.PAGERDUTY:
        key = str(config.get("routing_key") or "").strip()
        if len(key) < 8:
            raise ChannelConfigError("routing_key", "Give the Events API v2 integration (routing) key of the service.")
        return {"routing_key": key, "api_key": str(config.get("api_key") or "").strip()}
    if kind == ChannelKind.EMAIL:
        raw = config.get("recipients") or []
        recipients = [r.strip() for r in (raw.split(",") if isinstance(raw, str) else raw) if r.strip()]
        if not recipients:
            raise ChannelConfigError("recipients", "Give at least one email address.")
        for address in recipients:
            try:
                validate_email(address)
            except ValidationError:
                raise ChannelConfigError("recipients", f"{address!r} is not an email address.") from None
        return {"recipients": recipients}
    if kind == ChannelKind.WEBHOOK:
        url = _url(config, "url")
        secret = str(config.get("secret") or "")
        if len(secret) < 16:
            raise ChannelConfigError("secret", "The signing secret needs at least 16 characters.")
        return {"url": url, "secret": secret}
    raise ChannelConfigError("kind", f"Unknown channel kind {kind!r}.")


def _url(config: dict[str, Any], name: str) -> str:
    url = str(config.get(name) or "").strip()
    parsed = urlparse(url)
    if parsed.scheme == "http" and settings.ALERT_CHANNELS_ALLOW_HTTP and parsed.hostname:
        return url
    if parsed.scheme != "https" or not parsed.hostname:
        raise ChannelConfigError(name, "Give an https:// URL.")
    return url


# Sending -----------------------------------------------------------------------------------


def send(kind: str, config: dict[str, Any], notice: Notice, *, timeout: float) -> SendResult:
    """Send ``notice`` to a channel; never raises for a network or channel failure."""
    try:
        sender = SENDERS[kind]
    except KeyError:
        return SendResult(ok=False, retryable=False, error=f"Unknown channel kind {kind!r}.")
    try:
        return sender(config, notice, timeout)
    except Exception as exc:  # a library bug must not kill the worker; the attempt records it
        return SendResult(ok=False, error=_scrub(f"{type(exc).__name__}: {exc}", config))


def _slack(config: dict[str, Any], notice: Notice, timeout: float) -> SendResult:
    parsed = NotifySlack.parse_native_url(config["webhook_url"])
    if not parsed:
        return SendResult(ok=False, retryable=False, error="The Slack webhook URL is not an incoming webhook URL.")
    # No apprise footer, logo or timestamp: the message is ours alone.
    parsed.update(include_footer=False, include_image=False, include_timestamp=False, rto=timeout, cto=timeout)
    return _apprise_notify(NotifySlack(**parsed), notice, config)


def _pagerduty(config: dict[str, Any], notice: Notice, timeout: float) -> SendResult:
    resolve = notice.event == DeliveryEvent.RESOLVE
    plugin = NotifyPagerDuty(
        apikey=config.get("api_key") or config["routing_key"],
        integrationkey=config["routing_key"],
        source="BudgetRadar",
        component=notice.kind,
        group=notice.tenant or "system",
        class_id=notice.kind,
        click=notice.link or None,
        details={"alert_id": str(notice.alert_id), "tenant": notice.tenant or "system", **_flat(notice.details)},
        severity=PAGERDUTY_SEVERITIES.get(notice.severity, "info"),
        action="resolve" if resolve else "trigger",
        dedup=pagerduty_dedup_key(notice.dedup_key),
        include_image=False,
        rto=timeout,
        cto=timeout,
    )
    summary = f"{notice.heading} — {notice.message}"[:PAGERDUTY_SUMMARY_MAX]
    return _apprise_notify(plugin, notice, config, body=summary)


def pagerduty_dedup_key(key: str) -> str:
    """Our dedup key, or its SHA-256 when longer than PagerDuty allows."""
    return key if len(key) <= PAGERDUTY_DEDUP_MAX else hashlib.sha256(key.encode()).hexdigest()


def _flat(details: dict[str, Any]) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in details.items()}


def _apprise_notify(plugin, notice: Notice, config: dict[str, Any], *, body: str | None = None) -> SendResult:
    with LogCapture(level=logging.WARNING) as captured:
        ok = plugin.notify(
            body=body or notice.body,
            title=notice.heading,
            notify_type=NOTIFY_TYPES.get(notice.severity, NotifyType.INFO),
        )
    error = "" if ok else (_scrub(captured.getvalue().strip(), config) or "The channel refused the message.")
    return SendResult(ok=bool(ok), error=error[:2000])


def _email(config: dict[str, Any], notice: Notice, timeout: float) -> SendResult:
    message = EmailMessage(
        subject=f"BudgetRadar: {notice.heading}"[:200],
        body=notice.body,
        from_email=settings.ALERT_EMAIL_FROM,
        to=list(config["recipients"]),
        connection=get_connection(timeout=timeout, fail_silently=False),
        headers={"X-BudgetRadar-Alert": str(notice.alert_id), EVENT_HEADER: notice.event},
    )
    try:
        sent = message.send()
    except OSError as exc:  # smtplib errors are OSErrors: refused, timed out, rejected
        return SendResult(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
    return SendResult(ok=sent == 1, error="" if sent == 1 else "The mail server accepted no message.")


def _webhook(config: dict[str, Any], notice: Notice, timeout: float) -> SendResult:
    body = json.dumps(notice.as_json(), sort_keys=True, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "BudgetRadar-Alerts",
        EVENT_HEADER: notice.event,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: webhook_signature(config["secret"], timestamp, body),
    }
    try:
        response = requests.post(config["url"], data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return SendResult(ok=False, error=_scrub(f"{type(exc).__name__}: {exc}", config)[:2000])
    if 200 <= response.status_code < 300:
        return SendResult(ok=True, status_code=response.status_code)
    # 4xx other than timeout/too-many-requests: the receiver refuses this request for good.
    retryable = response.status_code >= 500 or response.status_code in (408, 429)
    text = response.text[:500]
    return SendResult(
        ok=False, retryable=retryable, status_code=response.status_code, error=f"HTTP {response.status_code}: {text}"
    )


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>." + body`` with the channel's secret.

    Receivers recompute it and compare in constant time; the timestamp lets them refuse
    replays older than a few minutes.
    """
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _scrub(text: str, config: dict[str, Any]) -> str:
    """Never let a channel secret reach an attempt row or a log."""
    for name in SECRET_FIELDS:
        value = config.get(name)
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, "***")
            for part in urlparse(value).path.split("/"):
                if len(part) >= 8:
                    text = text.replace(part, "***")
    return text


SENDERS = {
    ChannelKind.SLACK: _slack,
    ChannelKind.PAGERDUTY: _pagerduty,
    ChannelKind.EMAIL: _email,
    ChannelKind.WEBHOOK: _webhook,
}
