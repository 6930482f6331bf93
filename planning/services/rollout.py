"""Shadow comparisons and the rollout's evidence, promoted only by a person.

Shadow: once a shadow run's day is ingested, ``shadow_compare`` writes what the curves
predicted for the baseline (the budgets that stayed), what the plan would have got, and
what actually happened, per run and in the decision log.

Evidence of a rollout step: the step's days are compared with the reference (the
``REFERENCE_DAYS`` days before the first promotion, i.e. shadow) in two cells, treated
(autopilot days, or entities not held out) and baseline (the other days, or the held-out
entities), from ``EntityPerformanceDaily``:

    lift = (treated_step / treated_ref) / (baseline_step / baseline_ref) - 1

on conversions per day, and the same ratio for CPA. The reference removes the cells'
different sizes and weekdays; a step without a baseline cell (100 %) is compared with the
reference alone (before/after, flagged). Uncertainty: a 90 % interval from
``BOOTSTRAP_DRAWS`` resamples of days (seeded with the connection id: deterministic).
The promotion criterion is met when the lift is at least ``MIN_LIFT`` (10 %) and CPA is
not worse than ``MAX_CPA_CHANGE`` (+5 %), over at least ``MIN_STEP_DAYS`` days.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from budgetradar.errors import InvalidState, ValidationFailed
from budgetradar.tenancy import require_perm, require_same_tenant
from planning.models import (
    AutomationSettings,
    DecisionKind,
    Mode,
    Outcome,
    PlannerRun,
    RolloutStep,
    RolloutStepName,
    RolloutUnit,
    RunStatus,
)
from planning.services import automation as auto
from planning.services.decisions import decision_append
from planning.services.planner import budget_holders
from planning.services.runs import local_now
from platforms.models import EntityPerformanceDaily

REFERENCE_DAYS = 14
MIN_STEP_DAYS = 7
MIN_LIFT = 0.10
MAX_CPA_CHANGE = 0.05
BOOTSTRAP_DRAWS = 500


# Shadow ----------------------------------------------------------------------------------


def shadow_compare_due(*, connection_id: int | None = None) -> int:
    """Compare every shadow run whose day has been ingested; return how many were compared."""
    runs = PlannerRun.objects.filter(
        status=RunStatus.SUCCEEDED, outcome=Outcome.SHADOW_RECORDED, shadow__isnull=True
    ).select_related("connection")
    if connection_id is not None:
        runs = runs.filter(connection_id=connection_id)
    compared = 0
    for run in runs.order_by("pk"):
        compared += shadow_compare(run) is not None
    return compared


def shadow_compare(run: PlannerRun) -> dict[str, Any] | None:
    """Predicted (baseline and plan) vs actual for the run's day; None until the day is in."""
    rows = {row["entity_id"]: row for row in run.reasoning or [] if row.get("predicted_before") is not None}
    actual = dict(
        EntityPerformanceDaily.objects.filter(entity_id__in=list(rows), date=run.local_date)
        .values_list("entity_id")
        .annotate(c=Sum("conversions"))
        .values_list("entity_id", "c")
    )
    if not rows or not actual:
        return None
    covered = [pk for pk in rows if pk in actual]
    predicted_baseline = sum(rows[pk]["predicted_before"] for pk in covered)
    predicted_plan = sum(rows[pk]["predicted_after"] for pk in covered)
    observed = float(sum(actual[pk] for pk in covered))
    result = {
        "date": str(run.local_date),
        "entities": len(covered),
        "actual_conversions": round(observed, 2),
        "predicted_baseline": round(predicted_baseline, 2),
        "predicted_plan": round(predicted_plan, 2),
        "prediction_error_pct": _pct(predicted_baseline, observed),
        "plan_uplift_pct": _pct(predicted_plan, predicted_baseline),
    }
    with transaction.atomic():
        if PlannerRun.objects.filter(pk=run.pk, shadow__isnull=True).update(shadow=result) != 1:
            return None
        decision_append(
            connection=run.connection,
            kind=DecisionKind.SHADOW_COMPARED,
            run=run,
            actor="planner",
            mode=Mode.SHADOW,
            outcome=result,
        )
    run.shadow = result
    return result


def _pct(value: float, base: float) -> float | None:
    return round((value / base - 1) * 100, 2) if base else None


# Evidence --------------------------------------------------------------------------------


def rollout_evidence(automation: AutomationSettings, *, now: datetime | None = None) -> dict[str, Any]:
    """Each promoted step's evidence (see the module docstring), newest step last."""
    steps = list(RolloutStep.objects.filter(connection=automation.connection).order_by("created_at", "id"))
    if not steps:
        return {"reference": None, "steps": [], "current": _current(automation, None)}
    connection = automation.connection
    first_day = local_now(connection, steps[0].created_at).date()
    reference = (first_day - timedelta(days=REFERENCE_DAYS), first_day - timedelta(days=1))
    today = local_now(connection, now).date()
    entity_ids = [e.pk for e in budget_holders(connection)]
    daily = _daily(entity_ids, reference[0], today - timedelta(days=1))
    out = []
    for i, step in enumerate(steps):
        start = local_now(connection, step.created_at).date()
        end = (
            local_now(connection, steps[i + 1].created_at).date() - timedelta(days=1)
            if i + 1 < len(steps)
            else (today - timedelta(days=1))
        )
        out.append(_step_evidence(automation, step, entity_ids, daily, reference, (start, end)))
    return {
        "reference": {"from": str(reference[0]), "to": str(reference[1])},
        "steps": out,
        "current": _current(automation, out[-1] if out else None),
    }


def _current(automation: AutomationSettings, last: dict[str, Any] | None) -> dict[str, Any]:
    following = auto.next_step(automation.rollout_step)
    return {
        "step": automation.rollout_step,
        "next_step": following,
        "criterion_met": bool(last and last["criterion_met"]),
        "criterion": (
            f"conversions at least +{MIN_LIFT:.0%} against the baseline with CPA no worse than "
            f"+{MAX_CPA_CHANGE:.0%}, over at least {MIN_STEP_DAYS} days"
        ),
    }


def _daily(entity_ids: list[int], since: date, until: date) -> dict[tuple[int, date], tuple[float, float]]:
    rows = EntityPerformanceDaily.objects.filter(entity_id__in=entity_ids, date__gte=since, date__lte=until)
    return {
        (e, d): (float(s), float(c)) for e, d, s, c in rows.values_list("entity_id", "date", "spend", "conversions")
    }


def _step_evidence(automation, step: RolloutStep, entity_ids, daily, reference, period) -> dict[str, Any]:
    settings_then = step.evidence.get("settings", {}) if step.evidence else {}
    unit = settings_then.get("rollout_unit", automation.rollout_unit)
    weekdays = settings_then.get("rollout_weekdays", [])
    share = Decimal(str(settings_then.get("holdout_share", "0")))
    held = auto.held_out(automation, entity_ids, share) if unit == RolloutUnit.ENTITIES else set()

    def treated(pk: int, day: date) -> bool:
        if unit == RolloutUnit.ENTITIES:
            return pk not in held
        return not weekdays or day.weekday() in weekdays

    cells = {}
    for name, (since, until) in (("reference", reference), ("step", period)):
        days = [since + timedelta(days=i) for i in range(max(0, (until - since).days + 1))]
        t = np.array([[*_cell(daily, entity_ids, day, lambda pk, d: treated(pk, d))] for day in days] or [[0, 0, 0]])
        b = np.array(
            [[*_cell(daily, entity_ids, day, lambda pk, d: not treated(pk, d))] for day in days] or [[0, 0, 0]]
        )
        cells[name] = (t, b)
    (t_ref, b_ref), (t_step, b_step) = cells["reference"], cells["step"]
    has_baseline = b_step[:, 2].sum() > 0 and b_ref[:, 2].sum() > 0
    rng = np.random.default_rng(automation.connection_id)
    point = _lift(t_ref, b_ref, t_step, b_step, has_baseline)
    draws = np.array(
        [
            _lift(*(_resample(rng, a) for a in (t_ref, b_ref, t_step, b_step)), has_baseline)
            for _ in range(BOOTSTRAP_DRAWS)
        ]
    )
    interval = lambda k: [_r(np.nanpercentile(draws[:, k], 5)), _r(np.nanpercentile(draws[:, k], 95))]  # noqa: E731
    step_days = int(np.count_nonzero(t_step[:, 2]))
    met = bool(
        step_days >= MIN_STEP_DAYS
        and np.isfinite(point[0])
        and point[0] >= MIN_LIFT
        and np.isfinite(point[1])
        and point[1] <= MAX_CPA_CHANGE
    )
    return {
        "step": step.step,
        "from": str(period[0]),
        "to": str(period[1]),
        "days": step_days,
        "unit": unit,
        "treated": _summary(t_step),
        "baseline": _summary(b_step) if has_baseline else None,
        "reference_treated": _summary(t_ref),
        "reference_baseline": _summary(b_ref) if has_baseline else None,
        "comparison": "against the concurrent baseline" if has_baseline else "before/after (no baseline cell)",
        "conversion_lift": _r(point[0]),
        "conversion_lift_interval": interval(0),
        "cpa_change": _r(point[1]),
        "cpa_change_interval": interval(1),
        "criterion_met": met,
    }


def _cell(daily, entity_ids, day: date, member) -> tuple[float, float, int]:
    spend = conversions = 0.0
    n = 0
    for pk in entity_ids:
        if member(pk, day) and (pk, day) in daily:
            s, c = daily[(pk, day)]
            spend, conversions, n = spend + s, conversions + c, n + 1
    return spend, conversions, n


def _resample(rng, cell: np.ndarray) -> np.ndarray:
    return cell[rng.integers(0, len(cell), len(cell))]


def _lift(t_ref, b_ref, t_step, b_step, has_baseline: bool) -> tuple[float, float]:
    def conv(cell):
        return cell[:, 1].mean()

    def cpa(cell):
        return cell[:, 0].sum() / cell[:, 1].sum() if cell[:, 1].sum() > 0 else np.nan

    with np.errstate(divide="ignore", invalid="ignore"):
        if has_baseline:
            lift = (conv(t_step) / conv(t_ref)) / (conv(b_step) / conv(b_ref)) - 1
            cpa_change = (cpa(t_step) / cpa(t_ref)) / (cpa(b_step) / cpa(b_ref)) - 1
        else:
            lift = conv(t_step) / conv(t_ref) - 1
            cpa_change = cpa(t_step) / cpa(t_ref) - 1
    return float(lift), float(cpa_change)


def _summary(cell: np.ndarray) -> dict[str, float | None]:
    spend, conversions = float(cell[:, 0].sum()), float(cell[:, 1].sum())
    days = max(1, len(cell))
    return {
        "conversions_per_day": round(conversions / days, 2),
        "spend_per_day": round(spend / days, 2),
        "cpa": round(spend / conversions, 2) if conversions else None,
    }


def _r(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


# Promotion -------------------------------------------------------------------------------


def rollout_promote(
    *, automation: AutomationSettings, actor, reason: str = "", now: datetime | None = None
) -> RolloutStep:
    """Move to the next step on a person's click.

    Guarantees: needs ``planning.promote_rollout``; promoting without the criterion met
    needs a reason (recorded); leaving shadow switches autopilot on, which needs the
    entitlement and counts the click with its reason as the person's consent; the step,
    the evidence seen and the new share are saved with history and a decision row.
    """
    require_same_tenant(actor, automation.tenant, what="automation settings")
    require_perm(actor, "planning.promote_rollout", doing="promote the autopilot rollout")
    following = auto.next_step(automation.rollout_step)
    if following is None:
        raise InvalidState("The rollout is at 100 %; there is no further step.")
    now = now or timezone.now()
    evidence = rollout_evidence(automation, now=now)
    met = evidence["current"]["criterion_met"]
    if automation.rollout_step != RolloutStepName.SHADOW and not met and not reason.strip():
        message = "The promotion criterion is not met; give a reason to promote anyway (it is recorded)."
        raise ValidationFailed(message, details={"reason": message})
    preset = auto.step_preset(automation, following)
    consent = reason.strip() or f"promoted the rollout to {following} % on the evidence shown"
    changes = {name: value for name, value in preset.items()}
    with transaction.atomic():
        updated = auto.automation_update(
            automation=automation,
            actor=actor,
            changes=changes,
            consent_reason=consent,
            reason=f"rollout promoted {automation.rollout_step} -> {following}: {reason or 'criterion met'}",
        )
        AutomationSettings.objects.filter(pk=updated.pk).update(rollout_step=following)
        step = RolloutStep.objects.create(
            tenant_id=automation.tenant_id,
            connection=automation.connection,
            step=following,
            previous_step=automation.rollout_step,
            promoted_by=actor,
            reason=reason,
            criterion_met=met,
            created_at=now,
            evidence={
                "evidence": evidence,
                "settings": {
                    "rollout_unit": updated.rollout_unit,
                    "rollout_weekdays": updated.rollout_weekdays,
                    "holdout_share": str(updated.holdout_share),
                },
            },
        )
        decision_append(
            connection=automation.connection,
            kind=DecisionKind.ROLLOUT_PROMOTED,
            actor=actor,
            mode=updated.mode,
            outcome={"from": automation.rollout_step, "to": following, "criterion_met": met, "reason": reason},
            inputs={"evidence": evidence},
            now=now,
        )
    automation.refresh_from_db()
    return step
