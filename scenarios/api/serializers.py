"""API shapes of scenarios, their items, overrides, guardrail policies and request bodies.

Request serializers check shape only (and refuse unknown fields by name); meaning (entities
of this tenant, money, statuses) is validated by the services so the admin, the API and the
command refuse the same things.
"""

from __future__ import annotations

from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from budgetradar.api import IdempotencyKeySerializer, ReasonSerializer, StrictSerializer
from budgetradar.inputs import NOTES_MAX_LENGTH
from platforms.models import PlatformConnection
from platforms.money import quantize
from scenarios.models import (
    Deployment,
    DeploymentResult,
    GuardrailOverride,
    GuardrailPolicy,
    PreflightRun,
    Scenario,
    ScenarioItem,
)
from scenarios.selectors import APPROVED, PENDING, REJECTED, override_state
from scenarios.services.policies import WRITABLE_FIELDS


class ItemEntitySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    platform = serializers.CharField(source="connection.platform")
    entity_type = serializers.CharField()
    external_id = serializers.CharField()
    name = serializers.CharField()
    currency = serializers.CharField(source="connection.currency")


class ScenarioItemSerializer(serializers.ModelSerializer):
    entity = ItemEntitySerializer(read_only=True)
    status = serializers.ChoiceField(
        choices=ScenarioItem.TargetStatus.choices, allow_blank=True, read_only=True, help_text='"" leaves it as it is.'
    )
    daily_budget = serializers.SerializerMethodField()
    lifetime_budget = serializers.SerializerMethodField()
    bid = serializers.SerializerMethodField()

    class Meta:
        model = ScenarioItem
        fields = ["id", "entity", "daily_budget", "lifetime_budget", "status", "bid"]
        read_only_fields = fields

    def _money(self, item: ScenarioItem, value: Decimal | None) -> str | None:
        return None if value is None else str(quantize(value, item.entity.connection.currency))

    def get_daily_budget(self, item: ScenarioItem) -> str | None:
        return self._money(item, item.daily_budget)

    def get_lifetime_budget(self, item: ScenarioItem) -> str | None:
        return self._money(item, item.lifetime_budget)

    def get_bid(self, item: ScenarioItem) -> str | None:
        return self._money(item, item.bid)


class ScenarioSerializer(serializers.ModelSerializer):
    items = ScenarioItemSerializer(many=True, read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True, read_only=True)

    class Meta:
        model = Scenario
        fields = [
            "id",
            "name",
            "status",
            "source_plan_id",
            "notes",
            "created_by",
            "created_at",
            "updated_at",
            "items",
        ]
        read_only_fields = fields


class ScenarioCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=NOTES_MAX_LENGTH)
    source_plan_id = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    items = serializers.JSONField(
        required=False,
        default=list,
        help_text='[{"entity": 17, "daily_budget": "120.00"}, {"entity": 18, "status": "paused"}]; '
        "entity is an id from /api/entities/, money a decimal string in the account's currency.",
    )


class ScenarioPatchSerializer(StrictSerializer):
    name = serializers.CharField(required=False, max_length=200)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=NOTES_MAX_LENGTH)
    items = serializers.JSONField(required=False, help_text="Replaces every item of the scenario.")


class ScenarioImportSerializer(StrictSerializer):
    file = serializers.FileField(help_text="A proposed push bundle (.json) or a CSV (platform,entity_id,field,value).")
    format = serializers.ChoiceField(choices=["bundle", "csv"], required=False, help_text="Default: from the name.")
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=NOTES_MAX_LENGTH)


class PreflightRequestSerializer(StrictSerializer):
    mode = serializers.ChoiceField(choices=PreflightRun.Mode.choices, required=False, default="manual")


class DeployRequestSerializer(StrictSerializer):
    mode = serializers.ChoiceField(choices=Deployment.Mode.choices)
    idempotency_key = serializers.CharField(
        required=False, max_length=200, help_text="Or the Idempotency-Key header; one of them is required."
    )
    override_id = serializers.IntegerField(required=False, allow_null=True, default=None)


class DeploymentRollbackSerializer(ReasonSerializer, IdempotencyKeySerializer):
    """``POST /api/deployments/{id}/rollback``: a reason and an optional idempotency key."""


class RetryFailedSerializer(IdempotencyKeySerializer):
    """``POST /api/deployments/{id}/retry-failed``: only an optional idempotency key."""


class OverrideSerializer(serializers.ModelSerializer):
    preflight = serializers.CharField(source="preflight.run_id", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True)
    approved_by = serializers.CharField(source="approved_by.username", default=None, allow_null=True, read_only=True)
    approved = serializers.BooleanField(read_only=True)
    state = serializers.SerializerMethodField(
        help_text="pending (awaiting a second approver), approved or rejected: the state the admin shows."
    )
    rejected_by = serializers.CharField(source="rejected_by.username", default=None, allow_null=True, read_only=True)

    class Meta:
        model = GuardrailOverride
        fields = [
            "id",
            "preflight",
            "reason",
            "state",
            "requested_by",
            "approved_by",
            "approved",
            "approved_at",
            "rejected_by",
            "rejected_at",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=[PENDING, APPROVED, REJECTED]))
    def get_state(self, override: GuardrailOverride) -> str:
        return override_state(override)


# Answers built by services (dicts); these serializers document their shape in the
# schema, and schemathesis checks every answer against them (.ci/api_fuzz).


class DeploymentCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    skipped = serializers.IntegerField()
    stale = serializers.IntegerField()
    validated = serializers.IntegerField()
    blocked = serializers.IntegerField()
    pending = serializers.IntegerField()
    rolled_back = serializers.IntegerField(help_text="Applied, then rolled back (not counted as succeeded).")


class ResultEntitySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    platform = serializers.CharField()
    entity_type = serializers.CharField()
    external_id = serializers.CharField()
    name = serializers.CharField()


class DeploymentResultSerializer(serializers.Serializer):
    entity = ResultEntitySerializer()
    action = serializers.IntegerField(allow_null=True)
    action_type = serializers.CharField(allow_blank=True)
    status = serializers.ChoiceField(choices=DeploymentResult.Status.choices)
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)
    error_code = serializers.CharField(allow_blank=True)
    error_message = serializers.CharField(allow_blank=True)
    retryable = serializers.BooleanField(allow_null=True)
    hint = serializers.CharField(allow_blank=True)


class DeploymentSerializer(serializers.Serializer):
    """A deployment as ``deployment_serialize`` answers it (lists leave out ``results``)."""

    id = serializers.IntegerField()
    mode = serializers.ChoiceField(choices=Deployment.Mode.choices)
    status = serializers.ChoiceField(choices=Deployment.Status.choices)
    scenario = serializers.IntegerField(allow_null=True)
    preflight = serializers.CharField(help_text="The preflight run id the deployment executes.")
    idempotency_key = serializers.CharField()
    override = serializers.IntegerField(allow_null=True)
    retry_of = serializers.IntegerField(allow_null=True)
    requested_by = serializers.CharField(allow_null=True)
    counts = DeploymentCountsSerializer()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    prepared_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When its actions and results were created; empty while a large live deploy waits for its worker.",
    )
    error = serializers.CharField(allow_blank=True, help_text="Why the worker refused to prepare it (then failed).")
    progress_url = serializers.CharField(help_text="Poll GET /api/deployments/{id} for progress.")
    results = DeploymentResultSerializer(many=True, required=False, help_text="Per entity; not in lists.")


class PreflightProgressSerializer(serializers.Serializer):
    entities_total = serializers.IntegerField()
    entities_read = serializers.IntegerField(help_text="Grows after each batch of entities read.")
    started_at = serializers.DateTimeField(allow_null=True)
    reads_finished_at = serializers.DateTimeField(
        allow_null=True, help_text="The preflight's age for a live deploy is counted from here."
    )
    finished_at = serializers.DateTimeField(allow_null=True)
    url = serializers.CharField(help_text="GET /api/preflights/{run_id}: poll it while queued or running.")


class PreflightDocumentSerializer(serializers.Serializer):
    """The preflight diff document (DESIGN.md section 6) with the run's status; while a
    run is queued or running only the run fields are known, after a failure ``error``."""

    run_id = serializers.CharField()
    status = serializers.ChoiceField(choices=PreflightRun.Status.choices)
    tenant = serializers.CharField()
    generation_mode = serializers.CharField()
    source_plan_id = serializers.CharField(allow_blank=True)
    notes = serializers.CharField(allow_blank=True)
    generated_at = serializers.CharField(required=False)
    forecast_model = serializers.JSONField(required=False)
    connections = serializers.ListField(child=serializers.DictField(), required=False)
    entities = serializers.ListField(
        child=serializers.DictField(), required=False, help_text="Per entity: before, after, deltas, breaches."
    )
    summary = serializers.DictField(required=False)
    breaches = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="Every breach; on GET /api/preflights/{run_id} only the run's own (each entity's are on its page).",
    )
    breaches_total = serializers.IntegerField(required=False, help_text="How many breaches the run found in all.")
    breach_counts = serializers.DictField(
        child=serializers.IntegerField(),
        required=False,
        help_text="GET /api/preflights/{run_id}: every breach by severity.",
    )
    has_critical = serializers.BooleanField(required=False)
    error = serializers.CharField(required=False, allow_blank=True)
    progress = PreflightProgressSerializer()
    entities_url = serializers.CharField(help_text="GET it (with ?cursor=) for the entities page by page.")


class PreflightEntitiesQuerySerializer(serializers.Serializer):
    cursor = serializers.IntegerField(
        required=False, min_value=0, default=0, help_text="`next_cursor` of the previous page; 0 or absent: the first."
    )
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=100)


class PreflightEntitiesPageSerializer(serializers.Serializer):
    """One page of a preflight document's entities, in document order."""

    run_id = serializers.CharField()
    status = serializers.ChoiceField(choices=PreflightRun.Status.choices)
    results = serializers.ListField(child=serializers.DictField(), help_text="Per entity: before, after, breaches.")
    next_cursor = serializers.IntegerField(allow_null=True, help_text="Null after the last page.")
    next = serializers.CharField(allow_null=True, help_text="The next page's URL, null after the last page.")


class AdPushQueuedSerializer(serializers.Serializer):
    run_id = serializers.CharField(help_text="Poll GET /api/tenants/{tenant_id}/ad-pushes/{run_id}.")
    status = serializers.ChoiceField(choices=PreflightRun.Status.choices)


class ScenarioJsonImportQuerySerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=200, help_text="For a JSON body: the scenario's name.")


class AdPushDryRunQuerySerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=PreflightRun.Mode.choices, required=False)
    plan_id = serializers.CharField(required=False, max_length=200)


class GuardrailPolicySerializer(serializers.ModelSerializer):
    """A guardrail policy; on write, shape only (types, digits): ``scenarios.services.policies``
    judges meaning (ranges, weekdays, dates, severities, one policy per scope)."""

    connection = serializers.PrimaryKeyRelatedField(
        queryset=PlatformConnection.objects.none(),
        allow_null=True,
        required=False,
        help_text="A connection id from /api/connections/; empty: the tenant's default policy.",
    )
    change_window_days = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=6),
        required=False,
        help_text="Allowed weekdays, 0 = Monday … 6 = Sunday; empty: every day.",
    )
    blackout_dates = serializers.ListField(
        child=serializers.DateField(), required=False, help_text="ISO dates (YYYY-MM-DD) with no changes."
    )
    severities = serializers.DictField(
        child=serializers.ChoiceField(choices=["warning", "critical", "off"]),
        required=False,
        help_text="Rule code -> warning, critical or off (defaults: the rule's own).",
    )
    applies_to = serializers.SerializerMethodField()

    class Meta:
        model = GuardrailPolicy
        fields = ["id", "applies_to", *WRITABLE_FIELDS, "updated_at"]
        read_only_fields = ["id", "applies_to", "updated_at"]

    def __init__(self, *args, tenant=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if tenant is not None:
            self.fields["connection"].queryset = PlatformConnection.objects.filter(tenant=tenant).defer("credentials")

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            read_only = sorted(name for name in data if name in self.fields and self.fields[name].read_only)
            if unknown or read_only:
                raise serializers.ValidationError(
                    {name: ["Unknown field."] for name in unknown} | {name: ["Read-only field."] for name in read_only}
                )
        values = super().to_internal_value(data)
        if "blackout_dates" in values:
            values["blackout_dates"] = sorted({d.isoformat() for d in values["blackout_dates"]})
        return values

    def get_applies_to(self, policy: GuardrailPolicy) -> str:
        return f"connection {policy.connection.name}" if policy.connection_id else "every connection (tenant default)"
