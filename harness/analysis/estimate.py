"""Estimate: the one shape of every fitted or predicted number, a point value with its bootstrap percentile
interval (Efron 1979's nonparametric bootstrap, used for scaling-law intervals by Besiroglu et al. 2024).

Fits (a, b, E, ...), predictions (N*, D*, loss) and the held-out comparison all carry Estimates, and fits.json
stores each one as {"value", "lo", "hi", "n"}; n counts the valid bootstrap samples behind the interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.analysis.bootstrap import interval

FIELDS = ("value", "lo", "hi", "n")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile interval (None where missing) and the valid-sample count n."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int = 0

    @classmethod
    def from_samples(cls, value: Any, samples: np.ndarray | None, level: float = 0.95) -> Estimate:
        """value with the percentile interval of its 1-D bootstrap samples (no samples: no interval, n = 0)."""
        lo, hi = interval(samples, level)
        n = 0 if samples is None else int(np.isfinite(np.asarray(samples, float)).sum())
        return cls(_number(value), _number(lo), _number(hi), n)

    @property
    def has_interval(self) -> bool:
        """Both bounds are known."""
        return self.lo is not None and self.hi is not None

    def contains(self, x: float) -> bool | None:
        """Whether x lies in [lo, hi]; None without an interval."""
        return bool(self.lo <= x <= self.hi) if self.has_interval else None

    def format(self, digits: int = 4) -> str:
        """'value [lo, hi]' with `digits` significant digits ('value' alone without an interval)."""
        text = format_number(self.value, digits)
        if self.has_interval:
            text += f" [{format_number(self.lo, digits)}, {format_number(self.hi, digits)}]"
        return text

    def to_dict(self) -> dict[str, Any]:
        """{"value", "lo", "hi", "n"}: the fits.json form."""
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "n": self.n}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Estimate:
        """Inverse of to_dict."""
        return cls(_number(d["value"]), _number(d["lo"]), _number(d["hi"]), int(d["n"]))

    @staticmethod
    def is_serialised(x: Any) -> bool:
        """Whether x is an Estimate as to_dict wrote it (so fits.json can be read back into Estimates)."""
        return isinstance(x, Mapping) and set(x) == set(FIELDS)


def estimate(value: Any, samples: np.ndarray | None, level: float = 0.95) -> Estimate:
    """Shorthand for Estimate.from_samples."""
    return Estimate.from_samples(value, samples, level)


def format_number(x: Any, digits: int = 4) -> str:
    """A number with `digits` significant digits, scientific when large or small; '-' for missing."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    x = float(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def format_cell(x: Any, spec: str = ".4f") -> str:
    """A table cell: x with a format spec, or '-' when missing or not finite."""
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def format_flag(x: bool | None) -> str:
    """A yes/no table cell ('-' when not judged)."""
    return "-" if x is None else ("yes" if x else "no")


def format_estimate(e: Estimate | None, digits: int = 4) -> str:
    """'value [lo, hi]' for an Estimate ('value' alone without an interval, '-' for none)."""
    return "-" if e is None else e.format(digits)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table: a header row, its rule, then one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _number(x: Any) -> float | None:
    """A finite float, or None (NaN, inf and None all mean 'no number')."""
    if x is None:
        return None
    x = float(np.asarray(x))
    return x if np.isfinite(x) else None
