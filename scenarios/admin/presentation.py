"""Shared presentation for the scenario admin: tones, labels, badges, page sizes and small formatters."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from budgetradar.admin_base import (
    AMBER,
    BLUE,
    EMPTY,
    GREEN,
    GREY,
    RED,
    badge,
    format_money,
)
from budgetradar.words import humanize
from platforms.models import Platform
from scenarios.models import (
    Deployment,
    DeploymentResult,
    PreflightRun,
    Scenario,
)
from scenarios.services.guardrails import CRITICAL, WARNING

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


def signed_text(value: str | None, unit: str | None) -> str:
    """``+50.00 EUR`` / ``-12.50 EUR`` / a dash."""
    if value in (None, ""):
        return EMPTY
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    text = format_money(abs(number), unit) if unit else f"{abs(number):,}"
    return f"{'-' if number < 0 else '+'}{text}"


def value_text(value: Any, unit: str | None) -> str:
    if value in (None, ""):
        return EMPTY
    return format_money(value, unit) if unit else str(value)


def percent_text(value: str | None) -> str:
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


def person_name(user) -> str:
    """People are shown by name: a link would lead tenant members to the user admin they may not see."""
    return str(user) if user is not None else EMPTY


def page_number(request: HttpRequest, name: str) -> int:
    raw = request.GET.get(name, "1")
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1
