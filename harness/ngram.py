"""The loss of a bigram model on the eval windows: the level a network reaches by learning only which token
follows which. A run that ends near it has learned little of what the scaling laws describe (its IsoFLOP curve
flattens there), so every result row records it beside val_loss (harness.analysis.plateau reads it).

The bigram is counted on the train split and smoothed towards the unigram by Witten & Bell 1991's rule, so
unseen pairs keep a probability without a tuned constant. Vocabularies above MAX_VOCAB skip it (a dense V x V
table would not fit), and counting stops after MAX_TOKENS train tokens.
"""

from __future__ import annotations

import math

import numpy as np

MAX_VOCAB = 4096
MAX_TOKENS = 50_000_000
CHUNK = 5_000_000
_CACHE: dict[tuple, float] = {}


def pair_counts(train: np.ndarray, vocab_size: int, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """(V, V) counts of (previous, next) token pairs over the first max_tokens of train, in chunks."""
    n = min(len(train), max_tokens)
    counts = np.zeros(vocab_size * vocab_size, dtype=np.int64)
    for s in range(0, max(0, n - 1), CHUNK):
        a = np.asarray(train[s:min(s + CHUNK + 1, n)], dtype=np.int64)
        counts += np.bincount(a[:-1] * vocab_size + a[1:], minlength=vocab_size * vocab_size)
    return counts.reshape(vocab_size, vocab_size)


def witten_bell(counts: np.ndarray) -> np.ndarray:
    """(V, V) P(next | previous) from pair counts: (c(a,b) + T(a) p(b)) / (c(a) + T(a)), T(a) the number of
    distinct tokens seen after a and p the add-half unigram (Witten & Bell 1991); an unseen a gets p."""
    unigram = counts.sum(axis=0) + 0.5
    p = unigram / unigram.sum()
    seen = counts.sum(axis=1, keepdims=True).astype(float)
    types = (counts > 0).sum(axis=1, keepdims=True).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        probs = (counts + types * p[None, :]) / (seen + types)
    return np.where(seen > 0, probs, p[None, :])


def bigram_loss(train: np.ndarray, windows: np.ndarray, vocab_size: int, key: tuple | None = None) -> float | None:
    """Mean nats per target token of the train split's bigram model on eval windows (n, seq_len + 1), the targets
    val_loss is the mean over; None above MAX_VOCAB. `key` caches the value for a process (the same corpus and
    windows give the same number for every run)."""
    if vocab_size > MAX_VOCAB:
        return None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    probs = witten_bell(pair_counts(train, vocab_size))
    w = np.asarray(windows, dtype=np.int64)
    value = float(-np.mean(np.log(probs[w[:, :-1], w[:, 1:]])))
    if key is not None:
        _CACHE[key] = value
    return value


def bigram_row(loss: float | None, bytes_per_token: float) -> dict[str, float | None]:
    """The result row's reference columns, named after the metric each sits beside: bigram_val_loss (nats per
    token) and bigram_val_bpb (bits per byte)."""
    if loss is None:
        return {"bigram_val_loss": None, "bigram_val_bpb": None}
    return {"bigram_val_loss": loss, "bigram_val_bpb": loss / math.log(2) / bytes_per_token}
