"""Adaptive IsoFLOP grids: extra sizes where a budget's parabola minimum is not bracketed, trained in rounds.

Round 0 is the planned grid (harness.plan.plan_sweep). Round r > 0 fits every budget's parabola to the runs of the
rounds before it exactly as the analysis will (harness.analysis.isoflop: Huber IRLS in log N, the same edge /
outside / downward flags and settings), and for each budget that is not usable adds up to
sweep.adapt.extra_per_round family sizes beyond the sampled range on the side the data points to, continuing the
budget's own log-N spacing. It stops when every budget is usable, after sweep.adapt.max_rounds rounds, or when no
size can be added (outside sweep.d_model_min/max, fewer than sweep.min_steps steps, more than data.max_epochs
passes over the train split), and says which. Parabola minima at the grid's edge are biased (Open-Athena's
scaling-law-analysis; Hoffmann et al. 2022 centre their grids on the optimum), hence bracketing them.

Round r's plan is a pure function of the config and the records of rounds < r (as the LR sweep's rounds,
harness.tune), so every parallel job of a round computes the same plan and a killed sweep resumes. Extra runs are
ordinary sweep runs (role=sweep), so the analysis and the held-out stage fit them with the planned grid.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from harness import CONF_DIR
from harness.chain import sweep_jobs
from harness.counting import flops_per_token, param_counts
from harness.data import load_corpus
from harness.errors import HarnessError
from harness.fsutil import atomic_write
from harness.plan import (
    PlannedRun,
    family_members,
    job_config,
    results_dir,
    run_id_of,
    sized_run,
    sweep_seeds,
    vocab_hint,
)
from harness.repetition import epochs, max_epochs
from harness.results import check_compatible, read_records
from harness.schedule import schedule_of

if TYPE_CHECKING:  # the analysis stack (pandas, the fits) loads only when a round is classified: every sweep job
    import pandas as pd  # imports this module, and most of them only train

    from harness.analysis.context import Settings

SMALLER, LARGER = "smaller", "larger"
ADAPT_FILE = "adapt.json"  # each adaptive round's extra runs and verdicts, for the report


@dataclass(frozen=True)
class Verdict:
    """One budget after a round: its parabola's status, the side its optimum points to and what was added."""

    budget: float
    status: str  # ok | edge | outside | downward (harness.analysis.isoflop.STATUS_NAMES)
    sides: tuple[str, ...] = ()
    added: tuple[str, ...] = ()  # model names of the extra sizes
    why_not: str = ""  # why nothing (or less than asked) could be added

    def line(self) -> str:
        """One line for the round's plan table."""
        if self.status == "ok":
            return f"budget {self.budget:.3g}: ok (minimum bracketed)"
        side = " and ".join(self.sides)
        text = f"budget {self.budget:.3g}: {self.status}, optimum on the {side} side"
        if self.added:
            text += f" -> adding {', '.join(self.added)}"
        return text + (f" ({self.why_not})" if self.why_not else "")


@dataclass(frozen=True)
class AdaptSettings:
    """sweep.adapt: rounds of extra sizes after the planned grid, and extra sizes per budget per round."""

    max_rounds: int = 0
    extra_per_round: int = 2

    @classmethod
    def from_sweep(cls, sc: DictConfig) -> AdaptSettings:
        """sweep.adapt (absent: off), refusing negative rounds or fewer than one extra size."""
        ac = sc.get("adapt") or {}
        try:
            out = cls(int(ac.get("max_rounds", 0) or 0), int(ac.get("extra_per_round", 2)))
        except (TypeError, ValueError):
            raise HarnessError("sweep.adapt.max_rounds and sweep.adapt.extra_per_round must be integers, e.g. "
                               "sweep.adapt.max_rounds=2 sweep.adapt.extra_per_round=2") from None
        if out.max_rounds < 0 or out.extra_per_round < 1:
            raise HarnessError(f"sweep.adapt.max_rounds={out.max_rounds} must be >= 0 (0: off) and "
                               f"sweep.adapt.extra_per_round={out.extra_per_round} >= 1")
        return out


def adapt_rounds(cfg: DictConfig) -> int:
    """How many rounds scripts/sweep.sh plans: the grid, max_rounds adaptive rounds, and one last check that
    trains nothing and says whether every budget is now usable (1 when adaptation is off)."""
    rounds = AdaptSettings.from_sweep(cfg.sweep).max_rounds
    return rounds + 2 if rounds else 1


def classify(rows: pd.DataFrame, settings: Settings) -> list[tuple[float, int, tuple[str, ...]]]:
    """(budget, status code, sides to extend) per budget of rows (params, tokens, flops, loss, budget), with the
    analysis' parabola fit: edge/outside point to the side of the vertex, downward to the side of the lowest
    loss (both sides when it is inside)."""
    from harness.analysis.isoflop import DOWNWARD, EDGE, OK, OUTSIDE, build_layout, fit_parabolas

    rows = rows.reset_index(drop=True)
    layout = build_layout(rows)
    fits = fit_parabolas(layout, None, settings.huber_k, settings.irls_iters, settings.exclude_edge)
    out = []
    for j, budget in enumerate(layout.budgets):
        status, usable = int(fits.status[0, j]), bool(fits.usable[0, j])
        g = rows[rows["budget"] == budget]
        ln_n = np.log(g["params"].to_numpy(float))
        lo, hi = float(ln_n.min()), float(ln_n.max())
        if usable or status not in (EDGE, OUTSIDE, DOWNWARD):
            out.append((float(budget), OK if usable else status, ()))
            continue
        if status == DOWNWARD:
            mean = g.groupby("params")["loss"].mean()
            best = math.log(float(mean.idxmin()))
            sides = (SMALLER,) if best == lo else (LARGER,) if best == hi else (SMALLER, LARGER)
        else:
            sides = (SMALLER,) if float(fits.lnN_opt[0, j]) < (lo + hi) / 2 else (LARGER,)
        out.append((float(budget), status, sides))
    return out


@dataclass
class Candidates:
    """What an extra size must satisfy: the family inside d_model_min..max, min_steps, the epoch limit."""

    cfg: DictConfig
    vocab: int
    train_tokens: int

    def members(self) -> list[tuple[str, Any]]:
        """Family members inside sweep.d_model_min..d_model_max."""
        sc = self.cfg.sweep
        return family_members(self.cfg.model, self.vocab, int(sc.d_model_min), int(sc.d_model_max))

    def run(self, budget: float, name: str, g: Any) -> PlannedRun | str:
        """The planned run of one size at one budget (seed 0, as harness.plan plans it), or why it cannot be one."""
        pr = sized_run(self.cfg, budget, name, g, flops_per_token(g))
        if pr.steps < int(self.cfg.sweep.min_steps):
            return f"larger sizes train fewer than sweep.min_steps={self.cfg.sweep.min_steps} steps"
        limit = max_epochs(self.cfg.data)
        if epochs(pr.tokens, self.train_tokens) > limit:
            return f"smaller sizes would repeat the train split more than data.max_epochs={limit:g} times"
        return pr


def _beyond(budget_runs: list[PlannedRun], side: str, cands: Candidates) -> tuple[list[PlannedRun], str]:
    """Every family size beyond one end of a budget's sizes that can be a run there, and the first reason one
    could not."""
    tried = sorted({pr.params for pr in budget_runs})
    pool: list[PlannedRun] = []
    why = ""
    for name, g in cands.members():
        n = param_counts(g)["params_total"]
        if n < tried[0] if side == SMALLER else n > tried[-1]:
            got = cands.run(budget_runs[0].budget, name, g)
            if isinstance(got, str):
                why = why or got
            else:
                pool.append(got)
    return pool, why


def extend(budget_runs: list[PlannedRun], side: str, count: int, cands: Candidates) -> tuple[list[PlannedRun], str]:
    """Up to `count` sizes beyond one end of a budget's sizes, one log-N grid step apart (the budget's mean
    spacing), each the nearest family member not tried yet; and why fewer, if fewer."""
    ln = sorted({math.log(pr.params) for pr in budget_runs})
    step = (ln[-1] - ln[0]) / max(1, len(ln) - 1)
    sign, edge = (-1, ln[0]) if side == SMALLER else (1, ln[-1])
    pool, why = _beyond(budget_runs, side, cands)
    chosen: list[PlannedRun] = []
    for i in range(1, count + 1):
        free = [pr for pr in pool if pr not in chosen]
        if not free:
            break
        target = edge + sign * i * step
        chosen.append(min(free, key=lambda pr: abs(math.log(pr.params) - target)))
    if len(chosen) == count:
        return chosen, ""
    bound = "sweep.d_model_min" if side == SMALLER else "sweep.d_model_max"
    return chosen, why or f"no {side} family size inside {bound}"


def _table(runs: list[PlannedRun], rows: Rows) -> pd.DataFrame:
    """The finished rows of the runs tried so far (diverged or failed runs: left out, as the analysis does)."""
    import pandas as pd

    out = []
    for pr in runs:
        got = rows.row(pr)
        if got is not None:
            out.append({"params": got[0], "tokens": got[1], "flops": got[2], "loss": got[3], "budget": pr.budget})
    return pd.DataFrame(out, columns=["params", "tokens", "flops", "loss", "budget"])


def adapt_step(tried: list[PlannedRun], rows: Rows, settings: Settings, extra: int,
               cands: Candidates | None) -> tuple[list[Verdict], list[PlannedRun]]:
    """One round: classify every budget from the runs tried so far and (cands given) plan its extra sizes."""
    from harness.analysis.isoflop import STATUS_NAMES

    by_budget: dict[float, list[PlannedRun]] = {}
    for pr in tried:
        by_budget.setdefault(pr.budget, []).append(pr)
    table = _table(tried, rows)
    table = table[table.groupby("budget")["params"].transform("nunique") >= 3]
    verdicts, new = [], []
    for budget, status, sides in classify(table, settings) if len(table) else []:
        added: list[PlannedRun] = []
        why = ""
        for k, side in enumerate(sides if cands else ()):
            share = extra // len(sides) + (1 if k < extra % len(sides) else 0)
            got, reason = extend(by_budget[budget], side, max(1, share), cands)
            added += got
            why = why or reason
        verdicts.append(Verdict(budget, STATUS_NAMES[status], sides, tuple(pr.name for pr in added), why))
        new += added
    return verdicts, new


def plan_round(cfg: DictConfig, rnd: int, grid: list[PlannedRun], rows: Rows, settings: Settings,
               cands: Candidates) -> tuple[list[PlannedRun], list[str]]:
    """The runs of adaptive round rnd >= 1 (each seed of sweep.seeds, longest first) and its notes, replaying
    rounds 1..rnd-1 from the records; a run of an earlier round without a record stops with the fix."""
    ad = AdaptSettings.from_sweep(cfg.sweep)
    tried, seeds = list(grid), sweep_seeds(cfg)
    rows.register(grid)
    verdicts: list[Verdict] = []
    new: list[PlannedRun] = []
    for k in range(1, rnd + 1):
        missing = [pr for pr in tried if not rows.done(pr)]
        if missing:
            raise HarnessError(f"adaptive round {k}: {len(missing)} run(s) of the rounds before it have no record "
                               f"(e.g. {missing[0].name} at {missing[0].budget:.3g} FLOPs); rerun scripts/sweep.sh "
                               "with the same arguments to finish them")
        last = k > ad.max_rounds
        verdicts, base = adapt_step(tried, rows, settings, ad.extra_per_round, None if last else cands)
        new = [dataclasses.replace(pr, seed=s) for pr in base for s in seeds]
        new = [dataclasses.replace(pr, index=i) for i, pr in enumerate(_longest_first(new))]
        rows.register(new)
        tried += new
    return new, round_notes(verdicts, rnd, ad)


def _longest_first(runs: list[PlannedRun]) -> list[PlannedRun]:
    """A round's runs in launch order: longest (estimated) first."""
    return sorted(runs, key=lambda pr: (-pr.est_seconds, pr.budget, pr.params, pr.seed))


def round_notes(verdicts: list[Verdict], rnd: int, ad: AdaptSettings) -> list[str]:
    """The round's verdict lines and a closing line: what is added and why, or why the grid stops here."""
    lines = [f"adaptive round {rnd}: {v.line()}" for v in verdicts]
    bad = [v for v in verdicts if v.status != "ok"]
    added = sum(len(v.added) for v in verdicts)
    if not bad:
        lines.append(f"adaptive round {rnd}: every budget has a bracketed minimum; no extra sizes")
    elif rnd > ad.max_rounds:
        lines.append(f"adaptive round {rnd}: {len(bad)} budget(s) still not usable after sweep.adapt.max_rounds="
                     f"{ad.max_rounds} round(s); the analysis leaves them out (raise sweep.adapt.max_rounds, or "
                     "re-centre the grid with sweep.tokens_per_param)")
    elif not added:
        lines.append(f"adaptive round {rnd}: {len(bad)} budget(s) not usable and no size can be added (see above)")
    else:
        lines.append(f"adaptive round {rnd}: {added} extra size(s) (at most sweep.adapt.extra_per_round="
                     f"{ad.extra_per_round} per budget per round, round {rnd} of sweep.adapt.max_rounds={ad.max_rounds})")
    return lines


@dataclass
class Rows:
    """The fit row of each run from a results directory's records, found by the run_id the run trains under."""

    records: dict[str, dict[str, Any]]
    run_id: Callable[[PlannedRun], str]
    params: str = "total"  # the analysis' parameter convention (params_<convention>)
    metric: str = "val_bpb"
    register: Callable[[list[PlannedRun]], None] = lambda runs: None  # one round's runs (WSD: chained together)

    def row(self, pr: PlannedRun) -> tuple[float, float, float, float] | None:
        """(params, tokens, flops, loss) of a finished ok run with finite values, else None."""
        rec = self.records.get(self.run_id(pr))
        if rec is None or rec.get("status") != "ok":
            return None
        vals = [float(rec[k]) for k in (f"params_{self.params}", "tokens", "flops", self.metric)]
        return (vals[0], vals[1], vals[2], vals[3]) if all(map(math.isfinite, vals)) else None

    def done(self, pr: PlannedRun) -> bool:
        """Whether the run has a record at all (diverged and failed runs are done but never fitted)."""
        return self.run_id(pr) in self.records


def record_rows(cfg: DictConfig, records: dict[str, dict[str, Any]], fingerprint: str, vocab: int,
                acfg: Any) -> Rows:
    """Rows keyed by each run's job config (harness.plan.job_config) on this corpus, read as the analysis reads
    them (acfg.params, acfg.metric)."""
    cache: dict[tuple[float, int, int], str] = {}

    def rid(pr: PlannedRun) -> str:
        key = (pr.budget, pr.d_model, pr.seed)
        if key not in cache:
            cache[key] = run_id_of(job_config(cfg, pr), fingerprint, vocab)
        return cache[key]

    def register(runs: list[PlannedRun]) -> None:
        """Under WSD a run's id is that of its chain's branch (warmup and LR length shared with the runs of its
        round, harness.chain), so the ids of one round's runs are derived together, as the sweep trains them."""
        if schedule_of(cfg.train).wsd and runs:
            for pr, job in zip(runs, sweep_jobs(cfg, runs)):
                cache[(pr.budget, pr.d_model, pr.seed)] = run_id_of(job, fingerprint, vocab)

    return Rows(records, rid, str(acfg.get("params", "total")), str(acfg.get("metric", "val_bpb")), register)


def analysis_settings(cfg: DictConfig) -> DictConfig:
    """conf/analyze.yaml with the sweep's `analysis` overrides: the settings harness-validate will fit with."""
    base = OmegaConf.load(Path(CONF_DIR) / "analyze.yaml")
    base.pop("defaults", None)
    base.pop("hydra", None)
    return OmegaConf.merge(base, cfg.get("analysis") or {})


def adaptive_plan(cfg: DictConfig, grid: list[PlannedRun], notes: list[str]) -> tuple[list[PlannedRun], list[str]]:
    """The runs of round cfg.sweep_round: the planned grid itself in round 0, the extra sizes after it (reading
    the results directory's records); under WSD each round's runs form their own chains (harness.chain)."""
    rnd = int(cfg.get("sweep_round") or 0)
    ad = AdaptSettings.from_sweep(cfg.sweep)
    if rnd == 0 or not ad.max_rounds:
        return (grid, notes) if rnd == 0 else ([], [f"round {rnd}: sweep.adapt is off; nothing to train"])
    if rnd >= adapt_rounds(cfg):
        return [], [f"round {rnd}: past sweep.adapt.max_rounds={ad.max_rounds}; nothing to train"]
    corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
    where = results_dir(cfg)
    check_compatible(where, corpus.fingerprint)
    acfg = analysis_settings(cfg)
    rows = record_rows(cfg, read_records(where), corpus.fingerprint, corpus.vocab_size, acfg)
    cands = Candidates(cfg, vocab_hint(cfg), len(corpus.train))
    from harness.analysis.context import Settings  # here: round 0 (every sweep job) returns above without it

    runs, notes = plan_round(cfg, rnd, grid, rows, Settings.from_cfg(acfg), cands)
    if cfg.get("plan_index") is None:  # the dry run (scripts/sweep.sh): keep the round's verdicts for the report
        save_round(where, rnd, runs, notes)
    return runs, notes


def save_round(where: Path, rnd: int, runs: list[PlannedRun], notes: list[str]) -> None:
    """Merge round rnd's extra runs and verdict lines into <results_dir>/adapt.json (atomically)."""
    doc = load_rounds(where)
    doc[str(rnd)] = {"runs": [{"budget": pr.budget, "model": pr.name, "params": pr.params, "seed": pr.seed}
                              for pr in runs], "notes": notes}
    atomic_write(where / ADAPT_FILE, [json.dumps({"rounds": doc}, indent=1).encode()])


def load_rounds(where: Path) -> dict[str, Any]:
    """The adaptive rounds recorded in <results_dir>/adapt.json ({} when there are none)."""
    try:
        doc = json.loads((Path(where) / ADAPT_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    rounds = doc.get("rounds") if isinstance(doc, dict) else None
    return rounds if isinstance(rounds, dict) else {}


def adapt_markdown(where: Path) -> list[str]:
    """The report section on the adaptive rounds (none when the sweep had none): what each added and why."""
    rounds = load_rounds(where)
    if not rounds:
        return []
    extra = sum(len(r.get("runs", [])) for r in rounds.values())
    lines = ["## Adaptive grid", "", f"{extra} extra run(s) after the planned grid, from {len(rounds)} adaptive "
             "round(s) (harness.adapt; a round that adds nothing only checks): a budget whose parabola minimum was "
             "at or beyond its sizes' edge, or whose parabola opened downward, got extra sizes on the side its data "
             "pointed to, fitted with the grid.", ""]
    for rnd in sorted(rounds, key=int):
        lines += [f"- round {rnd}: {n.removeprefix(f'adaptive round {rnd}: ')}" for n in rounds[rnd].get("notes", [])]
    return ["\n".join(lines)]
