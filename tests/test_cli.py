"""The console scripts as a user runs them: from any directory, one `error:` line and a non-zero exit on bad input.

Each subprocess pays ~2 s of `import torch`, so there are only a few of them; the pure functions behind the
scripts are tested in test_train.py and test_counting.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness.counting import flops_per_token, param_counts
from harness.model import GPTConfig
from harness.results import COLUMNS


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_count_prints_json(run_cli) -> None:
    proc = run_cli("harness-count", "model=micro")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # stdout is exactly one JSON document
    keys = {"params_total", "params_nonembedding", "params_scaling", "flops_per_token", "flops_per_token_6n",
            "flops_per_token_measured"}
    assert keys <= set(out)
    micro = GPTConfig(n_layer=4, n_head=4, d_model=128, d_ff=512, seq_len=128, vocab_size=256)
    for k, v in param_counts(micro).items():
        assert out[k] == v
    assert out["flops_per_token"] == flops_per_token(micro)
    assert abs(out["flops_per_token_measured"] / out["flops_per_token"] - 1) < 0.01


def test_train_from_another_directory(run_cli, tiny_overrides: list[str], tmp_path: Path) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    results = tmp_path / "results"
    proc = run_cli("harness-train", *tiny_overrides, f"results_dir={results}", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "status=ok" in proc.stdout
    assert list(cwd.iterdir()) == [], "harness-train wrote into the working directory (outputs/, .hydra, logs)"
    with open(results / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[: len(COLUMNS)] == COLUMNS
        rows = list(reader)
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok" and row["model"] == "nano"
    assert abs(float(row["flops"]) / float(row["budget_flops"]) - 1) < 0.01
    assert 0 < float(row["val_bpb"]) < 8
    assert [p.name for p in (results / "runs").iterdir()] == [f"{row['run_id']}.json"]


def test_diverged_run_exits_nonzero(run_cli, tiny_overrides: list[str], tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    proc = run_cli("harness-train", *tiny_overrides, "train.lr=1e6", "results_dir=res", cwd=cwd)
    assert proc.returncode != 0
    assert any(line.startswith("error:") and "diverged" in line for line in error_lines(proc.stderr)), proc.stderr
    # a relative results_dir is taken relative to the caller's directory (Hydra does not chdir)
    with open(cwd / "res" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["diverged"]
    assert sorted(p.name for p in cwd.iterdir()) == ["res"]


def test_unknown_preset_fails(run_cli, tmp_path: Path) -> None:
    proc = run_cli("harness-train", "model=nope", f"results_dir={tmp_path / 'res'}")
    assert proc.returncode != 0
    assert "nope" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "res").exists()


def test_budget_too_small_one_error_line(run_cli, tiny_overrides: list[str], tmp_path: Path) -> None:
    proc = run_cli("harness-train", *tiny_overrides, "budget=1e7", f"results_dir={tmp_path / 'res'}")
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "budget>=" in lines[0]
    assert not (tmp_path / "res").exists()


def test_commands_start_without_the_analysis_stack() -> None:
    """Every harness command imports harness.cli, and every sweep job harness.sweep: training and planning must not
    pay for pandas, scipy's stats and optimize, matplotlib or the analysis package at start (together ~2 s here,
    more than a bad-input command's whole run); they load when a fit runs."""
    import subprocess
    import sys

    probe = "\n".join([
        "import sys, harness.cli, harness.train, harness.sweep",
        "heavy = ('scipy.stats', 'scipy.optimize', 'matplotlib', 'pandas', 'harness.analysis')",
        "print(' '.join(p for p in heavy if any(m.startswith(p) for m in sys.modules)))",
    ])
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"a harness command imports {out.stdout.strip()} at start"


@pytest.mark.parametrize("sweep", ["demo", "cpu", "lr"])
def test_a_plan_prints_without_importing_torch(sweep: str, stdlib_cache: Path, tmp_path: Path) -> None:
    """`harness-sweep print=plan` (the dry run scripts/sweep.sh prints before every round) counts, chains and
    tables every run without torch, whose import is most of such a command's time (2.6 s of ~5 s on the AMD
    box); the trainers load only in a job. A WSD sweep (demo, cpu: chains) and the LR sweep are both planned."""
    import subprocess
    import sys

    probe = "\n".join([
        "import sys",
        f"sys.argv = ['harness-sweep', 'sweep={sweep}', 'print=plan', 'data.cache_dir={stdlib_cache}',",
        f"            'results_dir={tmp_path / 'res'}']",
        "from harness.cli import sweep_main",
        "try:",
        "    sweep_main()",
        "finally:",
        "    print('TORCH', 'torch' in sys.modules)",
    ])
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "count=" in out.stdout, out.stdout  # the plan itself was printed
    assert out.stdout.strip().splitlines()[-1] == "TORCH False", "the dry run imported torch"


@pytest.mark.parametrize("bad", ["train.warmup_frac=2", "role=holdoutt"])
def test_out_of_range_train_setting_one_error_line(run_cli, tiny_overrides: list[str], tmp_path: Path,
                                                   bad: str) -> None:
    """harness-train trained such a run and wrote its row; now: exit 2, one `error:` line naming it, nothing written."""
    proc = run_cli("harness-train", *tiny_overrides, bad, f"results_dir={tmp_path / 'res'}")
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and bad.split("=")[0] in lines[0], proc.stderr
    assert not (tmp_path / "res").exists()


def test_ctrl_c_outside_a_training_step_is_one_error_line_exit_130(capsys: pytest.CaptureFixture[str]) -> None:
    """A KeyboardInterrupt in analysis or planning: one line saying how to resume, not a 40-line traceback."""
    from omegaconf import OmegaConf

    from harness.cli import guarded

    def interrupted(cfg):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exc:
        guarded(interrupted)(OmegaConf.create({}))
    err = capsys.readouterr().err
    assert exc.value.code == 130 and err == ("error: interrupted; rerun the same command to resume (finished runs "
                                             "and checkpoints are kept)\n")
