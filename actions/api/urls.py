from django.urls import re_path

from actions.api.views import ActionViewSet, ApproveRecommendationView, RecommendationViewSet
from budgetradar.api import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("recommendations", RecommendationViewSet, basename="recommendation")
router.register("actions", ActionViewSet, basename="action")

urlpatterns = [
    re_path(
        r"^actions/approve/(?P<recommendation_id>\d+)/?$", ApproveRecommendationView.as_view(), name="action-approve"
    ),
    *router.urls,
]
