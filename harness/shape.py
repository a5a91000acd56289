"""The shape of one model, GPTConfig: everything counting, planning and training need to know about it.

Kept apart from harness.model (and free of torch) so that planning a sweep, counting its FLOPs and printing its
plan never import torch; harness.model re-exports it beside the GPT it configures.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPTConfig:
    """Shape of one model; everything counting and training needs to know about it."""

    n_layer: int
    n_head: int
    d_model: int
    d_ff: int
    seq_len: int = 128
    vocab_size: int = 256
    pos_emb: str = "learned"  # learned: a position table added to the input; rope: q and k rotated per position
    qk_norm: bool = False  # RMS-normalise each head's q and k (with a gain) before attention: Wortsman et al. 2023

    def __post_init__(self) -> None:
        if min(self.n_layer, self.n_head, self.d_model, self.d_ff, self.seq_len, self.vocab_size) < 1:
            raise ValueError(f"all model dimensions must be positive, got {self}")
        if self.d_model % self.n_head:
            raise ValueError(f"n_head={self.n_head} must divide d_model={self.d_model}")
        if self.pos_emb not in ("learned", "rope"):
            raise ValueError(f"pos_emb={self.pos_emb!r} must be 'learned' or 'rope'")
        if self.pos_emb == "rope" and (self.d_model // self.n_head) % 2:
            raise ValueError(f"rope needs an even head size, got d_model/n_head = {self.d_model // self.n_head}")
