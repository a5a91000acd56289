"""harness.track_fits: an analysis' plots and fits logged to the sweep's tracker group (harness-analyze and
harness-validate), TensorBoard event files, W&B offline (skipped when wandb is not installed), and bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import harness.cli
from harness import CONF_DIR
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.data import load_corpus
from harness.errors import HarnessError
from harness.track_fits import analysis_target, analyze_target, detect_tracker, fit_scalars, log_analysis, sweep_target

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "results" / "demo"  # a committed sweep's analysis: fits.json (with a held-out run) and its PNGs


def _analyze_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("analyze", overrides=list(overrides))


def _sweep_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=[f"results_dir={tmp_path / 'res'}", *overrides])


def _results_csv(tmp_path: Path) -> Path:
    path = tmp_path / "sweep" / "results.csv"
    path.parent.mkdir(parents=True)
    isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes_per_budget=5, noise=0.005, seed=4).to_csv(path, index=False)
    return path


def _demo_files() -> dict[str, Path]:
    return {p.name: p for p in sorted(DEMO.iterdir()) if p.suffix in (".png", ".json")}


def _events(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_fit_scalars_are_the_fits_key_numbers() -> None:
    doc = json.loads((DEMO / "fits.json").read_text())
    s = fit_scalars(doc)
    for name in ("approach2", "approach3"):
        for k in ("a", "b"):
            assert s[f"{name}/{k}"] == doc[name][k]["value"]
            assert s[f"{name}/{k}_lo"] == doc[name][k]["lo"] and s[f"{name}/{k}_hi"] == doc[name][k]["hi"]
    assert s["frontier/E"] == doc["frontier"]["E"]["value"] and "approach3/converged" not in s  # bools left out
    p = doc["predictions"][0]
    assert s[f"predict/C={p['C']:.3g}/approach3/loss"] == p["approach3"]["loss"]["value"]
    v = doc["validation"][0]
    c = v["comparison"]["approach2"]
    label = f"holdout/C={v['budget']:.3g}"
    assert s[f"{label}/actual"] == v["actual"] and s[f"{label}/approach2/rel_error"] == c["rel_error"]
    assert s[f"{label}/approach2/inside"] == float(c["inside"])
    row = doc["backtest"]["summary"][0]
    key = f"backtest/{row['approach']}/{row['quantity']}"
    assert s[f"{key}/mean_abs_rel_error"] == row["mean_abs_rel_error"]
    assert s[f"{key}/coverage"] == row["inside"] / row["n_intervals"]
    assert s[f"{key}/coverage_with_target"] == row["inside_with_target"] / row["n_with_target"]
    assert s[f"{label}/approach2/inside_prediction_interval"] == float(c["inside_prediction_interval"])
    assert all(isinstance(x, float) for x in s.values())


def test_fit_scalars_of_a_ladder_table() -> None:
    doc = json.loads((REPO / "results" / "ladder" / "fits.json").read_text())
    s = fit_scalars(doc)
    law = doc["laws"]["L(N)"]["irreducible"]
    assert s["laws/L(N)/irreducible/alpha"] == law["alpha"]["value"]
    model = doc["targets"]["model"]
    p = model["predictions"][0]
    assert s[f"target/{p['law']}/loss"] == p["loss"]["value"] and s["holdout/actual"] == model["actual"]
    r = doc["targets"]["validation"][0]
    assert s[f"holdout/{r['law']}/rel_error"] == r["rel_error"]


def test_detect_tracker_reads_what_the_sweep_left(tmp_path: Path) -> None:
    d = tmp_path / "tracker"
    assert detect_tracker(d) == "none"
    (d / "wandb").mkdir(parents=True)
    assert detect_tracker(d) == "wandb"
    (d / "sweep" / "run1").mkdir(parents=True)
    (d / "sweep" / "run1" / "events.out.tfevents.1.host").write_bytes(b"")
    assert detect_tracker(d) == "tensorboard"


def test_harness_analyze_logs_plots_and_fits_to_tensorboard(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorboard")
    path = _results_csv(tmp_path)
    analyze = harness.cli.analyze_main.__wrapped__  # harness-analyze without Hydra's command-line wrapper
    assert analyze(_analyze_cfg(f"results={path}", "bootstrap=0", "tracker=tensorboard")) in (0, None)
    logdir = tmp_path / "sweep" / "tracker" / "sweep" / "analysis"  # <results dir>/tracker/<group>/analysis
    assert f"tracker (tensorboard): the analysis' plots and fits logged to {logdir} (group sweep)" in capsys.readouterr().out
    fits = json.loads((tmp_path / "sweep" / "analysis" / "fits.json").read_text())
    acc = _events(logdir)
    pngs = sorted(p.stem for p in (tmp_path / "sweep" / "analysis").glob("*.png"))
    assert pngs and sorted(acc.Tags()["images"]) == [f"plots/{n}" for n in pngs]
    assert [e.value for e in acc.Scalars("approach2/a")] == pytest.approx([fits["approach2"]["a"]["value"]])
    assert "backtest/frontier/loss/mean_abs_rel_error" in acc.Tags()["scalars"]
    # tracker=null (the default) follows the sweep: the TensorBoard files now there; logging again replaces
    target = analyze_target(_analyze_cfg(f"results={path}"))
    assert (target.kind, target.group) == ("tensorboard", "sweep")
    assert log_analysis(target, {"fits": tmp_path / "sweep" / "analysis" / "fits.json"}) == logdir
    assert len(_events(logdir).Scalars("approach2/a")) == 1


@pytest.mark.parametrize("override, message", [
    ("tracker=tensorbord", "error: unknown tracker='tensorbord'; use one of none, tensorboard, wandb"),
    ("tracker=wandb", "error: tracker=wandb needs the 'wandb' package; install it with pip install -e '.[wandb]' "
                      "(or set tracker=none)"),
])
def test_bad_tracker_is_one_error_before_anything_is_written(tmp_path: Path, override: str, message: str,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    path = _results_csv(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        harness.cli.analyze_main.__wrapped__(_analyze_cfg(f"results={path}", "bootstrap=0", override))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.csv"]  # no analysis, no tracker files


def test_validate_target_follows_the_sweeps_tracker(tmp_path: Path) -> None:
    t = sweep_target(_sweep_cfg(tmp_path, "train.tracker=tensorboard"))
    assert (t.kind, t.logdir, t.group) == ("tensorboard", tmp_path / "res" / "tracker", "res")
    t = sweep_target(_sweep_cfg(tmp_path, "train.tracker=tensorboard", f"train.tracker_dir={tmp_path / 'tb'}"))
    assert t.logdir == tmp_path / "tb"
    assert sweep_target(_sweep_cfg(tmp_path, "train.tracker=tensorboard", "analysis.tracker=none")).kind == "none"
    assert sweep_target(_sweep_cfg(tmp_path)).kind == "none"
    with pytest.raises(HarnessError, match=r"unknown tracker='bogus'"):
        sweep_target(_sweep_cfg(tmp_path, "analysis.tracker=bogus"))
    assert analyze_target(_analyze_cfg(f"results={tmp_path}")).kind == "none"  # a table without a tracker dir


def test_harness_validate_logs_the_analysis_beside_the_held_out_run(text_corpus: Path, tmp_path: Path,
                                                                     restore_torch_threads) -> None:
    """The end of scripts/sweep.sh: the held-out run and the analysis land in one TensorBoard group."""
    pytest.importorskip("tensorboard")
    budgets = (3e8, 1e9, 3e9)
    cfg = _sweep_cfg(tmp_path, "data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}",
                     "model.seq_len=32", "train.batch_size=4", "train.eval_windows=8", "train.progress=false",
                     "train.checkpoint_every_s=0", "sweep.holdout.threads=1", "sweep.min_steps=5",
                     f"sweep.budgets=[{','.join(map(str, budgets))}]", "analysis.bootstrap=20",
                     "train.tracker=tensorboard", "sweep.holdout.multiples=null",  # one held-out run, at 4x
                     "++analysis.backtest.enabled=false")  # the analysis' backtest scalars: the test above
    df = isoflop_sweep(Law(), budgets=budgets, sizes_per_budget=5, noise=0.002, seed=0)
    df["data_fingerprint"] = load_corpus(cfg.data, 32).fingerprint
    (tmp_path / "res").mkdir()
    df.to_csv(tmp_path / "res" / "results.csv", index=False)
    assert harness.cli.validate_main.__wrapped__(cfg) in (0, 1, None)
    holdout = pd.read_csv(tmp_path / "res" / "results.csv").query("role == 'holdout'").run_id.tolist()
    group = tmp_path / "res" / "tracker" / "res"
    assert sorted(p.name for p in group.iterdir()) == sorted(["analysis", *holdout])
    acc = _events(group / "analysis")
    fits = json.loads((tmp_path / "res" / "fits.json").read_text())
    label = f"holdout/C={fits['validation'][0]['budget']:.3g}"
    assert acc.Scalars(f"{label}/actual")[0].value == pytest.approx(fits["validation"][0]["actual"])
    assert "plots/holdout" in acc.Tags()["images"] and "plots/curves" in acc.Tags()["images"]


def test_wandb_offline_analysis_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the default must be offline
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "home" / var.lower()))
    target = analysis_target(tmp_path / "demo", "wandb", None)
    files = _demo_files()
    where = log_analysis(target, files)
    assert where is not None and where.parent == tmp_path / "demo" / "tracker" / "wandb"
    assert where.name.startswith("offline-run-")
    import wandb

    wandb.teardown()  # the W&B service writes the run file out when it stops (at the latest when the process exits)
    data = next(where.glob("run-*.wandb")).read_bytes()
    assert b"approach2/a" in data and b"demo" in data  # a logged key and the group
    images = sorted(p.name.split("_0_")[0] for p in (where / "files" / "media" / "images" / "plots").glob("*.png"))
    assert images == sorted(Path(n).stem for n in files if n.endswith(".png"))
