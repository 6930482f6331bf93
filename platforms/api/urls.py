from budgetradar.api import OptionalSlashRouter
from platforms.api.views import ConnectionViewSet, EntityViewSet

router = OptionalSlashRouter()
router.register("connections", ConnectionViewSet, basename="connection")
router.register("entities", EntityViewSet, basename="entity")

urlpatterns = router.urls
