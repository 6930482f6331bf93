"""API representations of recommendations, actions and their execution log."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from actions.models import Action, ActionExecutionLog, Recommendation
from budgetradar.api import StrictSerializer
from budgetradar.inputs import RATIONALE_MAX_LENGTH, REASON_MAX_LENGTH
from safety.gate import latest_preflight, preflight_summary
from safety.schedule import execution_mode_of, when_it_runs
from scenarios.services.guardrails import policy_for


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
    """An action with its latest one-entity preflight (``preflight``) and what its
    execution policy says will happen and when (``execution``).

    Querysets must prefetch ``preflights__overrides`` and select ``connection__tenant``;
    guardrail policies are looked up once per connection per response.
    """

    entity = EntityRefSerializer(read_only=True)
    error = serializers.SerializerMethodField()
    preflight = serializers.SerializerMethodField()
    execution = serializers.SerializerMethodField()
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
            "preflight",
            "execution",
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

    def get_preflight(self, action: Action) -> dict | None:
        return preflight_summary(latest_preflight(action))

    def get_execution(self, action: Action) -> dict:
        """``mode`` and its ``source``, ``next_attempt_at``, ``wait_reason`` and ``summary``:
        the sentence the action page shows (``will run at 14:00 Europe/Berlin …``)."""
        policies = self.context.setdefault("guardrail_policies", {})
        if action.connection_id not in policies:
            policies[action.connection_id] = policy_for(action.tenant, action.connection)
        mode, source = execution_mode_of(action.connection)
        return {
            "mode": mode,
            "source": source,
            "next_attempt_at": serializers.DateTimeField().to_representation(action.next_attempt_at)
            if action.next_attempt_at
            else None,
            "wait_reason": action.wait_reason,
            "summary": when_it_runs(action, policy=policies[action.connection_id], now=timezone.now()),
        }

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


class OverrideRequestSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why the critical breaches should go through.")


class RollbackFieldPreviewSerializer(serializers.Serializer):
    """One field a rollback restores (money values as decimal strings; ``*_text`` as the admin shows them)."""

    field = serializers.CharField()
    label = serializers.CharField()
    live = serializers.JSONField(allow_null=True, help_text="The live value read (or the last known one).")
    live_text = serializers.CharField(help_text="``450.00 EUR``; a dash when unknown.")
    restore = serializers.JSONField(allow_null=True, help_text="The value the rollback writes back.")
    restore_text = serializers.CharField()
    set_by_budgetradar = serializers.JSONField(allow_null=True, help_text="The value the action set and read back.")
    drifted = serializers.BooleanField()


class RollbackPreviewSerializer(serializers.Serializer):
    """``GET /api/actions/{id}/rollback-preview``: what rolling the action back would do now,
    in the words of the admin's rollback confirmation. Reading it writes nothing."""

    action = serializers.IntegerField()
    possible = serializers.BooleanField(help_text="Whether a rollback request would be accepted now.")
    refusal = serializers.CharField(allow_null=True, help_text="Why not, when it would not; null otherwise.")
    deadline = serializers.CharField(
        help_text="Until when the rollback instructions are valid, or what became of them."
    )
    change = serializers.CharField(help_text="``Daily budget: live now 450.00 EUR → will restore 70.00 EUR``.")
    changes = RollbackFieldPreviewSerializer(many=True)
    live_read_at = serializers.DateTimeField(
        allow_null=True, help_text="When the live value was read; null when the values are the last known ones."
    )
    live_found = serializers.BooleanField(help_text="False when the platform no longer has the entity.")
    drift_warning = serializers.CharField(allow_null=True, help_text="Why the rollback will be refused for drift.")
