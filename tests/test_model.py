"""harness.model.GPT: shapes, causality, loss at init; the size family's aspect rule (harness.plan.model_config)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from harness.errors import HarnessError
from harness.model import GPT, GPTConfig, rope_tables, rotate
from harness.plan import model_config

SMALL = GPTConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, seq_len=16, vocab_size=256)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(SMALL).eval()


def test_output_shapes(model: GPT) -> None:
    idx = torch.randint(0, 256, (3, 16))
    logits, loss = model(idx)
    assert logits.shape == (3, 16, 256)
    assert loss is None
    logits, loss = model(idx[:, :5], idx[:, 1:6])  # shorter than seq_len is fine
    assert logits.shape == (3, 5, 256)
    assert loss.shape == ()


def test_longer_than_seq_len_is_refused(model: GPT) -> None:
    with pytest.raises(ValueError, match="exceeds seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_causal(model: GPT) -> None:
    """Changing token t changes no logit at positions < t, and does change the logits at t."""
    torch.manual_seed(1)
    idx = torch.randint(0, 256, (2, 16))
    t = 9
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 7) % 256
    changed[:, t + 1 :] = torch.randint(0, 256, (2, 16 - t - 1))
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
    assert (a[:, t:] - b[:, t:]).abs().amax() > 1e-4


def test_loss_at_init_near_uniform() -> None:
    torch.manual_seed(0)
    m = GPT(SMALL)
    idx = torch.randint(0, 256, (8, 16))
    _, loss = m(idx, torch.roll(idx, -1, dims=1))
    assert math.isfinite(loss.item())
    assert abs(loss.item() - math.log(256)) < 0.1


def test_loss_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    m = GPT(SMALL)
    idx = torch.randint(0, 256, (2, 16))
    _, loss = m(idx, idx)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="must divide"):
        GPTConfig(n_layer=1, n_head=3, d_model=32, d_ff=64)
    with pytest.raises(ValueError, match="positive"):
        GPTConfig(n_layer=0, n_head=1, d_model=32, d_ff=64)
    with pytest.raises(ValueError, match="'learned' or 'rope'"):
        GPTConfig(n_layer=1, n_head=1, d_model=32, d_ff=64, pos_emb="alibi")
    with pytest.raises(ValueError, match="even head size"):
        GPTConfig(n_layer=1, n_head=2, d_model=30, d_ff=64, pos_emb="rope")


def test_rope_scores_depend_only_on_the_offset() -> None:
    """RoPE (Su et al. 2021): a query at position t and a key at s score the same for every shift of both."""
    cfg = dataclasses.replace(SMALL, pos_emb="rope")
    cos, sin = rope_tables(cfg)
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)  # one head of 16 channels, the same vectors at every position

    def score(t: int, s: int) -> torch.Tensor:
        qt = rotate(q.expand(16, 16), cos, sin)[t]
        ks = rotate(k.expand(16, 16), cos, sin)[s]
        return qt @ ks

    for shift in (1, 5, 11):
        torch.testing.assert_close(score(3 + shift, 1 + shift), score(3, 1), rtol=1e-5, atol=1e-5)
    assert (score(3, 1) - score(3, 2)).abs() > 1e-3  # and on the offset it does depend


def test_rope_model_is_causal_and_has_no_position_table() -> None:
    torch.manual_seed(0)
    m = GPT(dataclasses.replace(SMALL, pos_emb="rope")).eval()
    assert "wpe.weight" not in m.state_dict() and not any(n.endswith(("cos", "sin")) for n in m.state_dict())
    test_causal(m)


def test_family_aspect_rule(compose_cfg) -> None:
    cfg = compose_cfg("model=family", "model.d_model=96")
    name, g = model_config(cfg.model, 256)
    assert (g.n_layer, g.n_head, g.d_model, g.d_ff) == (3, 6, 96, 384)
    assert g.seq_len == cfg.model.seq_len and g.vocab_size == 256
    assert name == "family-d96-L3"
    name, g = model_config(compose_cfg("model=family", "model.d_model=96", "model.pos_emb=rope").model, 256)
    assert name == "family-d96-L3-rope" and g.pos_emb == "rope" and g.n_layer == 3
    # rope rotates channel pairs: d_model 136 takes 4 heads of 34 under rope, 8 of 17 with learned positions
    assert model_config(compose_cfg("model=family", "model.d_model=136").model, 256)[1].n_head == 8
    assert model_config(compose_cfg("model=family", "model.d_model=136", "model.pos_emb=rope").model, 256)[1].n_head == 4
    with pytest.raises(HarnessError, match="pos_emb='alibi' must be 'learned' or 'rope'; fix the model"):
        model_config(compose_cfg("model=nano", "model.pos_emb=alibi").model, 256)


@pytest.mark.parametrize(
    ("d_model", "layers", "heads"), [(8, 2, 1), (16, 2, 1), (24, 2, 1), (32, 2, 2), (40, 2, 2), (64, 2, 4),
                                     (160, 5, 10), (256, 8, 16)]
)
def test_family_sizes(compose_cfg, d_model: int, layers: int, heads: int) -> None:
    _, g = model_config(compose_cfg("model=family", f"model.d_model={d_model}").model, 256)
    assert (g.n_layer, g.n_head, g.d_ff) == (layers, heads, 4 * d_model)


def test_family_min_layers(compose_cfg) -> None:
    cfg = compose_cfg("model=family", "model.d_model=16", "model.min_layers=1")
    assert model_config(cfg.model, 256)[1].n_layer == 1


@pytest.mark.parametrize("d_model", [100, 4, 0, -16])
def test_family_bad_d_model(compose_cfg, d_model: int) -> None:
    cfg = compose_cfg("model=family", f"model.d_model={d_model}")
    with pytest.raises(HarnessError, match="d_model_step"):
        model_config(cfg.model, 256)


def test_preset_with_bad_heads_is_harness_error(compose_cfg) -> None:
    cfg = compose_cfg("model=nano", "model.n_head=3")
    with pytest.raises(HarnessError, match="n_head"):
        model_config(cfg.model, 256)


@pytest.mark.parametrize(
    ("preset", "shape"),
    [("nano", (2, 2, 64, 256)), ("micro", (4, 4, 128, 512)), ("mini", (6, 8, 256, 1024)),
     ("small", (12, 8, 512, 2048))],
)
def test_presets(compose_cfg, preset: str, shape: tuple[int, int, int, int]) -> None:
    name, g = model_config(compose_cfg(f"model={preset}").model, 256)
    assert name == preset
    assert (g.n_layer, g.n_head, g.d_model, g.d_ff) == shape
