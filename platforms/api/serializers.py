"""Read-only representations of connections and mirrored entities (never credentials)."""

from __future__ import annotations

from rest_framework import serializers

from platforms.models import PlatformConnection, PlatformEntity


class ConnectionSerializer(serializers.ModelSerializer):
    platform_display = serializers.CharField(source="get_platform_display", read_only=True)

    class Meta:
        model = PlatformConnection
        fields = [
            "id",
            "name",
            "platform",
            "platform_display",
            "account_id",
            "currency",
            "time_zone",
            "is_active",
            "circuit_state",
            "circuit_reason",
            "last_synced_at",
            "last_test_ok",
            "last_test_message",
        ]
        read_only_fields = fields


class EntitySerializer(serializers.ModelSerializer):
    platform = serializers.CharField(source="connection.platform", read_only=True)
    currency = serializers.CharField(source="connection.currency", read_only=True)
    parent_external_id = serializers.CharField(
        source="parent.external_id", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = PlatformEntity
        fields = [
            "id",
            "connection",
            "platform",
            "entity_type",
            "external_id",
            "parent",
            "parent_external_id",
            "name",
            "status",
            "currency",
            "daily_budget",
            "lifetime_budget",
            "bid",
            "budget_id",
            "budget_shared",
            "budget_reference_count",
            "synced_at",
        ]
        read_only_fields = fields
