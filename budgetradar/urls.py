"""URL routes: the admin, the API (with schema and docs) and health."""

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from budgetradar import views

admin.site.site_header = "BudgetRadar"
admin.site.site_title = "BudgetRadar"
admin.site.index_title = "Propose, approve, execute and roll back ad changes safely"

# Error pages in the admin's style (the API's errors are JSON: budgetradar.middleware).
handler403 = views.permission_denied
handler404 = views.page_not_found

urlpatterns = [
    path("", views.home),
    # The admin home is the dashboard (before the admin's own index, which it replaces).
    path("admin/", admin.site.admin_view(views.admin_dashboard), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("health", views.health, name="health"),
    # Browsers ask for /favicon.ico whatever the page says; the admin links the SVG itself.
    path("favicon.ico", RedirectView.as_view(url=static("budgetradar/favicon.svg"), permanent=True)),
    path("", include("observability.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its settings as a script file: no inline script for the CSP to refuse.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    # Redoc (styled-components) writes <style> elements at run time; scripts stay 'self' only.
    path(
        "api/redoc/",
        csp_update({"style-src": [UNSAFE_INLINE]})(SpectacularRedocView.as_view(url_name="schema")),
        name="api-redoc",
    ),
    path("api/", include("platforms.api.urls")),
    path("api/", include("actions.api.urls")),
    path("api/", include("scenarios.api.urls")),
    path("api/", include("planning.api.urls")),
]
