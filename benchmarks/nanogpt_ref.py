"""A plain nanoGPT-style reference: model and training-loop body after Karpathy's nanoGPT (model.py, train.py).

What it is, so the comparison in benchmarks/tiny.py is honest: nanoGPT's module layout (LayerNorm with
F.layer_norm, one c_attn projection, flash SDPA with is_causal, GELU MLP), dropout 0 and bias=False, with the
harness's dimensions and two changes that make it the *same model* as harness.model.GPT: an untied LM head
(nanoGPT ties it to wte) and the harness's init (normal 0.02, residual projections 0.02 / sqrt(2 n_layer), as
nanoGPT does too). The optimizer is nanoGPT's configure_optimizers (AdamW, decay on >= 2-D tensors, fused only on
CUDA, so PyTorch's default implementation on CPU) with the harness's lr, betas and weight decay. The loop body is
nanoGPT's train.py with gradient_accumulation_steps=1: get_batch (random windows stacked from the token array),
set the LR, forward under the precision context (nullcontext on CPU fp32), scaler.scale(loss).backward(),
unscale + clip_grad_norm_, scaler.step, scaler.update, zero_grad(set_to_none=True); the loss is read back
(loss.item()) every `log_every` steps, as the harness does.
"""

from __future__ import annotations

import inspect
import math
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


class LayerNorm(nn.Module):
    def __init__(self, ndim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.n_head, self.n_embd = n_head, n_embd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd: int, d_ff: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, d_ff, bias=False)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(d_ff, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_head: int, n_embd: int, d_ff: int) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_head, n_embd)
        self.ln_2 = LayerNorm(n_embd)
        self.mlp = MLP(n_embd, d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefGPT(nn.Module):
    """nanoGPT's GPT with the harness's dimensions (cfg: harness.model.GPTConfig), untied head, no dropout."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.block_size = cfg.seq_len
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.d_model),
            wpe=nn.Embedding(cfg.seq_len, cfg.d_model),
            h=nn.ModuleList([Block(cfg.n_head, cfg.d_model, cfg.d_ff) for _ in range(cfg.n_layer)]),
            ln_f=LayerNorm(cfg.d_model),
        ))
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas: tuple[float, float],
                             device_type: str) -> torch.optim.AdamW:
        decay = [p for p in self.parameters() if p.dim() >= 2]
        nodecay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": nodecay, "weight_decay": 0.0}]
        fused_available = "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if fused_available and device_type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)


class RefLoop:
    """nanoGPT's train.py loop body for one model on one token array (gradient_accumulation_steps=1)."""

    def __init__(self, cfg: Any, tokens: np.ndarray, batch_size: int, lr: float, tc: Any, device: torch.device,
                 dtype: torch.dtype, log_every: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = RefGPT(cfg).to(device)
        self.opt = self.model.configure_optimizers(float(tc.weight_decay), lr, (float(tc.beta1), float(tc.beta2)),
                                                   device.type)
        self.ctx = nullcontext() if dtype == torch.float32 else torch.amp.autocast(device.type, dtype=dtype)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
        self.data, self.T, self.B, self.lr, self.device = tokens, cfg.seq_len, batch_size, lr, device
        self.grad_clip, self.log_every, self.iter_num, self.lossf = float(tc.grad_clip), log_every, 0, 0.0

    def get_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(self.data) - self.T, (self.B,))
        x = torch.stack([torch.from_numpy((self.data[i:i + self.T]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((self.data[i + 1:i + 1 + self.T]).astype(np.int64)) for i in ix])
        return x.to(self.device), y.to(self.device)

    def step(self) -> None:
        X, Y = self.get_batch()
        for param_group in self.opt.param_groups:
            param_group["lr"] = self.lr
        with self.ctx:
            _, loss = self.model(X, Y)
        self.scaler.scale(loss).backward()
        if self.grad_clip != 0.0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.iter_num += 1
        if self.iter_num % self.log_every == 0:
            self.lossf = loss.item()
