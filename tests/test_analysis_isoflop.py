"""Approach 2 parabolas: robustness, weights as resamples, and the edge / outside / downward flags."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.isoflop import DOWNWARD, EDGE, OK, OUTSIDE, TOO_FEW, build_layout, fit_parabolas


def frame(budget_points: dict[float, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    rows = []
    for C, (N, L) in budget_points.items():
        for n, loss in zip(N, L):
            rows.append({"run_id": f"{C:g}-{n:g}", "params": n, "tokens": C / (6 * n), "flops": C, "loss": loss,
                         "budget": C})
    return pd.DataFrame(rows)


def parabola(lnN: np.ndarray, vertex: float, curv: float = 0.05, floor: float = 3.0) -> np.ndarray:
    return floor + curv * (lnN - vertex) ** 2


def test_robust_fit_shrugs_off_one_bad_run() -> None:
    lnN = np.log(1e6) + np.linspace(-1.5, 1.5, 9)
    L = parabola(lnN, np.log(1e6) + 0.3)
    L[2] += 0.4  # one diverged-looking run
    lay = build_layout(frame({1e15: (np.exp(lnN), L)}))
    robust = fit_parabolas(lay)
    ols = fit_parabolas(lay, iters=1)
    err_robust = abs(robust.lnN_opt[0, 0] - (np.log(1e6) + 0.3))
    err_ols = abs(ols.lnN_opt[0, 0] - (np.log(1e6) + 0.3))
    assert err_robust < 0.05 < 0.2 < err_ols
    assert robust.robust_weight[0, 0, 2] < 0.1  # the bad run is the one down-weighted
    assert robust.status[0, 0] == OK


def test_multiplicity_weights_equal_duplicated_rows() -> None:
    rng = np.random.default_rng(0)
    lnN = np.log(1e6) + np.linspace(-1, 1, 6)
    L = parabola(lnN, np.log(1e6)) + 0.003 * rng.standard_normal(6)
    df = frame({1e15: (np.exp(lnN), L)})
    w = np.array([[2, 0, 1, 1, 3, 1]])
    from_weights = fit_parabolas(build_layout(df), w)
    dup = df.loc[np.repeat(df.index, w[0])].reset_index(drop=True)
    from_rows = fit_parabolas(build_layout(dup))
    # (coefficients are in log N minus the mean of the sizes present, which differs; the optimum does not)
    for key in ("lnN_opt", "L_opt", "lnD_opt"):
        np.testing.assert_allclose(getattr(from_weights, key), getattr(from_rows, key), rtol=1e-10)
    np.testing.assert_allclose(from_weights.coef[..., 2], from_rows.coef[..., 2], rtol=1e-10)


def test_batched_rows_match_single_fits() -> None:
    rng = np.random.default_rng(1)
    pts = {}
    for C, v in ((1e15, 13.5), (1e16, 14.2), (1e17, 14.9)):
        lnN = v + np.linspace(-1.2, 1.2, 7)
        pts[C] = (np.exp(lnN), parabola(lnN, v) + 0.002 * rng.standard_normal(7))
    lay = build_layout(frame(pts))
    W = rng.integers(0, 3, size=(5, 21))
    W[:, ::7] = 1  # keep >= 3 distinct sizes per budget
    W[:, 3::7] = 1
    W[:, 6::7] = 1
    batch = fit_parabolas(lay, W)
    for i in range(5):
        single = fit_parabolas(lay, W[i:i + 1])
        np.testing.assert_allclose(batch.coef[i], single.coef[0], rtol=1e-9, atol=1e-12)
    # D at the optimum follows D = C / (6 N) exactly
    np.testing.assert_allclose(batch.lnD_opt, np.log(lay.C / 6.0) - batch.lnN_opt, rtol=1e-9)


def test_status_flags() -> None:
    lnN = np.log(1e6) + np.linspace(-1, 1, 5)  # sizes at -1, -0.5, 0, 0.5, 1 around 1e6
    pts = {
        1e14: (np.exp(lnN), parabola(lnN, np.log(1e6))),  # centred: ok
        1e15: (np.exp(lnN), parabola(lnN, np.log(1e6) - 0.85)),  # nearest the smallest size: edge
        1e16: (np.exp(lnN), parabola(lnN, np.log(1e6) + 1.6)),  # beyond the largest size: outside
        1e17: (np.exp(lnN), 3.0 - 0.05 * (lnN - np.log(1e6)) ** 2),  # opens downward
        1e18: (np.exp(lnN[:2]), parabola(lnN[:2], np.log(1e6))),  # two sizes only
    }
    fits = fit_parabolas(build_layout(frame(pts)))
    assert list(fits.status[0]) == [OK, EDGE, OUTSIDE, DOWNWARD, TOO_FEW]
    assert list(fits.usable[0]) == [True, False, False, False, False]
    lenient = fit_parabolas(build_layout(frame(pts)), exclude_edge=False)
    assert list(lenient.usable[0]) == [True, True, False, False, False]
    assert np.isnan(fits.lnN_opt[0, 3]) and np.isnan(fits.L_opt[0, 4])


def test_resample_missing_sizes_is_flagged_not_crashed() -> None:
    lnN = np.log(1e6) + np.linspace(-1, 1, 4)
    lay = build_layout(frame({1e15: (np.exp(lnN), parabola(lnN, np.log(1e6)))}))
    W = np.array([[4, 0, 0, 0], [2, 2, 0, 0], [1, 1, 1, 1]])
    fits = fit_parabolas(lay, W)
    assert list(fits.status[:, 0]) == [TOO_FEW, TOO_FEW, OK]
