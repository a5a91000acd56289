"""Entry points: harness-analyze (fit a results CSV, write fits.json, report.md, PNGs) and harness-plan-budget.

Each is a thin @hydra.main wrapper over a pure function (run_analysis, harness.budget.plan_budget) that tests
call with a composed config. Bad input raises HarnessError; the wrappers print `error: <message>` and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra

from harness import CONF_DIR
from harness.analysis.fits import fit_all
from harness.analysis.load import cfg_get, load_results
from harness.errors import HarnessError


def default_out(results: str | Path) -> Path:
    """<directory of the results CSV>/analysis (or <results dir>/analysis when given a directory)."""
    p = Path(results).expanduser()
    return (p if p.is_dir() else p.parent) / "analysis"


def run_analysis(cfg: Any) -> dict[str, Any]:
    """Load results, fit everything, write the report atomically; returns {out, files, fits, summary}."""
    from harness.report import write_report

    results = cfg_get(cfg, "results")
    if results is None or str(results) in ("", "???"):
        raise HarnessError("no results file given; run harness-analyze results=PATH [out=DIR]")
    df = load_results(str(results), cfg)
    fits = fit_all(df, cfg)
    out = Path(str(cfg_get(cfg, "out") or default_out(str(results)))).expanduser()
    files = write_report(fits, df, out)
    a2, a3 = fits.approach2, fits.approach3
    summary = {
        "a_approach2": a2["a"], "a_approach3": a3["a"], "b_approach2": a2["b"], "b_approach3": a3["b"],
        "frontier": {k: fits.frontier[k] for k in ("E", "K", "k")}, "n_used": fits.data["n_used"],
        "warnings": list(fits.warnings),
    }
    return {"out": str(out), "files": {k: str(v) for k, v in files.items()}, "fits": fits, "summary": summary}


def _print_summary(res: dict[str, Any]) -> None:
    from harness.report import fmt_est

    s = res["summary"]
    print(f"fitted {s['n_used']} runs -> {res['out']}")
    print(f"a (N_opt ~ C^a): approach 2 {fmt_est(s['a_approach2'])}; approach 3 {fmt_est(s['a_approach3'])}")
    fr = s["frontier"]
    print(f"frontier L = E + K C^-k: E {fmt_est(fr['E'])}, k {fmt_est(fr['k'])}")
    for w in s["warnings"]:
        print(f"warning: {w}")


def _fail(exc: HarnessError) -> None:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="analyze")
def analyze_main(cfg: Any) -> None:
    """harness-analyze results=PATH [out=DIR] [overrides]."""
    try:
        _print_summary(run_analysis(cfg))
    except HarnessError as exc:
        _fail(exc)


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="budget")
def plan_budget_main(cfg: Any) -> None:
    """harness-plan-budget C=<FLOPs> | N=<params> D=<tokens> [fits=fits.json] [gpu=...]."""
    from harness.budget import format_plan, plan_budget

    try:
        print(format_plan(plan_budget(cfg)))
    except HarnessError as exc:
        _fail(exc)


if __name__ == "__main__":
    analyze_main()
