"""Estimate: one shape (value, lo, hi, n) for every fitted and predicted number, and its fits.json form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.analysis.bootstrap import interval
from harness.analysis.estimate import Estimate, estimate, format_number


def test_from_samples_interval_and_count() -> None:
    s = np.concatenate([np.linspace(0, 1, 1001), [np.nan] * 5])
    lo, hi = interval(s)
    e = estimate(0.5, s)
    assert e == Estimate(0.5, lo, hi, 1001) and e.n == 1001  # n counts the valid (finite) samples only
    assert estimate(1.0, None).lo is None and estimate(1.0, None) == Estimate(1.0, None, None, 0)
    assert Estimate.from_samples(np.nan, s).value is None  # non-finite values are missing, never NaN
    assert estimate(2.0, np.array([1.0, 2.0])).has_interval is False  # too few samples for an interval


def test_frozen_contains_and_format() -> None:
    e = Estimate(2.1, 1.9, 2.2, 100)
    with pytest.raises(AttributeError):
        e.value = 3.0  # type: ignore[misc]
    assert e.contains(2.0) is True and e.contains(2.5) is False and Estimate(2.1).contains(2.0) is None
    assert e.format() == "2.1 [1.9, 2.2]" and Estimate(0.45).format() == "0.45" and Estimate(None).format() == "-"
    assert format_number(1.23456e21) == "1.235e+21" and format_number(None) == "-"


def test_dict_round_trip_is_the_fits_json_shape() -> None:
    e = Estimate(0.5, 0.4, 0.6, 30)
    d = json.loads(json.dumps(e.to_dict()))
    assert d == {"value": 0.5, "lo": 0.4, "hi": 0.6, "n": 30}
    assert Estimate.is_serialised(d) and Estimate.from_dict(d) == e
    assert not Estimate.is_serialised({"value": 0.5, "lo": 0.4, "hi": 0.6, "n_boot": 30})
