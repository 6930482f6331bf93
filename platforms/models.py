"""Platform connections and the local mirror of each account's entity graph."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from budgetradar.crypto import EncryptedJSONField
from budgetradar.models import ExecutionMode, Tenant, validate_currency, validate_time_zone
from platforms.types import ConnectionConfig, EntityRef, EntityStatus, EntityType

MONEY = {"max_digits": 18, "decimal_places": 4}


class Platform(models.TextChoices):
    SANDBOX = "sandbox", "Sandbox"
    GOOGLE_ADS = "google_ads", "Google Ads"
    META = "meta", "Meta"


class CircuitState(models.TextChoices):
    CLOSED = "closed", "Closed (healthy)"
    OPEN = "open", "Open (live work refused)"
    HALF_OPEN = "half_open", "Half-open (one probe allowed)"


class PlatformConnection(models.Model):
    """One ad account on one platform, with its credentials encrypted at rest.

    ``credentials`` is a Fernet token in the database; it is excluded from history and
    never rendered by the admin or the API. The circuit-breaker fields are shared by
    every worker because they live here, in the database.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="connections")
    name = models.CharField(max_length=120)
    platform = models.CharField(max_length=20, choices=Platform.choices)
    account_id = models.CharField(max_length=64, help_text="Google customer id, Meta act_… id or sandbox account.")
    currency = models.CharField(max_length=3, validators=[validate_currency])
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    credentials = EncryptedJSONField(blank=True, default=dict, editable=False)
    api_base_url = models.CharField(
        max_length=200, blank=True, help_text="Endpoint override (tests and fakes). Empty means the real platform."
    )
    is_active = models.BooleanField(default=True)
    execution_mode = models.CharField(
        max_length=20,
        choices=ExecutionMode.choices,
        blank=True,
        default="",
        help_text="When approved changes on this account run; empty: the tenant's execution policy.",
    )
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.CharField(max_length=500, blank=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)

    # Facts about the account that planning needs before sending, read by sync
    # (``PlatformExecutor.account_facts``): Google's billable unit of the currency, Meta's
    # minimum daily budgets (amounts as decimal strings).
    billable_unit_micros = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Google Ads: currency_constant.billable_unit_micros of the account currency."
    )
    minimum_budgets = models.JSONField(
        null=True, blank=True, help_text="Meta: the account's minimum daily budgets (act_<id>/minimum_budgets)."
    )
    account_facts_read_at = models.DateTimeField(null=True, blank=True)

    circuit_state = models.CharField(max_length=10, choices=CircuitState.choices, default=CircuitState.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    circuit_opened_at = models.DateTimeField(null=True, blank=True)
    circuit_reason = models.CharField(max_length=500, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords(excluded_fields=["credentials"])

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "platform", "account_id"], name="uniq_connection_account"),
        ]
        permissions = [
            ("test_platformconnection", "Can test a platform connection"),
            ("sync_platformconnection", "Can sync a platform connection"),
            ("reset_circuit", "Can reset a connection's circuit breaker"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_platform_display()} {self.account_id})"

    @property
    def credential_keys(self) -> list[str]:
        """Names of the stored credential fields (never their values)."""
        return sorted(self.credentials)

    def to_config(self) -> ConnectionConfig:
        return ConnectionConfig(
            connection_id=self.pk,
            platform=self.platform,
            account_id=self.account_id,
            currency=self.currency,
            time_zone=self.time_zone,
            credentials=dict(self.credentials),
            api_base_url=self.api_base_url,
            request_timeout=settings.PLATFORM_REQUEST_TIMEOUT_SECONDS,
            billable_unit_micros=self.billable_unit_micros,
        )


class PlatformEntity(models.Model):
    """The mirror of one campaign, ad set/ad group, ad or creative, refreshed by sync.

    Money is Decimal in the connection's currency. ``budget_id`` and ``budget_shared``
    describe Google campaign budgets (a shared budget moves every campaign on it).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(PlatformConnection, on_delete=models.CASCADE, related_name="entities")
    entity_type = models.CharField(max_length=20, choices=[(t.value, t.value.replace("_", " ")) for t in EntityType])
    external_id = models.CharField(max_length=64)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    name = models.CharField(max_length=255)
    status = models.CharField(max_length=20, choices=[(s.value, s.value) for s in EntityStatus])
    daily_budget = models.DecimalField(null=True, blank=True, **MONEY)
    lifetime_budget = models.DecimalField(null=True, blank=True, **MONEY)
    bid = models.DecimalField(null=True, blank=True, **MONEY)
    budget_id = models.CharField(max_length=64, blank=True, help_text="Google CampaignBudget id.")
    budget_shared = models.BooleanField(default=False)
    budget_reference_count = models.PositiveIntegerField(default=0)
    targeting = models.JSONField(null=True, blank=True)
    schedule = models.JSONField(null=True, blank=True)
    bid_strategy = models.CharField(
        max_length=40,
        blank=True,
        help_text="Bidding strategy in force (Google campaign.bidding_strategy_type, Meta bid_strategy).",
    )
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # By the connection's id, not "connection" (which sorts by tenant and connection name
        # through two joins no index serves); the id last, so every page is deterministic.
        ordering = ["connection_id", "entity_type", "name", "id"]
        verbose_name_plural = "platform entities"
        constraints = [
            models.UniqueConstraint(fields=["connection", "entity_type", "external_id"], name="uniq_entity_external"),
        ]
        indexes = [
            models.Index(fields=["tenant", "entity_type"]),
            models.Index(fields=["connection", "parent"]),
            # The default ordering (the API's and the admin's lists; platform staff's across tenants).
            models.Index(fields=["connection", "entity_type", "name", "id"], name="entity_list_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.entity_type} {self.external_id})"

    @property
    def platform(self) -> str:
        return self.connection.platform

    @property
    def currency(self) -> str:
        return self.connection.currency

    def to_ref(self) -> EntityRef:
        parent_external_id = None
        if self.parent_id is not None:
            parent_external_id = self.parent.external_id
        return EntityRef(
            entity_type=EntityType(self.entity_type),
            external_id=self.external_id,
            parent_external_id=parent_external_id,
            budget_id=self.budget_id or None,
        )


class EntityPerformanceDaily(models.Model):
    """One day of delivery for one entity, in the connection's currency."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    entity = models.ForeignKey(PlatformEntity, on_delete=models.CASCADE, related_name="performance")
    date = models.DateField()
    spend = models.DecimalField(default=Decimal("0"), **MONEY)
    impressions = models.PositiveBigIntegerField(default=0)
    clicks = models.PositiveBigIntegerField(default=0)
    conversions = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    revenue = models.DecimalField(default=Decimal("0"), **MONEY)

    class Meta:
        ordering = ["entity", "-date"]
        verbose_name = "daily performance"
        verbose_name_plural = "daily performance"
        constraints = [models.UniqueConstraint(fields=["entity", "date"], name="uniq_performance_day")]

    def __str__(self) -> str:
        return f"{self.entity.name} on {self.date}"


class RateLimitBucket(models.Model):
    """A connection's token bucket, shared by every worker and process through this row.

    ``platforms.ratelimit`` refills and takes tokens under a row lock in a short
    transaction; ``tokens`` may go negative when the platform itself asked everyone to
    back off (Retry-After).
    """

    connection = models.OneToOneField(PlatformConnection, on_delete=models.CASCADE, related_name="rate_limit_bucket")
    tokens = models.FloatField()
    capacity = models.FloatField()
    refill_per_second = models.FloatField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.tokens:.1f}/{self.capacity:g} tokens for connection {self.connection_id}"


class DeveloperTokenUsage(models.Model):
    """Google Ads operations spent by one developer token on one day, shared by every
    worker through this row (``platforms.quota``). The token is kept as a SHA-256 digest."""

    token_digest = models.CharField(max_length=64)
    day = models.DateField()
    operations = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["token_digest", "day"], name="uniq_token_usage_day")]

    def __str__(self) -> str:
        return f"{self.operations} operations on {self.day}"
