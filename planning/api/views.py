"""The planning API: automation settings and planner runs (thin views over the services)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action as route
from rest_framework.request import Request
from rest_framework.response import Response

from budgetradar.api import NoBodySerializer, ReasonSerializer, TenantScopedMixin
from planning.api.serializers import (
    AutomationSettingsPatchSerializer,
    AutomationSettingsSerializer,
    PlannerRunDetailSerializer,
    PlannerRunSerializer,
    RunNowSerializer,
)
from planning.models import AutomationSettings, PlannerRun, Trigger
from planning.services.automation import automation_for, automation_update, breaker_reset
from planning.services.external import external_proposals
from planning.services.runs import connection_for_user, planner_run_request


class AutomationSettingsViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Automation settings per connection (one row each; created on first read)."""

    queryset = AutomationSettings.objects.select_related("connection", "consent_by").order_by("connection_id")
    serializer_class = AutomationSettingsSerializer
    filterset_fields = ["mode", "connection"]

    @extend_schema(request=AutomationSettingsPatchSerializer, responses={200: AutomationSettingsSerializer})
    def partial_update(self, request: Request, pk=None) -> Response:
        automation = self.get_object()
        body = AutomationSettingsPatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        updated = automation_update(
            automation=automation,
            actor=request.user,
            changes=body.validated_data["changes"],
            consent_reason=body.validated_data.get("consent_reason", ""),
            reason=body.validated_data.get("reason", ""),
        )
        return Response(AutomationSettingsSerializer(updated).data)

    @extend_schema(request=NoBodySerializer, responses={200: AutomationSettingsSerializer})
    @route(detail=False, methods=["post"], url_path=r"for-connection/(?P<connection_id>\d+)")
    def for_connection(self, request: Request, connection_id=None) -> Response:
        """The settings of a connection, created (mode off) if it has none yet."""
        connection = connection_for_user(user=request.user, pk=connection_id)
        return Response(AutomationSettingsSerializer(automation_for(connection)).data)

    @extend_schema(request=ReasonSerializer, responses={200: AutomationSettingsSerializer})
    @route(detail=True, methods=["post"], url_path="reset-breaker")
    def reset_breaker(self, request: Request, pk=None) -> Response:
        body = ReasonSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        reason = body.validated_data.get("reason") or "reset through the API"
        updated = breaker_reset(automation=self.get_object(), actor=request.user, reason=reason)
        return Response(AutomationSettingsSerializer(updated).data)


class PlannerRunViewSet(TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Planner runs: list, detail (with per-entity reasoning) and run now (202)."""

    queryset = PlannerRun.objects.select_related("connection", "preflight").order_by("-created_at", "-id")
    filterset_fields = ["connection", "status", "outcome", "trigger"]

    def get_serializer_class(self):
        return PlannerRunDetailSerializer if self.action == "retrieve" else PlannerRunSerializer

    @extend_schema(request=RunNowSerializer, responses={202: PlannerRunSerializer})
    def create(self, request: Request) -> Response:
        """Run now: queue a run of the connection (the planner's plan or an external one)."""
        body = RunNowSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        connection = connection_for_user(user=request.user, pk=data["connection"])
        external = None
        if data["source"] != "planner":
            external = external_proposals(connection=connection, source=data["source"], payload=data)
        run = planner_run_request(
            connection=connection,
            actor=request.user,
            trigger=Trigger.EXTERNAL if external is not None else Trigger.MANUAL,
            external_plan=external,
            external_source="" if external is None else data["source"],
        )
        return Response(PlannerRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)
