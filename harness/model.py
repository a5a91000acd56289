"""A GPT-style decoder small enough to read in one sitting (after nanoGPT's model.py).

Pre-norm blocks, causal scaled_dot_product_attention, learned position embeddings (or rotary ones, RoPE: Su et
al. 2021, with `pos_emb="rope"`), optionally RMS-normalised queries and keys (`qk_norm`, Wortsman et al. 2023), an
untied LM head and no biases, so every parameter is either an embedding, a norm gain or a matrix that counting.py
can name.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.shape import GPTConfig  # the shape dataclass lives torch-free, for planning and counting

__all__ = ["GPT", "GPTConfig", "Rotary"]


def rope_tables(cfg: GPTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [seq_len, head_dim/2] of rotary embeddings (Su et al. 2021, RoFormer), base 10000."""
    half = cfg.d_model // cfg.n_head // 2
    inv_freq = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32) / half)
    angles = torch.outer(torch.arange(cfg.seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., T, head_dim] with each pair of channels (i, i + head_dim/2) rotated by position t's angle, so that
    q.k depends on positions only through their difference."""
    T, half = x.shape[-2], x.shape[-1] // 2
    cos, sin = cos[:T].to(x.dtype), sin[:T].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Rotary(nn.Module):
    """RoPE for the queries and keys of one attention layer; its tables are buffers rebuilt from the config, not
    parameters and not saved (harness.model.GPT and harness.ensemble.EnsembleGPT both use it)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        cos, sin = rope_tables(cfg)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rotate(q, self.cos, self.sin), rotate(k, self.cos, self.sin)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.rotary = Rotary(cfg) if cfg.pos_emb == "rope" else None
        hd = cfg.d_model // cfg.n_head
        self.q_norm, self.k_norm = (nn.RMSNorm(hd), nn.RMSNorm(hd)) if cfg.qk_norm else (None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        if x.device.type == "cpu" and q.dtype == torch.bfloat16:
            # torch's CPU flash-attention backward runs ~3.5x slower in bf16 than in fp32 (scripts/bench.sh):
            # attention stays fp32 under CPU bf16 autocast, the matmuls around it stay bf16.
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer returning logits and, given targets, the mean cross-entropy in nats."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.pos_emb == "learned":
            self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=False)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2 scaled init of the residual projections (Radford et al. 2019).
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = idx.shape[1]
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence of length {T} exceeds seq_len={self.cfg.seq_len}")
        x = self.wte(idx)
        if self.cfg.pos_emb == "learned":
            x = x + self.wpe.weight[:T]  # = self.wpe(arange(T)), without an index op and its backward
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
