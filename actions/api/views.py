"""The action API: thin views over the lifecycle, execution and rollback services."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import django_filters
from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action as route
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from actions.api.serializers import (
    ActionSerializer,
    CancelQuerySerializer,
    ExecuteRequestSerializer,
    ExecutionLogSerializer,
    OverrideRequestSerializer,
    RecommendationInputSerializer,
    RecommendationSerializer,
    RollbackPreviewSerializer,
    RollbackRequestSerializer,
)
from actions.models import Action, ActionStatus, ActionType, Recommendation
from actions.services.execution import action_execute_request
from actions.services.judgement import action_rollback_preview
from actions.services.lifecycle import action_approve, action_cancel
from actions.services.recommendations import RecommendationInput, recommendations_create
from actions.services.rollback import action_rollback_request
from actions.services.rollback_preview import FIELD_LABELS, RollbackPreview, rollback_deadline_text, show_value
from budgetradar.api import (
    KeysetPagination,
    ReasonSerializer,
    TenantScopedMixin,
    idempotency_key_from,
    tenant_for_request,
)
from budgetradar.errors import NotFound, ValidationFailed
from budgetradar.idempotency import run_idempotent
from budgetradar.tenancy import get_for_user
from platforms.models import Platform
from safety.gate import action_preflight_request, preflights_prefetch
from safety.overrides import action_override_request
from scenarios.api.serializers import OverrideSerializer
from scenarios.models import GuardrailOverride

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Repeat a request safely: the same key and request return the first answer.",
)


class RecommendationViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Recommendations of the tenant; POST one object or a list to create them (all or nothing)."""

    queryset = Recommendation.objects.select_related("entity__connection").prefetch_related(
        Prefetch("actions", queryset=Action.objects.only("id", "status", "recommendation_id"))
    )
    serializer_class = RecommendationSerializer
    filterset_fields = ["action_type", "source", "entity"]
    pagination_class = KeysetPagination  # newest first; grows with every proposal

    @extend_schema(
        request=RecommendationInputSerializer(many=True), responses={201: RecommendationSerializer(many=True)}
    )
    def create(self, request: Request) -> Response:
        many = isinstance(request.data, list)
        items = request.data if many else [request.data]
        if not items:
            raise ValidationFailed(
                "Send one recommendation or a non-empty list.", details={"non_field_errors": "empty"}
            )
        shape = RecommendationInputSerializer(data=items, many=True)
        if not shape.is_valid():
            raise ValidationFailed(
                "Some recommendations are invalid; nothing was created.",
                details=_indexed(shape.errors) if many else shape.errors[0],
            )
        inputs = [
            RecommendationInput(
                entity_id=d["entity"],
                action_type=d["action_type"],
                params=d["params"],
                rationale=d["rationale"],
                source=d["source"],
            )
            for d in shape.validated_data
        ]
        try:
            created = recommendations_create(tenant=tenant_for_request(request), actor=request.user, items=inputs)
        except ValidationFailed as exc:
            if not many:
                exc.details = exc.details.get("0", exc.details)
            raise
        created = self.get_queryset().filter(pk__in=[r.pk for r in created]).order_by("id")
        data = RecommendationSerializer(created, many=True).data
        return Response(data if many else data[0], status=status.HTTP_201_CREATED)


def _indexed(errors) -> dict:
    """Item index -> field errors (DRF gives a list or, for lists, a dict keyed by index)."""
    pairs = errors.items() if isinstance(errors, dict) else enumerate(errors)
    return {str(i): e for i, e in pairs if e}


class ApproveRecommendationView(APIView):
    """Approve the pending action of a recommendation."""

    @extend_schema(request=ReasonSerializer, responses={200: ActionSerializer})
    def post(self, request: Request, recommendation_id: int) -> Response:
        recommendation = get_for_user(Recommendation.objects.all(), request.user, recommendation_id)
        body = ReasonSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        action = (
            recommendation.actions.select_related("entity__connection", "tenant__plan", "connection__tenant")
            .order_by("-id")
            .first()
        )
        if action is None:
            raise NotFound(f"Recommendation {recommendation_id} has no action to approve.")
        action_approve(action=action, actor=request.user, reason=body.validated_data["reason"])
        return Response(ActionSerializer(_reload(action)).data)


class ActionFilter(django_filters.FilterSet):
    # distinct=False: a status is a column of the row, never a join that could repeat it;
    # django-filter's default DISTINCT would sort every matching row before the first page.
    status = django_filters.MultipleChoiceFilter(choices=ActionStatus.choices, distinct=False)
    platform = django_filters.ChoiceFilter(choices=Platform.choices)
    action_type = django_filters.ChoiceFilter(choices=ActionType.choices)

    class Meta:
        model = Action
        fields = ["status", "platform", "action_type", "connection", "entity", "recommendation"]


class LogPagination(KeysetPagination):
    """An action's execution log, oldest first (index ``log_action_list_idx``)."""

    ordering = ("created_at", "id")


class ActionViewSet(TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Actions of the tenant: read, execute, roll back, cancel (DELETE), and their log.

    The list is newest first, a keyset page at a time (``?cursor=``, no total count):
    it reads one range of the index ``(tenant, -created_at, -id)`` whatever the page."""

    queryset = Action.objects.select_related(
        "entity__connection", "connection__tenant", "tenant", "approved_by", "proposed_by"
    ).prefetch_related(preflights_prefetch())
    serializer_class = ActionSerializer
    filterset_class = ActionFilter
    pagination_class = KeysetPagination

    @extend_schema(request=None, responses={200: ActionSerializer})
    @route(detail=True, methods=["post"])
    def preflight(self, request: Request, pk: str) -> Response:
        """Run the action's one-entity preflight now (of its rollback once it has run):
        before, after, delta, forecast and guardrail breaches, stored with the action."""
        action = self.get_object()
        action_preflight_request(action=action, actor=request.user)
        return Response(ActionSerializer(_reload(action)).data)

    @extend_schema(request=OverrideRequestSerializer, responses={201: OverrideSerializer})
    @route(detail=True, methods=["post"])
    def override(self, request: Request, pk: str) -> Response:
        """Ask to override the critical breaches of the action's latest preflight; another
        person with the override permission approves it (``POST /api/overrides/{id}/approve``)."""
        action = self.get_object()
        body = OverrideRequestSerializer(data=request.data or {})
        if not body.is_valid():
            raise ValidationFailed("An override needs a reason.", details=body.errors)
        override = action_override_request(action=action, actor=request.user, reason=body.validated_data["reason"])
        data = OverrideSerializer(
            GuardrailOverride.objects.select_related("preflight", "requested_by", "rejected_by").get(pk=override.pk)
        )
        return Response(data.data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ExecuteRequestSerializer, responses={202: ActionSerializer}, parameters=[IDEMPOTENCY_HEADER])
    @route(detail=True, methods=["post"])
    def execute(self, request: Request, pk: str) -> Response:
        action = self.get_object()
        ExecuteRequestSerializer(data=request.data or {}).is_valid(raise_exception=True)

        def run() -> tuple[dict, int]:
            return ActionSerializer(_reload(action_execute_request(action=action, actor=request.user))).data, 202

        return self._idempotent(request, "action.execute", {"action": action.pk}, run)

    @extend_schema(
        request=RollbackRequestSerializer, responses={202: ActionSerializer}, parameters=[IDEMPOTENCY_HEADER]
    )
    @route(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str) -> Response:
        action = self.get_object()
        body = RollbackRequestSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        reason, override = body.validated_data["reason"], body.validated_data["override_drift"]

        def run() -> tuple[dict, int]:
            result = action_rollback_request(action=action, actor=request.user, reason=reason, override_drift=override)
            return ActionSerializer(_reload(result)).data, 202

        return self._idempotent(request, "action.rollback", {"action": action.pk, "override_drift": override}, run)

    @extend_schema(responses={200: RollbackPreviewSerializer}, filters=False)
    @route(detail=True, methods=["get"], url_path="rollback-preview")
    def rollback_preview(self, request: Request, pk: str) -> Response:
        """What rolling the action back would do now, as the admin's confirmation shows it:
        whether it is possible (and if not why), the live value read from the platform and
        when, the change, and any drift. Stores nothing (the live read is an unsaved preview)."""
        action = self.get_object()
        refusal, preview = action_rollback_preview(action=action, actor=request.user)
        return Response(RollbackPreviewSerializer(_rollback_preview_data(refusal, preview)).data)

    @extend_schema(responses={200: ExecutionLogSerializer(many=True)}, filters=False)
    @route(detail=True, methods=["get"], pagination_class=LogPagination)
    def logs(self, request: Request, pk: str) -> Response:
        """The action's execution log, oldest first, a keyset page at a time."""
        action = self.get_object()
        page = self.paginate_queryset(action.logs.all())
        return self.get_paginated_response(ExecutionLogSerializer(page, many=True).data)

    @extend_schema(request=None, responses={200: ActionSerializer}, parameters=[CancelQuerySerializer])
    def destroy(self, request: Request, pk: str) -> Response:
        """Cancel the action (while pending approval, approved or queued); 409 otherwise."""
        action = self.get_object()
        query = CancelQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        action_cancel(action=action, actor=request.user, reason=query.validated_data["reason"])
        return Response(ActionSerializer(_reload(action)).data)

    def _idempotent(self, request: Request, scope: str, fingerprint: dict, run) -> Response:
        key = idempotency_key_from(request)
        if key is None:
            data, code = run()
            return Response(data, status=code)
        result = run_idempotent(
            tenant=tenant_for_request(request),
            key=key,
            scope=scope,
            request=fingerprint,
            actor=request.user,
            operation=run,
        )
        return Response(
            result.response,
            status=result.status_code,
            headers={"Idempotent-Replayed": "true"} if result.replayed else {},
        )


def _rollback_preview_data(refusal: str, preview: RollbackPreview) -> dict[str, Any]:
    action, currency = preview.action, preview.action.connection.currency
    return {
        "action": action.pk,
        "possible": not refusal,
        "refusal": refusal or None,
        "deadline": rollback_deadline_text(action),
        "change": preview.change_text(),
        "changes": [
            {
                "field": f.field.value,
                "label": FIELD_LABELS[f.field],
                "live": _plain(f.live),
                "live_text": show_value(f.field, f.live, currency),
                "restore": _plain(f.restore),
                "restore_text": show_value(f.field, f.restore, currency),
                "set_by_budgetradar": _plain(f.set_by_budgetradar),
                "drifted": f.drifted,
            }
            for f in preview.fields
        ],
        "live_read_at": preview.live_read_at,
        "live_found": preview.live_found,
        "drift_warning": preview.drift_warning() or None,
    }


def _plain(value: Any) -> Any:
    """Money as a decimal string (DRF's JSON encoder would make a ``Decimal`` a float)."""
    return str(value) if isinstance(value, Decimal) else value


def _reload(action: Action) -> Action:
    return ActionViewSet.queryset.get(pk=action.pk)
