"""harness.counting: parameter counts under three conventions and exact FLOPs/token vs FlopCounterMode."""

from __future__ import annotations

import dataclasses

import pytest

from harness.counting import (
    count_report,
    flops_per_token,
    flops_per_token_6n,
    measured_flops_per_token,
    param_counts,
)
from harness.model import GPT, GPTConfig
from harness.plan import model_config

PRESETS = ["nano", "micro", "mini", "small"]


@pytest.fixture(scope="module")
def preset_cfgs() -> dict[str, GPTConfig]:
    from hydra import compose, initialize_config_dir

    import harness.cli

    with initialize_config_dir(config_dir=harness.cli.CONF_DIR, version_base=None):
        return {p: model_config(compose("run", overrides=[f"model={p}"]).model, 256)[1] for p in PRESETS}


def _independent_counts(model: GPT) -> dict[str, int]:
    """Counts from the module's own parameters, named by role rather than by counting.py's formulas."""
    named = dict(model.named_parameters())
    total = sum(p.numel() for p in named.values())
    embeddings = named["wte.weight"].numel() + (named["wpe.weight"].numel() if "wpe.weight" in named else 0)
    matrices = sum(
        p.numel() for n, p in named.items() if n.startswith("blocks.") and p.dim() == 2
    )
    return {
        "params_total": total,
        "params_nonembedding": total - embeddings,
        "params_scaling": matrices + named["lm_head.weight"].numel(),
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_param_counts_match_the_module(preset_cfgs, preset: str) -> None:
    cfg = preset_cfgs[preset]
    model = GPT(cfg)
    counts = param_counts(cfg)
    assert counts["params_total"] == sum(p.numel() for p in model.parameters())
    assert counts == _independent_counts(model)
    # the block matrices are exactly the 2-D tensors minus embeddings and head
    assert counts["params_scaling"] < counts["params_nonembedding"] < counts["params_total"]


@pytest.mark.parametrize("preset", PRESETS)
def test_flops_per_token_match_flop_counter(preset_cfgs, preset: str) -> None:
    cfg = preset_cfgs[preset]
    exact = flops_per_token(cfg)
    measured = measured_flops_per_token(cfg)
    assert measured == pytest.approx(exact, rel=0.01)


@pytest.mark.parametrize(
    "cfg",
    [
        GPTConfig(n_layer=1, n_head=1, d_model=16, d_ff=48, seq_len=8, vocab_size=100),
        GPTConfig(n_layer=3, n_head=4, d_model=32, d_ff=80, seq_len=64, vocab_size=300),
    ],
)
def test_flops_per_token_odd_shapes(cfg: GPTConfig) -> None:
    """d_ff != 4d, vocab != 256 and long contexts: every term of the formula shows up."""
    assert measured_flops_per_token(cfg) == pytest.approx(flops_per_token(cfg), rel=0.01)
    assert param_counts(cfg) == _independent_counts(GPT(cfg))


def test_rope_has_no_position_table_and_the_same_matmul_flops() -> None:
    """Rotary embeddings add no parameter (the learned table's seq_len x d_model go) and no matmul."""
    learned = GPTConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, seq_len=16, vocab_size=100)
    rope = dataclasses.replace(learned, pos_emb="rope")
    assert param_counts(rope) == _independent_counts(GPT(rope))
    assert param_counts(learned)["params_total"] - param_counts(rope)["params_total"] == 16 * 32
    assert param_counts(rope)["params_nonembedding"] == param_counts(learned)["params_nonembedding"]
    assert measured_flops_per_token(rope) == flops_per_token(rope) == flops_per_token(learned)


def test_qk_norm_adds_a_q_and_a_k_gain_per_layer_and_no_matmul() -> None:
    """QK-norm (Wortsman et al. 2023): one RMSNorm gain of head size for the queries and one for the keys per layer."""
    plain = GPTConfig(n_layer=3, n_head=2, d_model=32, d_ff=64, seq_len=16, vocab_size=100)
    qk = dataclasses.replace(plain, qk_norm=True)
    assert param_counts(qk) == _independent_counts(GPT(qk))
    assert param_counts(qk)["params_total"] - param_counts(plain)["params_total"] == 3 * 2 * 16
    assert measured_flops_per_token(qk) == flops_per_token(qk) == flops_per_token(plain)


def test_flops_hand_computed_nano_at_context_32() -> None:
    cfg = GPTConfig(n_layer=2, n_head=2, d_model=64, d_ff=256, seq_len=32, vocab_size=256)
    d, T, f, V = 64, 32, 256, 256
    per_layer = 2 * 3 * d * d + 2 * 2 * T * d + 2 * d * d + 2 * 2 * d * f
    assert flops_per_token(cfg) == 3 * (2 * per_layer + 2 * d * V) == 737_280
    assert flops_per_token_6n(cfg) == 6 * param_counts(cfg)["params_scaling"]


def test_flop_counter_sees_attention() -> None:
    """The measured count grows with context exactly like the 2 * 2 * T * d attention term."""
    a = GPTConfig(n_layer=2, n_head=2, d_model=32, d_ff=128, seq_len=16)
    b = GPTConfig(n_layer=2, n_head=2, d_model=32, d_ff=128, seq_len=64)
    grow = measured_flops_per_token(b) - measured_flops_per_token(a)
    assert grow == pytest.approx(3 * 2 * 4 * (64 - 16) * 32, rel=0.01)
    assert flops_per_token(b) - flops_per_token(a) == 3 * 2 * 4 * (64 - 16) * 32


def test_count_report_keys() -> None:
    cfg = GPTConfig(n_layer=1, n_head=1, d_model=16, d_ff=64, seq_len=8)
    rep = count_report(cfg)
    assert abs(rep["measured_vs_exact"]) < 0.01
    assert {"params_total", "params_nonembedding", "params_scaling", "flops_per_token",
            "flops_per_token_6n", "flops_per_token_measured"} <= set(rep)
    assert "flops_per_token_measured" not in count_report(cfg, measure=False)

