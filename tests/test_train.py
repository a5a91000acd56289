"""harness.train.run: exact budgets, determinism, skip/resume, divergence and refusing bad input early."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

import harness.train
from harness.counting import flops_per_token
from harness.data import eval_windows, load_corpus
from harness.errors import HarnessError
from harness.model import GPTConfig
from harness.ngram import bigram_loss
from harness.plan import plan_steps
from harness.results import COLUMNS, find_ok, write_record
from harness.train import run

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


def csv_rows(results_dir: Path) -> list[dict[str, str]]:
    with open(results_dir / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[: len(COLUMNS)] == COLUMNS
        return list(reader)


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under path with its bytes (to show that nothing was written)."""
    if not path.exists():
        return {}
    if path.is_file():
        return {str(path): path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- a normal run


@pytest.fixture
def first_run(tiny_cfg, tmp_path: Path) -> tuple[dict, object]:
    cfg = tiny_cfg()
    return run(cfg), cfg


def test_run_spends_budget_and_writes_one_row(first_run, tmp_path: Path) -> None:
    rec, cfg = first_run
    results = tmp_path / "results"
    gcfg = GPTConfig(n_layer=2, n_head=2, d_model=64, d_ff=256, seq_len=32, vocab_size=256)
    fpt = flops_per_token(gcfg)
    budget = float(cfg.budget)
    seqs = round(budget / (fpt * 32))
    assert rec["status"] == "ok" and rec["error"] == ""
    assert rec["flops_per_token"] == fpt
    assert abs(rec["flops"] - budget) / budget < 0.01
    assert rec["tokens"] == seqs * 32
    assert rec["flops"] == rec["tokens"] * fpt
    assert rec["steps"] == math.ceil(seqs / 4) == 32
    assert rec["batch_size"] == 4 and rec["budget_flops"] == budget
    assert (rec["n_layer"], rec["n_head"], rec["d_model"], rec["d_ff"], rec["seq_len"]) == (2, 2, 64, 256, 32)
    assert math.isfinite(rec["val_bpb"]) and 0 < rec["val_bpb"] < 8  # learned something beyond uniform bytes
    assert rec["val_bpb"] == pytest.approx(rec["val_loss"] / math.log(2))
    assert math.isfinite(rec["train_loss"])
    # the bigram reference on the very windows val_loss is measured on (harness.ngram)
    corpus = load_corpus(cfg.data, 32)
    windows = eval_windows(corpus.val, int(cfg.train.eval_windows), 32).numpy()
    assert rec["bigram_val_loss"] == pytest.approx(bigram_loss(corpus.train, windows, 256))
    assert rec["bigram_val_bpb"] == pytest.approx(rec["bigram_val_loss"] / math.log(2))
    assert set(COLUMNS) <= set(rec)
    assert rec["threads"] == 1 and rec["world_size"] == 1 and rec["seed"] == 0 and rec["role"] == "sweep"

    rows = csv_rows(results)
    assert len(rows) == 1
    row = rows[0]
    assert row["run_id"] == rec["run_id"] and row["status"] == "ok"
    assert all(row[c] != "" for c in COLUMNS if c != "error"), {c: row[c] for c in COLUMNS if row[c] == ""}
    assert float(row["val_bpb"]) == pytest.approx(rec["val_bpb"])
    assert json.loads((results / "runs" / f"{rec['run_id']}.json").read_text()) == rec
    assert not list(results.glob("checkpoints/*"))


def test_rerun_skips(first_run, tiny_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    rec, _ = first_run
    results = tmp_path / "results"
    before = snapshot(results)

    def no_training(*a, **k):
        raise AssertionError("a skipped run must not build a model")

    monkeypatch.setattr(harness.train, "GPT", no_training)
    again = run(tiny_cfg())
    assert again == rec
    assert "skipping" in capsys.readouterr().out
    after = snapshot(results)
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}
    assert len(csv_rows(results)) == 1


def test_skip_removes_a_checkpoint_left_by_a_kill_after_the_record(first_run, tiny_cfg, tmp_path: Path) -> None:
    """A SIGKILL between writing the record and unlinking the checkpoint leaves a stale .pt; the skip cleans it."""
    rec, _ = first_run
    stale = tmp_path / "results" / "checkpoints" / f"{rec['run_id']}.pt"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"stale")
    assert run(tiny_cfg()) == rec
    assert not stale.exists()


def test_same_seed_same_result_other_seed_differs(first_run, tiny_cfg, tmp_path: Path) -> None:
    rec, _ = first_run
    forced = run(tiny_cfg("force=true"))
    assert forced["run_id"] == rec["run_id"]
    assert forced["val_bpb"] == rec["val_bpb"]
    assert forced["train_loss"] == rec["train_loss"]
    assert len(csv_rows(tmp_path / "results")) == 1  # forced rerun replaces its row

    other = run(tiny_cfg("seed=1"))
    assert other["run_id"] != rec["run_id"]
    assert other["val_bpb"] != rec["val_bpb"]
    assert len(csv_rows(tmp_path / "results")) == 2


def test_budget_rounds_to_whole_sequences(tiny_cfg) -> None:
    rec = run(tiny_cfg("budget=1.23e9", "train.batch_size=3"))
    fpt = rec["flops_per_token"]
    seqs = round(1.23e9 / (fpt * 32))
    assert rec["tokens"] == seqs * 32 and rec["steps"] == math.ceil(seqs / 3)
    assert abs(rec["flops"] - 1.23e9) <= fpt * 32 / 2  # within half a sequence


def test_other_val_split_is_not_skipped_as_the_same_run(first_run, tiny_cfg) -> None:
    """data.val_fraction changes what val_bpb measures, so it must not reuse the 0.05-split record."""
    rec, _ = first_run
    try:
        other = run(tiny_cfg("data.val_fraction=0.5"))
    except HarnessError:  # refused as another corpus: also fine
        return
    assert other["run_id"] != rec["run_id"], "a run on another val split was skipped as already done"


# ---------------------------------------------------------------- divergence


def test_divergence_recorded(tiny_cfg, tmp_path: Path) -> None:
    rec = run(tiny_cfg("train.lr=1e6"))
    assert rec["status"] == "diverged"
    assert "non-finite" in rec["error"]
    assert not math.isfinite(rec["val_bpb"])
    rows = csv_rows(tmp_path / "results")
    assert len(rows) == 1 and rows[0]["status"] == "diverged"
    # a diverged run is not skipped next time: it is retried
    assert find_ok(tmp_path / "results", rec["run_id"]) is None


# ---------------------------------------------------------------- preemption and resume


def test_preempt_checkpoint_and_resume_match_uninterrupted(tiny_cfg, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    whole = run(tiny_cfg(f"results_dir={tmp_path / 'whole'}"))

    calls = {"n": 0}
    real = harness.train.sample_batch

    def preempting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGUSR1)  # as SLURM does before a timeout
        return real(*a, **k)

    monkeypatch.setattr(harness.train, "sample_batch", preempting)
    cfg = tiny_cfg(f"results_dir={tmp_path / 'split'}")
    with pytest.raises(SystemExit) as exc:
        run(cfg)
    assert exc.value.code == 143
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handler restored
    ckpts = list((tmp_path / "split" / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1
    assert not (tmp_path / "split" / "results.csv").exists()
    monkeypatch.setattr(harness.train, "sample_batch", real)

    resumed = run(cfg)
    assert resumed["status"] == "ok" and resumed["run_id"] == whole["run_id"]
    assert resumed["steps"] == whole["steps"] and resumed["tokens"] == whole["tokens"]
    assert resumed["val_bpb"] == whole["val_bpb"]
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    assert not list((tmp_path / "split" / "checkpoints").glob("*.pt"))  # removed once the record is written


# ---------------------------------------------------------------- token data end to end


def test_token_dir_run_uses_meta_vocab_and_bytes_per_token(compose_cfg, tmp_path: Path) -> None:
    d = tmp_path / "tok"
    d.mkdir()
    rng = np.random.default_rng(0)
    rng.integers(0, 300, 20_000).astype(np.uint16).tofile(d / "train.bin")
    rng.integers(0, 300, 2_000).astype(np.uint16).tofile(d / "val.bin")
    (d / "meta.json").write_text(json.dumps({"vocab_size": 300, "bytes_per_token": 2.0}))
    cfg = compose_cfg("model=nano", "model.seq_len=32", "train.batch_size=4", "train.eval_windows=8",
                      "train.progress=false", "train.threads=1", "data=tokens", f"data.path={d}",
                      f"data.cache_dir={tmp_path / 'cache'}", "budget=3e9", f"results_dir={tmp_path / 'res'}")
    rec = run(cfg)
    assert rec["status"] == "ok" and rec["vocab_size"] == 300
    assert rec["val_bpb"] == pytest.approx(rec["val_loss"] / math.log(2) / 2.0)
    # iid uniform tokens: no bigram model beats ln(300), and 20,000 pairs over 300 x 300 cells cost a sparse one
    # a little more; the bpb column converts as val_bpb does
    assert 0.99 * math.log(300) < rec["bigram_val_loss"] < 1.1 * math.log(300)
    assert rec["bigram_val_bpb"] == pytest.approx(rec["bigram_val_loss"] / math.log(2) / 2.0)
    assert rec["flops_per_token"] == flops_per_token(
        GPTConfig(n_layer=2, n_head=2, d_model=64, d_ff=256, seq_len=32, vocab_size=300))
    assert abs(rec["flops"] - 3e9) / 3e9 < 0.01


# ---------------------------------------------------------------- bad input: refused, nothing written


def assert_refused(cfg, match: str, watch: Path) -> str:
    before = snapshot(watch)
    with pytest.raises(HarnessError, match=match) as exc:
        run(cfg)
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and len(msg) < 400
    assert snapshot(watch) == before, "a refused run wrote something"
    return msg


def test_budget_too_small_names_the_minimum(tiny_cfg, tmp_path: Path) -> None:
    results = tmp_path / "results"
    msg = assert_refused(tiny_cfg("budget=1e8"), "budget>=", results)
    assert not results.exists()
    suggested = float(re.search(r"budget>=([0-9.e+]+)", msg).group(1))
    gcfg = GPTConfig(n_layer=2, n_head=2, d_model=64, d_ff=256, seq_len=32)
    assert suggested == pytest.approx(10 * 4 * 32 * flops_per_token(gcfg), rel=1e-2)
    plan = plan_steps(suggested, gcfg, 4, 10)  # the suggestion is enough
    assert plan.steps >= 10


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["budget=abc"], "not a number"),
        (["budget=-1e9"], "positive"),
        (["budget=inf"], "positive"),
        (["data.path=MISSING"], "does not exist"),
        (["data.path=null"], "needs data.path"),
        (["data.path=EMPTYFILE"], "fewer than one context window"),
        (["data.path=SHORTFILE"], "fewer than one context window"),
        (["data.path=EMPTYDIR"], "no file matching"),
        (["data.val_fraction=0"], "val_fraction"),
        (["model=family", "model.d_model=44"], "d_model_step"),
        (["model.n_head=3"], "n_head"),
    ],
)
def test_bad_input_refused_before_writing(tiny_cfg, tmp_path: Path, overrides: list[str], match: str) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "short.txt").write_bytes(b"tiny corpus\n")
    (tmp_path / "emptydir").mkdir()
    subst = {"MISSING": str(tmp_path / "no" / "such.txt"), "EMPTYFILE": str(tmp_path / "empty.txt"),
             "SHORTFILE": str(tmp_path / "short.txt"), "EMPTYDIR": str(tmp_path / "emptydir")}
    overrides = [next((o.replace(k, v) for k, v in subst.items() if k in o), o) for o in overrides]
    assert_refused(tiny_cfg(*overrides), match, tmp_path / "results")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["train.device=tpu"], "train.device"),
        (["train.dtype=fp8"], "train.dtype"),
        (["train.lr=fast"], "train.lr"),
        (["train.batch_size=0"], "batch_size"),
    ],
)
def test_bad_train_settings_refused_before_writing(tiny_cfg, tmp_path: Path, overrides: list[str],
                                                   match: str) -> None:
    assert_refused(tiny_cfg(*overrides), match, tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_token_values_beyond_vocab_refused(compose_cfg, tmp_path: Path) -> None:
    path = tmp_path / "tok.bin"
    np.concatenate([np.arange(5000) % 256, [256]]).astype(np.uint16).tofile(path)
    cfg = compose_cfg("model=nano", "model.seq_len=32", "train.batch_size=4", "train.progress=false",
                      "data=tokens", f"data.path={path}", "data.vocab_size=256", "data.bytes_per_token=1",
                      f"data.cache_dir={tmp_path / 'cache'}", "budget=3e9", f"results_dir={tmp_path / 'res'}")
    assert_refused(cfg, "token id 256 >= data.vocab_size=256", tmp_path / "res")
    assert not (tmp_path / "res").exists()


def test_results_dir_that_is_a_file_refused(tiny_cfg, tmp_path: Path) -> None:
    f = tmp_path / "results.txt"
    f.write_text("not a directory\n")
    assert_refused(tiny_cfg(f"results_dir={f}"), "is a file", f)


def test_results_dir_of_another_corpus_refused(tiny_cfg, tmp_path: Path) -> None:
    results = tmp_path / "results"
    rec = {c: 0 for c in COLUMNS}
    rec.update(run_id="other", status="ok", data_fingerprint="deadbeef-1", role="sweep", error="")
    write_record(results, rec)
    assert_refused(tiny_cfg(), "another corpus", results)


def test_results_csv_of_another_schema_refused(tiny_cfg, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.csv").write_text("epoch,acc\n1,0.5\n")
    before = snapshot(results)
    with pytest.raises(HarnessError, match=r"not a harness results.csv"):
        run(tiny_cfg())
    after = snapshot(results)
    assert {k: v for k, v in after.items() if k != ".lock"} == before


def test_a_warning_is_said_once_per_process(tiny_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys) -> None:
    """A sweep's jobs share joblib's worker processes, and an LR rule fitted on another corpus warns every run of
    it the same way: each process says it once (the run context still carries it)."""
    train = harness.train
    monkeypatch.setattr(train, "_WARNED", set())
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"schema": 1, "params": "nonembedding", "rule": {
        k: {"value": v, "lo": None, "hi": None, "n": 0} for k, v in (("c", 0.01), ("p", 0.0), ("q", 0.0))},
        "provenance": {"data_fingerprint": "sha256:elsewhere"}}))
    cfg = tiny_cfg("train.lr=rule", f"train.lr_rule={rule}")
    contexts = [train.prepare(cfg, 1)[0] for _ in range(2)]
    assert all(any("sha256:elsewhere" in w for w in ctx.warnings) for ctx in contexts)
    assert capsys.readouterr().err.count("fitted on corpus sha256:elsewhere") == 1
