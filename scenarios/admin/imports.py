"""Importing a scenario from a file (a proposed push bundle or a CSV) on the scenario admin."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from budgetradar.errors import DomainError, ValidationFailed
from budgetradar.models import Tenant
from budgetradar.tenancy import is_platform_staff, tenant_of
from scenarios.services.imports import check_size, scenario_import


class ImportForm(forms.Form):
    """A proposed push bundle (JSON) or a CSV of platform, entity_id, field, value."""

    file = forms.FileField(help_text="A proposed push bundle (.json) or a CSV with platform,entity_id,field,value.")
    format = forms.ChoiceField(
        choices=[
            ("auto", "From the file name (.json or .csv)"),
            ("bundle", "Proposed push bundle (JSON)"),
            ("csv", "CSV"),
        ],
        initial="auto",
    )
    name = forms.CharField(max_length=200, required=False, help_text="Default: the bundle's plan id.")
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 80}))
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none(), required=False)

    def __init__(self, *args: Any, staff: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if staff:
            self.fields["tenant"].queryset = Tenant.objects.order_by("name")
            self.fields["tenant"].required = True
        else:
            del self.fields["tenant"]

    def clean(self) -> dict:
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is not None and cleaned.get("format") == "auto":
            name = upload.name.lower()
            if name.endswith(".json"):
                cleaned["format"] = "bundle"
            elif name.endswith(".csv") or name.endswith(".txt"):
                cleaned["format"] = "csv"
            else:
                self.add_error("format", "Cannot tell the format from the file name; choose it here.")
        return cleaned


class ScenarioImportMixin:
    """The import page of ``ScenarioAdmin`` (its ``_change_url`` and ``admin_site``)."""

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a bundle or CSV; a refusal lists every row error and writes nothing."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        staff = is_platform_staff(request.user)
        form = ImportForm(
            request.POST if request.method == "POST" else None,
            request.FILES if request.method == "POST" else None,
            staff=staff,
        )
        refusal = None
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            tenant = form.cleaned_data["tenant"] if staff else tenant_of(request.user)
            try:
                check_size(upload.size, what=f"The file {upload.name}")
                scenario = scenario_import(
                    tenant=tenant,
                    actor=request.user,
                    name=form.cleaned_data["name"],
                    data=upload.read(),
                    format=form.cleaned_data["format"],
                    notes=form.cleaned_data["notes"],
                )
            except ValidationFailed as exc:
                refusal = exc
            except DomainError as exc:
                messages.error(request, exc.message)
            else:
                count = scenario.items.count()
                messages.success(
                    request, f"Imported {scenario.name} with {count} item{'s' if count != 1 else ''}. Run a preflight."
                )
                return HttpResponseRedirect(self._change_url(scenario))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import a scenario from a file",
            "form": form,
            "refusal": refusal,
            "errors": refusal.details if refusal is not None and isinstance(refusal.details, list) else [],
            "limit": settings.IMPORT_MAX_BYTES,
        }
        return TemplateResponse(request, "admin/scenarios/scenario/import.html", context)
