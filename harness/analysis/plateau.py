"""Runs that end near a bigram model's loss. The trainer records, beside each run's metric, what a bigram model
of the train split scores on the same eval windows (harness.ngram; columns bigram_val_bpb, bigram_val_loss). A
run within NEAR of it has learned little beyond which token follows which: a model too small to use its context,
or one too short to leave the plateau every run starts on. IsoFLOP curves flatten at that level, so a parabola
through such runs is lopsided. The analysis names them and keeps fitting them: leaving them out was measured and
made the held-out predictions worse (results/FINDINGS.md, "The bigram plateau").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.context import Diagnostics

NEAR = 0.03  # a run whose loss is less than 3% below the bigram model's


def bigram_plateau(used: pd.DataFrame, diag: Diagnostics | None = None, near: float = NEAR) -> dict[str, Any] | None:
    """fits.json's `bigram` block (None when the table records no bigram reference): the reference, and the fitted
    runs within `near` of it, each with how far below it its loss ended; a note names them."""
    if "bigram" not in used.columns:
        return None
    ref = pd.to_numeric(used["bigram"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(ref).any():
        return None
    below = 1.0 - used["loss"].to_numpy(dtype=float) / ref
    close = np.isfinite(below) & (below < near)
    runs = [{"run_id": str(r), "budget": float(b), "N": float(n), "loss": float(v), "below_bigram": float(g)}
            for r, b, n, v, g in zip(used["run_id"][close], used["budget"][close], used["params"][close],
                                     used["loss"][close], below[close])]
    block = {"reference": float(np.nanmedian(ref)), "near": near, "n_runs": len(used), "runs": runs}
    if runs and diag is not None:
        diag.note(plateau_note(block))
    return block


def plateau_note(block: dict[str, Any]) -> str:
    """One line naming the runs at the bigram level, by size and budget."""
    sizes: dict[float, list[float]] = {}
    for r in block["runs"]:
        sizes.setdefault(r["N"], []).append(r["budget"])
    where = "; ".join(f"N={n:.3g} at {', '.join(f'{b:.3g}' for b in sorted(bs))}" for n, bs in sorted(sizes.items()))
    return (f"{len(block['runs'])} of {block['n_runs']} fitted runs ended within {block['near']:.0%} of a bigram "
            f"model's loss ({block['reference']:.4g} on the same eval windows; it predicts each token from the one "
            f"before): {where}. They learned little beyond that, so their IsoFLOP curves flatten there and a "
            "parabola through them is lopsided (the Budgets table's `L* vs best run`); they are still fitted")
