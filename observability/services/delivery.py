"""Sending deliveries: the worker side of the alert outbox.

``deliveries_send`` takes due deliveries one at a time:
1. claims it with a compare-and-set (``pending`` and due, or ``sending`` with an expired
   lease after a crash) that writes a lease token, so two workers never send one row;
2. sends it **outside any transaction** (``observability.channels.send``);
3. records the attempt (one append-only ``DeliveryAttempt``) and, fenced on its lease
   token, marks the delivery ``sent``, or schedules the next attempt with exponential
   backoff and full jitter (``ALERT_DELIVERY_BASE_DELAY_SECONDS * 2^(n-1)``, at most
   ``ALERT_DELIVERY_MAX_DELAY_SECONDS``), or gives up (``failed``) after
   ``ALERT_DELIVERY_MAX_ATTEMPTS`` or on a permanent refusal.
A resolve waits until the trigger of the same alert and channel is settled, so a
channel never hears "resolved" before "raised". A crash between sending and recording
means the channel may be told twice (at-least-once); PagerDuty deduplicates on the key.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from observability.channels import Notice, SendResult, send
from observability.metrics import alert_delivery_record
from observability.models import Delivery, DeliveryAttempt, DeliveryEvent, DeliveryStatus

logger = logging.getLogger(__name__)

Sender = Callable[[str, dict, Notice], SendResult]


@dataclass
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return f"sent={self.sent} retrying={self.retrying} failed={self.failed}"


def backoff_delay(attempt: int, *, rng: Callable[[], float] = random.random) -> float:
    """Seconds before attempt ``attempt + 1``: full jitter below an exponential ceiling."""
    ceiling = min(
        settings.ALERT_DELIVERY_MAX_DELAY_SECONDS, settings.ALERT_DELIVERY_BASE_DELAY_SECONDS * 2 ** (attempt - 1)
    )
    return rng() * ceiling


def deliveries_due(now: datetime, limit: int) -> list[int]:
    due = Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=DeliveryStatus.SENDING, lease_expires_at__lt=now
    )
    return list(Delivery.objects.filter(due).order_by("next_attempt_at", "id").values_list("id", flat=True)[:limit])


def deliveries_send(*, limit: int = 200, sender: Callable[..., SendResult] = send) -> SendReport:
    """Send every due delivery (at most ``limit``); see the module docstring."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("deliveries_send talks to the network: call it outside transaction.atomic.")
    report = SendReport()
    for delivery_id in deliveries_due(timezone.now(), limit):
        outcome = delivery_send(delivery_id, sender=sender)
        if outcome == DeliveryStatus.SENT:
            report.sent += 1
        elif outcome == DeliveryStatus.FAILED:
            report.failed += 1
        elif outcome == DeliveryStatus.PENDING:
            report.retrying += 1
    return report


def delivery_send(delivery_id: int, *, sender: Callable[..., SendResult] = send) -> str | None:
    """Claim, send and record one delivery; its new status, or None when not ours to send."""
    token = f"delivery:{uuid.uuid4().hex[:16]}"
    if not _claim(delivery_id, token):
        return None
    delivery = Delivery.objects.select_related("alert__tenant", "channel").get(pk=delivery_id)
    if _waits_for_trigger(delivery):
        _release(delivery, token)
        return None
    started, clock = timezone.now(), time.monotonic()
    result = sender(delivery.channel.kind, dict(delivery.channel.config), notice_for(delivery), timeout=_timeout())
    elapsed_ms = int((time.monotonic() - clock) * 1000)
    return _record(delivery, token, result, started, elapsed_ms)


def _timeout() -> float:
    return settings.ALERT_DELIVERY_TIMEOUT_SECONDS


def _claim(delivery_id: int, token: str) -> bool:
    now = timezone.now()
    due = Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=DeliveryStatus.SENDING, lease_expires_at__lt=now
    )
    lease = timedelta(seconds=_timeout() * 3 + 30)
    claimed = Delivery.objects.filter(due, pk=delivery_id).update(
        status=DeliveryStatus.SENDING, lease_owner=token, lease_expires_at=now + lease
    )
    return claimed == 1


def _waits_for_trigger(delivery: Delivery) -> bool:
    if delivery.event != DeliveryEvent.RESOLVE:
        return False
    return (
        Delivery.objects.filter(alert_id=delivery.alert_id, channel_id=delivery.channel_id)
        .exclude(event=DeliveryEvent.RESOLVE)
        .filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING])
        .exists()
    )


def _release(delivery: Delivery, token: str) -> None:
    """Not yet: give the row back, due again in a little while."""
    Delivery.objects.filter(pk=delivery.pk, lease_owner=token).update(
        status=DeliveryStatus.PENDING,
        lease_owner="",
        lease_expires_at=None,
        next_attempt_at=timezone.now() + timedelta(seconds=5),
    )


def _record(delivery: Delivery, token: str, result: SendResult, started: datetime, elapsed_ms: int) -> str | None:
    number = delivery.attempts + 1
    if result.ok:
        status, fields = DeliveryStatus.SENT, {"sent_at": timezone.now(), "last_error": ""}
    elif not result.retryable or number >= settings.ALERT_DELIVERY_MAX_ATTEMPTS:
        status, fields = DeliveryStatus.FAILED, {"last_error": result.error}
    else:
        wait = backoff_delay(number)
        status, fields = (
            DeliveryStatus.PENDING,
            {
                "last_error": result.error,
                "next_attempt_at": timezone.now() + timedelta(seconds=wait),
            },
        )
    with transaction.atomic():
        moved = Delivery.objects.filter(pk=delivery.pk, lease_owner=token, status=DeliveryStatus.SENDING).update(
            status=status, attempts=number, lease_owner="", lease_expires_at=None, **fields
        )
        if moved != 1:
            logger.warning("Delivery %s lost its lease while sending; its result is not recorded.", delivery.pk)
            return None
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=started,
            duration_ms=elapsed_ms,
            ok=result.ok,
            status_code=result.status_code,
            error=result.error,
        )
    outcome = {"sent": "sent", "failed": "gave_up", "pending": "retry"}[status]
    transaction.on_commit(lambda: alert_delivery_record(channel=delivery.channel.kind, outcome=outcome))
    if status == DeliveryStatus.FAILED:
        logger.warning(
            "Gave up delivering alert %s to channel %s after %s attempts: %s",
            delivery.alert_id,
            delivery.channel_id,
            number,
            result.error,
            extra={"alert": delivery.alert_id, "channel": delivery.channel_id},
        )
    return status


def notice_for(delivery: Delivery) -> Notice:
    alert = delivery.alert
    path = reverse("admin:observability_alert_change", args=[alert.pk])
    return Notice(
        event=delivery.event,
        alert_id=alert.pk,
        kind=alert.kind,
        severity=alert.severity,
        title=alert.title,
        message=alert.message,
        dedup_key=alert.dedup_key,
        link=f"{settings.BUDGETRADAR_BASE_URL}{path}",
        tenant=alert.tenant.slug if alert.tenant_id else "",
        occurred_at=(
            alert.resolved_at if delivery.event == DeliveryEvent.RESOLVE and alert.resolved_at else alert.first_seen_at
        ).isoformat(),
        details=alert.details or {},
    )
