"""The scenario page: the plan with its items inline, the preflight diff, Preflight / Dry run / Deploy live, import."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from budgetradar.admin_base import (
    EMPTY,
    GREY,
    AuditedForm,
    TenantScopedHistoryAdmin,
    badge,
    change_reason_for,
    denied,
    format_money,
    scope_for_user,
)
from budgetradar.errors import DomainError, ValidationFailed
from budgetradar.models import Tenant
from budgetradar.tenancy import is_platform_staff, tenant_of
from platforms.models import PlatformEntity
from safety.gate import deploy_blocking, deploy_four_eyes_refusal, deploy_plans
from safety.overrides import override_approve, override_approve_refusal, override_request
from scenarios.admin.diff import diff_context
from scenarios.admin.presentation import (
    DEPLOYMENT_TONES,
    ITEMS_PAGE_SIZE,
    MAX_INLINE_ITEMS,
    SCENARIO_TONES,
    TARGET_FIELDS,
    deployment_counts,
    page_number,
    person_name,
    preflight_badge,
)
from scenarios.models import (
    Deployment,
    GuardrailOverride,
    PreflightRun,
    Scenario,
    ScenarioItem,
)
from scenarios.selectors import (
    deploy_confirmation_is_stale,
    latest_scenario_preflight,
    next_step,
    preflight_freshness,
)
from scenarios.services.adpush import scenario_preflight_request
from scenarios.services.deploy import deployment_create
from scenarios.services.imports import check_size, parse_item_list, scenario_create, scenario_import, scenario_update
from scenarios.services.preflight import breach_counts

# Tenant-scoped inlines ------------------------------------------------------------------------------


class ScenarioItemFormSet(BaseInlineFormSet):
    """The items, validated as a whole by the import service's rules (one query for all
    entities); the normalised items are kept for the save."""

    def clean(self) -> None:
        super().clean()
        self.target_items = None
        if any(self.errors):
            return
        tenant = getattr(self.instance, "tenant", None) if self.instance.tenant_id else None
        forms_with_items = [
            form
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE") and form.cleaned_data.get("entity")
        ]
        if tenant is None:
            return

        rows = [_item_dict(form.cleaned_data) for form in forms_with_items]
        try:
            self.target_items = parse_item_list(tenant=tenant, items=rows)
        except ValidationFailed as exc:
            self._report(exc, forms_with_items)

    def _report(self, exc: ValidationFailed, forms_: list[forms.Form]) -> None:
        details = exc.details if isinstance(exc.details, list) else []
        placed = False
        for detail in details:
            index = detail.get("index")
            if not isinstance(index, int) or not 0 <= index < len(forms_):
                continue
            form = forms_[index]
            field = detail.get("field")
            form.add_error(field if field in form.fields else None, detail.get("message", exc.message))
            placed = True
        if not placed:
            raise forms.ValidationError(exc.message)


def _item_dict(cleaned: dict) -> dict[str, Any]:
    item: dict[str, Any] = {"entity": cleaned["entity"].pk}
    for field in TARGET_FIELDS:
        value = cleaned.get(field)
        if value not in (None, ""):
            item[field] = str(value)
    return item


# Amounts get narrow inputs (CSS ``br-amount``) so the items and their Delete column fit 1400 px.
AMOUNT_FIELDS = ("daily_budget", "lifetime_budget", "bid")


class ScenarioItemInline(admin.TabularInline):
    """Target values per entity; the entity is chosen by autocomplete among the tenant's."""

    model = ScenarioItem
    formset = ScenarioItemFormSet
    fields = ["entity", "current", "daily_budget", "lifetime_budget", "status", "bid"]
    readonly_fields = ["current"]
    autocomplete_fields = ["entity"]
    extra = 1
    verbose_name = "item"
    verbose_name_plural = "Items (target values; an empty value is left as it is)"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("entity__connection")

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs: Any):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name in AMOUNT_FIELDS and field is not None:
            field.widget.attrs["class"] = f"{field.widget.attrs.get('class', '')} br-amount".strip()
        return field

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs: Any):
        if db_field.name == "entity":
            kwargs["queryset"] = scope_for_user(PlatformEntity.objects.select_related("connection"), request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="Now (last sync)")
    def current(self, item: ScenarioItem) -> str:
        if item.pk is None or item.entity_id is None:
            return EMPTY
        entity = item.entity
        currency = entity.connection.currency
        parts = [entity.status]
        if entity.daily_budget is not None:
            parts.append(f"daily {format_money(entity.daily_budget, currency)}")
        if entity.lifetime_budget is not None:
            parts.append(f"lifetime {format_money(entity.lifetime_budget, currency)}")
        if entity.bid is not None:
            parts.append(f"bid {format_money(entity.bid, currency)}")
        return " · ".join(parts)

    def has_add_permission(self, request: HttpRequest, obj: Scenario | None = None) -> bool:
        return _editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Scenario | None = None) -> bool:
        return _editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Scenario | None = None) -> bool:
        return _editable(obj) and super().has_delete_permission(request, obj)


def _editable(scenario: Scenario | None) -> bool:
    return scenario is None or scenario.status != Scenario.Status.ARCHIVED


# Scenarios -----------------------------------------------------------------------------------------


class ScenarioForm(AuditedForm):
    class Meta:
        model = Scenario
        fields = ["tenant", "name", "source_plan_id", "notes"]
        widgets = {"notes": forms.Textarea(attrs={"rows": 3, "cols": 80})}


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


@admin.register(Scenario)
class ScenarioAdmin(TenantScopedHistoryAdmin):
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
        return _editable(obj) and super().has_change_permission(request, obj)

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

    @method_decorator(require_POST)
    def preflight_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """Read the live state of the scenario's entities and store the diff."""
        scenario = self._scenario_for(request, object_id, "scenarios.run_preflight")
        try:
            run = scenario_preflight_request(scenario=scenario, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"The preflight of {scenario.name} failed: {exc.message}")
        else:
            if run.status == PreflightRun.Status.QUEUED:
                messages.info(
                    request,
                    f"Preflight {run.run_id} of {run.entities_total} entities runs in a worker; its page shows "
                    "the progress and then the diff.",
                )
                return HttpResponseRedirect(reverse("admin:scenarios_preflightrun_change", args=[run.pk]))
            summary = (run.payload or {}).get("summary") or {}
            critical, warning = breach_counts(run)
            level = messages.WARNING if critical else messages.SUCCESS
            messages.add_message(
                request,
                level,
                f"Preflight {run.run_id}: {summary.get('changed', 0)} of {summary.get('entities', 0)} entities "
                f"change; {critical} critical and {warning} warning guardrail breaches.",
            )
        return HttpResponseRedirect(self._change_url(scenario, "#preflight"))

    @method_decorator(require_POST)
    def dry_run_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """A fresh preflight plus the platforms' validate-only calls; nothing changes."""
        scenario = self._scenario_for(request, object_id, "scenarios.deploy_dry_run")
        key = request.POST.get("idempotency_key") or str(uuid.uuid4())
        try:
            result = deployment_create(scenario=scenario, actor=request.user, mode="dry_run", idempotency_key=key)
        except DomainError as exc:
            messages.error(request, f"The dry run of {scenario.name} was refused: {exc.message}")
            return HttpResponseRedirect(self._change_url(scenario))
        deployment = Deployment.objects.get(tenant=scenario.tenant, pk=result.response["id"])
        if deployment.prepared_at is None:
            messages.success(
                request,
                f"Dry run #{deployment.pk} of {scenario.name} runs in a worker: it reads the live values and asks "
                "the platforms to validate the changes; this page follows its progress. Nothing changes on the "
                "platforms.",
            )
        else:
            messages.success(
                request,
                f"Dry run #{deployment.pk}: {deployment_counts(deployment)}. Nothing was changed on the platforms.",
            )
        return HttpResponseRedirect(reverse("admin:scenarios_deployment_change", args=[deployment.pk]))

    def deploy_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the confirmation (diff, breaches, totals, override state, a fresh key).
        POST: deploy once per key; a repeated key returns the same deployment."""
        scenario = self._scenario_for(request, object_id, "scenarios.deploy_live")
        latest = latest_scenario_preflight(scenario, succeeded=True)
        if request.method == "POST":
            return self._deploy(request, scenario, latest)
        if latest is None:
            messages.error(request, f"Scenario {scenario.name} has no successful preflight yet; run a preflight first.")
            return HttpResponseRedirect(self._change_url(scenario))
        return self._render_deploy(request, scenario, latest)

    def _render_deploy(self, request: HttpRequest, scenario: Scenario, run: PreflightRun) -> TemplateResponse:

        user = request.user
        overrides = list(run.overrides.select_related("requested_by", "approved_by").order_by("-created_at"))
        approved = next((o for o in overrides if o.approved), None)
        pending = [o for o in overrides if o.pending]
        may_override = user.has_perm("scenarios.override_guardrail")
        blocking = deploy_blocking(run)
        blocked = bool(blocking) and approved is None
        four_eyes = deploy_four_eyes_refusal(scenario=scenario, actor=user)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Deploy {scenario.name} live?",
            "scenario": scenario,
            "diff": diff_context(run, page=page_number(request, "diff_page")),
            "freshness": preflight_freshness(run, scenario),
            "idempotency_key": str(uuid.uuid4()),
            "blocked": blocked,
            "approved_override": approved,
            "pending_overrides": [
                {"override": o, "can_approve": not override_approve_refusal(override=o, actor=user)} for o in pending
            ],
            "can_request_override": may_override and bool(blocking) and approved is None and not pending,
            "plans": [(name, plan.sentence()) for name, plan in deploy_plans(run)],
            "four_eyes": four_eyes.message if four_eyes is not None else "",
            "rollback_hours": settings.ROLLBACK_VALID_HOURS,
            "back_url": self._change_url(scenario),
        }
        return TemplateResponse(request, "admin/scenarios/scenario/deploy_confirm.html", context)

    def _deploy(self, request: HttpRequest, scenario: Scenario, latest: PreflightRun | None) -> HttpResponseRedirect:
        key = request.POST.get("idempotency_key", "")
        confirmed = request.POST.get("preflight", "")
        override = request.POST.get("override", "")
        if deploy_confirmation_is_stale(scenario, latest, idempotency_key=key, confirmed_preflight=confirmed):
            # The page showed another diff than the one a deploy would use now.
            messages.error(
                request,
                "A newer preflight exists than the one you confirmed; review its diff and confirm again.",
            )
            return HttpResponseRedirect(reverse("admin:scenarios_scenario_deploy", args=[scenario.pk]))
        try:
            result = deployment_create(
                scenario=scenario,
                actor=request.user,
                mode="live",
                idempotency_key=key,
                override_id=int(override) if override.isdigit() else None,
            )
        except DomainError as exc:
            messages.error(request, f"{scenario.name} was not deployed: {exc.message}")
            return HttpResponseRedirect(self._change_url(scenario))
        deployment = Deployment.objects.get(tenant=scenario.tenant, pk=result.response["id"])
        if result.replayed:
            messages.info(request, f"This confirmation was already submitted: deployment #{deployment.pk} is below.")
        else:
            messages.success(
                request,
                f"Deployment #{deployment.pk} is {deployment.get_status_display().lower()}: "
                f"{deployment_counts(deployment)}. This page follows its progress.",
            )
        return HttpResponseRedirect(reverse("admin:scenarios_deployment_change", args=[deployment.pk]))

    @method_decorator(require_POST)
    def override_request_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:

        scenario = self._scenario_for(request, object_id, "scenarios.override_guardrail")
        run = latest_scenario_preflight(scenario, succeeded=True)
        back = HttpResponseRedirect(reverse("admin:scenarios_scenario_deploy", args=[scenario.pk]))
        if run is None or str(run.pk) != request.POST.get("preflight", ""):
            messages.error(
                request, "The preflight changed meanwhile; review the new one before requesting an override."
            )
            return back
        try:
            override = override_request(preflight=run, actor=request.user, reason=request.POST.get("reason", ""))
        except DomainError as exc:
            messages.error(request, f"The override was not requested: {exc.message}")
            return back
        messages.success(request, f"{override} requested. {next_step(override)}")
        return HttpResponseRedirect(reverse("admin:scenarios_guardrailoverride_change", args=[override.pk]))

    @method_decorator(require_POST)
    def override_approve_view(self, request: HttpRequest, object_id: str, override_id: int) -> HttpResponseRedirect:
        scenario = self._scenario_for(request, object_id, "scenarios.override_guardrail")
        override = (
            scope_for_user(GuardrailOverride.objects.all(), request.user)
            .filter(pk=override_id, preflight__scenario=scenario)
            .select_related("preflight", "requested_by")
            .first()
        )
        back = HttpResponseRedirect(reverse("admin:scenarios_scenario_deploy", args=[scenario.pk]))
        if override is None:
            messages.error(request, "That override no longer exists.")
            return back
        try:
            override_approve(override=override, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"The override was not approved: {exc.message}")
        else:
            messages.success(
                request, f"Override of {override.preflight.run_id} approved; the scenario may now be deployed live."
            )
        return back


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
