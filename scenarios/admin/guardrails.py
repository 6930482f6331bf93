"""Guardrail policies: the form built from the rule codes and default severities, the change window's zone."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from budgetradar.admin_base import (
    EMPTY,
    AuditedForm,
    TenantScopedHistoryAdmin,
    format_money,
)
from platforms.money import currency_exponent
from scenarios.admin.presentation import RULE_LABELS
from scenarios.models import (
    GuardrailPolicy,
)
from scenarios.services.guardrails import CRITICAL, DEFAULT_SEVERITIES, FIXED_SEVERITIES, OFF, WARNING, WEEKDAYS

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
