"""One-variable scaling laws with bootstrap intervals: L(x) = E + A x^-alpha (an irreducible term, as in Hoffmann
et al. 2022 eq. 2) and Kaplan et al. 2020's pure power law L(x) = (x_c / x)^alpha_x, for x = N (a size ladder),
D (a data ladder at fixed N) or C (the lowest loss per compute level).

Both forms are stored as L = E + K_ref (x / x_ref)^-k (E = 0 for Kaplan's form), so one evaluator serves them.
The irreducible form is fitted by variable projection (harness.analysis.powerlaw.fit_frontier: grid and golden
section in k, E >= 0 and K linear); Kaplan's form by least squares in log-log space. Intervals come from a
case bootstrap (Efron 1979): points are redrawn with replacement and every resample with fewer distinct points
than the form has parameters is left out (its count is kept in the Estimate's n).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.analysis.estimate import Estimate, estimate
from harness.analysis.frontier import E_BOUND_TOL, k_at_bound
from harness.analysis.powerlaw import fit_frontier, fit_loglog, frontier_value

IRREDUCIBLE = "irreducible"  # E + A x^-alpha
KAPLAN = "kaplan"  # (x_c / x)^alpha
FORMS = {IRREDUCIBLE: "E + A x^-alpha", KAPLAN: "(x_c / x)^alpha (Kaplan et al. 2020)"}
N_PARAMS = {IRREDUCIBLE: 3, KAPLAN: 2}
# Distinct points a form needs before it is fitted: its parameters plus one residual degree of freedom.
MIN_POINTS = {IRREDUCIBLE: 4, KAPLAN: 3}


@dataclass
class LawFit:
    """A fitted L(x): point parameters (E, ln K_ref, k) and bootstrap samples (B, 3), NaN rows for failed draws."""

    variable: str  # "N", "D" or "C"
    form: str  # IRREDUCIBLE or KAPLAN
    x: np.ndarray
    loss: np.ndarray
    lnx_ref: float
    theta: np.ndarray  # (E, ln K_ref, k)
    samples: np.ndarray | None

    def predict(self, x: float, level: float = 0.95) -> Estimate:
        """The law's loss at x with its bootstrap interval."""
        lnx = np.log(np.atleast_1d(float(x)))
        point = frontier_value(self.theta[0], self.theta[1], self.theta[2], lnx, self.lnx_ref)[0]
        s = self.samples
        boot = None if s is None else frontier_value(s[:, 0:1], s[:, 1:2], s[:, 2:3], lnx, self.lnx_ref)[:, 0]
        return estimate(point, boot, level)

    def curve(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Point curve and bootstrap curves (B, len(xs)) over xs, for plots."""
        lnx = np.log(np.asarray(xs, float))
        point = frontier_value(self.theta[0], self.theta[1], self.theta[2], lnx, self.lnx_ref)
        s = self.samples
        return point, None if s is None else frontier_value(s[:, 0:1], s[:, 1:2], s[:, 2:3], lnx, self.lnx_ref)

    @property
    def rmse(self) -> float:
        """Root-mean-square residual of the point fit, in loss units."""
        fitted = frontier_value(self.theta[0], self.theta[1], self.theta[2], np.log(self.x), self.lnx_ref)
        return float(np.sqrt(np.mean((self.loss - fitted) ** 2)))


@np.errstate(all="ignore")  # resamples with too few distinct points give NaN parameters, dropped by the caller
def _fit_batch(form: str, lnx: np.ndarray, loss: np.ndarray, lnx_ref: float) -> np.ndarray:
    """(B, 3) parameters (E, ln K_ref, k) for a batch of point sets lnx, loss of shape (B, n)."""
    if form == IRREDUCIBLE:
        fit = fit_frontier(lnx, loss, np.ones(loss.shape, bool), lnx_ref)
        return np.stack([fit.E, fit.lnK_ref, fit.k], axis=1)
    line = fit_loglog(lnx, np.log(loss))
    k = -line.slope
    return np.stack([np.zeros_like(k), line.intercept + line.slope * lnx_ref, k], axis=1)


def _distinct(idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Distinct x values per bootstrap draw (rows of indices into points with group labels)."""
    lab = np.sort(labels[idx], axis=1)
    return 1 + (np.diff(lab, axis=1) != 0).sum(axis=1)


def fit_law(variable: str, x: np.ndarray, loss: np.ndarray, form: str, n_boot: int = 1000,
            seed: int = 0) -> LawFit:
    """Fit one form of L(x) to points (x, loss) with a case bootstrap of n_boot resamples (0: none)."""
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    lnx = np.log(x)
    lnx_ref = float(np.mean(lnx))
    theta = _fit_batch(form, lnx[None, :], loss[None, :], lnx_ref)[0]
    samples = None
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, x.size, size=(n_boot, x.size))
        samples = _fit_batch(form, lnx[idx], loss[idx], lnx_ref)
        labels = np.unique(np.round(lnx, 9), return_inverse=True)[1]
        samples[_distinct(idx, labels) < N_PARAMS[form]] = np.nan
    return LawFit(variable, form, x, loss, lnx_ref, theta, samples)


def summarize_law(law: LawFit, level: float = 0.95) -> dict[str, Any]:
    """fits.json's block for one law: its parameters as Estimates, the fit's rmse, points and dof."""
    s = law.samples
    col = (lambda i: None) if s is None else (lambda i: s[:, i])
    E, lnK, k = (float(t) for t in law.theta)
    lnA = lnK + k * law.lnx_ref  # K_ref (x/x_ref)^-k = A x^-k
    block: dict[str, Any] = {
        "variable": law.variable, "form": law.form, "formula": FORMS[law.form].replace("x", law.variable),
        "alpha": estimate(k, col(2), level), "n_points": int(np.unique(law.x).size),
        "dof": int(np.unique(law.x).size - N_PARAMS[law.form]), "rmse": law.rmse,
        "x_range": [float(law.x.min()), float(law.x.max())], "theta": [E, lnK, k], "lnx_ref": law.lnx_ref,
    }
    if law.form == IRREDUCIBLE:
        block["E"] = estimate(E, col(0), level)
        block["A"] = estimate(np.exp(lnA), None if s is None else np.exp(s[:, 1] + s[:, 2] * law.lnx_ref), level)
    else:
        with np.errstate(all="ignore"):
            block["x_c"] = estimate(np.exp(law.lnx_ref + lnK / k) if k != 0 else float("nan"),  # flat: no x_c
                                    None if s is None else np.exp(law.lnx_ref + s[:, 1] / s[:, 2]), level)
    block["valid_resamples"] = 0 if s is None else int(np.isfinite(s[:, 2]).sum())
    return block


def law_warnings(name: str, law: LawFit, n_boot: int) -> list[str]:
    """Warnings a reader needs about one fitted law: exponent at its search bound, E at 0, few valid resamples."""
    out = []
    E, _, k = law.theta
    if law.form == IRREDUCIBLE and np.isfinite(k) and k_at_bound(float(k)):
        out.append(f"{name}: exponent alpha={k:.3g} sits at its search bound; the law is not identified by these points")
    if law.form == IRREDUCIBLE and np.isfinite(E) and E <= E_BOUND_TOL:
        out.append(f"{name}: the irreducible term E sits at its bound 0 (these points do not identify it); "
                   "Kaplan's pure power law describes them with one parameter fewer")
    if np.isfinite(k) and abs(float(k)) < 1e-9:
        out.append(f"{name}: exponent alpha = 0, the loss does not change with {law.variable} over these points; "
                   "no power law is identified (check the loss column)")
    if law.samples is not None and n_boot > 0:
        valid = int(np.isfinite(law.samples[:, 2]).sum())
        if valid < 0.95 * n_boot:
            out.append(f"{name}: only {valid} of {n_boot} bootstrap resamples had enough distinct points to fit; "
                       "the interval rests on those (add points)")
    return out
