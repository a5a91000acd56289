"""Held-out validation: fit the sweep, predict a larger run, train it, compare, write the report.

The held-out run is trained through the normal trainer with role=holdout, so it is resumable like any run
and the analysis never fits it (rows with role=holdout are excluded from every fit).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import CONF_DIR
from harness.analysis.estimate import Estimate
from harness.counting import param_counts
from harness.errors import HarnessError
from harness.plan import family_members, job_config_for, parse_budget, plan_steps, results_dir, vocab_hint

APPROACHES = ("approach2", "approach3")


def analysis_config(cfg: DictConfig) -> DictConfig:
    """conf/analyze.yaml merged with the sweep config's `analysis` overrides, pointed at this results dir."""
    base = OmegaConf.load(Path(CONF_DIR) / "analyze.yaml")
    for key in ("defaults", "hydra"):
        base.pop(key, None)
    acfg = OmegaConf.merge(base, cfg.get("analysis") or {})
    acfg.results = str(results_dir(cfg) / "results.csv")
    acfg.out = str(results_dir(cfg))
    return acfg


def target_budget(cfg: DictConfig) -> float:
    """sweep.holdout.budget if set, else sweep.holdout.multiple x the largest sweep budget."""
    h = cfg.sweep.holdout
    if h.get("budget") is not None:
        return parse_budget(h.budget)
    largest = max(parse_budget(b) for b in cfg.sweep.budgets)
    multiple = float(h.multiple)
    if not multiple > 0:
        raise HarnessError(f"sweep.holdout.multiple={h.multiple} must be positive, e.g. 4")
    return multiple * largest


def choose_size(cfg: DictConfig, n_star: float, budget: float, convention: str, vocab: int) -> tuple[str, Any]:
    """The family member nearest N* in log N (under the analysis' parameter convention) that the budget
    can train for at least sweep.min_steps steps."""
    sc = cfg.sweep
    best = None
    for name, g in family_members(cfg.model, vocab, 1, int(sc.d_model_max) * 4):
        steps = plan_steps(budget, g, int(cfg.train.batch_size), 0).steps
        if steps < int(sc.min_steps):
            continue
        dist = abs(math.log(param_counts(g)[f"params_{convention}"]) - math.log(n_star))
        if best is None or dist < best[0]:
            best = (dist, name, g)
    if best is None:
        raise HarnessError(f"no family size trains {budget:.3g} FLOPs for {sc.min_steps} steps; raise the budget")
    return best[1], best[2]


# What each approach's held-out prediction is (the report and fits.json say so beside the numbers).
PREDICTION_SOURCES = {
    "approach2": "frontier L_opt(C) at the held-out budget",
    "approach3": "L(N, D) at the trained (N, D)",
}


def compare(actual: float, predicted: Estimate) -> dict[str, Any]:
    """Predicted vs actual: absolute and relative error, and whether the interval covers the actual value."""
    p = predicted.value
    if p is None or not math.isfinite(actual):
        return {"predicted": predicted, "actual": actual, "abs_error": None, "rel_error": None, "inside": None}
    return {"predicted": predicted, "actual": actual, "abs_error": actual - p, "rel_error": (actual - p) / actual,
            "inside": predicted.contains(actual)}


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Fit the sweep's results, predict and train the held-out run, and write report.md / fits.json / plots
    into the results directory. Returns the validation block (also stored in fits.json)."""
    from harness.analysis import fit_all, load_results, predict_at_budget, predict_loss, predict_many
    from harness.plots import render_plots
    from harness.report import write_report
    from harness.train import run

    acfg = analysis_config(cfg)
    if not Path(acfg.results).exists():
        raise HarnessError(f"{acfg.results} does not exist; run the sweep first (scripts/sweep.sh)")
    df = load_results(acfg.results, acfg)
    fits = fit_all(df, acfg)
    fits.predictions = predict_many(fits)
    C = target_budget(cfg)
    pred = predict_at_budget(fits, C)
    stars = [pred[a]["N"].value for a in APPROACHES if pred[a]["N"].value]
    if not stars:
        raise HarnessError("neither approach gives N* at the held-out budget; see the warnings in the analysis")
    n_star = math.exp(sum(math.log(n) for n in stars) / len(stars))  # geometric mean of the approaches' N*
    convention = str(acfg.params)
    name, g = choose_size(cfg, n_star, C, convention, vocab_hint(cfg))
    job = job_config_for(cfg, d_model=g.d_model, budget=C, seed=int(cfg.seed), role="holdout")
    job.train.threads = int(cfg.sweep.holdout.threads)
    print(f"[validate] held-out run: {name} ({param_counts(g)[f'params_{convention}']:,} params, N* ~ {n_star:,.0f}) "
          f"at {C:.3g} FLOPs ({pred['extrapolation']:.1f}x the largest sweep budget)", flush=True)
    record = run(job)
    N, D = float(record[f"params_{convention}"]), float(record["tokens"])
    actual = float(record[str(acfg.metric)]) if record["status"] == "ok" else float("nan")
    predictions = {"approach2": pred["approach2"]["loss"], "approach3": predict_loss(fits, N, D)}
    validation = {
        "budget": C, "multiple_of_largest": pred["extrapolation"], "model": name, "run_id": record["run_id"],
        "status": record["status"], "N": N, "D": D, "N_star": {a: pred[a]["N"] for a in APPROACHES},
        "D_star": {a: pred[a]["D"] for a in APPROACHES}, "metric": str(acfg.metric), "actual": actual,
        "approach3_at_optimum": pred["approach3"]["loss"],
        "comparison": {a: {"source": PREDICTION_SOURCES[a], **compare(actual, predictions[a])} for a in APPROACHES},
    }
    fits.validation = validation
    holdout = {"flops": float(record["flops"]), "loss": actual if math.isfinite(actual) else None,
               "label": f"held-out {name}", "predicted": predictions}
    files = write_report(fits, render_plots(fits, df, holdout), acfg.out, [validation_markdown(validation)])
    return {"validation": validation, "fits": fits, "files": files, "record": record}


def validation_markdown(v: dict[str, Any]) -> str:
    """The report section comparing the held-out run with what the fits predicted."""
    lines = [
        "## Held-out validation",
        "",
        f"Held-out run `{v['model']}` (N = {v['N']:,.0f}, D = {v['D']:,.0f} tokens) trained to "
        f"{v['budget']:.3g} FLOPs, {v['multiple_of_largest']:.1f}x the largest sweep budget; status "
        f"**{v['status']}**. It is never part of the fits it checks.",
        "",
        "| approach | predicted | interval | actual | abs error | rel error | inside |",
        "|---|---|---|---|---|---|---|",
    ]
    for a, c in v["comparison"].items():
        p = c["predicted"]
        lines.append(f"| {a} ({c['source']}) | {_cell(p.value)} | [{_cell(p.lo)}, {_cell(p.hi)}] | "
                     f"{_cell(c['actual'])} | {_cell(c['abs_error'], '+.4f')} | {_cell(c['rel_error'], '+.2%')} | "
                     f"{'-' if c['inside'] is None else ('yes' if c['inside'] else 'no')} |")
    ns = ", ".join(f"{a}: {x.value:,.0f}" for a, x in v["N_star"].items() if x.value)
    lines += ["", f"N* at this budget: {ns}; the family member nearest their geometric mean was trained, and "
              "Approach 3 re-predicted the loss for its exact (N, D)."]
    if v["status"] != "ok":
        lines += ["", f"**The held-out run {v['status']}**: rerun the same command to resume it."]
    return "\n".join(lines)


def _cell(x: Any, spec: str = ".4f") -> str:
    """A table cell: the number formatted, or '-' when missing or not finite."""
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)
