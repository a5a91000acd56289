"""The user's targets (harness.analysis.targets.Targets): numbers as a config or a paper writes them."""

from __future__ import annotations

import pytest

from harness.analysis.targets import Targets
from harness.errors import HarnessError


def test_targets_take_counts_written_with_a_suffix() -> None:
    t = Targets.from_cfg({"predict": {"N": "1.4B", "D": "300B", "C": ["1e21", 2e21]}})
    assert (t.N, t.D, t.C) == (1.4e9, 3e11, (1e21, 2e21)) and t.model
    assert Targets.from_cfg({"predict": {"N": "70M"}}).N == 7e7


@pytest.mark.parametrize(("value", "match"), [("abc", "is not a number"), ("-5", "positive"), ("0", "positive"),
                                              ("inf", "positive")])
def test_bad_targets_are_one_line_errors(value: str, match: str) -> None:
    with pytest.raises(HarnessError, match=match):
        Targets.from_cfg({"predict": {"N": value}})
