"""API shapes of scenarios, their items, overrides and request bodies.

Request serializers check shape only; meaning (entities of this tenant, money, statuses)
is validated by the services so the admin, the API and the command refuse the same things.
"""

from __future__ import annotations

from decimal import Decimal

from rest_framework import serializers

from platforms.money import quantize
from scenarios.models import Deployment, GuardrailOverride, PreflightRun, Scenario, ScenarioItem


class ItemEntitySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    platform = serializers.CharField(source="connection.platform")
    entity_type = serializers.CharField()
    external_id = serializers.CharField()
    name = serializers.CharField()
    currency = serializers.CharField(source="connection.currency")


class ScenarioItemSerializer(serializers.ModelSerializer):
    entity = ItemEntitySerializer(read_only=True)
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
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

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


class ScenarioCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    notes = serializers.CharField(required=False, allow_blank=True, default="")
    source_plan_id = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    items = serializers.JSONField(
        required=False,
        default=list,
        help_text='[{"entity": 17, "daily_budget": "120.00"}, {"entity": 18, "status": "paused"}]; '
        "entity is an id from /api/entities/, money a decimal string in the account's currency.",
    )


class ScenarioPatchSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=200)
    notes = serializers.CharField(required=False, allow_blank=True)
    items = serializers.JSONField(required=False, help_text="Replaces every item of the scenario.")


class ScenarioImportSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A proposed push bundle (.json) or a CSV (platform,entity_id,field,value).")
    format = serializers.ChoiceField(choices=["bundle", "csv"], required=False, help_text="Default: from the name.")
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    notes = serializers.CharField(required=False, allow_blank=True)


class PreflightRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=PreflightRun.Mode.choices, required=False, default="manual")


class DeployRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=Deployment.Mode.choices)
    idempotency_key = serializers.CharField(
        required=False, max_length=200, help_text="Or the Idempotency-Key header; one of them is required."
    )
    override_id = serializers.IntegerField(required=False, allow_null=True, default=None)


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class OverrideSerializer(serializers.ModelSerializer):
    preflight = serializers.CharField(source="preflight.run_id", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True)
    approved_by = serializers.CharField(source="approved_by.username", default=None, read_only=True)
    approved = serializers.BooleanField(read_only=True)

    class Meta:
        model = GuardrailOverride
        fields = ["id", "preflight", "reason", "requested_by", "approved_by", "approved", "approved_at", "created_at"]
        read_only_fields = fields
