"""harness.curves and harness.trackers: every run's learning curve (crash-safe, continued on resume), the report
figure, and the optional trackers (TensorBoard event files, W&B offline, bad input)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path

import pytest

import harness.train
from harness.curves import curve_path, curves_plots, live_path, load_curves, read_curve, read_live, val_steps
from harness.errors import HarnessError
from harness.results import read_records
from harness.train import run

pytestmark = pytest.mark.usefixtures("restore_torch_threads")
CURVE = ["train.log_every=4", "train.curve_points=4", "train.curve_eval_windows=4"]


def _kinds(points: list[dict], kind: str) -> list[dict]:
    return [p for p in points if p["kind"] == kind]


def test_val_steps_spread_evenly_and_end_at_the_last_step() -> None:
    assert val_steps(32, 4) == {8, 16, 24, 32}
    assert val_steps(3, 10) == {1, 2, 3}
    assert val_steps(100, 0) == set()
    assert max(val_steps(37, 10)) == 37 and len(val_steps(37, 10)) == 10


def test_every_run_writes_its_curve_beside_its_record(tiny_cfg, tmp_path: Path) -> None:
    rec = run(tiny_cfg(*CURVE))
    results = tmp_path / "results"
    points = read_curve(curve_path(results, rec["run_id"]))
    assert points[0]["kind"] == "meta" and points[0]["steps"] == rec["steps"] == 32
    train = _kinds(points, "train")
    assert [p["step"] for p in train] == [*range(4, 33, 4)]
    assert train[-1]["loss"] == pytest.approx(rec["train_loss"])  # the record's loss is the curve's last window
    assert train[0]["loss"] > train[-1]["loss"]  # it learns
    val = _kinds(points, "val")
    assert [p["step"] for p in val] == [8, 16, 24, 32]
    assert all(p["bpb"] > 0 and p["loss"] > 0 for p in val)
    assert not live_path(results, rec["run_id"]).exists()  # the live state goes once the record is written
    assert read_live(results) == {}


def test_resume_continues_one_curve_without_duplicates(tiny_cfg, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    whole = run(tiny_cfg(*CURVE, f"results_dir={tmp_path / 'whole'}"))
    real = harness.train.sample_batch
    calls = {"n": 0}

    def preempting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 10:
            os.kill(os.getpid(), signal.SIGUSR1)  # checkpoint at the end of step 10
        return real(*a, **k)

    monkeypatch.setattr(harness.train, "sample_batch", preempting)
    cfg = tiny_cfg(*CURVE, f"results_dir={tmp_path / 'split'}")
    with pytest.raises(SystemExit):
        run(cfg)
    monkeypatch.setattr(harness.train, "sample_batch", real)
    path = curve_path(tmp_path / "split", whole["run_id"])
    live = read_live(tmp_path / "split")[whole["run_id"]]
    assert live["step"] == 8 and live["steps"] == 32 and live["pid"] == os.getpid()  # a stopped run stays visible
    # a run killed later than its checkpoint logged points past it, and a kill mid-append tore the last line
    with open(path, "a") as f:
        f.write(json.dumps({"kind": "train", "step": 12, "loss": 999.0}) + "\n" + '{"kind": "tra')
    resumed = run(cfg)
    assert resumed["val_bpb"] == whole["val_bpb"]
    a, b = read_curve(path), read_curve(curve_path(tmp_path / "whole", whole["run_id"]))
    assert sum(p["kind"] == "meta" for p in a) == 1
    for kind, key in (("train", "loss"), ("val", "bpb")):
        assert [p["step"] for p in _kinds(a, kind)] == [p["step"] for p in _kinds(b, kind)]
        assert [p[key] for p in _kinds(a, kind)] == pytest.approx([p[key] for p in _kinds(b, kind)], rel=1e-5)


def test_curves_figure_per_budget(tiny_cfg, tmp_path: Path) -> None:
    run(tiny_cfg(*CURVE))
    run(tiny_cfg(*CURVE, "budget=2e9"))
    run(tiny_cfg(*CURVE, "role=holdout", "budget=4e9"))
    results = tmp_path / "results"
    assert len(load_curves(results)) == 3
    plots = curves_plots(results, read_records(results))
    assert [p.name for p in plots] == ["curves.png"] and plots[0].png.startswith(b"\x89PNG")
    assert curves_plots(tmp_path / "nothing", {}) == []


# ---------------------------------------------------------------- trackers


def test_unknown_tracker_refused_before_anything_is_written(tiny_cfg, tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"unknown train.tracker='bogus'; use one of none, tensorboard, wandb"):
        run(tiny_cfg("train.tracker=bogus"))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_missing_tracker_package_names_the_extra(tiny_cfg, tmp_path: Path, kind: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == kind else real(name, *a))
    with pytest.raises(HarnessError, match=rf"needs the '{kind}' package; install it with pip install -e '.\[{kind}\]'"):
        run(tiny_cfg(f"train.tracker={kind}"))
    assert not (tmp_path / "results").exists()


def test_tensorboard_writes_event_files(tiny_cfg, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rec = run(tiny_cfg(*CURVE, "train.tracker=tensorboard"))
    logdir = tmp_path / "results" / "tracker" / "results" / rec["run_id"]
    assert list(logdir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [*range(4, 33, 4)]
    assert [e.step for e in acc.Scalars("val/bpb")] == [8, 16, 24, 32]
    assert acc.Scalars("final/val_bpb")[0].value == pytest.approx(rec["val_bpb"])


def test_wandb_offline_run(tiny_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)  # the default must be offline
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):  # nothing under $HOME
        monkeypatch.setenv(var, str(tmp_path / "home" / var.lower()))
    rec = run(tiny_cfg(*CURVE, "train.tracker=wandb", f"train.tracker_dir={tmp_path / 'wb'}"))
    runs = list((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{rec['run_id']}"))
    assert runs and list(runs[0].glob("*.wandb"))
    wandb.teardown()  # the W&B service writes the run file out when it stops (at the latest when the process exits)
    data = next(runs[0].glob("*.wandb")).read_bytes()
    assert b"train/loss" in data and b"val/bpb" in data and b"results" in data  # curve keys and the group


def test_sweep_dry_run_refuses_a_bad_tracker(text_corpus: Path, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from harness import CONF_DIR
    from harness.sweep import sweep

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("sweep_run", overrides=["data=text", f"data.path={text_corpus}", "train.tracker=tensorbord",
                                              f"results_dir={tmp_path / 'r'}"])
    with pytest.raises(HarnessError, match=r"unknown train\.tracker='tensorbord'"):
        sweep(cfg)
    assert not (tmp_path / "r").exists()
