"""Adaptive IsoFLOP grids (harness.adapt): a budget whose parabola minimum is at or beyond its sizes' edge gets
extra sizes on the side its data points to, bounded per round and in rounds; nothing is added when every budget
is bracketed; a rerun replays the same plan (resumable), and a run of an earlier round without a record stops."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.adapt import Candidates, Rows, adapt_markdown, adapt_rounds, adapt_step, plan_round, record_rows
from harness.analysis.context import Settings
from harness.data import load_corpus
from harness.errors import HarnessError
from harness.lr_rule import lr_source
from harness.plan import PlannedRun, plan_sweep
from harness.results import COLUMNS, find_ok, write_record
from harness.sweep import planned_ids, sweep
from tests.conftest import SWEEP_SMALL

# 3 budgets x 5 sizes inside a family d8..d160 (15K..274K params in the grid, room on both sides); plans only
# (the records are written by the tests), so they are instant.
GRID = [*SWEEP_SMALL, "sweep.budgets=[3e10,6e10,1.2e11]", "sweep.sizes_per_budget=5", "sweep.d_model_max=160",
        "sweep.spread=8", "sweep.tokens_per_param=2", "sweep.adapt.max_rounds=2"]


def cfg_of(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=[*GRID, *overrides])


def key(pr: PlannedRun) -> str:
    return f"{pr.budget:g}-{pr.d_model}-{pr.seed}"


def losses(runs: list[PlannedRun], optimum: dict[float, float], sign: float = 1.0) -> dict[str, dict]:
    """Records of a parabola in log N per budget, its vertex at optimum[budget] params."""
    return {key(pr): {"status": "ok", "params_total": pr.params, "tokens": pr.tokens, "flops": pr.budget,
                      "val_bpb": 3.0 + sign * 0.1 * (math.log(pr.params) - math.log(optimum[pr.budget])) ** 2}
            for pr in runs}


def rows_of(records: dict[str, dict]) -> Rows:
    return Rows(records, key)


def sizes(runs: list[PlannedRun], budget: float) -> list[int]:
    return sorted(pr.params for pr in runs if pr.budget == budget)


@pytest.fixture
def setup():
    cfg = cfg_of()
    grid, _ = plan_sweep(cfg)
    return cfg, grid, Candidates(cfg, 256, 10**9)


def centre(grid: list[PlannedRun], b: float) -> float:
    s = sizes(grid, b)
    return math.exp(sum(math.log(p) for p in s) / len(s))


def test_edge_optimum_gets_extra_sizes_on_its_side_only(setup) -> None:
    _, grid, cands = setup
    b0, b1, b2 = sorted({pr.budget for pr in grid})
    opt = {b0: sizes(grid, b0)[-1] * 2, b1: centre(grid, b1), b2: sizes(grid, b2)[0] / 3}
    verdicts, new = adapt_step(grid, rows_of(losses(grid, opt)), Settings(), 2, cands)
    by = {v.budget: v for v in verdicts}
    assert by[b0].status == "outside" and by[b0].sides == ("larger",)
    assert by[b1].status == "ok" and not by[b1].added
    assert by[b2].status == "outside" and by[b2].sides == ("smaller",)
    assert not sizes(new, b1)
    assert len(sizes(new, b0)) == 2 and min(sizes(new, b0)) > max(sizes(grid, b0))
    assert len(sizes(new, b2)) == 2 and max(sizes(new, b2)) < min(sizes(grid, b2))
    assert not by[b0].why_not and not by[b2].why_not
    # the smallest budget's grid starts one family member above d_model_min: one size fits there, and it says why
    verdicts, new = adapt_step(grid, rows_of(losses(grid, {**opt, b0: sizes(grid, b0)[0] / 3})), Settings(), 2, cands)
    v = next(v for v in verdicts if v.budget == b0)
    assert len(sizes(new, b0)) == 1 and "sweep.d_model_min" in v.why_not


def test_bound_per_round_and_the_last_round_only_reports(setup) -> None:
    cfg, grid, cands = setup
    b0, b1, b2 = sorted({pr.budget for pr in grid})
    opt = {b0: centre(grid, b0), b1: centre(grid, b1), b2: sizes(grid, b2)[-1] * 4}
    cfg = cfg_of("sweep.adapt.max_rounds=1", "sweep.adapt.extra_per_round=1")
    assert adapt_rounds(cfg) == 3  # grid, one adaptive round, the closing check
    far = {**opt, b2: sizes(grid, b2)[-1] * 50}  # far beyond: one extra size cannot bracket it
    records = losses(grid, far)
    first, notes = plan_round(cfg, 1, grid, rows_of(records), Settings(), cands)
    assert [pr.budget for pr in first] == [b2] and "extra_per_round=1" in notes[-1]
    records.update(losses(first, far))
    last, notes = plan_round(cfg, 2, grid, rows_of(records), Settings(), cands)
    assert last == []
    assert "still not usable after sweep.adapt.max_rounds=1" in notes[-1]


def test_nothing_planned_when_every_budget_is_bracketed(setup) -> None:
    cfg, grid, cands = setup
    opt = {b: centre(grid, b) for b in {pr.budget for pr in grid}}
    runs, notes = plan_round(cfg, 1, grid, rows_of(losses(grid, opt)), Settings(), cands)
    assert runs == [] and "every budget has a bracketed minimum" in notes[-1]


def test_downward_parabola_extends_towards_its_lowest_loss(setup) -> None:
    _, grid, cands = setup
    b0 = min(pr.budget for pr in grid)
    opt = {b: centre(grid, b) for b in {pr.budget for pr in grid}}
    records = losses(grid, opt)
    low = [pr for pr in grid if pr.budget == b0]
    for pr in low:  # concave in log N, lowest at the largest size
        x = math.log(pr.params) - math.log(sizes(grid, b0)[0])
        records[key(pr)]["val_bpb"] = 3.0 - 0.05 * x * x
    verdicts, new = adapt_step(grid, rows_of(records), Settings(), 2, cands)
    v = next(v for v in verdicts if v.budget == b0)
    assert v.status == "downward" and v.sides == ("larger",)
    assert min(sizes(new, b0)) > max(sizes(grid, b0))


def test_family_bounds_say_why_nothing_is_added(setup) -> None:
    cfg, grid, _ = setup
    b0 = min(pr.budget for pr in grid)
    cfg = cfg_of(f"sweep.d_model_min={min(pr.d_model for pr in grid if pr.budget == b0)}")
    cands = Candidates(cfg, 256, 10**9)
    opt = {b: centre(grid, b) for b in {pr.budget for pr in grid}}
    opt[b0] = sizes(grid, b0)[0] / 10
    verdicts, new = adapt_step(grid, rows_of(losses(grid, opt)), Settings(), 2, cands)
    v = next(v for v in verdicts if v.budget == b0)
    assert not sizes(new, b0) and "sweep.d_model_min" in v.why_not
    # the epoch limit: a tiny train split refuses the smaller (longer-trained) sizes, naming data.max_epochs
    verdicts, _ = adapt_step(grid, rows_of(losses(grid, opt)), Settings(), 2, Candidates(cfg_of(), 256, 1000))
    assert "data.max_epochs" in next(v for v in verdicts if v.budget == b0).why_not


def test_a_missing_earlier_run_stops_with_the_fix(setup) -> None:
    cfg, grid, cands = setup
    opt = {b: centre(grid, b) for b in {pr.budget for pr in grid}}
    records = losses(grid, opt)
    records.pop(key(grid[0]))
    with pytest.raises(HarnessError, match=r"rerun scripts/sweep\.sh"):
        plan_round(cfg, 1, grid, rows_of(records), Settings(), cands)
    records[key(grid[0])] = {"status": "diverged"}  # done, but never fitted: the round goes on
    plan_round(cfg, 1, grid, rows_of(records), Settings(), cands)


def test_off_plans_one_round_and_wsd_adapts_too() -> None:
    assert adapt_rounds(cfg_of("sweep.adapt.max_rounds=0")) == 1
    assert adapt_rounds(cfg_of("train.schedule=wsd")) == 4
    assert adapt_rounds(cfg_of()) == 4
    with pytest.raises(HarnessError, match="extra_per_round"):
        adapt_rounds(cfg_of("sweep.adapt.extra_per_round=0"))


def fake(rid: str, fp: str, pr: PlannedRun, loss: float, cfg) -> dict:
    """A sweep row as the run would record it (its recipe too: a sweep refuses rows of another one)."""
    rec = {c: 1 for c in COLUMNS}
    rec.update(run_id=rid, status="ok", data_fingerprint=fp, role="sweep", error="", model=pr.name,
               budget_flops=pr.budget, flops=pr.budget, tokens=pr.tokens, params_total=pr.params, val_bpb=loss,
               dtype="float32", device="cpu", harness_version="0", d_model=pr.d_model, seed=pr.seed,
               lr_rule=lr_source(cfg.train.lr, cfg.train.get("lr_rule")), schedule=str(cfg.train.schedule),
               seq_len=int(cfg.model.seq_len), batch_size=int(cfg.train.batch_size))
    return rec


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_sweep_rounds_read_the_results_dir_and_replay_on_rerun(text_corpus: Path, tmp_path: Path, schedule: str) -> None:
    """Through harness.sweep: round 1 plans extras from the directory's records under the runs' real ids; with
    those trained (records written), a rerun plans the same round 1 (all done: nothing to train) and round 2.
    Under WSD the grid's ids are its chains' branches' and a round's extra sizes form chains of their own."""
    args = ["data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}",
            f"results_dir={tmp_path / 'results'}", f"train.schedule={schedule}"]
    cfg = cfg_of(*args)
    grid, _ = plan_sweep(cfg)
    corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
    b2 = max(pr.budget for pr in grid)
    opt = {b: centre(grid, b) for b in {pr.budget for pr in grid}}
    opt[b2] = sizes(grid, b2)[-1] * 1.3  # just beyond the grid: two extra sizes bracket it
    loss = {key(pr): r["val_bpb"] for pr, r in zip(grid, losses(grid, opt).values())}
    for pr, rid in zip(grid, planned_ids(cfg, grid, corpus.fingerprint, corpus.vocab_size)):
        write_record(tmp_path / "results", fake(rid, corpus.fingerprint, pr, loss[key(pr)], cfg))
    out = sweep(cfg_of(*args, "sweep_round=1"))
    extra = out["runs"]
    assert out["rounds"] == 4 and {pr.budget for pr in extra} == {b2}
    assert min(pr.params for pr in extra) > max(sizes(grid, b2))
    assert "adding" in out["table"]
    ids = planned_ids(cfg_of(*args, "sweep_round=1"), extra, corpus.fingerprint, corpus.vocab_size)
    for pr, rid, r in zip(extra, ids, losses(extra, opt).values()):
        write_record(tmp_path / "results", fake(rid, corpus.fingerprint, pr, r["val_bpb"], cfg))
    again = sweep(cfg_of(*args, "sweep_round=1"))
    assert again["runs"] == extra
    assert all(find_ok(tmp_path / "results", rid) for rid in ids)  # the rerun's jobs all skip
    rows = record_rows(cfg_of(*args, "sweep_round=1"), {}, corpus.fingerprint, corpus.vocab_size, {"params": "total"})
    rows.register(extra)
    assert rows.run_id(extra[0]) == ids[0]  # the lookup's ids are the ids the jobs train under
    final = sweep(cfg_of(*args, "sweep_round=2"))
    assert final["runs"] == [] and "every budget has a bracketed minimum" in final["table"]
    section = adapt_markdown(tmp_path / "results")[0]  # the dry runs kept each round's verdicts for the report
    assert section.startswith("## Adaptive grid") and f"{len(extra)} extra run(s) after the planned grid, from 2 adaptive round(s)" in section
    assert "adding" in section and "every budget has a bracketed minimum" in section
    assert adapt_markdown(tmp_path / "nothing") == []
