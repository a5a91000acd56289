"""Approach 3 of Hoffmann et al. 2022 as corrected by Besiroglu et al. 2024 (Epoch, "Chinchilla Scaling: A
replication attempt"): a parametric L(N, D) fitted in log space by the Huber loss (delta = 1e-3) of
log L_hat - log L summed over runs, with L-BFGS (analytic gradient) from a grid of initialisations; the best end
point wins. Two forms share one parameter vector theta = (a, b, e, alpha, beta, gamma):

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
import ctypes
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import OptimizeResult, minimize

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


class _Problem:
    """Centred data for one fit of one form: x = log N - mu_N, y = log D - mu_D, lnL, multiplicity weights w."""

    def __init__(self, lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, w: np.ndarray | None, delta: float,
                 form: Form):
        self.muN, self.muD = float(lnN.mean()), float(lnD.mean())
        keep = np.ones(lnN.shape, bool) if w is None else (w > 0)
        self.x = lnN[keep] - self.muN
        self.y = lnD[keep] - self.muD
        self.lnL = lnL[keep]
        self.w = np.ones(self.x.shape) if w is None else np.asarray(w, float)[keep]
        self.delta = delta
        self.free = np.array(form.free)
        self.fixed = np.array(form.fixed, float)

    def to_centred(self, theta: np.ndarray) -> np.ndarray:
        """The free slots of theta, centred."""
        t = np.array(theta, float)
        t[0] -= t[3] * self.muN
        t[1] -= t[4] * self.muD
        return t[self.free]

    def full(self, t_free: np.ndarray) -> np.ndarray:
        t = self.fixed.copy()
        t[self.free] = t_free
        return t

    def from_centred(self, t_free: np.ndarray) -> np.ndarray:
        t = self.full(t_free)
        t[0] += t[3] * self.muN
        t[1] += t[4] * self.muD
        return t

    def value_grad(self, t_free: np.ndarray) -> tuple[float, np.ndarray]:
        ac, bc, e, al, be, ga = self.full(t_free)
        t1 = ac - al * self.x
        t2 = bc - be * self.y
        u = np.logaddexp(t1, t2)
        v = ga * u
        z = np.logaddexp(v, e)
        r = z - self.lnL
        d = self.delta
        absr = np.abs(r)
        f = float(np.sum(self.w * np.where(absr <= d, 0.5 * r * r, d * (absr - 0.5 * d))))
        psi = self.w * np.clip(r, -d, d)
        qv = psi * np.exp(v - z)
        g1, g2 = qv * ga * np.exp(t1 - u), qv * ga * np.exp(t2 - u)
        grad = np.array([g1.sum(), g2.sum(), (psi * np.exp(e - z)).sum(), -(g1 * self.x).sum(), -(g2 * self.y).sum(),
                         (qv * u).sum()])
        return f, grad[self.free]

    def values(self, T: np.ndarray, max_points: int = 2000) -> np.ndarray:
        """Objective at many centred starts T (G, free slots), on an evenly spaced subset of at most max_points runs."""
        step = max(1, self.x.size // max_points)
        x, y, lnL, w = self.x[::step], self.y[::step], self.lnL[::step], self.w[::step]
        out = np.empty(T.shape[0])
        for s in range(0, T.shape[0], 256):
            t = np.tile(self.fixed, (T[s:s + 256].shape[0], 1))
            t[:, self.free] = T[s:s + 256]
            u = np.logaddexp(t[:, 0:1] - t[:, 3:4] * x, t[:, 1:2] - t[:, 4:5] * y)
            r = np.logaddexp(t[:, 5:6] * u, t[:, 2:3]) - lnL
            a = np.abs(r)
            out[s:s + 256] = np.sum(w * np.where(a <= self.delta, 0.5 * r * r, self.delta * (a - 0.5 * self.delta)), 1)
        return out

    def minimise(self, t0: np.ndarray) -> OptimizeResult:
        return minimize(self.value_grad, t0, jac=True, method="L-BFGS-B", options=LBFGS_OPTIONS)


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
    prob = _Problem(np.asarray(lnN, float), np.asarray(lnD, float), np.asarray(lnL, float), weights, delta, f)
    T = np.array([prob.to_centred(g) for g in init_grid(f)])
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
    theta0 = as_theta6(theta0)
    prob = _Problem(lnN, lnD, lnL, weights, delta, form_of(theta0))
    res = prob.minimise(prob.to_centred(theta0))
    th = prob.from_centred(res.x)
    return th if np.isfinite(res.fun) and np.all(np.isfinite(th)) else np.full(N_THETA, np.nan)


def refit(lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, weights: np.ndarray, theta0: np.ndarray,
          delta: float = HUBER_DELTA) -> np.ndarray:
    """One warm-started refit (a bootstrap resample) from theta0, in theta0's form; returns theta (NaN if not
    finite)."""
    with single_blas_thread():
        return _refit(lnN, lnD, lnL, weights, theta0, delta)


def _refit_many(args: tuple) -> np.ndarray:
    lnN, lnD, lnL, W, theta0, delta = args
    with single_blas_thread():
        return np.array([_refit(lnN, lnD, lnL, w, theta0, delta) for w in W]).reshape(-1, N_THETA)


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
    return np.exp(lnN), np.exp(lnD), L
