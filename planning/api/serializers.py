"""Serializers of the planning API: shapes only; every rule is in the services."""

from __future__ import annotations

from rest_framework import serializers

from planning.models import AutomationSettings, PlannerRun


class AutomationSettingsSerializer(serializers.ModelSerializer):
    connection_name = serializers.CharField(source="connection.name", read_only=True)
    time_zone = serializers.CharField(source="connection.time_zone", read_only=True)
    consent_by = serializers.CharField(source="consent_by.username", read_only=True, default=None)

    class Meta:
        model = AutomationSettings
        fields = [
            "id",
            "connection",
            "connection_name",
            "time_zone",
            "mode",
            "objective",
            "budget_mode",
            "total_daily_budget",
            "budget_change_pct",
            "target_cpa",
            "target_roas",
            "low_confidence_policy",
            "lookback_days",
            "rollout_step",
            "rollout_unit",
            "rollout_weekdays",
            "holdout_share",
            "daily_push_cap",
            "push_window_start",
            "push_window_end",
            "consent_by",
            "consent_at",
            "consent_reason",
            "consecutive_failed_runs",
            "breaker_open",
            "breaker_opened_at",
            "breaker_reason",
            "updated_at",
        ]
        read_only_fields = fields


class AutomationSettingsPatchSerializer(serializers.Serializer):
    """Any editable field (validated by the service) plus the reasons the change records."""

    changes = serializers.DictField(help_text='Field -> new value, e.g. {"mode": "assist"}.')
    consent_reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=1000)


class PlannerRunSerializer(serializers.ModelSerializer):
    connection_name = serializers.CharField(source="connection.name", read_only=True)

    class Meta:
        model = PlannerRun
        fields = [
            "id",
            "connection",
            "connection_name",
            "trigger",
            "status",
            "local_date",
            "attempts",
            "next_attempt_at",
            "started_at",
            "finished_at",
            "mode",
            "outcome",
            "outcome_message",
            "fallback_level",
            "date_from",
            "date_to",
            "data_hash",
            "summary",
            "scenario",
            "deployment",
            "error_message",
            "external_source",
            "created_at",
        ]
        read_only_fields = fields


class PlannerRunDetailSerializer(PlannerRunSerializer):
    preflight = serializers.CharField(source="preflight.run_id", read_only=True, default=None)

    class Meta(PlannerRunSerializer.Meta):
        fields = [*PlannerRunSerializer.Meta.fields, "preflight", "reasoning", "shadow"]
        read_only_fields = fields


class RunNowSerializer(serializers.Serializer):
    connection = serializers.IntegerField()
    source = serializers.ChoiceField(
        choices=["planner", "items", "bundle", "robyn", "meridian"],
        default="planner",
        help_text="planner: the curves; the others: an external plan taken through the same modes and gate.",
    )
    items = serializers.ListField(child=serializers.DictField(), required=False)
    bundle = serializers.JSONField(required=False)
    csv = serializers.CharField(required=False, max_length=5_000_000)
    mapping = serializers.DictField(required=False)
    days = serializers.IntegerField(required=False)
