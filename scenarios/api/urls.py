from django.urls import re_path

from budgetradar.api import OptionalSlashRouter
from scenarios.api.views import (
    AdPushDryRunView,
    AdPushLatestView,
    AdPushRunView,
    DeploymentViewSet,
    GuardrailPolicyViewSet,
    OverrideApproveView,
    PreflightEntitiesView,
    PreflightOverrideView,
    PreflightRunView,
    ScenarioViewSet,
)

router = OptionalSlashRouter()
router.register("scenarios", ScenarioViewSet, basename="scenario")
router.register("deployments", DeploymentViewSet, basename="deployment")
router.register("guardrail-policies", GuardrailPolicyViewSet, basename="guardrail-policy")

TENANT = r"^tenants/(?P<tenant_id>[\w-]+)/ad-pushes"

urlpatterns = [
    re_path(rf"{TENANT}/latest/?$", AdPushLatestView.as_view(), name="ad-push-latest"),
    re_path(rf"{TENANT}/dry-run/?$", AdPushDryRunView.as_view(), name="ad-push-dry-run"),
    re_path(rf"{TENANT}/(?P<run_id>[\w-]+)/?$", AdPushRunView.as_view(), name="ad-push-run"),
    re_path(r"^preflights/(?P<run_id>[\w-]+)/override/?$", PreflightOverrideView.as_view(), name="preflight-override"),
    re_path(r"^preflights/(?P<run_id>[\w-]+)/entities/?$", PreflightEntitiesView.as_view(), name="preflight-entities"),
    re_path(r"^preflights/(?P<run_id>[\w-]+)/?$", PreflightRunView.as_view(), name="preflight-run"),
    re_path(r"^overrides/(?P<override_id>\d+)/approve/?$", OverrideApproveView.as_view(), name="override-approve"),
    *router.urls,
]
