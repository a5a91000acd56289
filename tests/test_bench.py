"""benchmarks/throughput.py: a tiny end-to-end run, and it timing harness.train.Trainer's own step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.counting import flops_per_token
from harness.data import load_corpus
from harness.plan import model_config
from harness.runtime import pick_device, pick_dtype
from harness.train import Trainer, run

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("throughput")


def test_tiny_benchmark_writes_table_and_json(bench, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench" / "t.json"
    res = bench.main(["--presets", "nano,family:32", "--dtypes", "fp32,bf16", "--threads", "1", "--seq-len", "32",
                      "--batch-size", "4", "--steps", "2", "--repeats", "2", "--warmup", "1", "--matmul-sizes", "64,128",
                      "--data", "random", "--no-compile", "--out", str(out)])
    text = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"]))
    assert set(saved["matmul_peak"]) == {"fp32@1", "bf16@1"}
    assert all(p["gflops"] > 0 and set(p["by_size"]) == {"64", "128"} for p in saved["matmul_peak"].values())
    fam = bench.preset_config("family:32", 256, 32)[0]
    assert fam.startswith("family-d32")
    assert [(r["preset"], r["dtype"]) for r in saved["rows"]] == [("nano", "fp32"), ("nano", "bf16"), (fam, "fp32"), (fam, "bf16")]
    for r in saved["rows"]:
        assert r["threads"] == 1 and r["batch_size"] == 4 and r["seq_len"] == 32
        assert r["windows"] == 2 and r["steps_per_window"] == 2 and len(r["tokens_per_s_windows"]) == 2
        assert r["tokens_per_s"] == pytest.approx(4 * 32 / (r["step_ms"] / 1e3))
        assert r["achieved_gflops"] == pytest.approx(r["flops_per_token"] * r["tokens_per_s"] / 1e9)
        assert r["mfu"] == pytest.approx(r["achieved_gflops"] / saved["matmul_peak"][f"{r['dtype']}@1"]["gflops"])
        assert r["peak_mem_mb"] > 0 and 0 <= r["sampler_frac"] < 1 and math.isfinite(r["loss_check"])
    assert saved["rows"][1]["torch_dtype"] == "bfloat16" and saved["rows"][0]["torch_dtype"] == "float32"
    assert "MFU" in text and fam in text and str(out) in text
    assert saved["compile"] is None


def test_bench_step_matches_train_loop(bench, tiny_cfg) -> None:
    """The benchmark times harness.train.Trainer.step: same seed -> the same training loss as run()."""
    cfg = tiny_cfg("train.log_every=8", f"budget={128 * 32 * 737_280}")  # 128 sequences: 32 full steps of 4
    rec = run(cfg)
    assert rec["steps"] == 32 and rec["tokens"] == 128 * 32
    _, gcfg = model_config(cfg.model, 256)
    assert flops_per_token(gcfg) == 737_280
    corpus = load_corpus(cfg.data, gcfg.seq_len)
    device = pick_device("cpu")
    dtype = pick_dtype(str(cfg.train.dtype), device, gcfg.d_model, int(cfg.train.cpu_bf16_min_width))
    torch.set_num_threads(1)
    tr = bench.make_trainer(gcfg, cfg.train, device, dtype, 4, corpus.train, seed=int(cfg.seed), total_steps=32)
    assert isinstance(tr, Trainer)
    for _ in range(32):
        tr.step()
    assert tr.train_loss == pytest.approx(rec["train_loss"], rel=1e-6)


def test_ab_mode_compares_variants(bench, tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    res = bench.main(["--presets", "nano", "--dtypes", "bf16", "--threads", "1", "--seq-len", "32", "--batch-size", "4",
                      "--steps", "2", "--repeats", "2", "--warmup", "1", "--matmul-sizes", "64", "--data", "random",
                      "--ab", "base,attn_math+foreach_adamw,base@8", "--out", str(out)])
    rows = json.loads(out.read_text())["ab"]
    assert rows == json.loads(json.dumps(res["ab"]))
    assert [(r["variant"], r["batch_size"]) for r in rows] == [("base", 4), ("attn_math+foreach_adamw", 4), ("base@8", 8)]
    assert rows[0]["ratio"] == 1.0 and all(r["tokens_per_s"] > 0 and len(r["tokens_per_s_windows"]) == 2 for r in rows)
    with pytest.raises(SystemExit, match="unknown variant"):
        bench.main(["--presets", "nano", "--threads", "1", "--matmul-sizes", "64", "--data", "random", "--ab", "nope",
                    "--out", str(out)])


def test_compile_probe_is_bounded(bench) -> None:
    args = bench.parse_args(["--presets", "nano", "--data", "random", "--compile-timeout", "0.5"])
    res = bench.compile_probe(args, 1)
    assert res["status"] == "skipped" and "0.5 s" in res["note"]
