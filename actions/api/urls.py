from django.urls import path

from actions.api.views import ActionViewSet, ApproveRecommendationView, RecommendationViewSet
from budgetradar.api import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("recommendations", RecommendationViewSet, basename="recommendation")
router.register("actions", ActionViewSet, basename="action")

urlpatterns = [
    path("actions/approve/<int:recommendation_id>", ApproveRecommendationView.as_view(), name="action-approve"),
    path("actions/approve/<int:recommendation_id>/", ApproveRecommendationView.as_view()),
    *router.urls,
]
