"""fit_all: every fit of the analysis stage on one canonical DataFrame, with bootstrap intervals, and the Fits
container that serialises to fits.json.

Approach 2 (IsoFLOP parabolas, then N_opt = k_N C^a and D_opt = k_D C^b; Hoffmann et al. 2022), the loss
frontier L_opt(C) = E + K C^-k, and Approach 3 (L = E + A/N^alpha + B/D^beta fitted as Besiroglu et al. 2024),
all refitted on the same stratified bootstrap resamples of runs. Every number is an Estimate; the bootstrap
samples stay in memory (and in bootstrap_samples.npz) so that predictions at new budgets get intervals.
Predictions are not made here: the pipeline adds them with harness.analysis.predict.predict_many.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.approach2 import budget_table, fit_approach2, fit_isoflop, summarize_approach2
from harness.analysis.approach3 import RunArrays, summarize_approach3
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.estimate import Estimate
from harness.analysis.frontier import fit_frontier_stage, summarize_frontier
from harness.analysis.load import Selection, canonicalize, derivation_warnings, select_fit_rows
from harness.analysis.noise import has_repeats, point_codes, seed_noise
from harness.analysis.outliers import fit_screened, screen_block
from harness.analysis.parametric import single_blas_thread
from harness.analysis.plateau import bigram_plateau
from harness.analysis.resample import bootstrap_fits, valid_counts
from harness.errors import HarnessError

SCHEMA_VERSION = 2
# Approach 2 and 3 exponents a further apart than this disagree (even when their intervals overlap).
MAX_EXPONENT_GAP = 0.05
# Fits fields that fits.json may lack (filled in after fit_all, or absent from older files).
OPTIONAL_FIELDS = ("samples", "validation", "backtest", "noise", "targets")


@dataclass
class Fits:
    """Everything fitted, as JSON-ready dicts of Estimates; `samples` holds the bootstrap draws (not in fits.json)."""

    inputs: dict[str, Any]
    settings: dict[str, Any]
    data: dict[str, Any]
    budgets: list[dict[str, Any]]
    approach2: dict[str, Any]
    frontier: dict[str, Any]
    approach3: dict[str, Any]
    bootstrap: dict[str, Any]
    predictions: list[dict[str, Any]]
    warnings: list[str]
    notes: list[str]
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    validation: list[dict[str, Any]] = field(default_factory=list)  # held-out comparisons (harness.validate)
    backtest: dict[str, Any] = field(default_factory=dict)  # leave-future-out refits (harness.analysis.backtest)
    noise: dict[str, Any] = field(default_factory=dict)  # seed noise from repeated points (harness.analysis.noise)
    targets: dict[str, Any] = field(default_factory=dict)  # predict.N/D model target (harness.analysis.targets)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (Estimates as {value, lo, hi, n}; NaN/inf become null); samples are left out."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "samples"}
        if not self.targets:
            d.pop("targets")  # only analyses given predict.N / predict.D carry it
        return {"schema_version": SCHEMA_VERSION, **to_jsonable(d)}

    def to_json(self, indent: int = 2) -> str:
        """fits.json text."""
        return json.dumps(self.as_dict(), indent=indent, allow_nan=False)

    def samples_npz(self) -> bytes:
        """Bootstrap samples as compressed .npz bytes (so predictions from a saved fit keep intervals)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.samples)
        return buf.getvalue()

    def save_samples(self, path: str | Path) -> None:
        """Write samples_npz() to path."""
        Path(path).write_bytes(self.samples_npz())

    @classmethod
    def from_dict(cls, d: dict[str, Any], samples: dict[str, np.ndarray] | None = None,
                  source: str = "the fits data") -> Fits:
        """Rebuild from fits.json content (and optionally the samples); Estimates come back as Estimates."""
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise HarnessError(f"{source} has fits schema {version}, this harness reads schema {SCHEMA_VERSION}; "
                               "regenerate it with harness-analyze")
        if d.get("kind") == "table":  # harness.analysis.tables: laws of a ladder, no IsoFLOP fits to plan from
            raise HarnessError(f"{source} is the analysis of a ladder or other non-IsoFLOP table (its laws are in "
                               "report.md); planning from a fit needs an IsoFLOP analysis (Approaches 2 and 3)")
        names = [f.name for f in dataclasses.fields(cls) if f.name not in OPTIONAL_FIELDS]
        missing = [n for n in names if n not in d]
        if missing:
            raise HarnessError(f"{source} lacks {missing}; regenerate it with harness-analyze")
        validation = _revive(d.get("validation") or [])
        return cls(**{n: _revive(d[n]) for n in names}, samples=dict(samples or {}),
                   validation=[validation] if isinstance(validation, dict) else validation,  # one run: older files
                   backtest=_revive(d.get("backtest") or {}), noise=d.get("noise") or {},
                   targets=_revive(d.get("targets") or {}))


def load_fits(path: str | Path) -> Fits:
    """Read fits.json (or DIR/fits.json) and, if present beside it, bootstrap_samples.npz."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "fits.json"
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise HarnessError(f"fits file {str(p)!r} does not exist; run harness-analyze first or fix fits=") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HarnessError(f"{str(p)!r} is not a fits.json; point fits= at the file harness-analyze wrote") from None
    if not isinstance(d, dict):
        raise HarnessError(f"{str(p)!r} is not a fits.json; point fits= at the file harness-analyze wrote")
    samples: dict[str, np.ndarray] = {}
    npz = p.parent / "bootstrap_samples.npz"
    if npz.exists():
        with np.load(npz) as z:
            samples = {k: z[k] for k in z.files}
    return Fits.from_dict(d, samples, source=repr(str(p)))


def to_jsonable(x: Any) -> Any:
    """JSON-safe copy: Estimates as dicts, numpy scalars and arrays as Python, non-finite floats as None."""
    if isinstance(x, Estimate):
        return x.to_dict()
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return x


def _revive(x: Any) -> Any:
    """Inverse of to_jsonable for Estimates: every {value, lo, hi, n} dict becomes an Estimate again."""
    if Estimate.is_serialised(x):
        return Estimate.from_dict(x)
    if isinstance(x, dict):
        return {k: _revive(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_revive(v) for v in x]
    return x


def _data_hash(used: pd.DataFrame) -> str:
    """Short hash of the fitted (N, D, C, loss) values: same hash, same fit inputs."""
    cols = used[["params", "tokens", "flops", "loss"]].to_numpy(dtype=float)
    return hashlib.sha256(np.ascontiguousarray(cols).tobytes()).hexdigest()[:16]


def _data_summary(df: pd.DataFrame, sel: Selection, n_approach2: int, n_budgets: int, kappa: float) -> dict[str, Any]:
    """fits.json's data block: row counts, exclusions and ranges of the fitted runs."""
    used = sel.used
    return {
        "n_rows": len(df), "n_used": len(used), "n_used_approach2": n_approach2,
        "excluded": sel.excluded, "n_budgets": n_budgets, "tokens_derived": bool(used["tokens_derived"].any()),
        "flops_derived": bool(used["flops_derived"].any()),
        "kappa": kappa, "data_hash": _data_hash(used),
        "N_range": [float(used["params"].min()), float(used["params"].max())],
        "C_range": [float(used["flops"].min()), float(used["flops"].max())],
        "loss_range": [float(used["loss"].min()), float(used["loss"].max())],
    }


def _inputs_summary(df: pd.DataFrame, used: pd.DataFrame) -> dict[str, Any]:
    """fits.json's inputs block: where the table came from and how its columns were mapped."""
    fps = sorted(v for v in used.get("fingerprint", pd.Series(dtype=str)).astype(str).unique() if v not in ("", "nan"))
    return {
        "source": df.attrs.get("source"), "sha256": df.attrs.get("sha256"), "data_fingerprint": fps,
        "columns": df.attrs.get("columns"), "budget_inferred": df.attrs.get("budget_inferred", False),
        "budget_tolerance": df.attrs.get("budget_tolerance"),
    }


def _cross_check(approach2: dict[str, Any], approach3: dict[str, Any], diag: Diagnostics) -> None:
    """Warn when Approaches 2 and 3 disagree on the exponent a (points far apart or intervals disjoint)."""
    a2, a3 = approach2["a"], approach3["a"]
    if a2.value is None or a3.value is None:
        return
    disagree = abs(a2.value - a3.value) > MAX_EXPONENT_GAP
    if a2.has_interval and a3.has_interval:
        disagree = disagree or a2.hi < a3.lo or a3.hi < a2.lo
    if disagree:
        diag.warn(
            f"Approach 2 (a={a2.value:.3f}) and Approach 3 (a={a3.value:.3f}) disagree: parabola fits are biased by "
            "off-centre or narrow size grids, and Approach 3 by a misspecified L(N, D); check both"
        )


def fit_all(df: pd.DataFrame, cfg: Any = None, settings: Settings | None = None) -> Fits:
    """Fit Approaches 2 and 3 and the frontier to the usable rows of a canonical DataFrame (a raw results table
    is canonicalised first), with bootstrap intervals; raises HarnessError on data that cannot support the fits.
    `settings`, when given, replaces those read from cfg (the backtest refits with fewer resamples).
    The returned Fits has no predictions yet (see harness.analysis.predict.predict_many)."""
    t_start = time.perf_counter()
    settings = settings or Settings.from_cfg(cfg)
    if "params" not in df.columns and "loss" not in df.columns:
        df = canonicalize(df, cfg)  # a raw results table: map and validate it first
    sel = select_fit_rows(df)
    used, diag = sel.used, Diagnostics(warnings=list(sel.warnings))
    runs = RunArrays.from_frame(used)
    with single_blas_thread():
        iso = fit_isoflop(used, settings, diag)
        laws = fit_approach2(iso, diag)
        ids = used["run_id"].astype(str).tolist()
        screen = fit_screened(runs, ids, settings, diag)
        point3 = screen.fit
        frontier = fit_frontier_stage(iso, settings, float(np.exp(point3.theta[2])))
        t_boot = time.perf_counter()
        points = point_codes(used)
        samples = bootstrap_fits(used, iso, runs, point3, frontier, settings, points, screen.keep)
        t_boot = time.perf_counter() - t_boot
    level = settings.level
    approach2 = summarize_approach2(iso, laws, samples, level)
    frontier_block = summarize_frontier(frontier, iso.n_usable, samples, level, diag)
    approach3 = summarize_approach3(runs.subset(screen.keep), point3, samples, settings, diag)
    approach3["outliers"] = screen_block(screen, runs, ids)
    budgets = budget_table(iso, samples, level, diag)
    _cross_check(approach2, approach3, diag)
    valid = valid_counts(samples, settings.bootstrap, diag)
    grouped = "budgets are grouped from it, and " if df.attrs.get("budget_inferred", False) else ""
    for w in derivation_warnings(used, "D_opt and Approach 3", f"{grouped}the exponents in C"):
        diag.warn(w)
    noise = seed_noise(used, diag, settings.noise_floor, settings.noise_source)
    data = {**_data_summary(df, sel, len(iso.rows), len(iso.layout.C), runs.kappa), "bigram": bigram_plateau(used, diag)}
    scheme = "budget, then seed within point" if has_repeats(points) else "budget"
    return Fits(
        inputs=_inputs_summary(df, used), settings=dataclasses.asdict(settings),
        data=data, budgets=budgets,
        approach2=approach2, frontier=frontier_block, approach3=approach3,
        bootstrap={"n": settings.bootstrap, "scheme": settings.bootstrap_scheme, "seed": settings.seed, "level": level,
                   "stratified_by": scheme,
                   "valid": valid, "seconds": round(t_boot, 3), "total_seconds": round(time.perf_counter() - t_start, 3)},
        predictions=[], warnings=diag.warnings, notes=diag.notes, samples=samples, noise=noise,
    )
