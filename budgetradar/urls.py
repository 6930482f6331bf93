"""URL routes: the admin, the API (with schema and docs) and health."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from budgetradar import views

admin.site.site_header = "BudgetRadar"
admin.site.site_title = "BudgetRadar"
admin.site.index_title = "Propose, approve, execute and roll back ad changes safely"

urlpatterns = [
    path("", views.home),
    path("admin/", admin.site.urls),
    path("health", views.health, name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/", include("platforms.api.urls")),
    path("api/", include("actions.api.urls")),
    path("api/", include("scenarios.api.urls")),
    path("api/", include("planning.api.urls")),
]
