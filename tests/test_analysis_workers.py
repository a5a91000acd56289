"""Forked workers of the analysis: same results in the same order as a plain loop, for closures too."""

from __future__ import annotations

import os

import numpy as np
import pytest

from harness.analysis.context import Settings
from harness.analysis.workers import fork_map, worker_count
from harness.errors import HarnessError


def test_fork_map_equals_the_loop_for_a_closure() -> None:
    big = np.arange(1000.0)  # inherited at the fork, never pickled

    def work(i: int) -> tuple[int, float, int]:
        return i, float(big[: i + 1].sum()), os.getpid()

    items = list(range(7))
    serial = [r[:2] for r in fork_map(work, items, 1)]
    forked = fork_map(work, items, 2)
    assert [r[:2] for r in forked] == serial == [(i, i * (i + 1) / 2) for i in items]
    if hasattr(os, "fork"):
        assert os.getpid() not in {r[2] for r in forked}  # it did run elsewhere


def test_worker_count_and_bad_jobs() -> None:
    assert worker_count(3) == 3 and worker_count(0) >= 1
    with pytest.raises(HarnessError, match="jobs=-1 is negative"):
        Settings(jobs=-1).check()
