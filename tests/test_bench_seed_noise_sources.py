"""benchmarks/seed_noise_sources.py: the seed-spread summary on losses of known spread, and the quasi-random sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def sources(load_benchmark):
    return load_benchmark("seed_noise_sources")


def test_summary_separates_the_seeds_spread_from_the_eval_slices_own_noise(sources) -> None:
    """Six 'models' whose mean losses differ by a known 1% (ln) and whose per-window losses scatter by 0.5 around
    that: the spread over all windows is the 1% put in, and the slice's sampling sd is 0.5 / sqrt(windows) / loss."""
    rng = np.random.default_rng(0)
    levels = 2.0 * np.exp(0.01 * np.array([-1.5, -0.9, -0.3, 0.3, 0.9, 1.5]) / np.std([-1.5, -0.9, -0.3, 0.3, 0.9, 1.5], ddof=1))
    shared = rng.normal(0, 0.5, 40_000)  # the windows' own difficulty, the same for every model
    own = rng.normal(0, 0.05, (6, 40_000))  # each model's deviation per window
    losses = levels[:, None] + shared[None, :] + own
    r = sources.summarise(losses, default_windows=1024)
    assert r["seeds"] == 6
    assert r["seed_sd_all_windows"] == pytest.approx(0.01, rel=0.02)
    assert r["seed_sd_eval_slice"] == pytest.approx(0.01, rel=0.15)
    assert r["eval_sampling_sd"] == pytest.approx(0.05 / np.sqrt(1024) / 2.0, rel=0.1)


def test_quasi_random_windows_cover_the_split_evenly_and_continue_across_calls(sources) -> None:
    """Every prefix of the golden-ratio sequence spreads over the split: 64 windows land in all 16 sixteenths of it
    (64 uniform draws leave one empty about a quarter of the time), and a second call continues the sequence."""
    tokens = np.arange(100_000, dtype=np.int64)  # a window's first token is its start
    sources._STREAM.clear()
    gen = torch.Generator().manual_seed(3)
    x1, y1 = sources._golden_batch(tokens, 32, 16, gen)
    x2, _ = sources._golden_batch(tokens, 32, 16, gen)
    assert x1.shape == (32, 16) and torch.equal(x1[:, 1:], y1[:, :-1])
    starts = np.concatenate([x1[:, 0].numpy(), x2[:, 0].numpy()])
    assert len(set(starts.tolist())) == 64
    assert sorted(set((starts * 16 // (len(tokens) - 16)).tolist())) == list(range(16))
