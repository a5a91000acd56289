"""Held-out validation: fit the sweep (and backtest it), predict a ladder of larger runs, train them, compare,
write the report.

The ladder is sweep.holdout.multiples x the largest sweep budget (`multiple`: a one-element alias), or absolute
FLOPs in sweep.holdout.budgets (`budget`). Each held-out run is trained through the normal trainer with
role=holdout, so it is resumable like any run and the analysis never fits it (rows with role=holdout are excluded
from every fit). Several runs at growing extrapolation follow Bhagia et al. 2024's model ladders (OLMo).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from harness.adapt import adapt_markdown, analysis_settings
from harness.analysis.backtest import compare
from harness.analysis.estimate import format_cell, format_flag
from harness.analysis.noise import NOISE_Z, noise_floor, prediction_interval, wild_limit, within_noise
from harness.confcheck import check_holdout, check_train_settings, holdout_seeds, target_budgets
from harness.confcheck import holdout_multiples as holdout_multiples  # re-exported beside target_budgets
from harness.counting import flops_per_token, param_counts
from harness.data import load_corpus
from harness.errors import HarnessError
from harness.fsutil import say
from harness.lr_rule import lr_source
from harness.plan import family_members, job_config_for, plan_steps, results_dir, sized_run, vocab_hint
from harness.repetition import HOLDOUT_FIX, check_repetition
from harness.results import check_compatible, recipe_of
from harness.shape import GPTConfig

APPROACHES = ("approach2", "approach3")


def analysis_config(cfg: DictConfig) -> DictConfig:
    """conf/analyze.yaml merged with the sweep config's `analysis` overrides, pointed at this results dir."""
    acfg = analysis_settings(cfg)
    acfg.results = str(results_dir(cfg) / "results.csv")
    acfg.out = str(results_dir(cfg))
    return acfg


def target_budget(cfg: DictConfig) -> float:
    """The first (smallest) held-out budget of target_budgets: the whole ladder when it has one run."""
    return target_budgets(cfg)[0]


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
    "approach2": "frontier L_opt(C) at the held-out budget, raised along the IsoFLOP parabola from N* to the trained N",
    "approach3": "L(N, D) at the trained (N, D)",
}


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Fit the sweep's results (with the leave-future-out backtest), predict and train each held-out run of the
    ladder, and write report.md / fits.json / plots into the results directory. Returns {validation (one entry
    per held-out run, also fits.validation), fits, files, records}."""
    from harness.analysis import fit_all, load_results, predict_many
    from harness.analysis.backtest import attach_backtest
    from harness.curves import curves_plots
    from harness.plots import render_plots
    from harness.report import write_report
    from harness.results import read_records

    targets = check_holdout(cfg)  # bad budgets, multiples and seeds fail here, before anything is fitted or trained
    check_train_settings(cfg)  # as do train.* values out of range (the sweep's dry run applies both checks too)
    check_compatible(results_dir(cfg), recipe=recipe_of(cfg, lr_source(cfg.train.lr, cfg.train.get("lr_rule"))))
    acfg = analysis_config(cfg)
    if not Path(acfg.results).exists():
        raise HarnessError(f"{acfg.results} does not exist; run the sweep first (scripts/sweep.sh)")
    df = load_results(acfg.results, acfg)
    fits = fit_all(df, acfg)
    fits.predictions = predict_many(fits)
    attach_backtest(fits, df, acfg)
    picks = [choose_holdout(cfg, acfg, fits, C) for C in targets]
    check_holdout_repetition(cfg, picks)  # every held-out run within data.max_epochs before the first one trains
    entries, records, holdouts = [], [], []
    for i, pick in enumerate(picks):
        entry, runs, holdout = _holdout_run(cfg, acfg, fits, pick, f"{i + 1}/{len(targets)}")
        entries.append(entry)
        records.extend(runs)
        holdouts.append(holdout)
    fits.validation = entries
    fits.warnings.extend(backtest_conflicts(entries, fits.backtest.get("summary") or []))
    plots = render_plots(fits, df, holdouts) + curves_plots(results_dir(cfg), read_records(results_dir(cfg)))
    files = write_report(fits, plots, acfg.out, [validation_markdown(entries), *adapt_markdown(results_dir(cfg))])
    return {"validation": entries, "fits": fits, "files": files, "records": records}


@dataclass(frozen=True)
class HeldOut:
    """One held-out run of the ladder, chosen before any is trained: its budget, the fits' prediction there, N*
    (the geometric mean of the approaches') and the family member nearest it."""

    budget: float
    pred: dict[str, Any]
    n_star: float
    name: str
    gcfg: GPTConfig


def choose_holdout(cfg: DictConfig, acfg: DictConfig, fits: Any, C: float) -> HeldOut:
    """Predict one held-out budget and pick the family member nearest N* there (nothing is trained)."""
    from harness.analysis import predict_at_budget

    pred = predict_at_budget(fits, C)
    stars = [pred[a]["N"].value for a in APPROACHES if pred[a]["N"].value]
    if not stars:
        raise HarnessError("neither approach gives N* at the held-out budget; see the warnings in the analysis")
    n_star = statistics.geometric_mean(stars)
    name, g = choose_size(cfg, n_star, C, str(acfg.params), vocab_hint(cfg))
    return HeldOut(C, pred, n_star, name, g)


def check_holdout_repetition(cfg: DictConfig, picks: list[HeldOut]) -> None:
    """The sweep's repetition rule (harness.repetition) on the held-out runs, once their sizes and tokens are known
    and before any trains: a warning above one epoch of the train split, a HarnessError naming each run and its
    epochs above data.max_epochs (a held-out run far out on a small corpus would measure memorisation)."""
    corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
    runs = [dataclasses.replace(sized_run(cfg, p.budget, p.name, p.gcfg, flops_per_token(p.gcfg)), index=i + 1)
            for i, p in enumerate(picks)]
    for w in check_repetition(runs, len(corpus.train), cfg.data, "held-out", HOLDOUT_FIX):
        say(f"warning: {w}", sys.stderr)


def _holdout_run(cfg: DictConfig, acfg: DictConfig, fits: Any, pick: HeldOut,
                 which: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Train one chosen held-out run (role=holdout, resumable, never fitted) and compare it with the fits'
    prediction: (validation entry, the run's record, the plots' held-out point)."""
    from harness.analysis import approach2_loss_at, predict_loss
    from harness.train import run

    C, pred, n_star, name, g = pick.budget, pick.pred, pick.n_star, pick.name, pick.gcfg
    convention = str(acfg.params)
    print(f"[validate] held-out run {which}: {name} ({param_counts(g)[f'params_{convention}']:,} params, N* ~ "
          f"{n_star:,.0f}) at {C:.3g} FLOPs ({pred['extrapolation']:.1f}x the largest sweep budget)", flush=True)
    records = [run(_holdout_job(cfg, g.d_model, C, seed)) for seed in holdout_seeds(cfg)]
    record = records[0]
    N, D = float(record[f"params_{convention}"]), float(record["tokens"])
    actuals = [float(r[str(acfg.metric)]) for r in records if r["status"] == "ok"]
    actual = float(np.mean(actuals)) if len(actuals) == len(records) else float("nan")
    predictions = {"approach2": approach2_loss_at(fits, C, N), "approach3": predict_loss(fits, N, D)}
    floor = holdout_noise(fits.noise, actuals, C)
    if floor.get("disagree"):
        fits.warnings.append(
            f"held-out seeds disagree at {C:.3g} FLOPs ({name}): val {', '.join(f'{a:.4f}' for a in actuals)}, an "
            f"ln(loss) range of {floor['rel_range']:.2%} (beyond {floor['disagree_limit']:.1%}: a stalled or broken "
            "seed, not seed noise); the comparison uses their mean, so read it with the seeds beside it")
    entry = {
        "budget": C, "multiple_of_largest": pred["extrapolation"], "model": name, "run_id": record["run_id"],
        "status": _ladder_status(records), "N": N, "D": D, "N_star": {a: pred[a]["N"] for a in APPROACHES},
        "D_star": {a: pred[a]["D"] for a in APPROACHES}, "metric": str(acfg.metric), "actual": actual,
        "seeds": [int(r["seed"]) for r in records], "actuals": actuals, "noise": floor,
        "approach2_at_optimum": pred["approach2"]["loss"], "approach3_at_optimum": pred["approach3"]["loss"],
        "comparison": {a: compare_with_noise(actual, predictions[a], floor, PREDICTION_SOURCES[a], float(acfg.level))
                       for a in APPROACHES},
    }
    return entry, records, _plot_point(entry, float(record["flops"]), predictions)


def _plot_point(entry: dict[str, Any], flops: float, predictions: dict[str, Any]) -> dict[str, Any]:
    """A held-out run as the plots draw it: its FLOPs and loss, each approach's prediction and prediction interval."""
    actual = entry["actual"]
    return {"flops": flops, "loss": actual if math.isfinite(actual) else None, "label": f"held-out {entry['model']}",
            "predicted": predictions,
            "prediction_interval": {a: entry["comparison"][a]["prediction_interval"] for a in APPROACHES}}


def _holdout_job(cfg: DictConfig, d_model: int, C: float, seed: int) -> DictConfig:
    """The job config of one held-out run (role=holdout, the held-out thread count)."""
    job = job_config_for(cfg, d_model=d_model, budget=C, seed=seed, role="holdout")
    job.train.threads = int(cfg.sweep.holdout.threads)
    return job


def _ladder_status(records: list[dict[str, Any]]) -> str:
    """ok when every seed of a held-out run finished ok, else the first other status."""
    bad = [r["status"] for r in records if r["status"] != "ok"]
    return bad[0] if bad else "ok"


def holdout_noise(sweep_noise: dict[str, Any], actuals: list[float], C: float) -> dict[str, Any]:
    """The seed noise to judge a held-out error by: the held-out run's own seeds when it has >= 2 (sd of ln(loss)),
    else the sweep's repeated points; `rel_sd_of_mean` divides by sqrt(seeds), since `actual` is their mean.
    Seeds whose ln(loss) range passes noise.wild_limit (as a sweep point's would) are marked `disagree`."""
    k = len(actuals)
    if k >= 2:
        sd, spread = float(np.std(np.log(actuals), ddof=1)), float(np.ptp(np.log(actuals)))
        limit = wild_limit(noise_floor(sweep_noise, C))
        return {"rel_sd": sd, "rel_sd_of_mean": sd / math.sqrt(k), "source": f"{k} held-out seeds",
                "rel_range": spread, "disagree": spread > limit, "disagree_limit": limit}
    sd = noise_floor(sweep_noise, C)
    if sd is None:
        return {"rel_sd": None, "rel_sd_of_mean": None, "source": "not measured (one seed everywhere)"}
    assumed = sweep_noise.get("assumed")  # only a table without repeats carries one (noise.seed_noise)
    return {"rel_sd": sd, "rel_sd_of_mean": sd,
            "source": f"assumed from {assumed['source']}" if assumed else "the sweep's repeated points (pooled)"}


def compare_with_noise(actual: float, predicted: Any, floor: dict[str, Any], source: str,
                        level: float) -> dict[str, Any]:
    """compare() plus the seed noise of the actual value: whether the error is within it, and the prediction
    interval (the law's interval widened by that noise: where a run, not the mean over seeds, should land)."""
    c = compare(actual, predicted)
    sd = floor["rel_sd_of_mean"]
    pi = prediction_interval(predicted, sd, level)
    inside = None if pi is None or c["rel_error"] is None else pi.contains(actual)
    return {"source": source, **c, "within_noise": within_noise(c["rel_error"], sd), "prediction_interval": pi,
            "inside_prediction_interval": inside}


# The backtest series that judges each approach's loss inside the sweep.
BACKTEST_SERIES = {"approach2": "frontier", "approach3": "approach3"}


def backtest_conflicts(entries: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[str]:
    """A warning per approach whose held-out runs all miss on the side opposite to its backtest's sign bias, at
    least one beyond seed noise: a sign the extrapolation alone does not explain (their LR, schedule or warmup may
    differ from the sweep's points, or the model family past the sweep)."""
    out = []
    for a, series in BACKTEST_SERIES.items():
        lean = next((s for s in summary if s["approach"] == series and s["quantity"] == "loss" and s.get("bias")), None)
        errs = [e["comparison"][a] for e in entries if e["comparison"][a]["rel_error"] is not None]
        if lean is not None and _against(errs, lean["bias"]):
            out.append(_conflict_text(a, series, errs, lean))
    return out


def _against(errs: list[dict[str, Any]], bias: str) -> bool:
    """Every error on the side opposite to the backtest's lean, and not all of them inside seed noise."""
    sign = -1 if bias == "over-predicts" else 1  # the side the backtest's errors lean to
    return bool(errs) and all(c["rel_error"] * sign < 0 for c in errs) and not all(c.get("within_noise") for c in errs)


def _conflict_text(a: str, series: str, errs: list[dict[str, Any]], lean: dict[str, Any]) -> str:
    """The warning: both signs, both numbers, and where to look."""
    side = "above" if lean["bias"] == "over-predicts" else "below"
    shown = ", ".join(f"{c['rel_error']:+.2%}" for c in errs)
    return (f"held-out runs: every one lands {side} {a}'s prediction ({shown}), while the backtest finds its {series} "
            f"{lean['bias']} loss inside the sweep (mean error {lean['mean_rel_error']:+.1%}). A law that bends the "
            "wrong way misses on the same side further out, so this points at a difference between the held-out runs "
            "and the sweep's points rather than at the extrapolation: check that they share its recipe (e.g. WSD "
            "chains take the LR rule at their branches' geometric-mean D, within train.chain_lr_tolerance; a "
            "held-out run takes its own) and its model family's shape")


def ladder_coverage(entries: list[dict[str, Any]], key: str = "inside") -> dict[str, tuple[int, int]]:
    """Per approach: (k, n) = how many of the n held-out runs with an interval fell inside it (key "inside": the
    law's interval; "inside_prediction_interval": the law's widened by each run's seed noise)."""
    out = {}
    for a in APPROACHES:
        judged = [e["comparison"][a].get(key) for e in entries if e["comparison"][a].get(key) is not None]
        out[a] = (int(sum(judged)), len(judged))
    return out


def coverage_text(entries: list[dict[str, Any]]) -> str:
    """'approach2 2 of 2 inside; approach3 2 of 2 inside', and the same for the prediction intervals where the
    runs' seed noise is known."""
    text = "; ".join(f"{a} {k} of {m} inside" for a, (k, m) in ladder_coverage(entries).items())
    wide = ladder_coverage(entries, "inside_prediction_interval")
    if any(m for _, m in wide.values()):
        text += " (with each run's seed noise added: " + "; ".join(f"{a} {k} of {m}" for a, (k, m) in wide.items()) + ")"
    return text


def validation_markdown(entries: list[dict[str, Any]]) -> str:
    """The report section comparing each held-out run of the ladder with what the fits predicted."""
    n = len(entries)
    lines = [
        "## Held-out validation",
        "",
        f"{n} held-out run{'s' if n != 1 else ''} (a ladder in the manner of Bhagia et al. 2024's OLMo model "
        "ladders), each trained to its budget with the family member nearest the predicted N* and never part of "
        "the fits it checks. Error = (actual - predicted) / actual.",
        "",
        "| run | budget | x largest | N | D | status | approach | predicted | interval | actual | abs error | "
        "rel error | inside | seed noise (1 sd) | within noise | prediction interval | inside it |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in entries:
        lines += [_validation_row(v, a, c) for a, c in v["comparison"].items()]
    lines += ["", f"Interval coverage across the ladder: {coverage_text(entries)}.", "", *_noise_lines(entries), ""]
    for v in entries:
        ns = ", ".join(f"{a}: {x.value:,.0f}" for a, x in v["N_star"].items() if x.value)
        lines.append(f"- `{v['model']}` at {v['budget']:.3g} FLOPs: N* {ns}; the family member nearest their "
                     "geometric mean was trained, and Approach 3 re-predicted the loss for its exact (N, D).")
        if v["status"] != "ok":
            lines.append(f"  **The held-out run {v['status']}**: rerun the same command to resume it.")
    lines += ["", "Sources: " + "; ".join(f"{a}: {s}" for a, s in PREDICTION_SOURCES.items()) + "."]
    return "\n".join(lines)


def _noise_lines(entries: list[dict[str, Any]]) -> list[str]:
    """Where each held-out run's seed-noise figure comes from (an error inside it is not a measurable miss)."""
    out = [f"Seed noise: `{v['model']}` at {v['budget']:.3g}: {v['noise']['source']}"
           + (f", seeds {v['seeds']} gave {', '.join(format_cell(x) for x in v['actuals'])}" if len(v["seeds"]) > 1 else "")
           for v in entries if v.get("noise")]
    if out:
        out.append(f"An error within {NOISE_Z} sd of the noise of the actual value (the sd over sqrt(seeds), as it "
                   "is a mean of seeds) is marked `within noise`: it is smaller than what a reseed would move. The "
                   "law's interval is for the mean loss at that (N, D); the prediction interval adds the held-out "
                   "value's own seed noise (in quadrature, in ln(loss), at the same level), so it is where the "
                   "held-out value itself should land.")
    return out


def _validation_row(v: dict[str, Any], a: str, c: dict[str, Any]) -> str:
    """One table row: a held-out run's prediction by one approach against its actual loss."""
    p = c["predicted"]
    inside = format_flag(c["inside"])
    sd = (v.get("noise") or {}).get("rel_sd_of_mean")
    pi = c.get("prediction_interval")
    wide = "- | -" if pi is None else f"[{format_cell(pi.lo)}, {format_cell(pi.hi)}] | {format_flag(c.get('inside_prediction_interval'))}"
    noise = f"{format_cell(sd, '.2%')} | {format_flag(c.get('within_noise'))} | {wide} |"
    return (f"| `{v['model']}` | {v['budget']:.3g} | {v['multiple_of_largest']:.1f}x | {v['N']:,.0f} | "
            f"{v['D']:,.0f} | {v['status']} | {a} | {format_cell(p.value)} | [{format_cell(p.lo)}, {format_cell(p.hi)}] | "
            f"{format_cell(c['actual'])} | {format_cell(c['abs_error'], '+.4f')} | {format_cell(c['rel_error'], '+.2%')} | {inside} | {noise}")
