"""The last step of a size-ladder sweep (sweep.kind=ladder): fit every law the ladder's runs identify (L(N) above
all; harness.analysis.tables), predict the held-out size at the ladder's data rule, train it (role=holdout: never
fitted, resumable like any run) and compare, then write report.md, fits.json and the plots (harness.table_report).
A held-out check of a fitted law in the manner of Bhagia et al. 2024's model ladders (OLMo).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from harness.analysis.backtest import compare
from harness.analysis.context import Settings
from harness.analysis.estimate import format_cell, format_flag
from harness.analysis.tables import fit_table
from harness.analysis.targets import model_target
from harness.analysis.units import load_table
from harness.counting import param_counts
from harness.data import load_corpus
from harness.errors import HarnessError
from harness.fsutil import say
from harness.ladder import Rung, ladder_job, rung_budget, rung_tokens, rungs
from harness.plan import PlannedRun, model_config, vocab_hint
from harness.repetition import check_repetition
from harness.table_report import render_plots, summary_lines, write_table_report

LADDER_HOLDOUT_FIX = "a smaller sweep.holdout.d_model or sweep.tokens_per_param"


def validation_markdown(target: dict[str, Any], rows: list[dict[str, Any]], name: str, status: str) -> str:
    """The report section: the held-out size's predicted loss per law against what it measured."""
    lines = ["## Held-out size", "",
             f"`{name}` ({target['N']:,.0f} params, {target['D']:,.0f} tokens) was trained after the fit at the "
             f"ladder's data rule and never fitted (status {status}). Error = (actual - predicted) / actual.", "",
             "| law | predicted | interval | actual | rel error | inside |", "|---|---|---|---|---|---|"]
    for r in rows:
        p, inside = r["predicted"], format_flag(r["inside"])
        lines.append(f"| {r['law']} | {format_cell(p.value)} | [{format_cell(p.lo)}, {format_cell(p.hi)}] | "
                     f"{format_cell(r['actual'])} | {format_cell(r['rel_error'], '+.2%')} | {inside} |")
    return "\n".join(lines)


def _check_epochs(cfg: DictConfig, holdout: Rung) -> None:
    """The sweep's repetition rule (harness.repetition) on the held-out size, before it trains: a warning above
    one epoch of the train split, a HarnessError above data.max_epochs."""
    train_tokens = len(load_corpus(cfg.data, int(cfg.model.seq_len)).train)
    run = PlannedRun(1, rung_budget(cfg, holdout), int(cfg.seed), holdout.d_model, holdout.name, holdout.params,
                     rung_tokens(cfg, holdout), 0, 0.0)
    for w in check_repetition([run], train_tokens, cfg.data, "held-out", LADDER_HOLDOUT_FIX):
        say(f"warning: {w}", sys.stderr)


def _train_holdout(cfg: DictConfig, vocab: int) -> tuple[dict[str, Any], str]:
    """Train (or find) the held-out rung; returns (its record, its name)."""
    from harness.train import run

    _, holdout = rungs(cfg, vocab)
    _check_epochs(cfg, holdout)
    job = ladder_job(cfg, holdout, int(cfg.seed), "holdout")
    job.train.threads = int(cfg.sweep.holdout.get("threads", 0))
    say(f"[validate] held-out size {holdout.name} ({holdout.params:,} params, {rung_tokens(cfg, holdout):,} tokens)")
    return run(job), holdout.name


def validate_ladder(cfg: DictConfig, acfg: DictConfig) -> dict[str, Any]:
    """Fit the ladder, predict and train the held-out size, compare, write the report into the results dir;
    returns {fits, validation, files, lines} (lines: the terminal summary)."""
    if not Path(str(acfg.results)).exists():
        raise HarnessError(f"{acfg.results} does not exist; run the ladder first (scripts/sweep.sh sweep=ladder)")
    df = load_table(str(acfg.results), acfg)
    tf = fit_table(df, Settings.from_cfg(acfg))
    if "L(N)" not in tf.laws:
        raise HarnessError("the ladder's runs give no L(N) (see `not fitted` in the analysis); train >= 3 sizes")
    vocab = vocab_hint(cfg)
    record, name = _train_holdout(cfg, vocab)
    convention = str(acfg.params)
    _, g = model_config(rungs(cfg, vocab)[1].node, int(record.get("vocab_size", vocab)))
    N = float(record.get(f"params_{convention}", param_counts(g)[f"params_{convention}"]))
    D = float(record["tokens"])
    target = model_target(tf, N, D, float(tf.settings["level"]))
    actual = float(record[str(acfg.metric)]) if record["status"] == "ok" else math.nan
    target["actual"] = actual if math.isfinite(actual) else None
    rows = [{"law": r["law"], **compare(actual, r["loss"])} for r in target["predictions"]]
    tf.targets = {"C": [], "model": target, "validation": rows}
    used = df[df["role"] != "holdout"]
    files = write_table_report(tf, render_plots(tf, used[used["status"] == "ok"]), str(acfg.out),
                               df.attrs.get("units"), [validation_markdown(target, rows, name, record["status"])])
    lines = summary_lines(tf) + [f"held-out {name}: actual {acfg.metric} = {format_cell(actual)}"] + [
        f"  {r['law']}: predicted {r['predicted'].format(4)} -> error {format_cell(r['rel_error'], '+.2%')}, "
        f"{'-' if r['inside'] is None else ('inside' if r['inside'] else 'OUTSIDE')} the interval" for r in rows]
    return {"fits": tf, "validation": rows, "files": files, "lines": lines, "status": record["status"]}
