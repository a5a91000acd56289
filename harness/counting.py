"""Exact parameter and FLOP counts for harness.model.GPT, with a measured cross-check.

FLOPs count every matmul of a training step (forward + backward = 3x forward, Kaplan et al. 2020, Table 1;
Hoffmann et al. 2022, Appendix F) including attention scores/values at the full context and the LM head,
which Porian et al. 2024 show matters at small scale. 6N (Kaplan et al. 2020) is reported beside it.
"""

from __future__ import annotations

from harness.shape import GPTConfig  # torch-free: planning counts every size without importing torch


def param_counts(cfg: GPTConfig) -> dict[str, int]:
    """Parameters under three conventions: total, non-embedding (Kaplan et al. 2020: total minus token and
    position embeddings) and scaling (nanochat: weight matrices of the blocks plus the LM head). Rotary
    embeddings (pos_emb="rope") have no parameters; their rotations are elementwise, not matmul FLOPs."""
    d, V, T, L = cfg.d_model, cfg.vocab_size, cfg.seq_len, cfg.n_layer
    block_matrices = 4 * d * d + 2 * d * cfg.d_ff  # qkv (3d^2) + proj (d^2) + mlp up/down
    norms = (2 * L + 1) * d + (2 * L * (d // cfg.n_head) if cfg.qk_norm else 0)  # qk_norm: a q and a k gain per layer
    embeddings = V * d + (T * d if cfg.pos_emb == "learned" else 0)  # rope has no position table
    lm_head = d * V
    total = embeddings + L * block_matrices + norms + lm_head
    return {
        "params_total": total,
        "params_nonembedding": total - embeddings,
        "params_scaling": L * block_matrices + lm_head,
    }


def flops_per_token(cfg: GPTConfig) -> int:
    """Exact matmul FLOPs per trained token (forward + backward) at context cfg.seq_len.

    Per layer and token, forward: QKV 2*3d^2, scores 2*T*d, values 2*T*d, output 2d^2, MLP 2*2*d*d_ff;
    plus the LM head 2*d*V. Backward costs twice the forward (grads w.r.t. inputs and weights)."""
    d, T = cfg.d_model, cfg.seq_len
    per_layer = 2 * 3 * d * d + 2 * T * d + 2 * T * d + 2 * d * d + 2 * 2 * d * cfg.d_ff
    forward = cfg.n_layer * per_layer + 2 * d * cfg.vocab_size
    return 3 * forward


def flops_per_token_6n(cfg: GPTConfig) -> int:
    """The 6N approximation (Kaplan et al. 2020) with N = params_scaling, i.e. without the attention term."""
    return 6 * param_counts(cfg)["params_scaling"]


def measured_flops_per_token(cfg: GPTConfig) -> float:
    """FLOPs per token counted by torch.utils.flop_counter on one real forward + backward pass.

    Attention runs on the math backend here because FlopCounterMode has no formula for the fused CPU
    flash kernel; the math backend computes the same matmuls as explicit bmm calls, which it counts."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from harness.model import GPT

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT(cfg)
    idx = torch.randint(0, cfg.vocab_size, (1, cfg.seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(idx, idx)
        loss.backward()
    return counter.get_total_flops() / cfg.seq_len


def count_report(cfg: GPTConfig, measure: bool = True) -> dict[str, float | int]:
    """Everything `harness-count` prints for one model."""
    out: dict[str, float | int] = dict(param_counts(cfg))
    out["flops_per_token"] = flops_per_token(cfg)
    out["flops_per_token_6n"] = flops_per_token_6n(cfg)
    if measure:
        measured = measured_flops_per_token(cfg)
        out["flops_per_token_measured"] = measured
        out["measured_vs_exact"] = measured / out["flops_per_token"] - 1.0
    return out
