"""Approach 3 of Hoffmann et al. 2022 on every usable run: a parametric L(N, D) fitted as Besiroglu et al. 2024
corrected it (log-space LSE, Huber loss, L-BFGS from a grid; harness.analysis.parametric), and the compute-optimal
exponents it implies, a = beta / (alpha + beta), b = alpha / (alpha + beta).

The form is chosen by the data (parametric.form=auto): Chinchilla's E + A/N^alpha + B/D^beta or Kaplan et al.
2020's (A/N^alpha + B/D)^gamma, whichever has the lower AICc (Hurvich & Tsai 1989) on the log residuals. Far below
the scale where the irreducible loss shows, the Chinchilla form bends towards an E the runs cannot see and
over-predicts larger runs; on LLM-scale surfaces with a visible floor it wins by a wide margin (README "Approach 3's
form"). The bootstrap makes the same choice on every resample, so intervals of a, b and predictions carry the
choice's own uncertainty (model selection inside the bootstrap, as in Burnham & Anderson 2002, sec. 4.3).
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
    bootstrap_forms,
    bootstrap_parametric,
    fit_parametric,
    form_of,
    predict_log_loss,
)
from harness.errors import HarnessError

# Runs count as C proportional to N D when C / (N D) varies by less than this ratio across them.
MAX_KAPPA_SPREAD = 1.25
# alpha, beta outside this range are not plausible scaling exponents (the runs' N/D range cannot identify them).
PLAUSIBLE_EXPONENT = (0.02, 2.5)
# The chosen form's own parameters: their intervals come from the resamples that chose the same form (a gamma or an
# E mixed across forms means nothing); a, b, G and predictions use every resample.
FORM_PARAMS = ("E", "A", "B", "alpha", "beta", "gamma")
# On a table of SCREEN_MIN_RUNS runs or more, the bootstrap does not refit a form whose AICc lies SCREEN_SD or more
# resampling standard deviations behind the chosen one (sd_behind): there the refits are costly and the normal
# approximation behind sd_behind holds. On small tables it does not (demo's 3-budget backtest cut-off, 15 runs:
# Chinchilla's form 9.7 sd behind won 1 of 200 resamples), so every form is refitted.
SCREEN_SD = 8.0
SCREEN_MIN_RUNS = 500


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

    def subset(self, mask: np.ndarray) -> RunArrays:
        """The runs where mask is true."""
        return RunArrays(self.lnN[mask], self.lnD[mask], self.lnL[mask], self.lnC[mask])

    @property
    def ln_kappa(self) -> np.ndarray:
        """ln(C / (N D)) per run."""
        return self.lnC - self.lnN - self.lnD

    @property
    def kappa(self) -> float:
        """The median C / (N D): converts Approach 3's optimum to a budget (Hoffmann et al. 2022 use 6)."""
        return float(np.exp(np.median(self.ln_kappa)))


def aicc(rss: Any, n: int, k: int) -> Any:
    """Akaike's criterion with the small-sample correction (Hurvich & Tsai 1989) for least-squares fits with k
    parameters to n points, of one RSS or an array of them; inf where n <= k + 1 (undefined), -inf for an exact
    fit."""
    r = np.asarray(rss, float)
    if n <= k + 1:
        out = np.full(r.shape, np.inf)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(r <= 0, -np.inf, n * np.log(r / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1))
    return float(out) if out.ndim == 0 else out


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


def sd_behind(runs: RunArrays, chosen: np.ndarray, other: np.ndarray, gap: float) -> float:
    """How far another form's AICc lies behind the chosen form's (gap = the difference), in resampling standard
    deviations: the sd of twice the summed pointwise Gaussian log-likelihood ratio, sqrt(n) times that of one
    point (Vuong 1989's statistic for non-nested models)."""
    def loglik(theta: np.ndarray) -> np.ndarray:
        r2 = (runs.lnL - predict_log_loss(theta, runs.lnN, runs.lnD)) ** 2
        return -0.5 * np.log(np.mean(r2)) - r2 / (2 * np.mean(r2))

    sd = 2 * np.sqrt(runs.lnL.size) * float(np.std(loglik(chosen) - loglik(other)))
    return float(gap / sd) if sd > 0 else float("inf")


def _bootstrap_forms(fits: dict[str, ParametricFit], chosen: str, table: dict[str, dict[str, Any]],
                     runs: RunArrays) -> dict[str, np.ndarray]:
    """The forms the bootstrap refits, chosen first: every one whose AICc can be compared, except on a table of
    SCREEN_MIN_RUNS runs or more those SCREEN_SD or more resampling sd behind (sd_behind, then in their table
    rows)."""
    keep = {chosen: fits[chosen].theta}
    for name, fit in fits.items():
        gap = table[name]["aicc"] - table[chosen]["aicc"]
        if name == chosen or not np.isfinite(gap):  # too few runs for AICc: the choice cannot be remade
            continue
        if runs.lnL.size >= SCREEN_MIN_RUNS:
            table[name]["sd_behind"] = sd_behind(runs, fits[chosen].theta, fit.theta, gap)
            if table[name]["sd_behind"] >= SCREEN_SD:
                continue
        keep[name] = fit.theta
    return keep


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
    fit.alternatives = _bootstrap_forms(fits, chosen, table, runs)
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


def approach3_samples(runs: RunArrays, weights: np.ndarray, fit: ParametricFit, settings: Settings) -> np.ndarray:
    """(B, 6) bootstrap thetas: L(N, D) refitted on each resample's run weights, warm-started at the point fit.
    Under parametric.form=auto every form that converged on all runs (on large tables: not SCREEN_SD behind) is
    refitted from its own optimum and each resample keeps the one with the lower AICc, as the point fit did; a
    fixed form, or too few runs for AICc, keeps the point fit's form."""
    W = weights.astype(float)
    forms = fit.alternatives  # one form unless parametric.form=auto could compare several (fit_approach3)
    if len(forms) < 2:
        return bootstrap_parametric(runs.lnN, runs.lnD, runs.lnL, W, fit.theta, settings.delta, settings.jobs)
    refits = bootstrap_forms(runs.lnN, runs.lnD, runs.lnL, W, list(forms.values()), settings.delta, settings.jobs)
    scores = np.stack([resample_aicc(runs, W, r, FORMS[n].n_params) for n, r in zip(forms, refits, strict=True)])
    return refits[np.argmin(scores, axis=0), np.arange(W.shape[0])]


def resample_aicc(runs: RunArrays, weights: np.ndarray, thetas: np.ndarray, k: int) -> np.ndarray:
    """AICc (as aicc) of each refit theta (B, 6) on its resample's weighted log residuals (weights rescaled to sum
    to the number of runs); inf where the refit failed."""
    n = runs.lnL.size
    resid = runs.lnL - predict_log_loss(thetas[:, None, :], runs.lnN, runs.lnD)
    with np.errstate(invalid="ignore"):
        rss = n * np.sum(weights * resid**2, axis=1) / np.sum(weights, axis=1)
    out = aicc(rss, n, k)
    return np.where(np.isnan(out), np.inf, out)


def resample_forms(thetas: np.ndarray) -> np.ndarray:
    """The form name of each bootstrap theta (B, 6); '' for a failed (non-finite) refit."""
    return np.array([form_of(t).name if np.all(np.isfinite(t)) else "" for t in as_theta6(thetas)])


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


def _candidate_text(name: str, row: dict[str, Any]) -> str:
    """One candidate form's AICc, rmse, a and (large tables) how far behind it lies."""
    aicc_text = "-" if row["aicc"] is None else format(row["aicc"], ".1f")
    behind = f", {row['sd_behind']:.3g} resampling sd behind" if row.get("sd_behind") is not None else ""
    return f"{name} {aicc_text} (rmse {row['rmse_log']:.3g}, a {row['a']:.3g}{behind})"


def _resamples_text(name: str, forms: dict[str, Any], counts: dict[str, int]) -> str:
    """What the bootstrap did with the forms: which it skipped, and how often each won a resample."""
    text = ""
    skipped = [n for n, t in forms.items() if t.get("sd_behind") is not None and n not in counts]
    if skipped and counts:
        text += (f"; not refitted on the resamples, its AICc {', '.join(skipped)} >= {SCREEN_SD:g} resampling sd "
                 "behind")
    if len(counts) > 1:
        chose = ", ".join(f"{n} {c}" for n, c in counts.items())
        text += (f"; the bootstrap chose again on every resample ({chose} of {sum(counts.values())}): the intervals "
                 f"of a, b and the predictions include that choice, the parameter intervals use the "
                 f"{counts.get(name, 0)} resamples that chose {name}")
    return text


def form_rule_text(block: dict[str, Any]) -> str:
    """The form used and why (fits.json approach3; older files: Chinchilla's)."""
    return f"{block.get('form', 'chinchilla')}, {block.get('form_rule') or 'as fitted'}"


def form_choice_text(block: dict[str, Any]) -> str:
    """One line for the report: the form used, why, every candidate's AICc and rmse, and what the bootstrap did
    with them (fits.json approach3)."""
    name = block.get("form", "chinchilla")
    forms = block.get("forms") or {}
    text = form_rule_text(block)
    if forms:
        text += "; AICc: " + "; ".join(_candidate_text(n, t) for n, t in forms.items())
    return text + _resamples_text(name, forms, block.get("form_resamples") or {})


def summarize_approach3(runs: RunArrays, fit: ParametricFit, samples: dict[str, np.ndarray], settings: Settings,
                        diag: Diagnostics) -> dict[str, Any]:
    """fits.json's approach3 block: every derived quantity as an Estimate, theta, kappa and the fit's health."""
    point = derived(fit.theta)
    boot = samples.get("approach3")
    names = None if boot is None else resample_forms(boot)
    every = None if boot is None else derived(boot)
    own = None if boot is None else derived(boot[names == fit.form.name])
    block: dict[str, Any] = {
        k: estimate(point[k], None if boot is None else (own if k in FORM_PARAMS else every)[k], settings.level)
        for k in point
    }
    if names is not None:
        block["form_resamples"] = {n: int(np.sum(names == n)) for n in fit.alternatives or {fit.form.name: None}}
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
