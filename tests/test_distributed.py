"""harness-train under torchrun (2 CPU processes, gloo): each rank trains on its slice of the same global batch,
so the run matches a single process with that global batch, and rank 0 writes the one row."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.train import run

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

# 3.02e9 FLOPs buy exactly 128 sequences of nano at context 32 (an even count, so 1 and 2 processes train the
# same sequences): 32 steps of a global batch of 4 (2 per rank).
ARGS = ["model=nano", "model.seq_len=32", "train.batch_size=4", "train.eval_windows=8", "train.progress=false",
        "train.threads=1", "train.dtype=fp32", "train.checkpoint_every_s=0", "budget=3.02e9"]


def read_rows(results: Path) -> list[dict[str, str]]:
    with open(results / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_torchrun_two_ranks_match_one_process(compose_cfg, text_corpus: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "harness-train"
    if not exe.exists():
        pytest.skip(f"harness-train not installed beside {sys.executable}")
    data = ["data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}"]
    ddp_dir = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "HYDRA_FULL_ERROR"):
        env.pop(k, None)
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(exe),
         *ARGS, *data, f"results_dir={ddp_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    single = run(compose_cfg(*ARGS, *data, f"results_dir={tmp_path / 'single'}"))
    rows = read_rows(ddp_dir)
    assert len(rows) == 1, "rank 0 alone writes the row"
    assert len(list(ddp_dir.glob("runs/*.json"))) == 1
    assert not list(ddp_dir.glob("checkpoints/*"))
    ddp = rows[0]
    assert ddp["status"] == "ok" and int(ddp["world_size"]) == 2 and single["world_size"] == 1
    assert ddp["run_id"] == single["run_id"]
    assert (int(ddp["steps"]), int(ddp["tokens"]), int(ddp["batch_size"])) == (single["steps"], single["tokens"],
                                                                               single["batch_size"]) == (32, 4096, 4)
    assert float(ddp["flops"]) == single["flops"]
    assert float(ddp["val_bpb"]) == pytest.approx(single["val_bpb"], rel=1e-4)
    # train_loss is the loss of the global batch (both slices), as a single process measures it
    assert float(ddp["train_loss"]) == pytest.approx(single["train_loss"], rel=1e-3)


def test_batch_not_divisible_by_world_refused(compose_cfg, text_corpus: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    cfg = compose_cfg(*ARGS, "train.batch_size=3", "data=text", f"data.path={text_corpus}",
                      f"data.cache_dir={tmp_path / 'cache'}", f"results_dir={tmp_path / 'res'}")
    with pytest.raises(HarnessError, match="divisible by the number of processes"):
        run(cfg)
    assert not (tmp_path / "res").exists()
