"""Tenants, plans and memberships: who owns what and who may do what."""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from budgetradar.roles import Role
from platforms.money import KNOWN_CURRENCIES


def validate_currency(value: str) -> None:
    if value not in KNOWN_CURRENCIES:
        raise ValidationError(f"{value!r} is not an ISO 4217 currency code (for example EUR, USD, JPY).")


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (for example Europe/Berlin).")


class Plan(models.Model):
    """A commercial plan and the features it entitles a tenant to.

    ``actions_per_month`` None means unlimited; ``max_connections`` None means unlimited.
    The four standard plans are created by a data migration.
    """

    class Code(models.TextChoices):
        FREE = "free", "Free"
        GROWTH = "growth", "Growth"
        PRO = "pro", "Pro"
        ENTERPRISE = "enterprise", "Enterprise"

    code = models.CharField(max_length=20, unique=True, choices=Code.choices)
    name = models.CharField(max_length=60)
    actions_enabled = models.BooleanField(default=False)
    actions_per_month = models.PositiveIntegerField(null=True, blank=True, help_text="Empty means unlimited.")
    live_deploy = models.BooleanField(default=False)
    autopilot = models.BooleanField(default=False)
    max_connections = models.PositiveIntegerField(null=True, blank=True, help_text="Empty means unlimited.")
    history = HistoricalRecords()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class ExecutionMode(models.TextChoices):
    """When an approved change runs: the execution policy of a tenant or a connection."""

    ON_APPROVAL = "on_approval", "Execute on approval"
    CHANGE_WINDOW = "change_window", "Execute in the next change window"
    MANUAL = "manual", "Manual execute only"


class Tenant(models.Model):
    """A customer organisation. Every other row belongs to exactly one tenant."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    currency = models.CharField(max_length=3, default="EUR", validators=[validate_currency])
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="tenants")
    four_eyes_required = models.BooleanField(
        default=False,
        help_text="When on, whoever created or last changed a recommendation or scenario cannot alone approve it, "
        "deploy it live or approve an override of its guardrail breaches.",
    )
    execution_mode = models.CharField(
        max_length=20,
        choices=ExecutionMode.choices,
        default=ExecutionMode.ON_APPROVAL,
        help_text="When approved changes run; a connection may set its own.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in one tenant. A user belongs to at most one tenant."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=[(r.value, r.value.title()) for r in Role], default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["tenant", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} ({self.role} of {self.tenant})"


class IdempotencyRecord(models.Model):
    """The first answer to a request made with an idempotency key.

    Same tenant, key and request fingerprint: the stored answer is returned and nothing
    runs again. Same key with a different fingerprint: refused (409). The unique
    constraint makes concurrent duplicates wait for the first and then read its answer.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    scope = models.CharField(max_length=60, help_text="What the key was used for, e.g. action.execute.")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the canonical request.")
    response = models.JSONField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="uniq_idempotency_key_per_tenant")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}"


class OutboxEvent(models.Model):
    """A domain event, written in the same transaction as the change it reports.

    Producers (the engine's settlement, the circuit breaker, ...) call
    ``budgetradar.outbox.publish``; consumers (deployments, the circuit breaker,
    dispatch, alerts) subscribe by topic and are run by ``outbox_drain``. Because the
    event commits with its change, a consumer never misses a change nor sees one that
    rolled back. ``processed_at`` is set in the transaction that ran the consumers.
    """

    topic = models.CharField(max_length=60)
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["id"], name="outbox_unprocessed_idx", condition=models.Q(processed_at__isnull=True)),
            models.Index(fields=["topic", "-id"], name="outbox_topic_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.topic} #{self.pk}"
