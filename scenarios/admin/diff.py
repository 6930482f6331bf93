"""A preflight's document as the diff template shows it (summary, totals, breaches, one page of entities)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.paginator import Paginator
from django.utils.safestring import SafeString

from budgetradar.admin_base import (
    AMBER,
    BLUE,
    EMPTY,
    GREY,
    badge,
)
from budgetradar.words import change_type_label, entity_type_label
from scenarios.admin.presentation import (
    BREACHES_SHOWN,
    DIFF_PAGE_SIZE,
    FIELD_LABELS,
    SECTION_LABELS,
    breach_badge,
    percent_text,
    platform_label,
    preflight_badge,
    signed_text,
    value_text,
)
from scenarios.models import (
    PreflightRun,
)
from scenarios.selectors import preflight_freshness
from scenarios.services.guardrails import CRITICAL
from scenarios.services.preflight import breach_counts

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
        conversions, revenue = (
            signed_text(forecast.get("conversions"), None),
            signed_text(forecast.get("revenue"), currency),
        )
        forecast_text = f"conversions {conversions}, revenue {revenue}"
    percent = percent_text(change.get("percent_delta"))
    if change.get("from_zero"):
        percent = "new (from zero)"
    breaches = change.get("breaches") or []
    return FieldRow(
        section=SECTION_LABELS.get(section, section.capitalize()),
        label=change.get("label") or FIELD_LABELS.get(change.get("field"), change.get("field", "")),
        before=value_text(change.get("before"), unit),
        after=value_text(change.get("after"), unit),
        delta=signed_text(change.get("delta"), unit) if change.get("changed") else EMPTY,
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
            f"{value_text(forecast.get('spend_before'), currency)} → "
            f"{value_text(forecast.get('spend_after'), currency)}, "
            f"conversions {forecast.get('conversions_before')} → {forecast.get('conversions_after')}, revenue "
            f"{value_text(forecast.get('revenue_before'), currency)} → "
            f"{value_text(forecast.get('revenue_after'), currency)}"
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
                    "before": value_text(money.get("daily_budget_before"), currency),
                    "after": value_text(money.get("daily_budget_after"), currency),
                    "delta": signed_text(money.get("daily_budget_delta"), currency),
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
            signed_text(value, currency)
            for currency, value in (total.get("daily_budget_delta_by_currency") or {}).items()
        ],
        "conversions_delta": signed_text(forecast.get("conversions_delta"), None),
        "revenue_delta": [signed_text(value, currency) for currency, value in revenue.items()],
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
    breaches = payload.get("breaches") or []  # the stored first ones; the API and export list all
    run_level = [b for b in breaches if not b.get("key")]
    critical, warning = breach_counts(run)
    return {
        "run": run,
        "badge": preflight_badge(run),
        "generated_at": payload.get("generated_at"),
        "has_payload": bool(payload),
        "summary": _summary_view(payload) if payload else None,
        "run_breaches": [(breach_badge(b), b.get("message", "")) for b in run_level],
        "breaches": [(breach_badge(b), b.get("message", ""), b.get("key")) for b in breaches[:BREACHES_SHOWN]],
        "breaches_more": max(critical + warning - min(len(breaches), BREACHES_SHOWN), 0),
        "critical_count": critical,
        "warning_count": warning,
        "entities": [_entity_view(row.document) for row in current.object_list],
        "page": current,
        "paginated": paginator.num_pages > 1,
    }


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
