"""Hill response curves with geometric adstock, fitted with scipy (pure functions).

The model of one entity, per day ``t``:

    a_t = (1 - theta) * spend_t + theta * a_{t-1}          (normalised geometric adstock)
    conversions_t = vmax * a_t^k / (h^k + a_t^k)              (Hill saturation)

At a steady daily spend ``s`` the adstock equals ``s``, so ``h`` is the daily spend that
yields half of ``vmax`` and planning a daily budget uses ``hill(s)`` directly.

The fit is ``scipy.optimize.least_squares`` (Levenberg-Marquardt, analytic Jacobian) on
conversions scaled by their maximum. Parameters are bounded by construction: it works
on ``log vmax``, ``log h`` and logistic transforms of ``k`` and ``theta``, so every
iterate lies in ``vmax > 0``, ``h > 0``, ``K_BOUNDS`` and ``THETA_BOUNDS``. A weak prior
(``PRIOR_WEIGHT``) pulls ``h`` towards the mean spend, ``k`` towards 1 and ``theta``
towards a small carryover; it only matters where the data say nothing (a spend that never
varied), which keeps extrapolation tame instead of arbitrary. Deterministic: the same
inputs give the same parameters, bit for bit.

Confidence: ``none`` below ``MIN_DAYS`` usable days or when the fit fails; ``low`` when
R² < ``LOW_R2`` (0.65); ``high`` with at least ``HIGH_DAYS`` days and R² >= ``HIGH_R2``;
``medium`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.signal import lfilter
from scipy.special import expit

MIN_DAYS = 21
HIGH_DAYS = 28
LOW_R2 = 0.65
HIGH_R2 = 0.8
K_BOUNDS = (0.3, 3.0)
THETA_BOUNDS = (0.0, 0.9)
PRIOR_WEIGHT = 0.03
PRIOR_THETA = 0.15
MAX_EVALUATIONS = 300

MODEL = {
    "name": "hill_adstock",
    "formula": "conversions = vmax * a^k / (h^k + a^k); a_t = (1 - theta) spend_t + theta a_(t-1)",
    "fit": (
        "scipy least_squares (Levenberg-Marquardt) on conversions / max(conversions); "
        f"k in {list(K_BOUNDS)}, theta in {list(THETA_BOUNDS)}, vmax and h > 0; weak prior weight {PRIOR_WEIGHT}"
    ),
    "confidence": (
        f"none: < {MIN_DAYS} days with spend or a failed fit; low: R² < {LOW_R2}; "
        f"high: >= {HIGH_DAYS} days and R² >= {HIGH_R2}; otherwise medium"
    ),
}


@dataclass(frozen=True)
class HillCurve:
    """A fitted curve; ``response`` and ``marginal`` are per day at a steady daily spend."""

    vmax: float
    half_saturation: float
    shape: float
    adstock: float = 0.0

    def response(self, spend):
        """Conversions a day at a steady daily ``spend`` (scalar or array)."""
        s = np.maximum(np.asarray(spend, dtype=float), 0.0)
        ratio = (s / self.half_saturation) ** self.shape
        return self.vmax * ratio / (1.0 + ratio)

    def marginal(self, spend):
        """d conversions / d spend at a steady daily ``spend`` (conversions per money unit)."""
        s = np.maximum(np.asarray(spend, dtype=float), 1e-12)
        ratio = (s / self.half_saturation) ** self.shape
        return self.vmax * self.shape * ratio / (s * (1.0 + ratio) ** 2)

    def as_dict(self) -> dict[str, float]:
        return {
            "vmax": self.vmax,
            "half_saturation": self.half_saturation,
            "shape": self.shape,
            "adstock": self.adstock,
        }


@dataclass(frozen=True)
class FitResult:
    """The outcome of fitting one entity: a curve (or None) and how far to trust it."""

    curve: HillCurve | None
    status: str  # "ok", "insufficient", "failed"
    days: int
    r_squared: float | None
    confidence: str  # "high", "medium", "low", "none"
    message: str = ""


def adstocked(spend: np.ndarray, theta: float) -> np.ndarray:
    """Normalised geometric adstock of a daily spend series (starts from no carryover)."""
    return lfilter([1.0 - theta], [1.0, -theta], spend)


def confidence_of(days: int, r_squared: float) -> str:
    if r_squared < LOW_R2:
        return "low"
    if days >= HIGH_DAYS and r_squared >= HIGH_R2:
        return "high"
    return "medium"


def _bounded(p: np.ndarray) -> tuple[float, float, float, float]:
    k_lo, k_hi = K_BOUNDS
    t_lo, t_hi = THETA_BOUNDS
    return (
        math.exp(min(max(p[0], -40.0), 40.0)),  # clipped: a wild trial step must not overflow
        math.exp(min(max(p[1], -40.0), 40.0)),
        k_lo + (k_hi - k_lo) * float(expit(p[2])),
        t_lo + (t_hi - t_lo) * float(expit(p[3])),
    )


def _logit(value: float, low: float, high: float) -> float:
    share = (value - low) / (high - low)
    return math.log(share / (1.0 - share))


def fit_hill(spend: np.ndarray, conversions: np.ndarray) -> FitResult:
    """Fit one entity's daily ``spend`` and ``conversions`` (same length, in date order).

    Days are consecutive calendar days (a day without delivery is a zero, not a gap) so
    the adstock carries over correctly. Needs ``MIN_DAYS`` days with spend.
    """
    spend = np.asarray(spend, dtype=float)
    conversions = np.asarray(conversions, dtype=float)
    days = int(np.count_nonzero(spend > 0))
    if days < MIN_DAYS:
        return FitResult(
            None, "insufficient", days, None, "none", f"{days} days with spend; at least {MIN_DAYS} needed"
        )
    if not np.any(conversions > 0):
        return FitResult(None, "failed", days, None, "none", "no conversions in the window: nothing to fit")
    try:
        params, r_squared = _least_squares(spend, conversions)
    except (ValueError, np.linalg.LinAlgError) as exc:
        return FitResult(None, "failed", days, None, "none", f"the fit did not converge: {exc}"[:300])
    curve = HillCurve(*params)
    return FitResult(curve, "ok", days, r_squared, confidence_of(days, r_squared))


def _least_squares(spend: np.ndarray, conversions: np.ndarray) -> tuple[tuple[float, float, float, float], float]:
    n = len(spend)
    scale = float(conversions.max())
    mean_spend = float(spend[spend > 0].mean())
    k0 = _logit(1.0, *K_BOUNDS)
    t0 = _logit(PRIOR_THETA, *THETA_BOUNDS)
    prior = np.array([math.log(mean_spend), k0, t0])
    k_span = K_BOUNDS[1] - K_BOUNDS[0]
    t_span = THETA_BOUNDS[1] - THETA_BOUNDS[0]

    def parts(p: np.ndarray):
        vmax, h, k, theta = _bounded(p)
        a = np.maximum(adstocked(spend, theta), 1e-12)
        ratio = (a / h) ** k
        return vmax, h, k, theta, a, ratio, vmax * ratio / (1.0 + ratio)

    def residuals(p: np.ndarray) -> np.ndarray:
        *_, predicted = parts(p)
        return np.concatenate([(predicted - conversions) / scale, PRIOR_WEIGHT * (p[1:] - prior)])

    def jacobian(p: np.ndarray) -> np.ndarray:
        vmax, h, k, theta, a, ratio, predicted = parts(p)
        d_ratio = vmax / (1.0 + ratio) ** 2
        jac = np.zeros((n + 3, 4))
        jac[:n, 0] = predicted
        jac[:n, 1] = -d_ratio * k * ratio
        sk = float(expit(p[2]))
        jac[:n, 2] = d_ratio * ratio * np.log(a / h) * k_span * sk * (1.0 - sk)
        # d a_t / d theta = a_{t-1} - spend_t + theta * d a_{t-1} / d theta
        previous = np.concatenate([[0.0], a[:-1]])
        da = lfilter([1.0], [1.0, -theta], previous - spend)
        st = float(expit(p[3]))
        jac[:n, 3] = d_ratio * (k * ratio / a) * da * t_span * st * (1.0 - st)
        jac[:n] /= scale
        jac[n, 1] = jac[n + 1, 2] = jac[n + 2, 3] = PRIOR_WEIGHT
        return jac

    start = np.array([math.log(max(scale, 1e-6) * 2.0), math.log(mean_spend), k0, t0])
    with np.errstate(all="ignore"):  # trial steps may overflow; the result is checked below
        result = least_squares(residuals, start, jac=jacobian, method="lm", max_nfev=MAX_EVALUATIONS)
        params = _bounded(result.x)
        *_, predicted = parts(result.x)
    if not (np.all(np.isfinite(predicted)) and all(math.isfinite(v) for v in params)):
        raise ValueError("the curve's predictions are not finite")
    return params, r_squared(conversions, predicted)


def r_squared(observed: np.ndarray, predicted: np.ndarray) -> float:
    """1 - SSres/SStot, clamped to [0, 1]; 0 when the observations never varied."""
    total = float(np.sum((observed - observed.mean()) ** 2))
    if total <= 1e-12:
        return 0.0
    return min(1.0, max(0.0, 1.0 - float(np.sum((observed - predicted) ** 2)) / total))
