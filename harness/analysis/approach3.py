"""Approach 3 of Hoffmann et al. 2022 on every usable run: L(N, D) = E + A/N^alpha + B/D^beta fitted as
Besiroglu et al. 2024 corrected it (log-space LSE, Huber loss, L-BFGS from a grid; harness.analysis.parametric),
and the compute-optimal exponents it implies, a = beta / (alpha + beta), b = alpha / (alpha + beta).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.context import Diagnostics, Settings
from harness.analysis.estimate import estimate
from harness.analysis.parametric import ParametricFit, bootstrap_parametric, fit_parametric, predict_log_loss
from harness.errors import HarnessError

# Runs count as C proportional to N D when C / (N D) varies by less than this ratio across them.
MAX_KAPPA_SPREAD = 1.25
# alpha, beta outside this range are not plausible scaling exponents (the runs' N/D range cannot identify them).
PLAUSIBLE_EXPONENT = (0.02, 2.5)


@dataclass
class RunArrays:
    """Log N, D, loss and C of the fitted runs."""

    lnN: np.ndarray
    lnD: np.ndarray
    lnL: np.ndarray
    lnC: np.ndarray

    @classmethod
    def from_frame(cls, used: pd.DataFrame) -> RunArrays:
        """From the canonical columns params, tokens, loss, flops."""
        return cls(*(np.log(used[c].to_numpy(float)) for c in ("params", "tokens", "loss", "flops")))

    @property
    def ln_kappa(self) -> np.ndarray:
        """ln(C / (N D)) per run."""
        return self.lnC - self.lnN - self.lnD

    @property
    def kappa(self) -> float:
        """The median C / (N D): converts Approach 3's optimum to a budget (Hoffmann et al. 2022 use 6)."""
        return float(np.exp(np.median(self.ln_kappa)))


def fit_approach3(runs: RunArrays, settings: Settings, diag: Diagnostics) -> ParametricFit:
    """The point fit of L(N, D); warns when C is not proportional to N D across runs."""
    try:
        fit = fit_parametric(runs.lnN, runs.lnD, runs.lnL, None, settings.delta, settings.starts)
    except FloatingPointError:
        raise HarnessError("Approach 3 found no finite fit from any start; check the losses and sizes, or "
                           "raise parametric.starts") from None
    ratio = runs.ln_kappa
    if np.ptp(ratio) > np.log(MAX_KAPPA_SPREAD):
        diag.warn(
            f"C/(N D) ranges from {np.exp(ratio.min()):.3g} to {np.exp(ratio.max()):.3g} across runs: FLOPs are not "
            "proportional to N D under this parameter convention; Approach 3's compute-optimal N, D use the "
            f"median {runs.kappa:.3g} (try params=scaling or nonembedding)"
        )
    return fit


def approach3_samples(runs: RunArrays, weights: np.ndarray, theta: np.ndarray, settings: Settings) -> np.ndarray:
    """(B, 5) bootstrap thetas: L(N, D) refitted on each resample's run multiplicities, started at theta."""
    return bootstrap_parametric(runs.lnN, runs.lnD, runs.lnL, weights.astype(float), theta, settings.delta,
                                settings.jobs)


def derived(theta: np.ndarray) -> dict[str, Any]:
    """E, A, B, alpha, beta and the implied a, b, G (Hoffmann et al. 2022 eq. 4) from theta (..., 5)."""
    th = np.asarray(theta, float)
    a, b, e, al, be = (th[..., i] for i in range(5))
    with np.errstate(all="ignore"):
        s = al + be
        G = np.exp((np.log(al) + a - np.log(be) - b) / s)
        return {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": al, "beta": be, "a": be / s, "b": al / s,
                "G": G}


def summarize_approach3(runs: RunArrays, fit: ParametricFit, samples: dict[str, np.ndarray], settings: Settings,
                        diag: Diagnostics) -> dict[str, Any]:
    """fits.json's approach3 block: every derived quantity as an Estimate, theta, kappa and the fit's health."""
    point = derived(fit.theta)
    boot = samples.get("approach3")
    boot_derived = None if boot is None else derived(boot)
    block: dict[str, Any] = {
        k: estimate(point[k], None if boot_derived is None else boot_derived[k], settings.level) for k in point
    }
    resid = runs.lnL - predict_log_loss(fit.theta, runs.lnN, runs.lnD)
    block.update({
        "theta": [float(t) for t in fit.theta], "kappa": runs.kappa, "objective": fit.objective,
        "converged": fit.converged, "n_starts": fit.n_starts, "huber_delta": settings.delta, "n_runs": int(runs.lnN.size),
        "rmse_log": float(np.sqrt(np.mean(resid**2))),
    })
    if not fit.converged:
        diag.warn(f"Approach 3 optimiser did not report convergence ({fit.message}); treat it with care")
    for name in ("alpha", "beta"):
        v = point[name]
        if not PLAUSIBLE_EXPONENT[0] < v < PLAUSIBLE_EXPONENT[1]:
            diag.warn(f"Approach 3 {name}={v:.3g} is implausible: the N/D range of the runs may not identify it")
    return block
