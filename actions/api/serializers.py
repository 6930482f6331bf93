"""API representations of recommendations, actions and their execution log."""

from __future__ import annotations

from rest_framework import serializers

from actions.models import Action, ActionExecutionLog, Recommendation
from budgetradar.api import StrictSerializer
from budgetradar.inputs import RATIONALE_MAX_LENGTH, REASON_MAX_LENGTH


class EntityRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    platform = serializers.CharField(source="connection.platform")
    entity_type = serializers.CharField()
    external_id = serializers.CharField()
    name = serializers.CharField()


class RecommendationInputSerializer(StrictSerializer):
    """Shape only (and no unknown fields); meaning (entity of this tenant, params per
    action type, money) is validated by the service so the admin and the API refuse the
    same things."""

    entity = serializers.JSONField(help_text="An entity id from /api/entities/.")
    action_type = serializers.JSONField(help_text="pause_campaign, resume_campaign, adjust_budget, adjust_bid, ...")
    params = serializers.JSONField(required=False, default=dict)
    rationale = serializers.CharField(required=False, allow_blank=True, default="", max_length=RATIONALE_MAX_LENGTH)
    source = serializers.CharField(required=False, default="api", max_length=60)


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(source="error_code")
    message = serializers.CharField(source="error_message")
    retryable = serializers.BooleanField(source="error_retryable", allow_null=True)
    hint = serializers.CharField(source="error_hint")


class ActionSerializer(serializers.ModelSerializer):
    entity = EntityRefSerializer(read_only=True)
    error = serializers.SerializerMethodField()
    proposed_by = serializers.CharField(source="proposed_by.username", default=None, allow_null=True, read_only=True)
    approved_by = serializers.CharField(source="approved_by.username", default=None, allow_null=True, read_only=True)
    currency = serializers.CharField(source="connection.currency", read_only=True)

    class Meta:
        model = Action
        fields = [
            "id",
            "recommendation",
            "status",
            "action_type",
            "platform",
            "entity",
            "currency",
            "params",
            "baseline_state",
            "before_state",
            "after_state",
            "rollback_params",
            "rollback_deadline",
            "error",
            "attempts",
            "proposed_by",
            "approved_by",
            "decided_reason",
            "job",
            "created_at",
            "approved_at",
            "queued_at",
            "started_at",
            "finished_at",
            "rolled_back_at",
        ]
        read_only_fields = fields

    def get_error(self, action: Action) -> dict | None:
        if not action.error_code:
            return None
        return {
            "code": action.error_code,
            "message": action.error_message,
            "retryable": action.error_retryable,
            "hint": action.error_hint,
        }


class RecommendationSerializer(serializers.ModelSerializer):
    entity = EntityRefSerializer(read_only=True)
    action = serializers.SerializerMethodField()

    class Meta:
        model = Recommendation
        fields = ["id", "source", "entity", "action_type", "params", "rationale", "created_at", "action"]
        read_only_fields = fields

    def get_action(self, recommendation: Recommendation) -> dict | None:
        actions = recommendation.actions.all()  # prefetched
        latest = max(actions, key=lambda a: a.pk, default=None)
        return {"id": latest.pk, "status": latest.status} if latest else None


class ExecutionLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = ActionExecutionLog
        fields = [
            "id",
            "event",
            "message",
            "request",
            "response",
            "state_snapshot",
            "error",
            "actor",
            "platform_request_id",
            "created_at",
        ]
        read_only_fields = fields


class RollbackRequestSerializer(StrictSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=REASON_MAX_LENGTH)
    override_drift = serializers.BooleanField(required=False, default=False)
    idempotency_key = serializers.CharField(required=False, max_length=200)


class ExecuteRequestSerializer(StrictSerializer):
    idempotency_key = serializers.CharField(required=False, max_length=200)


class CancelQuerySerializer(serializers.Serializer):
    """``DELETE /api/actions/{id}?reason=...``: why the action is cancelled (short: it
    travels in the URL, which servers and proxies cap at a few kilobytes)."""

    reason = serializers.CharField(required=False, allow_blank=False, default="cancelled via API", max_length=200)
