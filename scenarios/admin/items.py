"""A scenario's items inline: target values per entity, validated as a whole by the import
service's rules, and read-only once the scenario is archived."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from budgetradar.admin_base import EMPTY, format_money, scope_for_user
from budgetradar.errors import ValidationFailed
from platforms.models import PlatformEntity
from scenarios.admin.presentation import TARGET_FIELDS
from scenarios.models import Scenario, ScenarioItem
from scenarios.services.imports import parse_item_list


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
        return scenario_editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Scenario | None = None) -> bool:
        return scenario_editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Scenario | None = None) -> bool:
        return scenario_editable(obj) and super().has_delete_permission(request, obj)


def scenario_editable(scenario: Scenario | None) -> bool:
    """An archived scenario's plan is read-only (the service refuses changing it too)."""
    return scenario is None or scenario.status != Scenario.Status.ARCHIVED
