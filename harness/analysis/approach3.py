"""Approach 3 of Hoffmann et al. 2022 on every usable run: a parametric L(N, D) fitted as Besiroglu et al. 2024
corrected it (log-space LSE, Huber loss, L-BFGS from a grid; harness.analysis.parametric), and the compute-optimal
exponents it implies, a = beta / (alpha + beta), b = alpha / (alpha + beta).

The form is chosen by the data (parametric.form=auto): Chinchilla's E + A/N^alpha + B/D^beta or Kaplan et al.
2020's (A/N^alpha + B/D)^gamma, whichever has the lower AICc (Hurvich & Tsai 1989) on the log residuals. Far below
the scale where the irreducible loss shows, the Chinchilla form bends towards an E the runs cannot see and
over-predicts larger runs; on LLM-scale surfaces with a visible floor it wins by a wide margin (README "Approach 3's
form").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.context import Diagnostics, Settings
from harness.analysis.estimate import estimate
from harness.analysis.parametric import (
    FORMS,
    N_THETA,
    ParametricFit,
    as_theta6,
    bootstrap_parametric,
    fit_parametric,
    predict_log_loss,
)
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


def aicc(rss: float, n: int, k: int) -> float:
    """Akaike's criterion with the small-sample correction (Hurvich & Tsai 1989) for a least-squares fit with k
    parameters to n points; inf where n <= k + 1 (undefined), -inf for an exact fit."""
    if n <= k + 1:
        return float("inf")
    if rss <= 0:
        return float("-inf")
    return float(n * np.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1))


def _fit_form(runs: RunArrays, settings: Settings, form: str) -> ParametricFit | None:
    try:
        return fit_parametric(runs.lnN, runs.lnD, runs.lnL, None, settings.delta, settings.starts, form)
    except FloatingPointError:
        return None


def _choose_form(fits: dict[str, ParametricFit], runs: RunArrays,
                 auto: bool) -> tuple[str, dict[str, dict[str, Any]], str]:
    """The candidate with the lowest AICc; Chinchilla's where too few runs make AICc undefined."""
    table = {}
    for name, fit in fits.items():
        resid = runs.lnL - predict_log_loss(fit.theta, runs.lnN, runs.lnD)
        k = FORMS[name].n_params
        table[name] = {"aicc": aicc(float(np.sum(resid**2)), resid.size, k), "n_params": k,
                       "rmse_log": float(np.sqrt(np.mean(resid**2))), "a": float(derived(fit.theta)["a"])}
    scores = {n: t["aicc"] for n, t in table.items()}
    if len(fits) == 1:
        why = "the only form that converged" if auto else "fixed by parametric.form"
        return next(iter(fits)), table, why
    if all(v < float("inf") for v in scores.values()):
        return min(scores, key=scores.__getitem__), table, "lowest AICc of the log residuals (parametric.form=auto)"
    name = "chinchilla" if "chinchilla" in fits else min(scores, key=scores.__getitem__)
    return name, table, f"too few runs ({runs.lnN.size}) to compare forms by AICc: Chinchilla's, the convention"


def fit_approach3(runs: RunArrays, settings: Settings, diag: Diagnostics) -> ParametricFit:
    """The point fit of L(N, D) in settings.form (auto: each form, the lowest AICc wins); warns when C is not
    proportional to N D across runs."""
    names = list(FORMS) if settings.form == "auto" else [settings.form]
    fits = {n: f for n in names if (f := _fit_form(runs, settings, n)) is not None}
    if not fits:
        raise HarnessError("Approach 3 found no finite fit from any start; check the losses and sizes, or "
                           "raise parametric.starts")
    chosen, table, rule = _choose_form(fits, runs, settings.form == "auto")
    fit = fits[chosen]
    fit.candidates, fit.rule = table, rule
    if chosen == "kaplan":
        diag.note("Approach 3 uses Kaplan et al. 2020's form (no irreducible loss E): its loss keeps falling as a "
                  "power law of compute, so far extrapolations are optimistic wherever a floor exists that these runs "
                  "do not reach")
    ratio = runs.ln_kappa
    if np.ptp(ratio) > np.log(MAX_KAPPA_SPREAD):
        diag.warn(
            f"C/(N D) ranges from {np.exp(ratio.min()):.3g} to {np.exp(ratio.max()):.3g} across runs: FLOPs are not "
            "proportional to N D under this parameter convention; Approach 3's compute-optimal N, D use the "
            f"median {runs.kappa:.3g} (try params=scaling or nonembedding)"
        )
    return fit


def approach3_samples(runs: RunArrays, weights: np.ndarray, theta: np.ndarray, settings: Settings) -> np.ndarray:
    """(B, 6) bootstrap thetas: L(N, D) refitted in theta's form on each resample's run multiplicities, started at
    theta (the form is the point fit's choice, not re-chosen per resample)."""
    return bootstrap_parametric(runs.lnN, runs.lnD, runs.lnL, weights.astype(float), theta, settings.delta,
                                settings.jobs)


def derived(theta: np.ndarray) -> dict[str, Any]:
    """E, A, B, alpha, beta, gamma and the implied a, b, G (Hoffmann et al. 2022 eq. 4) from theta (..., 6)."""
    th = as_theta6(theta)
    a, b, e, al, be, ga = (th[..., i] for i in range(N_THETA))
    with np.errstate(all="ignore"):
        s = al + be
        G = np.exp((np.log(al) + a - np.log(be) - b) / s)
        return {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": al, "beta": be, "gamma": ga, "a": be / s,
                "b": al / s, "G": G}


def formula_of(block: dict[str, Any]) -> str:
    """The fitted form's formula from fits.json's approach3 block (older files: Chinchilla's)."""
    return block.get("formula", FORMS["chinchilla"].label)


def form_choice_text(block: dict[str, Any]) -> str:
    """One line for the report: the form used, why, and every candidate's AICc and rmse (fits.json approach3)."""
    name = block.get("form", "chinchilla")
    forms = block.get("forms") or {}
    parts = [f"{n} {'-' if t['aicc'] is None else format(t['aicc'], '.1f')} (rmse {t['rmse_log']:.3g}, a {t['a']:.3g})"
             for n, t in forms.items()]
    text = f"{name}, {block.get('form_rule') or 'as fitted'}"
    return text + (f"; AICc: {'; '.join(parts)}" if parts else "")


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
        "form": fit.form.name, "formula": fit.form.label, "form_rule": fit.rule, "forms": fit.candidates,
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
