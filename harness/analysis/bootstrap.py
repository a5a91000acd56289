"""Bootstrap over runs (Efron 1979; used for scaling-law intervals by Besiroglu et al. 2024).

A resample is a row of run weights. The "runs" scheme draws runs with replacement within their budget
(stratified multinomial counts), so every resample keeps each budget's run count. The "bayesian" scheme
(Rubin 1981) gives every run a Dirichlet(1, ..., 1) weight within its budget (scaled to the run count): no run
drops out, so a budget of 5 sizes keeps all 5 in every resample. Every fit (parabolas, power laws, frontier,
Approach 3) is redone on the same resamples, so the intervals of different quantities and predictions are
jointly consistent. Intervals are percentile intervals.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def stratified_weights(groups: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_runs) int32 multiplicities, resampling runs with replacement inside each group."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    W = np.zeros((n_resamples, groups.size), dtype=np.int32)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        n = idx.size
        draws = rng.integers(0, n, size=(n_resamples, n)) + (np.arange(n_resamples) * n)[:, None]
        W[:, idx] = np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    return W


def dirichlet_weights(groups: np.ndarray, n_resamples: int, seed: int | np.random.SeedSequence) -> np.ndarray:
    """(n_resamples, n_runs) float weights: Dirichlet(1, ..., 1) inside each group, scaled to the group's size
    (Rubin 1981's Bayesian bootstrap: normalised unit exponentials)."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    W = np.zeros((n_resamples, groups.size))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        e = rng.standard_exponential(size=(n_resamples, idx.size))
        W[:, idx] = idx.size * e / e.sum(axis=1, keepdims=True)
    return W


def group_weights(groups: np.ndarray, n_resamples: int, seed: int, scheme: str) -> np.ndarray:
    """Resample weights by scheme: "runs" (stratified_weights) or "bayesian" (dirichlet_weights)."""
    fn = dirichlet_weights if scheme == "bayesian" else stratified_weights
    return fn(groups, n_resamples, seed)


def counts_from_weights(groups: np.ndarray, W: np.ndarray, seed: int) -> np.ndarray:
    """(n_resamples, n_runs) integer multiplicities drawn from each row of weights W: within each group, as many
    draws as it has runs, each run drawn with probability proportional to its weight. Rows that are already
    counts (the "runs" scheme) come back unchanged. A Bayesian-bootstrap row keeps every run at a positive weight,
    so a statistic that only sees which runs are present (the lowest loss of a budget) would never vary; drawn
    runs give it the spread that scheme's weights stand for."""
    if np.array_equal(W, np.round(W)):
        return W.astype(np.int32)
    groups = np.asarray(groups)
    rng = np.random.default_rng([seed, 1])  # its own stream: the weights' draws are left as they were
    out = np.zeros(W.shape, dtype=np.int32)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        p = W[:, idx] / W[:, idx].sum(axis=1, keepdims=True)
        out[:, idx] = rng.multinomial(idx.size, p)  # one draw per row
    return out


def interval(samples: np.ndarray | None, level: float = 0.95, axis: int = 0) -> tuple[Any, Any]:
    """Percentile interval of the finite samples along axis (NaN where fewer than 10 finite samples)."""
    if samples is None:
        return np.nan, np.nan
    s = np.asarray(samples, float)
    if s.size == 0:
        return np.nan, np.nan
    q = 100.0 * np.array([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    finite = np.isfinite(s).sum(axis=axis)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no resample could estimate them
        lo, hi = np.nanpercentile(s, q, axis=axis)
    few = finite < 10
    return np.where(few, np.nan, lo), np.where(few, np.nan, hi)
