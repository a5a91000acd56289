"""harness.analysis.shapes: each table shape is recognised, and tables with nothing to fit are refused."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.load import canonicalize
from harness.analysis.shapes import cluster, detect_shape
from harness.analysis.synthetic import isoflop_sweep, runs_table
from harness.errors import HarnessError

SIZES = np.geomspace(1e7, 1e9, 6)


def shape_of(df):
    return detect_shape(canonicalize(df))


def test_cluster_groups_values_within_tolerance() -> None:
    labels = cluster(np.array([1.0, 1.01, 2.0, 2.03, 4.0]))
    assert labels.tolist() == [0, 0, 1, 1, 2]


def test_size_ladder_at_fixed_D() -> None:
    s = shape_of(runs_table(SIZES, np.full(6, 1e10)))
    assert s.labels == ["size ladder (6 sizes at D = 1e+10)"]
    assert s.size_ladders[0].fixed == "D" and not s.data_ladders and not s.isoflop
    assert "distinct D" in s.approach3_reason


def test_fixed_tokens_per_param_is_a_size_ladder_and_a_compute_ladder() -> None:
    s = shape_of(runs_table(SIZES, 20 * SIZES))
    assert s.labels[0].startswith("compute ladder (6 compute levels")
    assert s.size_ladders[0].fixed == "D/N" and s.size_ladders[0].value == pytest.approx(20)
    assert "fixed power of N" in s.approach3_reason


def test_data_ladder_at_fixed_N() -> None:
    s = shape_of(runs_table(np.full(5, 1e8), np.geomspace(1e8, 1e11, 5)))
    assert s.labels == ["data ladder (5 token counts at N = 1e+08)"]


def test_scattered_points_identify_approach3() -> None:
    rng = np.random.default_rng(1)
    s = shape_of(runs_table(np.exp(rng.uniform(16, 21, 30)), np.exp(rng.uniform(20, 25, 30))))
    assert len(s.labels) == 1 and s.labels[0].startswith("scattered (N, D) points") and s.approach3_reason is None


def test_isoflop_grid() -> None:
    s = shape_of(isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes_per_budget=5))
    assert s.isoflop and s.isoflop_budgets == 3 and s.labels[0].startswith("IsoFLOP grid")


def test_one_row_is_refused() -> None:
    with pytest.raises(HarnessError, match="1 usable run"):
        shape_of(runs_table(np.array([1e8]), np.array([1e9])))


def test_same_N_and_D_everywhere_is_refused() -> None:
    with pytest.raises(HarnessError, match="same N and D"):
        shape_of(runs_table(np.full(4, 1e8), np.full(4, 1e9), seed=3))
