"""Admin for scenarios, preflights, guardrail policies, overrides and deployments.

The scenario page edits the plan (items inline, validated with the import service's
rules and saved through ``scenario_create``/``scenario_update``), shows the latest
preflight as a diff by section with guardrail badges, and offers Preflight, Dry run and
Deploy live. A live deploy is confirmed on a page that shows the diff, the breaches and
the totals and carries an idempotency key made when the page was rendered, so a double
click or a resubmitted form returns the same deployment instead of deploying twice.
Deployment pages show per-entity results and progress as a bar coloured by outcome
(refreshing while queued, running or rolling back) with confirmed Retry failed entities
and Roll back deployment buttons.

Every button calls a service (which checks permission and tenant again) and turns its
domain errors into admin messages; services are imported on use, so a problem in one
of them breaks its button, never the whole admin (the guardrail rule codes and default
severities, which the policy form is built from, are the one import at load).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Model, OuterRef, QuerySet, Subquery
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince
from django.views.decorators.http import require_POST

from actions.models import ActionStatus, ActionType
from budgetradar.admin_base import (
    AMBER,
    BLUE,
    DATE_FILTER,
    EMPTY,
    GREEN,
    GREY,
    RED,
    AuditedForm,
    ReadOnlyAdminMixin,
    TenantScopedAdmin,
    TenantScopedHistoryAdmin,
    admin_link,
    badge,
    change_reason_for,
    confirmation_close,
    confirmation_get,
    confirmation_open,
    denied,
    format_money,
    scope_for_user,
)
from budgetradar.errors import DomainError, ValidationFailed
from budgetradar.models import Tenant
from budgetradar.tenancy import is_platform_staff, tenant_of
from budgetradar.words import change_type_label, entity_type_label, error_label, humanize
from observability.selectors import watch_status_for_deployment
from platforms.models import Platform, PlatformEntity
from platforms.money import currency_exponent
from scenarios.models import (
    Deployment,
    DeploymentResult,
    GuardrailOverride,
    GuardrailPolicy,
    PreflightRun,
    Scenario,
    ScenarioItem,
)
from scenarios.services.guardrails import CRITICAL, DEFAULT_SEVERITIES, FIXED_SEVERITIES, OFF, WARNING, WEEKDAYS

SCENARIO_TONES = {Scenario.Status.DRAFT: BLUE, Scenario.Status.DEPLOYED: GREEN, Scenario.Status.ARCHIVED: GREY}
PREFLIGHT_TONES = {
    PreflightRun.Status.QUEUED: BLUE,
    PreflightRun.Status.RUNNING: BLUE,
    PreflightRun.Status.SUCCEEDED: GREEN,
    PreflightRun.Status.FAILED: RED,
}
DEPLOYMENT_TONES = {
    Deployment.Status.QUEUED: BLUE,
    Deployment.Status.RUNNING: BLUE,
    Deployment.Status.SUCCEEDED: GREEN,
    Deployment.Status.PARTIALLY_SUCCEEDED: AMBER,
    Deployment.Status.FAILED: RED,
    Deployment.Status.CANCELLED: GREY,
    Deployment.Status.ROLLED_BACK: GREY,
    Deployment.Status.PARTIALLY_ROLLED_BACK: AMBER,
}
RESULT_TONES = {
    DeploymentResult.Status.PENDING: BLUE,
    DeploymentResult.Status.SUCCEEDED: GREEN,
    DeploymentResult.Status.VALIDATED: GREEN,
    DeploymentResult.Status.FAILED: RED,
    DeploymentResult.Status.STALE: RED,
    DeploymentResult.Status.BLOCKED: RED,
    DeploymentResult.Status.SKIPPED: GREY,
    DeploymentResult.Status.ROLLED_BACK: GREY,
}
SEVERITY_TONES = {WARNING: AMBER, CRITICAL: RED}
ACTIVE_DEPLOYMENT = (Deployment.Status.QUEUED, Deployment.Status.RUNNING)
TARGET_FIELDS = ("daily_budget", "lifetime_budget", "status", "bid")
FIELD_LABELS = {"daily_budget": "Daily budget", "lifetime_budget": "Lifetime budget", "status": "Status", "bid": "Bid"}
SECTION_LABELS = {"spend": "Spend", "delivery": "Delivery", "audience": "Audience", "creative": "Creative"}
DIFF_PAGE_SIZE = 100
RESULTS_PAGE_SIZE = 200
# Above this many items the page lists them read-only (paged) instead of one form per item:
# imported plans can hold thousands of entities. Such plans are edited by import or the API.
MAX_INLINE_ITEMS = 300
ITEMS_PAGE_SIZE = 200
BREACHES_SHOWN = 200
REFRESH_SECONDS = 5
RULE_LABELS = {
    "max_increase_pct": "Max increase per change (%)",
    "max_decrease_pct": "Max decrease per change (%)",
    "min_daily_budget": "Min daily budget",
    "max_daily_budget": "Max daily budget",
    "max_account_daily_spend": "Max account daily spend",
    "roas_floor": "ROAS floor (forecast)",
    "cpa_ceiling": "CPA ceiling (forecast)",
    "change_window": "Change window",
    "blackout_date": "Blackout dates",
    "max_entities_per_deploy": "Max entities per deploy",
    "cooldown": "Cooldown per entity",
    "learning_phase": "Meta learning phase",
    "shared_budget_reach": "Shared budget reach",
    "notes_required": "Notes required",
    "entity_missing": "Entity missing on the platform",
    "low_confidence_forecast": "Low-confidence forecast",
    "change_rate_limit": "Meta budget changes per ad set per hour",
    "shared_budget_conflict": "Conflicting values for one shared budget",
    "platform_minimum_budget": "Meta minimum daily budget",
    "google_operations_quota": "Google Ads daily operations",
}


# Display helpers ------------------------------------------------------------------------------


def _signed(value: str | None, unit: str | None) -> str:
    """``+50.00 EUR`` / ``-12.50 EUR`` / a dash."""
    if value in (None, ""):
        return EMPTY
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    text = format_money(abs(number), unit) if unit else f"{abs(number):,}"
    return f"{'-' if number < 0 else '+'}{text}"


def _value(value: Any, unit: str | None) -> str:
    if value in (None, ""):
        return EMPTY
    return format_money(value, unit) if unit else str(value)


def _percent(value: str | None) -> str:
    if value in (None, ""):
        return EMPTY
    return f"{'' if str(value).startswith('-') else '+'}{value} %"


def platform_label(code: str | None) -> str:
    return Platform(code).label if code in Platform.values else humanize(code)


def breach_badge(breach: dict) -> SafeString:
    """``critical · Max increase per change (%)`` in red (warning: amber), the message as its tooltip."""
    severity = breach.get("severity", WARNING)
    return format_html(
        '<span class="br-badge br-badge-{}" title="{}">{} · {}</span>',
        SEVERITY_TONES.get(severity, AMBER),
        breach.get("message", ""),
        severity,
        RULE_LABELS.get(breach.get("code", ""), humanize(breach.get("code"))),
    )


def preflight_badge(run: PreflightRun | None = None, *, status: str | None = None, critical: bool = False):
    """The status of a preflight, or its guardrail verdict once it succeeded."""
    status = run.status if run is not None else status
    critical = run.has_critical if run is not None else critical
    if status is None:
        return badge("No preflight", GREY)
    if status != PreflightRun.Status.SUCCEEDED:
        return badge(PreflightRun.Status(status).label, PREFLIGHT_TONES.get(status, GREY))
    return badge("Critical breaches", RED) if critical else badge("Passed", GREEN)


def deployment_counts(deployment: Deployment) -> str:
    parts = [
        f"{getattr(deployment, name)} {label}"
        for name, label in [
            ("succeeded", "succeeded"),
            ("validated", "validated"),
            ("failed", "failed"),
            ("stale", "stale"),
            ("blocked", "blocked"),
            ("skipped", "unchanged"),
            ("rolled_back", "rolled back"),
            ("pending", "pending"),
        ]
        if getattr(deployment, name)
    ]
    return f"{', '.join(parts) or 'nothing'} of {deployment.total}"


# The progress bar's segments, left to right: (CSS class suffix, label, counts it sums).
OUTCOME_SEGMENTS = [
    ("succeeded", "succeeded", ("succeeded", "validated")),
    ("failed", "failed", ("failed", "stale", "blocked")),
    ("rolled-back", "rolled back", ("rolled_back",)),
    ("skipped", "unchanged", ("skipped",)),
    ("pending", "pending", ("pending",)),
]


def progress_segments(deployment: Deployment) -> list[dict[str, Any]]:
    """The deployment's entities by outcome as bar segments (``x`` and ``width`` in percent
    of ``total``, touching and summing to 100); empty segments are left out."""
    segments, start = [], 0
    for name, label, fields in OUTCOME_SEGMENTS:
        count = sum(getattr(deployment, f) for f in fields)
        if count and deployment.total:
            x, end = 100 * start / deployment.total, 100 * (start + count) / deployment.total
            segments.append({"name": name, "label": f"{count} {label}", "x": f"{x:.2f}", "width": f"{end - x:.2f}"})
            start += count
    return segments


def _person(user) -> str:
    """People are shown by name: a link would lead tenant members to the user admin they may not see."""
    return str(user) if user is not None else EMPTY


def _page_number(request: HttpRequest, name: str) -> int:
    raw = request.GET.get(name, "1")
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


# The diff view ------------------------------------------------------------------------------------


@dataclass
class FieldRow:
    section: str
    label: str
    before: str
    after: str
    delta: str
    percent: str
    unit: str
    forecast: str
    changed: bool
    breaches: list[SafeString]
    messages: list[str]


def _field_row(section: str, change: dict, currency: str) -> FieldRow:
    unit = change.get("unit")
    forecast = change.get("forecast_delta")
    forecast_text = EMPTY
    if forecast:
        conversions, revenue = _signed(forecast.get("conversions"), None), _signed(forecast.get("revenue"), currency)
        forecast_text = f"conversions {conversions}, revenue {revenue}"
    percent = _percent(change.get("percent_delta"))
    if change.get("from_zero"):
        percent = "new (from zero)"
    breaches = change.get("breaches") or []
    return FieldRow(
        section=SECTION_LABELS.get(section, section.capitalize()),
        label=change.get("label") or FIELD_LABELS.get(change.get("field"), change.get("field", "")),
        before=_value(change.get("before"), unit),
        after=_value(change.get("after"), unit),
        delta=_signed(change.get("delta"), unit) if change.get("changed") else EMPTY,
        percent=percent if change.get("changed") else EMPTY,
        unit=unit or EMPTY,
        forecast=forecast_text,
        changed=bool(change.get("changed")),
        breaches=[breach_badge(b) for b in breaches],
        messages=[b.get("message", "") for b in breaches],
    )


def _forecast_text(forecast: dict | None, status: str | None, currency: str) -> str:
    if forecast:
        return (
            f"{forecast.get('model', 'forecast').replace('_', ' ')} model, confidence {forecast.get('confidence')} "
            f"(R² {forecast.get('r_squared')}, {forecast.get('days')} days): spend "
            f"{_value(forecast.get('spend_before'), currency)} → {_value(forecast.get('spend_after'), currency)}, "
            f"conversions {forecast.get('conversions_before')} → {forecast.get('conversions_after')}, revenue "
            f"{_value(forecast.get('revenue_before'), currency)} → {_value(forecast.get('revenue_after'), currency)}"
        )
    if status == "no_data":
        return "No forecast: not enough daily performance to fit a response curve."
    return ""


def _entity_view(doc: dict) -> dict[str, Any]:
    currency = doc.get("currency") or ""
    rows = [
        _field_row(section, change, currency)
        for section in SECTION_LABELS
        for change in (doc.get("sections") or {}).get(section, [])
    ]
    shared = doc.get("shared_budget")
    shared_text = ""
    if shared:
        names = ", ".join(c.get("name") or c.get("external_id", "") for c in shared.get("campaigns", []))
        shared_text = (
            f"Shared budget {shared.get('budget_id')}: changing it moves {shared.get('reference_count')} "
            f"campaigns ({names})."
        )
    return {
        "key": doc.get("key"),
        "entity_id": doc.get("entity_id"),
        "name": doc.get("name"),
        "platform": doc.get("platform"),
        "platform_label": platform_label(doc.get("platform")),
        "entity_type": entity_type_label(doc.get("entity_type")),
        "external_id": doc.get("external_id"),
        "change_type": doc.get("change_type"),
        "change_badge": badge(
            change_type_label(doc.get("change_type")), {"update": BLUE, "noop": GREY}.get(doc.get("change_type"), AMBER)
        ),
        "rows": rows,
        "breaches": [(breach_badge(b), b.get("message", "")) for b in doc.get("breaches") or []],
        "field_breaches": sum(len(r.breaches) for r in rows),
        "critical": any(
            b.get("severity") == CRITICAL
            for b in [*(doc.get("breaches") or []), *(b for r in _changes(doc) for b in r.get("breaches") or [])]
        ),
        "shared_budget": shared_text,
        "forecast": _forecast_text(doc.get("forecast"), doc.get("forecast_status"), currency),
        "low_confidence": bool(doc.get("forecast")) and doc["forecast"].get("confidence") == "low",
    }


def _changes(doc: dict) -> list[dict]:
    return [change for changes in (doc.get("sections") or {}).values() for change in changes]


def _summary_view(payload: dict) -> dict[str, Any]:
    summary = payload.get("summary") or {}
    platforms = []
    for name, values in (summary.get("by_platform") or {}).items():
        by_currency = values.get("by_currency") or ({values["currency"]: values} if values.get("currency") else {})
        for currency, money in by_currency.items():
            platforms.append(
                {
                    "platform": name,
                    "platform_label": platform_label(name),
                    "entities": values.get("entities"),
                    "changed": values.get("changed"),
                    "currency": currency,
                    "before": _value(money.get("daily_budget_before"), currency),
                    "after": _value(money.get("daily_budget_after"), currency),
                    "delta": _signed(money.get("daily_budget_delta"), currency),
                }
            )
    total = summary.get("total") or {}
    forecast = total.get("forecast") or {}
    revenue = forecast.get("revenue_delta_by_currency") or {}
    confidence = forecast.get("confidence") or {}
    return {
        "entities": summary.get("entities", 0),
        "changed": summary.get("changed", 0),
        "noop": summary.get("noop", 0),
        "sections": [
            (SECTION_LABELS.get(name, name), values.get("changes", 0), values.get("entities", 0))
            for name, values in (summary.get("by_section") or {}).items()
        ],
        "platforms": platforms,
        "budget_delta": [
            _signed(value, currency) for currency, value in (total.get("daily_budget_delta_by_currency") or {}).items()
        ],
        "conversions_delta": _signed(forecast.get("conversions_delta"), None),
        "revenue_delta": [_signed(value, currency) for currency, value in revenue.items()],
        "confidence": ", ".join(f"{n} {level}" for level, n in confidence.items() if n) or EMPTY,
    }


def diff_context(run: PreflightRun | None, *, page: int = 1) -> dict[str, Any] | None:
    """Everything the diff template shows for ``run``: summary, totals, breaches and one
    page of entities (big plans are paged so a page never renders 10,000 tables)."""
    if run is None:
        return None
    payload = run.payload or {}
    # Entities are rows: a page of the diff reads its page (and a count), never the whole run.
    paginator = Paginator(run.entity_documents.only("document").order_by("position"), DIFF_PAGE_SIZE)
    current = paginator.get_page(page)
    breaches = payload.get("breaches") or []
    run_level = [b for b in breaches if not b.get("key")]
    critical = [b for b in breaches if b.get("severity") == CRITICAL]
    return {
        "run": run,
        "badge": preflight_badge(run),
        "generated_at": payload.get("generated_at"),
        "has_payload": bool(payload),
        "summary": _summary_view(payload) if payload else None,
        "run_breaches": [(breach_badge(b), b.get("message", "")) for b in run_level],
        "breaches": [(breach_badge(b), b.get("message", ""), b.get("key")) for b in breaches[:BREACHES_SHOWN]],
        "breaches_more": max(len(breaches) - BREACHES_SHOWN, 0),
        "critical_count": len(critical),
        "warning_count": len(breaches) - len(critical),
        "entities": [_entity_view(row.document) for row in current.object_list],
        "page": current,
        "paginated": paginator.num_pages > 1,
    }


def preflight_freshness(run: PreflightRun, scenario: Scenario | None) -> str:
    """Whether ``run`` may still be deployed: its platforms' age limit, counted from when
    its reads finished, and changes to the plan since."""
    from scenarios.services.preflight import preflight_age_rule, preflight_is_fresh, preflight_read_at

    if run.status in (PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING):
        return "This preflight is still reading the platforms; a live deploy waits until it has succeeded."
    if run.status != PreflightRun.Status.SUCCEEDED:
        return "This preflight did not succeed; run a new one before deploying."
    read_at, rule = preflight_read_at(run), preflight_age_rule(run)
    if not preflight_is_fresh(run):
        return f"Read {timesince(read_at)} ago: older than {rule}, so run a new preflight to deploy."
    if scenario is not None and scenario.updated_at > run.created_at:
        return "The scenario changed after this preflight; run a new preflight before deploying."
    return f"Read {timesince(read_at)} ago; a live deploy needs a preflight whose reads finished less than {rule} ago."


def preflight_progress(run: PreflightRun) -> dict[str, Any]:
    """Entities read of a preflight (a worker's preflight grows batch by batch)."""
    total = run.entities_total or len(run.inputs or [])
    read = min(run.entities_read, total) if total else run.entities_read
    state = "waiting for a worker" if run.status == PreflightRun.Status.QUEUED else "reading the platforms"
    freshness = preflight_freshness(run, run.scenario) if run.scenario_id and run.action_id is None else ""
    return {
        "total": total,
        "read": read,
        "percent": round(100 * read / total) if total else 100,
        "state": state,
        "freshness": freshness,
    }


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
        from scenarios.services.imports import parse_item_list

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
        return _person(scenario.created_by)

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
        from scenarios.services.imports import scenario_create, scenario_update

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
        latest = _latest_preflight(scenario)
        user = request.user
        extra_context = {
            **(extra_context or {}),
            "diff": diff_context(latest, page=_page_number(request, "diff_page")),
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
        return Paginator(items, ITEMS_PAGE_SIZE).get_page(_page_number(request, "items_page"))

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
        from scenarios.services.imports import check_size, scenario_import

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
        from scenarios.services.adpush import scenario_preflight_request

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
            breaches = (run.payload or {}).get("breaches") or []
            critical = sum(1 for b in breaches if b.get("severity") == CRITICAL)
            level = messages.WARNING if critical else messages.SUCCESS
            messages.add_message(
                request,
                level,
                f"Preflight {run.run_id}: {summary.get('changed', 0)} of {summary.get('entities', 0)} entities "
                f"change; {critical} critical and {len(breaches) - critical} warning guardrail breaches.",
            )
        return HttpResponseRedirect(self._change_url(scenario, "#preflight"))

    @method_decorator(require_POST)
    def dry_run_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """A fresh preflight plus the platforms' validate-only calls; nothing changes."""
        from scenarios.services.deploy import deployment_create

        scenario = self._scenario_for(request, object_id, "scenarios.deploy_dry_run")
        key = request.POST.get("idempotency_key") or str(uuid.uuid4())
        try:
            result = deployment_create(scenario=scenario, actor=request.user, mode="dry_run", idempotency_key=key)
        except DomainError as exc:
            messages.error(request, f"The dry run of {scenario.name} was refused: {exc.message}")
            return HttpResponseRedirect(self._change_url(scenario))
        deployment = Deployment.objects.get(tenant=scenario.tenant, pk=result.response["id"])
        messages.success(
            request, f"Dry run #{deployment.pk}: {deployment_counts(deployment)}. Nothing was changed on the platforms."
        )
        return HttpResponseRedirect(reverse("admin:scenarios_deployment_change", args=[deployment.pk]))

    def deploy_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the confirmation (diff, breaches, totals, override state, a fresh key).
        POST: deploy once per key; a repeated key returns the same deployment."""
        scenario = self._scenario_for(request, object_id, "scenarios.deploy_live")
        latest = _latest_preflight(scenario, succeeded=True)
        if request.method == "POST":
            return self._deploy(request, scenario, latest)
        if latest is None:
            messages.error(request, f"Scenario {scenario.name} has no successful preflight yet; run a preflight first.")
            return HttpResponseRedirect(self._change_url(scenario))
        return self._render_deploy(request, scenario, latest)

    def _render_deploy(self, request: HttpRequest, scenario: Scenario, run: PreflightRun) -> TemplateResponse:
        from safety.four_eyes import scenario_authors
        from safety.gate import deploy_blocking, deploy_plans

        user = request.user
        overrides = list(run.overrides.select_related("requested_by", "approved_by").order_by("-created_at"))
        approved = next((o for o in overrides if o.approved), None)
        pending = [o for o in overrides if o.pending]
        may_override = user.has_perm("scenarios.override_guardrail")
        blocking = deploy_blocking(run)
        blocked = bool(blocking) and approved is None
        four_eyes = scenario.tenant.four_eyes_required and user.pk in scenario_authors(scenario)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Deploy {scenario.name} live?",
            "scenario": scenario,
            "diff": diff_context(run, page=_page_number(request, "diff_page")),
            "freshness": preflight_freshness(run, scenario),
            "idempotency_key": str(uuid.uuid4()),
            "blocked": blocked,
            "approved_override": approved,
            "pending_overrides": [
                {"override": o, "can_approve": may_override and o.requested_by_id != user.pk} for o in pending
            ],
            "can_request_override": may_override and bool(blocking) and approved is None and not pending,
            "plans": [(name, plan.sentence()) for name, plan in deploy_plans(run)],
            "four_eyes": four_eyes,
            "rollback_hours": settings.ROLLBACK_VALID_HOURS,
            "back_url": self._change_url(scenario),
        }
        return TemplateResponse(request, "admin/scenarios/scenario/deploy_confirm.html", context)

    def _deploy(self, request: HttpRequest, scenario: Scenario, latest: PreflightRun | None) -> HttpResponseRedirect:
        from scenarios.services.deploy import deployment_create

        key = request.POST.get("idempotency_key", "")
        confirmed = request.POST.get("preflight", "")
        override = request.POST.get("override", "")
        existing = Deployment.objects.filter(tenant=scenario.tenant, idempotency_key=key).first() if key else None
        if existing is None and (latest is None or str(latest.pk) != confirmed):
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
        from safety.overrides import override_request
        from scenarios.selectors import next_step

        scenario = self._scenario_for(request, object_id, "scenarios.override_guardrail")
        run = _latest_preflight(scenario, succeeded=True)
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
        from safety.overrides import override_approve

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


def _latest_preflight(scenario: Scenario, *, succeeded: bool = False) -> PreflightRun | None:
    runs = scenario.preflights.select_related("created_by").order_by("-created_at", "-id")
    if succeeded:
        runs = runs.filter(status=PreflightRun.Status.SUCCEEDED)
    return runs.first()


# Preflight runs --------------------------------------------------------------------------------------


class OverridesInline(admin.TabularInline):
    model = GuardrailOverride
    fields = ["reason", "requester", "approver", "approved_at", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Overrides of its critical breaches"

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.has_perm("scenarios.view_preflightrun")

    @admin.display(description="Requested by")
    def requester(self, override: GuardrailOverride) -> str:
        return _person(override.requested_by)

    @admin.display(description="Approved by")
    def approver(self, override: GuardrailOverride) -> str:
        return _person(override.approved_by)


@admin.register(PreflightRun)
class PreflightRunAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """Every preflight ever run (read-only): the diff, the breaches and the totals."""

    list_display = [
        "run_id",
        "scenario",
        "action",
        "mode",
        "status_badge",
        "guardrails",
        "plan_id",
        "created_by",
        "created_at",
    ]
    list_display_links = ["run_id"]
    list_select_related = ["scenario", "action__entity", "created_by"]
    list_filter = ["status", "mode", "has_critical", "scenario", DATE_FILTER]
    search_fields = ["run_id", "plan_id", "scenario__name"]
    fields = [
        "run_id",
        "scenario",
        "action",
        "mode",
        "status_badge",
        "plan_id",
        "notes",
        "error_message",
        "author",
        "created_at",
        "started_at",
        "reads_finished_at",
        "finished_at",
    ]
    readonly_fields = fields
    inlines = [OverridesInline]

    @admin.display(description="Run by")
    def author(self, run: PreflightRun) -> str:
        return _person(run.created_by)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The document can be megabytes; lists never load it.
        return super().get_queryset(request).defer("payload", "inputs")

    @admin.display(description="Status", ordering="status")
    def status_badge(self, run: PreflightRun):
        return badge(run.get_status_display(), PREFLIGHT_TONES.get(run.status, GREY))

    @admin.display(description="Guardrails", ordering="has_critical")
    def guardrails(self, run: PreflightRun):
        return preflight_badge(run)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "preflight_progress": preflight_progress(run) if run is not None else None,
            "preflight_active": run is not None
            and run.status in (PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING),
            "refresh_seconds": REFRESH_SECONDS,
            "diff": diff_context(run, page=_page_number(request, "diff_page")),
            "deployments": list(run.deployments.order_by("-created_at", "-id")[:20]),
            "status_tones": DEPLOYMENT_TONES,
        }
        return super().change_view(request, object_id, form_url, extra_context)


# Guardrail policies ------------------------------------------------------------------------------------


class BlackoutDatesField(forms.CharField):
    """ISO dates, one a line, stored as a sorted list of ``YYYY-MM-DD`` strings."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 20})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return value
        text = super().to_python(value)
        dates, bad = set(), []
        for raw in text.replace(",", "\n").split():
            try:
                dates.add(date.fromisoformat(raw.strip()).isoformat())
            except ValueError:
                bad.append(raw)
        if bad:
            raise forms.ValidationError(f"Not a date (use YYYY-MM-DD): {', '.join(bad)}.")
        return sorted(dates)


def _severity_field(code: str) -> forms.ChoiceField:
    default = DEFAULT_SEVERITIES[code]
    return forms.ChoiceField(
        label=RULE_LABELS.get(code, code),
        required=False,
        choices=[
            ("", f"Default ({default})"),
            (WARNING, "Warning (shown, does not block)"),
            (CRITICAL, "Critical (blocks a live deploy unless overridden)"),
            (OFF, "Off (not evaluated)"),
        ],
    )


SEVERITY_CODES = [code for code in DEFAULT_SEVERITIES if code not in FIXED_SEVERITIES]


POLICY_MONEY_FIELDS = ["min_daily_budget", "max_daily_budget", "max_account_daily_spend", "cpa_ceiling"]


class _GuardrailPolicyFormBase(AuditedForm):
    """The policy with readable widgets: weekday checkboxes, one blackout date a line and
    one severity select per rule (stored together in ``severities``)."""

    change_window_days = forms.TypedMultipleChoiceField(
        choices=[(i, day) for i, day in enumerate(WEEKDAYS)],
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Change window days",
        help_text="Days changes are allowed on, in the account's time zone; none ticked: every day.",
    )
    blackout_dates = BlackoutDatesField(required=False, help_text="No changes on these dates; one YYYY-MM-DD a line.")

    class Meta:
        model = GuardrailPolicy
        exclude = ["severities"]
        labels = {
            "max_increase_pct": "Max increase per change (%)",
            "max_decrease_pct": "Max decrease per change (%)",
            "roas_floor": "ROAS floor",
            "cpa_ceiling": "CPA ceiling",
            "learning_phase_change_pct": "Learning phase change (%)",
            "shared_budget_max_campaigns": "Max campaigns on a shared budget",
        }
        help_texts = {
            "max_increase_pct": "Empty switches a rule off.",
            "learning_phase_change_pct": "Meta ad sets changed by more than this re-enter the learning phase.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for code, severity in (self.instance.severities or {}).items():
            if f"severity_{code}" in self.fields:
                self.fields[f"severity_{code}"].initial = severity
        self._show_currency()

    def _show_currency(self) -> None:
        """Money fields name their currency and show amounts at its precision (not 1000.0000)."""
        policy = self.instance
        tenant = policy.tenant if policy.tenant_id else self.owner_tenant
        currency = policy.connection.currency if policy.connection_id else getattr(tenant, "currency", "")
        if not currency:
            return
        places = Decimal(1).scaleb(-currency_exponent(currency))
        for name in POLICY_MONEY_FIELDS:
            if name not in self.fields:
                continue
            self.fields[name].label = f"{self.fields[name].label} ({currency})"
            value = self.initial.get(name)
            if isinstance(value, Decimal) and value == value.quantize(places):
                self.initial[name] = value.quantize(places)

    def clean(self) -> dict:
        cleaned = super().clean()
        start, end = cleaned.get("change_window_start"), cleaned.get("change_window_end")
        if (start is None) != (end is None):
            self.add_error("change_window_end", "Give both the start and the end of the change window, or neither.")
        for low, high in [("min_daily_budget", "max_daily_budget")]:
            if cleaned.get(low) is not None and cleaned.get(high) is not None and cleaned[low] > cleaned[high]:
                self.add_error(high, "The maximum daily budget is below the minimum.")
        return cleaned

    def save(self, commit: bool = True) -> GuardrailPolicy:
        self.instance.severities = {
            code: self.cleaned_data[f"severity_{code}"]
            for code in SEVERITY_CODES
            if self.cleaned_data.get(f"severity_{code}")
        }
        return super().save(commit)


# One declared select per rule, so the admin's fieldsets can name each of them.
GuardrailPolicyForm = type(
    "GuardrailPolicyForm",
    (_GuardrailPolicyFormBase,),
    {"__module__": __name__, **{f"severity_{code}": _severity_field(code) for code in SEVERITY_CODES}},
)


def window_zone_help(policy: GuardrailPolicy | None) -> str:
    """Which zone a policy's change window and blackout dates are read in."""
    if policy is not None and policy.connection_id:
        # Django renders a fieldset description as HTML: the name is escaped here.
        return format_html(
            "Days and times are in {}'s time zone, {}.", policy.connection.name, policy.connection.time_zone
        )
    return "Days and times are in each account's own time zone (shown on its connection)."


def change_window_text(policy: GuardrailPolicy) -> str:
    """``Mon, Tue 09:00–17:00 Europe/Berlin``: a window is in its account's zone, so it is named."""
    names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    picked = [names[d] for d in policy.change_window_days or [] if isinstance(d, int) and 0 <= d < 7]
    days = ", ".join(picked) if picked else "every day"
    start, end = policy.change_window_start, policy.change_window_end
    hours = f" {start:%H:%M}–{end:%H:%M}" if start is not None and end is not None else ""
    zone = policy.connection.time_zone if policy.connection_id else "in each account's time zone"
    return f"{days}{hours} {zone}"


@admin.register(GuardrailPolicy)
class GuardrailPolicyAdmin(TenantScopedHistoryAdmin):
    """Limits every change is checked against, per tenant and optionally per connection."""

    form = GuardrailPolicyForm
    list_display = ["name", "applies_to", "limits", "severity_overrides", "updated_at"]
    list_display_links = ["name"]
    list_select_related = ["connection", "tenant"]
    list_filter = ["connection"]
    search_fields = ["name", "connection__name"]
    readonly_fields = ["updated_at"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "connection"]}),
        (
            "Budget changes",
            {
                "fields": [
                    "max_increase_pct",
                    "max_decrease_pct",
                    "min_daily_budget",
                    "max_daily_budget",
                    "max_account_daily_spend",
                    "shared_budget_max_campaigns",
                ]
            },
        ),
        ("Forecast", {"fields": ["roas_floor", "cpa_ceiling"]}),
        (
            "When and how often",
            {
                "fields": [
                    "change_window_days",
                    "change_window_start",
                    "change_window_end",
                    "blackout_dates",
                    "cooldown_hours",
                    "max_entities_per_deploy",
                ]
            },
        ),
        ("Other", {"fields": ["learning_phase_warning", "learning_phase_change_pct", "require_notes"]}),
        (
            "Severity per rule",
            {
                "fields": [f"severity_{code}" for code in SEVERITY_CODES],
                "description": "Critical breaches block a live deploy unless a second person approves an override; "
                "an entity missing on the platform is always critical.",
            },
        ),
        (None, {"fields": ["updated_at"]}),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: GuardrailPolicy | None = None):
        fieldsets = [
            (name, {**opts, "description": window_zone_help(obj)} if name == "When and how often" else opts)
            for name, opts in super().get_fieldsets(request, obj)
        ]
        if obj is None:
            fieldsets = [(name, opts) for name, opts in fieldsets if opts["fields"] != ["updated_at"]]
        return fieldsets

    @admin.display(description="Applies to", ordering="connection__name")
    def applies_to(self, policy: GuardrailPolicy) -> str:
        return policy.connection.name if policy.connection_id else "Every connection (tenant default)"

    @admin.display(description="Limits")
    def limits(self, policy: GuardrailPolicy) -> str:
        parts = []
        if policy.max_increase_pct is not None:
            parts.append(f"+{policy.max_increase_pct}% max")
        if policy.max_decrease_pct is not None:
            parts.append(f"-{policy.max_decrease_pct}% max")
        if policy.min_daily_budget is not None or policy.max_daily_budget is not None:
            currency = policy.connection.currency if policy.connection_id else policy.tenant.currency
            low, high = policy.min_daily_budget, policy.max_daily_budget
            shown = f"{format_money(low or 0, currency)}–{format_money(high, currency) if high is not None else '∞'}"
            parts.append(f"daily budget {shown}")
        if policy.change_window_start is not None or policy.change_window_days:
            parts.append(f"change window {change_window_text(policy)}")
        if policy.cooldown_hours:
            parts.append(f"cooldown {policy.cooldown_hours} h")
        if policy.blackout_dates:
            parts.append(f"{len(policy.blackout_dates)} blackout dates")
        return ", ".join(parts) or "No thresholds"

    @admin.display(description="Severities changed")
    def severity_overrides(self, policy: GuardrailPolicy) -> str:
        return ", ".join(f"{code}: {sev}" for code, sev in sorted((policy.severities or {}).items())) or EMPTY


class OverrideDecisionForm(forms.Form):
    comment = forms.CharField(
        required=False,
        max_length=1000,
        label="Comment",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Recorded with your name in the override's history.",
    )

    def __init__(self, *args, required: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["comment"].required = required


@admin.register(GuardrailOverride)
class GuardrailOverrideAdmin(ReadOnlyAdminMixin, TenantScopedHistoryAdmin):
    """Who asked to go ahead despite critical breaches, why, and who decided. The page shows
    the breaches it lets through and what happens next; a second person with the override
    permission approves or rejects it here, on a confirmation page that takes a comment."""

    list_display = ["preflight", "scenario", "action", "state", "reason", "requested_by", "approved_by", "created_at"]
    list_select_related = ["preflight__scenario", "preflight__action__entity", "requested_by", "approved_by"]
    list_filter = ["requested_by", "approved_by"]
    search_fields = ["preflight__run_id", "reason"]
    fields = [
        "preflight_link",
        "scenario",
        "action",
        "state",
        "reason",
        "requester",
        "created_at",
        "decider",
        "decided_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).defer("preflight__inputs")

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/decide/<str:decision>/",
                view(self.decide_view),
                name="scenarios_guardrailoverride_decide",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        from scenarios.selectors import approve_refusal, next_step, override_breaches

        override = self.get_object(request, object_id)
        if override is None:
            return super().change_view(request, object_id, form_url, extra_context)
        may = request.user.has_perm("scenarios.override_guardrail")
        extra_context = {
            **(extra_context or {}),
            "override": override,
            "breaches": [(breach_badge(b), b.get("message", "")) for b in override_breaches(override)],
            "next_step": next_step(override),
            "can_decide": may and override.pending,
            "approve_refusal": approve_refusal(override, request.user) if may and override.pending else "",
            "links": _override_links(override),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def decide_view(self, request: HttpRequest, object_id: str, decision: str) -> HttpResponse:
        """GET: what approving (or rejecting) will do, with a comment field; writes nothing.
        POST: the decision through ``safety.overrides``; back to the override's page."""
        from safety.overrides import override_approve, override_reject
        from scenarios.selectors import override_breaches

        override = self.get_object(request, object_id)
        if override is None or decision not in ("approve", "reject"):
            raise Http404("No such override or decision.")
        if not request.user.has_perm("scenarios.override_guardrail"):
            raise denied(request.user, "scenarios.override_guardrail")
        back = reverse("admin:scenarios_guardrailoverride_change", args=[override.pk])
        approving = decision == "approve"
        form = OverrideDecisionForm(request.POST or None, required=not approving)
        if request.method == "POST" and form.is_valid():
            comment = form.cleaned_data["comment"]
            try:
                if approving:
                    override_approve(override=override, actor=request.user, comment=comment)
                else:
                    override_reject(override=override, actor=request.user, comment=comment)
            except DomainError as exc:
                messages.error(request, f"{override} was not {'approved' if approving else 'rejected'}: {exc.message}")
            else:
                messages.success(request, _decision_message(override, approving))
            return HttpResponseRedirect(back)
        breaches = override_breaches(override)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{'Approve' if approving else 'Reject'} the {str(override)[0].lower()}{str(override)[1:]}?",
            "override": override,
            "approving": approving,
            "consequence": _decision_consequence(override, approving, len(breaches)),
            "breaches": [(breach_badge(b), b.get("message", "")) for b in breaches],
            "form": form,
            "submit": "Yes, approve the override" if approving else "Yes, reject the override",
            "back_url": back,
        }
        return TemplateResponse(request, "admin/scenarios/guardrailoverride/decide.html", context)

    @admin.display(description="Requested by")
    def requester(self, override: GuardrailOverride) -> str:
        return _person(override.requested_by)

    @admin.display(description="Decided by")
    def decider(self, override: GuardrailOverride) -> str:
        return _person(override.approved_by or override.rejected_by)

    @admin.display(description="Decided at")
    def decided_at(self, override: GuardrailOverride):
        return override.approved_at or override.rejected_at or EMPTY

    @admin.display(description="Preflight")
    def preflight_link(self, override: GuardrailOverride):
        return admin_link(override.preflight, override.preflight.run_id)

    @admin.display(description="Scenario")
    def scenario(self, override: GuardrailOverride):
        scenario = override.preflight.scenario
        return admin_link(scenario, scenario.name) if scenario else EMPTY

    @admin.display(description="Action")
    def action(self, override: GuardrailOverride):
        action = override.preflight.action
        return admin_link(action, f"#{action.pk} on {action.entity.name}") if action else EMPTY

    @admin.display(description="State", ordering="approved_at")
    def state(self, override: GuardrailOverride):
        from scenarios.selectors import STATE_LABELS, override_state

        state = override_state(override)
        return badge(STATE_LABELS[state], {"approved": GREEN, "rejected": GREY}.get(state, AMBER))


def _override_links(override: GuardrailOverride) -> list[tuple[str, str]]:
    """(label, url): the scenario, its Deploy live page and its deployments, or the action."""
    preflight = override.preflight
    links = [("Preflight " + preflight.run_id, reverse("admin:scenarios_preflightrun_change", args=[preflight.pk]))]
    if preflight.scenario_id:
        links += [
            (
                f"Scenario {preflight.scenario.name}",
                reverse("admin:scenarios_scenario_change", args=[preflight.scenario_id]),
            ),
            ("Its Deploy live page", reverse("admin:scenarios_scenario_deploy", args=[preflight.scenario_id])),
            (
                "Its deployments",
                reverse("admin:scenarios_deployment_changelist") + f"?scenario__id__exact={preflight.scenario_id}",
            ),
        ]
    if preflight.action_id:
        links.append(
            (f"Action #{preflight.action_id}", reverse("admin:actions_action_change", args=[preflight.action_id]))
        )
    return links


def _decision_consequence(override: GuardrailOverride, approving: bool, count: int) -> str:
    preflight = override.preflight
    target = (
        f"action #{preflight.action_id}" if preflight.action_id else f"a live deploy of scenario {preflight.scenario}"
    )
    breaches = f"{count} critical breach{'es' if count != 1 else ''}"
    if approving:
        return (
            f"Approving lets {target} go ahead despite the {breaches} below of preflight {preflight.run_id}, "
            f"as {override.requested_by} asked (“{override.reason}”). Nothing is deployed yet: the deploy itself "
            "is still confirmed on its own page. Your name and comment go into the override's history."
        )
    return (
        f"Rejecting keeps the {breaches} below blocking {target}; {override.requested_by} sees your comment in the "
        "override's history and may request a new override. Nothing changes on the platforms."
    )


def _decision_message(override: GuardrailOverride, approving: bool) -> str:
    preflight = override.preflight
    if not approving:
        return f"{override} rejected; its breaches still block. {override.requested_by} may request a new one."
    if preflight.scenario_id:
        return f"{override} approved; scenario {preflight.scenario} may now be deployed live from its Deploy live page."
    return f"{override} approved; action #{preflight.action_id} may now go ahead."


# Deployments ---------------------------------------------------------------------------------------


def _state_text(values: dict | None, currency: str) -> dict[str, str]:
    values = values or {}
    return {
        field: (format_money(values[field], currency) if field != "status" else str(values[field]))
        for field in TARGET_FIELDS
        if values.get(field) not in (None, "")
    }


def result_row(result: DeploymentResult) -> dict[str, Any]:
    """One entity's result: ``Daily budget: 100.00 EUR → 150.00 EUR`` for the fields that differ."""
    entity = result.entity
    currency = entity.connection.currency
    before, after = _state_text(result.before, currency), _state_text(result.after, currency)
    changes = [
        (FIELD_LABELS[field], before.get(field, EMPTY), after.get(field, EMPTY))
        for field in TARGET_FIELDS
        if before.get(field) != after.get(field)
    ]
    return {
        "result": result,
        "entity": entity,
        "status": badge(result.get_status_display(), RESULT_TONES.get(result.status, GREY)),
        "changes": changes,
        "retryable": {True: "yes", False: "no"}.get(result.retryable, EMPTY),
        "action_type": ActionType(result.action_type).label if result.action_type in ActionType.values else EMPTY,
        "error": error_label(result.error_code) if result.error_code else "",
    }


class RetryForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput)


class DeploymentRollbackForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput)
    reason = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Recorded in each action's history and execution log.",
    )


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdminMixin, TenantScopedHistoryAdmin):
    """Dry runs and live pushes: per-entity results, progress, retry and roll back."""

    list_display = ["number", "mode_badge", "status_badge", "scenario", "counts", "requested_by", "created_at"]
    list_display_links = ["number"]
    list_select_related = ["scenario", "requested_by"]
    list_filter = ["mode", "status", "scenario", "requested_by", DATE_FILTER]
    search_fields = ["=id", "scenario__name", "idempotency_key", "preflight__run_id"]
    search_help_text = "Search by deployment id, scenario name, idempotency key or preflight run id."
    fields = [
        "mode_badge",
        "status_badge",
        "scenario_link",
        "preflight_link",
        "override_link",
        "retry_of_link",
        "requester",
        "idempotency_key",
        "created_at",
        "prepared_at",
        "started_at",
        "finished_at",
    ]
    readonly_fields = fields

    @admin.display(description="#", ordering="id")
    def number(self, deployment: Deployment) -> str:
        return f"#{deployment.pk}"

    @admin.display(description="Mode", ordering="mode")
    def mode_badge(self, deployment: Deployment):
        return badge(deployment.get_mode_display(), RED if deployment.mode == Deployment.Mode.LIVE else BLUE)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, deployment: Deployment):
        return badge(deployment.get_status_display(), DEPLOYMENT_TONES.get(deployment.status, GREY))

    @admin.display(description="Results")
    def counts(self, deployment: Deployment) -> str:
        return deployment_counts(deployment)

    @admin.display(description="Scenario")
    def scenario_link(self, deployment: Deployment):
        return admin_link(deployment.scenario)

    @admin.display(description="Preflight")
    def preflight_link(self, deployment: Deployment):
        return admin_link(deployment.preflight, deployment.preflight.run_id)

    @admin.display(description="Override")
    def override_link(self, deployment: Deployment):
        override = deployment.override
        if override is None:
            return EMPTY
        return format_html(
            "{} by {}, approved by {}",
            admin_link(override, override.reason),
            override.requested_by,
            override.approved_by,
        )

    @admin.display(description="Requested by")
    def requester(self, deployment: Deployment) -> str:
        return _person(deployment.requested_by)

    @admin.display(description="Retry of")
    def retry_of_link(self, deployment: Deployment):
        return admin_link(deployment.retry_of)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/retry/", view(self.retry_view), name="scenarios_deployment_retry"),
            path("<path:object_id>/rollback/", view(self.rollback_view), name="scenarios_deployment_rollback"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        deployment = self.get_object(request, object_id)
        preparing = deployment.prepared_at is None and deployment.status == Deployment.Status.QUEUED
        results = deployment.results.select_related("entity__connection", "action").order_by("id")
        page = Paginator(results, RESULTS_PAGE_SIZE).get_page(_page_number(request, "results_page"))
        settled = deployment.total - deployment.pending
        rolling_back = deployment.actions.filter(status=ActionStatus.ROLLING_BACK).count()
        extra_context = {
            **(extra_context or {}),
            "deployment": deployment,
            "results": [result_row(r) for r in page.object_list],
            "results_page": page,
            "active": deployment.status in ACTIVE_DEPLOYMENT or bool(rolling_back),
            "rolling_back": rolling_back,
            "preparing": preparing,
            "preparing_changed": _changed_count(deployment) if preparing else 0,
            "refresh_seconds": REFRESH_SECONDS,
            "settled": settled,
            "progress": round(100 * settled / deployment.total) if deployment.total else 100,
            "segments": progress_segments(deployment),
            "buttons": self._buttons(request, deployment),
            "watches": watch_status_for_deployment(deployment),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _buttons(self, request: HttpRequest, deployment: Deployment) -> list[dict[str, str]]:
        buttons = []
        retryable = deployment.mode == Deployment.Mode.LIVE and (deployment.failed or deployment.stale)
        if request.user.has_perm("scenarios.deploy_live") and deployment.scenario_id and retryable:
            buttons.append({"name": "retry", "label": "Retry failed entities", "url": self._url("retry", deployment)})
        if (
            request.user.has_perm("scenarios.rollback_deployment")
            and deployment.mode == Deployment.Mode.LIVE
            and _rollbackable(deployment).exists()
        ):
            buttons.append(
                {"name": "rollback", "label": "Roll back deployment", "url": self._url("rollback", deployment)}
            )
        return buttons

    def _url(self, name: str, deployment: Deployment) -> str:
        return reverse(f"admin:scenarios_deployment_{name}", args=[deployment.pk])

    def _deployment_for(self, request: HttpRequest, object_id: str, perm: str) -> Deployment:
        deployment = self.get_object(request, object_id)
        if not request.user.has_perm(perm):
            raise denied(request.user, perm)
        return deployment

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the failed and stale entities that a new deployment would retry. POST: do it once."""
        from scenarios.services.deploy import deployment_retry_failed

        deployment = self._deployment_for(request, object_id, "scenarios.deploy_live")
        if request.method == "POST":
            form = RetryForm(request.POST)
            pending = confirmation_get(request, request.POST.get("token", "")) if form.is_valid() else None
            if pending is None or pending.get("deployment") != deployment.pk:
                messages.warning(request, "That confirmation has expired; nothing was retried. Open it again.")
                return HttpResponseRedirect(self._url("change", deployment))
            if pending["result"] is not None:  # a second submit shows the first outcome
                return HttpResponseRedirect(reverse("admin:scenarios_deployment_change", args=[pending["result"]]))
            try:
                retry = deployment_retry_failed(deployment=deployment, actor=request.user)
            except DomainError as exc:
                messages.error(request, f"Deployment #{deployment.pk} was not retried: {exc.message}")
                return HttpResponseRedirect(self._url("change", deployment))
            confirmation_close(request, form.cleaned_data["token"], retry.pk)
            messages.success(request, f"Deployment #{retry.pk} retries the failed entities of #{deployment.pk}.")
            return HttpResponseRedirect(self._url("change", retry))
        failed = deployment.results.filter(
            status__in=[DeploymentResult.Status.FAILED, DeploymentResult.Status.STALE]
        ).select_related("entity__connection", "action")
        token = confirmation_open(request, {"operation": "retry", "deployment": deployment.pk})
        context = self._confirm_context(request, deployment, "Retry the failed entities of")
        context.update(
            rows=[result_row(r) for r in failed],
            form=RetryForm(initial={"token": token}),
            consequence="A new preflight reads these entities' live values now; a new live deployment of just them "
            "is created (with its own idempotency key) and handed to the engine. Entities that succeeded are "
            "not touched again. Guardrails apply to the new preflight.",
            submit="Yes, retry these entities",
        )
        return TemplateResponse(request, "admin/scenarios/deployment/confirm.html", context)

    def rollback_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the succeeded actions that would go back to their before-values. POST: do it."""
        from scenarios.services.deploy import deployment_rollback

        deployment = self._deployment_for(request, object_id, "scenarios.rollback_deployment")
        if request.method == "POST":
            form = DeploymentRollbackForm(request.POST)
            pending = confirmation_get(request, request.POST.get("token", "")) if form.is_valid() else None
            if pending is None or pending.get("deployment") != deployment.pk:
                messages.warning(request, "That confirmation has expired; nothing was rolled back. Open it again.")
                return HttpResponseRedirect(self._url("change", deployment))
            if pending["result"] is None:
                try:
                    deployment_rollback(deployment=deployment, actor=request.user, reason=form.cleaned_data["reason"])
                except DomainError as exc:
                    messages.error(request, f"Deployment #{deployment.pk} was not rolled back: {exc.message}")
                    return HttpResponseRedirect(self._url("change", deployment))
                confirmation_close(request, form.cleaned_data["token"], deployment.pk)
                messages.success(
                    request, f"Rollback of deployment #{deployment.pk} queued; the workers restore the before-values."
                )
            return HttpResponseRedirect(self._url("change", deployment))
        actions = _rollbackable(deployment).select_related("entity", "connection")
        token = confirmation_open(request, {"operation": "rollback", "deployment": deployment.pk})
        context = self._confirm_context(request, deployment, "Roll back")
        context.update(
            action_rows=[_rollback_row(a) for a in actions],
            form=DeploymentRollbackForm(initial={"token": token}),
            consequence="Each succeeded action goes back to the value its entity had before the deployment. A "
            "worker reads each entity first: one changed since the deployment is not overwritten (its rollback "
            "fails with the reason; an admin may override drift on the action's own page). Rollback instructions "
            f"are valid for {settings.ROLLBACK_VALID_HOURS} hours after execution.",
            submit="Yes, roll back the deployment",
        )
        return TemplateResponse(request, "admin/scenarios/deployment/confirm.html", context)

    def _confirm_context(self, request: HttpRequest, deployment: Deployment, verb: str) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{verb} deployment #{deployment.pk}?",
            "deployment": deployment,
            "back_url": self._url("change", deployment),
        }


def _changed_count(deployment: Deployment) -> int:
    """Entities the deployment's preflight changes (the actions its worker will create)."""
    summary = (deployment.preflight.payload or {}).get("summary") or {}
    return int(summary.get("changed", 0))


def _rollbackable(deployment: Deployment) -> QuerySet:
    from actions.models import ActionStatus

    return deployment.actions.filter(
        status__in=[ActionStatus.SUCCEEDED, ActionStatus.PARTIALLY_EXECUTED], rollback_deadline__gte=timezone.now()
    ).exclude(rollback_params=None)


def _rollback_row(action) -> dict[str, Any]:
    from actions.admin import rollback_change, rollback_deadline_text, rollback_drift_warning

    return {
        "action": action,
        "change": rollback_change(action),
        "deadline": rollback_deadline_text(action),
        "warning": rollback_drift_warning(action),
    }
