"""Synthetic IsoFLOP sweeps drawn from a known L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022),
for tests and benchmarks: the truth is known, so recovered exponents and frontiers can be checked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Law:
    """Ground-truth parameters; the default is the Chinchilla fit (Hoffmann et al. 2022)."""

    E: float = 1.69
    A: float = 406.4
    B: float = 410.7
    alpha: float = 0.34
    beta: float = 0.28

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def loss(self, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        return self.E + self.A / np.power(N, self.alpha) + self.B / np.power(D, self.beta)

    def n_opt(self, C: np.ndarray | float, kappa: float = 6.0) -> np.ndarray:
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        return G * np.power(np.asarray(C, float) / kappa, self.a)

    def frontier(self, C: np.ndarray | float, kappa: float = 6.0) -> np.ndarray:
        """True L_opt(C) = E + K C^-k with k = alpha beta / (alpha + beta)."""
        N = self.n_opt(C, kappa)
        return self.loss(N, np.asarray(C, float) / (kappa * N))

    @property
    def k(self) -> float:
        return self.alpha * self.beta / (self.alpha + self.beta)

    def K(self, kappa: float = 6.0) -> float:
        return float(self.frontier(1.0, kappa) - self.E)


def isoflop_sweep(
    law: Law = Law(),
    budgets: tuple[float, ...] = (1e18, 3e18, 1e19, 3e19, 1e20),
    sizes_per_budget: int = 7,
    span: float = 8.0,
    noise: float = 0.005,
    seed: int = 0,
    offset: float = 1.0,
    kappa: float = 6.0,
    seeds: int = 1,
) -> pd.DataFrame:
    """A harness-schema results table: at each budget, `sizes_per_budget` sizes log-spaced over a factor `span`
    centred on offset * N_opt(C); D = C/(kappa N); loss multiplied by exp(noise * standard normal), drawn afresh
    for each of `seeds` repeats of every point (the `seed` column), as seed noise would be."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        centre = law.n_opt(C, kappa) * offset
        N = centre * np.exp(np.linspace(-0.5, 0.5, sizes_per_budget) * np.log(span))
        D = C / (kappa * N)
        for s in range(seeds):
            L = law.loss(N, D) * np.exp(noise * rng.standard_normal(N.size))
            rows.extend(_rows(C, N, D, L, s, seeds))
    return pd.DataFrame(rows)


def _rows(C: float, N: np.ndarray, D: np.ndarray, L: np.ndarray, s: int, seeds: int) -> list[dict]:
    """Result rows of one budget and seed (run ids carry the seed only when there are repeats)."""
    tag = f"-s{s}" if seeds > 1 else ""
    return [{
        "run_id": f"c{C:.0e}-n{i}{tag}", "seed": s, "params_total": float(N[i]), "params_nonembedding": float(N[i]) * 0.9,
        "params_scaling": float(N[i]) * 0.95, "budget_flops": float(C), "flops": float(C),
        "tokens": float(D[i]), "val_bpb": float(L[i]), "val_loss": float(L[i]) * np.log(2.0),
        "status": "ok", "role": "sweep", "data_fingerprint": "synthetic",
    } for i in range(N.size)]


def runs_table(N: np.ndarray, D: np.ndarray, law: Law = Law(), noise: float = 0.005, seed: int = 0,
               kappa: float = 6.0, loss: np.ndarray | None = None) -> pd.DataFrame:
    """A harness-schema results table of runs at given (N, D): C = kappa N D, loss from `law` (or `loss` given)
    times exp(noise * standard normal); one budget per run. Ladders and scattered tables for tests."""
    rng = np.random.default_rng(seed)
    N, D = np.asarray(N, float), np.asarray(D, float)
    C = kappa * N * D
    L = (law.loss(N, D) if loss is None else np.asarray(loss, float)) * np.exp(noise * rng.standard_normal(N.size))
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(N.size)], "params_total": N, "params_nonembedding": N * 0.9,
        "params_scaling": N * 0.95, "budget_flops": C, "flops": C, "tokens": D, "val_bpb": L,
        "val_loss": L * np.log(2.0), "status": "ok", "role": "sweep", "data_fingerprint": "synthetic",
    })
