"""benchmarks/backtest_coverage.py: both coverage counts of the backtest on one small synthetic sweep."""

from __future__ import annotations


def test_coverage_counts_with_the_target_never_fall_below_the_plain_ones(load_benchmark) -> None:
    mod = load_benchmark("backtest_coverage")
    doc = mod.coverage(repeats=1, noise=0.005, bootstrap=30, sizes=5)
    # 5 budgets: cut-offs k = 2, 3, 4 predict 3 + 2 + 1 held-back budgets; two loss and two N_opt series
    assert doc["loss"]["n"] == 12 and doc["N_opt"]["n"] == 12
    for q in ("loss", "N_opt"):
        assert 0.0 <= doc[q]["inside"] <= doc[q]["inside_with_target"] <= 1.0
    assert doc["loss"]["inside_with_target"] >= 0.75  # the true law agrees with its own targets
