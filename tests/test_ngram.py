"""The bigram reference every result row records (harness.ngram)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import harness.ngram as ngram
from harness.ngram import bigram_loss, bigram_row, pair_counts, witten_bell


def test_pair_counts_in_chunks_match_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 7, 1001).astype(np.uint8)
    whole = np.zeros((7, 7), dtype=np.int64)
    np.add.at(whole, (tokens[:-1].astype(int), tokens[1:].astype(int)), 1)
    monkeypatch.setattr(ngram, "CHUNK", 97)  # pairs that straddle a chunk boundary must be counted once
    counts = pair_counts(tokens, 7)
    assert counts.sum() == 1000
    np.testing.assert_array_equal(counts, whole)
    assert pair_counts(tokens, 7, max_tokens=11).sum() == 10


def test_witten_bell_rows_are_distributions_and_back_off_to_the_unigram() -> None:
    counts = np.array([[0, 9, 1], [5, 0, 0], [0, 0, 0]])
    probs = witten_bell(counts)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs > 0).all()  # unseen pairs keep some probability
    unigram = (counts.sum(axis=0) + 0.5) / (counts.sum() + 1.5)
    np.testing.assert_allclose(probs[2], unigram)  # a context never seen: the unigram
    # row 0 saw 2 distinct followers in 10 pairs: (c + 2 p) / 12
    np.testing.assert_allclose(probs[0], (counts[0] + 2 * unigram) / 12)


def test_bigram_loss_finds_a_deterministic_successor_and_not_iid_noise() -> None:
    cycle = np.tile(np.arange(5), 2000)  # each token has one successor: a bigram predicts it almost surely
    windows = np.stack([cycle[i:i + 17] for i in range(0, 400, 40)])
    assert bigram_loss(cycle, windows, 5) < 0.01
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 16, 200_000)
    windows = rng.integers(0, 16, (50, 33))
    assert bigram_loss(noise, windows, 16) == pytest.approx(math.log(16), rel=0.01)


def test_bigram_loss_skips_large_vocabularies_and_caches_by_key() -> None:
    tokens = np.arange(100) % 10
    assert bigram_loss(tokens, tokens[None, :20], ngram.MAX_VOCAB + 1) is None
    first = bigram_loss(tokens, tokens[None, :20], 10, key=("test-cache", 1))
    assert bigram_loss(np.zeros(100, dtype=int), tokens[None, :20], 10, key=("test-cache", 1)) == first


def test_bigram_row_converts_like_val_bpb() -> None:
    row = bigram_row(2.0, 1.5)
    assert row == {"bigram_val_loss": 2.0, "bigram_val_bpb": pytest.approx(2.0 / math.log(2) / 1.5)}
    assert bigram_row(None, 1.0) == {"bigram_val_loss": None, "bigram_val_bpb": None}
