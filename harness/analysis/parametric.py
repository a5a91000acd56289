"""Approach 3 of Hoffmann et al. 2022 as corrected by Besiroglu et al. 2024 (Epoch, "Chinchilla Scaling: A
replication attempt"): L(N, D) = E + A/N^alpha + B/D^beta fitted in log space,

    log L_hat = LSE(a - alpha log N, b - beta log D, e),   A = exp(a), B = exp(b), E = exp(e),

minimising the Huber loss (delta = 1e-3) of log L_hat - log L summed over runs, with L-BFGS (analytic
gradient) from a grid of initialisations; the best end point wins. Implied compute-optimal allocation under
C = kappa N D (kappa = 6 in Hoffmann et al. 2022): N_opt = G (C/kappa)^a, D_opt = G^-1 (C/kappa)^b with
a = beta/(alpha+beta), b = alpha/(alpha+beta), G = (alpha A / (beta B))^(1/(alpha+beta)).

Internally a and b are measured from the mean log N and log D (a_c = a - alpha mean(log N)): the same
objective and optimum, but far better conditioned for L-BFGS. Bootstrap refits warm-start from the full-data
optimum.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import multiprocessing as mp
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import OptimizeResult, minimize

HUBER_DELTA = 1e-3
# The initialisation grid of Hoffmann et al. 2022 / Besiroglu et al. 2024 (4500 points).
GRID = {
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
    "e": np.arange(-1.0, 1.01, 0.5),
    "a": np.arange(0.0, 25.1, 5.0),
    "b": np.arange(0.0, 25.1, 5.0),
}
LBFGS_OPTIONS = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9, "maxcor": 20}


_BLAS_FUNCS = [
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
]


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run tiny-matrix code (L-BFGS-B) with one OpenBLAS thread: on a busy 2-core box a threaded OpenBLAS
    makes each L-BFGS-B iteration ~100x slower. Linux only; a no-op where the libraries cannot be found."""
    restore = []
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
        libs = sorted({ln.split()[-1] for ln in maps if "openblas" in ln.lower() and ln.split()[-1].startswith("/")})
        for path in libs:
            lib = ctypes.CDLL(path)
            for get, put in _BLAS_FUNCS:
                if hasattr(lib, get) and hasattr(lib, put):
                    restore.append((getattr(lib, put), int(getattr(lib, get)())))
                    getattr(lib, put)(1)
                    break
    except OSError:
        pass
    try:
        yield
    finally:
        for put, n in restore:
            put(n)


@dataclass
class ParametricFit:
    """Best Approach-3 parameters in Epoch's log form theta = (a, b, e, alpha, beta)."""

    theta: np.ndarray
    objective: float
    converged: bool
    n_starts: int
    message: str

    @property
    def E(self) -> float:
        return float(np.exp(self.theta[2]))

    @property
    def A(self) -> float:
        return float(np.exp(self.theta[0]))

    @property
    def B(self) -> float:
        return float(np.exp(self.theta[1]))

    @property
    def alpha(self) -> float:
        return float(self.theta[3])

    @property
    def beta(self) -> float:
        return float(self.theta[4])


class _Problem:
    """Centred data for one fit: x = log N - mu_N, y = log D - mu_D, lnL, multiplicity weights w."""

    def __init__(self, lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, w: np.ndarray | None, delta: float):
        self.muN, self.muD = float(lnN.mean()), float(lnD.mean())
        keep = np.ones(lnN.shape, bool) if w is None else (w > 0)
        self.x = lnN[keep] - self.muN
        self.y = lnD[keep] - self.muD
        self.lnL = lnL[keep]
        self.w = np.ones(self.x.shape) if w is None else np.asarray(w, float)[keep]
        self.delta = delta

    def to_centred(self, theta: np.ndarray) -> np.ndarray:
        a, b, e, al, be = theta
        return np.array([a - al * self.muN, b - be * self.muD, e, al, be])

    def from_centred(self, t: np.ndarray) -> np.ndarray:
        ac, bc, e, al, be = t
        return np.array([ac + al * self.muN, bc + be * self.muD, e, al, be])

    def value_grad(self, t: np.ndarray) -> tuple[float, np.ndarray]:
        ac, bc, e, al, be = t
        t1 = ac - al * self.x
        t2 = bc - be * self.y
        m = np.maximum(np.maximum(t1, t2), e)
        p1 = np.exp(t1 - m)
        p2 = np.exp(t2 - m)
        p3 = np.exp(e - m)
        s = p1 + p2 + p3
        r = m + np.log(s) - self.lnL
        d = self.delta
        absr = np.abs(r)
        inner = absr <= d
        f = float(np.sum(self.w * np.where(inner, 0.5 * r * r, d * (absr - 0.5 * d))))
        g = self.w * np.clip(r, -d, d) / s
        g1, g2 = g * p1, g * p2
        grad = np.array([g1.sum(), g2.sum(), (g * p3).sum(), -(g1 * self.x).sum(), -(g2 * self.y).sum()])
        return f, grad

    def values(self, T: np.ndarray, max_points: int = 2000) -> np.ndarray:
        """Objective at many centred starts T (G, 5), on an evenly spaced subset of at most max_points runs."""
        step = max(1, self.x.size // max_points)
        x, y, lnL, w = self.x[::step], self.y[::step], self.lnL[::step], self.w[::step]
        out = np.empty(T.shape[0])
        for s in range(0, T.shape[0], 256):
            t = T[s:s + 256]
            t1 = t[:, 0:1] - t[:, 3:4] * x
            t2 = t[:, 1:2] - t[:, 4:5] * y
            r = np.logaddexp(np.logaddexp(t1, t2), t[:, 2:3]) - lnL
            a = np.abs(r)
            out[s:s + 256] = np.sum(w * np.where(a <= self.delta, 0.5 * r * r, self.delta * (a - 0.5 * self.delta)), 1)
        return out

    def minimise(self, t0: np.ndarray) -> OptimizeResult:
        return minimize(self.value_grad, t0, jac=True, method="L-BFGS-B", options=LBFGS_OPTIONS)


def init_grid() -> np.ndarray:
    """All combinations of the Hoffmann et al. 2022 initialisation grid as rows (a, b, e, alpha, beta)."""
    rows = itertools.product(GRID["a"], GRID["b"], GRID["e"], GRID["alpha"], GRID["beta"])
    return np.array(list(rows), dtype=float)


def fit_parametric(
    lnN: np.ndarray,
    lnD: np.ndarray,
    lnL: np.ndarray,
    weights: np.ndarray | None = None,
    delta: float = HUBER_DELTA,
    starts: int = 32,
) -> ParametricFit:
    """Epoch's Approach-3 fit: L-BFGS from the `starts` best points of the Hoffmann grid (all 4500 if starts
    <= 0), ranked by their initial objective; returns the lowest final objective."""
    prob = _Problem(np.asarray(lnN, float), np.asarray(lnD, float), np.asarray(lnL, float), weights, delta)
    grid = init_grid()
    T = np.array([prob.to_centred(g) for g in grid])
    if 0 < starts < len(T):
        order = np.argsort(prob.values(T))
        T = T[order[:starts]]
    best = None
    with single_blas_thread():
        for t0 in T:
            res = prob.minimise(t0)
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
    if best is None:
        raise FloatingPointError("no Approach-3 start converged to a finite objective")
    return ParametricFit(prob.from_centred(best.x), float(best.fun), bool(best.success), len(T), str(best.message))


def _refit(lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, weights: np.ndarray, theta0: np.ndarray,
           delta: float) -> np.ndarray:
    prob = _Problem(lnN, lnD, lnL, weights, delta)
    res = prob.minimise(prob.to_centred(theta0))
    th = prob.from_centred(res.x)
    return th if np.isfinite(res.fun) and np.all(np.isfinite(th)) else np.full(5, np.nan)


def refit(lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, weights: np.ndarray, theta0: np.ndarray,
          delta: float = HUBER_DELTA) -> np.ndarray:
    """One warm-started refit (a bootstrap resample) from theta0; returns theta (NaN if not finite)."""
    with single_blas_thread():
        return _refit(lnN, lnD, lnL, weights, theta0, delta)


def _refit_many(args: tuple) -> np.ndarray:
    lnN, lnD, lnL, W, theta0, delta = args
    with single_blas_thread():
        return np.array([_refit(lnN, lnD, lnL, w, theta0, delta) for w in W]).reshape(-1, 5)


def bootstrap_parametric(lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, W: np.ndarray, theta0: np.ndarray,
                         delta: float = HUBER_DELTA, jobs: int = 1) -> np.ndarray:
    """Refit every resample (rows of multiplicities W), warm-started at theta0; jobs > 1 uses forked workers."""
    if jobs <= 1 or W.shape[0] < 2 * jobs or "fork" not in mp.get_all_start_methods():
        return _refit_many((lnN, lnD, lnL, W, theta0, delta))
    chunks = np.array_split(W, jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as pool:
        parts = list(pool.map(_refit_many, [(lnN, lnD, lnL, c, theta0, delta) for c in chunks]))
    return np.concatenate(parts)


def predict_log_loss(theta: np.ndarray, lnN: np.ndarray, lnD: np.ndarray) -> np.ndarray:
    """log L(N, D) = LSE(a - alpha log N, b - beta log D, e); theta (..., 5) broadcasts against lnN, lnD."""
    th = np.asarray(theta, float)
    a, b, e, al, be = (th[..., i] for i in range(5))
    return np.logaddexp(np.logaddexp(a - al * lnN, b - be * lnD), e)


def compute_optimal(theta: np.ndarray, C: np.ndarray | float,
                    kappa: float = 6.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compute-optimal (N, D, L) at budget C under C = kappa N D (Hoffmann et al. 2022, Approach 3 closed form).
    theta may be (5,) or (B, 5); results broadcast over theta rows and C."""
    th = np.asarray(theta, float)
    a, b, _e, al, be = (th[..., i] for i in range(5))
    with np.errstate(all="ignore"):
        s = al + be
        lnG = (np.log(al) + a - np.log(be) - b) / s
        lnCk = np.log(np.asarray(C, float)) - np.log(kappa)
        lnN = lnG + (be / s) * lnCk
        lnD = lnCk - lnN
        L = np.exp(predict_log_loss(th, lnN, lnD))
    return np.exp(lnN), np.exp(lnD), L
