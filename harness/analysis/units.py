"""Units of a foreign table's columns: compute in PF-days (Kaplan et al. 2020 and Brown et al. 2020 tabulate it so;
1 PF-day = 1e15 FLOP/s x 86400 s = 8.64e19 FLOPs) or other multiples, parameters and tokens in millions or
billions. `units.flops`, `units.params`, `units.tokens` name them; the mapped source columns are scaled to
FLOPs, parameters and tokens before the table is validated, and the report states what was converted. Without
them each column's own header unit is read ('C (PFLOP/s-days)', 'Params (M)', 'budget (1e18)'); a bracket that
names a unit the parser cannot read is refused, one holding a note ('Params (total)') is not a unit.
`units.loss=perplexity` reads a perplexity column (Pythia's and OPT's tables give one) as its log, the loss; so
does a loss column headed 'Loss (ppl)' or named ppl or perplexity.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.columns import ColumnMap, cfg_get, source_columns, split_header
from harness.analysis.load import canonicalize, label_column
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
# canonical quantity -> (config key, table of units, the columns units.<key> scales; each reads its own header)
QUANTITIES = {"flops": ("units.flops", FLOP_UNITS, ("flops", "budget")),
              "params": ("units.params", COUNT_UNITS, ("params",)),
              "tokens": ("units.tokens", COUNT_UNITS, ("tokens",))}


LOSS_ALIASES = {"ppl": "perplexity", "nats": "loss", "bits": "loss", "bpb": "loss", "nats/token": "loss",
                "bits/byte": "loss", "bits per byte": "loss", "log": "loss", "ln": "loss"}
WORDS = {"thousand": "thousands", "million": "millions", "mil": "millions", "mn": "millions", "mio": "millions",
         "billion": "billions", "bn": "billions", "trillion": "trillions", "pf-days": "pf_days", "pf-day": "pf_days",
         "petaflop-days": "pf_days", "gigaflops": "gflops", "teraflops": "tflops", "petaflops": "pflops",
         "exaflops": "eflops", "zettaflops": "zflops"}
# what may follow a scale in a header: 'C (1e18 FLOPs)', 'Params (millions of parameters)', 'Tokens (B tokens)'
BASE_WORDS = {"flops": {"flops", "flop"}, "count": {"params", "parameters", "param", "tokens", "token", "toks"}}
# words that make a bracket a unit (refused when unreadable) rather than a note such as 'Params (total)'
UNIT_WORDS = {"k", "m", "b", "t", "bn", "mn", "mil", "mio", "thousand", "thousands", "million", "millions", "billion",
              "billions", "trillion", "trillions", "day", "days", "pf", "pfs", "kilo", "mega", "giga", "tera", "peta",
              "exa", "zetta", "hour", "hours", "week", "weeks", "gpu", "tpu"}
_PF_DAYS = re.compile(r"^(?:pf|pfs|pflops?|petaflops?)days?$")  # PF-days, PFLOP/s-days, petaflop/s-days
_SCALE = re.compile(r"^(?:x|\*)?\s*(10\s*(?:\^|\*\*)\s*[+-]?\d+|\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(.*)$")
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-")
PERPLEXITY_NAMES = ("ppl", "perplexity")


def _normal(text: str) -> str:
    """A header unit lower-cased, with the multiplication sign, superscript exponents (10¹⁸ -> 10^18), a minus sign
    and a closing dot ('Mil.') written plainly."""
    raw = text.strip().lower().replace("\u00d7", "x").replace("\u2212", "-")
    raw = re.sub(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]+", lambda m: "^" + m.group().translate(_SUPERSCRIPTS), raw)
    return re.sub(r"\s+", " ", re.sub(r"\.(?=\s|$)", "", raw)).strip()


def _named(word: str, table: dict[str, float]) -> tuple[str, float] | None:
    """A unit word as (name, factor): table's own names, aliases, PF-day spellings; compute may also be counted in
    thousands .. trillions of FLOPs."""
    name = WORDS.get(word, ALIASES.get(word, word))
    if table is FLOP_UNITS and _PF_DAYS.match(re.sub(r"[\s_/·*-]", "", word)):
        name = "pf_days"
    if name in table:
        return name, table[name]
    if table is FLOP_UNITS and name in COUNT_UNITS and name != "count":
        return name, COUNT_UNITS[name]
    return None


def parse_unit(text: str, table: dict[str, float]) -> tuple[str, float] | None:
    """(name, factor to base units) of a header's bracketed unit: a name ('M', 'PF-days', 'PFLOP/s-days', 'Mil.'),
    a scale ('1e18', 'x1e18', '10^18', 10¹⁸ after a multiplication sign) or either followed by the base unit
    ('1e18 FLOPs', 'millions of parameters'); None when it is none of these."""
    raw = _normal(text)
    base = BASE_WORDS["flops" if table is FLOP_UNITS else "count"]
    found = _named(raw, table)
    if found:
        return found
    m = _SCALE.match(raw)
    if m and (not m.group(2) or m.group(2) in base):
        num = m.group(1).replace(" ", "")
        factor = 10.0 ** float(re.split(r"\^|\*\*", num)[1]) if ("^" in num or "**" in num) else float(num)
        return (f"units of {factor:g}", factor) if factor > 0 else None
    words = [w for w in re.split(r"[\s,]+", raw) if w and w != "of"]
    if len(words) > 1 and set(words[1:]) <= base:
        return _named(words[0], table)
    return None


def names_a_unit(text: str) -> bool:
    """Whether a header's bracket claims a unit (a number first, or a scale or FLOP word) rather than a note such
    as 'total' or 'non-embedding', which leaves the column in base units."""
    raw = _normal(text)
    if re.match(r"^(?:x|\*)?\s*(?:10\s*(?:\^|\*\*)|\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:\s|$))", raw):
        return True
    words = set(re.findall(r"[a-z]+", raw))
    return bool(words & UNIT_WORDS) or any("flop" in w for w in words)


def header_unit(col: str | None, table: dict[str, float], key: str = "units.*") -> tuple[str, float] | None:
    """A unit a column's header names in brackets ('Parameters (M)', 'FLOPs (PF-days)', 'C (1e18)'), as (name,
    factor); None when there is no bracket or it holds a note ('Params (total)'). A unit it cannot read is refused
    (HarnessError), since reading the column in base units would be wrong by that unit."""
    unit = split_header(col)[1] if col else None
    if unit is None:
        return None
    found = parse_unit(unit, table)
    if found is None and names_a_unit(unit):
        bare = split_header(str(col))[0]
        raise HarnessError(
            f"column {col!r}: the unit {unit!r} in its header is not one the loader reads; give it with {key}=<unit> "
            f"({', '.join(table)}), or rename the column to {f'{bare} (1e18)'!r} (any scale) or {bare!r} (base units)")
    return found


def _given_unit(key: str, given: Any, table: dict[str, float]) -> tuple[str, float]:
    """An explicit units.* value as (name, factor), refused with the names it may take."""
    raw = str(given).strip().lower()
    name = ALIASES.get(raw, raw)
    if name not in table:
        raise HarnessError(f"{key}={raw!r} is not a known unit; use one of {', '.join(table)}")
    return name, table[name]


def unit_factors(cfg: Any, src: dict[str, str | None] | None = None) -> dict[str, tuple[str, float]]:
    """{column: (unit name, factor to base units)} for the flops, budget, params and tokens columns: `units.*`
    where given (units.flops covers the budget column too), else the unit each column's own header names (src:
    harness.analysis.columns.source_columns), else base units."""
    out = {}
    for key, table, canon in QUANTITIES.values():
        given = cfg_get(cfg, key)
        for name in canon:
            if given is not None:
                out[name] = _given_unit(key, given, table)
            else:
                out[name] = header_unit((src or {}).get(name), table, key) or (next(iter(table)), 1.0)
    return out


def _loss_named(col: str) -> str:
    """'loss' or 'perplexity' from a loss column's header: a bracketed unit ('Loss (ppl)', 'PPL (log)') decides,
    else a name whose last word is ppl or perplexity ('perplexity', 'val_ppl'; not 'log_ppl') is a perplexity."""
    bare, unit = split_header(col)
    if unit:
        name = LOSS_ALIASES.get(unit.strip().lower(), unit.strip().lower())
        if name in LOSS_UNITS:
            return name
    words = re.findall(r"[a-z0-9]+", bare.lower())
    plain = bool(words) and words[-1] in PERPLEXITY_NAMES and not {"log", "ln", "nll"} & set(words)
    return "perplexity" if plain else "loss"


def loss_unit(cfg: Any, src: dict[str, str | None] | None = None) -> str:
    """`units.loss`: loss (a log-loss, as given) or perplexity (exp of one: its log is fitted); without it, the loss
    column's header says ('Loss (ppl)', or a column named ppl or perplexity: _loss_named)."""
    given = cfg_get(cfg, "units.loss")
    if given is None:
        return _loss_named((src or {}).get("loss") or "")
    raw = str(given).strip().lower()
    name = LOSS_ALIASES.get(raw, raw)
    if name not in LOSS_UNITS:
        raise HarnessError(f"units.loss={raw!r} is not a known unit; use one of {', '.join(LOSS_UNITS)}")
    return name


def _refuse_small_perplexity(raw: pd.DataFrame, col: str, status: str | None, why: str) -> None:
    """One error for a perplexity <= 1 (its log, the loss, would be <= 0) in a run that is fitted, naming the value
    as the table writes it."""
    num = pd.to_numeric(raw[col], errors="coerce")
    fitted = label_column(raw, status, "ok") == "ok"  # the loader's own rule for a fitted run
    bad = (num <= 1) & fitted
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise HarnessError(
            f"column {col!r} holds perplexities ({why}), which are > 1, but data row {i + 1} holds "
            f"{raw[col].iloc[i]!s}; fix the CSV, mark that run status=failed, or give units.loss=loss if the column "
            "holds log-losses")


def apply_units(raw: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    """A copy of the raw table with its mapped N, D, C and budget columns scaled to base units, each by its own
    header's unit (or units.*), and a perplexity column turned into its log; text cells are left as they are, so
    validation still names them."""
    unit_factors(cfg), loss_unit(cfg)  # a bad unit is named before any column is looked up
    src = source_columns(raw, ColumnMap.from_cfg(cfg))
    factors, loss = unit_factors(cfg, src), loss_unit(cfg, src)
    out = raw.copy()
    scaled: dict[str, str] = {}  # column -> the canonical name whose unit scaled it (C and budget may share one)
    for name in ("flops", "budget", "params", "tokens"):
        col = src[name]
        if col is None or col in scaled:
            continue
        scaled[col] = name
        if factors[name][1] != 1.0:
            num = pd.to_numeric(out[col], errors="coerce")
            out[col] = out[col].where(num.isna(), num * factors[name][1])
    if loss == "perplexity":
        why = "units.loss=perplexity" if cfg_get(cfg, "units.loss") is not None else "as its header says"
        _refuse_small_perplexity(raw, str(src["loss"]), src["status"], why)
    # a perplexity's log is the loss; so is that of a bigram reference beside it (harness.ngram)
    for col in (src["loss"], f"bigram_{src['loss']}") if loss == "perplexity" else ():
        if col in out.columns:
            num = pd.to_numeric(out[col], errors="coerce")
            out[col] = out[col].where(num.isna() | (num <= 0), np.log(num.where(num > 0)))
    out.attrs.update(raw.attrs)
    out.attrs["units_resolved"] = ({name: factors[name] for name in scaled.values()}, loss)  # load_table reports it
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
