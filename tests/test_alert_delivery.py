"""Delivering alerts: each channel's payload as a local receiver sees it, retries with backoff, attempts.

Slack and PagerDuty are sent by apprise's own plugins; the tests point the plugins'
endpoints (hooks.slack.com, events.pagerduty.com) at a local pytest-httpserver, as the
platform tests point the SDKs at their fakes. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from apprise.plugins import pagerduty
from apprise.plugins.slack import NotifySlack
from django.utils import timezone
from werkzeug import Response

from observability.channels import ChannelConfigError, config_validate, webhook_signature
from observability.models import (
    Alert,
    AlertKind,
    Channel,
    ChannelKind,
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    DeliveryStatus,
    Severity,
)
from observability.services.alerts import Condition, alert_raise, alert_resolve, dedup_key
from observability.services.delivery import backoff_delay, deliveries_send

pytestmark = pytest.mark.django_db(transaction=True)

SLACK_URL = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefabcdef"


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.ALERT_DELIVERY_BASE_DELAY_SECONDS = 30.0
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 3
    settings.ALERT_DELIVERY_TIMEOUT_SECONDS = 5.0
    settings.ALERT_CHANNELS_ALLOW_HTTP = True


@pytest.fixture
def slack_endpoint(httpserver, monkeypatch):
    monkeypatch.setattr(NotifySlack, "webhook_url", httpserver.url_for("/services"))
    return httpserver


@pytest.fixture
def pagerduty_endpoint(httpserver, monkeypatch):
    monkeypatch.setitem(pagerduty.PAGERDUTY_API_LOOKUP, "us", httpserver.url_for("/v2/enqueue"))
    return httpserver


def make_channel(tenant, kind, config, severities=("critical", "warning")) -> Channel:
    return Channel.objects.create(
        tenant=tenant, name=kind, kind=kind, severities=list(severities), config=config_validate(kind, config)
    )


def raise_alert(tenant, severity=Severity.CRITICAL) -> Alert:
    alert, _ = alert_raise(
        Condition(
            kind=AlertKind.CIRCUIT_OPEN,
            severity=severity,
            dedup_key=dedup_key(AlertKind.CIRCUIT_OPEN, tenant.pk, "connection", 7),
            title="Circuit breaker open on Acme Search",
            message="Live work on Acme Search is refused: auth expired. Reconnect the account.",
            tenant_id=tenant.pk,
            details={"state": "open"},
        )
    )
    return alert


def bodies(server) -> list[dict]:
    return [json.loads(request.get_data()) for request, _ in server.log]


def test_slack_gets_the_incoming_webhook_shape(tenant, slack_endpoint):
    slack_endpoint.expect_request(
        "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX", method="POST"
    ).respond_with_data("ok")
    make_channel(tenant, ChannelKind.SLACK, {"webhook_url": SLACK_URL})
    raise_alert(tenant)
    assert deliveries_send().sent == 1
    [body] = bodies(slack_endpoint)
    # https://api.slack.com/messaging/webhooks: JSON with text or attachments/blocks.
    [attachment] = body["attachments"]
    assert attachment["title"] == "[CRITICAL] Circuit breaker open on Acme Search"
    assert "Reconnect the account" in attachment["text"] and "/admin/observability/alert/" in attachment["text"]
    assert "footer" not in attachment and "icon_url" not in body
    assert Delivery.objects.get().status == DeliveryStatus.SENT


def test_pagerduty_gets_trigger_then_resolve_with_our_dedup_key(tenant, tenant_admin, pagerduty_endpoint):
    pagerduty_endpoint.expect_request("/v2/enqueue", method="POST").respond_with_json({"status": "success"}, status=202)
    make_channel(tenant, ChannelKind.PAGERDUTY, {"routing_key": ROUTING_KEY}, severities=["critical"])
    alert = raise_alert(tenant)
    deliveries_send()
    alert_resolve(alert=alert, actor=tenant_admin)
    deliveries_send()
    trigger, resolve = bodies(pagerduty_endpoint)
    # https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
    assert trigger["routing_key"] == ROUTING_KEY and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == alert.dedup_key
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "BudgetRadar"
    assert trigger["payload"]["summary"].startswith("[CRITICAL] Circuit breaker open on Acme Search")
    assert trigger["payload"]["custom_details"]["alert_id"] == str(alert.pk)
    assert "images" not in trigger
    assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": alert.dedup_key}


def test_webhook_body_is_signed_with_hmac(tenant, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    secret = "a-signing-secret-of-32-characters"
    make_channel(tenant, ChannelKind.WEBHOOK, {"url": httpserver.url_for("/hook"), "secret": secret})
    alert = raise_alert(tenant)
    assert deliveries_send().sent == 1
    [(request, _)] = httpserver.log
    raw, timestamp = request.get_data(), request.headers["X-BudgetRadar-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert request.headers["X-BudgetRadar-Signature"] == expected == webhook_signature(secret, timestamp, raw)
    body = json.loads(raw)
    assert body["event"] == "trigger" and body["alert_id"] == alert.pk and body["dedup_key"] == alert.dedup_key
    assert body["tenant"] == "acme" and body["severity"] == "critical" and body["details"] == {"state": "open"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


def test_email_reaches_a_local_smtp_server(tenant, settings):
    inbox = _Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
        settings.ALERT_EMAIL_FROM = "alerts@budgetradar.test"
        make_channel(tenant, ChannelKind.EMAIL, {"recipients": "ops@acme.test, oncall@acme.test"})
        raise_alert(tenant)
        assert deliveries_send().sent == 1
    finally:
        smtp.stop()
    [envelope] = inbox.messages
    assert envelope.mail_from == "alerts@budgetradar.test"
    assert envelope.rcpt_tos == ["ops@acme.test", "oncall@acme.test"]
    text = envelope.content.decode()
    assert "Subject: BudgetRadar: [CRITICAL] Circuit breaker open on Acme Search" in text
    assert "Reconnect the account" in text


def test_failures_are_retried_with_backoff_and_every_attempt_is_recorded(tenant, httpserver, monkeypatch):
    httpserver.expect_request("/hook").respond_with_response(Response("busy", status=503))
    make_channel(tenant, ChannelKind.WEBHOOK, {"url": httpserver.url_for("/hook"), "secret": "s" * 20})
    raise_alert(tenant)
    before = timezone.now()
    assert deliveries_send().retrying == 1
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert before <= delivery.next_attempt_at <= timezone.now() + timedelta(seconds=30)
    assert deliveries_send().retrying == 0  # not due yet: nothing is sent
    for expected_attempts in (2, 3):
        Delivery.objects.update(next_attempt_at=timezone.now())
        deliveries_send()
        assert Delivery.objects.get().attempts == expected_attempts
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and "HTTP 503" in delivery.last_error
    attempts = list(DeliveryAttempt.objects.order_by("number").values_list("number", "ok", "status_code"))
    assert attempts == [(1, False, 503), (2, False, 503), (3, False, 503)]
    assert len(httpserver.log) == 3


def test_a_permanent_refusal_is_not_retried(tenant, httpserver):
    httpserver.expect_request("/hook").respond_with_data("bad signature", status=401)
    make_channel(tenant, ChannelKind.WEBHOOK, {"url": httpserver.url_for("/hook"), "secret": "s" * 20})
    raise_alert(tenant)
    assert deliveries_send().failed == 1
    assert Delivery.objects.get().attempts == 1 and len(httpserver.log) == 1


def test_a_failed_apprise_send_records_the_reason_without_the_secret(tenant, slack_endpoint):
    slack_endpoint.expect_request("/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX").respond_with_data(
        "invalid_payload", status=400
    )
    make_channel(tenant, ChannelKind.SLACK, {"webhook_url": SLACK_URL})
    raise_alert(tenant)
    deliveries_send()
    attempt = DeliveryAttempt.objects.get()
    assert not attempt.ok and "400" in attempt.error
    assert "XXXXXXXXXXXXXXXXXXXXXXXX" not in attempt.error


def test_a_resolve_waits_for_its_trigger(tenant, tenant_admin, httpserver):
    httpserver.expect_request("/hook").respond_with_response(Response("busy", status=503))
    make_channel(tenant, ChannelKind.WEBHOOK, {"url": httpserver.url_for("/hook"), "secret": "s" * 20})
    alert = raise_alert(tenant)
    deliveries_send()
    alert_resolve(alert=alert, actor=tenant_admin)
    deliveries_send()
    resolve = Delivery.objects.get(event=DeliveryEvent.RESOLVE)
    assert resolve.attempts == 0 and resolve.status == DeliveryStatus.PENDING
    assert [json.loads(r.get_data())["event"] for r, _ in httpserver.log] == ["trigger"]


def test_backoff_grows_exponentially_to_its_cap(settings):
    settings.ALERT_DELIVERY_BASE_DELAY_SECONDS, settings.ALERT_DELIVERY_MAX_DELAY_SECONDS = 30.0, 600.0
    assert [backoff_delay(n, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5, 6)] == [30, 60, 120, 240, 480, 600]
    assert backoff_delay(3, rng=lambda: 0.5) == 60


def test_channel_configuration_is_validated_per_field(settings):
    settings.ALERT_CHANNELS_ALLOW_HTTP = False
    with pytest.raises(ChannelConfigError) as slack:
        config_validate(ChannelKind.SLACK, {"webhook_url": "https://example.com/not-slack"})
    assert slack.value.field == "webhook_url"
    with pytest.raises(ChannelConfigError) as webhook:
        config_validate(ChannelKind.WEBHOOK, {"url": "http://example.com/hook", "secret": "s" * 20})
    assert webhook.value.field == "url"
    with pytest.raises(ChannelConfigError) as email:
        config_validate(ChannelKind.EMAIL, {"recipients": "ops@acme.test, nope"})
    assert email.value.field == "recipients"


def test_channel_secrets_are_encrypted_at_rest(tenant):
    from django.db import connection

    channel = make_channel(tenant, ChannelKind.PAGERDUTY, {"routing_key": ROUTING_KEY})
    with connection.cursor() as cursor:
        cursor.execute("SELECT config FROM observability_channel WHERE id = %s", [channel.pk])
        [stored] = cursor.fetchone()
    assert ROUTING_KEY not in stored and stored.startswith("gAAAA")
    assert Channel.objects.get(pk=channel.pk).config["routing_key"] == ROUTING_KEY
    assert "config" not in {f.name for f in Channel.history.model._meta.fields}
