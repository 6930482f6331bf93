"""Hill + adstock fits recover known curves; the optimizer equalises marginal returns."""

from __future__ import annotations

import numpy as np
import pytest

from planning.curves import MIN_DAYS, HillCurve, adstocked, fit_hill
from planning.optimizer import CurveArrays, Infeasible, allocate_curves, allocate_weights


def simulate(vmax, half, shape, theta, *, days=120, noise=0.03, seed=1):
    rng = np.random.default_rng(seed)
    spend = half * rng.uniform(0.2, 3.0, days)
    clean = HillCurve(vmax, half, shape).response(adstocked(spend, theta))
    return spend, clean * (1 + rng.uniform(-noise, noise, days))


@pytest.mark.parametrize(
    ("vmax", "half", "shape", "theta"),
    [(20.0, 100.0, 1.0, 0.0), (40.0, 80.0, 1.3, 0.3), (12.0, 150.0, 0.8, 0.5)],
)
def test_fit_recovers_known_parameters_within_tolerance(vmax, half, shape, theta):
    spend, conversions = simulate(vmax, half, shape, theta)
    fit = fit_hill(spend, conversions)
    assert fit.status == "ok" and fit.confidence == "high"
    curve = fit.curve
    # Stated tolerances: vmax and h within 10 %, shape within 0.1, adstock within 0.05.
    assert curve.vmax == pytest.approx(vmax, rel=0.10)
    assert curve.half_saturation == pytest.approx(half, rel=0.10)
    assert curve.shape == pytest.approx(shape, abs=0.10)
    assert curve.adstock == pytest.approx(theta, abs=0.05)
    assert fit.r_squared > 0.95


def test_fit_is_deterministic():
    spend, conversions = simulate(20, 100, 1.0, 0.2)
    assert fit_hill(spend, conversions).curve == fit_hill(spend, conversions).curve


def test_too_few_days_give_no_curve():
    spend, conversions = simulate(20, 100, 1.0, 0.0, days=MIN_DAYS - 1)
    fit = fit_hill(spend, conversions)
    assert fit.curve is None and fit.status == "insufficient" and fit.confidence == "none"


def test_noise_without_signal_is_low_confidence():
    rng = np.random.default_rng(3)
    spend = np.full(60, 100.0)
    conversions = 10 * (1 + rng.uniform(-0.3, 0.3, 60))
    assert fit_hill(spend, conversions).confidence == "low"


def arrays(params):
    p = np.array(params, dtype=float)
    return CurveArrays(p[:, 0], p[:, 1], p[:, 2], np.ones(len(p)))


def test_allocation_equalises_marginal_cpa_and_meets_the_total():
    curves = arrays([(20, 100, 1.0), (30, 60, 0.9), (10, 200, 1.2), (25, 90, 1.1)])
    lo, hi = np.zeros(4) + 1, np.full(4, 1000.0)
    allocation = allocate_curves(curves, lo, hi, 400.0)
    assert allocation.spend.sum() == pytest.approx(400.0, abs=1e-6)
    marginal = curves.marginal(allocation.spend)
    interior = (allocation.spend > lo + 1e-6) & (allocation.spend < hi - 1e-6)
    assert interior.sum() == 3  # the S-shaped, weak third entity is better left at its minimum
    assert marginal[interior].max() / marginal[interior].min() == pytest.approx(1.0, abs=1e-4)
    assert marginal[~interior][0] <= marginal[interior].min()
    # A better allocation does not exist nearby: moving 1 unit between any pair loses.
    best = curves.response(allocation.spend).sum()
    for i in range(4):
        for j in range(4):
            if i != j:
                moved = allocation.spend.copy()
                moved[i] += 1
                moved[j] -= 1
                if np.any(moved < lo) or np.any(moved > hi):
                    continue
                assert curves.response(moved).sum() <= best + 1e-9


def test_bounds_bind_and_the_rest_equalise():
    curves = arrays([(50, 100, 1.0), (5, 100, 1.0), (20, 100, 1.0)])
    lo = np.array([10.0, 60.0, 10.0])  # entity 1 is poor but must keep 60
    hi = np.array([120.0, 200.0, 500.0])  # entity 0 is great but capped at 120
    allocation = allocate_curves(curves, lo, hi, 400.0)
    spend = allocation.spend
    assert spend.sum() == pytest.approx(400.0)
    assert spend[0] == pytest.approx(120.0) and spend[1] == pytest.approx(60.0)
    marginal = curves.marginal(spend)
    assert marginal[0] >= marginal[2] - 1e-9  # at its maximum: still worth more
    assert marginal[1] <= marginal[2] + 1e-9  # at its minimum: worth less


def test_minimums_above_the_total_are_refused():
    with pytest.raises(Infeasible):
        allocate_curves(arrays([(10, 100, 1.0)] * 2), np.array([300.0, 300.0]), np.array([900.0, 900.0]), 400.0)


def test_weights_allocation_is_proportional_within_bounds():
    allocation = allocate_weights(np.array([1.0, 2.0, 7.0]), np.zeros(3), np.array([1e9, 1e9, 50.0]), 100.0)
    assert allocation.spend.sum() == pytest.approx(100.0)
    assert allocation.spend[2] == pytest.approx(50.0)
    assert allocation.spend[1] / allocation.spend[0] == pytest.approx(2.0)
