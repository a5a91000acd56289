"""harness.analysis.allocation: lifetime-optimal sizing (Sardana et al. 2024) checked against brute force on a
synthetic L(N, D) with known parameters, and the strategies table on the committed demo fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.analysis import load_fits
from harness.analysis.allocation import (
    best_loss_at_total,
    lifetime_optimal,
    lifetime_plan,
    loss_at,
    strategies,
    tokens_for_loss,
)
from harness.analysis.parametric import E_OFF, compute_optimal
from harness.errors import HarnessError

# Hoffmann et al. 2022's fitted law: E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28.
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
THETA = np.array([np.log(A), np.log(B), np.log(E), ALPHA, BETA])
KAPPA = 6.0
# Kaplan et al. 2020's form, (A/N^alpha + B/D)^gamma with no floor, in theta form (harness.analysis.parametric).
KAPLAN = np.array([0.8 * np.log(8.8e13), np.log(5.4e13), E_OFF, 0.8, 1.0, 0.095])
DEMO = Path(__file__).resolve().parents[1] / "results" / "demo" / "fits.json"


def _brute_lifetime(target: float, inference: float) -> tuple[float, float]:
    """argmin over a dense N grid of 6 N D(N) + 2 N I, D(N) solved by hand from L(N, D) = target."""
    N = np.geomspace((A / (target - E)) ** (1 / ALPHA) * 1.0001, 1e15, 2_000_000)
    gap = target - E - A / N**ALPHA
    total = KAPPA * N * (B / gap) ** (1 / BETA) + 2 * N * inference
    i = int(np.argmin(total))
    return float(N[i]), float(total[i])


@pytest.mark.parametrize("inference", [0.0, 1e11, 2e12, 1e13, 1e14])
def test_lifetime_optimum_matches_brute_force(inference: float) -> None:
    target = float(compute_optimal(THETA, 1e23, KAPPA)[2])
    got = lifetime_optimal(THETA, target, inference, KAPPA)
    n_bf, total_bf = _brute_lifetime(target, inference)
    assert got["N"] == pytest.approx(n_bf, rel=0.01) and got["total_flops"] == pytest.approx(total_bf, rel=0.01)
    assert float(loss_at(THETA, got["N"], got["D"])) == pytest.approx(target, rel=1e-9)


@pytest.mark.parametrize("theta", [THETA, KAPLAN], ids=["chinchilla", "kaplan"])
def test_no_inference_is_compute_optimal(theta: np.ndarray) -> None:
    N, D, L = (float(x) for x in compute_optimal(theta, 1e22, KAPPA))
    got = lifetime_optimal(theta, L, 0.0, KAPPA)
    assert got["N"] == pytest.approx(N, rel=1e-4) and got["D"] == pytest.approx(D, rel=1e-4)
    assert float(loss_at(theta, got["N"], got["D"])) == pytest.approx(L, rel=1e-9)
    assert lifetime_optimal(theta, L, 1e13, KAPPA)["N"] < N  # inference still favours smaller models


def test_more_inference_means_smaller_models_trained_longer() -> None:
    target = float(compute_optimal(THETA, 1e23, KAPPA)[2])
    sizes = [lifetime_optimal(THETA, target, i, KAPPA)["N"] for i in (0, 1e12, 1e13, 1e14)]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("inference", [0.0, 1e13])
def test_best_loss_at_fixed_total_matches_brute_force(inference: float) -> None:
    total = 2e23
    got = best_loss_at_total(THETA, total, inference, KAPPA)
    N = np.geomspace(1e6, total / max(2 * inference, KAPPA) * 0.999999, 2_000_000)
    D = (total - 2 * N * inference) / (KAPPA * N)
    L = E + A / N**ALPHA + B / np.where(D > 0, D, np.nan) ** BETA
    i = int(np.nanargmin(L))
    assert got["N"] == pytest.approx(N[i], rel=0.01) and got["loss"] == pytest.approx(L[i], rel=1e-6)
    assert got["train_flops"] + got["inference_flops"] == pytest.approx(total)


def test_iso_loss_tokens() -> None:
    D = tokens_for_loss(THETA, np.array([1e9, 1.0]), 2.2)
    assert float(loss_at(THETA, 1e9, D[0])) == pytest.approx(2.2) and np.isinf(D[1])


def test_demo_strategies_and_lifetime() -> None:
    fits = load_fits(DEMO)
    rows = strategies(fits, 1e23, user_N=[7e9])
    names = [r["strategy"] for r in rows]
    assert names[:5] == ["compute-optimal (Approach 2)", "compute-optimal (Approach 3)", "over-trained x2",
                         "over-trained x4", "over-trained x10"] and names[-1] == "N=7e+09"
    opt = rows[1]
    assert opt["penalty"] == pytest.approx(0.0, abs=1e-12) and all(r["penalty"] >= -1e-9 for r in rows)
    assert all(r["train_flops"] == pytest.approx(1e23) for r in rows)
    assert all(r["loss"].has_interval for r in rows)
    ratios = [r["tokens_per_param"] / opt["tokens_per_param"] for r in rows[2:5]]
    assert ratios == pytest.approx([2, 4, 10])
    life = lifetime_plan(fits, 1e23, 1e13)
    assert life["lifetime_optimal"]["N"] < life["compute_optimal"]["N"] and 0 < life["savings"] < 1
    assert life["fixed_total"]["loss"] <= life["target_loss"]
    assert life["compute_optimal"]["N"] == pytest.approx(opt["N"].value, rel=1e-3)


def test_bad_lifetime_requests() -> None:
    fits = load_fits(DEMO)
    with pytest.raises(HarnessError, match="unreachable"):
        lifetime_plan(fits, 1e23, 1e13, target=fits.approach3["E"].value)  # the floor itself (0 in Kaplan's form)
    with pytest.raises(HarnessError, match="unreachable"):
        lifetime_optimal(THETA, 1.5, 1e13, KAPPA)  # below Chinchilla's E = 1.69
    with pytest.raises(HarnessError, match="inference_tokens"):
        lifetime_plan(fits, 1e23, -1.0)
    fits.approach3 = {}
    with pytest.raises(HarnessError, match="no Approach 3"):
        strategies(fits, 1e23)
