"""The scenario page: the plan with its items inline, the preflight diff, Preflight / Dry run / Deploy live, import.

Its parts live in their own modules: ``items`` (the items inline), ``imports`` (the
import page) and ``deploy`` (the buttons and the deploy confirmation); this module puts
them together with the list, the change page and saving through the services."""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse

from budgetradar.admin_base import GREY, AuditedForm, TenantScopedHistoryAdmin, badge, change_reason_for, denied
from scenarios.admin.deploy import ScenarioDeployMixin
from scenarios.admin.diff import diff_context
from scenarios.admin.imports import ScenarioImportMixin
from scenarios.admin.items import ScenarioItemFormSet, ScenarioItemInline, scenario_editable
from scenarios.admin.presentation import (
    DEPLOYMENT_TONES,
    ITEMS_PAGE_SIZE,
    MAX_INLINE_ITEMS,
    SCENARIO_TONES,
    page_number,
    person_name,
    preflight_badge,
)
from scenarios.models import PreflightRun, Scenario
from scenarios.selectors import latest_scenario_preflight, preflight_freshness
from scenarios.services.imports import scenario_create, scenario_update


class ScenarioForm(AuditedForm):
    class Meta:
        model = Scenario
        fields = ["tenant", "name", "source_plan_id", "notes"]
        widgets = {"notes": forms.Textarea(attrs={"rows": 3, "cols": 80})}


@admin.register(Scenario)
class ScenarioAdmin(ScenarioDeployMixin, ScenarioImportMixin, TenantScopedHistoryAdmin):
    """Budget plans: items, the latest preflight's diff, and the deploy buttons."""

    form = ScenarioForm
    list_display = ["name", "status_badge", "items_count", "latest_preflight", "created_by", "created_at"]
    list_display_links = ["name"]
    list_select_related = ["created_by"]
    list_filter = ["status", "created_by"]
    search_fields = ["name", "source_plan_id", "=id"]
    search_help_text = "Search by name, source plan id or id."
    date_hierarchy = "created_at"
    inlines = [ScenarioItemInline]
    readonly_fields = ["status_badge", "author", "created_at", "updated_at"]

    def get_fields(self, request: HttpRequest, obj: Scenario | None = None) -> list[str]:
        fields = ["tenant", "name", "source_plan_id", "notes"]
        if obj is not None:
            fields += ["status_badge", "author", "created_at", "updated_at"]
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Scenario | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            readonly.append("source_plan_id")  # where the plan came from does not change
        return readonly

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        latest = PreflightRun.objects.filter(scenario=OuterRef("pk")).order_by("-created_at", "-id")
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_items=Count("items", distinct=True),
                latest_status=Subquery(latest.values("status")[:1]),
                latest_critical=Subquery(latest.values("has_critical")[:1]),
            )
        )

    def has_change_permission(self, request: HttpRequest, obj: Scenario | None = None) -> bool:
        return scenario_editable(obj) and super().has_change_permission(request, obj)

    def get_inlines(self, request: HttpRequest, obj: Scenario | None) -> list:
        if obj is not None and _item_count(obj) > MAX_INLINE_ITEMS:
            return []
        return super().get_inlines(request, obj)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, scenario: Scenario):
        return badge(scenario.get_status_display(), SCENARIO_TONES.get(scenario.status, GREY))

    @admin.display(description="Created by")
    def author(self, scenario: Scenario) -> str:
        return person_name(scenario.created_by)

    @admin.display(description="Items", ordering="n_items")
    def items_count(self, scenario: Scenario) -> int:
        return scenario.n_items

    @admin.display(description="Latest preflight")
    def latest_preflight(self, scenario: Scenario):
        return preflight_badge(status=scenario.latest_status, critical=bool(scenario.latest_critical))

    # Saving through the services -----------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Scenario, form: forms.ModelForm, change: bool) -> None:
        """Nothing is saved here: ``save_related`` saves the scenario and its items together
        through ``scenario_create`` / ``scenario_update``."""

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets, change: bool) -> None:
        items_formset = next((f for f in formsets if isinstance(f, ScenarioItemFormSet)), None)
        items_changed = items_formset is not None and items_formset.has_changed()
        items = items_formset.target_items if items_formset is not None else None
        obj = form.instance
        if not change:
            created = scenario_create(
                tenant=obj.tenant,
                actor=request.user,
                name=obj.name,
                items=items or [],
                notes=obj.notes,
                source_plan_id=obj.source_plan_id,
                reason=change_reason_for(form, change=False),
            )
            obj.pk, obj.created_at = created.pk, created.created_at
            return
        fields = set(form.changed_data) & {"name", "notes"}
        if not items_changed and not fields:
            return
        scenario_update(
            scenario=obj,
            actor=request.user,
            name=obj.name if "name" in fields else None,
            notes=obj.notes if "notes" in fields else None,
            items=items if items_changed else None,
            reason=_scenario_reason(form, fields, items_changed),
        )

    def construct_change_message(self, request: HttpRequest, form: forms.ModelForm, formsets, add: bool):
        # The items are saved by the service, not the formsets, so only the form is described.
        return super().construct_change_message(request, form, [], add)

    # Pages and buttons -------------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_view), name="scenarios_scenario_import"),
            path("<path:object_id>/preflight/", view(self.preflight_view), name="scenarios_scenario_preflight"),
            path("<path:object_id>/dry-run/", view(self.dry_run_view), name="scenarios_scenario_dry_run"),
            path("<path:object_id>/deploy/", view(self.deploy_view), name="scenarios_scenario_deploy"),
            path(
                "<path:object_id>/override/request/",
                view(self.override_request_view),
                name="scenarios_scenario_override_request",
            ),
            path(
                "<path:object_id>/override/<int:override_id>/approve/",
                view(self.override_approve_view),
                name="scenarios_scenario_override_approve",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        scenario = self.get_object(request, object_id)
        latest = latest_scenario_preflight(scenario)
        user = request.user
        extra_context = {
            **(extra_context or {}),
            "diff": diff_context(latest, page=page_number(request, "diff_page")),
            "freshness": preflight_freshness(latest, scenario) if latest else "",
            "can_preflight": user.has_perm("scenarios.run_preflight"),
            "can_dry_run": user.has_perm("scenarios.deploy_dry_run"),
            "can_deploy": user.has_perm("scenarios.deploy_live"),
            "dry_run_key": str(uuid.uuid4()),
            "deployments": list(
                scenario.deployments.select_related("requested_by").order_by("-created_at", "-id")[:10]
            ),
            "status_tones": DEPLOYMENT_TONES,
            "item_rows": self._item_rows(request, scenario),
            "max_inline_items": MAX_INLINE_ITEMS,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _item_rows(self, request: HttpRequest, scenario: Scenario):
        """One page of a big scenario's items, read-only (None when they are edited inline)."""
        if _item_count(scenario) <= MAX_INLINE_ITEMS:
            return None
        items = scenario.items.select_related("entity__connection").order_by("id")
        return Paginator(items, ITEMS_PAGE_SIZE).get_page(page_number(request, "items_page"))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_import": self.has_add_permission(request)}
        return super().changelist_view(request, extra_context)

    def _scenario_for(self, request: HttpRequest, object_id: str, perm: str) -> Scenario:
        scenario = self.get_object(request, object_id)
        if not request.user.has_perm(perm):
            raise denied(request.user, perm)
        return scenario

    def _change_url(self, scenario: Scenario, anchor: str = "") -> str:
        return reverse("admin:scenarios_scenario_change", args=[scenario.pk]) + anchor


def _item_count(scenario: Scenario) -> int:
    count = getattr(scenario, "n_items", None)
    return count if count is not None else scenario.items.count()


def _scenario_reason(form: forms.ModelForm, fields: set[str], items_changed: bool) -> str:
    """The reason the user gave, or one naming what changed (the items included)."""
    given = (form.cleaned_data.get("change_reason") or "").strip()
    if given:
        return given
    changed = sorted(fields) + (["items"] if items_changed else [])
    return f"changed in the admin: {', '.join(changed)}"
