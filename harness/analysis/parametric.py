"""Approach 3 of Hoffmann et al. 2022 as corrected by Besiroglu et al. 2024 (Epoch, "Chinchilla Scaling: A
replication attempt"): a parametric L(N, D) fitted in log space by the Huber loss (delta = 1e-3) of
log L_hat - log L summed over runs, with L-BFGS (analytic gradient) from a grid of initialisations; the best end
point wins. The starts, and later the bootstrap's resamples, are minimised together as one batch
(harness.analysis.lbfgs_batch: scipy's L-BFGS-B algorithm and tolerances, its relative-decrease stop scaled by |f|);
tables over ~4000 runs keep scipy row by row. Two forms share one parameter vector theta = (a, b, e, alpha, beta,
gamma):

    log L_hat = LSE(gamma * LSE(a - alpha log N, b - beta log D), e),   i.e.  L = E + (A/N^alpha + B/D^beta)^gamma

- "chinchilla" (Hoffmann et al. 2022): gamma = 1, so L = E + A/N^alpha + B/D^beta.
- "kaplan" (Kaplan et al. 2020, eq. 1.5): E = 0 and beta = 1, so L = (A/N^alpha + B/D)^gamma, which is
  [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D with alpha_D = gamma, alpha_N = alpha gamma, N_c = A^(1/alpha),
  D_c = B. No irreducible term: the loss falls as a power law of compute along the frontier.

A form's fixed slots hold fixed values (E = 0 is e = E_OFF), so theta alone says which form it is (form_of);
5-vectors from older fits.json are the Chinchilla form. The compute-optimal allocation under C = kappa N D is the
same closed form for both (gamma > 0 only rescales the sum): N_opt = G (C/kappa)^a, D_opt = G^-1 (C/kappa)^b
with a = beta/(alpha+beta), b = alpha/(alpha+beta), G = (alpha A / (beta B))^(1/(alpha+beta)).

Internally a and b are measured from the mean log N and log D (a_c = a - alpha mean(log N)): the same
objective and optimum, but far better conditioned for L-BFGS. Bootstrap refits warm-start from the full-data
optimum.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.analysis.lbfgs_batch import BatchResult, minimize_batch
from harness.analysis.workers import fork_map, worker_count

HUBER_DELTA = 1e-3
# theta's e for E = 0 (the Kaplan form): exp(E_OFF) is 0.0 and LSE(v, E_OFF) is v in float64, and it stays JSON-safe.
E_OFF = -1000.0
N_THETA = 6
# The initialisation grid of Hoffmann et al. 2022 / Besiroglu et al. 2024 (4500 points), gamma = 1.
GRID = {
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
    "e": np.arange(-1.0, 1.01, 0.5),
    "a": np.arange(0.0, 25.1, 5.0),
    "b": np.arange(0.0, 25.1, 5.0),
}
# Kaplan et al. 2020 report alpha_N / alpha_D ~ 0.8, alpha_D ~ 0.1 and N_c, D_c ~ 1e13; the grid spans that and
# the far smaller scales of a CPU sweep (1225 points).
KAPLAN_GRID = {
    "a": np.arange(0.0, 30.1, 5.0),
    "b": np.arange(0.0, 30.1, 5.0),
    "alpha": np.array([0.25, 0.5, 1.0, 1.5, 2.0]),
    "gamma": np.array([0.05, 0.1, 0.2, 0.4, 0.8]),
}


@dataclass(frozen=True)
class Form:
    """A member of the family L = E + (A/N^alpha + B/D^beta)^gamma: which theta slots are fitted, the rest fixed."""

    name: str
    label: str
    free: tuple[bool, ...]
    fixed: tuple[float, ...]  # values of the fixed slots (ignored where free)

    @property
    def n_params(self) -> int:
        return int(sum(self.free))


FORMS = {
    "chinchilla": Form("chinchilla", "E + A/N^alpha + B/D^beta (Hoffmann et al. 2022)",
                       (True, True, True, True, True, False), (0.0, 0.0, 0.0, 0.0, 0.0, 1.0)),
    "kaplan": Form("kaplan", "(A/N^alpha + B/D)^gamma (Kaplan et al. 2020, eq. 1.5)",
                   (True, True, False, True, False, True), (0.0, 0.0, E_OFF, 0.0, 1.0, 0.0)),
}


def as_theta6(theta: np.ndarray) -> np.ndarray:
    """theta (..., 6); a (..., 5) Chinchilla vector from an older fits.json gains gamma = 1."""
    th = np.asarray(theta, float)
    if th.shape[-1] == 5:
        th = np.concatenate([th, np.ones((*th.shape[:-1], 1))], axis=-1)
    return th


def form_of(theta: np.ndarray) -> Form:
    """The form a (6,) theta belongs to: E fixed at 0 (e == E_OFF) is Kaplan's, anything else Chinchilla's."""
    return FORMS["kaplan"] if as_theta6(theta)[2] == E_OFF else FORMS["chinchilla"]


LBFGS_OPTIONS = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9, "maxcor": 20}
# Rows x runs per batched evaluation. Many rows amortise the batch's per-iteration overhead; too many values per
# array spill the caches (2-core AMD EPYC, benchmarks/bench_analysis.py, fit_all with 1000 resamples: 300 runs
# 12.3 s -> 6.2 s, 1000 runs 7.4 s -> 4.6 s, 3000 runs 15.6 s -> 13.3 s against scipy row by row). Tables too large
# for MIN_BATCH_ROWS rows per chunk (over ~4000 runs) keep scipy's L-BFGS-B row by row, which was faster there.
BATCH_ELEMENTS = 65536
MIN_BATCH_ROWS = 16


_BLAS_FUNCS = [
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
]


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run tiny-matrix code (scipy's small fits) with one OpenBLAS thread: on a busy 2-core box a threaded OpenBLAS
    made each L-BFGS-B iteration ~100x slower. Linux only; a no-op where the libraries cannot be found."""
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
    """Best Approach-3 parameters theta = (a, b, e, alpha, beta, gamma) in Epoch's log form."""

    theta: np.ndarray
    objective: float
    converged: bool
    n_starts: int
    message: str
    candidates: dict = field(default_factory=dict)  # per form tried: AICc, rmse, a (harness.analysis.approach3)
    rule: str = ""  # why this form
    alternatives: dict = field(default_factory=dict, repr=False)  # form -> theta the bootstrap refits, chosen first

    @property
    def form(self) -> Form:
        return form_of(self.theta)

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

    @property
    def gamma(self) -> float:
        return float(self.theta[5])


def _log_model(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """log L of the parametric form at centred (x, y) for theta rows t (B, 6), with the intermediate terms the
    gradient reuses: t1 = a - alpha x, t2 = b - beta y, u = logaddexp(t1, t2), v = gamma u, z = logaddexp(v, e)."""
    t1 = t[:, 0:1] - t[:, 3:4] * x
    t2 = t[:, 1:2] - t[:, 4:5] * y
    u = np.logaddexp(t1, t2)
    v = t[:, 5:6] * u
    return t1, t2, u, v, np.logaddexp(v, t[:, 2:3])


def _huber(r: np.ndarray, w: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Huber loss of residuals r (B, runs), summed per row (r^2 / 2 inside delta, delta (|r| - delta / 2)
    outside), and its derivative w psi(r) per run."""
    c = np.clip(r, -delta, delta)
    return np.sum(w * c * (r - 0.5 * c), axis=1), w * c


class _Problem:
    """One form's fit, centred (x = log N - mu_N, y = log D - mu_D), under B weight vectors W (B, runs) at once: the
    bootstrap's resamples, or a multi-start fit's starts (every row the same weights). A run of weight 0 adds 0."""

    def __init__(self, lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, W: np.ndarray, delta: float, form: Form):
        lnN, lnD = np.asarray(lnN, float), np.asarray(lnD, float)
        self.muN, self.muD = float(lnN.mean()), float(lnD.mean())
        self.x, self.y, self.lnL = lnN - self.muN, lnD - self.muD, np.asarray(lnL, float)
        self.W = np.atleast_2d(np.asarray(W, float))
        self.delta = delta
        self.free = np.array(form.free)
        self.fixed = np.array(form.fixed, float)

    def to_centred(self, theta: np.ndarray) -> np.ndarray:
        """The free slots of theta, centred."""
        t = np.array(theta, float)
        t[0] -= t[3] * self.muN
        t[1] -= t[4] * self.muD
        return t[self.free]

    def from_centred(self, t_free: np.ndarray) -> np.ndarray:
        t = self.fixed.copy()
        t[self.free] = t_free
        t[0] += t[3] * self.muN
        t[1] += t[4] * self.muD
        return t

    def value_grad(self, T: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Huber objective (B,) and its gradient (B, free slots) at centred T (B, free slots), row i under W[rows[i]]."""
        t = self._full(T)
        e, ga = t[:, 2:3], t[:, 5:6]
        t1, t2, u, v, z = _log_model(t, self.x, self.y)
        f, psi = _huber(z - self.lnL, self.W[rows], self.delta)
        qv = psi * np.exp(v - z)
        g1, g2 = qv * ga * np.exp(t1 - u), qv * ga * np.exp(t2 - u)
        grad = np.stack([g1.sum(1), g2.sum(1), (psi * np.exp(e - z)).sum(1), -(g1 * self.x).sum(1),
                         -(g2 * self.y).sum(1), (qv * u).sum(1)], axis=1)
        return f, grad[:, self.free]

    def values(self, T: np.ndarray, max_points: int = 2000) -> np.ndarray:
        """Objective at many centred starts T (G, free slots) under W[0], on an evenly spaced subset of at most
        max_points runs (ranks a grid of starts)."""
        step = max(1, self.x.size // max_points)
        x, y, lnL, w = self.x[::step], self.y[::step], self.lnL[::step], self.W[0, ::step]
        out = np.empty(T.shape[0])
        for s in range(0, T.shape[0], 256):
            z = _log_model(self._full(T[s:s + 256]), x, y)[-1]
            out[s:s + 256] = _huber(z - lnL, w[None, :], self.delta)[0]
        return out

    def _full(self, T: np.ndarray) -> np.ndarray:
        """Full theta rows (B, 6) from centred free slots T (B, free slots)."""
        t = np.tile(self.fixed, (T.shape[0], 1))
        t[:, self.free] = T
        return t

    def run(self, T0: np.ndarray) -> BatchResult:
        """L-BFGS from row i of T0 (centred free slots) under W[i] (W[0] for every row if W has one row). Rows go in
        chunks of about BATCH_ELEMENTS values (rows x runs), the size at which this box's caches make a batched
        evaluation fastest; on a table too large for MIN_BATCH_ROWS rows per chunk each row runs through scipy's
        L-BFGS-B instead, where the data, not the per-call overhead, set the cost."""
        if T0.shape[0] == 0:
            return BatchResult(np.empty((0, T0.shape[1])), np.empty(0), np.empty(0, int), np.empty(0, bool))
        W = np.broadcast_to(self.W, (T0.shape[0], self.x.size))
        size = BATCH_ELEMENTS // max(self.x.size, 1)
        if size < MIN_BATCH_ROWS:
            return self._run_each(T0, W)
        parts = []
        for s in range(0, T0.shape[0], size):
            sub = copy.copy(self)
            sub.W = W[s:s + size]
            parts.append(minimize_batch(sub.value_grad, T0[s:s + size], maxiter=LBFGS_OPTIONS["maxiter"],
                                        ftol=LBFGS_OPTIONS["ftol"], gtol=LBFGS_OPTIONS["gtol"],
                                        m=LBFGS_OPTIONS["maxcor"]))
        return BatchResult(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("x", "fun", "nit", "converged")))

    def _run_each(self, T0: np.ndarray, W: np.ndarray) -> BatchResult:
        from scipy.optimize import minimize  # lazy: importing scipy.optimize costs ~0.5 s

        sub, row0 = copy.copy(self), np.zeros(1, int)
        out = []
        with single_blas_thread():
            for t0, w in zip(T0, W, strict=True):
                sub.W = w[None, :]
                res = minimize(lambda t: tuple(v[0] for v in sub.value_grad(t[None, :], row0)), t0, jac=True,
                               method="L-BFGS-B", options=LBFGS_OPTIONS)
                out.append((res.x, res.fun if np.isfinite(res.fun) else np.nan, res.nit, res.success))
        x, fun, nit, ok = zip(*out, strict=True)
        return BatchResult(np.array(x), np.array(fun, float), np.array(nit), np.array(ok))

    def thetas(self, T0: np.ndarray) -> np.ndarray:
        """run(T0)'s end points as full thetas (B, 6), NaN rows where the objective or theta is not finite."""
        res = self.run(T0)
        th = np.array([self.from_centred(x) for x in res.x]).reshape(-1, N_THETA)
        th[~np.isfinite(res.fun) | ~np.all(np.isfinite(th), axis=1)] = np.nan
        return th


def init_grid(form: Form = FORMS["chinchilla"]) -> np.ndarray:
    """A form's initialisation grid as full theta rows: Hoffmann et al. 2022's for Chinchilla, KAPLAN_GRID for
    Kaplan's."""
    if form.name == "kaplan":
        g = KAPLAN_GRID
        return np.array([(a, b, E_OFF, al, 1.0, ga) for a, b, al, ga
                         in itertools.product(g["a"], g["b"], g["alpha"], g["gamma"])], dtype=float)
    rows = itertools.product(GRID["a"], GRID["b"], GRID["e"], GRID["alpha"], GRID["beta"], [1.0])
    return np.array(list(rows), dtype=float)


def fit_parametric(
    lnN: np.ndarray,
    lnD: np.ndarray,
    lnL: np.ndarray,
    weights: np.ndarray | None = None,
    delta: float = HUBER_DELTA,
    starts: int = 32,
    form: str = "chinchilla",
) -> ParametricFit:
    """Epoch's Approach-3 fit of one form: L-BFGS from the `starts` best points of its grid (all if starts <= 0),
    ranked by their initial objective; returns the lowest final objective."""
    f = FORMS[form]
    w = np.ones(np.shape(lnN)) if weights is None else np.asarray(weights, float)
    prob = _Problem(lnN, lnD, lnL, w, delta, f)
    T = np.array([prob.to_centred(g) for g in init_grid(f)])
    if 0 < starts < len(T):
        order = np.argsort(prob.values(T))
        T = T[order[:starts]]
    res = prob.run(T)
    if not np.any(np.isfinite(res.fun)):
        raise FloatingPointError("no Approach-3 start converged to a finite objective")
    best = int(np.nanargmin(res.fun))
    message = "converged" if res.converged[best] else "stopped at the iteration limit or the floor of floating point"
    return ParametricFit(prob.from_centred(res.x[best]), float(res.fun[best]), bool(res.converged[best]), len(T),
                         message)


def refit(lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, weights: np.ndarray, theta0: np.ndarray,
          delta: float = HUBER_DELTA) -> np.ndarray:
    """One warm-started refit (a bootstrap resample) from theta0, in theta0's form; returns theta (NaN if not
    finite)."""
    return _refit_many((lnN, lnD, lnL, np.atleast_2d(weights), theta0, delta))[0]


def _refit_many(args: tuple) -> np.ndarray:
    lnN, lnD, lnL, W, theta0, delta = args
    theta0 = as_theta6(theta0)
    prob = _Problem(lnN, lnD, lnL, W, delta, form_of(theta0))
    return prob.thetas(np.tile(prob.to_centred(theta0), (W.shape[0], 1)))


def bootstrap_parametric(lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, W: np.ndarray, theta0: np.ndarray,
                         delta: float = HUBER_DELTA, jobs: int = 1) -> np.ndarray:
    """Refit every resample (rows of multiplicities W) in theta0's form, warm-started at theta0: (B, 6)."""
    return bootstrap_forms(lnN, lnD, lnL, W, [theta0], delta, jobs)[0]


def bootstrap_forms(lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, W: np.ndarray, thetas: list[np.ndarray],
                    delta: float = HUBER_DELTA, jobs: int = 1) -> np.ndarray:
    """bootstrap_parametric from each of several starts (one per form): (F, B, 6). More than one job (jobs <= 0:
    every core, worker_count) spreads chunks of resamples of every form over forked workers, with the same result."""
    jobs = worker_count(jobs)
    chunks = np.array_split(W, jobs if W.shape[0] >= 2 * jobs else 1)
    tasks = [(lnN, lnD, lnL, c, theta0, delta) for theta0 in thetas for c in chunks]
    parts = fork_map(_refit_many, tasks, jobs)
    return np.stack([np.concatenate(parts[i * len(chunks):(i + 1) * len(chunks)]) for i in range(len(thetas))])


def predict_log_loss(theta: np.ndarray, lnN: np.ndarray, lnD: np.ndarray) -> np.ndarray:
    """log L(N, D) = LSE(gamma LSE(a - alpha log N, b - beta log D), e); theta (..., 6) (or an older (..., 5))
    broadcasts against lnN, lnD."""
    th = as_theta6(theta)
    a, b, e, al, be, ga = (th[..., i] for i in range(N_THETA))
    return np.logaddexp(ga * np.logaddexp(a - al * lnN, b - be * lnD), e)


def compute_optimal(theta: np.ndarray, C: np.ndarray | float,
                    kappa: float = 6.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compute-optimal (N, D, L) at budget C under C = kappa N D (Hoffmann et al. 2022, Approach 3 closed form;
    gamma > 0 does not move the optimum). theta may be (6,) or (B, 6); results broadcast over theta rows and C."""
    th = as_theta6(theta)
    a, b, _e, al, be, _ga = (th[..., i] for i in range(N_THETA))
    with np.errstate(all="ignore"):
        s = al + be
        lnG = (np.log(al) + a - np.log(be) - b) / s
        lnCk = np.log(np.asarray(C, float)) - np.log(kappa)
        lnN = lnG + (be / s) * lnCk
        lnD = lnCk - lnN
        L = np.exp(predict_log_loss(th, lnN, lnD))
        return np.exp(lnN), np.exp(lnD), L  # an absurd table (C of 2 FLOPs) may overflow: inf, said by the caller
