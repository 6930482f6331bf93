"""Read API for connections and the entity mirror (tenant-scoped, paginated)."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet
from rest_framework import viewsets

from budgetradar.api import TenantScopedMixin
from budgetradar.tenancy import scope_to_user
from platforms.api.serializers import ConnectionSerializer, EntitySerializer
from platforms.models import PlatformConnection, PlatformEntity


class ConnectionViewSet(TenantScopedMixin, viewsets.ReadOnlyModelViewSet):
    """The tenant's platform connections. Credentials are never part of the answer."""

    queryset = PlatformConnection.objects.order_by("name", "id")
    serializer_class = ConnectionSerializer
    filterset_fields = ["platform", "is_active"]


def _tenant_connections(request) -> QuerySet:
    return scope_to_user(PlatformConnection.objects.all(), request.user if request else None)


def _tenant_entities(request) -> QuerySet:
    return scope_to_user(PlatformEntity.objects.all(), request.user if request else None)


class EntityFilter(django_filters.FilterSet):
    # Choice querysets are scoped too, so another tenant's id is "not a valid choice"
    # exactly like an id that does not exist.
    connection = django_filters.ModelChoiceFilter(queryset=_tenant_connections)
    parent = django_filters.ModelChoiceFilter(queryset=_tenant_entities)
    search = django_filters.CharFilter(method="filter_search", label="Name or external id contains")

    class Meta:
        model = PlatformEntity
        fields = ["connection", "entity_type", "status", "parent"]

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(name__icontains=value) | Q(external_id__icontains=value))


class EntityViewSet(TenantScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Mirrored campaigns, ad sets and ads; ``?connection=&entity_type=&search=``."""

    queryset = PlatformEntity.objects.select_related("connection", "parent").order_by(
        "connection_id", "entity_type", "name", "id"
    )
    serializer_class = EntitySerializer
    filterset_class = EntityFilter
