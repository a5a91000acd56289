"""Figure helpers shared by every plot the harness writes: one palette and one way to turn a figure into PNG
bytes (so reports are rendered in memory and written atomically)."""

from __future__ import annotations

import io
from typing import Any


def colors(n: int) -> list[Any]:
    """n colours from viridis, avoiding its palest end (readable on white)."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.8 * i / max(1, n - 1)) for i in range(n)]


def png_bytes(fig: Any) -> bytes:
    """A figure's PNG bytes, as every report writes them (dpi 120, tight box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()
