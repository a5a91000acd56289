"""Settings from a config (types, defaults, refusals) and the Diagnostics log."""

from __future__ import annotations

import pytest

from harness.analysis.context import Diagnostics, Settings
from harness.errors import HarnessError


def test_settings_from_nested_config_and_defaults() -> None:
    s = Settings.from_cfg({"bootstrap": "200", "isoflop": {"exclude_edge": "false", "iters": 5},
                           "frontier": {"source": "envelope"}, "predict": 1e21})
    assert (s.bootstrap, s.exclude_edge, s.irls_iters, s.frontier_source) == (200, False, 5, "envelope")
    assert s.predict == (1e21,) and Settings.from_cfg(None) == Settings()


@pytest.mark.parametrize(("cfg", "match"), [
    ({"isoflop": {"exclude_edge": "maybe"}}, r"isoflop\.exclude_edge='maybe' is not a valid bool"),
    ({"predict": ["big"]}, "not a list of FLOP budgets"),
    ({"level": 1.5}, "not a confidence level"),
    ({"bootstrap": -1}, "negative"),
])
def test_bad_settings(cfg: dict, match: str) -> None:
    with pytest.raises(HarnessError, match=match):
        Settings.from_cfg(cfg)


def test_diagnostics_keep_order() -> None:
    d = Diagnostics(warnings=["from loading"])
    d.warn("second")
    d.note("a note")
    assert d.warnings == ["from loading", "second"] and d.notes == ["a note"]
