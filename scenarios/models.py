"""Scenarios (budget plans), preflight runs, guardrail policies, overrides and deployments."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from budgetradar.models import Tenant
from platforms.models import MONEY, PlatformConnection, PlatformEntity

USER = settings.AUTH_USER_MODEL


class Scenario(models.Model):
    """A plan: target values for many entities. Deploying it never touches other entities."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        DEPLOYED = "deployed", "Deployed"
        ARCHIVED = "archived", "Archived"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="scenarios")
    name = models.CharField(max_length=200)
    source_plan_id = models.CharField(max_length=200, blank=True, help_text="The optimizer's plan id, if imported.")
    notes = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    created_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    changed_by = models.ForeignKey(
        USER,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who last changed the plan (name, notes or items); deploying it is not a change.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, help_text="Any change to the plan or its items.")
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="scenario_tenant_list_idx")]
        permissions = [
            ("run_preflight", "Can run preflights"),
            ("deploy_dry_run", "Can dry-run deployments"),
            ("deploy_live", "Can deploy live"),
            ("override_guardrail", "Can override critical guardrail breaches"),
            ("rollback_deployment", "Can roll back deployments"),
        ]

    def __str__(self) -> str:
        return self.name


class ScenarioItem(models.Model):
    """Target values for one entity; an empty value means "leave as it is"."""

    class TargetStatus(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"

    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="items")
    entity = models.ForeignKey(PlatformEntity, on_delete=models.PROTECT, related_name="scenario_items")
    daily_budget = models.DecimalField(null=True, blank=True, **MONEY)
    lifetime_budget = models.DecimalField(null=True, blank=True, **MONEY)
    status = models.CharField(max_length=10, choices=TargetStatus.choices, blank=True)
    bid = models.DecimalField(null=True, blank=True, **MONEY)

    class Meta:
        ordering = ["scenario", "id"]
        constraints = [models.UniqueConstraint(fields=["scenario", "entity"], name="uniq_scenario_entity")]

    def __str__(self) -> str:
        return f"{self.entity} in {self.scenario}"

    def targets(self) -> dict[str, object]:
        """The fields this item sets (money as Decimal)."""
        values = {
            "daily_budget": self.daily_budget,
            "lifetime_budget": self.lifetime_budget,
            "status": self.status or None,
            "bid": self.bid,
        }
        return {k: v for k, v in values.items() if v is not None}


class GuardrailPolicy(models.Model):
    """Limits a change must respect; one per tenant, optionally one per connection overriding it.

    An empty threshold switches its rule off. ``severities`` maps a rule code to
    ``warning`` or ``critical`` (defaults in ``scenarios.services.guardrails.DEFAULT_SEVERITIES``).
    Times and dates are in the connection's time zone.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="guardrail_policies")
    connection = models.ForeignKey(
        PlatformConnection,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="guardrail_policies",
        help_text="Empty: the tenant's default policy.",
    )
    name = models.CharField(max_length=120, default="Default guardrails")
    max_increase_pct = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    max_decrease_pct = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    min_daily_budget = models.DecimalField(null=True, blank=True, **MONEY)
    max_daily_budget = models.DecimalField(null=True, blank=True, **MONEY)
    max_account_daily_spend = models.DecimalField(
        null=True, blank=True, help_text="Sum of daily budgets of the account after the change.", **MONEY
    )
    roas_floor = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    cpa_ceiling = models.DecimalField(null=True, blank=True, **MONEY)
    change_window_days = models.JSONField(
        default=list, blank=True, help_text="Allowed weekdays, 0 = Monday … 6 = Sunday; empty: every day."
    )
    change_window_start = models.TimeField(null=True, blank=True)
    change_window_end = models.TimeField(null=True, blank=True)
    blackout_dates = models.JSONField(default=list, blank=True, help_text="ISO dates (YYYY-MM-DD) with no changes.")
    max_entities_per_deploy = models.PositiveIntegerField(null=True, blank=True)
    cooldown_hours = models.PositiveIntegerField(null=True, blank=True)
    learning_phase_warning = models.BooleanField(default=True)
    learning_phase_change_pct = models.DecimalField(max_digits=7, decimal_places=2, default=20)
    shared_budget_max_campaigns = models.PositiveIntegerField(null=True, blank=True)
    require_notes = models.BooleanField(default=False)
    severities = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name_plural = "guardrail policies"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"], condition=Q(connection__isnull=True), name="one_default_policy_per_tenant"
            ),
            models.UniqueConstraint(fields=["tenant", "connection"], name="one_policy_per_connection"),
        ]

    def __str__(self) -> str:
        return self.name


class PreflightRun(models.Model):
    """One preflight: the diff document of DESIGN.md section 6, persisted.

    ``inputs`` holds the normalised items it was asked about, so a run can be repeated
    or executed in a worker without the scenario; ``payload`` is the document without its
    entities, which are ``PreflightEntity`` rows (``scenarios.services.preflight.
    preflight_document`` puts them together). A run with an ``action`` is that single
    action's one-entity preflight (the safety gate's).
    """

    class Mode(models.TextChoices):
        MANUAL = "manual", "Manual"
        ASSIST = "assist", "Assist"
        AUTOPILOT = "autopilot", "Autopilot"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="preflight_runs")
    run_id = models.CharField(max_length=64, unique=True)
    scenario = models.ForeignKey(Scenario, null=True, blank=True, on_delete=models.SET_NULL, related_name="preflights")
    action = models.ForeignKey(
        "actions.Action",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="preflights",
        help_text="Set for a single action's one-entity preflight.",
    )
    mode = models.CharField(max_length=20, choices=Mode.choices, default=Mode.MANUAL)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    plan_id = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    inputs = models.JSONField(default=list, blank=True)
    payload = models.JSONField(null=True, blank=True)
    has_critical = models.BooleanField(default=False)
    error_message = models.TextField(blank=True)
    created_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    reads_finished_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the last platform read of this preflight returned: its age is counted from here.",
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    entities_total = models.PositiveIntegerField(default=0, help_text="Entities this preflight reads.")
    entities_read = models.PositiveIntegerField(default=0, help_text="Entities read so far (progress).")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["-created_at", "-id"], name="preflight_list_idx"),  # platform staff: every tenant
        ]

    def __str__(self) -> str:
        return f"Preflight {self.run_id}"


class PreflightEntity(models.Model):
    """One entity's part of a preflight document (``PreflightRun.payload`` holds the rest:
    summary, connections, breaches), so a 10,000-entity run is read page by page.

    ``position`` is the entity's place in the document (0-based, the document's stable
    order); rows are written once, with the run's success, and never changed.
    ``breaches`` counts the breaches on the entity and its fields.
    """

    run = models.ForeignKey(PreflightRun, on_delete=models.CASCADE, related_name="entity_documents")
    position = models.PositiveIntegerField()
    entity_id = models.BigIntegerField(help_text="The mirror entity's id (kept if the entity is deleted later).")
    connection_id = models.BigIntegerField()
    change_type = models.CharField(max_length=10)
    breaches = models.PositiveIntegerField(default=0)
    document = models.JSONField()

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "position"], name="uniq_preflight_entity_position")]

    def __str__(self) -> str:
        return f"Entity {self.entity_id} of {self.run_id} (#{self.position})"


class GuardrailOverride(models.Model):
    """Permission to go ahead despite one preflight's critical breaches: asked by one
    person with a reason, approved by a second person (four eyes), both audited.

    The preflight is a scenario's (a live deploy) or a single action's (its approval,
    execution or rollback; see ``safety.gate``)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    preflight = models.ForeignKey(PreflightRun, on_delete=models.CASCADE, related_name="overrides")
    reason = models.TextField()
    requested_by = models.ForeignKey(USER, on_delete=models.PROTECT, related_name="+")
    approved_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    approved_at = models.DateTimeField(null=True, blank=True)
    rejected_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    rejected_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Override of {self.preflight.run_id}"

    @property
    def approved(self) -> bool:
        return self.approved_at is not None

    @property
    def rejected(self) -> bool:
        return self.rejected_at is not None

    @property
    def pending(self) -> bool:
        """Neither approved nor rejected: waiting for a second person."""
        return not self.approved and not self.rejected


class Deployment(models.Model):
    """A dry run or a live push of a scenario, owning one action per changed entity (live).

    ``prepared_at`` is empty while a large live deploy, dry run or retry waits for its
    worker to read its preflight and create the results (and actions)
    (``scenarios.services.deploy``); a refusal found there fails the deployment with
    ``error_message``.
    """

    class Mode(models.TextChoices):
        DRY_RUN = "dry_run", "Dry run"
        LIVE = "live", "Live"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIALLY_SUCCEEDED = "partially_succeeded", "Partially succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        # Set by the refresh once entities it changed are rolled back: all of them, or some.
        ROLLED_BACK = "rolled_back", "Rolled back"
        PARTIALLY_ROLLED_BACK = "partially_rolled_back", "Partially rolled back"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="deployments")
    scenario = models.ForeignKey(Scenario, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployments")
    preflight = models.ForeignKey(PreflightRun, on_delete=models.PROTECT, related_name="deployments")
    mode = models.CharField(max_length=10, choices=Mode.choices)
    status = models.CharField(max_length=30, choices=Status.choices, default=Status.QUEUED)
    idempotency_key = models.CharField(max_length=200)
    override = models.ForeignKey(GuardrailOverride, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    requested_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    total = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    stale = models.PositiveIntegerField(default=0)
    validated = models.PositiveIntegerField(default=0)
    blocked = models.PositiveIntegerField(default=0)
    pending = models.PositiveIntegerField(default=0)
    rolled_back = models.PositiveIntegerField(
        default=0, help_text="Entities whose change was applied and then rolled back (not counted as succeeded)."
    )
    prepared_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When its per-entity results (and, for a live deploy, its actions) were created; a large live "
        "deploy, dry run or retry does it in a worker.",
    )
    error_message = models.TextField(
        blank=True, help_text="Why the worker refused to prepare it (a live deploy, dry run or retry)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="uniq_deployment_idempotency_key"),
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="deployment_tenant_list_idx"),
            models.Index(fields=["-created_at", "-id"], name="deployment_list_idx"),  # platform staff: every tenant
        ]

    def __str__(self) -> str:
        return f"{self.get_mode_display()} deployment #{self.pk}"


class DeploymentResult(models.Model):
    """What happened to one entity in one deployment."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (no change)"
        STALE = "stale", "Stale (changed since preflight)"
        VALIDATED = "validated", "Validated (dry run)"
        BLOCKED = "blocked", "Blocked"
        ROLLED_BACK = "rolled_back", "Rolled back"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="results")
    entity = models.ForeignKey(PlatformEntity, on_delete=models.PROTECT, related_name="+")
    action = models.OneToOneField(
        "actions.Action", null=True, blank=True, on_delete=models.SET_NULL, related_name="deployment_result"
    )
    action_type = models.CharField(max_length=30, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    retryable = models.BooleanField(null=True, blank=True)
    hint = models.TextField(blank=True)

    class Meta:
        ordering = ["deployment", "id"]
        constraints = [models.UniqueConstraint(fields=["deployment", "entity"], name="uniq_result_entity")]
        # A deployment's results in order, a page at a time (its results endpoint).
        indexes = [models.Index(fields=["deployment", "id"], name="result_deployment_list_idx")]

    def __str__(self) -> str:
        return f"{self.entity} in {self.deployment}: {self.status}"
