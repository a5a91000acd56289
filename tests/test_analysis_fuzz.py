"""Fuzz the analysis entry point (harness-analyze's pure function) with random small tables: every table ends in
a result or one HarnessError (the CLI's single `error:` line), never another exception."""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from harness.analysis.synthetic import isoflop_sweep  # noqa: E402
from harness.analyze import run_analysis  # noqa: E402
from harness.errors import HarnessError  # noqa: E402

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=1e3, max_value=1e9),  # plausible sizes, tokens, budgets
    st.floats(min_value=0.5, max_value=5.0),  # plausible losses
    st.integers(min_value=-10, max_value=10**12),
    st.sampled_from(["", "abc", "1e12", "nan", "-inf", None]),
)
BUDGETS = st.sampled_from([1e11, 3e11, 1e12, 3e12, 0.0, -1e12, float("nan"), "x"])


@st.composite
def tables(draw: st.DrawFn) -> pd.DataFrame:
    """A small table with the harness's column names, values mostly plausible and sometimes hostile."""
    n = draw(st.integers(min_value=0, max_value=14))
    cols = draw(st.sets(st.sampled_from(["params_scaling", "tokens", "flops", "budget_flops", "val_bpb",
                                         "status", "role", "seed"]), min_size=1))
    data: dict[str, list] = {}
    for c in sorted(cols):
        if c in ("budget_flops", "flops"):
            data[c] = draw(st.lists(st.one_of(BUDGETS, NUMBERS), min_size=n, max_size=n))
        elif c == "status":
            data[c] = draw(st.lists(st.sampled_from(["ok", "diverged", "", "OK"]), min_size=n, max_size=n))
        elif c == "role":
            data[c] = draw(st.lists(st.sampled_from(["sweep", "holdout", "x"]), min_size=n, max_size=n))
        else:
            data[c] = draw(st.lists(NUMBERS, min_size=n, max_size=n))
    df = pd.DataFrame(data)
    if n and draw(st.booleans()):
        df = pd.concat([df, df.iloc[: max(1, n // 2)]], ignore_index=True)  # duplicated rows
    return df


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(df=tables())
def test_any_table_gives_a_result_or_one_harness_error(df: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "t.csv"
    df.to_csv(src, index=False)
    cfg = {"results": str(src), "out": str(tmp_path / "out"), "bootstrap": 8, "backtest": {"bootstrap": 4}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # numpy noise in normal output is a defect too
            res = run_analysis(cfg)
    except HarnessError as e:
        msg = str(e)
        assert msg and "\n" not in msg.strip() and "np.float64" not in msg
        return
    assert (Path(res["out"]) / "fits.json").exists()
    assert res["summary"]["n_used"] >= 1 and all(math.isfinite(x) for x in [res["summary"]["n_used"]])


@functools.cache
def _valid() -> pd.DataFrame:
    """A small valid IsoFLOP table (3 budgets x 4 sizes) to corrupt."""
    return isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes_per_budget=4, noise=0.01)


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 11), st.sampled_from(["params_total", "tokens", "flops",
                                                                      "budget_flops", "val_bpb", "status"]),
                                NUMBERS), max_size=6),
       keep=st.integers(1, 12), dup=st.booleans())
def test_corrupted_isoflop_tables_give_a_result_or_one_harness_error(edits: list, keep: int, dup: bool,
                                                                     tmp_path: Path) -> None:
    df = _valid().copy().astype(object)
    for row, col, value in edits:
        df.loc[row, col] = value
    df = df.iloc[:keep] if keep < 12 else df
    if dup:
        df = pd.concat([df, df.iloc[:3]], ignore_index=True)
    src = tmp_path / "t.csv"
    df.to_csv(src, index=False)
    # 8 Approach-3 starts instead of 32: each example still runs every stage and plot, ~25% sooner
    cfg = {"results": str(src), "out": str(tmp_path / "out"), "bootstrap": 8, "backtest": {"bootstrap": 4},
           "params": "total", "parametric": {"starts": 8}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            res = run_analysis(cfg)
    except HarnessError as e:
        assert str(e) and "\n" not in str(e).strip() and "np.float64" not in str(e)
        return
    assert (Path(res["out"]) / "fits.json").exists()
