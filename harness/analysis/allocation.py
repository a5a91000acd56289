"""Allocations of compute from a fitted L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, Approach 3).

Strategies at one training budget C = kappa N D: compute-optimal (Approach 2 and 3), over-trained (more tokens
per parameter, as Llama-style models are), a Kaplan et al. 2020-style N proportional to C^0.73, and any given N;
each with Approach 3's predicted loss and its bootstrap interval. Lifetime sizing follows Sardana et al. 2024
("Beyond Chinchilla-Optimal: Accounting for Inference in Language Model Scaling Laws"): the (N, D) reaching a
target loss with the least training + inference compute kappa N D + 2 N I over I served tokens, and the best
loss for a fixed total. Pure numpy/scipy on a Fits: no hardware, no formatting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from harness.analysis.estimate import Estimate
from harness.analysis.fits import Fits
from harness.analysis.parametric import N_THETA, as_theta6, compute_optimal
from harness.analysis.predict import predict_at_budget, predict_loss
from harness.errors import HarnessError

# Inference FLOPs per parameter per generated token: the forward pass, 2N (Kaplan et al. 2020).
INFER_PER_PARAM = 2.0
OVERTRAIN = (2.0, 4.0, 10.0)
KAPLAN_EXPONENT = 0.73  # Kaplan et al. 2020: N_opt proportional to C^0.73
EXTRAPOLATION_WARN = 100.0
LAW3 = "Approach 3 L(N, D)"


def law3(fits: Fits) -> tuple[np.ndarray, float]:
    """Approach 3's theta = (ln A, ln B, ln E, alpha, beta, gamma) and kappa (C = kappa N D); a clear error
    without it."""
    a3 = fits.approach3 or {}
    theta = np.asarray(a3.get("theta") or [np.nan] * N_THETA, dtype=float)
    if theta.shape not in ((5,), (N_THETA,)) or not np.all(np.isfinite(theta)):
        raise HarnessError("the fits file has no Approach 3 fit (L(N, D) = E + (A/N^alpha + B/D^beta)^gamma); "
                           "strategies and lifetime sizing need it: rerun harness-analyze with Approach 3 enabled")
    return as_theta6(theta), float(a3.get("kappa") or fits.data.get("kappa") or 6.0)


def _terms(theta: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """(E, A, B, alpha, beta, gamma) from the log-form theta (E = 0 in Kaplan's form)."""
    a, b, e, al, be, ga = (float(x) for x in as_theta6(theta))
    return float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), al, be, ga


def loss_at(theta: np.ndarray, N: Any, D: Any) -> np.ndarray:
    """L(N, D) = E + (A/N^alpha + B/D^beta)^gamma (point estimate), broadcasting N and D."""
    E, A, B, al, be, ga = _terms(theta)
    return E + (A / np.asarray(N, float) ** al + B / np.asarray(D, float) ** be) ** ga


def check_target(theta: np.ndarray, target: float) -> None:
    """A target loss at or below the fitted irreducible loss E cannot be reached by any N, D: say so."""
    E = _terms(theta)[0]
    if not np.isfinite(target) or target <= E:
        raise HarnessError(f"target loss {target:.4g} is unreachable: the fitted irreducible loss E is {E:.4g} "
                           "(no N, D gets below it); pick target_loss above E")


def min_params(theta: np.ndarray, target: float) -> float:
    """The smallest N that can reach target with infinite data: A/N^alpha = (target - E)^(1/gamma)."""
    E, A, _, al, _, ga = _terms(theta)
    return float((A / (target - E) ** (1.0 / ga)) ** (1.0 / al))


def tokens_for_loss(theta: np.ndarray, N: Any, target: float) -> np.ndarray:
    """D on the iso-loss curve L(N, D) = target (inf where N alone cannot get there)."""
    E, A, B, al, be, ga = _terms(theta)
    gap = (target - E) ** (1.0 / ga) - A / np.asarray(N, float) ** al
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, (B / np.where(gap > 0, gap, 1.0)) ** (1.0 / be), np.inf)


def argmin_log(f: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, n: int = 4001) -> float:
    """argmin of f over x in [lo, hi] on a log grid, refined by a bounded scalar search around the best cell."""
    lx = np.linspace(np.log(lo), np.log(hi), n)
    vals = f(np.exp(lx))
    i = int(np.nanargmin(np.where(np.isfinite(vals), vals, np.nan)))
    a, b = lx[max(i - 1, 0)], lx[min(i + 1, n - 1)]
    res = minimize_scalar(lambda t: float(f(np.exp(np.array([t])))[0]), bounds=(a, b), method="bounded",
                          options={"xatol": 1e-10})
    return float(np.exp(res.x)) if res.fun <= vals[i] else float(np.exp(lx[i]))


def total_compute(theta: np.ndarray, N: Any, target: float, inference_tokens: float, kappa: float) -> np.ndarray:
    """Training + inference FLOPs kappa N D(N) + 2 N I along the iso-loss curve L(N, D) = target."""
    N = np.asarray(N, float)
    return kappa * N * tokens_for_loss(theta, N, target) + INFER_PER_PARAM * N * inference_tokens


def lifetime_optimal(theta: np.ndarray, target: float, inference_tokens: float, kappa: float) -> dict[str, float]:
    """Sardana et al. 2024: the N, D reaching target with the least kappa N D + 2 N I (I = 0: compute-optimal)."""
    check_target(theta, target)
    n0 = min_params(theta, target)
    N = argmin_log(lambda x: total_compute(theta, x, target, inference_tokens, kappa), n0 * (1 + 1e-9), n0 * 1e9)
    D = float(tokens_for_loss(theta, N, target))
    train, infer = kappa * N * D, INFER_PER_PARAM * N * inference_tokens
    return {"N": N, "D": D, "tokens_per_param": D / N, "loss": target, "train_flops": train,
            "inference_flops": infer, "total_flops": train + infer}


def best_loss_at_total(theta: np.ndarray, total: float, inference_tokens: float, kappa: float) -> dict[str, float]:
    """The lowest L(N, D) for a fixed total kappa N D + 2 N I = total (Sardana et al. 2024's dual problem)."""
    hi = total / kappa if inference_tokens <= 0 else min(total / kappa, total / (INFER_PER_PARAM * inference_tokens))

    def loss(N: np.ndarray) -> np.ndarray:
        D = (total - INFER_PER_PARAM * N * inference_tokens) / (kappa * N)
        return np.where(D > 0, loss_at(theta, N, np.where(D > 0, D, 1.0)), np.inf)

    N = argmin_log(loss, 1.0, hi * (1 - 1e-9))
    D = (total - INFER_PER_PARAM * N * inference_tokens) / (kappa * N)
    return {"N": N, "D": D, "tokens_per_param": D / N, "loss": float(loss_at(theta, N, D)),
            "train_flops": kappa * N * D, "inference_flops": INFER_PER_PARAM * N * inference_tokens, "total_flops": total}


def iso_loss_curve(theta: np.ndarray, target: float, inference_tokens: float, kappa: float,
                   span: Sequence[float], n: int = 240) -> dict[str, list[float]]:
    """N, train, inference and total FLOPs along L(N, D) = target for N in span (for the lifetime plot)."""
    lo = max(span[0], min_params(theta, target) * 1.001)
    N = np.geomspace(lo, max(span[1], lo * 10), n)
    train = kappa * N * tokens_for_loss(theta, N, target)
    infer = INFER_PER_PARAM * N * inference_tokens
    return {"N": N.tolist(), "train_flops": train.tolist(), "inference_flops": infer.tolist(),
            "total_flops": (train + infer).tolist()}


def _row(fits: Fits, name: str, law: str, N: float | Estimate, D: float | Estimate, kappa: float) -> dict[str, Any]:
    """One strategy: N, D (Estimates where the law gives intervals) and Approach 3's loss there."""
    n = N if isinstance(N, Estimate) else Estimate(float(N))
    d = D if isinstance(D, Estimate) else Estimate(float(D))
    return {"strategy": name, "law": law, "N": n, "D": d, "tokens_per_param": d.value / n.value,
            "train_flops": kappa * n.value * d.value, "loss": predict_loss(fits, n.value, d.value)}


def strategies(fits: Fits, C: float, user_N: Sequence[float] = (), overtrain: Sequence[float] = OVERTRAIN,
               kaplan_exponent: float = KAPLAN_EXPONENT) -> list[dict[str, Any]]:
    """Allocations of one training budget C = kappa N D, each with Approach 3's loss and its penalty vs optimum."""
    theta, kappa = law3(fits)
    opt = predict_at_budget(fits, C)
    a2, a3 = opt["approach2"], opt["approach3"]
    rows = [_row(fits, "compute-optimal (Approach 2)", "Approach 2 N_opt = k_N C^a, D = C/(kappa N)",
                 a2["N"], C / (kappa * a2["N"].value), kappa),
            _row(fits, "compute-optimal (Approach 3)", "Approach 3 closed form at C = kappa N D", a3["N"], a3["D"],
                 kappa)]
    r3 = a3["D"].value / a3["N"].value
    for m in overtrain:
        N = float(np.sqrt(C / (kappa * m * r3)))
        rows.append(_row(fits, f"over-trained x{m:g}", f"{m:g} x Approach 3's tokens/param", N, C / (kappa * N), kappa))
    c_max = max(b["C"] for b in fits.budgets)
    N_k = float(compute_optimal(theta, c_max, kappa)[0]) * (C / c_max) ** kaplan_exponent
    rows.append(_row(fits, f"Kaplan 2020 (N ~ C^{kaplan_exponent:g})",
                     f"N ~ C^{kaplan_exponent:g} from Approach 3's N_opt at the largest fitted budget",
                     N_k, C / (kappa * N_k), kappa))
    for N in user_N:
        rows.append(_row(fits, f"N={float(N):.3g}", "given N, D = C/(kappa N)", float(N), C / (kappa * float(N)), kappa))
    best = float(a3["loss"].value)
    for r in rows:
        r["penalty"] = float(r["loss"].value) - best
        r["penalty_pct"] = 100.0 * r["penalty"] / best
    return rows


def lifetime_plan(fits: Fits, C: float, inference_tokens: float, target: float | None = None) -> dict[str, Any]:
    """Lifetime-optimal vs compute-optimal model for I served tokens (Sardana et al. 2024); target defaults to
    the compute-optimal loss at C. Savings are 1 - total(lifetime-optimal) / total(compute-optimal)."""
    if not np.isfinite(inference_tokens) or inference_tokens < 0:
        raise HarnessError(f"inference_tokens={inference_tokens:g} must be >= 0 (tokens served over the model's life)")
    theta, kappa = law3(fits)
    target = float(compute_optimal(theta, C, kappa)[2]) if target is None else float(target)
    check_target(theta, target)
    base = lifetime_optimal(theta, target, 0.0, kappa)
    base["inference_flops"] = INFER_PER_PARAM * base["N"] * inference_tokens
    base["total_flops"] = base["train_flops"] + base["inference_flops"]
    best = lifetime_optimal(theta, target, inference_tokens, kappa)
    fixed = best_loss_at_total(theta, base["total_flops"], inference_tokens, kappa)
    for d in (base, best, fixed):
        d["loss_estimate"] = predict_loss(fits, d["N"], d["D"])
    span = (min(best["N"], base["N"]) / 10, max(best["N"], base["N"]) * 10)
    return {"inference_tokens": float(inference_tokens), "target_loss": target, "kappa": kappa,
            "law": LAW3 + f", training kappa N D (kappa={kappa:.3g}), inference 2N per token",
            "compute_optimal": base, "lifetime_optimal": best, "fixed_total": fixed,
            "savings": 1.0 - best["total_flops"] / base["total_flops"],
            "loss_gain_at_fixed_total": target - fixed["loss"],
            "curve": iso_loss_curve(theta, target, inference_tokens, kappa, span)}
