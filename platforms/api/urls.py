from rest_framework.routers import DefaultRouter

from platforms.api.views import ConnectionViewSet, EntityViewSet

router = DefaultRouter(trailing_slash="/?")
router.register("connections", ConnectionViewSet, basename="connection")
router.register("entities", EntityViewSet, basename="entity")

urlpatterns = router.urls
