"""Recommendations: the typed add form and the list; adding one creates its action."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html_join

from actions.admin.inlines import (
    RecommendationActionsInline,
)
from actions.admin.presentation import (
    describe_change,
    status_badge,
)
from actions.changes import ParamsError
from actions.models import (
    Recommendation,
)
from actions.services.recommendation_params import PARAM_VALUE_NAMES, params_from_values
from actions.services.recommendations import RecommendationInput, recommendations_create
from budgetradar.admin_base import (
    DATE_FILTER,
    EMPTY,
    TenantOwnedForm,
    TenantScopedAdmin,
    admin_link,
)
from platforms.models import PlatformConnection
from safety.gate import (
    gate_recommendation,
)


def _money_field(label: str) -> forms.DecimalField:
    """An amount; its sign, size and precision are judged by the params service, not here."""
    return forms.DecimalField(label=label, required=False)


class RecommendationForm(TenantOwnedForm):
    """A new recommendation from typed values per action type (never hand-typed JSON),
    validated with the same rules as the API (the params and the safety gate's value
    sanity), so a refused value is an error on the field it is about."""

    budget_type = forms.ChoiceField(
        label="Budget",
        required=False,
        choices=[("daily", "Daily budget"), ("lifetime", "Lifetime budget")],
        initial="daily",
    )
    new_budget = _money_field("New budget")
    budget_change_pct = forms.DecimalField(
        label="Or change by (%)",
        required=False,
        min_value=Decimal("-99"),
        max_value=Decimal("1000"),
        decimal_places=2,
        help_text="Percent of the current budget, e.g. 20 or -15; instead of a new budget.",
    )
    new_bid = _money_field("New bid")
    daily_budget = _money_field("Daily budget")
    lifetime_budget = _money_field("Lifetime budget")
    bid = _money_field("Bid")
    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "Leave as it is"), ("active", "Active"), ("paused", "Paused")]
    )
    replacement = forms.JSONField(
        label="New targeting or schedule",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Only for Update targeting and Update schedule: the platform's structure, replacing the current one.",
    )

    class Meta:
        model = Recommendation
        fields = ["entity", "action_type", "rationale"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        currencies = sorted(
            PlatformConnection.objects.filter(tenant=self.owner_tenant).values_list("currency", flat=True).distinct()
            if self.owner_tenant is not None
            else []
        )
        unit = f"in the account's currency ({', '.join(currencies)})" if currencies else "in the account's currency"
        for name in ("new_budget", "new_bid", "daily_budget", "lifetime_budget", "bid"):
            self.fields[name].help_text = f"Amount {unit}."

    def clean(self) -> dict:
        cleaned = super().clean()
        entity, action_type = cleaned.get("entity"), cleaned.get("action_type")
        if entity is None or not action_type or self.errors:
            return cleaned
        try:
            cleaned["params"] = params_from_values(action_type, cleaned, entity=entity)
            gate_recommendation(entity=entity, action_type=action_type, params=cleaned["params"])
        except ParamsError as exc:
            field = exc.field.split(".")[0]
            self.add_error(field if field in self.fields else None, self._worded(exc.message))
        return cleaned

    def _worded(self, message: str) -> str:
        """The service's message with its param names replaced by the form's labels."""
        for param, name in sorted(PARAM_VALUE_NAMES.items(), key=lambda item: -len(item[0])):
            message = message.replace(param, str(self.fields[name].label))
        return message


@admin.register(Recommendation)
class RecommendationAdmin(TenantScopedAdmin):
    """Proposed changes. Adding one creates its action, pending approval; recommendations
    are not edited afterwards (the action carries the change)."""

    form = RecommendationForm
    list_display = ["created_at", "entity", "action_type", "change_summary", "source", "created_by", "action_status"]
    list_select_related = ["entity__connection", "created_by"]
    list_filter = ["action_type", "source", "entity__connection", DATE_FILTER]
    search_fields = ["entity__name", "entity__external_id", "rationale", "source"]
    autocomplete_fields = ["entity"]
    readonly_fields = ["source", "created_by", "created_at"]
    inlines = [RecommendationActionsInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("actions")

    def get_fieldsets(self, request: HttpRequest, obj: Recommendation | None = None):
        if obj is not None:
            shown = ["entity", "action_type", "params", "rationale", "source", "created_by", "created_at"]
            return [(None, {"fields": shown})]
        return [
            (None, {"fields": ["entity", "action_type", "rationale"]}),
            ("Adjust budget", {"fields": ["budget_type", "new_budget", "budget_change_pct"]}),
            ("Adjust bid", {"fields": ["new_bid"]}),
            ("Apply values (any of them)", {"fields": ["daily_budget", "lifetime_budget", "bid", "status"]}),
            ("Update targeting or schedule", {"fields": ["replacement"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Recommendation | None = None) -> list[str]:
        return [*self.readonly_fields, "params"] if obj is not None else self.readonly_fields

    def get_inlines(self, request: HttpRequest, obj: Recommendation | None) -> list:
        return self.inlines if obj is not None else []

    def has_change_permission(self, request: HttpRequest, obj: Recommendation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Recommendation | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Recommendation, form: forms.ModelForm, change: bool) -> None:
        """Create through the service, so the admin and the API create the same rows."""
        item = RecommendationInput(
            entity_id=obj.entity_id,
            action_type=obj.action_type,
            params=form.cleaned_data["params"],
            rationale=obj.rationale,
        )
        [created] = recommendations_create(tenant=obj.entity.tenant, actor=request.user, items=[item])
        # The admin logs and redirects to ``obj``; point it at the row the service created.
        obj.pk, obj.tenant_id, obj.created_at = created.pk, created.tenant_id, created.created_at
        obj.params = created.params

    def response_add(self, request: HttpRequest, obj: Recommendation, post_url_continue: str | None = None):
        """Say what happens next (the action waits for approval) and open the action."""
        action = obj.actions.order_by("pk").first()
        if action is None:
            return super().response_add(request, obj, post_url_continue)
        change = describe_change(action.action_type, action.params, action.entity, action.connection.currency)
        messages.success(
            request,
            f"Recommendation added: action #{action.pk} ({change}) needs approval before anything changes "
            "on the platform.",
        )
        if "_addanother" in request.POST:
            return HttpResponseRedirect(request.path)
        return HttpResponseRedirect(reverse("admin:actions_action_change", args=[action.pk]))

    @admin.display(description="Change")
    def change_summary(self, recommendation: Recommendation) -> str:
        entity = recommendation.entity
        return describe_change(recommendation.action_type, recommendation.params, entity, entity.connection.currency)

    @admin.display(description="Action")
    def action_status(self, recommendation: Recommendation):
        actions = recommendation.actions.all()  # prefetched
        return format_html_join(" ", "{}", ((admin_link(a, status_badge(a)),) for a in actions)) or EMPTY
