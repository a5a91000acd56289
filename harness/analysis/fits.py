"""fit_all: every fit of the analysis stage on one canonical DataFrame, with bootstrap intervals.

Approach 2 (IsoFLOP parabolas, then N_opt = k_N C^a and D_opt = k_D C^b; Hoffmann et al. 2022), the loss
frontier L_opt(C) = E + K C^-k, and Approach 3 (L = E + A/N^alpha + B/D^beta fitted as Besiroglu et al. 2024),
all refitted on the same stratified bootstrap resamples of runs. The result is a Fits object: plain dicts
that serialise to fits.json, plus the bootstrap samples (kept in memory and in bootstrap_samples.npz) so that
predictions at new budgets get intervals.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.bootstrap import estimate, stratified_weights
from harness.analysis.isoflop import OK, STATUS_NAMES, build_layout, fit_parabolas
from harness.analysis.load import canonicalize, cfg_get, select_fit_rows
from harness.analysis.parametric import (
    bootstrap_parametric,
    fit_parametric,
    predict_log_loss,
    single_blas_thread,
)
from harness.analysis.powerlaw import fit_frontier, fit_loglog
from harness.errors import HarnessError

SCHEMA_VERSION = 1


@dataclass
class Settings:
    """Analysis knobs, read from a config (dict or DictConfig) with these defaults."""

    bootstrap: int = 1000
    seed: int = 0
    jobs: int = 1
    level: float = 0.95
    min_sizes: int = 3
    drop_small_budgets: bool = False
    exclude_edge: bool = True
    huber_k: float = 1.345
    irls_iters: int = 10
    delta: float = 1e-3
    starts: int = 32
    frontier_source: str = "minima"
    frontier_min_free: int = 4
    predict: tuple[float, ...] = ()

    @classmethod
    def from_cfg(cls, cfg: Any) -> Settings:
        """Map config keys (bootstrap, seed, jobs, level, isoflop.*, parametric.*, frontier.*, predict)."""
        d = cls()
        keys = {
            "bootstrap": "bootstrap", "seed": "seed", "jobs": "jobs", "level": "level",
            "min_sizes": "isoflop.min_sizes", "drop_small_budgets": "isoflop.drop_small_budgets",
            "exclude_edge": "isoflop.exclude_edge", "huber_k": "isoflop.huber_k", "irls_iters": "isoflop.iters",
            "delta": "parametric.delta", "starts": "parametric.starts", "frontier_source": "frontier.source",
            "frontier_min_free": "frontier.min_points_free",
        }
        for attr, key in keys.items():
            v = cfg_get(cfg, key)
            if v is None:
                continue
            kind = type(getattr(d, attr))
            try:
                if kind is bool and isinstance(v, str):
                    if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(v)
                    v = v.lower() in ("true", "1", "yes")
                setattr(d, attr, kind(v))
            except (TypeError, ValueError):
                raise HarnessError(f"{key}={v!r} is not a valid {kind.__name__}") from None
        pred = cfg_get(cfg, "predict")
        if pred is not None:
            try:
                d.predict = tuple(float(c) for c in ([pred] if isinstance(pred, (int, float, str)) else pred))
            except (TypeError, ValueError):
                raise HarnessError(f"predict={pred!r} is not a list of FLOP budgets; use predict=[1e21,1e22]") from None
        if d.bootstrap < 0:
            raise HarnessError(f"bootstrap={d.bootstrap} is negative; use bootstrap=0 (no intervals) or e.g. 1000")
        if d.frontier_source not in ("minima", "envelope"):
            raise HarnessError(f"frontier.source={d.frontier_source!r}; use frontier.source=minima or envelope")
        if not 0.5 < d.level < 1.0:
            raise HarnessError(f"level={d.level} is not a confidence level; use e.g. level=0.95")
        return d


@dataclass
class Fits:
    """Everything fitted, as JSON-ready dicts; `samples` holds the bootstrap draws (not in fits.json)."""

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
    validation: dict[str, Any] = field(default_factory=dict)  # held-out comparison (harness.validate)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (NaN/inf become null); the bootstrap samples are left out."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "samples"}
        return {"schema_version": SCHEMA_VERSION, **_clean(d)}

    def to_json(self, indent: int = 2) -> str:
        """fits.json text."""
        return json.dumps(self.as_dict(), indent=indent, allow_nan=False)

    def save_samples(self, path: str | Path) -> None:
        """Bootstrap samples as a compressed .npz (so predictions from a saved fit keep intervals)."""
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **self.samples)

    @classmethod
    def from_dict(cls, d: dict[str, Any], samples: dict[str, np.ndarray] | None = None) -> Fits:
        """Rebuild from fits.json content (and optionally the samples)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("samples", "validation")]
        missing = [n for n in names if n not in d]
        if missing:
            raise HarnessError(f"fits file lacks {missing}; regenerate it with harness-analyze")
        return cls(**{n: d[n] for n in names}, samples=dict(samples or {}), validation=d.get("validation") or {})


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
    samples: dict[str, np.ndarray] = {}
    npz = p.parent / "bootstrap_samples.npz"
    if npz.exists():
        with np.load(npz) as z:
            samples = {k: z[k] for k in z.files}
    return Fits.from_dict(d, samples)


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return x


def _data_hash(used: pd.DataFrame) -> str:
    cols = used[["params", "tokens", "flops", "loss"]].to_numpy(dtype=float)
    return hashlib.sha256(np.ascontiguousarray(cols).tobytes()).hexdigest()[:16]


def fit_all(df: pd.DataFrame, cfg: Any = None) -> Fits:
    """Fit Approaches 2 and 3 and the frontier to the usable rows of a canonical DataFrame (a raw results table
    is canonicalised first), with bootstrap intervals; raises HarnessError on data that cannot support the fits."""
    t_start = time.perf_counter()
    s = Settings.from_cfg(cfg)
    if "params" not in df.columns and "loss" not in df.columns:
        df = canonicalize(df, cfg)  # a raw results table: map and validate it first
    sel = select_fit_rows(df)
    used = sel.used
    warnings = list(sel.warnings)
    notes: list[str] = []

    sizes = used.groupby("budget")["params"].nunique()
    small = sizes[sizes < s.min_sizes]
    if len(small):
        desc = ", ".join(f"{b:.3g} ({n} size{'s' if n != 1 else ''})" for b, n in small.items())
        if not s.drop_small_budgets:
            raise HarnessError(
                f"budget(s) {desc} have fewer than {s.min_sizes} distinct model sizes, too few for a parabola; add "
                "sizes to those budgets or drop them with isoflop.drop_small_budgets=true"
            )
        warnings.append(f"budget(s) {desc} have fewer than {s.min_sizes} sizes and were left out of Approach 2")
    iso = used[~used["budget"].isin(small.index)]
    if iso["budget"].nunique() < 2:
        raise HarnessError(
            f"only {iso['budget'].nunique()} budget with >= {s.min_sizes} sizes; Approach 2 needs >= 2 budgets: "
            "add a budget to the sweep (or map the budget column with columns.budget=<column>)"
        )
    layout = build_layout(iso)
    lnC = np.log(layout.C)
    for j in range(len(layout.C)):
        f = iso.loc[layout.index[j][layout.mask[j]], "flops"].to_numpy(float)
        if f.max() / f.min() > 1.25:
            warnings.append(
                f"budget {layout.budgets[j]:.3g}: runs' FLOPs span {f.min():.3g}..{f.max():.3g}, not one IsoFLOP "
                "budget; the parabola mixes compute levels"
            )

    with single_blas_thread():
        pf = fit_parabolas(layout, None, s.huber_k, s.irls_iters, s.exclude_edge)
        status, usable = pf.status[0], pf.usable[0]
        for j in np.flatnonzero(status != OK):
            b = layout.budgets[j]
            name = STATUS_NAMES[int(status[j])]
            what = {
                "edge": "its optimum is nearest the smallest or largest sampled size (grid not centred on it)",
                "outside": "its optimum lies outside the sampled sizes (extrapolated)",
                "downward": "its parabola opens downward (no minimum)",
            }[name]
            action = "used anyway (isoflop.exclude_edge=false)" if usable[j] else "excluded from the power-law fits"
            warnings.append(f"budget {b:.3g}: {what}; {action}")
        n_usable = int(usable.sum())
        if n_usable < 2:
            detail = ", ".join(f"{layout.budgets[j]:.3g}: {STATUS_NAMES[int(status[j])]}"
                               for j in np.flatnonzero(~usable))
            raise HarnessError(
                f"only {n_usable} of {len(usable)} budgets have a usable parabola minimum ({detail}); Approach 2 needs "
                ">= 2: re-centre each budget's sizes on its optimum and add sizes"
                + (", or accept edge optima with isoflop.exclude_edge=false" if s.exclude_edge else "")
            )

        # Approach 2: log-log regressions over the usable budgets
        nfit = fit_loglog(lnC, pf.lnN_opt, pf.usable)
        dfit = fit_loglog(lnC, pf.lnD_opt, pf.usable)
        if n_usable == 2:
            notes.append("Approach 2 rests on exactly 2 budgets: its exponents are determined with no check of the "
                         "power law; add budgets")

        # Approach 3 on every usable run (it needs no bracketing of the optimum)
        lnN = np.log(used["params"].to_numpy(float))
        lnD = np.log(used["tokens"].to_numpy(float))
        lnL = np.log(used["loss"].to_numpy(float))
        kappa = float(np.exp(np.median(np.log(used["flops"].to_numpy(float)) - lnN - lnD)))
        try:
            p3 = fit_parametric(lnN, lnD, lnL, None, s.delta, s.starts)
        except FloatingPointError:
            raise HarnessError("Approach 3 found no finite fit from any start; check the losses and sizes, or "
                               "raise parametric.starts") from None
        ratio = np.log(used["flops"].to_numpy(float)) - lnN - lnD
        if np.ptp(ratio) > np.log(1.25):
            warnings.append(
                f"C/(N D) ranges from {np.exp(ratio.min()):.3g} to {np.exp(ratio.max()):.3g} across runs: FLOPs are not "
                "proportional to N D under this parameter convention; Approach 3's compute-optimal N, D use the "
                f"median {kappa:.3g} (try params=scaling or nonembedding)"
            )
        theta = p3.theta

        # Frontier
        L_pts = pf.L_opt if s.frontier_source == "minima" else pf.envelope
        lnC_ref = float(np.mean(lnC[usable]))
        method = "free" if n_usable >= s.frontier_min_free else "E_from_approach3"
        e_fixed = None if method == "free" else np.array([np.exp(theta[2])])
        fr = fit_frontier(lnC, L_pts, pf.usable, lnC_ref, e_fixed)

        # Bootstrap: one set of resamples for every fit
        B = s.bootstrap
        samples: dict[str, np.ndarray] = {}
        t_boot = time.perf_counter()
        if B > 0:
            codes = pd.factorize(used["budget"])[0]
            W = stratified_weights(codes, B, s.seed)
            pfb = fit_parabolas(layout, W, s.huber_k, s.irls_iters, s.exclude_edge)
            nb = fit_loglog(lnC, pfb.lnN_opt, pfb.usable)
            db = fit_loglog(lnC, pfb.lnD_opt, pfb.usable)
            a3 = bootstrap_parametric(lnN, lnD, lnL, W.astype(float), theta, s.delta, s.jobs)
            Lb = pfb.L_opt if s.frontier_source == "minima" else pfb.envelope
            frb = fit_frontier(lnC, Lb, pfb.usable, lnC_ref, None if method == "free" else np.exp(a3[:, 2]))
            samples = {
                "approach2": np.stack([nb.slope, nb.intercept, db.slope, db.intercept], axis=1),
                "frontier": np.stack([frb.E, frb.lnK_ref, frb.k], axis=1),
                "approach3": a3,
                "budget_lnN": np.where(pfb.usable, pfb.lnN_opt, np.nan),
                "budget_lnD": np.where(pfb.usable, pfb.lnD_opt, np.nan),
                "budget_L": np.where(pfb.usable, pfb.L_opt, np.nan),
            }
        t_boot = time.perf_counter() - t_boot

    sa2, sfr, sa3 = samples.get("approach2"), samples.get("frontier"), samples.get("approach3")

    def col(arr: np.ndarray | None, i: int, fn: Any = None) -> np.ndarray | None:
        if arr is None:
            return None
        v = arr[:, i]
        return fn(v) if fn else v

    # ---- Approach 2 summary
    a_, ia_ = float(nfit.slope[0]), float(nfit.intercept[0])
    b_, ib_ = float(dfit.slope[0]), float(dfit.intercept[0])
    approach2 = {
        "a": estimate(a_, col(sa2, 0), s.level),
        "k_N": estimate(np.exp(ia_), col(sa2, 1, np.exp), s.level),
        "b": estimate(b_, col(sa2, 2), s.level),
        "k_D": estimate(np.exp(ib_), col(sa2, 3, np.exp), s.level),
        "a_plus_b": estimate(a_ + b_, None if sa2 is None else sa2[:, 0] + sa2[:, 2], s.level),
        "ln_k_N": ia_, "ln_k_D": ib_,
        "r2_N": float(nfit.r2[0]), "r2_D": float(dfit.r2[0]),
        "n_budgets": n_usable,
        "budgets_used": [float(b) for b in layout.budgets[usable]],
    }
    # ---- frontier summary
    Kabs = np.exp(fr.lnK_ref[0] + fr.k[0] * lnC_ref)
    frontier = {
        "E": estimate(fr.E[0], col(sfr, 0), s.level),
        "K": estimate(Kabs, None if sfr is None else np.exp(sfr[:, 1] + sfr[:, 2] * lnC_ref), s.level),
        "k": estimate(fr.k[0], col(sfr, 2), s.level),
        "K_ref": estimate(np.exp(fr.lnK_ref[0]), col(sfr, 1, np.exp), s.level),
        "C_ref": float(np.exp(lnC_ref)), "lnK_ref": float(fr.lnK_ref[0]),
        "method": method, "source": s.frontier_source, "n_points": n_usable,
        "dof": int(n_usable - (3 if method == "free" else 2)),
        "rmse": float(np.sqrt(fr.sse[0] / n_usable)) if np.isfinite(fr.sse[0]) else None,
    }
    if method != "free":
        notes.append(
            f"the frontier has {n_usable} points for E, K, k; E is fixed to Approach 3's E and only K, k are fitted "
            f"({frontier['dof']} residual dof)"
        )
    elif n_usable == 3:
        notes.append("the frontier has 3 points for 3 parameters: it interpolates them and its fit cannot be checked")
    for name, lo_hi in (("k", (0.0051, 2.99)),):
        v = frontier[name]["value"]
        if v is not None and not lo_hi[0] < v < lo_hi[1]:
            warnings.append(f"frontier exponent k={v:.3g} sits at its search bound; the frontier is not identified")

    # ---- Approach 3 summary
    a3v = _a3_derived(theta)
    a3s = None if sa3 is None else _a3_derived(sa3)
    approach3 = {k: estimate(a3v[k], None if a3s is None else a3s[k], s.level) for k in a3v}
    resid = lnL - predict_log_loss(theta, lnN, lnD)
    approach3.update({
        "theta": [float(t) for t in theta], "kappa": kappa, "objective": p3.objective, "converged": p3.converged,
        "n_starts": p3.n_starts, "huber_delta": s.delta, "n_runs": int(len(used)),
        "rmse_log": float(np.sqrt(np.mean(resid**2))),
    })
    if not p3.converged:
        warnings.append(f"Approach 3 optimiser did not report convergence ({p3.message}); treat it with care")
    for name in ("alpha", "beta"):
        v = a3v[name]
        if not 0.02 < v < 2.5:
            warnings.append(
                f"Approach 3 {name}={v:.3g} is implausible: the N/D range of the runs may not identify it"
            )

    # ---- per-budget table
    budgets = []
    for j in range(len(layout.C)):
        m = layout.mask[j]
        rows = iso.loc[layout.index[j][m]]
        def est_b(key: str, val: float, fn: Any = None, j: int = j) -> dict[str, Any]:
            arr = samples.get(key)
            sub = None if arr is None else (fn(arr[:, j]) if fn else arr[:, j])
            return estimate(val, sub, s.level)
        ok_j = int(status[j]) not in (3, 4)
        hub = pf.robust_weight[0, j][m]
        down = [{"run_id": str(r), "weight": round(float(w), 3)} for r, w in zip(rows["run_id"], hub) if w < 0.5]
        budgets.append({
            "budget": float(layout.budgets[j]), "C": float(layout.C[j]), "n_runs": int(m.sum()),
            "n_sizes": int(layout.n_sizes[j]), "N_min": float(rows["params"].min()),
            "N_max": float(rows["params"].max()), "status": STATUS_NAMES[int(status[j])], "used": bool(usable[j]),
            "N_opt": est_b("budget_lnN", np.exp(pf.lnN_opt[0, j]) if ok_j else np.nan, np.exp),
            "D_opt": est_b("budget_lnD", np.exp(pf.lnD_opt[0, j]) if ok_j else np.nan, np.exp),
            "L_opt": est_b("budget_L", pf.L_opt[0, j] if ok_j else np.nan),
            "L_min_observed": float(rows["loss"].min()),
            "coef": [float(c) for c in pf.coef[0, j]], "center_lnN": float(layout.center[j]),
            "downweighted": down,
        })
        if down:
            notes.append(f"budget {layout.budgets[j]:.3g}: the robust parabola down-weighted "
                         + ", ".join(f"{d['run_id']} (weight {d['weight']})" for d in down))

    # ---- cross-checks
    a2lo, a2hi = approach2["a"]["lo"], approach2["a"]["hi"]
    a3lo, a3hi = approach3["a"]["lo"], approach3["a"]["hi"]
    disagree = abs(a_ - a3v["a"]) > 0.05
    if None not in (a2lo, a2hi, a3lo, a3hi):
        disagree = disagree or a2hi < a3lo or a3hi < a2lo
    if disagree:
        warnings.append(
            f"Approach 2 (a={a_:.3f}) and Approach 3 (a={a3v['a']:.3f}) disagree: parabola fits are biased by "
            "off-centre or narrow size grids, and Approach 3 by a misspecified L(N, D); check both"
        )
    valid = {}
    if B > 0:
        valid = {
            "approach2": int(np.isfinite(sa2[:, 0]).sum()), "frontier": int(np.isfinite(sfr[:, 2]).sum()),
            "approach3": int(np.all(np.isfinite(sa3), axis=1).sum()),
        }
        for k, v in valid.items():
            if v < 0.95 * B:
                warnings.append(
                    f"{k}: only {v} of {B} bootstrap resamples gave an estimate (the others lost budgets to the "
                    "size, edge or downward-parabola rules); its interval is conditional on those; add sizes per budget"
                )
    else:
        notes.append("bootstrap=0: no intervals were computed")
    if bool(used["tokens_derived"].any()):
        warnings.append("the table has no tokens column: D = C/(6N) was derived for every run (Hoffmann et al. "
                        "2022's approximation); D_opt and Approach 3 inherit it")

    data = {
        "n_rows": int(len(df)), "n_used": int(len(used)), "n_used_approach2": int(len(iso)),
        "excluded": sel.excluded, "n_budgets": int(len(layout.C)), "tokens_derived": bool(used["tokens_derived"].any()),
        "kappa": kappa, "data_hash": _data_hash(used),
        "N_range": [float(used["params"].min()), float(used["params"].max())],
        "C_range": [float(used["flops"].min()), float(used["flops"].max())],
        "loss_range": [float(used["loss"].min()), float(used["loss"].max())],
    }
    fps = sorted(v for v in used.get("fingerprint", pd.Series(dtype=str)).astype(str).unique() if v not in ("", "nan"))
    inputs = {
        "source": df.attrs.get("source"), "sha256": df.attrs.get("sha256"), "data_fingerprint": fps,
        "columns": df.attrs.get("columns"), "budget_inferred": df.attrs.get("budget_inferred", False),
        "budget_tolerance": df.attrs.get("budget_tolerance"),
    }
    fits = Fits(
        inputs=inputs, settings=dataclasses.asdict(s), data=data, budgets=budgets, approach2=approach2,
        frontier=frontier, approach3=approach3,
        bootstrap={"n": B, "seed": s.seed, "level": s.level, "stratified_by": "budget", "valid": valid,
                   "seconds": round(t_boot, 3)},
        predictions=[], warnings=warnings, notes=notes, samples=samples,
    )
    from harness.analysis.predict import predict_at_budget

    targets = list(s.predict) or [float(layout.C.max()) * 10.0, float(layout.C.max()) * 100.0]
    fits.predictions = [predict_at_budget(fits, c) for c in targets]
    fits.bootstrap["total_seconds"] = round(time.perf_counter() - t_start, 3)
    return fits


def _a3_derived(theta: np.ndarray) -> dict[str, Any]:
    """E, A, B, alpha, beta and the implied a, b, G (Hoffmann et al. 2022 eq. 4) from theta (..., 5)."""
    th = np.asarray(theta, float)
    a, b, e, al, be = (th[..., i] for i in range(5))
    with np.errstate(all="ignore"):
        s = al + be
        G = np.exp((np.log(al) + a - np.log(be) - b) / s)
    return {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": al, "beta": be, "a": be / s, "b": al / s,
            "G": G}



