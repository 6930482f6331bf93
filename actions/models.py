"""Recommendations, actions and their lifecycle, execution jobs and the execution log."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_fsm import ConcurrentTransitionMixin, FSMField, FSMFieldMixin, transition
from simple_history.models import HistoricalRecords

from budgetradar.models import Tenant
from platforms.models import Platform, PlatformConnection, PlatformEntity


class ActionType(models.TextChoices):
    PAUSE_CAMPAIGN = "pause_campaign", "Pause campaign"
    RESUME_CAMPAIGN = "resume_campaign", "Resume campaign"
    ADJUST_BUDGET = "adjust_budget", "Adjust budget"
    ADJUST_BID = "adjust_bid", "Adjust bid"
    UPDATE_TARGETING = "update_targeting", "Update targeting"
    UPDATE_SCHEDULE = "update_schedule", "Update schedule"
    SET_VALUES = "set_values", "Apply scenario values"


class ActionStatus(models.TextChoices):
    PENDING_APPROVAL = "pending_approval", "Pending approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    QUEUED = "queued", "Queued"
    EXECUTING = "executing", "Executing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    PARTIALLY_EXECUTED = "partially_executed", "Partially executed"
    ROLLING_BACK = "rolling_back", "Rolling back"
    ROLLED_BACK = "rolled_back", "Rolled back"
    ROLLBACK_FAILED = "rollback_failed", "Rollback failed"


S = ActionStatus
IN_FLIGHT = [S.QUEUED, S.EXECUTING]
# A worker moves these on without a person: their pages refresh until the action settles.
# (Wider than IN_FLIGHT, which is the one-per-entity constraint and leaves rollbacks out.)
IN_MOTION = [S.QUEUED, S.EXECUTING, S.ROLLING_BACK]
CANCELLABLE = [S.PENDING_APPROVAL, S.APPROVED, S.QUEUED]
ROLLBACKABLE = [S.SUCCEEDED, S.PARTIALLY_EXECUTED]


class Recommendation(models.Model):
    """A proposed change from an optimizer or a person; its action carries the lifecycle."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="recommendations")
    source = models.CharField(
        max_length=60, default="manual", help_text="Who proposed it: an optimizer name or 'manual'."
    )
    entity = models.ForeignKey(PlatformEntity, on_delete=models.PROTECT, related_name="recommendations")
    action_type = models.CharField(max_length=30, choices=ActionType.choices)
    params = models.JSONField(default=dict, blank=True)
    rationale = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # The default ordering per tenant, id included: the keyset pages of the list.
        # The default ordering per tenant, and across tenants for platform staff's lists.
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="recommendation_tenant_list_idx"),
            models.Index(fields=["-created_at", "-id"], name="recommendation_list_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_type_display()} on {self.entity.name}"


# The foreign keys of an action that its history rows are never looked up by (simple-history
# indexes every key by default; its keys have no constraints, so nothing cascades through them).
HISTORY_UNREAD_KEYS = [
    "tenant",
    "recommendation",
    "connection",
    "entity",
    "proposed_by",
    "approved_by",
    "job",
    "deployment",
    "rollback_requested_by",
]


class Action(ConcurrentTransitionMixin, models.Model):
    """One change to one entity, from proposal to verified execution and rollback.

    Transition methods only change state and record facts; services perform side effects
    after commit. ``ConcurrentTransitionMixin`` makes a save fail if another process moved
    the action's state meanwhile, so two workers cannot both act on it. The database
    allows at most one queued/executing action per (tenant, platform, entity).
    """

    # Indexed by the Meta.indexes below, not one index per foreign key (see there).
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="actions", db_index=False)
    recommendation = models.ForeignKey(
        Recommendation, null=True, blank=True, on_delete=models.SET_NULL, related_name="actions", db_index=False
    )
    connection = models.ForeignKey(PlatformConnection, on_delete=models.PROTECT, related_name="actions", db_index=False)
    entity = models.ForeignKey(PlatformEntity, on_delete=models.PROTECT, related_name="actions")
    platform = models.CharField(max_length=20, choices=Platform.choices)
    action_type = models.CharField(max_length=30, choices=ActionType.choices)
    params = models.JSONField(default=dict, blank=True)
    status = FSMField(default=S.PENDING_APPROVAL, choices=ActionStatus.choices, protected=True)

    baseline_state = models.JSONField(null=True, blank=True, help_text="Live values the approval or preflight saw.")
    before_state = models.JSONField(null=True, blank=True)
    after_state = models.JSONField(null=True, blank=True)
    rollback_params = models.JSONField(null=True, blank=True)
    rollback_deadline = models.DateTimeField(null=True, blank=True)

    idempotency_key = models.CharField(max_length=120, blank=True)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Times a worker took it up (execution and rollback attempts together)."
    )
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Approved: when BudgetRadar runs it (empty: it waits for someone to press Execute). "
        "Executing or rolling back: when the reconciler tries again to read the platform.",
    )
    wait_reason = models.CharField(
        max_length=500, blank=True, help_text="Why it waits: a change window, a rate limit, an unreadable platform."
    )
    lease_owner = models.CharField(
        max_length=120, blank=True, help_text="The worker, rollback or reconciler that holds the lease."
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    reconcile_attempts = models.PositiveIntegerField(
        default=0, help_text="Reads of the platform the reconciler has tried for the current attempt."
    )
    ambiguous_attempts = models.PositiveIntegerField(
        default=0,
        help_text="Attempts whose request may have reached the platform although its effect was not found; "
        "after one, the next such attempt fails for a person to look at.",
    )
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    error_retryable = models.BooleanField(null=True, blank=True)
    error_hint = models.TextField(blank=True)

    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_reason = models.TextField(blank=True, help_text="Why it was rejected or cancelled.")
    job = models.ForeignKey("ActionJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="actions")
    deployment = models.ForeignKey(
        "scenarios.Deployment", null=True, blank=True, on_delete=models.PROTECT, related_name="actions"
    )
    rollback_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    rollback_reason = models.TextField(blank=True)
    rollback_override_drift = models.BooleanField(
        default=False, help_text="An admin chose to roll back even though the entity changed since execution."
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)

    # Lease renewals are bookkeeping, not changes a person reviews. History rows are read
    # per action (its history page) and by date, never by these keys: indexing them would
    # cost each of the three history rows an execution writes an entry per key, for nothing.
    history = HistoricalRecords(
        excluded_fields=["lease_expires_at", "updated_at"],
        no_db_index=HISTORY_UNREAD_KEYS,
    )

    @property
    def state_fields(self) -> tuple[FSMFieldMixin, ...]:
        # django-fsm-2 finds them by testing every field of the model, on each instance it
        # builds and after each transition; they are fixed (a unit loads 10,000 actions).
        return _ACTION_STATE_FIELDS

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="executing") | ~Q(lease_owner=""),
                name="executing_action_has_lease_owner",
                violation_error_message="An executing action must be held by a lease.",
            ),
            models.UniqueConstraint(
                fields=["tenant", "platform", "entity"],
                condition=Q(status__in=IN_FLIGHT),
                name="one_in_flight_action_per_entity",
            ),
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="uniq_action_idempotency_key",
            ),
        ]
        # Every index costs each non-HOT row write an entry (the engine writes each action's
        # row four times), so none is kept that another one's leading columns already serve:
        # the tenant and (tenant, status) lookups use the list indexes' prefixes, the
        # connection lookups (connection, status), the status lookups across tenants
        # (status, connection), and the foreign keys that are mostly empty (recommendation,
        # rollback requester) are indexed only where set.
        indexes = [
            # The default list ordering, per tenant, and the status filter with it (lists
            # read one page from these indexes instead of sorting every row; see
            # budgetradar.api.KeysetPagination).
            models.Index(fields=["tenant", "-created_at", "-id"], name="action_tenant_list_idx"),
            models.Index(fields=["-created_at", "-id"], name="action_list_idx"),  # platform staff: every tenant
            models.Index(fields=["tenant", "status", "-created_at", "-id"], name="action_tenant_status_list_idx"),
            models.Index(fields=["connection", "status"], name="action_connection_status_idx"),
            models.Index(fields=["status", "connection"]),  # every tenant's by status (platform staff)
            models.Index(fields=["tenant", "approved_at"]),
            models.Index(
                fields=["recommendation"], name="action_recommendation_idx", condition=Q(recommendation__isnull=False)
            ),
            models.Index(
                fields=["rollback_requested_by"],
                name="action_rollback_requester_idx",
                condition=Q(rollback_requested_by__isnull=False),
            ),
            # The unsettled rows, keyed on what a lease renewal leaves alone, so that renewing
            # and fencing (lease_expires_at, before_state) change no indexed column and
            # PostgreSQL can write them as heap-only updates (no index entries; the table's
            # fill factor, migration 0011, leaves room on each page). The price: the
            # reconciler and the reconciler-lag monitor read every unsettled row (all the
            # work in flight: up to a unit per running worker) and sort them by expiry.
            models.Index(
                fields=["id"], name="action_unsettled_idx", condition=Q(status__in=["executing", "rolling_back"])
            ),
            models.Index(fields=["next_attempt_at"], name="action_approved_due_idx", condition=Q(status="approved")),
            models.Index(fields=["lease_owner"], name="action_lease_owner_idx", condition=~Q(lease_owner="")),
        ]
        permissions = [
            ("approve_action", "Can approve actions"),
            ("reject_action", "Can reject actions"),
            ("cancel_action", "Can cancel actions"),
            ("execute_action", "Can execute actions"),
            ("rollback_action", "Can roll back actions"),
            ("override_rollback_drift", "Can roll back over a drifted entity"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_action_type_display()} on {self.entity.name}"

    # Transitions: state changes and facts only. -----------------------------------------
    # Only actions.services.settlement calls these (it also writes history, the execution
    # log and outbox events in the same transaction); see that module.

    @transition(field=status, source=[S.PENDING_APPROVAL, S.FAILED], target=S.APPROVED)
    def approve(self, *, by, at, next_attempt_at=None, wait_reason: str = "", baseline_state=None) -> None:
        """``next_attempt_at`` None: it waits for someone to press Execute. ``baseline_state``:
        the live values the approver saw (kept for the drift check at execution)."""
        if baseline_state is not None:
            self.baseline_state = baseline_state
        self.approved_by = by
        self.approved_at = at
        self.decided_reason = ""
        self.next_attempt_at = next_attempt_at
        self.wait_reason = wait_reason

    @transition(field=status, source=S.PENDING_APPROVAL, target=S.REJECTED)
    def reject(self, *, reason: str, at) -> None:
        self.decided_reason = reason
        self.finished_at = at

    @transition(field=status, source=CANCELLABLE, target=S.CANCELLED)
    def cancel(self, *, reason: str, at) -> None:
        self.decided_reason = reason
        self.finished_at = at
        self.next_attempt_at = None

    @transition(field=status, source=S.APPROVED, target=S.QUEUED)
    def enqueue(self, *, job, at) -> None:
        self.job = job
        self.queued_at = at
        self.wait_reason = ""

    @transition(field=status, source=S.QUEUED, target=S.EXECUTING)
    def start(self, *, at, lease_owner: str, lease_expires_at) -> None:
        self.started_at = at
        self.attempts += 1
        self.lease_owner, self.lease_expires_at = lease_owner, lease_expires_at
        self.next_attempt_at, self.wait_reason, self.reconcile_attempts = None, "", 0
        self.clear_error()

    @transition(field=status, source=S.EXECUTING, target=S.SUCCEEDED)
    def succeed(self, *, at, after_state, rollback_params=None, rollback_deadline=None) -> None:
        self.finished_at = at
        self.after_state = after_state
        self._keep_rollback(rollback_params, rollback_deadline)
        self.clear_error()
        self._release_lease()

    @transition(field=status, source=S.EXECUTING, target=S.FAILED)
    def fail(self, *, error: dict, at, after_state=None) -> None:
        self.set_error(**_error_fields(error))
        self.finished_at = at
        if after_state is not None:
            self.after_state = after_state
        self._release_lease()

    @transition(field=status, source=S.EXECUTING, target=S.PARTIALLY_EXECUTED)
    def partially_execute(self, *, error: dict, at, after_state, rollback_params, rollback_deadline) -> None:
        self.set_error(**_error_fields(error))
        self.finished_at = at
        self.after_state = after_state
        self._keep_rollback(rollback_params, rollback_deadline)
        self._release_lease()

    @transition(field=status, source=S.EXECUTING, target=S.APPROVED)
    def release(self, *, reason: str, next_attempt_at, ambiguous: bool = False) -> None:
        """This attempt applied nothing (a dead worker, a rate-limit block, an unreadable
        platform before sending): it runs again at ``next_attempt_at``. ``ambiguous``: its
        request may have reached the platform although the platform shows no effect."""
        self.job = None
        if ambiguous:
            self.ambiguous_attempts += 1
        self.wait_reason = reason
        self.next_attempt_at = next_attempt_at
        self._release_lease()

    @transition(field=status, source=[*ROLLBACKABLE, S.ROLLBACK_FAILED], target=S.ROLLING_BACK)
    def start_rollback(self, *, by, reason: str, override_drift: bool, at) -> None:
        """Also from rollback_failed: an admin may retry, e.g. overriding a drift refusal."""
        self.rollback_requested_by = by
        self.rollback_reason = reason
        self.rollback_override_drift = override_drift
        self.job = None
        self.next_attempt_at, self.wait_reason, self.reconcile_attempts = at, "", 0
        self.clear_error()
        self._release_lease()

    @transition(field=status, source=S.ROLLING_BACK, target=S.ROLLED_BACK)
    def finish_rollback(self, *, at, after_state=None) -> None:
        self.rolled_back_at = at
        self.clear_error()
        self._release_lease()

    @transition(field=status, source=S.ROLLING_BACK, target=S.ROLLBACK_FAILED)
    def fail_rollback(self, *, error: dict, at=None) -> None:
        self.set_error(**_error_fields(error))
        self._release_lease()

        # Helpers --------------------------------------------------------------------------

    def set_error(self, *, code: str, message: str, retryable: bool, hint: str) -> None:
        self.error_code, self.error_message, self.error_retryable, self.error_hint = code, message, retryable, hint

    def clear_error(self) -> None:
        self.set_error(code="", message="", retryable=None, hint="")

    def _release_lease(self) -> None:
        self.lease_owner, self.lease_expires_at = "", None

    def _keep_rollback(self, rollback_params, rollback_deadline) -> None:
        if rollback_params:
            self.rollback_params, self.rollback_deadline = rollback_params, rollback_deadline


_ACTION_STATE_FIELDS = tuple(f for f in Action._meta.fields if isinstance(f, FSMFieldMixin))


def _error_fields(error: dict) -> dict:
    """The four stored error fields from an error payload (PlatformError.as_dict() shape)."""
    return {key: error.get(key) for key in ("code", "message", "retryable", "hint")} | {
        "message": error.get("message") or "",
        "hint": error.get("hint") or "",
        "code": error.get("code") or "",
    }


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded", "Partially succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_JOB_STATUSES = [JobStatus.QUEUED, JobStatus.RUNNING]


class JobKind(models.TextChoices):
    EXECUTE = "execute", "Execute"
    ROLLBACK = "rollback", "Roll back"


class ActionJob(models.Model):
    """A batch of actions on one connection, run by one worker at a time.

    The database allows one queued or running job per (tenant, connection); workers
    claim a job with a compare-and-set on its status.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="action_jobs")
    connection = models.ForeignKey(PlatformConnection, on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=10, choices=JobKind.choices, default=JobKind.EXECUTE)
    status = models.CharField(max_length=30, choices=JobStatus.choices, default=JobStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    round_trips = models.PositiveIntegerField(default=0, help_text="Platform requests this job sent.")
    parked = models.PositiveIntegerField(default=0, help_text="Actions sent back to wait for a later attempt.")
    claimed_by = models.CharField(max_length=120, blank=True, help_text="The worker that last ran it.")
    lease_owner = models.CharField(max_length=120, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    error_summary = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "connection"],
                condition=Q(status__in=ACTIVE_JOB_STATUSES),
                name="one_active_job_per_connection",
            ),
        ]
        # The default ordering, per tenant and across tenants (platform staff's list).
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="job_tenant_list_idx"),
            models.Index(fields=["-created_at", "-id"], name="job_list_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} job #{self.pk} on {self.connection.name} ({self.status})"


class LogEvent(models.TextChoices):
    STATE_CAPTURED = "state_captured", "Before-state captured"
    REQUEST_SENT = "request_sent", "Request sent"
    RESPONSE_RECEIVED = "response_received", "Response received"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    STALE = "stale", "Stale (drift detected)"
    RECONCILED = "reconciled", "Reconciled from platform"
    RETRYING = "retrying", "Waiting to retry"
    OUTCOME_CHECKED = "outcome_checked", "Outcome checked by reading the platform"
    PARKED = "parked", "Waiting for a later attempt"
    AWAITING_RECONCILIATION = "awaiting_reconciliation", "Awaiting reconciliation"
    ROLLBACK_STARTED = "rollback_started", "Rollback started"
    ROLLBACK_SUCCEEDED = "rollback_succeeded", "Rollback succeeded"
    ROLLBACK_FAILED = "rollback_failed", "Rollback failed"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"


class AppendOnlyError(Exception):
    """Execution logs are evidence: they are never updated or deleted."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Execution log rows cannot be updated.")

    def delete(self):
        raise AppendOnlyError("Execution log rows cannot be deleted.")


class ActionExecutionLog(models.Model):
    """An append-only record of one event in an action's life (platform calls included).

    Saving an existing row or deleting raises ``AppendOnlyError``; on PostgreSQL a
    trigger also rejects UPDATE and DELETE, so not even raw SQL can rewrite history.
    Secrets never enter ``request``/``response`` (executors return sanitised payloads).
    """

    # tenant, action and created_at lead the list indexes below, which serve their lookups.
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+", db_index=False)
    action = models.ForeignKey(
        Action, null=True, blank=True, on_delete=models.PROTECT, related_name="logs", db_index=False
    )
    job = models.ForeignKey(ActionJob, null=True, blank=True, on_delete=models.PROTECT, related_name="logs")
    event = models.CharField(max_length=30, choices=LogEvent.choices)
    message = models.TextField(blank=True)
    request = models.JSONField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True)
    state_snapshot = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    actor = models.CharField(max_length=150, blank=True, help_text="User name, or worker:<id> for background work.")
    platform_request_id = models.CharField(max_length=200, blank=True)
    attempt = models.PositiveIntegerField(
        null=True, blank=True, help_text="The action's attempt this event belongs to (Action.attempts then)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # One action's log in order (its page and API), the tenant's log (the admin
            # list) and that list filtered by event: each read as a range of one index.
            models.Index(fields=["action", "created_at", "id"], name="log_action_list_idx"),
            models.Index(fields=["tenant", "created_at", "id"], name="log_tenant_list_idx"),
            models.Index(fields=["created_at", "id"], name="log_list_idx"),  # platform staff: every tenant
            models.Index(fields=["tenant", "event", "created_at", "id"], name="log_tenant_event_list_idx"),
        ]
        verbose_name = "execution log entry"
        verbose_name_plural = "execution log"

    def __str__(self) -> str:
        return f"{self.get_event_display()} ({self.created_at:%Y-%m-%d %H:%M:%S})"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise AppendOnlyError("Execution log rows cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Execution log rows cannot be deleted.")
