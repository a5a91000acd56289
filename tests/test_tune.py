"""The LR sweep: round plans that refine until each minimum is bracketed, jobs, and the fitted rule file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.analysis.lr import fit_lr_optimum
from harness.errors import HarnessError
from harness.tune import lr_grid, plan_round, refine, tune

# Small sizes and budgets so the plan (pure arithmetic) is instant; nothing here trains unless stated.
LR_SMALL = [
    "sweep=lr", "sweep.budgets=[1e9,3e9]", "sweep.d_models=[8,16,24]", "sweep.min_steps=5", "model.seq_len=32",
    "train.batch_size=4",
]


def _cfg(*extra: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=[*LR_SMALL, *extra])


def _bowl(lr: float, opt: float) -> float:
    return 2.0 + 0.1 * math.log(lr / opt) ** 2


def _run_rounds(cfg, optimum) -> dict:
    """Play every round of the sweep against a synthetic loss: {(point, lr): loss}."""
    seen: dict = {}
    for rnd in range(int(cfg.sweep.max_rounds) + 1):
        runs = plan_round(cfg, rnd, lambda pt, lr: seen.get((pt, lr)))
        for r in runs:
            pt = (r.d_model, r.budget)
            seen[(pt, r.lr)] = _bowl(r.lr, optimum(pt))
    return seen


def test_grid_is_log_spaced_and_refuses_one_point() -> None:
    grid, ratio = lr_grid(_cfg().sweep)
    assert grid == [0.003, 0.006, 0.012, 0.024, 0.048] and ratio == pytest.approx(2.0)
    with pytest.raises(HarnessError, match="at least 3"):
        lr_grid(_cfg("sweep.lr_grid.points=1").sweep)
    with pytest.raises(HarnessError, match="0 < min < max"):
        lr_grid(_cfg("sweep.lr_grid.min=-1e-3").sweep)


def test_refinement_brackets_a_minimum_that_starts_outside_the_grid() -> None:
    """Optimum 1.1e-3 lies below the grid (3e-3..4.8e-2): the rounds walk down to it, then add midpoints."""
    cfg = _cfg()
    seen = _run_rounds(cfg, lambda pt: 1.1e-3 if pt[0] == 8 else 1.5e-2)
    for d in (8, 16, 24):
        pt = (d, 1e9)
        lrs = np.array(sorted(lr for (p, lr) in seen if p == pt))
        o = fit_lr_optimum(lrs, np.array([seen[(pt, lr)] for lr in lrs]))
        assert o.status == "ok", (d, lrs)
        assert o.lr.value == pytest.approx(1.1e-3 if d == 8 else 1.5e-2, rel=0.02)
    low = sorted(lr for (p, lr) in seen if p == (8, 1e9))
    assert low[0] < 1.1e-3 < low[-1] and len(low) == 5 + 2 + 2  # grid, two steps down, two midpoints


def test_refinement_stops_at_the_bounds_and_the_round_limit() -> None:
    cfg = _cfg("sweep.lr_bounds=[2e-3,0.5]")
    seen = _run_rounds(cfg, lambda pt: 1e-5)  # far below the floor: never bracketed
    low = sorted(lr for (p, lr) in seen if p == (8, 1e9))
    assert low[0] >= 2e-3
    assert refine([0.003, 0.006, 0.012], [1.0, 2.0, 3.0], 2.0, (2e-3, 0.5), True) == []
    assert refine([0.003, 0.006, 0.012], [3.0, 1.0, 2.0], 2.0, (1e-4, 0.5), True) == [0.004243, 0.008485]
    assert refine([0.003, 0.006, 0.012], [3.0, 2.0, math.inf], 2.0, (1e-4, 0.5), False) == []


def test_a_round_waits_for_the_previous_one() -> None:
    with pytest.raises(HarnessError, match="unfinished"):
        plan_round(_cfg(), 1, lambda pt, lr: None)


def test_the_dry_run_refuses_train_settings_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"train\.warmup_frac=2 must be in \[0, 1\)"):
        tune(_cfg("train.warmup_frac=2", f"results_dir={tmp_path / 'lr'}"))
    assert not (tmp_path / "lr").exists()


def test_rounds_are_a_pure_function_of_earlier_results() -> None:
    cfg = _cfg()
    seen = _run_rounds(cfg, lambda pt: 2e-2)
    first = plan_round(cfg, 1, lambda pt, lr: seen.get((pt, lr)))
    again = plan_round(cfg, 1, lambda pt, lr: seen.get((pt, lr)))
    assert first == again and [r.index for r in first] == list(range(len(first)))


def _trained_cfg(text_corpus: Path, tmp_path: Path, *extra: str):
    return _cfg(
        "data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}",
        f"results_dir={tmp_path / 'lr'}", "model.seq_len=32", "train.batch_size=4", "train.eval_windows=8",
        "train.progress=false", "train.threads=1", "train.checkpoint_every_s=0", "sweep.d_models=[8,16]",
        "sweep.lr_grid.min=1e-3", "sweep.lr_grid.max=0.3", "sweep.lr_grid.points=4", "sweep.max_rounds=1",
        "sweep.budgets=[6e8,2e9]",
        *extra,
    )


def test_lr_sweep_end_to_end_writes_a_rule_that_runs_then_use(text_corpus: Path, tmp_path: Path,
                                                                restore_torch_threads) -> None:
    """Rounds of real (tiny) runs -> lr_rule.json; a run with train.lr=rule uses it and records its tag."""
    from harness.cli import _fit_lr_sweep
    from harness.plan import job_config_for
    from harness.results import read_records
    from harness.train import run
    from harness.tune import tune

    cfg = _trained_cfg(text_corpus, tmp_path)
    for rnd in range(int(cfg.sweep.max_rounds) + 1):
        cfg.sweep_round = rnd
        for i in range(len(tune(cfg)["runs"])):
            cfg.plan_index = i
            tune(cfg)
        cfg.plan_index = None
    records = read_records(tmp_path / "lr")
    assert {r["role"] for r in records.values()} == {"tune"} and {r["lr_rule"] for r in records.values()} == {"fixed"}
    assert len(records) >= 2 * 2 * 4
    assert _fit_lr_sweep(cfg) == 0
    doc = json.loads((tmp_path / "lr" / "lr_rule.json").read_text())
    assert doc["params"] == "nonembedding" and doc["provenance"]["data_fingerprint"] in {
        r["data_fingerprint"] for r in records.values()}
    assert {"c", "p", "q"} <= set(doc["rule"]) and len(doc["points"]) == 4
    assert (tmp_path / "lr" / "lr_curves.png").stat().st_size > 0 and "LR sweep" in (tmp_path / "lr" / "report.md").read_text()

    job = job_config_for(cfg, 16, 2e9, 0, "sweep")
    job.train.lr, job.train.lr_rule, job.results_dir = "rule", str(tmp_path / "lr" / "lr_rule.json"), str(tmp_path / "use")
    rec = run(job)
    from harness.lr_rule import load_rule

    rule = load_rule(job.train.lr_rule)
    assert rec["lr_rule"] == rule.tag and rule.tag.startswith("lr_rule.json@")
    assert rec["lr"] == pytest.approx(rule.lr(rec["params_nonembedding"], rec["tokens"]))


def test_rule_from_another_corpus_warns_and_a_bad_rule_is_refused(text_corpus: Path, tmp_path: Path) -> None:
    from harness.lr_rule import DEFAULT_PATH, load_rule, mismatches
    from harness.plan import job_config_for, resolve_run

    cfg = _trained_cfg(text_corpus, tmp_path)
    job = job_config_for(cfg, 16, 2e9, 0, "sweep")
    job.train.lr = "rule"
    if DEFAULT_PATH.exists():  # the shipped rule was fitted on the embedded corpus, not on this text corpus
        ctx = resolve_run(job, "sha256:other", 256)
        assert any("fitted on corpus" in w for w in ctx.warnings)
    rule_path = tmp_path / "rule.json"
    rule_path.write_text(json.dumps({"schema": 1, "params": "nonembedding", "rule": {
        k: {"value": v, "lo": None, "hi": None, "n": 0} for k, v in (("c", 0.5), ("p", -0.3), ("q", -0.1))},
        "provenance": {"data_fingerprint": "sha256:x", "family": {"aspect": 16}}}))
    rule = load_rule(str(rule_path))
    warns = mismatches(rule, "sha256:y", job.model)
    assert any("sha256:x" in w for w in warns) and any("aspect=16" in w for w in warns)
    rule_path.write_text("{not json")
    with pytest.raises(HarnessError, match="not a rule file"):
        load_rule(str(rule_path))
    with pytest.raises(HarnessError, match="does not exist"):
        load_rule(str(tmp_path / "missing.json"))
    job.train.lr = -1e-3
    with pytest.raises(HarnessError, match="positive"):
        resolve_run(job, "sha256:y", 256)


def test_rule_warns_far_outside_what_it_was_fitted_on() -> None:
    from harness.lr_rule import load_rule, rule_warnings

    rule = load_rule("default")
    assert rule.n_range is not None and rule.d_range is not None
    n_mid, d_mid = sum(rule.n_range) / 2, sum(rule.d_range) / 2
    model = {"name": "family", **rule.provenance["family"]}
    inside = rule_warnings(rule, None, model, {"params_nonembedding": n_mid}, d_mid)
    assert inside == []
    far = rule_warnings(rule, None, model, {"params_nonembedding": n_mid}, rule.d_range[1] * 50)
    assert len(far) == 2 and "D =" in far[0] and "train.lr=auto" in far[0] and "N*D =" in far[1]
    # twice the largest N trained on twice the most tokens: inside both 1-D ranges, N*D far beyond every point
    n, d = 2 * rule.n_range[1], 2 * rule.d_range[1]
    corner = rule_warnings(rule, None, model, {"params_nonembedding": n}, d)
    assert rule.nd_range is not None and n * d > 10 * rule.nd_range[1]
    assert len(corner) == 1 and "N*D =" in corner[0], corner


def test_cpu_scale_sweeps_use_the_rule_and_the_gpu_sweep_keeps_auto(run_cli, stdlib_cache: Path) -> None:
    """The fitted rule covers CPU scale only; the gpu sweep (a `@package _global_` preset) sets train.lr=auto,
    and its keys pass the config check."""
    for name, want in (("demo", "rule"), ("cpu", "rule"), ("gpu", "auto")):
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            assert compose("sweep_run", overrides=[f"sweep={name}"]).train.lr == want, name
    # GPU budgets repeat the ~30 MB stdlib corpus up to ~40 times: refused (harness.repetition) unless allowed
    refused = run_cli("harness-sweep", "sweep=gpu", "print=count", f"data.cache_dir={stdlib_cache}")
    assert refused.returncode == 2 and "data.max_epochs=4" in refused.stderr
    out = run_cli("harness-sweep", "sweep=gpu", "print=count", f"data.cache_dir={stdlib_cache}", "data.max_epochs=100")
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) > 0


def test_wsd_lr_sweep_plans_one_chain_per_size_and_lr_with_one_warmup_per_size() -> None:
    """Under WSD a round's runs of one (size, LR) are one chain; every run of a size warms up over the same steps
    (so a run's id is the same whichever round or chain trains it), and the jobs cover every run once."""
    from harness.chain import Chain
    from harness.plan import vocab_hint
    from harness.tune import job_config, size_warmups, tune_jobs, tune_points

    cfg = _cfg("train.schedule=wsd", "sweep.budgets=[1e9,3e9,9e9]")
    runs = plan_round(cfg, 0, lambda pt, lr: None)
    jobs = tune_jobs(cfg, runs)
    assert len(runs) == 3 * 3 * 5 and len(jobs) == 3 * 5 and all(isinstance(j, Chain) for j in jobs)
    assert sorted(b.run.index for j in jobs for b in j.branches) == [r.index for r in sorted(runs, key=lambda r: r.index)]
    assert [j.index for j in jobs] == list(range(len(jobs)))
    warm = size_warmups(cfg, tune_points(cfg, vocab_hint(cfg)))
    by_index = {r.index: r for r in runs}
    for j in jobs:
        members = [by_index[b.run.index] for b in j.branches]
        assert len({(r.d_model, r.lr) for r in members}) == 1 and [r.tokens for r in members] == sorted(
            r.tokens for r in members)
        assert j.warmup_steps == warm[j.d_model] > 0
        assert {job_config(cfg, r).train.warmup_steps for r in members} == {warm[j.d_model]}
    # a refinement round's single LR at one budget is trained alone, with its size's warmup all the same
    lone = tune_jobs(cfg, [runs[0]])
    assert lone == [runs[0]] and job_config(cfg, runs[0]).train.warmup_steps == warm[runs[0].d_model]
    # cosine: every run alone, warmup_frac of its own steps
    plain = _cfg("train.schedule=cosine")
    cos_runs = plan_round(plain, 0, lambda pt, lr: None)
    assert tune_jobs(plain, cos_runs) == cos_runs and job_config(plain, cos_runs[0]).train.warmup_steps is None


def test_wsd_lr_sweep_end_to_end_trains_chains_and_records_its_schedule(text_corpus: Path, tmp_path: Path,
                                                                        restore_torch_threads) -> None:
    """Round 0 as chains, round 1 planned from their rows (a chain's runs are found by the ids the plan
    rebuilds), the rule file says it was fitted on WSD runs, and a cosine run using it is warned."""
    from harness.cli import _fit_lr_sweep
    from harness.lr_rule import load_rule, mismatches
    from harness.plan import job_config_for
    from harness.results import read_records
    from harness.tune import tune

    cfg = _trained_cfg(text_corpus, tmp_path, "train.schedule=wsd", "sweep.budgets=[1e9,2e9]",
                       "sweep.lr_grid.points=3", "sweep.max_rounds=1", "sweep.midpoints=false")
    counts = []
    for rnd in range(2):
        cfg.sweep_round = rnd
        plan = tune(cfg)
        counts.append((len(plan["runs"]), len(plan["jobs"])))
        for i in range(len(plan["jobs"])):
            cfg.plan_index = i
            tune(cfg)
        cfg.plan_index = None
    assert counts[0] == (2 * 2 * 3, 2 * 3)  # 12 runs in 6 chains
    records = read_records(tmp_path / "lr")
    assert len(records) == counts[0][0] + counts[1][0]
    assert {r["schedule"] for r in records.values()} == {"wsd"} and {r["role"] for r in records.values()} == {"tune"}
    branched = [r for r in records.values() if float(r.get("flops_spent") or r["flops"]) < 0.9 * float(r["flops"])]
    assert len(branched) == 6  # each chain's shorter run paid only its cooldown after its trunk's branch point
    assert _fit_lr_sweep(cfg) == 0
    rule = load_rule(str(tmp_path / "lr" / "lr_rule.json"))
    assert rule.provenance["train"]["schedule"] == "wsd"
    job = job_config_for(cfg, 16, 2e9, 0, "sweep")
    assert any("fitted on wsd runs, this run trains cosine" in w for w in mismatches(rule, None, job.model, "cosine"))
    assert not any("fitted on" in w and "runs" in w for w in mismatches(rule, None, job.model, "wsd"))


def test_shipped_rules_resolve_by_name() -> None:
    from harness.lr_rule import DEFAULT_PATH, load_rule, resolve_path

    assert resolve_path("default") == DEFAULT_PATH == resolve_path("stdlib_family")
    assert resolve_path("stdlib_family_wsd") == DEFAULT_PATH.parent / "stdlib_family_wsd.json"
    assert load_rule("stdlib_family_wsd").provenance["train"]["schedule"] == "wsd"
    assert load_rule("default").provenance["train"]["schedule"] == "cosine"
    width = load_rule("stdlib_family_wsd_width")  # the committed fit over the 2- and 3-layer WSD LR sweeps
    assert width.params == "width" and width.provenance["train"]["schedule"] == "wsd" and width.n_range == (24, 96)
    committed = Path(__file__).resolve().parents[1] / "results" / "lr_wsd_width" / "lr_rule.json"
    assert Path(width.path).read_bytes() == committed.read_bytes()
    with pytest.raises(HarnessError, match="does not exist"):
        load_rule("no_such_rule")


def test_rule_points_keep_only_this_sweeps_schedule() -> None:
    """A WSD LR sweep in a directory that also holds cosine LR-sweep rows fits its rule on its own rows only."""
    from harness.tune import collect_points

    def rec(rid: str, lr: float, loss: float, schedule: str) -> dict:
        return {"run_id": rid, "role": "tune", "status": "ok", "d_model": 8, "budget_flops": 1e9, "lr": lr,
                "val_bpb": loss, "schedule": schedule, "model": "family-d8-L2", "params_nonembedding": 1000,
                "tokens": 5000}

    records = {r["run_id"]: r for r in [rec("w1", 0.01, 2.0, "wsd"), rec("w2", 0.02, 1.9, "wsd"),
                                         rec("c1", 0.01, 3.0, "cosine"), rec("c3", 0.04, 1.0, "cosine")]}
    (pt,) = collect_points(_cfg("train.schedule=wsd"), records)
    assert pt.lrs == [0.01, 0.02] and pt.losses == [2.0, 1.9]
    (cos,) = collect_points(_cfg("train.schedule=cosine"), records)
    assert sorted(cos.lrs) == [0.01, 0.04]


def test_width_rule_reads_d_model_in_the_sweep_the_plan_and_its_warnings(tmp_path: Path) -> None:
    """sweep.params=width fits lr* = c d_model^p D^q: the points carry d_model as N, a run on a width rule gets
    c d^p D^q whatever its depth, the range warning checks d_model, and a bad convention is refused before
    anything trains."""
    from harness.lr_rule import load_rule, rule_warnings
    from harness.plan import learning_rate, model_config
    from harness.tune import collect_points, tune

    rec = {"run_id": "a", "role": "tune", "status": "ok", "d_model": 8, "budget_flops": 1e9, "lr": 0.01,
           "val_bpb": 2.0, "schedule": "cosine", "model": "family-d8-L2", "params_nonembedding": 1000, "tokens": 5000}
    (pt,) = collect_points(_cfg("sweep.params=width"), {"a": rec})
    assert pt.n_params == 8.0
    (pt,) = collect_points(_cfg(), {"a": rec})
    assert pt.n_params == 1000.0

    path = tmp_path / "width.json"
    path.write_text(json.dumps({"schema": 1, "params": "width", "rule": {
        k: {"value": v, "lo": None, "hi": None, "n": 0} for k, v in (("c", 0.4), ("p", -1.0), ("q", 0.0))},
        "points": [{"N": 24, "D": 1e6, "status": "ok"}, {"N": 96, "D": 1e7, "status": "ok"}]}))
    cfg = _cfg("train.lr=rule", f"train.lr_rule={path}")
    lrs = {}
    for d in (72, 80):  # d72 has 2 layers, d80 3: the rule sees only the width
        cfg.model.d_model = d
        _, g = model_config(cfg.model, 256)
        lrs[(d, g.n_layer)], tag = learning_rate(cfg.train, g, 1e6)
        assert tag.startswith("width.json@")
    assert lrs == {(72, 2): pytest.approx(0.4 / 72), (80, 3): pytest.approx(0.4 / 80)}
    rule = load_rule(str(path))
    assert rule_warnings(rule, None, {"name": "family", "d_model": 80}, {}, 2e6) == []
    (far,) = rule_warnings(rule, None, {"name": "family", "d_model": 1024}, {}, 2e6)
    assert "fitted on d_model in [24, 96]; this run's d_model = 1.02e+03" in far
    with pytest.raises(HarnessError, match="has no d_model"):
        rule_warnings(rule, None, {"name": "family"}, {}, 2e6)

    with pytest.raises(HarnessError, match=r"sweep\.params='heads'.*width"):
        tune(_cfg("sweep.params=heads", f"results_dir={tmp_path / 'lr'}"))
