"""Predictions at a user's targets (`predict.C`, `predict.N`, `predict.D`) from every applicable fitted law, each an
Estimate with its bootstrap interval, and for a compute target the recommended N and D: Approach 2/3 of Hoffmann
et al. 2022 where fitted, else the table's own trend of N with compute (how the table grew N, not an optimum).

A law applies where it was fitted: L(N) at its ladder's D (or tokens/param), L(D) at its ladder's N, L(C) along
the table's own allocation path, Approach 3 anywhere in (N, D). Targets outside that are listed with the reason.
An (N, D) target is converted to compute with the table's median kappa = C / (N D) (6 under C = 6ND).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.estimate import Estimate, estimate
from harness.analysis.fits import Fits
from harness.analysis.laws import FORMS
from harness.analysis.load import cfg_get, suffixed_counts
from harness.analysis.parametric import compute_optimal, predict_log_loss
from harness.analysis.powerlaw import fit_loglog
from harness.analysis.predict import DEFAULT_MULTIPLES, approach2_curves, approach2_loss_at, predict_loss
from harness.analysis.tables import TableFits
from harness.errors import HarnessError

MATCH_TOL = 0.10  # a target's D (or N, or D/N) within 10% of a ladder's fixed value counts as on the ladder


def _positive(key: str, v: Any) -> float | None:
    """A positive finite number from the config, or None when unset."""
    if v is None or str(v).lower() in ("", "null", "none"):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float(suffixed_counts(pd.Series([v])).iloc[0])  # 70M, 1.4B, 2T: as a table's cells may be written
        if math.isnan(x):
            raise HarnessError(f"{key}={v!r} is not a number; use e.g. {key}=1e10 or {key}=10B") from None
    if not (math.isfinite(x) and x > 0):
        raise HarnessError(f"{key}={v!r} must be a positive finite number")
    return x


@dataclass
class Targets:
    """The user's targets: compute budgets C (FLOPs) and one model (N parameters, D tokens)."""

    C: tuple[float, ...] = ()
    N: float | None = None
    D: float | None = None

    @classmethod
    def from_cfg(cls, cfg: Any) -> Targets:
        """predict.C (one number or a list), predict.N, predict.D; a bare list `predict=[...]` means budgets."""
        pred = cfg_get(cfg, "predict")
        if pred is None or not isinstance(pred, Mapping):
            return cls()  # budgets only: Settings.predict reads them
        C = pred.get("C")
        listed = [] if C is None else ([C] if isinstance(C, (str, int, float)) else list(C))
        budgets = tuple(x for x in (_positive("predict.C", c) for c in listed) if x is not None)
        return cls(budgets, _positive("predict.N", pred.get("N")), _positive("predict.D", pred.get("D")))

    @property
    def model(self) -> bool:
        """Whether a model (N and/or D) was asked for."""
        return self.N is not None or self.D is not None


def _near(a: float, b: float) -> bool:
    return abs(math.log(a / b)) <= math.log1p(MATCH_TOL)


def _row(law: str, loss: Estimate, note: str, extrapolation: float | None = None) -> dict[str, Any]:
    return {"law": law, "loss": loss, "extrapolation": extrapolation, "note": note}


def _law_rows(tf: TableFits, name: str, x: float, note: str, level: float) -> list[dict[str, Any]]:
    """The loss at x from each fitted form of law `name`."""
    rows = []
    for form in FORMS:
        law = tf.fitted.get(f"{name} {form}")
        if law is not None:
            rows.append(_row(f"{name} {FORMS[form].replace('x', name[2])}", law.predict(x, level), note,
                             float(x / law.x.max())))
    return rows


def _ladder_check(tf: TableFits, name: str, N: float | None, D: float | None) -> str | None:
    """Why law `name` (L(N) or L(D)) does not apply to the model (N, D); None when it does."""
    block = tf.laws.get(name)
    if block is None:
        return None
    ladder = block["ladder"]
    fixed, value = ladder["fixed"], ladder["value"]
    need = N if name == "L(N)" else D
    if need is None:
        return f"needs predict.{'N' if name == 'L(N)' else 'D'}"
    held = {"D": D, "N": N, "D/N": None if N is None or D is None else D / N}[fixed]
    if held is not None and not _near(held, value):
        return f"fitted at {fixed} = {value:.3g}; the target has {fixed} = {held:.3g}"
    return None


def _approach3_loss(tf: TableFits, N: float, D: float, level: float) -> Estimate:
    """Approach 3's L(N, D) at the target with its interval."""
    theta = np.asarray(tf.approach3["theta"], float)
    point = float(np.exp(predict_log_loss(theta, np.log(N), np.log(D))))
    s = tf.approach3_samples
    return estimate(point, None if s is None else np.exp(predict_log_loss(s, np.log(N), np.log(D))), level)


def _path_note(tf: TableFits, C: float, kappa: float) -> str:
    """How L(C) reads at the model's C: along the table's own allocation, whose tokens/param there it states."""
    trend = _trend(tf, C, 0, 0, 0.95)
    note = f"at C = {kappa:.3g} N D, along the table's own allocation path"
    if trend and trend["N"].value and trend["D"].value:
        note += f" (there N = {trend['N'].value:.3g}, {trend['D'].value / trend['N'].value:.3g} tokens/param)"
    return note


def model_target(tf: TableFits, N: float | None, D: float | None, level: float) -> dict[str, Any]:
    """The loss of the model (N, D) from every applicable law, and the laws that do not apply with the reason."""
    kappa = float(tf.data["kappa"])
    C = None if N is None or D is None else kappa * N * D
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name, x in (("L(N)", N), ("L(D)", D)):
        why = _ladder_check(tf, name, N, D)
        if name not in tf.laws:
            continue
        if why:
            skipped.append({"law": name, "reason": why})
        else:
            rows += _law_rows(tf, name, float(x), f"at the ladder's {tf.laws[name]['ladder']['fixed']}", level)
    if "L(C)" in tf.laws:
        if C is None:
            skipped.append({"law": "L(C)", "reason": "needs both predict.N and predict.D (C = kappa N D)"})
        else:
            rows += _law_rows(tf, "L(C)", C, _path_note(tf, C, kappa), level)
    if tf.approach3:
        if C is None:
            skipped.append({"law": "Approach 3", "reason": "needs both predict.N and predict.D"})
        else:
            rows.append(_row("Approach 3 L(N, D)", _approach3_loss(tf, N, D, level), "at the target's N and D"))
    return {"N": N, "D": D, "C": C, "tokens_per_param": None if C is None else D / N, "predictions": rows,
            "not_applicable": skipped}


def _trend(tf: TableFits, C: float, n_boot: int, seed: int, level: float) -> dict[str, Any] | None:
    """N and D at C from the table's own trend ln N = a ln C + c over the lowest-loss run per compute level."""
    pts = tf.points.get("L(C)")
    if pts is None or pts["params"].nunique() < 2:
        return None
    lnC, lnN = np.log(pts["flops"].to_numpy(float)), np.log(pts["params"].to_numpy(float))
    point = fit_loglog(lnC, lnN)
    n_at = float(np.exp(point.intercept[0] + point.slope[0] * math.log(C)))
    boot = None
    if n_boot > 0:
        idx = np.random.default_rng(seed).integers(0, lnC.size, size=(n_boot, lnC.size))
        fit = fit_loglog(lnC[idx], lnN[idx])
        boot = np.exp(fit.intercept + fit.slope * math.log(C))
    kappa = float(tf.data["kappa"])
    return {"source": "the table's own trend of N with compute (how it grew N, not a fitted optimum)",
            "N": estimate(n_at, boot, level), "D": estimate(C / (kappa * n_at), None if boot is None else
                                                         C / (kappa * boot), level),
            "exponent_a": float(point.slope[0])}


def _approach3_optimum(tf: TableFits, C: float, level: float) -> dict[str, Any]:
    """Approach 3's compute-optimal N, D and loss at C (C = kappa N D)."""
    kappa = float(tf.approach3["kappa"])
    N, D, L = compute_optimal(np.asarray(tf.approach3["theta"], float), C, kappa)
    s = tf.approach3_samples
    Ns, Ds, Ls = (None, None, None) if s is None else compute_optimal(s, C, kappa)
    return {"source": "Approach 3 (compute-optimal under C = kappa N D)", "N": estimate(N, Ns, level),
            "D": estimate(D, Ds, level), "loss": estimate(L, Ls, level)}


def compute_target(tf: TableFits, C: float, level: float) -> dict[str, Any]:
    """The loss at compute C from L(C) and Approach 3, and the recommended N and D."""
    rows = _law_rows(tf, "L(C)", C, "the lowest loss per compute level, extrapolated", level)
    rec = None
    if tf.approach3:
        rec = _approach3_optimum(tf, C, level)
        rows.append(_row("Approach 3 at its optimum", rec["loss"], "compute-optimal N, D"))
    else:
        rec = _trend(tf, C, int(tf.settings["bootstrap"]), int(tf.settings["seed"]), level)
    return {"C": C, "predictions": rows, "recommendation": rec}


def predict_targets(tf: TableFits, targets: Targets) -> dict[str, Any]:
    """tf.targets: {"C": [compute_target...], "model": model_target or None}."""
    level = float(tf.settings["level"])
    budgets = targets.C or tuple(float(c) for c in tf.settings.get("predict") or ())
    if not budgets and not targets.model and ("L(C)" in tf.laws or tf.approach3):
        budgets = tuple(tf.data["C_range"][1] * m for m in DEFAULT_MULTIPLES)
    return {"C": [compute_target(tf, float(c), level) for c in budgets],
            "model": model_target(tf, targets.N, targets.D, level) if targets.model else None}


def isoflop_model_target(fits: Fits, N: float | None, D: float | None) -> dict[str, Any]:
    """For an IsoFLOP analysis: Approach 3's loss at (N, D), Approach 2's for N at C = kappa N D (the frontier raised
    along the IsoFLOP parabola) and the frontier's own at that C."""
    if N is None or D is None:
        return {"N": N, "D": D, "C": None, "predictions": [], "not_applicable": [
            {"law": "Approach 3 and the frontier", "reason": "need both predict.N and predict.D"}]}
    kappa = float(fits.approach3["kappa"])
    C = kappa * N * D
    cur = approach2_curves(fits, np.array([C]))
    level = float(fits.bootstrap.get("level", 0.95))
    frontier = estimate(cur["loss"][0], cur["loss_samples"][:, 0] if "loss_samples" in cur else None, level)
    largest = max(b["C"] for b in fits.budgets)
    return {"N": N, "D": D, "C": C, "tokens_per_param": D / N, "not_applicable": [], "predictions": [
        _row("Approach 3 L(N, D)", predict_loss(fits, N, D), "at the target's N and D", C / largest),
        _row("Approach 2 L(C, N)", approach2_loss_at(fits, C, N),
             f"the frontier at C = {kappa:.3g} N D, raised along the IsoFLOP parabola to the target's N", C / largest),
        _row("frontier L_opt(C)", frontier, f"at C = {kappa:.3g} N D, if (N, D) were compute-optimal", C / largest)]}
