"""What the run page draws: allocation bars and response curves with operating points."""

from __future__ import annotations

from typing import Any

import numpy as np

from planning.curves import HillCurve
from planning.models import CurveFit, PlannerRun

CURVE_POINTS = 40
CURVES_SHOWN = 12


def allocation_chart(run: PlannerRun) -> dict[str, Any]:
    """Current vs proposed daily budget per entity (largest current budgets first)."""
    rows = sorted(run.reasoning or [], key=lambda r: (-float(r["current_budget"]), r["entity_id"]))
    return {
        "labels": [r["name"][:40] for r in rows],
        "current": [float(r["current_budget"]) for r in rows],
        "proposed": [float(r["proposed_budget"]) for r in rows],
        "currency": run.connection.currency,
    }


def curve_charts(run: PlannerRun) -> list[dict[str, Any]]:
    """The fitted curves of the entities with the largest moves, each with its two operating points."""
    reasons = {r["entity_id"]: r for r in run.reasoning or []}
    fits = {f.entity_id: f for f in CurveFit.objects.filter(run=run, status="ok")}
    moved = sorted(
        (r for r in reasons.values() if r["entity_id"] in fits),
        key=lambda r: (-abs(float(r["proposed_budget"]) - float(r["current_budget"])), r["entity_id"]),
    )[:CURVES_SHOWN]
    charts = []
    for row in moved:
        fit = fits[row["entity_id"]]
        curve = HillCurve(fit.vmax, fit.half_saturation, fit.shape, fit.adstock or 0.0)
        top = max(row["current_spend"], row["proposed_spend"], fit.max_spend or 0) * 1.5 or 1.0
        xs = np.linspace(0, top, CURVE_POINTS)
        charts.append(
            {
                "name": row["name"][:60],
                "confidence": fit.confidence,
                "r_squared": fit.r_squared,
                "curve": [
                    {"x": round(float(x), 2), "y": round(float(y), 3)}
                    for x, y in zip(xs, curve.response(xs), strict=True)
                ],
                "current": {"x": row["current_spend"], "y": row["predicted_before"]},
                "proposed": {"x": row["proposed_spend"], "y": row["predicted_after"]},
            }
        )
    return charts
