"""Budget allocation: marginal returns equalised under a total, bounds and locks (pure numpy).

``allocate_curves`` maximises ``sum_i value_i * f_i(s_i)`` subject to ``sum_i s_i = total``
and ``lo_i <= s_i <= hi_i``, where ``f_i`` is entity i's Hill curve. At the optimum every
entity strictly inside its bounds has the same marginal return ``value_i * f_i'(s_i) =
lambda`` (the same marginal CPA ``1 / lambda`` for conversions, the same marginal ROAS
for revenue); an entity at its upper bound has a marginal return of at least lambda, one
at its lower bound at most lambda. It finds lambda by bisection on a log scale, the spend
of each entity for a given lambda by bisection on its decreasing branch of ``f'`` (a Hill
curve with shape > 1 is S-shaped: below its inflection point the lower bound competes
as a candidate), all entities at once, so 10,000 entities take milliseconds.

``allocate_weights`` is the fallbacks' allocation: spend proportional to weights, clipped
to the bounds, scaled so the total is met.

Both are deterministic and raise ``Infeasible`` when the minimums exceed the total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTER_ITERATIONS = 100
INNER_ITERATIONS = 60
TINY = 1e-9


class Infeasible(ValueError):
    """The bounds cannot meet the total."""


@dataclass(frozen=True)
class CurveArrays:
    """Hill parameters of many entities, as arrays of equal length."""

    vmax: np.ndarray
    half_saturation: np.ndarray
    shape: np.ndarray
    value: np.ndarray  # 1 for conversions, value per conversion for revenue

    def response(self, spend: np.ndarray) -> np.ndarray:
        ratio = (np.maximum(spend, 0.0) / self.half_saturation) ** self.shape
        return self.vmax * ratio / (1.0 + ratio)

    def marginal(self, spend: np.ndarray) -> np.ndarray:
        s = np.maximum(spend, TINY)
        ratio = (s / self.half_saturation) ** self.shape
        return self.vmax * self.shape * ratio / (s * (1.0 + ratio) ** 2)

    def subset(self, mask: np.ndarray) -> CurveArrays:
        return CurveArrays(self.vmax[mask], self.half_saturation[mask], self.shape[mask], self.value[mask])


@dataclass(frozen=True)
class Allocation:
    spend: np.ndarray
    marginal_return: float | None  # lambda: value per extra unit of spend at the optimum
    unspent: float  # when every entity is at its maximum and the total is not reached


def check_bounds(lo: np.ndarray, hi: np.ndarray, total: float) -> None:
    if np.any(lo > hi + TINY):
        raise Infeasible("an entity's minimum is above its maximum")
    if float(lo.sum()) > total + 1e-6:
        raise Infeasible(f"the minimums add up to {lo.sum():.2f}, more than the total {total:.2f}")


def _inflection(curves: CurveArrays) -> np.ndarray:
    """Where f' peaks: 0 for shape <= 1 (f' falls from the start), else h ((k-1)/(k+1))^(1/k)."""
    k = curves.shape
    peak = np.zeros_like(k)
    s_shaped = k > 1.0
    peak[s_shaped] = curves.half_saturation[s_shaped] * ((k[s_shaped] - 1.0) / (k[s_shaped] + 1.0)) ** (
        1.0 / k[s_shaped]
    )
    return peak


def spend_at(curves: CurveArrays, lam: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Each entity's spend maximising ``value * f(s) - lam * s`` within its bounds."""
    start = np.clip(np.maximum(_inflection(curves), lo), lo, hi)
    a = np.maximum(start, TINY)
    b = np.maximum(hi, a)
    marginal_return = lambda s: curves.value * curves.marginal(s)  # noqa: E731
    above = marginal_return(b) >= lam  # even the maximum is worth it
    below = marginal_return(a) <= lam  # not even the start is worth more
    for _ in range(INNER_ITERATIONS):
        mid = np.sqrt(a * b)
        worth = marginal_return(mid) > lam
        a = np.where(worth, mid, a)
        b = np.where(worth, b, mid)
    candidate = np.where(above, hi, np.where(below, start, 0.5 * (a + b)))
    # An S-shaped curve below its inflection point: the lower bound may still be better.
    gain = lambda s: curves.value * curves.response(s) - lam * s  # noqa: E731
    return np.where(gain(lo) > gain(candidate), lo, candidate)


def allocate_curves(curves: CurveArrays, lo: np.ndarray, hi: np.ndarray, total: float) -> Allocation:
    """Equalise marginal returns; see the module docstring for the guarantees."""
    check_bounds(lo, hi, total)
    if len(lo) == 0:
        return Allocation(np.zeros(0), None, total)
    if float(hi.sum()) <= total:
        return Allocation(hi.copy(), None, total - float(hi.sum()))
    lam_lo, lam_hi = 1e-12, 1.0
    while spend_at(curves, lam_hi, lo, hi).sum() > total and lam_hi < 1e12:
        lam_hi *= 10.0
    for _ in range(OUTER_ITERATIONS):
        lam = float(np.sqrt(lam_lo * lam_hi))
        if spend_at(curves, lam, lo, hi).sum() > total:
            lam_lo = lam
        else:
            lam_hi = lam
    lam = float(np.sqrt(lam_lo * lam_hi))
    spend = _meet_total(spend_at(curves, lam, lo, hi), lo, hi, total)
    return Allocation(spend, lam, 0.0)


def _meet_total(spend: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: float) -> np.ndarray:
    """Spread what bisection left over (tiny, or a jump of an S-shaped curve) over the slack."""
    gap = total - float(spend.sum())
    if abs(gap) <= 1e-9 * max(1.0, total):
        return spend
    room = (hi - spend) if gap > 0 else (spend - lo)
    if float(room.sum()) <= 0:
        return spend
    return spend + np.sign(gap) * room * min(1.0, abs(gap) / float(room.sum()))


def allocate_weights(weights: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: float) -> Allocation:
    """Spend proportional to ``weights`` (equal when all are zero), within bounds, meeting the total."""
    check_bounds(lo, hi, total)
    if len(lo) == 0:
        return Allocation(np.zeros(0), None, total)
    if float(hi.sum()) <= total:
        return Allocation(hi.copy(), None, total - float(hi.sum()))
    w = np.asarray(weights, dtype=float)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    if float(w.sum()) <= 0:
        w = np.ones_like(lo)
    t_lo, t_hi = 0.0, 1.0
    while np.clip(w * t_hi, lo, hi).sum() < total:
        t_hi *= 2.0
    for _ in range(OUTER_ITERATIONS):
        t = 0.5 * (t_lo + t_hi)
        if np.clip(w * t, lo, hi).sum() < total:
            t_lo = t
        else:
            t_hi = t
    spend = _meet_total(np.clip(w * t_hi, lo, hi), lo, hi, total)
    return Allocation(spend, None, 0.0)
