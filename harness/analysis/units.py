"""Units of a foreign table's columns: compute in PF-days (Kaplan et al. 2020 and Brown et al. 2020 tabulate it so;
1 PF-day = 1e15 FLOP/s x 86400 s = 8.64e19 FLOPs) or other multiples, parameters and tokens in millions or
billions. `units.flops`, `units.params`, `units.tokens` name them; the mapped source columns are scaled to
FLOPs, parameters and tokens before the table is validated, and the report states what was converted.
`units.loss=perplexity` reads a perplexity column (Pythia's and OPT's tables give one) as its log, the loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.columns import ColumnMap, cfg_get, source_columns, split_header
from harness.analysis.load import canonicalize
from harness.analysis.tablefile import read_table
from harness.errors import HarnessError

PF_DAY = 8.64e19
FLOP_UNITS = {"flops": 1.0, "gflops": 1e9, "tflops": 1e12, "pflops": 1e15, "eflops": 1e18, "zflops": 1e21,
              "pf_days": PF_DAY, "pf_s": 1e15}
COUNT_UNITS = {"count": 1.0, "thousands": 1e3, "millions": 1e6, "billions": 1e9, "trillions": 1e12}
ALIASES = {"flop": "flops", "pf_day": "pf_days", "pfdays": "pf_days", "petaflop_days": "pf_days",
           "gflop": "gflops", "tflop": "tflops", "pflop": "pflops", "eflop": "eflops", "zflop": "zflops",
           "k": "thousands", "m": "millions", "b": "billions", "t": "trillions", "1": "count", "units": "count"}
LOSS_UNITS = ("loss", "perplexity")
# canonical quantity -> (config key, table of units, the columns it scales)
QUANTITIES = {"flops": ("units.flops", FLOP_UNITS, ("flops", "budget")),
              "params": ("units.params", COUNT_UNITS, ("params",)),
              "tokens": ("units.tokens", COUNT_UNITS, ("tokens",))}


LOSS_ALIASES = {"ppl": "perplexity", "nats": "loss", "bits": "loss", "bpb": "loss", "nats/token": "loss",
                "bits/byte": "loss", "bits per byte": "loss"}
WORDS = {"thousand": "thousands", "million": "millions", "mil": "millions", "billion": "billions", "bn": "billions",
         "trillion": "trillions", "pf-days": "pf_days", "pf-day": "pf_days", "petaflop-days": "pf_days"}


def header_unit(col: str | None, table: dict[str, float]) -> tuple[str, float] | None:
    """A unit a column's header names in brackets ('Parameters (M)', 'FLOPs (PF-days)', 'C (1e18)'), as (name,
    factor); None when there is none or it is not one of `table`'s."""
    unit = split_header(col)[1] if col else None
    if unit is None:
        return None
    raw = unit.strip().lower()
    name = WORDS.get(raw, ALIASES.get(raw, raw))
    if name in table:
        return name, table[name]
    try:
        factor = float(raw)  # 'FLOPs (1e18)': the values are multiples of 1e18
    except ValueError:
        return None
    return (f"units of {factor:g}", factor) if factor > 0 and table is FLOP_UNITS else None


def unit_factors(cfg: Any, src: dict[str, str | None] | None = None) -> dict[str, tuple[str, float]]:
    """{quantity: (unit name, factor to base units)} for flops, params, tokens: `units.*` where given, else the unit
    the source column's header names (src: harness.analysis.columns.source_columns), else base units."""
    out = {}
    for quantity, (key, table, canon) in QUANTITIES.items():
        given = cfg_get(cfg, key)
        in_header = header_unit((src or {}).get(canon[0]), table) if given is None else None
        if in_header is not None:
            out[quantity] = in_header
            continue
        raw = str(given if given is not None else next(iter(table))).strip().lower()
        name = ALIASES.get(raw, raw)
        if name not in table:
            raise HarnessError(f"{key}={raw!r} is not a known unit; use one of {', '.join(table)}")
        out[quantity] = (name, table[name])
    return out


def loss_unit(cfg: Any, src: dict[str, str | None] | None = None) -> str:
    """`units.loss`: loss (a log-loss, as given) or perplexity (exp of one: its log is fitted); without it, a
    '(ppl)' or '(perplexity)' in the loss column's header says perplexity."""
    given = cfg_get(cfg, "units.loss")
    if given is None:
        unit = split_header((src or {}).get("loss") or "")[1]
        return "perplexity" if unit and LOSS_ALIASES.get(unit.lower(), unit.lower()) == "perplexity" else "loss"
    raw = str(given).strip().lower()
    name = LOSS_ALIASES.get(raw, raw)
    if name not in LOSS_UNITS:
        raise HarnessError(f"units.loss={raw!r} is not a known unit; use one of {', '.join(LOSS_UNITS)}")
    return name


def apply_units(raw: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    """A copy of the raw table with its mapped N, D, C (and budget) columns scaled to base units, and a perplexity
    column turned into its log; text cells are left as they are, so validation still names them."""
    unit_factors(cfg), loss_unit(cfg)  # a bad unit is named before any column is looked up
    src = source_columns(raw, ColumnMap.from_cfg(cfg))
    factors, loss = unit_factors(cfg, src), loss_unit(cfg, src)
    out = raw.copy()
    for quantity, (_, _, canon) in QUANTITIES.items():
        factor = factors[quantity][1]
        if factor == 1.0:
            continue
        for col in dict.fromkeys(src[name] for name in canon if src[name] is not None):
            num = pd.to_numeric(out[col], errors="coerce")
            out[col] = out[col].where(num.isna(), num * factor)
    # a perplexity's log is the loss; so is that of a bigram reference beside it (harness.ngram)
    for col in (src["loss"], f"bigram_{src['loss']}") if loss == "perplexity" else ():
        if col in out.columns:
            num = pd.to_numeric(out[col], errors="coerce")
            out[col] = out[col].where(num.isna() | (num <= 0), np.log(num.where(num > 0)))
    out.attrs.update(raw.attrs)
    out.attrs["units_resolved"] = (factors, loss)  # what load_table states in the report
    return out


def units_text(factors: dict[str, tuple[str, float]]) -> str | None:
    """'C given in pf_days (x 8.64e+19 FLOPs); ...' for the converted quantities, None when all are base units."""
    parts = [f"{q} given in {name} (x {factor:.3g})" for q, (name, factor) in factors.items() if factor != 1.0]
    return "; ".join(parts) if parts else None


def load_table(path: str, cfg: Any) -> pd.DataFrame:
    """load_results with `units.*` applied first: the canonical table in FLOPs, parameters and tokens; its attrs
    carry the units text for the report (None when nothing was converted and the file is a plain CSV)."""
    raw = read_table(path)
    scaled = apply_units(raw, cfg)
    df = canonicalize(scaled, cfg)
    factors, loss = scaled.attrs["units_resolved"]
    read_as = f"The file was read as {raw.attrs['dialect']}" if raw.attrs.get("dialect") else None
    ppl = "the loss column holds perplexities: their natural log is fitted" if loss == "perplexity" else None
    cols = ", ".join(f"`{c}`" for c in df.attrs.get("suffixed", []))
    suffixed = f"{cols} written with suffixes (K, M, B or G, T = 1e3, 1e6, 1e9, 1e12)" if cols else None
    df.attrs["units"] = "; ".join(t for t in (read_as, units_text(factors), ppl, suffixed) if t) or None
    return df
