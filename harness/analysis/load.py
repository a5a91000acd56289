"""Read any results table into the canonical analysis DataFrame, and pick the rows a fit may use.

Canonical columns: run_id, params (N under the chosen convention), tokens (D), flops (C), loss (the chosen
metric), budget (grouping key), status, role, tokens_derived, flops_derived, fingerprint. Only rows with
status == "ok", role != "holdout" and a finite loss are fitted; everything else is counted and reported, never
dropped silently. All problems raise HarnessError with one line naming the problem and the fix. Which source
column is which lives in harness.analysis.columns.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.columns import PARAM_CONVENTIONS as PARAM_CONVENTIONS
from harness.analysis.columns import ColumnMap as ColumnMap
from harness.analysis.columns import cfg_get as cfg_get
from harness.analysis.columns import source_columns
from harness.analysis.tablefile import read_table
from harness.confcheck import ROLES
from harness.errors import HarnessError

CANONICAL = ["run_id", "params", "tokens", "flops", "loss", "budget", "status", "role", "tokens_derived",
             "flops_derived", "fingerprint"]
# Runs whose FLOPs lie within this relative distance of a group's first run share a budget when the
# table has no budget column (IsoFLOP sweeps aim every size at the same C; step rounding moves it <1%).
DEFAULT_BUDGET_TOLERANCE = 0.10
KAPPA_RANGE = (1.0, 100.0)  # C/(N D) outside it: a unit slip (6 for dense transformers; tiny ones reach ~15)


# Counts as papers write them: 70M parameters, 1.4B, 300B tokens (G as giga, for FLOPs)
SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}
_SUFFIXED = re.compile(r"^\s*(\d*\.?\d+(?:e[+-]?\d+)?)\s*([kmgbt])\s*$", re.IGNORECASE)


def suffixed_counts(series: pd.Series) -> pd.Series:
    """Cells written as 70M, 1.4B or 2T as floats (K, M, B or G, T = 1e3, 1e6, 1e9, 1e12); NaN for the rest."""
    parts = series.astype(str).str.extract(_SUFFIXED)
    scale = parts[1].str.lower().map(SUFFIXES)
    return pd.to_numeric(parts[0], errors="coerce") * scale


def _numeric(raw: pd.DataFrame, col: str, what: str, rows: pd.Series, allow_nan: bool,
             counts: bool = False) -> pd.Series:
    """Column as float, refusing text and non-positive values among `rows` (NaN allowed if allow_nan); a count
    (N, D, C) may be written with a suffix, 70M or 1.4B (suffixed_counts)."""
    series = raw[col]
    values = pd.to_numeric(series, errors="coerce").astype(float)
    if counts and not pd.api.types.is_numeric_dtype(series):
        values = values.fillna(suffixed_counts(series))
    text = series.astype(str).str.strip().str.lower()
    missing_like = series.isna() | text.isin(["", "nan", "none", "null", "inf", "-inf", "infinity"])
    bad_text = rows & values.isna() & ~missing_like
    if bad_text.any():
        i = int(np.flatnonzero(bad_text.to_numpy())[0])
        raise HarnessError(
            f"column {col!r} ({what}) has a non-numeric value {str(series.iloc[i])!r} in data row {i + 1}; "
            "fix the CSV or map another column with columns.<name>=<column>"
        )
    finite = np.isfinite(values)
    if not allow_nan:
        bad = rows & ~finite
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise HarnessError(
                f"column {col!r} ({what}) is empty or not finite in data row {i + 1}; fill it in or mark that run "
                "status=failed"
            )
    nonpos = rows & finite & (values <= 0)
    if nonpos.any():
        i = int(np.flatnonzero(nonpos.to_numpy())[0])
        raise HarnessError(
            f"column {col!r} ({what}) must be > 0 but data row {i + 1} holds {float(values.iloc[i]):g}; fix the CSV or mark "
            "that run status=failed"
        )
    return values


def group_budgets(flops: np.ndarray, tolerance: float = DEFAULT_BUDGET_TOLERANCE) -> np.ndarray:
    """Budget key per run when the table has none: sorted log C is split wherever two neighbours differ by more than
    `tolerance` (relative). A group wider than that stays one budget only if it is jitter around one: at most twice
    the tolerance wide and 3x further from its neighbours; else (a continuum of C) it is split from each group's
    first run. Key: the geometric mean."""
    out = np.full(flops.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(flops) & (flops > 0))
    if idx.size == 0:
        return out
    order = idx[np.argsort(flops[idx])]
    logs = np.log(flops[order])
    limit = math.log1p(tolerance)
    cuts = [0, *(np.flatnonzero(np.diff(logs) > limit) + 1), logs.size]
    padded = np.concatenate([[-np.inf], logs, [np.inf]])
    for a, b in pairwise(cuts):
        starts, span = [a], logs[b - 1] - logs[a]
        isolated = min(padded[a + 1] - padded[a], padded[b + 1] - padded[b]) >= 3 * span  # gaps >> its own width
        if span > limit and not (span <= 2 * limit and isolated):  # not one jittered budget: anchored split
            for i in range(a + 1, b):
                if logs[i] - logs[starts[-1]] > limit:
                    starts.append(i)
        for s, e in zip(starts, [*starts[1:], b]):
            out[order[s:e]] = float(f"{float(np.exp(np.mean(logs[s:e]))):.3g}")
    return out


def _budget_column(values: pd.Series, tolerance: float) -> tuple[pd.Series, str | None]:
    """A budget column as given, unless its values jitter: several within `tolerance` of each other are one budget
    written per run (a run's own FLOPs), grouped like C (group_budgets) and said so."""
    arr = values.to_numpy(dtype=float)
    grouped = group_budgets(arr, tolerance)
    before, after = np.unique(arr[np.isfinite(arr)]).size, np.unique(grouped[np.isfinite(grouped)]).size
    if after == before:
        return values, None
    note = (f"the budget column's {before} distinct values lie within {tolerance:.0%} of each other in {after} groups "
            f"(a run's own FLOPs, not one value per budget): grouped into {after} budgets (budget_tolerance)")
    return pd.Series(np.where(np.isfinite(grouped), grouped, arr), index=values.index), note


HOLDOUT_WORDS = ("held-out", "held_out", "heldout", "hold-out", "hold_out")  # other tables' spellings of holdout


def label_column(raw: pd.DataFrame, col: str | None, default: str) -> pd.Series:
    """A lower-cased text column (status, role), `default` where absent or empty; `held-out` and its spellings
    read as holdout."""
    values = raw[col].astype(str).str.strip().str.lower() if col else pd.Series([default] * len(raw))
    values = values.where(~values.isin(["nan", "none", ""]), default).replace(dict.fromkeys(HOLDOUT_WORDS, "holdout"))
    values.index = raw.index
    return values


def _tokens_flops_budget(raw: pd.DataFrame, src: dict[str, str | None], params: pd.Series, ok: pd.Series,
                         cfg: Any) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series, str | None]:
    """(tokens, tokens_derived, flops, budget, note): D and C from their columns, or one derived from the other
    (D = C/(6N), C = 6ND); budget from its column (note: said when its jittered values were grouped) or grouped
    by C."""
    tokens = _numeric(raw, src["tokens"], "training tokens D", ok, allow_nan=False, counts=True) if src["tokens"] else None
    if src["flops"]:
        flops = _numeric(raw, src["flops"], "training compute C", ok, allow_nan=False, counts=True)
    else:  # no compute column (source_columns allows it only beside a tokens column): C = 6ND, flagged
        flops = 6.0 * params * tokens
    derived = pd.Series(tokens is None, index=raw.index)
    if tokens is None:
        tokens = flops / (6.0 * params)
    tol = float(cfg_get(cfg, "budget_tolerance", DEFAULT_BUDGET_TOLERANCE))
    if src["budget"]:
        return tokens, derived, flops, *_budget_column(
            _numeric(raw, src["budget"], "FLOP budget", ok, allow_nan=False, counts=True), tol)
    return tokens, derived, flops, pd.Series(group_budgets(flops.where(ok).to_numpy(dtype=float), tol),
                                             index=raw.index), None


def derivation_warnings(used: pd.DataFrame, d_inherits: str, c_inherits: str) -> list[str]:
    """The warnings for a D or C that the table lacked and the loader derived; *_inherits names the fits they feed."""
    out = []
    if bool(used["tokens_derived"].any()):
        out.append("the table has no tokens column: D = C/(6N) was derived for every run (Hoffmann et al. 2022's "
                   f"approximation); {d_inherits} inherit it")
    if bool(used["flops_derived"].any()):
        out.append("the table has no compute column: C = 6ND was derived for every run (Kaplan et al. 2020's "
                   f"approximation); {c_inherits} inherit it")
    return out


def canonicalize(raw: pd.DataFrame, cfg: Any = None) -> pd.DataFrame:
    """Map a raw results table onto the canonical columns and validate it (Hoffmann et al. 2022's C = 6ND is
    used to derive D when the table has no tokens column, and that is flagged per row)."""
    cmap = ColumnMap.from_cfg(cfg)
    src = source_columns(raw, cmap)
    n = len(raw)
    if n == 0:
        raise HarnessError("the results table has a header but no rows; train some runs or point results= elsewhere")
    status, role = label_column(raw, src["status"], "ok"), label_column(raw, src["role"], "sweep")
    ok = status == "ok"
    params = _numeric(raw, src["params"], "parameter count N", ok, allow_nan=False, counts=True)
    loss = _numeric(raw, src["loss"], "loss", ok, allow_nan=True)
    tokens, derived, flops, budget, grouped = _tokens_flops_budget(raw, src, params, ok, cfg)
    run_col, fp_col = src["run_id"], src["fingerprint"]
    run_id = raw[run_col].astype(str) if run_col else pd.Series([f"row{i + 1}" for i in range(n)], index=raw.index)
    fingerprint = raw[fp_col].astype(str).str.strip() if fp_col else pd.Series([""] * n, index=raw.index)
    df = pd.DataFrame({
        "run_id": run_id, "params": params, "tokens": tokens, "flops": flops, "loss": loss, "budget": budget,
        "status": status, "role": role, "tokens_derived": derived, "flops_derived": src["flops"] is None,
        "fingerprint": fingerprint,
    }).reset_index(drop=True)
    _carry_provenance(raw, df, str(src["loss"]))
    if not fp_col:
        _refuse_mixed_experiments(raw, df, {c for c in src.values() if c})
    df = _select_fingerprint(df, cfg_get(cfg, "fingerprint"))
    df.attrs.update(raw.attrs)
    df.attrs["budget_grouped"] = grouped  # select_fit_rows warns with it
    df.attrs["columns"] = cmap.as_dict()
    df.attrs["tokens_derived"] = src["tokens"] is None
    df.attrs["budget_inferred"] = src["budget"] is None
    df.attrs["suffixed"] = [c for c in dict.fromkeys(src[k] for k in ("params", "tokens", "flops", "budget"))
                            if c and not pd.api.types.is_numeric_dtype(raw[c]) and suffixed_counts(raw[c]).notna().any()]
    df.attrs["budget_tolerance"] = float(cfg_get(cfg, "budget_tolerance", DEFAULT_BUDGET_TOLERANCE))
    return df


def _select_fingerprint(df: pd.DataFrame, wanted: Any) -> pd.DataFrame:
    """Refuse to mix corpora: keep one data_fingerprint (the only one present, or the one asked for)."""
    ok = (df["status"] == "ok") & (df["fingerprint"] != "") & (df["fingerprint"].str.lower() != "nan")
    values = sorted(df.loc[ok, "fingerprint"].unique())
    if wanted is not None and str(wanted) != "":
        wanted = str(wanted)
        if wanted not in set(df["fingerprint"]):
            raise HarnessError(f"fingerprint={wanted!r} matches no row; present: {values}")
        kept = df[df["fingerprint"] == wanted].reset_index(drop=True)
        kept.attrs["fingerprint_dropped"] = int(len(df) - len(kept))
        return kept
    if len(values) > 1:
        counts = ", ".join(f"{v} ({int((df.loc[ok, 'fingerprint'] == v).sum())} runs)" for v in values)
        raise HarnessError(
            f"runs come from {len(values)} different corpora (data_fingerprint {counts}); fits never mix corpora: "
            "pick one with fingerprint=<value>"
        )
    return df


def point_codes(used: pd.DataFrame) -> np.ndarray:
    """One integer per row naming its (budget, N, D) point; rows that repeat a point (seeds, experiments) share it."""
    if not len(used):
        return np.zeros(0, int)
    key = pd.DataFrame({c: np.round(np.log(used[c].astype(float).to_numpy()), 9) for c in ("budget", "params", "tokens")})
    return pd.MultiIndex.from_frame(key).factorize()[0]


def _experiment_columns(raw: pd.DataFrame, df: pd.DataFrame, mapped: set[str]) -> list[str]:
    """Text columns that tell apart the runs repeating one (budget, N, D) point: each point's repeats carry distinct
    values and each value alone repeats nothing. Such a column names experiments that share one design (datasets,
    conditions), not seeds; a table with a seed column says its repeats are seeds."""
    if any(str(c).strip().lower() == "seed" for c in raw.columns):
        return []
    ok = (df["status"] == "ok").to_numpy()  # failed rows may hold no sizes
    points = pd.Series(point_codes(df.loc[ok]), index=raw.index[ok])
    repeated = points.duplicated(keep=False)
    if repeated.sum() < 4:
        return []
    rows = repeated.index[repeated.to_numpy()]
    out = []
    for col in raw.columns:
        values = raw[col]
        if col in mapped or pd.api.types.is_numeric_dtype(values) or not 2 <= values.nunique() <= len(raw) // 3:
            continue
        rep = pd.DataFrame({"p": points.loc[rows], "v": values.loc[rows]})
        if not rep.duplicated().any():  # no point repeats within one value: the value tells the repeats apart
            out.append(str(col))
    return out


def _refuse_mixed_experiments(raw: pd.DataFrame, df: pd.DataFrame, mapped: set[str]) -> None:
    """One error naming the experiments when a table holds several that repeat one design (fitting them together
    would read them as seeds of one law)."""
    cols = _experiment_columns(raw, df, mapped)
    if not cols:
        return
    col = cols[0]
    counts = raw[col].value_counts()
    listed = ", ".join(f"{v} ({n} runs)" for v, n in counts.head(4).items()) + (", ..." if len(counts) > 4 else "")
    also = f" (so does {', '.join(repr(c) for c in cols[1:])})" if len(cols) > 1 else ""
    raise HarnessError(
        f"the table holds {len(counts)} experiments, told apart by column {col!r}{also}: {listed}; the runs that "
        "repeat a (budget, N, D) point differ in it, so fitted together they would read as seed repeats of one law. "
        f"Fit one at a time: columns.fingerprint={col} fingerprint={counts.index[0]} (if the repeats are seeds, "
        "add a column named seed that numbers them)")


def _carry_provenance(raw: pd.DataFrame, df: pd.DataFrame, loss_col: str) -> None:
    """Copy what the fit reports about the data: epochs and bpb_method (data_warnings), and a bigram model's value
    of the metric (harness.ngram's bigram_<metric> column) as `bigram` (harness.analysis.plateau)."""
    ref = f"bigram_{loss_col}"
    for col in ("epochs", "bpb_method", ref):
        if col in raw.columns:
            df["bigram" if col == ref else col] = raw[col].to_numpy()


def load_results(path: str | Path, cfg: Any = None) -> pd.DataFrame:
    """Read a results CSV (ours or foreign, via `columns.*`) into the validated canonical DataFrame."""
    return canonicalize(read_table(path), cfg)


@dataclass
class Selection:
    """The rows a fit uses, plus what was left out and why (reported in fits.json and report.md)."""

    used: pd.DataFrame
    excluded: dict[str, int]
    warnings: list[str]


def _with_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with the optional canonical columns filled in (status ok, role sweep, row ids, measured D)."""
    missing = [c for c in ("params", "tokens", "flops", "loss", "budget") if c not in df.columns]
    if missing:
        raise HarnessError(
            f"DataFrame lacks canonical columns {missing}; load it with harness.analysis.load_results or canonicalize"
        )
    df = df.copy()
    defaults = {"status": "ok", "role": "sweep", "run_id": [f"row{i + 1}" for i in range(len(df))],
                "tokens_derived": False}
    for col, value in defaults.items():
        if col not in df.columns:
            df[col] = value
    return df


def select_fit_rows(df: pd.DataFrame) -> Selection:
    """Rows with status ok, role != holdout and a finite loss; counts and warnings for everything else."""
    df = _with_defaults(df)
    excluded: dict[str, int] = {}
    warnings: list[str] = []
    bad_status = df["status"] != "ok"
    for s, count in df.loc[bad_status, "status"].value_counts().items():
        excluded[f"status={s}"] = int(count)
    holdout = ~bad_status & (df["role"] == "holdout")
    if holdout.any():
        excluded["holdout"] = int(holdout.sum())
    nan_loss = ~bad_status & ~holdout & ~np.isfinite(df["loss"].astype(float))
    if nan_loss.any():
        excluded["nan_loss"] = int(nan_loss.sum())
        ids = ", ".join(df.loc[nan_loss, "run_id"].astype(str).head(5))
        warnings.append(
            f"{int(nan_loss.sum())} run(s) with status ok have a NaN/inf loss and were excluded ({ids}"
            f"{', ...' if nan_loss.sum() > 5 else ''})"
        )
    keep = ~bad_status & ~holdout & ~nan_loss
    copies = keep & df.duplicated(subset=["params", "tokens", "flops", "loss", "budget"], keep="first")
    if copies.any():  # a seed repeat never matches a loss to every digit: these are copies, not seeds
        excluded["duplicate"] = int(copies.sum())
        warnings.append(f"{int(copies.sum())} row(s) repeat another row exactly (N, D, C and loss) and were dropped "
                        "as copies, not counted as seeds; remove the duplicated lines from the table")
    used = df[keep & ~copies].reset_index(drop=True)
    if used.empty:
        raise HarnessError(_no_usable_runs(df, excluded, bad_status))
    if df.attrs.get("budget_grouped"):
        warnings.append(str(df.attrs["budget_grouped"]))
    unknown = used.loc[~used["role"].isin(ROLES), "role"].value_counts()  # other tables' words: warned about
    if len(unknown):
        warnings.append(f"role values the harness does not know were fitted as sweep runs "
                        f"({', '.join(f'{r}: {n}' for r, n in unknown.head(5).items())}); mark held-out runs "
                        "role=holdout (or held-out), or ignore the column with columns.role=none")
    for col in ("params", "tokens", "flops", "loss", "budget"):
        vals = used[col].astype(float).to_numpy()
        if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
            raise HarnessError(f"column {col!r} has non-positive or missing values among usable runs; fix the table")
    return Selection(used=used, excluded=excluded, warnings=warnings + data_warnings(used))


def _no_usable_runs(df: pd.DataFrame, excluded: dict[str, int], bad_status: pd.Series) -> str:
    """The error for a table none of whose rows can be fitted, with a hint where its status words are not ours."""
    parts = ", ".join(f"{k}: {v}" for k, v in excluded.items()) or "no rows"
    foreign = sorted(set(df.loc[bad_status, "status"]) - {"diverged", "failed"})
    hint = (f"; if the status values {', '.join(map(repr, foreign[:3]))} mean finished runs, ignore the column "
            "with columns.status=none") if foreign else ""
    return f"no usable runs: all {len(df)} rows are excluded ({parts}); train runs that finish with status ok{hint}"


def data_warnings(used: pd.DataFrame) -> list[str]:
    """Fitted runs that repeated their train split (> 1 epoch, Muennighoff et al. 2023) or whose val_bpb used a
    mean bytes_per_token instead of exact per-token byte counts."""
    out = []
    if "epochs" in used.columns:
        ep = pd.to_numeric(used["epochs"], errors="coerce")
        if (ep > 1).any():
            out.append(f"{int((ep > 1).sum())} of {len(used)} fitted runs trained on repeated data (up to "
                       f"{ep.max():.1f} epochs of the train split): their losses mix scaling with repetition "
                       "(Muennighoff et al. 2023); use a bigger corpus or smaller budgets")
    given = pd.Series(True, index=used.index)
    for col in ("tokens_derived", "flops_derived"):  # a derived D or C makes C/(N D) 6 by construction
        given &= ~used[col].astype(bool) if col in used.columns else True
    kappa = float(np.median(used.loc[given, "flops"] / (used.loc[given, "params"] * used.loc[given, "tokens"]))) \
        if given.any() else 6.0
    if not KAPPA_RANGE[0] <= kappa <= KAPPA_RANGE[1]:  # unit slips are factors of 1e3 and more, not of 2
        out.append(f"C/(N D) is {kappa:.3g} at the median run, where training FLOPs give about 6 (Kaplan et al. 2020): "
                   "a column's unit is probably misread (FLOPs in PF-days, N in millions, D in billions?); check the "
                   "report's Units line and set units.flops, units.params or units.tokens")
    if "bpb_method" in used.columns and (used["bpb_method"].astype(str) == "approximate").any():
        out.append("val_bpb is approximate for some runs: pre-tokenized data without a tokenizer converts nats per "
                   "token with a mean data.bytes_per_token, not exact per-token byte counts")
    return out
