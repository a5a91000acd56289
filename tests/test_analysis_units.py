"""Units in a table's headers (harness.analysis.units): the spellings papers use for PF-days, scales and counts,
one error for a bracketed unit the parser cannot read (notes such as 'Params (total)' are no unit), each column
scaled by its own header, and perplexity columns named as such."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.units import COUNT_UNITS, FLOP_UNITS, PF_DAY, load_table, names_a_unit, parse_unit
from harness.errors import HarnessError

N = np.array([2.01e7, 3.2e7, 5.08e7, 8.06e7])
D = np.array([8.29e9, 5.21e9, 3.28e9, 2.07e9])
C = np.full(4, 1e18)
LOSS = np.array([3.71, 3.61, 3.57, 3.54])


def load(tmp_path: Path, cols: dict[str, object], cfg: dict | None = None) -> pd.DataFrame:
    path = tmp_path / "t.csv"
    pd.DataFrame(cols).to_csv(path, index=False)
    return load_table(str(path), cfg or {})


@pytest.mark.parametrize(("header", "scale"), [
    ("C (PFLOP/s-days)", PF_DAY), ("Compute (petaflop/s-days)", PF_DAY), ("FLOPs (PF-days)", PF_DAY),
    ("C (x1e18)", 1e18), ("C (10^18)", 1e18), ("C (1e18 FLOPs)", 1e18), ("FLOPs (\u00d710\u00b9\u2078)", 1e18),
    ("C (EFLOP)", 1e18), ("compute (zettaFLOPs)", 1e21), ("C [1e+18]", 1e18),
])
def test_compute_units_as_papers_write_them(tmp_path: Path, header: str, scale: float) -> None:
    df = load(tmp_path, {"N": N, "D": D, header: C / scale, "loss": LOSS})
    np.testing.assert_allclose(df["flops"], C, rtol=1e-12)
    assert "flops given in" in df.attrs["units"]


@pytest.mark.parametrize(("header", "scale"), [
    ("Params (millions of parameters)", 1e6), ("N (10^6)", 1e6), ("Params (Mil.)", 1e6), ("Parameters (M)", 1e6),
    ("N (M params)", 1e6), ("params (bn)", 1e9), ("N (x1e6)", 1e6),
])
def test_parameter_counts_in_millions_or_billions(tmp_path: Path, header: str, scale: float) -> None:
    df = load(tmp_path, {header: N / scale, "D": D, "C": C, "loss": LOSS})
    np.testing.assert_allclose(df["params"], N, rtol=1e-12)


def test_tokens_as_a_scale_with_their_base_word(tmp_path: Path) -> None:
    df = load(tmp_path, {"N": N, "Tokens (billions of tokens)": D / 1e9, "C": C, "loss": LOSS})
    np.testing.assert_allclose(df["tokens"], D, rtol=1e-12)


@pytest.mark.parametrize(("cols", "message"), [
    ({"N": N, "D": D, "C (PF-weeks)": C, "loss": LOSS}, r"column 'C \(PF-weeks\)': the unit 'PF-weeks'.*units\.flops="),
    ({"Params (M, excl. embeddings)": N, "D": D, "C": C, "loss": LOSS}, r"the unit 'M, excl\. embeddings'.*units\.params="),
    ({"N": N, "D (k tok)": D, "C": C, "loss": LOSS}, r"column 'D \(k tok\)'.*units\.tokens="),
    ({"N": N, "D": D, "budget (GPU-hours)": C, "loss": LOSS}, r"column 'budget \(GPU-hours\)'.*units\.flops="),
    ({"N": N, "D": D, "C": C, "budget (1e18 days)": C, "loss": LOSS}, r"the unit '1e18 days'"),
])
def test_a_bracketed_unit_that_cannot_be_read_is_refused(tmp_path: Path, cols: dict, message: str) -> None:
    """Read in base units these columns would be wrong by the unit's factor; the error names column and unit."""
    with pytest.raises(HarnessError, match=message) as err:
        load(tmp_path, cols)
    assert "rename the column" in str(err.value)


def test_an_explicit_unit_overrides_an_unreadable_header(tmp_path: Path) -> None:
    df = load(tmp_path, {"N": N, "D": D, "C (PF-weeks)": C / PF_DAY, "loss": LOSS}, {"units": {"flops": "pf_days"}})
    np.testing.assert_allclose(df["flops"], C, rtol=1e-12)


def test_brackets_holding_notes_are_no_unit(tmp_path: Path) -> None:
    """'Params (total)', 'Tokens (seen)', 'C (6ND)', 'Loss (val)': the values stay as given, and nothing is refused."""
    df = load(tmp_path, {"Params (total)": N, "Tokens (seen)": D, "C (6ND)": C, "Loss (val)": LOSS})
    np.testing.assert_allclose(df["params"], N)
    np.testing.assert_allclose(df["tokens"], D)
    np.testing.assert_allclose(df["flops"], C)
    np.testing.assert_allclose(df["loss"], LOSS)
    assert df.attrs["units"] is None
    for note in ("total", "non-embedding", "val", "GPT-2 BPE", "approx.", "excl. embeddings"):
        assert not names_a_unit(note)
        assert parse_unit(note, COUNT_UNITS) is None
    # a loss column's bracket never refuses: units.loss reads only ppl-like words there
    assert load(tmp_path, {"N": N, "D": D, "C": C, "loss (M tokens)": LOSS})["loss"].tolist() == LOSS.tolist()
    assert parse_unit("PF-days", COUNT_UNITS) is None and parse_unit("M", FLOP_UNITS) == ("millions", 1e6)


def test_each_compute_column_reads_its_own_header(tmp_path: Path) -> None:
    """A PF-days compute column beside a budget in FLOPs, and a budget in 1e18 beside C in FLOPs: each column by
    its own header, never by the other's (budgets of 8.64e37 or of 1 FLOP before)."""
    pf = load(tmp_path, {"N": N, "D": D, "FLOPs (PF-days)": C / PF_DAY, "budget": C, "loss": LOSS})
    np.testing.assert_allclose(pf["flops"], C, rtol=1e-12)
    np.testing.assert_allclose(pf["budget"], C, rtol=1e-12)
    assert "budget" not in pf.attrs["units"]
    scaled = load(tmp_path, {"N": N, "D": D, "C": C, "budget (1e18)": C / 1e18, "loss": LOSS})
    np.testing.assert_allclose(scaled["budget"], C, rtol=1e-12)
    np.testing.assert_allclose(scaled["flops"], C, rtol=1e-12)
    assert scaled.attrs["units"] == "budget given in units of 1e+18 (x 1e+18)"
    only = load(tmp_path, {"N": N, "D": D, "budget (PF-days)": C / PF_DAY, "loss": LOSS})  # the budget gives C
    np.testing.assert_allclose(only["flops"], C, rtol=1e-12)


def test_units_flops_still_scales_the_budget_column_too(tmp_path: Path) -> None:
    """README: units.flops converts the mapped compute columns, the budget among them, and wins over headers."""
    df = load(tmp_path, {"N": N, "D": D, "C": C / PF_DAY, "budget (1e18)": C / PF_DAY, "loss": LOSS},
              {"units": {"flops": "pf_days"}})
    np.testing.assert_allclose(df["flops"], C, rtol=1e-12)
    np.testing.assert_allclose(df["budget"], C, rtol=1e-12)


@pytest.mark.parametrize("bad", [0.9, 1.0, -2.0])
def test_a_perplexity_of_one_or_less_is_named_as_written(tmp_path: Path, bad: float) -> None:
    ppl = np.exp(LOSS)
    ppl[3] = bad
    with pytest.raises(HarnessError, match=rf"'Loss \(ppl\)' holds perplexities .* > 1, but data row 4 holds {bad}; "):
        load(tmp_path, {"N": N, "D": D, "C": C, "Loss (ppl)": ppl})
    status = ["ok", "ok", "ok", "failed"]  # a failed run is not fitted: its value is no error
    df = load(tmp_path, {"N": N, "D": D, "C": C, "Loss (ppl)": ppl, "status": status})
    np.testing.assert_allclose(df["loss"][:3], LOSS[:3], rtol=1e-12)


@pytest.mark.parametrize(("name", "is_ppl"), [("perplexity", True), ("ppl", True), ("PPL", True),
                                              ("val_ppl", True), ("Perplexity (val)", True), ("log_ppl", False),
                                              ("PPL (log)", False), ("val_loss", False)])
def test_a_loss_column_named_perplexity_is_read_as_one(tmp_path: Path, name: str, is_ppl: bool) -> None:
    values = np.exp(LOSS) if is_ppl else LOSS
    df = load(tmp_path, {"N": N, "D": D, "C": C, name: values}, {"metric": name})
    np.testing.assert_allclose(df["loss"], LOSS, rtol=1e-12)
    assert ("perplexities" in (df.attrs["units"] or "")) == is_ppl
    if is_ppl:  # units.loss=loss says the column holds log-losses after all
        kept = load(tmp_path, {"N": N, "D": D, "C": C, name: values}, {"metric": name, "units": {"loss": "loss"}})
        np.testing.assert_allclose(kept["loss"], values)
