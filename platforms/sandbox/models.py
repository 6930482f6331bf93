"""The sandbox platform's own tables: a simulated ad platform living in the database.

These rows are the *platform side*. BudgetRadar never reads them directly: it talks to
the sandbox through ``SandboxExecutor`` exactly as it talks to Google Ads or Meta, and
mirrors what it reads into ``platforms.PlatformEntity`` by sync. A demo user edits these
rows in the admin to play "someone changed the budget in the platform's UI" or to inject
faults ("rate limit twice").
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from budgetradar.models import validate_currency, validate_time_zone
from platforms.money import MoneyError, check_precision
from platforms.sandbox.faults import FaultKind, FaultScope
from platforms.types import EntityStatus, EntityType

MONEY = {"max_digits": 18, "decimal_places": 4}
CURVE = {"max_digits": 12, "decimal_places": 4}

# Faults about individual changes; a read request never consumes them.
WRITE_ONLY_FAULT_KINDS = frozenset({FaultKind.PARTIAL_FAILURE, FaultKind.SILENT_NOOP})

SANDBOX_ENTITY_TYPES = [
    (t.value, t.value.replace("_", " ")) for t in (EntityType.CAMPAIGN, EntityType.AD_SET, EntityType.AD)
]


def token_digest(token: str) -> str:
    """SHA-256 of an access token: the sandbox keeps only this, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


class SandboxAccount(models.Model):
    """One simulated ad account.

    The account accepts exactly one access token (stored as a SHA-256 digest): a
    connection presenting another token is refused with ``auth_expired``, as a real
    platform refuses a revoked token. ``latency_ms`` is slept on every request.
    """

    account_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    currency = models.CharField(max_length=3, default="EUR", validators=[validate_currency])
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    access_token_digest = models.CharField(max_length=64, editable=False)
    latency_ms = models.PositiveIntegerField(default=0, help_text="Added to every request, in milliseconds.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["account_id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.account_id})"

    def set_access_token(self, token: str) -> None:
        self.access_token_digest = token_digest(token)

    def accepts(self, token: object) -> bool:
        if not isinstance(token, str) or not token or not self.access_token_digest:
            return False
        return hmac.compare_digest(token_digest(token), self.access_token_digest)


class SandboxEntity(models.Model):
    """A campaign, ad set or ad on the simulated platform.

    ``deleted_at`` set means the platform deleted it (an ``entity_deleted`` fault or a
    demo user): it is absent from every read, unlike ``status=removed`` which stays
    readable. The response-curve fields drive ``platforms.sandbox.simulation``: daily
    conversions follow a Hill curve ``max_conversions * s^shape / (half^shape + s^shape)``
    of the day's spend ``s``.
    """

    account = models.ForeignKey(SandboxAccount, on_delete=models.CASCADE, related_name="entities")
    entity_type = models.CharField(max_length=20, choices=SANDBOX_ENTITY_TYPES)
    external_id = models.CharField(max_length=64)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    name = models.CharField(max_length=255)
    status = models.CharField(
        max_length=20, choices=[(s.value, s.value) for s in EntityStatus], default=EntityStatus.ACTIVE
    )
    daily_budget = models.DecimalField(null=True, blank=True, **MONEY)
    lifetime_budget = models.DecimalField(null=True, blank=True, **MONEY)
    bid = models.DecimalField(null=True, blank=True, **MONEY)
    targeting = models.JSONField(null=True, blank=True)
    schedule = models.JSONField(null=True, blank=True)

    max_conversions = models.DecimalField(default=Decimal("20"), help_text="Conversions a day at saturation.", **CURVE)
    half_saturation_spend = models.DecimalField(
        default=Decimal("100"), help_text="Daily spend that yields half of max conversions.", **CURVE
    )
    shape = models.DecimalField(default=Decimal("1.0"), help_text="Hill exponent (1 = concave).", **CURVE)
    value_per_conversion = models.DecimalField(default=Decimal("50"), **CURVE)
    ctr = models.DecimalField(default=Decimal("0.02"), help_text="Clicks per impression.", **CURVE)
    cpm = models.DecimalField(default=Decimal("10"), help_text="Cost per 1,000 impressions.", **CURVE)

    deleted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account", "entity_type", "external_id"]
        verbose_name_plural = "sandbox entities"
        constraints = [
            models.UniqueConstraint(fields=["account", "external_id"], name="uniq_sandbox_entity_external"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.external_id})"

    def clean(self) -> None:
        """Refuse amounts the account cannot hold: a platform stores whole minor units."""
        if self.account_id is None:
            return
        errors: dict[str, str] = {}
        if self.parent_id is not None and self.parent.account_id != self.account_id:
            errors["parent"] = "The parent must belong to the same account."
        for name in ("daily_budget", "lifetime_budget", "bid"):
            value = getattr(self, name)
            if value is None:
                continue
            if value <= 0:
                errors[name] = "Must be greater than zero."
                continue
            try:
                check_precision(value, self.account.currency)
            except MoneyError as exc:
                errors[name] = str(exc)
        if errors:
            raise ValidationError(errors)


class SandboxFault(models.Model):
    """A fault the sandbox injects into matching requests, consumed atomically.

    ``remaining`` None means forever. ``entity_ids`` (external ids) narrows the fault to
    requests naming one of them (account-wide reads always match); for entity_deleted,
    partial_failure and silent_noop it also names the entities hit (empty: all of the
    request's entities).
    """

    account = models.ForeignKey(SandboxAccount, on_delete=models.CASCADE, related_name="faults")
    kind = models.CharField(max_length=30, choices=[(k.value, k.value.replace("_", " ")) for k in FaultKind])
    scope = models.CharField(max_length=10, choices=[(s.value, s.value) for s in FaultScope], default=FaultScope.WRITE)
    remaining = models.PositiveIntegerField(null=True, blank=True, default=1, help_text="Empty means forever.")
    entity_ids = models.JSONField(default=list, blank=True, help_text="External ids; empty means any entity.")
    retry_after = models.FloatField(default=1.0, help_text="Seconds the platform asks to wait (rate limits).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["account", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(retry_after__gte=0), name="sandbox_fault_retry_after_non_negative"),
        ]

    def __str__(self) -> str:
        times = "forever" if self.remaining is None else f"{self.remaining} left"
        return f"{self.get_kind_display()} on {self.scope} ({times})"

    @property
    def exhausted(self) -> bool:
        return self.remaining == 0

    def clean(self) -> None:
        if self.scope == FaultScope.READ and self.kind in WRITE_ONLY_FAULT_KINDS:
            raise ValidationError({"scope": f"A {self.get_kind_display()} fault only affects writes; use scope write."})


class SandboxRequest(models.Model):
    """The sandbox's own request log: one row per request it received.

    Tests assert on it ("applied exactly once"); the demo shows it read-only.
    """

    class Method(models.TextChoices):
        READ = "read", "Read state"
        APPLY = "apply", "Apply changes"
        LIST = "list", "List entities"
        PERFORMANCE = "performance", "Read performance"

    account = models.ForeignKey(SandboxAccount, on_delete=models.CASCADE, related_name="requests")
    request_id = models.CharField(max_length=40, unique=True)
    method = models.CharField(max_length=20, choices=Method.choices)
    validate_only = models.BooleanField(default=False)
    operation_count = models.PositiveIntegerField(default=0)
    entity_ids = models.JSONField(default=list, blank=True)
    fault = models.CharField(max_length=30, blank=True, help_text="The injected fault this request met, if any.")
    applied_count = models.PositiveIntegerField(default=0, help_text="Changes that really changed the platform.")
    outcome = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_method_display()} {self.request_id}: {self.outcome}"
