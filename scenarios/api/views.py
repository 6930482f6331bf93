"""The scenario, deployment, override, guardrail-policy and ad-push API: thin views over the services.

Scenario services and the ad-push services live in this app; the preflight and deploy
services are imported where they are used.
"""

from __future__ import annotations

from pathlib import PurePath

import django_filters
from django.core.exceptions import RequestDataTooBig
from django.db.models import Prefetch, QuerySet
from django.http.request import RawPostDataException
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action as route
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from budgetradar.api import (
    KeysetPagination,
    NoBodySerializer,
    ReasonSerializer,
    TenantScopedMixin,
    idempotency_key_from,
    tenant_for_request,
)
from budgetradar.api_defaults import JSONParser
from budgetradar.errors import NotFound, ValidationFailed
from budgetradar.tenancy import get_for_user, scope_to_user, tenant_of
from scenarios.api.serializers import (
    AdPushDryRunQuerySerializer,
    AdPushQueuedSerializer,
    DeploymentResultSerializer,
    DeploymentRollbackSerializer,
    DeploymentSerializer,
    DeployRequestSerializer,
    GuardrailPolicySerializer,
    OverrideSerializer,
    PreflightDocumentSerializer,
    PreflightEntitiesPageSerializer,
    PreflightEntitiesQuerySerializer,
    PreflightRequestSerializer,
    RetryFailedSerializer,
    ScenarioCreateSerializer,
    ScenarioImportSerializer,
    ScenarioJsonImportQuerySerializer,
    ScenarioPatchSerializer,
    ScenarioSerializer,
)
from scenarios.models import Deployment, GuardrailOverride, GuardrailPolicy, PreflightRun, Scenario, ScenarioItem
from scenarios.services.adpush import (
    ad_push_dry_run,
    ad_push_get,
    ad_push_latest,
    run_document,
    scenario_preflight_request,
    tenant_for_ref,
)
from scenarios.services.imports import (
    check_size,
    parse_item_list,
    scenario_create,
    scenario_import,
    scenario_update,
)
from scenarios.services.policies import guardrail_policy_create, guardrail_policy_delete, guardrail_policy_update

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Repeat a request safely: the same key and request return the first answer.",
)
DOING = {
    "scenarios.view_scenario": "see scenarios",
    "scenarios.view_deployment": "see deployments",
    "scenarios.add_scenario": "create scenarios",
    "scenarios.change_scenario": "change scenarios",
    "scenarios.run_preflight": "run preflights",
    "scenarios.deploy_dry_run": "deploy scenarios",
    "scenarios.deploy_live": "deploy live",
    "scenarios.rollback_deployment": "roll back deployments",
    "scenarios.view_preflightrun": "see preflights",
    "scenarios.override_guardrail": "override guardrails",
    "scenarios.view_guardrailpolicy": "see guardrail policies",
    "scenarios.add_guardrailpolicy": "create guardrail policies",
    "scenarios.change_guardrailpolicy": "change guardrail policies",
    "scenarios.delete_guardrailpolicy": "delete guardrail policies",
}


class RolePermission(permissions.BasePermission):
    """The role permission a view action needs (``view.required_perms[action]``).

    Services check again; this answers 403 before a body is even read.
    """

    def has_permission(self, request: Request, view) -> bool:
        name = getattr(view, "action", None) or request.method.lower()
        perm = view.required_perms.get(name)
        if perm is None or request.user.has_perm(perm):
            return True
        self.message = f"Your role does not allow you to {DOING.get(perm, perm)}."
        return False


class RoleGuarded:
    permission_classes = [permissions.IsAuthenticated, RolePermission]
    required_perms: dict[str, str] = {}


def _body(request: Request) -> bytes:
    """The raw request body (exact decimals for bundles), size-checked."""
    try:
        return request.body
    except RequestDataTooBig:
        check_size(int(request.META.get("CONTENT_LENGTH") or 0), what="The request body")
        raise
    except RawPostDataException:
        raise ValidationFailed("Send the bundle as the JSON request body.") from None


def _is_json(request: Request) -> bool:
    return (request.content_type or "").split(";")[0].strip() in ("application/json", "")


# Scenarios ----------------------------------------------------------------------------------


class ScenarioViewSet(
    RoleGuarded, TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Scenarios of the tenant: list, read, create, change, import, preflight, deploy."""

    queryset = Scenario.objects.select_related("created_by").prefetch_related(
        Prefetch("items", queryset=ScenarioItem.objects.select_related("entity__connection").order_by("id"))
    )
    serializer_class = ScenarioSerializer
    filterset_fields = ["status", "source_plan_id"]
    lookup_value_regex = r"\d+"
    required_perms = {
        "list": "scenarios.view_scenario",
        "retrieve": "scenarios.view_scenario",
        "create": "scenarios.add_scenario",
        "partial_update": "scenarios.change_scenario",
        "import_file": "scenarios.add_scenario",
        "preflight": "scenarios.run_preflight",
        "deploy": "scenarios.deploy_dry_run",
    }

    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        if self.action in ("preflight", "deploy"):
            return queryset.select_related("tenant").prefetch_related(None)
        return queryset

    @extend_schema(request=ScenarioCreateSerializer, responses={201: ScenarioSerializer})
    def create(self, request: Request) -> Response:
        body = ScenarioCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tenant = tenant_for_request(request)
        data = body.validated_data
        scenario = scenario_create(
            tenant=tenant,
            actor=request.user,
            name=data["name"],
            notes=data["notes"],
            source_plan_id=data["source_plan_id"],
            items=parse_item_list(tenant=tenant, items=data["items"]),
            reason="created via API",
        )
        return Response(self._representation(scenario), status=status.HTTP_201_CREATED)

    @extend_schema(request=ScenarioPatchSerializer, responses={200: ScenarioSerializer})
    def partial_update(self, request: Request, pk: str) -> Response:
        scenario = self.get_object()
        body = ScenarioPatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        items = data.get("items")
        scenario_update(
            scenario=scenario,
            actor=request.user,
            name=data.get("name"),
            notes=data.get("notes"),
            items=None if items is None else parse_item_list(tenant=scenario.tenant, items=items),
            reason="changed via API",
        )
        return Response(self._representation(scenario))

    @extend_schema(
        request={"multipart/form-data": ScenarioImportSerializer, "application/json": OpenApiTypes.OBJECT},
        responses={201: ScenarioSerializer},
        parameters=[ScenarioJsonImportQuerySerializer],
        description="Upload a bundle or CSV as `file` (multipart, with `format` and `name`), or send a proposed "
        "push bundle as the JSON body (`?name=` optional). Refused whole, with row errors, if any value is bad.",
    )
    @route(
        detail=False,
        methods=["post"],
        url_path="import",
        parser_classes=[MultiPartParser, FormParser, JSONParser],
    )
    def import_file(self, request: Request) -> Response:
        tenant = tenant_for_request(request)
        if _is_json(request):
            query = ScenarioJsonImportQuerySerializer(data=request.query_params)
            query.is_valid(raise_exception=True)
            data, fmt = _body(request), "bundle"
            name, notes = query.validated_data.get("name", ""), ""
        else:
            upload = request.FILES.get("file")
            if upload is None:
                raise ValidationFailed(
                    "Upload the file as the multipart field 'file' or send a bundle as the JSON body.",
                    details=[{"field": "file", "code": "required", "message": "No file was uploaded."}],
                )
            form = ScenarioImportSerializer(data=request.data)
            form.is_valid(raise_exception=True)
            check_size(upload.size, what=f"The file {upload.name}")
            data = upload.read()
            fields = form.validated_data
            fmt = fields.get("format") or ("csv" if PurePath(upload.name).suffix.lower() == ".csv" else "bundle")
            name, notes = fields.get("name", ""), fields.get("notes", "")
        scenario = scenario_import(tenant=tenant, actor=request.user, name=name, notes=notes, data=data, format=fmt)
        return Response(self._representation(scenario), status=status.HTTP_201_CREATED)

    @extend_schema(
        request=PreflightRequestSerializer,
        responses={200: PreflightDocumentSerializer, 202: PreflightDocumentSerializer},
        description="A scenario of at most `PREFLIGHT_SYNC_MAX_ENTITIES` (500) items is read in the request: 200 "
        "with the diff document. A larger one runs in a worker: 202 with the queued run, whose `progress.url` "
        "(`GET /api/preflights/{run_id}`) shows how many entities were read and, once succeeded, the document.",
    )
    @route(detail=True, methods=["post"])
    def preflight(self, request: Request, pk: str) -> Response:
        """Read the live state of the scenario's entities and answer the diff document
        (202 and a progress URL when the scenario is larger than the synchronous line)."""
        scenario = self.get_object()
        body = PreflightRequestSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        run = scenario_preflight_request(scenario=scenario, actor=request.user, mode=body.validated_data["mode"])
        queued = run.status == PreflightRun.Status.QUEUED
        return Response(run_document(run), status=status.HTTP_202_ACCEPTED if queued else status.HTTP_200_OK)

    @extend_schema(
        request=DeployRequestSerializer,
        responses={200: DeploymentSerializer, 202: DeploymentSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @route(detail=True, methods=["post"])
    def deploy(self, request: Request, pk: str) -> Response:
        """Dry run (200, validate-only; 202 and a progress URL for a scenario of more than
        ``DEPLOY_SYNC_MAX_ENTITIES`` items) or live deploy (202); an idempotency key is required."""
        from scenarios.services.deploy import deployment_create

        scenario = self.get_object()
        body = DeployRequestSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        key = idempotency_key_from(request)
        if key is None:
            message = "An idempotency key is required: send idempotency_key in the body or an Idempotency-Key header."
            raise ValidationFailed(
                message, details=[{"field": "idempotency_key", "code": "required", "message": message}]
            )
        result = deployment_create(
            scenario=scenario,
            actor=request.user,
            mode=body.validated_data["mode"],
            idempotency_key=key,
            override_id=body.validated_data["override_id"],
        )
        headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
        return Response(result.response, status=result.status_code, headers=headers)

    def _representation(self, scenario: Scenario) -> dict:
        return ScenarioSerializer(self.get_queryset().get(pk=scenario.pk)).data


# Deployments -----------------------------------------------------------------------------------


def _tenant_scenarios(request) -> QuerySet:
    return scope_to_user(Scenario.objects.all(), request.user if request else None)


class DeploymentFilter(django_filters.FilterSet):
    # Scoped choices: another tenant's scenario id is "not a valid choice", like a missing one.
    scenario = django_filters.ModelChoiceFilter(queryset=_tenant_scenarios)

    class Meta:
        model = Deployment
        fields = ["mode", "status", "scenario"]


class ResultPagination(KeysetPagination):
    """A deployment's per-entity results in id order (index ``result_deployment_list_idx``)."""

    ordering = ("id",)


class DeploymentViewSet(
    RoleGuarded, TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Deployments of the tenant (``?mode=&status=&scenario=``); one with its per-entity results."""

    queryset = Deployment.objects.select_related("preflight", "requested_by")
    filterset_class = DeploymentFilter
    lookup_value_regex = r"\d+"
    required_perms = {
        "list": "scenarios.view_deployment",
        "retrieve": "scenarios.view_deployment",
        "results": "scenarios.view_deployment",
        "retry_failed": "scenarios.deploy_live",
        "rollback": "scenarios.rollback_deployment",
    }

    @extend_schema(
        operation_id="deployments_list",
        responses={200: DeploymentSerializer(many=True)},
        description="Paginated (count, next, previous, results); each result is a deployment without its results.",
    )
    def list(self, request: Request) -> Response:
        from scenarios.services.deploy import deployment_serialize

        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response([deployment_serialize(d, include_results=False) for d in page])

    @extend_schema(responses={200: DeploymentSerializer})
    def retrieve(self, request: Request, pk: str) -> Response:
        from scenarios.services.deploy import deployment_serialize

        return Response(deployment_serialize(self.get_object()))

    @extend_schema(request=None, responses={200: DeploymentResultSerializer(many=True)}, filters=False)
    @route(detail=True, methods=["get"], pagination_class=ResultPagination)
    def results(self, request: Request, pk: str) -> Response:
        """The deployment's per-entity results, a keyset page at a time (``?cursor=``):
        what a large deployment's page reads instead of every result at once."""
        from scenarios.services.deploy import deployment_results_serialize

        deployment = self.get_object()
        page = self.paginate_queryset(deployment.results.select_related("entity__connection"))
        return self.get_paginated_response(deployment_results_serialize(page))

    @extend_schema(
        request=RetryFailedSerializer, responses={202: DeploymentSerializer}, parameters=[IDEMPOTENCY_HEADER]
    )
    @route(detail=True, methods=["post"], url_path="retry-failed")
    def retry_failed(self, request: Request, pk: str) -> Response:
        """A new live deployment of the entities that failed or were stale (fresh preflight;
        read and prepared by a worker when there are more than ``DEPLOY_SYNC_MAX_ENTITIES``)."""
        from scenarios.services.deploy import deployment_retry_failed_request, deployment_serialize

        deployment = self.get_object()
        RetryFailedSerializer(data=request.data or {}).is_valid(raise_exception=True)
        result = deployment_retry_failed_request(
            deployment=deployment, actor=request.user, idempotency_key=idempotency_key_from(request)
        )
        retry = Deployment.objects.get(pk=result.response["id"])
        headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
        return Response(deployment_serialize(retry), status=202, headers=headers)

    @extend_schema(
        request=DeploymentRollbackSerializer, responses={202: DeploymentSerializer}, parameters=[IDEMPOTENCY_HEADER]
    )
    @route(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str) -> Response:
        """Roll back the deployment's succeeded actions after the safety gate judged going back
        (drift is checked per entity by the workers)."""
        from scenarios.services.deploy import deployment_rollback, deployment_rollback_request, deployment_serialize

        deployment = self.get_object()
        body = DeploymentRollbackSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        reason = body.validated_data["reason"]
        key = idempotency_key_from(request)
        if key is None:
            result = deployment_rollback(deployment=deployment, actor=request.user, reason=reason)
            return Response(deployment_serialize(Deployment.objects.get(pk=result.pk)), status=202)
        answer = deployment_rollback_request(
            deployment=deployment, actor=request.user, reason=reason, idempotency_key=key
        )
        headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
        return Response(answer.response, status=answer.status_code, headers=headers)


# Guardrail overrides -------------------------------------------------------------------------------


class PreflightOverrideView(RoleGuarded, APIView):
    """Ask to deploy a preflight despite its critical breaches (a second person approves)."""

    required_perms = {"post": "scenarios.override_guardrail"}

    @extend_schema(request=ReasonSerializer, responses={201: OverrideSerializer})
    def post(self, request: Request, run_id: str) -> Response:
        from safety.overrides import override_request

        preflight = scope_to_user(PreflightRun.objects.select_related("tenant"), request.user).filter(run_id=run_id)
        preflight = preflight.first()
        if preflight is None:
            raise NotFound(f"No preflight run {run_id}.")
        body = ReasonSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        override = override_request(preflight=preflight, actor=request.user, reason=body.validated_data["reason"])
        return Response(OverrideSerializer(_override(override.pk)).data, status=status.HTTP_201_CREATED)


class OverrideApproveView(RoleGuarded, APIView):
    """The second pair of eyes on an override request."""

    required_perms = {"post": "scenarios.override_guardrail"}

    @extend_schema(request=NoBodySerializer, responses={200: OverrideSerializer})
    def post(self, request: Request, override_id: int) -> Response:
        from safety.overrides import override_approve

        override = get_for_user(GuardrailOverride.objects.select_related("tenant"), request.user, override_id)
        NoBodySerializer(data=request.data or {}).is_valid(raise_exception=True)
        override_approve(override=override, actor=request.user)
        return Response(OverrideSerializer(_override(override.pk)).data)


def _override(pk: int) -> GuardrailOverride:
    return GuardrailOverride.objects.select_related("preflight", "requested_by", "approved_by", "rejected_by").get(
        pk=pk
    )


# Guardrail policies --------------------------------------------------------------------------------


class GuardrailPolicyViewSet(RoleGuarded, TenantScopedMixin, viewsets.ModelViewSet):
    """The tenant's guardrail policies: everyone reads, admins create, change and delete.

    One default policy per tenant (``connection`` empty) and at most one per connection,
    which then replaces the default for that connection. Errors name each field.
    """

    queryset = GuardrailPolicy.objects.select_related("connection").order_by("connection_id", "id")
    serializer_class = GuardrailPolicySerializer
    filterset_fields = ["connection"]
    lookup_value_regex = r"\d+"
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]
    required_perms = {
        "list": "scenarios.view_guardrailpolicy",
        "retrieve": "scenarios.view_guardrailpolicy",
        "create": "scenarios.add_guardrailpolicy",
        "update": "scenarios.change_guardrailpolicy",
        "partial_update": "scenarios.change_guardrailpolicy",
        "destroy": "scenarios.delete_guardrailpolicy",
    }

    def get_serializer(self, *args, **kwargs) -> GuardrailPolicySerializer:
        tenant = tenant_of(self.request.user) if self.request else None
        return GuardrailPolicySerializer(*args, tenant=tenant, **kwargs)

    def create(self, request: Request) -> Response:
        tenant = tenant_for_request(request)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        policy = guardrail_policy_create(
            tenant=tenant, actor=request.user, values=dict(body.validated_data), reason="created via API"
        )
        return Response(self.get_serializer(self._reload(policy)).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, pk: str, partial: bool = False) -> Response:
        policy = self.get_object()
        body = self.get_serializer(policy, data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        guardrail_policy_update(
            policy=policy, actor=request.user, values=dict(body.validated_data), reason="changed via API"
        )
        return Response(self.get_serializer(self._reload(policy)).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        return self.update(request, pk, partial=True)

    def destroy(self, request: Request, pk: str) -> Response:
        guardrail_policy_delete(policy=self.get_object(), actor=request.user, reason="deleted via API")
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _reload(self, policy: GuardrailPolicy) -> GuardrailPolicy:
        return self.get_queryset().get(pk=policy.pk)


# Ad pushes ---------------------------------------------------------------------------------------


class AdPushLatestView(RoleGuarded, APIView):
    """The tenant's newest finished preflight document (``tenant_id``: id or slug)."""

    required_perms = {"get": "scenarios.view_preflightrun"}

    @extend_schema(responses={200: PreflightDocumentSerializer})
    def get(self, request: Request, tenant_id: str) -> Response:
        tenant = tenant_for_ref(user=request.user, ref=tenant_id)
        return Response(run_document(ad_push_latest(tenant=tenant)))


class AdPushRunView(RoleGuarded, APIView):
    """One preflight run: its document when finished, else its status (and error)."""

    required_perms = {"get": "scenarios.view_preflightrun"}

    @extend_schema(responses={200: PreflightDocumentSerializer})
    def get(self, request: Request, tenant_id: str, run_id: str) -> Response:
        tenant = tenant_for_ref(user=request.user, ref=tenant_id)
        return Response(run_document(ad_push_get(tenant=tenant, run_id=run_id)))


class PreflightRunView(RoleGuarded, APIView):
    """One preflight run of the tenant by its run id: progress while queued or running,
    the summary (document without its entities) once it succeeded, the reason after a
    failure; the entities are paged at ``entities_url``."""

    required_perms = {"get": "scenarios.view_preflightrun"}

    @extend_schema(responses={200: PreflightDocumentSerializer})
    def get(self, request: Request, run_id: str) -> Response:
        return Response(run_document(_preflight_for(request, run_id), entities=False))


class PreflightEntitiesView(RoleGuarded, APIView):
    """A preflight document's entities, a page at a time in document order (keyset on
    the entity's position: every page is one indexed range read, however large the run)."""

    required_perms = {"get": "scenarios.view_preflightrun"}

    @extend_schema(responses={200: PreflightEntitiesPageSerializer}, parameters=[PreflightEntitiesQuerySerializer])
    def get(self, request: Request, run_id: str) -> Response:
        from scenarios.services.preflight import preflight_entities_page

        run = _preflight_for(request, run_id)
        query = PreflightEntitiesQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        results, next_cursor = preflight_entities_page(run=run, cursor=query.validated_data["cursor"], limit=limit)
        next_url = None
        if next_cursor is not None:
            next_url = request.build_absolute_uri(
                f"/api/preflights/{run.run_id}/entities?cursor={next_cursor}&limit={limit}"
            )
        page = {"run_id": run.run_id, "status": run.status, "results": results}
        return Response(page | {"next_cursor": next_cursor, "next": next_url})


def _preflight_for(request: Request, run_id: str) -> PreflightRun:
    run = scope_to_user(PreflightRun.objects.select_related("tenant"), request.user).filter(run_id=run_id).first()
    if run is None:
        raise NotFound(f"No preflight run {run_id}.")
    return run


class AdPushDryRunView(RoleGuarded, APIView):
    """Queue a preflight of a proposed push bundle (the JSON body, with optional
    ``mode`` and ``plan_id``); answers 202 with the run id to poll."""

    required_perms = {"post": "scenarios.run_preflight"}

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={202: AdPushQueuedSerializer},
        parameters=[AdPushDryRunQuerySerializer],
    )
    def post(self, request: Request, tenant_id: str) -> Response:
        tenant = tenant_for_ref(user=request.user, ref=tenant_id)
        query = AdPushDryRunQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        run = ad_push_dry_run(
            tenant=tenant,
            actor=request.user,
            data=_body(request),
            mode=query.validated_data.get("mode"),
            plan_id=query.validated_data.get("plan_id"),
        )
        return Response({"run_id": run.run_id, "status": run.status}, status=status.HTTP_202_ACCEPTED)
