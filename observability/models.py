"""Watch, alert and measure: the rows of the post-change watch, alerts and their delivery.

- ``ObservabilitySettings``: per tenant, the watch's mode and thresholds and the
  anomaly bounds (a tenant without a row uses the defaults written here).
- ``Watch`` / ``WatchEntity`` / ``WatchDay``: one watched change (a live deployment's
  actions on one connection, or one executed action), the entities it changed with
  their values before and after, and one evaluation row per local day.
- ``Alert``: a condition that needs a person, deduplicated while it is open.
- ``Channel`` / ``Delivery`` / ``DeliveryAttempt``: where a tenant's alerts go, one row
  per alert event and channel (the outbox of the notification network), and one
  append-only row per attempt to send it.
- ``WorkerHeartbeat`` and ``CircuitOpening``: facts the readiness check and the watch
  read later.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from budgetradar.crypto import EncryptedJSONField
from budgetradar.models import Tenant
from platforms.models import PlatformConnection, PlatformEntity

USER = settings.AUTH_USER_MODEL


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class AlertKind(models.TextChoices):
    WATCH_TRIGGERED = "watch_triggered", "Post-change watch triggered"
    CPA_SPIKE = "cpa_spike", "CPA spike"
    CONVERSIONS_DROP = "conversions_drop", "Conversions drop"
    GUARDRAIL_BREACHES = "guardrail_breaches", "Many guardrail breaches"
    OPTIMIZER_FAILURE = "optimizer_failure", "Optimizer failure"
    QUOTA_EXCEEDED = "quota_exceeded", "Platform quota exceeded"
    INGESTION_FAILURE = "ingestion_failure", "Data ingestion failure"
    STUCK_ACTIONS = "stuck_actions", "Stuck actions"
    PARKED_ACTIONS = "parked_actions", "Actions parked past their bound"
    RECONCILER_LAG = "reconciler_lag", "Reconciler lag"
    CIRCUIT_OPEN = "circuit_open", "Circuit breaker open"
    TOKEN_EXPIRING = "token_expiring", "Access token expiring"
    TOKEN_EXPIRED = "token_expired", "Access token expired"
    SCHEDULE_MISSED = "schedule_missed", "Schedule did not run"
    WORKER_DOWN = "worker_down", "No worker heartbeat"
    TEST = "test", "Test alert"


class WatchMode(models.TextChoices):
    OFF = "off", "Off (no post-change watch)"
    ASSIST = "assist", "Assist (a restoring scenario awaits approval)"
    AUTOPILOT = "autopilot", "Autopilot (the restoring scenario is deployed through the safety gate)"


def _pct(default: int, help_text: str) -> models.DecimalField:
    return models.DecimalField(max_digits=6, decimal_places=2, default=default, help_text=help_text)


class ObservabilitySettings(models.Model):
    """One tenant's watch and anomaly thresholds (defaults: the seed's numbers).

    Autopilot needs a person's recorded consent: the restoring deployment is made as that
    person (``autopilot_actor``) through ``deployment_create``, so their role and the
    plan's entitlements are checked exactly as for a deploy from the admin.
    """

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="observability_settings")
    watch_mode = models.CharField(max_length=10, choices=WatchMode.choices, default=WatchMode.ASSIST)
    autopilot_actor = models.ForeignKey(
        USER,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Autopilot deploys restoring scenarios as this approver; their consent is recorded here.",
    )
    autopilot_consent_at = models.DateTimeField(null=True, blank=True)
    watch_days = models.PositiveIntegerField(default=14, help_text="Days after a change that are watched.")
    baseline_weeks = models.PositiveIntegerField(
        default=4, help_text="Weeks before the change whose same weekdays form each day's baseline."
    )
    min_baseline_conversions = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        default=5,
        help_text="A day whose baseline has fewer conversions than this is not judged (too little evidence).",
    )
    conversions_drop_pct = _pct(15, "Watch: conversions down more than this percent …")
    conversions_drop_days = models.PositiveIntegerField(default=3, help_text="… for this many consecutive days.")
    cpa_rise_pct = _pct(20, "Watch: CPA up more than this percent …")
    cpa_rise_days = models.PositiveIntegerField(default=5, help_text="… for this many consecutive days.")
    circuit_openings_per_week = models.PositiveIntegerField(
        default=1, help_text="Watch: the connection's circuit breaker opened more often than this within 7 days."
    )
    anomaly_cpa_spike_pct = _pct(30, "Warning: yesterday's CPA above its baseline by more than this percent.")
    anomaly_conversions_drop_pct = _pct(20, "Warning: yesterday's conversions below baseline by more than this.")
    anomaly_guardrail_breaches = models.PositiveIntegerField(
        default=10, help_text="Warning: at least this many guardrail breaches in one day's preflights."
    )
    stuck_action_minutes = models.PositiveIntegerField(
        default=30, help_text="An action queued or executing longer than this is stuck."
    )
    parked_action_hours = models.PositiveIntegerField(
        default=6, help_text="An action parked (waiting for a next attempt) longer than this needs a person."
    )
    token_expiry_warning_days = models.PositiveIntegerField(default=7)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name = "watch and alert settings"
        verbose_name_plural = "watch and alert settings"

    def __str__(self) -> str:
        return f"Watch and alert settings of {self.tenant}"


class CircuitOpening(models.Model):
    """A circuit breaker opened (recorded from ``circuit.opened``); the watch counts them."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(PlatformConnection, on_delete=models.CASCADE, related_name="+")
    event_id = models.BigIntegerField(unique=True, help_text="The outbox event, so a redelivery records nothing.")
    opened_at = models.DateTimeField()
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        indexes = [models.Index(fields=["connection", "opened_at"])]

    def __str__(self) -> str:
        return f"Circuit of {self.connection_id} opened at {self.opened_at:%Y-%m-%d %H:%M}"


# The post-change watch ----------------------------------------------------------------


class Watch(models.Model):
    """The daily watch of one change on one connection.

    A live deployment gets one watch per connection it changed; an executed action
    outside deployments gets its own. ``change_date`` is the local day of the change in
    the connection's time zone; days ``change_date + 1 … change_date + watch_days`` are
    evaluated. A trigger creates ``restoring_scenario`` (back to the values before the
    change) and, in autopilot, ``restoring_deployment``.
    """

    class Status(models.TextChoices):
        WATCHING = "watching", "Watching"
        TRIGGERED = "triggered", "Triggered (restoring scenario awaits approval)"
        RESTORING = "restoring", "Triggered (restoring scenario deployed)"
        COMPLETED = "completed", "Completed without a trigger"
        SUPERSEDED = "superseded", "Superseded by a later change"
        ROLLED_BACK = "rolled_back", "Rolled back"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(PlatformConnection, on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey(
        "scenarios.Deployment", null=True, blank=True, on_delete=models.CASCADE, related_name="watches"
    )
    action = models.ForeignKey("actions.Action", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.WATCHING)
    changed_at = models.DateTimeField()
    change_date = models.DateField(help_text="The local day of the change (connection's time zone).")
    time_zone = models.CharField(max_length=64)
    watch_days = models.PositiveIntegerField()
    baseline_weeks = models.PositiveIntegerField()
    trigger_code = models.CharField(max_length=30, blank=True)
    trigger_reason = models.TextField(blank=True)
    triggered_at = models.DateTimeField(null=True, blank=True)
    restoring_scenario = models.ForeignKey(
        "scenarios.Scenario", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    restoring_deployment = models.ForeignKey(
        "scenarios.Deployment", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    restore_note = models.TextField(blank=True, help_text="What happened to the restoring scenario, and why.")
    restore_attempted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-changed_at", "-id"]
        verbose_name_plural = "watches"
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "connection"],
                condition=Q(deployment__isnull=False),
                name="one_watch_per_deployment_connection",
            ),
            models.UniqueConstraint(fields=["action"], condition=Q(action__isnull=False), name="one_watch_per_action"),
        ]
        indexes = [models.Index(fields=["status", "connection"])]

    def __str__(self) -> str:
        subject = f"deployment #{self.deployment_id}" if self.deployment_id else f"action #{self.action_id}"
        return f"Watch of {subject} on {self.connection_id}"


class WatchEntity(models.Model):
    """One entity a watched change touched: its values before and after (JSON-safe)."""

    watch = models.ForeignKey(Watch, on_delete=models.CASCADE, related_name="entities")
    entity = models.ForeignKey(PlatformEntity, on_delete=models.CASCADE, related_name="+")
    before = models.JSONField(default=dict, help_text="The changed fields' values before the change.")
    after = models.JSONField(default=dict)
    rolled_back = models.BooleanField(default=False)

    class Meta:
        ordering = ["watch", "id"]
        verbose_name_plural = "watch entities"
        constraints = [models.UniqueConstraint(fields=["watch", "entity"], name="uniq_watch_entity")]

    def __str__(self) -> str:
        return f"{self.entity_id} in {self.watch}"


class WatchDay(models.Model):
    """The evaluation of one local day of a watch against the pre-change baseline."""

    class Status(models.TextChoices):
        OK = "ok", "Within thresholds"
        BREACH = "breach", "Breach"
        NO_DATA = "no_data", "No performance data yet"
        LOW_BASELINE = "low_baseline", "Baseline too small to judge"

    watch = models.ForeignKey(Watch, on_delete=models.CASCADE, related_name="days")
    date = models.DateField()
    status = models.CharField(max_length=12, choices=Status.choices)
    conversions = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    spend = models.DecimalField(max_digits=18, decimal_places=4, null=True, blank=True)
    cpa = models.DecimalField(max_digits=18, decimal_places=4, null=True, blank=True)
    baseline_conversions = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    baseline_cpa = models.DecimalField(max_digits=18, decimal_places=4, null=True, blank=True)
    conversions_change_pct = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    cpa_change_pct = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    circuit_openings_7d = models.PositiveIntegerField(default=0)
    breaches = models.JSONField(default=list, help_text="Codes of the thresholds this day broke.")
    thresholds = models.JSONField(default=dict, help_text="The thresholds this day was judged by.")
    evaluated_at = models.DateTimeField()

    class Meta:
        ordering = ["watch", "date"]
        constraints = [models.UniqueConstraint(fields=["watch", "date"], name="uniq_watch_day")]

    def __str__(self) -> str:
        return f"{self.watch} on {self.date}: {self.status}"


# Alerts -------------------------------------------------------------------------------


class AlertStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


ACTIVE_ALERT_STATUSES = [AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED]


class Alert(models.Model):
    """A condition that needs a person.

    ``dedup_key`` is unique among open and acknowledged alerts, so a condition alerts
    once until it is resolved; seeing it again only moves ``last_seen_at`` and counts
    ``occurrences``. Resolved by a person, or automatically when the detector that
    raised it finds the condition gone. ``tenant`` empty: a system-wide condition
    (workers, schedules), shown to platform staff and sent to their channels.
    """

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=30, choices=AlertKind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    status = models.CharField(max_length=12, choices=AlertStatus.choices, default=AlertStatus.OPEN)
    dedup_key = models.CharField(max_length=200)
    title = models.CharField(max_length=200)
    message = models.TextField(help_text="What happened and what to do next.")
    connection = models.ForeignKey(
        PlatformConnection, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    deployment = models.ForeignKey(
        "scenarios.Deployment", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.ForeignKey("actions.Action", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    details = models.JSONField(default=dict, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    occurrences = models.PositiveIntegerField(default=1)
    acknowledged_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=500, blank=True, help_text="Who or what resolved it, and why.")

    class Meta:
        ordering = ["-last_seen_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["dedup_key"],
                condition=Q(status__in=ACTIVE_ALERT_STATUSES),
                name="one_active_alert_per_dedup_key",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "status", "severity"]),
            models.Index(fields=["kind", "status"]),
        ]
        permissions = [
            ("acknowledge_alert", "Can acknowledge alerts"),
            ("resolve_alert", "Can resolve alerts"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_ALERT_STATUSES


class ChannelKind(models.TextChoices):
    SLACK = "slack", "Slack (incoming webhook)"
    PAGERDUTY = "pagerduty", "PagerDuty (Events API v2)"
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook (JSON signed with HMAC-SHA256)"


class Channel(models.Model):
    """Where a tenant's alerts are delivered, and which severities go there.

    ``config`` holds the channel's secrets (webhook URL, routing key, signing secret,
    recipients) encrypted like platform credentials; it is excluded from history and
    never rendered. ``tenant`` empty: a platform staff channel for system alerts.
    """

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=12, choices=ChannelKind.choices)
    severities = models.JSONField(default=list, help_text='Severities routed here, e.g. ["critical"].')
    is_active = models.BooleanField(default=True)
    config = EncryptedJSONField(blank=True, default=dict, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=["config"])

    class Meta:
        ordering = ["tenant", "name"]
        verbose_name = "alert channel"
        permissions = [("test_channel", "Can send a test alert to a channel")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"


class DeliveryEvent(models.TextChoices):
    TRIGGER = "trigger", "Alert raised"
    RESOLVE = "resolve", "Alert resolved"
    TEST = "test", "Test alert"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (gave up)"


class Delivery(models.Model):
    """One alert event to send to one channel: written with the alert, sent by a worker.

    The worker claims a due row with a compare-and-set and a lease, sends outside any
    transaction, records the attempt and either marks it sent, schedules the next
    attempt with backoff, or gives up after ``ALERT_DELIVERY_MAX_ATTEMPTS``.
    """

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=10, choices=DeliveryEvent.choices)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_owner = models.CharField(max_length=120, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["alert", "channel", "event"], name="uniq_delivery_per_event"),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.get_event_display()} of alert #{self.alert_id} to {self.channel}"


class DeliveryAttempt(models.Model):
    """One try to send a delivery; never updated (the evidence of what was sent when)."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="uniq_delivery_attempt")]

    def __str__(self) -> str:
        return f"Attempt {self.number} of {self.delivery_id}: {'ok' if self.ok else 'failed'}"


class WorkerHeartbeat(models.Model):
    """The last time a django-q2 worker on ``host`` ran the heartbeat schedule."""

    host = models.CharField(max_length=200, unique=True)
    pid = models.PositiveIntegerField()
    seen_at = models.DateTimeField()

    class Meta:
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return f"{self.host} at {self.seen_at:%Y-%m-%d %H:%M:%S}"
