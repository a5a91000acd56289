"""What every fitting stage shares: the analysis knobs (Settings, read from a config) and the running list of
warnings and notes (Diagnostics) that ends up in fits.json and report.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.analysis.load import cfg_get
from harness.errors import HarnessError

BOOTSTRAP_SCHEMES = ("runs", "bayesian")  # harness.analysis.bootstrap
PARAMETRIC_FORMS = ("auto", "chinchilla", "kaplan")  # auto and harness.analysis.parametric.FORMS


@dataclass
class Settings:
    """Analysis knobs, read from a config (dict or DictConfig) with these defaults."""

    bootstrap: int = 1000
    bootstrap_scheme: str = "bayesian"
    seed: int = 0
    jobs: int = 0  # 0: every core (harness.analysis.workers.worker_count)
    level: float = 0.95
    min_sizes: int = 3
    drop_small_budgets: bool = False
    exclude_edge: bool = True
    huber_k: float = 1.345
    irls_iters: int = 10
    delta: float = 1e-3
    starts: int = 32
    form: str = "auto"
    outliers: str = "exclude"  # harness.analysis.outliers: exclude | keep the runs beyond outlier_sd
    outlier_sd: float = 8.0  # robust sd of Approach 3's log residuals beyond which a run is a gross outlier; 0: off
    frontier_source: str = "minima"
    frontier_min_free: int = 4
    noise_floor: float = 0.0  # a seed noise measured elsewhere (sd of ln(loss)), for tables without repeats; 0: none
    noise_source: str = ""  # where that figure was measured (stated beside it)
    predict: tuple[float, ...] = ()

    @classmethod
    def from_cfg(cls, cfg: Any) -> Settings:
        """Map config keys (bootstrap, seed, jobs, level, isoflop.*, parametric.*, frontier.*, predict)."""
        d = cls()
        for attr, key in CONFIG_KEYS.items():
            v = cfg_get(cfg, key)
            if v is not None:
                setattr(d, attr, coerce(key, v, type(getattr(d, attr))))
        pred = cfg_get(cfg, "predict")
        if pred is not None:
            d.predict = _budgets(pred)
        d.check()
        return d

    def check(self) -> None:
        """Refuse values no fit can use."""
        if self.bootstrap < 0:
            raise HarnessError(f"bootstrap={self.bootstrap} is negative; use bootstrap=0 (no intervals) or e.g. 1000")
        if self.jobs < 0:
            raise HarnessError(f"jobs={self.jobs} is negative; use jobs=0 (every core) or a number of processes, "
                               "e.g. jobs=1")
        if self.bootstrap_scheme not in BOOTSTRAP_SCHEMES:
            raise HarnessError(f"bootstrap_scheme={self.bootstrap_scheme!r}; use bootstrap_scheme=runs (resample runs "
                               "with replacement) or bayesian (Dirichlet weights, every run kept)")
        if self.form not in PARAMETRIC_FORMS:
            raise HarnessError(f"parametric.form={self.form!r}; use parametric.form=auto (the lower AICc of the two), "
                               "chinchilla (E + A/N^alpha + B/D^beta) or kaplan ((A/N^alpha + B/D)^gamma)")
        if self.outliers not in ("exclude", "keep"):
            raise HarnessError(f"parametric.outliers={self.outliers!r}; use parametric.outliers=exclude (fit without "
                               "the runs beyond parametric.outlier_sd) or keep (fit every run, report them)")
        if not self.outlier_sd >= 0:
            raise HarnessError(f"parametric.outlier_sd={self.outlier_sd} is negative; use e.g. parametric.outlier_sd=8 "
                               "(robust sd of the log residuals) or 0 for no screen")
        if self.frontier_source not in ("minima", "envelope"):
            raise HarnessError(f"frontier.source={self.frontier_source!r}; use frontier.source=minima or envelope")
        if not 0.5 < self.level < 1.0:
            raise HarnessError(f"level={self.level} is not a confidence level; use e.g. level=0.95")
        if not 0.0 <= self.noise_floor < 1.0:
            raise HarnessError(f"noise.floor={self.noise_floor} is not a relative seed noise; use e.g. noise.floor=0.0135 "
                               "(an sd of ln(loss) of 1.35%, measured by repeats) or 0 for none")


# Settings attribute -> dotted config key
CONFIG_KEYS = {
    "bootstrap": "bootstrap", "bootstrap_scheme": "bootstrap_scheme", "seed": "seed", "jobs": "jobs", "level": "level",
    "min_sizes": "isoflop.min_sizes", "drop_small_budgets": "isoflop.drop_small_budgets",
    "exclude_edge": "isoflop.exclude_edge", "huber_k": "isoflop.huber_k", "irls_iters": "isoflop.iters",
    "delta": "parametric.delta", "starts": "parametric.starts", "form": "parametric.form",
    "outliers": "parametric.outliers", "outlier_sd": "parametric.outlier_sd",
    "frontier_source": "frontier.source",
    "frontier_min_free": "frontier.min_points_free",
    "noise_floor": "noise.floor", "noise_source": "noise.source",
}


def coerce(key: str, v: Any, kind: type) -> Any:
    """v as the setting's type (bools also from true/false/1/0/yes/no strings)."""
    try:
        if kind is bool and isinstance(v, str):
            if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(v)
            v = v.lower() in ("true", "1", "yes")
        return kind(v)
    except (TypeError, ValueError):
        raise HarnessError(f"{key}={v!r} is not a valid {kind.__name__}") from None


def _budgets(pred: Any) -> tuple[float, ...]:
    """predict= as a tuple of FLOP budgets (one number or a list; from a mapping its C entry, the other entries
    being model targets read by harness.analysis.targets)."""
    if isinstance(pred, Mapping):
        pred = pred.get("C")
        if pred is None:
            return ()
    try:
        return tuple(float(c) for c in ([pred] if isinstance(pred, (int, float, str)) else pred))
    except (TypeError, ValueError):
        raise HarnessError(f"predict={pred!r} is not a list of FLOP budgets; use predict=[1e21,1e22]") from None


@dataclass
class Diagnostics:
    """Warnings (something may be wrong with a fit) and notes (context a reader needs), in the order raised."""

    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        """Record a warning."""
        self.warnings.append(text)

    def note(self, text: str) -> None:
        """Record a note."""
        self.notes.append(text)
