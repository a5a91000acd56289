"""Console scripts: thin @hydra.main wrappers over the pure run functions (tests call those directly)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from harness import CONF_DIR
from harness.errors import HarnessError


def guarded(fn: Callable[[DictConfig], int | None]) -> Callable[[DictConfig], int | None]:
    """Turn HarnessError into one `error:` line on stderr and exit status 2; pass other exit codes on."""

    def wrapper(cfg: DictConfig) -> int | None:
        try:
            code = fn(cfg)
        except HarnessError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        if code:
            sys.exit(code)
        return code

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def count(cfg: DictConfig) -> dict[str, Any]:
    """Parameter and FLOP counts of cfg.model (exact, 6N and measured by FlopCounterMode)."""
    from harness.counting import count_report
    from harness.train import model_config

    vocab = int(cfg.data.vocab_size) if cfg.data.get("vocab_size") else 256
    name, gcfg = model_config(cfg.model, vocab)
    return {"model": name, **gcfg.__dict__, **count_report(gcfg, measure=bool(cfg.get("measure", True)))}


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="run")
@guarded
def count_main(cfg: DictConfig) -> int:
    """harness-count model=NAME: print the counts as JSON."""
    print(json.dumps(count(cfg), indent=2))
    return 0


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="run")
@guarded
def train_main(cfg: DictConfig) -> int:
    """harness-train model=NAME budget=FLOPS results_dir=DIR: train one run; exit 1 if it diverged."""
    from harness.train import run

    rec = run(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    print(
        f"[harness] {rec['model']}: status={rec['status']} val_bpb={float(rec['val_bpb']):.4f} "
        f"flops={float(rec['flops']):.4g} tokens={rec['tokens']} wall={float(rec['wall_seconds']):.1f}s "
        f"-> {Path(str(cfg.results_dir)) / 'results.csv'}"
    )
    if rec["status"] != "ok":
        print(f"error: run {rec['run_id']} {rec['status']}: {rec.get('error')}", file=sys.stderr)
        return 1
    return 0


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="sweep_run")
@guarded
def sweep_main(cfg: DictConfig) -> int:
    """harness-sweep sweep=NAME: print the plan; with plan_index=i (set by scripts/sweep.sh) train run i.

    A diverged run is recorded and the job returns normally, so one bad run never stops the sweep."""
    from harness.sweep import sweep

    out = sweep(cfg)
    if cfg.get("plan_index") is None:
        what = str(cfg.print)
        print({"count": len(out["runs"]), "results_dir": cfg.results_dir}.get(what, out["table"]))
    return 0


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="sweep_run")
@guarded
def validate_main(cfg: DictConfig) -> int:
    """harness-validate sweep=NAME: fit the sweep, train the held-out run, compare, write the report."""
    from harness.report import fmt_est
    from harness.validate import validate

    res = validate(cfg)
    v, fits = res["validation"], res["fits"]
    print("\n=== scaling-law summary ===")
    for name in ("approach2", "approach3"):
        f = getattr(fits, name)
        print(f"{name}: a (N_opt ~ C^a) = {fmt_est(f['a'])}, b (D_opt ~ C^b) = {fmt_est(f['b'])}")
    print(f"held-out {v['model']} at {v['budget']:.3g} FLOPs: actual {v['metric']} = {v['actual']:.4f} ({v['status']})")
    for name, c in v["comparison"].items():
        if c["loss"] is None:
            print(f"  {name}: no prediction")
            continue
        inside = "n/a" if c["inside"] is None else ("inside" if c["inside"] else "OUTSIDE")
        rel = "n/a" if c["rel_error"] is None else f"{c['rel_error']:+.2%}"
        print(f"  {name}: predicted {c['loss']:.4f} [{c['lo'] or float('nan'):.4f}, {c['hi'] or float('nan'):.4f}] "
              f"-> error {rel}, {inside} the interval")
    for w in fits.warnings:
        print(f"warning: {w}")
    print(f"report: {res['files'].get('report.md', Path(str(cfg.results_dir)) / 'report.md')}")
    return 0 if v["status"] == "ok" else 1
