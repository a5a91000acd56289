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
from harness.confcheck import check_hydra_cfg, config_errors, filesystem_message
from harness.errors import HarnessError


def guarded(fn: Callable[[DictConfig], int | None]) -> Callable[[DictConfig], int | None]:
    """Check the config's keys; turn HarnessError and OSError on a path into one `error:` line and exit status 2;
    pass other exit codes on."""

    def wrapper(cfg: DictConfig) -> int | None:
        try:
            check_hydra_cfg(cfg)
            code = fn(cfg)
        except HarnessError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:  # Ctrl-C outside a training step (those stop with a checkpoint: runtime.Preemption)
            print("error: interrupted; rerun the same command to resume (finished runs and checkpoints are kept)",
                  file=sys.stderr)
            sys.exit(130)
        except OSError as e:  # a path the user gave cannot be written or read: one line, not a traceback
            if e.filename is None:
                raise
            print(f"error: {filesystem_message(e)}", file=sys.stderr)
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
    from harness.plan import model_config, vocab_hint

    name, gcfg = model_config(cfg.model, vocab_hint(cfg))
    return {"model": name, **gcfg.__dict__, **count_report(gcfg, measure=bool(cfg.get("measure", True)))}


@config_errors
@hydra.main(version_base=None, config_path=CONF_DIR, config_name="run")
@guarded
def count_main(cfg: DictConfig) -> int:
    """harness-count model=NAME: print the counts as JSON."""
    print(json.dumps(count(cfg), indent=2))
    return 0


@config_errors
@hydra.main(version_base=None, config_path=CONF_DIR, config_name="run")
@guarded
def train_main(cfg: DictConfig) -> int:
    """harness-train model=NAME budget=FLOPS results_dir=DIR: train one run; exit 1 if it diverged."""
    from harness.plan import results_dir
    from harness.train import run

    rec = run(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    print(
        f"[harness] {rec['model']}: status={rec['status']} val_bpb={float(rec['val_bpb']):.4f} "
        f"flops={float(rec['flops']):.4g} tokens={rec['tokens']} wall={float(rec['wall_seconds']):.1f}s "
        f"-> {results_dir(cfg) / 'results.csv'}"
    )
    if rec["status"] != "ok":
        print(f"error: run {rec['run_id']} {rec['status']}: {rec.get('error')}", file=sys.stderr)
        return 1
    return 0


@config_errors
@hydra.main(version_base=None, config_path=CONF_DIR, config_name="sweep_run")
@guarded
def sweep_main(cfg: DictConfig) -> int:
    """harness-sweep sweep=NAME [print=table|count|results_dir|plan]: print the plan; with plan_index=i (set by
    scripts/sweep.sh) train run i.

    A diverged run is recorded and the job returns normally, so one bad run never stops the sweep."""
    from harness.sweep import dry_run_text, sweep

    if cfg.sweep.get("kind") == "lr":
        from harness.tune import tune  # with the LR report's matplotlib: ~2 s that an IsoFLOP sweep job skips

        out = tune(cfg)
    else:
        out = sweep(cfg)
    if cfg.get("plan_index") is None:
        print(dry_run_text(cfg, out))
    return 0


@config_errors
@hydra.main(version_base=None, config_path=CONF_DIR, config_name="sweep_run")
@guarded
def validate_main(cfg: DictConfig) -> int:
    """harness-validate sweep=NAME: fit and backtest the sweep, train the held-out ladder, compare, write the
    report (an LR sweep: fit each point's optimum and the LR rule, write lr_rule.json and the report)."""
    from harness.report import backtest_lines, fmt_est, noise_line
    from harness.track_fits import sweep_target
    from harness.validate import coverage_text, validate

    if str(cfg.get("print", "table")) != "table":  # harness-sweep's dry-run modes: here they would train
        raise HarnessError(f"harness-validate has no print= mode (print={cfg.print} is harness-sweep's dry run): it "
                           "fits, trains the held-out runs and reports; drop print=, or see the plan with "
                           "harness-sweep sweep=NAME print=table")
    if cfg.sweep.get("kind") == "lr":
        return _fit_lr_sweep(cfg)
    target = sweep_target(cfg)  # a bad analysis.tracker is refused before anything is fitted or trained
    if cfg.sweep.get("kind") == "ladder":
        return _validate_ladder(cfg, target)

    res = validate(cfg)
    _log_analysis(target, res["files"])
    entries, fits = res["validation"], res["fits"]
    print("\n=== scaling-law summary ===")
    for name in ("approach2", "approach3"):
        f = getattr(fits, name)
        print(f"{name}: a (N_opt ~ C^a) = {fmt_est(f['a'])}, b (D_opt ~ C^b) = {fmt_est(f['b'])}")
    for line in filter(None, [noise_line(fits), *backtest_lines(fits)]):
        print(line)
    for v in entries:
        print(f"held-out {v['model']} at {v['budget']:.3g} FLOPs: actual {v['metric']} = {v['actual']:.4f} "
              f"({v['status']})")
        for name, c in v["comparison"].items():
            print(f"  {name}: {_comparison_line(c)}")
    if len(entries) > 1:
        print(f"held-out ladder interval coverage: {coverage_text(entries)}")
    for w in fits.warnings:
        print(f"warning: {w}")
    print(f"report: {res['files'].get('report.md', Path(str(cfg.results_dir)) / 'report.md')}")
    return 0 if all(v["status"] == "ok" for v in entries) else 1


def _validate_ladder(cfg: DictConfig, target: Any) -> int:
    """The last step of a size ladder: L(N), the held-out size's prediction and its measured loss."""
    from harness.ladder_validate import validate_ladder
    from harness.validate import analysis_config

    res = validate_ladder(cfg, analysis_config(cfg))
    _log_analysis(target, res["files"])
    print("\n=== size ladder ===\n" + "\n".join(res["lines"] + [f"warning: {w}" for w in res["fits"].warnings]))
    print(f"report: {res['files']['report.md']}")
    return 0 if res["status"] == "ok" else 1


def _fit_lr_sweep(cfg: DictConfig) -> int:
    """The last step of an LR sweep: the rule and report, summarised on the terminal."""
    from harness.analysis.estimate import Estimate
    from harness.lr_rule import convention_text
    from harness.tune import fit_tune

    res = fit_tune(cfg)
    doc = res["doc"]
    rule = {k: Estimate.from_dict(v) for k, v in doc["rule"].items()}
    print(f"\n=== LR rule: lr* = c N^p D^q (N = {convention_text(doc['params'])}, D = tokens) ===")
    print("  " + ", ".join(f"{k} = {rule[k].format(4)}" for k in ("c", "p", "q")))
    for p in doc["points"]:
        o = Estimate.from_dict(p["lr_opt"])
        print(f"  {p['model']:<16} {p['budget']:>8.3g} FLOPs: lr* = {o.format(3)} ({p['status']})")
    flagged = [p for p in doc["points"] if p["status"] != "ok"]
    if flagged:
        print(f"warning: {len(flagged)} point(s) without a usable optimum (an edge minimum, or no upward parabola); left out of the rule")
    print(f"rule: {res['files'][0]}\nreport: {res['files'][1]}")
    return 0


def _comparison_line(c: dict[str, Any]) -> str:
    """'predicted 1.9918 [1.9205, 2.0592] -> error +0.36%, inside the interval' for one held-out comparison."""
    p = c["predicted"]
    if p.value is None:
        return "no prediction"
    inside = "n/a" if c["inside"] is None else ("inside" if c["inside"] else "OUTSIDE")
    rel = "n/a" if c["rel_error"] is None else f"{c['rel_error']:+.2%}"
    lo, hi = (float("nan") if x is None else x for x in (p.lo, p.hi))
    near = {True: ", within seed noise", False: ", beyond seed noise"}.get(c.get("within_noise"), "")
    pi, wide = c.get("prediction_interval"), ""
    if c["inside"] is False and pi is not None:  # the law's interval missed: does the run's own noise cover it?
        verdict = "inside" if c.get("inside_prediction_interval") else "OUTSIDE"
        wide = f", {verdict} the prediction interval with seed noise [{pi.lo:.4f}, {pi.hi:.4f}]"
    return f"predicted {p.value:.4f} [{lo:.4f}, {hi:.4f}] -> error {rel}, {inside} the interval{wide}{near}"


@config_errors
@hydra.main(version_base=None, config_path=CONF_DIR, config_name="analyze")
@guarded
def analyze_main(cfg: DictConfig) -> int:
    """harness-analyze results=PATH [out=DIR] [overrides]: fit a results CSV, write fits.json, report.md, PNGs."""
    from harness.analyze import run_analysis
    from harness.report import fmt_est
    from harness.track_fits import analyze_target

    target = analyze_target(cfg)  # a bad tracker is refused before anything is fitted
    res = run_analysis(cfg)
    _log_analysis(target, res["files"])
    s = res["summary"]
    print(f"fitted {s['n_used']} runs -> {res['out']}")
    if "lines" in s:  # a table that is not an IsoFLOP grid (harness.table_report)
        print("\n".join(s["lines"] + [f"warning: {w}" for w in s["warnings"]]))
        return 0
    print(f"a (N_opt ~ C^a): approach 2 {fmt_est(s['a_approach2'])}; approach 3 {fmt_est(s['a_approach3'])}")
    fr = s["frontier"]
    print(f"frontier L = E + K C^-k: E {fmt_est(fr['E'])}, k {fmt_est(fr['k'])}")
    for line in filter(None, [s.get("noise"), *s.get("backtest", []), *s.get("targets", [])]):
        print(line)
    for w in s["warnings"]:
        print(f"warning: {w}")
    return 0


def _log_analysis(target: Any, files: dict[str, Any]) -> None:
    """Log an analysis' plots and fits to the sweep's tracker group (harness.track_fits), saying where."""
    from harness.track_fits import log_analysis

    where = log_analysis(target, files)
    if where is not None:
        print(f"tracker ({target.kind}): the analysis' plots and fits logged to {where} (group {target.group})")


@config_errors
@hydra.main(version_base=None, config_path=CONF_DIR, config_name="budget")
@guarded
def plan_budget_main(cfg: DictConfig) -> int:
    """harness-plan-budget C=<FLOPs> | N=<params> D=<tokens> [fits=fits.json] [gpu=...]: cost and optimum."""
    from harness.analysis.load import cfg_get
    from harness.budget import plan_budget, render_plan
    from harness.plots import plot_lifetime

    plan = plan_budget(cfg)
    if cfg_get(cfg, "plot") and plan.get("lifetime"):
        plot_lifetime(plan["lifetime"], Path(cfg_get(cfg, "plot")))
    print(render_plan(plan, str(cfg_get(cfg, "format", "text"))))
    return 0


def status_main(argv: list[str] | None = None) -> int:
    """harness-status [results_dir]: planned / done / running / failed / missing runs (harness.watch); exit 2 on a
    path that is not a results directory."""
    from harness.watch import status_command

    try:
        print(status_command(argv))
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # harness-status | head: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
