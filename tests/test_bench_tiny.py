"""benchmarks/tiny.py: a tiny end-to-end run writes ratio_vs_reference and packed_speedup, and its reference loop
is the same model as the harness's (same parameters, same loss given the same weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def tiny(load_benchmark):
    return load_benchmark("tiny")


def test_reference_is_the_same_model(tiny) -> None:
    from nanogpt_ref import RefGPT

    cfg = GPTConfig(2, 2, 32, 128, 16, 64)
    torch.manual_seed(0)
    ours = GPT(cfg)
    torch.manual_seed(0)
    ref = RefGPT(cfg)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert [p.shape for p in ours.parameters()] == [p.shape for p in ref.parameters()]
    ref.load_state_dict(dict(zip(ref.state_dict(), ours.state_dict().values())))  # same order, same shapes
    x = torch.randint(0, 64, (3, 16))
    torch.testing.assert_close(ours(x, x)[1], ref(x, x)[1])


def test_tiny_benchmark_writes_both_measurements(tiny, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the trainers it times write their curve/live files under results_dir "."
    out = tmp_path / "tiny.json"
    res = tiny.main(["--sizes", "16", "--nano-threads", "1", "--k", "2", "--seq-len", "32", "--batch-size", "4",
                     "--repeats", "2", "--warmup", "1", "--window-s", "0.01", "--data", "random", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["ratio_vs_reference"]) == {"family-d16-L2@1", "nano@1"}
    assert set(saved["packed_speedup"]) == {"family-d16-L2"}
    assert all(v > 0 for v in [*saved["ratio_vs_reference"].values(), *saved["packed_speedup"].values()])
    assert "shared" in saved["machine"] and saved["ratio_vs_reference"] == res["ratio_vs_reference"]
    assert "| family-d16-L2 | 1 |" in capsys.readouterr().out
