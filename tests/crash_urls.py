"""The project's URLs plus two views that fail unexpectedly (for test_api_errors)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.decorators import api_view
from rest_framework.request import Request

from budgetradar.urls import urlpatterns as project_urlpatterns


@api_view(["GET"])
def crash_in_drf(request: Request) -> HttpResponse:
    raise RuntimeError("kaboom")


def crash_in_django(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("kaboom")


urlpatterns = [
    path("api/test-crash/drf", crash_in_drf),
    path("api/test-crash/django", crash_in_django),
    *project_urlpatterns,
]
