"""Predictions from a Fits object, each an Estimate with a bootstrap percentile interval.

At a target budget C: Approach 2 gives N_opt = k_N C^a, D_opt = k_D C^b (Hoffmann et al. 2022) and the loss
from the frontier L_opt(C) = E + K C^-k (and, for a run of another N at C, that loss raised along the budgets'
IsoFLOP parabolas: approach2_loss_at); Approach 3 gives the closed-form compute-optimal N, D under
C = kappa N D and L(N, D) = E + A/N^alpha + B/D^beta (Besiroglu et al. 2024's fit). For a given (N, D) the
loss comes from Approach 3. Evaluating a fitted formula is all that happens here: nothing is refitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.analysis.estimate import Estimate
from harness.analysis.fits import Fits
from harness.analysis.parametric import compute_optimal, predict_log_loss
from harness.analysis.powerlaw import frontier_value
from harness.errors import HarnessError

# Default prediction targets, as multiples of the largest fitted budget (when settings.predict is empty).
DEFAULT_MULTIPLES = (10.0, 100.0)


def _val(d: dict[str, Any], key: str) -> float:
    """Point value of d[key] (an Estimate or a plain number) as a float, NaN when missing."""
    v = d[key]
    v = v.value if isinstance(v, Estimate) else v
    return float("nan") if v is None else float(v)


def _positive(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise HarnessError(f"{name}={x!r} must be a positive finite number")
    return arr


def _level(fits: Fits) -> float:
    return float(fits.bootstrap.get("level", 0.95))


def approach2_curves(fits: Fits, C: np.ndarray) -> dict[str, np.ndarray]:
    """Point estimates and bootstrap samples of N_opt, D_opt and the frontier loss at budgets C (1-D)."""
    lnC = np.log(_positive("C", C))
    a2, fr = fits.approach2, fits.frontier
    lnC_ref = float(np.log(fr["C_ref"]))
    out = {
        "N": np.exp(a2["ln_k_N"] + _val(a2, "a") * lnC),
        "D": np.exp(a2["ln_k_D"] + _val(a2, "b") * lnC),
        "loss": frontier_value(_val(fr, "E"), float(fr["lnK_ref"]), _val(fr, "k"), lnC, lnC_ref),
    }
    s2, sf = fits.samples.get("approach2"), fits.samples.get("frontier")
    if s2 is not None and sf is not None:
        out["N_samples"] = np.exp(s2[:, 1:2] + s2[:, 0:1] * lnC)
        out["D_samples"] = np.exp(s2[:, 3:4] + s2[:, 2:3] * lnC)
        out["loss_samples"] = frontier_value(sf[:, 0:1], sf[:, 1:2], sf[:, 2:3], lnC, lnC_ref)
    return out


def approach3_curves(fits: Fits, C: np.ndarray) -> dict[str, np.ndarray]:
    """Point estimates and bootstrap samples of Approach 3's compute-optimal N, D and loss at budgets C."""
    C = _positive("C", C)
    kappa = float(fits.approach3["kappa"])
    N, D, L = compute_optimal(np.asarray(fits.approach3["theta"], float), C, kappa)
    out = {"N": N, "D": D, "loss": L}
    s3 = fits.samples.get("approach3")
    if s3 is not None:
        Ns, Ds, Ls = compute_optimal(s3[:, None, :], C[None, :], kappa)
        out.update({"N_samples": Ns, "D_samples": Ds, "loss_samples": Ls})
    return out


def _at_first_budget(curves: dict[str, np.ndarray], level: float) -> dict[str, Estimate]:
    """{N, D, loss} Estimates at the first budget of a curves dict."""
    out = {}
    for key in ("N", "D", "loss"):
        samples = curves.get(f"{key}_samples")
        out[key] = Estimate.from_samples(curves[key][0], None if samples is None else samples[:, 0], level)
    return out


def predict_at_budget(fits: Fits, C: float) -> dict[str, Any]:
    """N*, D* and loss at budget C from Approach 2 (+ frontier) and Approach 3, each an Estimate:
    {"C", "extrapolation", "approach2": {"N", "D", "loss"}, "approach3": {"N", "D", "loss"}}."""
    C_arr = np.atleast_1d(_positive("C", C)).astype(float)[:1]
    level = _level(fits)
    largest = max(b["C"] for b in fits.budgets)
    return {
        "C": float(C_arr[0]),
        "extrapolation": float(C_arr[0] / largest),
        "approach2": _at_first_budget(approach2_curves(fits, C_arr), level),
        "approach3": _at_first_budget(approach3_curves(fits, C_arr), level),
    }


def prediction_targets(fits: Fits) -> list[float]:
    """The budgets to tabulate: settings.predict, else 10x and 100x the largest fitted budget."""
    asked = [float(c) for c in fits.settings.get("predict") or ()]
    largest = max(b["C"] for b in fits.budgets)
    return asked or [largest * m for m in DEFAULT_MULTIPLES]


def predict_many(fits: Fits, budgets: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """predict_at_budget at each budget (default: prediction_targets), for Fits.predictions."""
    return [predict_at_budget(fits, c) for c in (prediction_targets(fits) if budgets is None else budgets)]


def _frontier_E(fits: Fits) -> float:
    """The frontier's fitted E (0 where it has none)."""
    E = _val(fits.frontier, "E")
    return E if np.isfinite(E) else 0.0


def isoflop_curvature(fits: Fits) -> tuple[float, np.ndarray | None]:
    """Approach 2's IsoFLOP curvature above the frontier's E: the mean over its usable budgets of
    c2 / (L_opt - E), where c2 is the budget's parabola coefficient of (ln N)^2, as a point value and one per
    bootstrap resample (None without samples). Under L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022) the
    curvature of ln(L - E) in ln N along an IsoFLOP curve is alpha * beta at every budget, so this ratio
    (alpha * beta / 2) carries to larger budgets where c2 itself does not."""
    E = _frontier_E(fits)
    used = [b for b in fits.budgets if b.get("used") and b.get("coef") is not None]
    curv = [float(b["coef"][2]) / (_val(b, "L_opt") - E) for b in used if _val(b, "L_opt") > E]
    point = float(np.mean(curv)) if curv else float("nan")
    c2, L, sf = fits.samples.get("budget_c2"), fits.samples.get("budget_L"), fits.samples.get("frontier")
    if c2 is None or L is None or sf is None:
        return point, None
    above = L - sf[:, 0:1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(above > 0, c2 / above, np.nan)
    finite = np.isfinite(ratio)
    n = finite.sum(axis=1)
    mean = np.where(finite, ratio, 0.0).sum(axis=1) / np.maximum(n, 1)
    return point, np.where(n > 0, mean, np.nan)


def approach2_loss_at(fits: Fits, C: float, N: float) -> Estimate:
    """Approach 2's loss for a run of N parameters at budget C: the frontier L_opt(C) raised along the IsoFLOP
    parabola from N*(C) to N, L_opt + kappa (L_opt - E) (ln N - ln N*)^2 with kappa = isoflop_curvature. A
    held-out run trains the family size nearest N*, not N* itself; comparing it with L_opt(C) alone would count
    that gap (always upward) as an error of the fit. Fits without curvature samples use the point curvature."""
    C_arr = np.atleast_1d(_positive("C", C)).astype(float)[:1]
    lnN = float(np.log(_positive("N", N)))
    curves = approach2_curves(fits, C_arr)
    kappa, kappa_s = isoflop_curvature(fits)
    E = _frontier_E(fits)
    L = float(curves["loss"][0])
    value = L + kappa * (L - E) * (lnN - np.log(curves["N"][0])) ** 2
    samples = None
    if "loss_samples" in curves:
        k = kappa if kappa_s is None else kappa_s
        Ls, Es = curves["loss_samples"][:, 0], fits.samples["frontier"][:, 0]
        samples = Ls + k * (Ls - Es) * (lnN - np.log(curves["N_samples"][:, 0])) ** 2
    return Estimate.from_samples(value, samples, _level(fits))


def predict_loss(fits: Fits, N: float, D: float) -> Estimate:
    """Approach-3 loss L(N, D) with its bootstrap interval."""
    lnN = np.log(_positive("N", N))
    lnD = np.log(_positive("D", D))
    loss = float(np.exp(predict_log_loss(np.asarray(fits.approach3["theta"], float), lnN, lnD)))
    s3 = fits.samples.get("approach3")
    samples = None if s3 is None else np.exp(predict_log_loss(s3, lnN, lnD))
    return Estimate.from_samples(loss, samples, _level(fits))
