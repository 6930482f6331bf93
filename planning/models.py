"""The optimization loop's rows: automation settings, constraints, runs, fits and the decision log.

Settings and constraints are configuration (with history); a ``PlannerRun`` is one
optimization run moving through a database queue; ``CurveFit`` is one fitted response
curve with the date range of its inputs; ``DecisionLogEntry`` is the append-only record
of what the loop decided and why; ``IngestionRun`` is one daily performance ingestion
with its CSV archives; ``RolloutStep`` records each promotion of the autopilot rollout.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from budgetradar.models import Tenant
from platforms.models import MONEY, PlatformConnection, PlatformEntity

USER = settings.AUTH_USER_MODEL


class Mode(models.TextChoices):
    OFF = "off", "Off"
    SHADOW = "shadow", "Shadow (record and compare, change nothing)"
    ASSIST = "assist", "Assist (a scenario awaits approval)"
    AUTOPILOT = "autopilot", "Autopilot (deployed through the safety gate)"


class Objective(models.TextChoices):
    CONVERSIONS = "conversions", "Conversions (equalise marginal CPA)"
    REVENUE = "revenue", "Revenue (equalise marginal ROAS)"


class BudgetMode(models.TextChoices):
    KEEP = "keep", "Keep today's total"
    ABSOLUTE = "absolute", "An absolute total"
    PERCENT = "percent", "A percent change of today's total"


class LowConfidencePolicy(models.TextChoices):
    HOLD = "hold", "Hold: keep their budgets, plan the rest"
    BLOCK = "block", "Block: propose nothing while any entity has low confidence"


class RolloutStepName(models.TextChoices):
    SHADOW = "shadow", "Shadow"
    P25 = "25", "25 %"
    P50 = "50", "50 %"
    P75 = "75", "75 %"
    P100 = "100", "100 %"


class RolloutUnit(models.TextChoices):
    DAYS = "days", "Days (a weekday pattern)"
    ENTITIES = "entities", "Entities (a share held out as baseline)"


class AutomationSettings(models.Model):
    """How the daily loop treats one connection.

    ``mode`` is what the next run does. Autopilot needs the plan's autopilot entitlement
    and a person's recorded consent (``consent_*``); ``planning.services.automation``
    enforces both. The planner breaker (``breaker_*``) is stored here so every worker
    sees it: after ``PLANNER_BREAKER_THRESHOLD`` consecutive failed runs it opens and an
    autopilot connection drops to assist until an admin resets it.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    connection = models.OneToOneField(PlatformConnection, on_delete=models.CASCADE, related_name="automation")
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.OFF)
    objective = models.CharField(max_length=12, choices=Objective.choices, default=Objective.CONVERSIONS)
    budget_mode = models.CharField(max_length=10, choices=BudgetMode.choices, default=BudgetMode.KEEP)
    total_daily_budget = models.DecimalField(null=True, blank=True, help_text="For an absolute total.", **MONEY)
    budget_change_pct = models.DecimalField(
        max_digits=7, decimal_places=2, null=True, blank=True, help_text="For a percent change, e.g. 10 or -5."
    )
    target_cpa = models.DecimalField(null=True, blank=True, **MONEY)
    target_roas = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    low_confidence_policy = models.CharField(
        max_length=5, choices=LowConfidencePolicy.choices, default=LowConfidencePolicy.HOLD
    )
    lookback_days = models.PositiveIntegerField(default=90, help_text="Days of performance the curves are fitted on.")

    rollout_step = models.CharField(max_length=6, choices=RolloutStepName.choices, default=RolloutStepName.SHADOW)
    rollout_unit = models.CharField(max_length=8, choices=RolloutUnit.choices, default=RolloutUnit.ENTITIES)
    rollout_weekdays = models.JSONField(
        default=list, blank=True, help_text="Autopilot weekdays, 0 = Monday … 6 = Sunday; empty: every day."
    )
    holdout_share = models.DecimalField(
        max_digits=5, decimal_places=2, default=0, help_text="Percent of entities held out as the baseline."
    )
    daily_push_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most entities autopilot may change in one local day; empty: no cap."
    )
    push_window_start = models.TimeField(null=True, blank=True, help_text="In the account's time zone.")
    push_window_end = models.TimeField(null=True, blank=True)

    consent_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    consent_at = models.DateTimeField(null=True, blank=True)
    consent_reason = models.TextField(blank=True, max_length=2000)

    consecutive_failed_runs = models.PositiveIntegerField(default=0)
    breaker_open = models.BooleanField(default=False)
    breaker_opened_at = models.DateTimeField(null=True, blank=True)
    breaker_reason = models.CharField(max_length=500, blank=True)
    mode_before_breaker = models.CharField(max_length=10, choices=Mode.choices, blank=True)

    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name = "automation settings"
        verbose_name_plural = "automation settings"
        permissions = [
            ("run_planner", "Can run the planner now"),
            ("reset_planner_breaker", "Can reset the planner circuit breaker"),
            ("promote_rollout", "Can promote the autopilot rollout"),
        ]

    def __str__(self) -> str:
        return f"Automation of {self.connection.name}: {self.get_mode_display()}"


class EntityConstraint(models.Model):
    """A person's limits for one entity: a minimum and maximum daily budget, or a lock."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(PlatformConnection, on_delete=models.CASCADE, related_name="planning_constraints")
    entity = models.OneToOneField(PlatformEntity, on_delete=models.CASCADE, related_name="planning_constraint")
    min_daily_budget = models.DecimalField(null=True, blank=True, **MONEY)
    max_daily_budget = models.DecimalField(null=True, blank=True, **MONEY)
    locked = models.BooleanField(default=False, help_text="The planner never changes a locked entity.")
    note = models.CharField(max_length=300, blank=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(min_daily_budget__isnull=True)
                | Q(max_daily_budget__isnull=True)
                | Q(min_daily_budget__lte=models.F("max_daily_budget")),
                name="planning_constraint_min_le_max",
            ),
        ]

    def __str__(self) -> str:
        return f"Constraint on {self.entity}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Trigger(models.TextChoices):
    SCHEDULE = "schedule", "Daily schedule"
    MANUAL = "manual", "Run now"
    EXTERNAL = "external", "External plan"


class FallbackLevel(models.TextChoices):
    CURVES = "curves", "Response curves (marginal CPA/ROAS equalised)"
    PREVIOUS = "previous", "Fallback 1: previous allocation"
    ROLLING_AVERAGE = "rolling_average", "Fallback 2: 7-day rolling average"
    CPA = "cpa", "Fallback 3: CPA-based (spend proportional to 1/CPA)"
    EQUAL_SPLIT = "equal_split", "Fallback 4: equal split"
    EXTERNAL = "external", "External plan"


class Outcome(models.TextChoices):
    SHADOW_RECORDED = "shadow_recorded", "Shadow: recorded for comparison"
    AWAITING_APPROVAL = "awaiting_approval", "Assist: scenario awaits approval"
    DEPLOYED = "deployed", "Autopilot: deployed"
    FELL_BACK_TO_ASSIST = "fell_back_to_assist", "Autopilot fell back to assist"
    NO_CHANGE = "no_change", "No change proposed"
    BLOCKED = "blocked", "Blocked by the low-confidence policy"
    FAILED = "failed", "Failed"


class PlannerRun(models.Model):
    """One optimization run of one connection, queued in the database.

    At most one run per connection is ``running`` at any moment: a partial unique index
    enforces it, so two workers claiming runs of one connection cannot both succeed (the
    second claim fails on the index and its run stays queued). Scheduled runs are unique
    per connection and local day. ``attempts`` and ``next_attempt_at`` drive the retries
    with backoff; ``lease_expires_at`` lets a crashed worker's run be claimed again.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(PlatformConnection, on_delete=models.CASCADE, related_name="planner_runs")
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    local_date = models.DateField(help_text="The account's local date the run is for.")
    requested_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    external_plan = models.JSONField(null=True, blank=True, help_text="Normalised external proposals, if any.")
    external_source = models.CharField(max_length=20, blank=True)

    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    mode = models.CharField(max_length=10, choices=Mode.choices, blank=True, help_text="The mode the run acted in.")
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    outcome_message = models.TextField(blank=True)
    fallback_level = models.CharField(max_length=16, choices=FallbackLevel.choices, blank=True)
    date_from = models.DateField(null=True, blank=True)
    date_to = models.DateField(null=True, blank=True)
    data_hash = models.CharField(max_length=64, blank=True)
    summary = models.JSONField(null=True, blank=True)
    reasoning = models.JSONField(null=True, blank=True, help_text="Per entity: what the plan proposes and why.")
    shadow = models.JSONField(null=True, blank=True, help_text="Predicted vs actual, once the day's data is in.")
    error_message = models.TextField(blank=True)

    scenario = models.ForeignKey(
        "scenarios.Scenario", null=True, blank=True, on_delete=models.SET_NULL, related_name="planner_runs"
    )
    preflight = models.ForeignKey(
        "scenarios.PreflightRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    deployment = models.ForeignKey(
        "scenarios.Deployment", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["connection", "status", "created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["connection"], condition=Q(status="running"), name="planning_one_running_run_per_connection"
            ),
            models.UniqueConstraint(
                fields=["connection", "local_date"],
                condition=Q(trigger="schedule"),
                name="planning_one_scheduled_run_per_day",
            ),
        ]

    def __str__(self) -> str:
        return f"Planner run #{self.pk} of {self.connection.name} ({self.local_date})"


class FitStatus(models.TextChoices):
    OK = "ok", "Fitted"
    INSUFFICIENT = "insufficient", "Too few days"
    FAILED = "failed", "Fit failed"


class Confidence(models.TextChoices):
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"
    NONE = "none", "No curve"


class CurveFit(models.Model):
    """One entity's fitted Hill curve with geometric adstock, and the inputs' date range.

    ``conversions/day = vmax * a^shape / (half_saturation^shape + a^shape)`` where ``a``
    is the adstocked spend ``a_t = (1 - adstock) * spend_t + adstock * a_{t-1}``; at a
    steady daily spend ``a`` equals the spend, so the parameters read in money.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(PlatformConnection, on_delete=models.CASCADE, related_name="+")
    entity = models.ForeignKey(PlatformEntity, on_delete=models.CASCADE, related_name="curve_fits")
    run = models.ForeignKey(PlannerRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="fits")
    status = models.CharField(max_length=12, choices=FitStatus.choices)
    date_from = models.DateField(null=True, blank=True)
    date_to = models.DateField(null=True, blank=True)
    days_used = models.PositiveIntegerField(default=0)
    vmax = models.FloatField(null=True, blank=True)
    half_saturation = models.FloatField(null=True, blank=True)
    shape = models.FloatField(null=True, blank=True)
    adstock = models.FloatField(null=True, blank=True)
    r_squared = models.FloatField(null=True, blank=True)
    confidence = models.CharField(max_length=6, choices=Confidence.choices, default=Confidence.NONE)
    mean_spend = models.FloatField(null=True, blank=True)
    max_spend = models.FloatField(null=True, blank=True)
    spend_ratio = models.FloatField(null=True, blank=True, help_text="Mean spend over the daily budget.")
    value_per_conversion = models.FloatField(null=True, blank=True)
    message = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["entity", "-created_at"]
        indexes = [models.Index(fields=["entity", "-created_at"])]

    def __str__(self) -> str:
        return f"Curve of {self.entity_id} ({self.get_status_display()})"


class DecisionKind(models.TextChoices):
    RUN_COMPLETED = "run_completed", "Run completed"
    RUN_FAILED = "run_failed", "Run failed"
    SHADOW_COMPARED = "shadow_compared", "Shadow plan compared with what happened"
    BREAKER_OPENED = "breaker_opened", "Planner breaker opened"
    BREAKER_RESET = "breaker_reset", "Planner breaker reset"
    SETTINGS_CHANGED = "settings_changed", "Automation settings changed"
    ROLLOUT_PROMOTED = "rollout_promoted", "Rollout promoted"


class AppendOnlyError(Exception):
    """Decision-log rows are evidence: never updated, deleted only by the retention purge."""


class DecisionLogQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Decision log rows cannot be updated.")

    def delete(self):
        raise AppendOnlyError("Decision log rows cannot be deleted; the retention purge removes expired rows.")


class DecisionLogEntry(models.Model):
    """An append-only record of one decision of the loop.

    Saving an existing row, ``update()`` and ``delete()`` raise ``AppendOnlyError``; on
    PostgreSQL a trigger also rejects UPDATE always and DELETE unless the row is past
    ``retain_until`` *and* the transaction is the purge (it sets a transaction-local
    flag), so not even raw SQL can rewrite or drop a kept decision.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    connection = models.ForeignKey(PlatformConnection, on_delete=models.PROTECT, related_name="+")
    run = models.ForeignKey(PlannerRun, null=True, blank=True, on_delete=models.PROTECT, related_name="decisions")
    kind = models.CharField(max_length=20, choices=DecisionKind.choices)
    mode = models.CharField(max_length=10, blank=True)
    fallback_level = models.CharField(max_length=16, blank=True)
    data_hash = models.CharField(max_length=64, blank=True)
    inputs = models.JSONField(null=True, blank=True)
    fits = models.JSONField(null=True, blank=True)
    plan = models.JSONField(null=True, blank=True)
    reasoning = models.JSONField(null=True, blank=True)
    outcome = models.JSONField(null=True, blank=True)
    actor = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    retain_until = models.DateTimeField(db_index=True)

    objects = DecisionLogQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "decision log entry"
        verbose_name_plural = "decision log"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.created_at:%Y-%m-%d %H:%M:%S})"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise AppendOnlyError("Decision log rows cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Decision log rows cannot be deleted; the retention purge removes expired rows.")


class IngestionRun(models.Model):
    """One daily ingestion of a connection: re-read the last days, archive each day as CSV."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(PlatformConnection, on_delete=models.CASCADE, related_name="ingestion_runs")
    local_date = models.DateField()
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    since = models.DateField(null=True, blank=True)
    until = models.DateField(null=True, blank=True)
    rows = models.PositiveIntegerField(default=0)
    archives = models.JSONField(default=list, blank=True, help_text="Archived CSV files with their SHA-256.")
    message = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-local_date", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "local_date"], name="planning_one_ingestion_per_day"),
        ]

    def __str__(self) -> str:
        return f"Ingestion of {self.connection.name} on {self.local_date}"


class RolloutStep(models.Model):
    """A promotion of the autopilot rollout, by a person, with the evidence they saw."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(PlatformConnection, on_delete=models.CASCADE, related_name="rollout_steps")
    step = models.CharField(max_length=6, choices=RolloutStepName.choices)
    previous_step = models.CharField(max_length=6, choices=RolloutStepName.choices, blank=True)
    promoted_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True, max_length=2000)
    criterion_met = models.BooleanField(default=False)
    evidence = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Rollout of {self.connection.name} to {self.get_step_display()}"
