"""IsoFLOP sweep planning (harness.plan): sizes per budget around the prior, dropped sizes, the family rule,
the printed plan, and bad sweep input refused with one clear message (in-process and through harness-sweep)."""

from __future__ import annotations

import itertools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness import CONF_DIR
from harness.counting import flops_per_token, param_counts
from harness.errors import HarnessError
from harness.plan import (
    RunContext,
    family_members,
    format_plan,
    job_config,
    model_config,
    plan_sweep,
    resolve_run,
    results_dir,
    run_id,
    run_id_of,
    run_spec,
    vocab_hint,
)
from harness.results import COLUMNS, write_record
from tests.conftest import SWEEP_SMALL

SMALL = SWEEP_SMALL


def sweep_cfg(*overrides: str):
    """conf/sweep_run.yaml composed with these overrides (no Hydra app, no launcher)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=list(overrides))


def prior_log_n(cfg, budget: float) -> float:
    """Where tokens/param crosses sweep.tokens_per_param along the family (log-log interpolation)."""
    members = family_members(cfg.model, 256, int(cfg.sweep.d_model_min), int(cfg.sweep.d_model_max))
    pts = [(param_counts(g)["params_total"], flops_per_token(g)) for _, g in members]
    r = float(cfg.sweep.tokens_per_param)
    for (n1, f1), (n2, f2) in itertools.pairwise(pts):
        a, b = budget / f1 / n1, budget / f2 / n2
        if a >= r >= b:
            w = math.log(a / r) / math.log(a / b)
            return math.log(n1) + w * math.log(n2 / n1)
    raise AssertionError(f"prior optimum outside the family at {budget:g}")


# ---------------------------------------------------------------- the family rule


def test_family_rule_d96_and_heads_divide_width() -> None:
    mc = sweep_cfg().model
    name, g = model_config(OmegaConf.merge(mc, {"d_model": 96}), 256)
    assert (g.n_layer, g.n_head, g.d_model, g.d_ff) == (3, 6, 96, 384)
    assert name == "family-d96-L3"
    for d in range(8, 257, 8):
        _, g = model_config(OmegaConf.merge(mc, {"d_model": d}), 256)
        assert g.d_model % g.n_head == 0
        assert g.n_layer == max(int(mc.min_layers), math.floor(d / 32 + 0.5))
        assert g.d_ff == 4 * d
        assert g.n_head == 1 or d // g.n_head >= 16  # heads of at least head_dim channels
        # the most such heads: one more head would not divide d_model or would be narrower than head_dim
        assert not any(d % h == 0 and d // h >= 16 for h in range(g.n_head + 1, d + 1))


def test_family_rejects_width_off_the_step() -> None:
    mc = sweep_cfg().model
    with pytest.raises(HarnessError, match=r"multiple of model.d_model_step"):
        model_config(OmegaConf.merge(mc, {"d_model": 44}), 256)


def test_family_members_cover_the_range() -> None:
    mc = sweep_cfg().model
    names = [n for n, _ in family_members(mc, 256, 8, 48)]
    assert int(mc.min_layers) == 2  # one-layer models are left out of the family
    assert names == ["family-d8-L2", "family-d16-L2", "family-d24-L2", "family-d32-L2", "family-d40-L2",
                     "family-d48-L2"]
    assert model_config(OmegaConf.merge(mc, {"d_model": 8, "min_layers": 1}), 256)[0] == "family-d8-L1"
    assert [g.d_model for _, g in family_members(mc, 256, 10, 30)] == [16, 24]  # rounds d_min up to the step
    assert family_members(mc, 256, 48, 8) == []


# ---------------------------------------------------------------- sizes around the prior


def test_demo_plan_brackets_the_prior_in_log_n() -> None:
    # 3 budgets x 5 sizes, 20 tokens/param, spread 16, the prior optimum well inside the family at each budget
    cfg = sweep_cfg("sweep.budgets=[3e11,1e12,3e12]", "sweep.tokens_per_param=20", "sweep.spread=16",
                    "sweep.d_model_min=16", "sweep.d_model_max=256")
    runs, notes = plan_sweep(cfg)
    k, r, spread = int(cfg.sweep.sizes_per_budget), float(cfg.sweep.tokens_per_param), float(cfg.sweep.spread)
    B, T = int(cfg.train.batch_size), int(cfg.model.seq_len)
    budgets = sorted({pr.budget for pr in runs})
    assert budgets == sorted(float(b) for b in cfg.sweep.budgets)
    assert [pr.index for pr in runs] == list(range(len(runs)))
    centres = []
    for C in budgets:
        rb = [pr for pr in runs if pr.budget == C]
        sizes = [pr.params for pr in rb]
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
        assert 3 <= len(sizes) <= k
        # the grid brackets the prior optimum: smallest size trains past r tokens/param, largest short of it
        assert rb[0].tokens / rb[0].params > r > rb[-1].tokens / rb[-1].params
        # ... spans about `spread` in N, centred (in log N) near the prior optimum
        assert spread / 2 <= sizes[-1] / sizes[0] <= spread * 2
        log_n0 = prior_log_n(cfg, C)
        assert abs(sum(math.log(n) for n in sizes) / len(sizes) - log_n0) < math.log(2)
        # k log-spaced targets around N0, each taking the nearest (in log N) family member not taken yet
        members = family_members(cfg.model, 256, int(cfg.sweep.d_model_min), int(cfg.sweep.d_model_max))
        free = [param_counts(g)["params_total"] for _, g in members]
        nearest = set()
        for i in range(k):
            t = log_n0 + math.log(spread) * (i / (k - 1) - 0.5)
            n = min(free, key=lambda n, t=t: abs(math.log(n) - t))
            nearest.add(n)
            free.remove(n)
        assert set(sizes) == nearest and len(sizes) == k
        for pr in rb:
            _, g = model_config(OmegaConf.merge(cfg.model, {"d_model": pr.d_model}), 256)
            fpt = flops_per_token(g)
            seqs = round(C / (fpt * T))
            assert pr.tokens == seqs * T and pr.steps == math.ceil(seqs / B)
            assert abs(pr.tokens * fpt - C) <= fpt * T / 2  # the budget to within half a sequence
            assert pr.steps >= int(cfg.sweep.min_steps) and pr.est_seconds > 0
        centres.append(log_n0)
    assert centres == sorted(centres)  # the optimum grows with compute
    assert not any("outside the family" in n for n in notes)


def test_prior_moves_the_grid() -> None:
    """Fewer tokens per parameter -> the grid moves to bigger models at the same budget."""
    def mean_log_n(r: float) -> float:
        runs, _ = plan_sweep(sweep_cfg("sweep.budgets=[1e12]", f"sweep.tokens_per_param={r}"))
        return sum(math.log(pr.params) for pr in runs) / len(runs)

    assert mean_log_n(5) > mean_log_n(20) + 0.5 > mean_log_n(80) + 1.0


def test_jobs_run_longest_first() -> None:
    """plan_index order is longest estimated run first, so parallel workers finish together."""
    runs, _ = plan_sweep(sweep_cfg("sweep.budgets=[1e11,1e12]"))
    est = [pr.est_seconds for pr in runs]
    assert est == sorted(est, reverse=True) and [pr.index for pr in runs] == list(range(len(runs)))
    assert runs[0].budget == 1e12 and runs[-1].budget == 1e11


def test_seeds_repeat_each_size() -> None:
    runs, _ = plan_sweep(sweep_cfg(*SMALL, "sweep.seeds=[0,1]"))
    one, _ = plan_sweep(sweep_cfg(*SMALL))
    assert len(runs) == 2 * len(one) == 12
    assert {(pr.budget, pr.d_model, pr.seed) for pr in runs} == {(p.budget, p.d_model, s) for p in one for s in (0, 1)}


def test_small_plan_has_the_expected_runs() -> None:
    """The plan the sweep tests train: 2 budgets x 3 sizes, each a few hundred steps at most."""
    runs, notes = plan_sweep(sweep_cfg(*SMALL))
    assert len(runs) == 6 and notes == []
    assert [pr.name for pr in sorted(runs, key=lambda pr: (pr.budget, pr.params))] == ["family-d8-L2", "family-d16-L2", "family-d24-L2",
                                        "family-d8-L2", "family-d16-L2", "family-d32-L2"]
    assert all(5 <= pr.steps <= 200 for pr in runs)


# ---------------------------------------------------------------- dropped sizes


DROP = ["sweep.budgets=[4e9]", "sweep.sizes_per_budget=5", "sweep.spread=32", "sweep.tokens_per_param=4",
        "sweep.d_model_min=8", "sweep.d_model_max=128", "model.seq_len=32", "train.batch_size=16"]


def test_sizes_with_too_few_steps_are_dropped_with_a_note() -> None:
    full, _ = plan_sweep(sweep_cfg(*DROP, "sweep.min_steps=1"))
    assert len(full) >= 4
    min_steps = sorted(pr.steps for pr in full)[0] + 1  # drop exactly the shortest run
    short = [pr for pr in full if pr.steps < min_steps]
    assert len(short) == 1
    runs, notes = plan_sweep(sweep_cfg(*DROP, f"sweep.min_steps={min_steps}"))
    assert [pr.name for pr in runs] == [pr.name for pr in full if pr.steps >= min_steps]
    assert all(pr.steps >= min_steps for pr in runs)
    dropped = [n for n in notes if "dropped" in n]
    assert len(dropped) == 1, notes
    assert f"dropped 1 size(s) with fewer than {min_steps} steps" in dropped[0]
    assert f"{short[0].name} ({short[0].steps} steps)" in dropped[0]


def test_budget_left_with_too_few_sizes_refused() -> None:
    full, _ = plan_sweep(sweep_cfg(*DROP, "sweep.min_steps=1"))
    min_steps = sorted(pr.steps for pr in full)[-1]  # keeps only the single longest run
    with pytest.raises(HarnessError, match=r"keeps 1 size\(s\).*min_steps"):
        plan_sweep(sweep_cfg(*DROP, f"sweep.min_steps={min_steps}"))


def test_shipped_demo_plan() -> None:
    """The default demo: 6 budgets x 5 distinct sizes, every run with at least min_steps steps, trained as WSD
    chains that cost at most 0.7 of the independent runs (issue #13's bar), with a held-out ladder reaching 10x."""
    from harness.chain import plan_chains

    cfg = sweep_cfg()
    runs, notes = plan_sweep(cfg)
    assert notes == []
    for C in (2e11, 3e11, 5e11, 8e11, 1.2e12, 2e12):
        assert len({pr.params for pr in runs if pr.budget == C}) == 5
    assert min(pr.steps for pr in runs) >= int(cfg.sweep.min_steps)
    assert cfg.train.schedule == "wsd"
    chains = plan_chains(cfg, runs)
    assert sum(c.flops_spent for c in chains) <= 0.7 * sum(c.flops_independent for c in chains)
    assert max(cfg.sweep.holdout.multiples) >= 10 and len(cfg.sweep.holdout.multiples) >= 2


def test_cosine_demo_plan() -> None:
    """The demo before it (sweep=demo_cosine): 4 budgets x 5 distinct sizes, independent cosine runs."""
    cfg = sweep_cfg("sweep=demo_cosine")
    runs, notes = plan_sweep(cfg)
    assert notes == [] and cfg.train.schedule == "cosine" and cfg.sweep.name == "demo_cosine"
    for C in (2e11, 5e11, 1.2e12, 3e12):
        assert len({pr.params for pr in runs if pr.budget == C}) == 5


def test_optimum_beyond_the_family_still_plans_at_the_edge() -> None:
    """At 1e12 FLOPs the 20 tokens/param optimum lies above d_model<=48, but the six sizes there all train for
    thousands of steps: the plan should take the largest sizes and say the grid sits at the edge, not refuse
    with a message blaming min_steps (nothing was dropped)."""
    cfg = sweep_cfg("sweep.budgets=[1e12]", "sweep.tokens_per_param=20", "sweep.sizes_per_budget=3", "sweep.d_model_min=8",
                    "sweep.d_model_max=48", "sweep.min_steps=1", "model.seq_len=32", "train.batch_size=16")
    try:
        runs, notes = plan_sweep(cfg)
    except HarnessError as e:
        pytest.fail(f"refused a family with 6 trainable sizes: {e}")
    assert len({pr.params for pr in runs}) == 3
    assert max(pr.d_model for pr in runs) == 48
    assert any("outside the family range" in n for n in notes)


# ---------------------------------------------------------------- the printed plan


def test_format_plan_has_a_row_per_run() -> None:
    runs, notes = plan_sweep(sweep_cfg(*DROP, "sweep.min_steps=1"))
    text = format_plan(runs, notes)
    lines = text.splitlines()
    assert len(lines) == 1 + len(runs) + 1 + len(notes)
    by_budget = sorted(runs, key=lambda pr: (pr.budget, pr.params, pr.seed))  # the table groups by budget
    for pr, line in zip(by_budget, lines[1:]):
        fields = line.split()
        assert fields[0] == str(pr.index) and fields[2] == pr.name
        assert f"{pr.params:,}" in fields and str(pr.steps) in fields
    assert lines[1 + len(runs)].startswith(f"{len(runs)} runs, ")
    assert [ln.removeprefix("note: ") for ln in lines[2 + len(runs):]] == notes


# ---------------------------------------------------------------- bad input (in-process)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["sweep.budgets=[]"], "sweep.budgets is empty"),
        (["sweep.budgets=[0]"], "not a positive number"),
        (["sweep.budgets=[1e12,-3e12]"], "not a positive number"),
        (["sweep.budgets=[1e12,nan]"], "not a positive number"),
        (["sweep.budgets=[lots]"], "'lots'"),
        (["sweep.budgets=null"], "sweep.budgets is empty"),
        (["sweep.d_model_min=64", "sweep.d_model_max=32"], "no family size"),
        (["sweep.d_model_min=8", "sweep.d_model_max=16"], "d_model_min/max"),  # only two sizes in range
        (["sweep.sizes_per_budget=2"], "at least 3"),
        (["sweep.budgets=[1e6]"], "keeps"),
        # a math domain error, a complaint about steps, or seed 0 planned silently before
        (["sweep.spread=-2"], r"sweep\.spread=-2 must be a number > 1"),
        (["sweep.spread=0"], r"sweep\.spread=0 must be a number > 1"),
        (["sweep.spread=1"], r"sweep\.spread=1 must be a number > 1"),
        (["sweep.tokens_per_param=0"], r"sweep\.tokens_per_param=0 must be a positive number"),
        (["sweep.tokens_per_param=-20"], r"sweep\.tokens_per_param=-20 must be a positive number"),
        (["sweep.seeds=[]"], r"sweep\.seeds=\[\] names no seed"),
        (["sweep.seeds=[0,1,0]"], r"sweep\.seeds=\[0,1,0\] must be distinct integers"),
        (["sweep.seeds=[0,x]"], r"sweep\.seeds=\[0,x\] must be distinct integers"),
    ],
)
def test_bad_sweep_input_refused(overrides: list[str], match: str) -> None:
    with pytest.raises(HarnessError, match=match) as exc:
        plan_sweep(sweep_cfg(*overrides))
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 300


def test_non_list_budgets_give_a_clear_error() -> None:
    """sweep.budgets=1e12 (a scalar) and sweep.budgets=abc (a string) are easy typos: each must be a
    HarnessError naming sweep.budgets and the value (or, for the scalar, a one-budget plan), not a TypeError
    nor a complaint about the character 'a'."""
    try:
        runs, _ = plan_sweep(sweep_cfg("sweep.budgets=1e12"))
    except HarnessError as e:
        assert "sweep.budgets" in str(e)
    else:
        assert {pr.budget for pr in runs} == {1e12}
    with pytest.raises(HarnessError, match="abc"):
        plan_sweep(sweep_cfg("sweep.budgets=abc"))


def test_non_numeric_sizes_per_budget_is_a_harness_error() -> None:
    with pytest.raises(HarnessError, match=r"sweep.sizes_per_budget"):
        plan_sweep(sweep_cfg("sweep.sizes_per_budget=many"))


# ---------------------------------------------------------------- bad input through harness-sweep


def harness_sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "harness-sweep"
    if not exe.exists():
        pytest.skip(f"harness-sweep not installed beside {sys.executable}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli_args(text_corpus: Path, tmp_path: Path) -> list[str]:
    return [*SMALL, "data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}",
            f"results_dir={tmp_path / 'results'}"]


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
            and p.name != ".lock"}


def test_cli_dry_run_prints_count_and_writes_nothing(cli_args: list[str], tmp_path: Path) -> None:
    out = harness_sweep(*cli_args, "print=count", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "6"
    assert not (tmp_path / "results").exists()


def test_cli_empty_budgets_exit_2(cli_args: list[str], tmp_path: Path) -> None:
    out = harness_sweep(*cli_args, "sweep.budgets=[]", cwd=tmp_path)
    assert out.returncode == 2
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "sweep.budgets is empty" in errors[0]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("override", "match"), [
    ("sweep.holdout.multiples=[0.5,2]", r"sweep\.holdout\.multiples=\[0\.5,2\] must be numbers > 1"),
    ("train.warmup_frac=2", r"train\.warmup_frac=2 must be in \[0, 1\)"),
    ("sweep.spread=0", r"sweep\.spread=0 must be a number > 1"),
])
def test_cli_dry_run_refuses_what_would_fail_later(cli_args: list[str], tmp_path: Path, override: str,
                                                   match: str) -> None:
    """scripts/sweep.sh runs this dry run first: a bad held-out or train setting stops it, not harness-validate
    after the grid trained (nor a traceback)."""
    out = harness_sweep(*cli_args, override, cwd=tmp_path)
    assert out.returncode == 2, out.stdout
    errors = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and re.search(match, errors[0]), out.stderr
    assert not (tmp_path / "results").exists()


def test_cli_unknown_launcher_fails(cli_args: list[str], tmp_path: Path) -> None:
    out = harness_sweep("--multirun", *cli_args, "hydra/launcher=nope", "plan_index=range(0,6)", cwd=tmp_path)
    assert out.returncode != 0
    assert "nope" in out.stderr
    assert not (tmp_path / "results").exists()


def foreign_record(fingerprint: str) -> dict:
    rec = {c: 0 for c in COLUMNS}
    rec.update(run_id="foreign0001", status="ok", data_fingerprint=fingerprint, role="sweep", error="",
               model="x", dtype="float32", device="cpu", harness_version="0")
    return rec


def test_cli_refuses_results_of_another_corpus(cli_args: list[str], tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_record(results, foreign_record("deadbeefdeadbeef-123"))
    before = snapshot(results)
    out = harness_sweep(*cli_args, cwd=tmp_path)
    assert out.returncode == 2
    assert "another corpus" in out.stderr and "error:" in out.stderr
    assert snapshot(results) == before


def test_job_refuses_results_of_another_corpus_before_training(cli_args: list[str], tmp_path: Path) -> None:
    """A multirun job (plan_index set) must refuse too, before it trains or writes anything."""
    from harness.sweep import sweep

    results = tmp_path / "results"
    write_record(results, foreign_record("deadbeefdeadbeef-123"))
    before = snapshot(results)
    with pytest.raises(HarnessError, match="another corpus"):
        sweep(sweep_cfg(*cli_args, "plan_index=0"))
    assert snapshot(results) == before


@pytest.mark.parametrize("plan_index", [None, 0])
def test_results_csv_of_another_schema_refused(cli_args: list[str], tmp_path: Path, plan_index) -> None:
    from harness.sweep import sweep

    results = tmp_path / "results"
    results.mkdir()
    (results / "results.csv").write_text("epoch,acc\n1,0.5\n")
    before = snapshot(results)
    extra = [] if plan_index is None else [f"plan_index={plan_index}"]
    with pytest.raises(HarnessError, match=r"not a harness results.csv"):
        sweep(sweep_cfg(*cli_args, *extra))
    assert snapshot(results) == before


def test_plan_index_outside_the_plan_refused(cli_args: list[str], tmp_path: Path) -> None:
    from harness.sweep import sweep

    with pytest.raises(HarnessError, match=r"plan_index=6 is outside the plan \(0\.\.5\)"):
        sweep(sweep_cfg(*cli_args, "plan_index=6"))
    assert not (tmp_path / "results").exists()


def test_unknown_print_mode_refused_and_plan_mode_prints_table_then_lines(cli_args: list[str], tmp_path: Path) -> None:
    from harness.sweep import dry_run_text, sweep

    with pytest.raises(HarnessError, match=r"unknown print='tabel'; use one of table, count, results_dir, plan"):
        sweep(sweep_cfg(*cli_args, "print=tabel"))
    cfg = sweep_cfg(*cli_args, "print=plan")
    out = sweep(cfg)
    lines = dry_run_text(cfg, out).splitlines()
    assert lines[:-3] == out["table"].splitlines()
    assert lines[-3:] == ["count=6", f"results_dir={tmp_path / 'results'}", "rounds=1"]
    for mode, want in (("table", out["table"]), ("count", "6"), ("results_dir", str(tmp_path / "results"))):
        assert dry_run_text(sweep_cfg(*cli_args, f"print={mode}"), out) == want
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- the run context and run ids


@pytest.mark.parametrize("extra", [[], ["model.pos_emb=rope"]])
def test_format_plan_columns_line_up_under_their_headers(extra: list[str]) -> None:
    """Every row's params ends where its header does, with short names and with 18-character -rope names."""
    runs, notes = plan_sweep(sweep_cfg(*SMALL, *extra))
    header, *rows = format_plan(runs, notes).splitlines()[: 1 + len(runs)]
    end = header.index("params") + len("params")
    assert all(row[end - 1].isdigit() and row[end] == " " for row in rows), "\n".join([header, *rows])
    assert not extra or max(len(pr.name) for pr in runs) > 16  # the rope grid has names past the old width


def test_run_id_stable_and_sensitive() -> None:
    spec = {"model": "nano", "budget": 1e9, "seed": 0, "train": {"lr": "auto"}}
    assert run_id(spec) == run_id(dict(reversed(list(spec.items()))))
    assert len(run_id(spec)) == 12
    assert run_id(spec) != run_id({**spec, "seed": 1})
    assert run_id(spec) != run_id({**spec, "train": {"lr": "0.001"}})


@pytest.mark.parametrize(("override", "key", "value", "suffix"), [
    ("model.pos_emb=rope", "pos_emb", "rope", "-rope"),
    ("model.qk_norm=true", "qk_norm", True, "-qk"),
])
def test_new_arch_options_get_their_own_ids_and_names(override: str, key: str, value: object, suffix: str) -> None:
    """pos_emb and qk_norm joined the model config after runs were recorded: off (the default), each stays out of
    the hash, so old run ids hold; on, it is in the hash and the model's name says so."""
    cfg = sweep_cfg(*SMALL)
    job = job_config(cfg, plan_sweep(cfg)[0][0])
    name, gcfg = model_config(job.model, 256)
    assert key not in run_spec(job, name, gcfg, "fp")["arch"]
    other = job_config(sweep_cfg(*SMALL, override), plan_sweep(cfg)[0][0])
    other_name, other_gcfg = model_config(other.model, 256)
    assert run_spec(other, other_name, other_gcfg, "fp")["arch"][key] == value
    assert other_name == name + suffix
    assert run_id_of(other, "fp", 256) != run_id_of(job, "fp", 256)


def test_run_context_resolves_once_then_completes_with_the_corpus() -> None:
    cfg = sweep_cfg(*SMALL, "results_dir='~/somewhere'")
    job = job_config(cfg, plan_sweep(cfg)[0][0])
    assert results_dir(job) == Path.home() / "somewhere" and vocab_hint(job) == 256
    ctx = RunContext.resolve(job, world=2)
    assert ctx.results_dir == Path.home() / "somewhere" and ctx.run_id == "" and ctx.world == 2
    name, gcfg = model_config(job.model, 256)
    assert (ctx.name, ctx.gcfg, ctx.vocab_size) == (name, gcfg, 256)
    assert ctx.plan.sequences % 2 == 0 and ctx.peak_lr > 0
    same = ctx.with_corpus("fp-1", 256)
    assert same.run_id == run_id(run_spec(job, name, gcfg, "fp-1")) == run_id_of(job, "fp-1", 256)
    assert same.gcfg == ctx.gcfg and same.fingerprint == "fp-1"
    assert same.checkpoint_path == Path.home() / "somewhere" / "checkpoints" / f"{same.run_id}.pt"
    assert resolve_run(job, "fp-1", 256, world=2) == same
    wider = ctx.with_corpus("fp-1", 300)  # the corpus' vocabulary wins over the hint
    assert wider.gcfg.vocab_size == wider.vocab_size == 300 and wider.plan.flops_per_token > ctx.plan.flops_per_token
    assert wider.run_id == run_id_of(job, "fp-1", 300) != same.run_id


def test_run_context_refuses_bad_input_before_data() -> None:
    with pytest.raises(HarnessError, match="divisible by the number of processes"):
        RunContext.resolve(sweep_cfg(*SMALL, "+budget=2e9", "train.batch_size=3"), world=2)
    with pytest.raises(HarnessError, match="not a number"):
        RunContext.resolve(sweep_cfg(*SMALL, "+budget=abc"))
