"""Which column of a results table feeds each canonical quantity (N, D, C, loss, budget, ...).

The harness's own tables name them params_<convention>, tokens, flops, val_bpb, budget_flops; a foreign table maps
its names with `columns.<name>=<column>`. A quantity whose default column is absent and that was not mapped is
looked up under the plain names the scaling-law literature uses (N, D, C; params, tokens, flops, loss), so a
table written by hand needs no mapping. Without a compute column, C is a run's budget when the table has a budget
column (an IsoFLOP table's own FLOP count), else C = 6ND from N and D (Kaplan et al. 2020). A header may carry its
unit in brackets, 'Parameters (M)' (split_header; harness.analysis.units reads the unit).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.errors import HarnessError

PARAM_CONVENTIONS = {
    "total": "params_total",
    "nonembedding": "params_nonembedding",
    "scaling": "params_scaling",
}
# Plain names tried when a quantity's default column is absent and no columns.<name> was given: words in any case,
# the literature's single letters only as capitals (a lower-case d is often a model's width).
ALIASES = {
    "params": ("params", "parameters", "N"),
    "tokens": ("tokens", "D"),
    "flops": ("flops", "C", "compute"),
    "loss": ("loss", "perplexity", "ppl"),  # a perplexity's log is fitted (harness.analysis.units)
    "budget": ("budget",),
}
WHAT = {"params": "parameter count N", "loss": "the loss metric", "flops": "training compute C"}
HOW = {"params": "choose params=total|nonembedding|scaling or map it with columns.params=<column>",
       "loss": "choose metric=<column> or map it with columns.loss=<column>",
       "flops": "map it with columns.flops=<column>, give a tokens column to derive C = 6ND (a size ladder "
                "trained on one D: a tokens column holding that D in every row), or a budget column (columns.budget)"}


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """Read a dotted key from a dict, an OmegaConf DictConfig, an object with attributes, or None."""
    node = cfg
    for part in key.split("."):
        if node is None:
            return default
        if isinstance(node, Mapping):
            node = node.get(part, None)
        else:
            try:
                node = node[part]  # DictConfig supports item access
            except (KeyError, TypeError, AttributeError, IndexError):
                node = getattr(node, part, None)
            except Exception:  # omegaconf raises its own errors for missing keys
                node = None
    return default if node is None else node


@dataclass
class ColumnMap:
    """Which source column feeds each canonical column (None: absent in the source)."""

    params: str
    loss: str
    flops: str | None
    tokens: str | None = "tokens"
    budget: str | None = "budget_flops"
    status: str | None = "status"
    role: str | None = "role"
    run_id: str | None = "run_id"
    fingerprint: str | None = "data_fingerprint"
    explicit: set[str] = field(default_factory=set)

    @classmethod
    def from_cfg(cls, cfg: Any) -> ColumnMap:
        """Defaults from the params convention and metric, overridden by `columns.<name>` entries."""
        convention = str(cfg_get(cfg, "params", "total"))
        if convention not in PARAM_CONVENTIONS:
            raise HarnessError(
                f"unknown params convention {convention!r}; use params=total, params=nonembedding or params=scaling"
            )
        metric = str(cfg_get(cfg, "metric", "val_bpb"))
        cmap = cls(params=PARAM_CONVENTIONS[convention], loss=metric, flops="flops")
        for name in ("params", "loss", "flops", "tokens", "budget", "status", "role", "run_id", "fingerprint"):
            value = cfg_get(cfg, f"columns.{name}")
            if value is not None and str(value) != "":
                # columns.tokens=none / columns.budget=none: ignore that column (derive D, group budgets by C)
                setattr(cmap, name, None if str(value).lower() == "none" else str(value))
                cmap.explicit.add(name)
        return cmap

    def as_dict(self) -> dict[str, str | None]:
        """The mapping as plain data for fits.json."""
        return {k: getattr(self, k) for k in ("params", "tokens", "flops", "loss", "budget", "status", "role",
                                              "run_id", "fingerprint")}


_HEADER_UNIT = re.compile(r"^(.*?)\s*[(\[]\s*([^()\[\]]+?)\s*[)\]]\s*$")


def split_header(col: str) -> tuple[str, str | None]:
    """'Parameters (M)' -> ('Parameters', 'M'); 'FLOPs [PF-days]' -> ('FLOPs', 'PF-days'); 'loss' -> ('loss', None):
    papers' tables put a column's unit in brackets after its name."""
    m = _HEADER_UNIT.match(str(col).strip())
    return (m.group(1), m.group(2)) if m and m.group(1) else (str(col).strip(), None)


def _listed(cols: list[str], most: int = 20) -> str:
    """A table's column names for an error line: the first `most`, then how many more (a wide table's are many)."""
    return ", ".join(map(repr, cols[:most])) + (f", ... ({len(cols) - most} more)" if len(cols) > most else "")


def _alias(cols: list[str], name: str) -> str | None:
    """The first column named as one of `name`'s plain aliases (words in any case, single letters as given), with or
    without a bracketed unit after the name (split_header)."""
    stripped = [split_header(c)[0] for c in cols]
    for alias in ALIASES.get(name, ()):
        for col, bare in zip(cols, stripped):
            if bare == alias or (len(alias) > 1 and bare.lower() == alias):
                return col
    return None


def _optional(cols: list[str], cmap: ColumnMap) -> dict[str, str | None]:
    """The columns a table may lack (None where absent); a mapped one that is absent is an error."""
    out: dict[str, str | None] = {}
    for name in ("tokens", "budget", "status", "role", "run_id", "fingerprint"):
        col = getattr(cmap, name)
        if col is not None and col not in cols and name not in cmap.explicit:  # Status, ROLE: any case
            col = next((c for c in cols if c.strip().lower() == col.lower()), col)
            setattr(cmap, name, col)
        if col is not None and col not in cols:
            if name in cmap.explicit:
                raise HarnessError(f"columns.{name}={col!r} is not a column of the results table (columns: {_listed(cols)})")
            col = None
            setattr(cmap, name, None)  # fits.json records the mapping that was used
        out[name] = col
    return out


def _compute(cols: list[str], cmap: ColumnMap, out: dict[str, str | None]) -> None:
    """Where C comes from when the table has no compute column (and none was mapped): the budget column, the
    compute an IsoFLOP table's runs were given (the lab's own FLOP count, which 6ND only approximates), else
    C = 6ND from a tokens column (flops None: derived)."""
    if "flops" in cmap.explicit and cmap.flops is not None:
        return
    if cmap.flops is not None and cmap.flops in cols:
        return
    if out["budget"]:
        cmap.flops = out["flops"] = out["budget"]
    elif out["tokens"]:
        cmap.flops = out["flops"] = None  # derived: C = 6ND


def source_columns(raw: pd.DataFrame, cmap: ColumnMap) -> dict[str, str | None]:
    """Canonical name -> column of raw, updating cmap to what was found: params and loss are required; flops too,
    unless tokens are there to derive C = 6ND (then flops is None) or a budget column gives it; the rest may be
    absent (None)."""
    cols = list(raw.columns)
    for name in ("params", "loss", "flops", "tokens", "budget"):
        col = getattr(cmap, name)
        if col is not None and col not in cols and name not in cmap.explicit:
            setattr(cmap, name, _alias(cols, name) or col)
    out = _optional(cols, cmap)
    _compute(cols, cmap, out)
    for name in ("params", "loss", "flops"):
        col = getattr(cmap, name)
        if name in out:
            continue
        if col is None or col not in cols:
            raise HarnessError(f"no column {col!r} for {WHAT[name]} in the results table; {HOW[name]} (columns: {_listed(cols)})")
        out[name] = col
    return out
