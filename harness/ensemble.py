"""K copies of harness.model.GPT trained side by side: every weight gets a leading member dimension.

Seeds of one sweep point share shapes, so they can run as one model whose matmuls are batched (torch.bmm over
the members) and whose attention treats the members as more batch rows. Each member keeps its own weights,
its own loss and (sliced out of the stacked tensors) its own optimizer moments: one member's numbers never
touch another's. The math is GPT's, op for op (harness/model.py), in standard PyTorch, so it runs the same
under CPU or CUDA autocast; tests/test_pack.py checks it against the GPTs it was stacked from.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.model import GPT, GPTConfig, Rotary

_SEP = "__"  # module names cannot hold dots: blocks.0.attn.qkv.weight is stored as blocks__0__attn__qkv__weight


def _key(name: str) -> str:
    """A GPT parameter name as a ParameterDict key."""
    return name.replace(".", _SEP)


class EnsembleGPT(nn.Module):
    """K GPTs of one shape as stacked weights [K, ...]; forward returns each member's mean cross-entropy."""

    def __init__(self, members: list[GPT]) -> None:
        super().__init__()
        if not members or len({m.cfg for m in members}) != 1:
            raise ValueError("an ensemble needs at least one member, all of one GPTConfig")
        self.cfg: GPTConfig = members[0].cfg
        self.k = len(members)
        self.names = [n for n, _ in members[0].named_parameters()]
        with torch.no_grad():
            self.w = nn.ParameterDict({
                _key(n): nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in members]))
                for n in self.names})
        self.rotary = Rotary(self.cfg) if self.cfg.pos_emb == "rope" else None

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights as a GPT state_dict (copies on the CPU), e.g. for GPT.load_state_dict."""
        return {n: self.w[_key(n)][k].detach().cpu().clone() for n in self.names}

    def decay_mask(self) -> list[bool]:
        """Per stacked parameter (in parameters() order): whether the member's tensor is a matrix (gets weight
        decay, as harness.train.make_optimizer decides for a GPT)."""
        return [p.dim() - 1 >= 2 for p in self.w.values()]

    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """LayerNorm without bias, each member with its own gain: x [K, N, C]."""
        return F.layer_norm(x, (x.shape[-1],)) * self.w[_key(name)].unsqueeze(1)

    def _rms(self, x: torch.Tensor, name: str, K: int) -> torch.Tensor:
        """RMSNorm over the last dim of x [K*B, H, T, hd], member k's rows scaled by its own gain [hd]."""
        gain = self.w[_key(name)]
        y = F.rms_norm(x, (x.shape[-1],)).view(K, -1, *x.shape[1:]) * gain.view(K, 1, 1, 1, -1)
        return y.view(x.shape)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Each member's x @ W.T (nn.Linear without bias), batched over members: x [K, N, in]."""
        return torch.bmm(x, self.w[_key(name)].transpose(1, 2))

    def _attn(self, x: torch.Tensor, i: int, batch: int) -> torch.Tensor:
        """Causal self-attention of block i; the members are folded into the batch, so SDPA sees K*B rows."""
        K, N, C = x.shape
        T, H = N // batch, self.cfg.n_head
        qkv = self._linear(x, f"blocks.{i}.attn.qkv.weight").view(K * batch, T, 3 * C)
        q, k, v = (t.view(K * batch, T, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=2))
        if self.cfg.qk_norm:  # as GPT's nn.RMSNorm on each head's q and k, each member with its own gains
            q, k = (self._rms(t, f"blocks.{i}.attn.{n}_norm.weight", K) for t, n in ((q, "q"), (k, "k")))
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        if x.device.type == "cpu" and q.dtype == torch.bfloat16:
            # as in harness.model: CPU flash attention's bf16 backward is slow, so attention stays fp32 there
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self._linear(y.transpose(1, 2).contiguous().view(K, N, C), f"blocks.{i}.attn.proj.weight")

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits [K, B*T, V] of token ids idx [K, B, T] (member k reads idx[k])."""
        K, B, T = idx.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence of length {T} exceeds seq_len={self.cfg.seq_len}")
        V, C = self.cfg.vocab_size, self.cfg.d_model
        offset = (torch.arange(K, device=idx.device) * V).view(K, 1, 1)  # member k's rows of the stacked table
        x = F.embedding(idx + offset, self.w["wte__weight"].view(K * V, C))
        if self.cfg.pos_emb == "learned":
            x = x + self.w["wpe__weight"][:, :T].unsqueeze(1)
        x = x.view(K, B * T, C)
        for i in range(self.cfg.n_layer):
            x = x + self._attn(self._ln(x, f"blocks.{i}.ln1.weight"), i, B)
            h = self._linear(self._ln(x, f"blocks.{i}.ln2.weight"), f"blocks.{i}.mlp.up.weight")
            x = x + self._linear(F.gelu(h), f"blocks.{i}.mlp.down.weight")
        return self._linear(self._ln(x, "ln_f.weight"), "lm_head.weight")

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each member's mean next-token cross-entropy in nats, shape [K] (their sum trains every member on
        its own loss alone: no weight is shared)."""
        logits = self.logits(idx).float()
        # one call per member: GPT's own reduction, and a K times smaller working set for the softmax
        return torch.stack([F.cross_entropy(logits[k], targets[k].reshape(-1)) for k in range(self.k)])


@torch.no_grad()
def clip_member_grads(model: EnsembleGPT, max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ applied to each member on its own: member k's gradients are scaled by
    min(1, max_norm / (its total norm + 1e-6)). Returns the members' norms [K] (no host sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norms = torch.stack([g.flatten(1).float().norm(dim=1) for g in grads], dim=1).norm(dim=1)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))
    return norms
