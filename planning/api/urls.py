from budgetradar.api import OptionalSlashRouter
from planning.api.views import AutomationSettingsViewSet, PlannerRunViewSet

router = OptionalSlashRouter()
router.register("automation-settings", AutomationSettingsViewSet, basename="automation-settings")
router.register("planner-runs", PlannerRunViewSet, basename="planner-run")

urlpatterns = router.urls
