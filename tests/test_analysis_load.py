"""Loading results tables: our schema, foreign tables through a column mapping, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis import canonicalize, fit_all, load_results, select_fit_rows
from harness.analysis.load import group_budgets
from harness.analysis.synthetic import isoflop_sweep
from harness.analysis.tablefile import sniff_dialect
from harness.errors import HarnessError


def sweep(**kw) -> pd.DataFrame:
    return isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes_per_budget=5, noise=0.0, **kw)


def write(tmp_path: Path, df: pd.DataFrame, name: str = "results.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_harness_schema_defaults_and_conventions(tmp_path: Path) -> None:
    raw = sweep()
    path = write(tmp_path, raw)
    df = load_results(path)
    assert list(df.columns[:6]) == ["run_id", "params", "tokens", "flops", "loss", "budget"]
    np.testing.assert_allclose(df["params"], raw["params_total"])
    np.testing.assert_allclose(df["loss"], raw["val_bpb"])
    np.testing.assert_allclose(df["budget"], raw["budget_flops"])
    assert df.attrs["sha256"] and not df["tokens_derived"].any()
    alt = load_results(path, {"params": "nonembedding", "metric": "val_loss"})
    np.testing.assert_allclose(alt["params"], raw["params_nonembedding"])
    np.testing.assert_allclose(alt["loss"], raw["val_loss"])
    assert load_results(tmp_path)["params"].size == len(raw)  # a results directory works too


def test_source_is_relative_under_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A committed results dir names itself (not the absolute path of the machine that analysed it); a table
    outside the working directory keeps its absolute path."""
    (tmp_path / "results" / "demo").mkdir(parents=True)
    write(tmp_path / "results" / "demo", sweep())
    monkeypatch.chdir(tmp_path)
    assert load_results("results/demo").attrs["source"] == str(Path("results/demo/results.csv"))
    assert load_results(tmp_path / "results" / "demo").attrs["source"] == str(Path("results/demo/results.csv"))
    monkeypatch.chdir(tmp_path / "results" / "demo")
    assert load_results(tmp_path / "results" / "demo").attrs["source"] == "results.csv"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_results("../results/demo").attrs["source"] == str(tmp_path / "results" / "demo" / "results.csv")
    monkeypatch.chdir("/")  # from the root every path lies under the cwd: it stays absolute
    assert load_results(tmp_path / "results" / "demo").attrs["source"] == str(tmp_path / "results" / "demo" / "results.csv")


def test_foreign_csv_mapping_derives_tokens(tmp_path: Path) -> None:
    raw = sweep()
    foreign = pd.DataFrame({"Model Size": raw["params_total"], "Training FLOP": raw["flops"], "loss": raw["val_bpb"]})
    path = write(tmp_path, foreign, "theirs.csv")
    cfg = {"columns": {"params": "Model Size", "flops": "Training FLOP", "loss": "loss"}}
    df = load_results(path, cfg)
    np.testing.assert_allclose(df["tokens"], foreign["Training FLOP"] / (6 * foreign["Model Size"]))
    assert df["tokens_derived"].all() and df.attrs["tokens_derived"]
    assert sorted(df["budget"].unique()) == [1e18, 1e19, 1e20]  # grouped from FLOPs
    assert (df["status"] == "ok").all() and (df["role"] == "sweep").all()
    fits = fit_all(df, {"bootstrap": 0})
    assert any("D = C/(6N)" in w for w in fits.warnings)


@pytest.mark.parametrize(("sep", "decimal", "bom", "read_as"), [
    ("\t", ".", False, "tab-separated"),
    (";", ",", True, "semicolon-separated, decimal comma"),  # a spreadsheet's export in many locales
    ("|", ".", False, "pipe-separated"),
])
def test_spreadsheet_exports_read_like_the_csv(tmp_path: Path, sep: str, decimal: str, bom: bool, read_as: str) -> None:
    from harness.analysis.units import load_table

    raw = sweep()
    foreign = pd.DataFrame({"Model Size": raw["params_total"], "Training FLOP": raw["flops"],
                            "loss (val, bpb)": raw["val_bpb"]})  # a column name holding a comma, quoted
    path = tmp_path / "theirs.txt"
    text = foreign.to_csv(sep=sep, decimal=decimal, index=False, float_format="%.10g")
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    cfg = {"columns": {"params": "Model Size", "flops": "Training FLOP", "loss": "loss (val, bpb)"}}
    want = load_results(write(tmp_path, foreign, "theirs.csv"), cfg)
    got = load_table(str(path), cfg)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-9)
    np.testing.assert_allclose(got["params"], want["params"], rtol=1e-9)
    assert got.attrs["units"] == f"The file was read as {read_as}"
    assert load_table(str(tmp_path / "theirs.csv"), cfg).attrs["units"] is None  # a plain CSV says nothing


def test_plain_names_need_no_mapping_and_c_is_derived_from_n_and_d(tmp_path: Path) -> None:
    """A hand-written table with the literature's N, D and loss columns: found without columns.*, C = 6ND."""
    raw = sweep()
    path = write(tmp_path, pd.DataFrame({"N": raw["params_total"], "D": raw["tokens"], "Loss": raw["val_bpb"]}))
    df = load_results(path)
    np.testing.assert_allclose(df["flops"], 6 * raw["params_total"] * raw["tokens"])
    assert df["flops_derived"].all() and not df["tokens_derived"].any()
    assert df.attrs["columns"]["params"] == "N" and df.attrs["columns"]["flops"] is None
    assert len(df["budget"].unique()) == 3  # the sweep's budgets, grouped from 6ND
    fits = fit_all(df, {"bootstrap": 0})
    assert fits.data["flops_derived"] and any("C = 6ND was derived" in w for w in fits.warnings)
    width = pd.DataFrame({"N": raw["params_total"], "d": raw["tokens"], "flops": raw["flops"], "loss": raw["val_bpb"]})
    assert load_results(write(tmp_path, width, "width.csv")).attrs["columns"]["tokens"] is None  # d: a width, not D
    ours = load_results(write(tmp_path, raw, "ours.csv"))  # the harness's own columns win over the aliases
    assert not ours["flops_derived"].any() and ours.attrs["columns"]["params"] == "params_total"


def test_an_isoflop_table_with_only_a_budget_column_takes_c_from_it(tmp_path: Path) -> None:
    """Chinchilla's IsoFLOP figure, digitized: budget, N and loss. C is the run's budget, D = C/(6N) is derived."""
    raw = sweep()
    theirs = pd.DataFrame({"budget": raw["budget_flops"], "N": raw["params_total"], "loss": raw["val_bpb"]})
    df = load_results(write(tmp_path, theirs))
    np.testing.assert_allclose(df["flops"], raw["budget_flops"])
    np.testing.assert_allclose(df["tokens"], raw["budget_flops"] / (6 * raw["params_total"]))
    assert df.attrs["columns"]["flops"] == "budget" and df["tokens_derived"].all() and not df["flops_derived"].any()
    fits = fit_all(df, {"bootstrap": 0})
    assert fits.approach2["a"].value == pytest.approx(fit_all(load_results(write(tmp_path, raw, "ours.csv")),
                                                              {"bootstrap": 0}).approach2["a"].value, abs=0.02)


def test_a_budget_column_gives_c_even_beside_tokens(tmp_path: Path) -> None:
    """Marin's and Llama 3's published IsoFLOP tables: budget, params, tokens, loss and no compute column. C is the
    lab's own budget, not 6ND (Marin's 6ND runs 0.93-1.35x its budgets), and nothing is flagged as derived."""
    raw = sweep()
    theirs = pd.DataFrame({"budget": raw["budget_flops"], "params": raw["params_total"],
                           "tokens": raw["tokens"] * np.linspace(0.8, 1.1, len(raw)), "loss": raw["val_bpb"]})
    df = load_results(write(tmp_path, theirs))
    np.testing.assert_allclose(df["flops"], raw["budget_flops"])
    assert df.attrs["columns"]["flops"] == "budget" and not df["flops_derived"].any() and not df["tokens_derived"].any()
    fits = fit_all(df, {"bootstrap": 0})
    assert not any("C = 6ND" in w or "not one IsoFLOP budget" in w for w in fits.warnings)


def test_experiments_sharing_one_design_are_refused_until_one_is_picked(tmp_path: Path) -> None:
    """Two datasets' IsoFLOP sweeps stacked in one table (as Marin publishes them) would read as seed repeats."""
    a, b = sweep(), sweep(seed=1)
    both = pd.concat([a.assign(dataset="dclm"), b.assign(dataset="nemotron")], ignore_index=True)
    both = both.drop(columns=["seed", "data_fingerprint"])
    path = write(tmp_path, both)
    with pytest.raises(HarnessError, match=r"2 experiments, told apart by column 'dataset'.*columns.fingerprint=dataset "
                                           r"fingerprint=dclm"):
        load_results(path)
    failed = both.copy()
    failed.loc[3, ["status", "params_total"]] = ["failed", np.nan]  # a failed row with no size changes nothing
    with pytest.raises(HarnessError, match="told apart by column 'dataset'"):
        load_results(write(tmp_path, failed, "failed.csv"))
    df = load_results(path, {"columns": {"fingerprint": "dataset"}, "fingerprint": "nemotron"})
    assert len(df) == len(b) and not np.any(pd.Series(list(zip(df["params"], df["budget"]))).duplicated())
    seeds = pd.concat([a, b.assign(seed=1)], ignore_index=True)  # the same stack as seeds: repeats, not experiments
    seeds["host"] = ["box0"] * len(a) + ["box1"] * len(b)
    assert len(load_results(write(tmp_path, seeds, "seeds.csv"))) == len(seeds)


def test_counts_written_as_papers_write_them(tmp_path: Path) -> None:
    """70M, 1.4B, 300B, 2T (Pythia's and OLMo's size names, token counts from a paper's table) are read as counts;
    a suffix that means nothing here is still named as the bad value."""
    table = "N,D,loss\n70M,300B,2.9\n160m,0.3T,2.7\n410M,3e11,2.5\n1.4B,300 B,2.3\n2.8G,300000M,2.2\n"
    (tmp_path / "t.csv").write_text(table)
    df = load_results(tmp_path / "t.csv")
    np.testing.assert_allclose(df["params"], [7e7, 1.6e8, 4.1e8, 1.4e9, 2.8e9])
    np.testing.assert_allclose(df["tokens"], 3e11)
    assert df.attrs["suffixed"] == ["N", "D"]
    (tmp_path / "bad.csv").write_text(table.replace("410M", "410X"))
    with pytest.raises(HarnessError, match="non-numeric value '410X' in data row 3"):
        load_results(tmp_path / "bad.csv")


def test_a_comma_that_may_group_thousands_is_not_taken_for_a_decimal_comma() -> None:
    assert sniff_dialect(b"N;loss\n1,5e+06;3,14\n") == (";", ",")
    assert sniff_dialect(b"N;loss\n1,500;3\n2,250;2\n") == (";", ".")  # 1,500: thousands or 1.5? left as text
    assert sniff_dialect(b"N,loss\n1500,3.1\n") == (",", ".")
    assert sniff_dialect(b"N\tloss\n1500\t3.1\n") == ("\t", ".")


def test_a_spreadsheets_padding_is_not_a_run(tmp_path: Path) -> None:
    """Empty trailing rows and unnamed empty columns (as spreadsheets export them) are dropped, nothing else."""
    raw = sweep()[["params_total", "tokens", "flops", "val_bpb"]]
    lines = raw.to_csv(index=False).splitlines()
    padded = tmp_path / "padded.csv"
    padded.write_text("\n".join([lines[0] + ",,", *(line + ",," for line in lines[1:]), ",,,,,", ",,,,,"]) + "\n")
    got, want = load_results(padded), load_results(write(tmp_path, raw))
    assert len(got) == len(want) == len(raw)
    np.testing.assert_allclose(got["loss"], want["loss"])


def test_budget_grouping_tolerates_jitter() -> None:
    flops = np.array([1.0e18, 1.02e18, 0.99e18, 3.0e18, 3.05e18, 1e19])
    keys = group_budgets(flops, 0.1)
    assert len(set(keys[:3])) == 1 and len(set(keys[3:5])) == 1 and len(set(keys)) == 3


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.drop(columns=["params_total"]), "params_total"),
        (lambda d: d.drop(columns=["flops", "tokens", "budget_flops"]), "columns.flops.*derive C = 6ND.*budget"),
        (lambda d: d.drop(columns=["val_bpb"]), "metric="),
        (lambda d: d.assign(params_total=d["params_total"].astype(object).where(d.index != 2, "big")), "non-numeric"),
        (lambda d: d.assign(flops=d["flops"].where(d.index != 1, 0.0)), "must be > 0"),
        (lambda d: d.assign(tokens=d["tokens"].where(d.index != 1, -5.0)), "must be > 0"),
        (lambda d: d.assign(val_bpb=d["val_bpb"].astype(object).where(d.index != 0, "oops")), "non-numeric"),
        (lambda d: d.assign(params_total=d["params_total"].where(d.index != 0, np.nan)), "empty or not finite"),
        (lambda d: d.assign(status="diverged"), "no usable runs"),
        (lambda d: d.iloc[:0], "no rows"),
    ],
)
def test_bad_tables_raise_one_line_errors(tmp_path: Path, mutate, match: str) -> None:
    path = write(tmp_path, mutate(sweep()))
    with pytest.raises(HarnessError, match=match) as info:
        select_fit_rows(load_results(path))
    assert "\n" not in str(info.value)


def test_explicit_mapping_to_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, sweep())
    with pytest.raises(HarnessError, match=r"columns\.tokens='Tokens' is not a column"):
        load_results(path, {"columns": {"tokens": "Tokens"}})
    with pytest.raises(HarnessError, match="params convention"):
        load_results(path, {"params": "embedding"})


def test_not_a_csv(tmp_path: Path) -> None:
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(HarnessError, match="not a CSV"):
        load_results(binary)
    prose = tmp_path / "notes.txt"
    prose.write_text("this is a note\nnot a table at all\n")
    with pytest.raises(HarnessError, match=r"not a table \(found 1 column"):
        load_results(prose)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(HarnessError, match="not a readable table"):
        load_results(ragged)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(HarnessError, match="empty"):
        load_results(empty)
    with pytest.raises(HarnessError, match="does not exist"):
        load_results(tmp_path / "missing.csv")


def test_nan_loss_status_and_holdout_are_excluded_and_counted(tmp_path: Path) -> None:
    raw = sweep()
    raw.loc[0, "val_bpb"] = np.nan
    raw.loc[1, "status"] = "diverged"
    raw.loc[1, "params_total"] = np.nan  # failed rows may be incomplete
    raw.loc[7, "role"] = "holdout"
    df = load_results(write(tmp_path, raw))
    sel = select_fit_rows(df)
    assert sel.excluded == {"status=diverged": 1, "holdout": 1, "nan_loss": 1}
    assert len(sel.used) == len(raw) - 3
    assert raw.loc[7, "run_id"] not in set(sel.used["run_id"])
    assert any("NaN" in w for w in sel.warnings)


def test_mixed_corpora_refused_unless_one_is_selected(tmp_path: Path) -> None:
    raw = sweep()
    raw.loc[raw.index[:4], "data_fingerprint"] = "other"
    path = write(tmp_path, raw)
    with pytest.raises(HarnessError, match=r"2 different corpora.*fingerprint="):
        load_results(path)
    df = load_results(path, {"fingerprint": "synthetic"})
    assert (df["fingerprint"] == "synthetic").all() and len(df) == len(raw) - 4
    with pytest.raises(HarnessError, match="matches no row"):
        load_results(path, {"fingerprint": "nope"})


def test_canonicalize_accepts_a_dataframe() -> None:
    df = canonicalize(sweep(), {"metric": "val_loss"})
    assert (df["loss"] > 0).all() and df["budget"].nunique() == 3


def test_columns_none_forces_derivation_and_grouping(tmp_path: Path) -> None:
    raw = sweep()
    raw["flops"] *= 1.0 + 0.01 * np.sin(np.arange(len(raw)))  # actual FLOPs jitter around the budget
    df = load_results(write(tmp_path, raw), {"columns": {"tokens": "none", "budget": "none"}})
    assert df["tokens_derived"].all() and df.attrs["budget_inferred"] and df["budget"].nunique() == 3
    with pytest.raises(HarnessError, match=r"columns\.params"):
        load_results(write(tmp_path, raw), {"columns": {"params": "none"}})


def test_flops_not_proportional_to_nd_is_flagged() -> None:
    raw = sweep()
    raw["flops"] = raw["flops"] * (raw["params_total"] / raw["params_total"].min()) ** 0.3
    raw["budget_flops"] = raw.groupby("budget_flops")["flops"].transform("mean")
    fits = fit_all(canonicalize(raw), {"bootstrap": 0, "isoflop": {"exclude_edge": False}})
    assert any("not proportional to N D" in w for w in fits.warnings)


def test_status_and_role_columns_in_any_case_and_other_tables_words(tmp_path: Path) -> None:
    raw = sweep().rename(columns={"status": "Status", "role": "Role"})
    raw.loc[0, "Status"], raw.loc[1, "Role"] = "FAILED", "held-out"
    sel = select_fit_rows(load_results(write(tmp_path, raw)))
    assert sel.excluded == {"status=failed": 1, "holdout": 1} and not sel.warnings
    raw.loc[2:, "Role"] = "train"  # a word the harness does not know: fitted, and said so
    sel = select_fit_rows(load_results(write(tmp_path, raw)))
    assert len(sel.used) == len(raw) - 2 and any("role values the harness does not know" in w and "train: "
                                                 in w for w in sel.warnings)
    raw["Status"] = "completed"
    with pytest.raises(HarnessError, match=r"'completed' mean finished runs.*columns\.status=none"):
        select_fit_rows(load_results(write(tmp_path, raw)))


def test_exact_copies_of_rows_are_dropped_not_read_as_seeds(tmp_path: Path) -> None:
    raw = sweep()
    doubled = pd.concat([raw, raw.iloc[:4]], ignore_index=True)
    doubled["run_id"] = [f"r{i}" for i in range(len(doubled))]  # copied lines under new ids are still copies
    sel = select_fit_rows(load_results(write(tmp_path, doubled)))
    assert len(sel.used) == len(raw) and sel.excluded == {"duplicate": 4}
    assert any("4 row(s) repeat another row exactly" in w for w in sel.warnings)
    seeds = isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes_per_budget=5, noise=0.01, seeds=2)  # repeats differ: kept
    assert len(select_fit_rows(load_results(write(tmp_path, seeds))).used) == len(seeds)


def test_grouping_splits_at_gaps_and_bounds_a_continuum() -> None:
    rng = np.random.default_rng(0)
    centres = np.repeat([1e18, 3e18, 1e19, 3e19, 1e20], 7)
    jittered = centres * rng.uniform(0.94, 1.06, centres.size)  # spreads of up to 12.8% > the 10% tolerance
    keys = group_budgets(jittered, 0.1)
    assert len(set(keys)) == 5 and all(len(set(keys[i:i + 7])) == 1 for i in range(0, 35, 7))
    continuum = np.geomspace(1e18, 1e20, 200)  # no budgets at all: groups stay within the tolerance
    keys = group_budgets(continuum, 0.1)
    for k in set(keys):
        members = continuum[keys == k]
        assert members.max() / members.min() <= 1.1 + 1e-12


def test_a_budget_column_that_jitters_is_grouped_and_said_so(tmp_path: Path) -> None:
    raw = sweep()
    exact = raw.assign(budget_flops=raw["budget_flops"] * 1.2345)  # exact values are kept as written
    assert set(load_results(write(tmp_path, exact))["budget"]) == set(raw["budget_flops"] * 1.2345)
    rng = np.random.default_rng(1)
    raw["budget_flops"] = raw["budget_flops"] * rng.uniform(0.995, 1.005, len(raw))
    sel = select_fit_rows(load_results(write(tmp_path, raw)))
    assert sel.used["budget"].nunique() == 3
    assert any("grouped into 3 budgets" in w for w in sel.warnings)


def test_a_misread_unit_shows_in_c_over_nd(tmp_path: Path) -> None:
    raw = sweep()
    plain = pd.DataFrame({"N": raw["params_total"], "D": raw["tokens"], "C": raw["flops"], "loss": raw["val_bpb"]})
    assert not any("C/(N D)" in w for w in select_fit_rows(load_results(write(tmp_path, plain))).warnings)
    slipped = plain.assign(C=plain["C"] / 8.64e19)  # PF-days under a plain header: read as FLOPs
    warned = [w for w in select_fit_rows(load_results(write(tmp_path, slipped))).warnings if "C/(N D)" in w]
    assert len(warned) == 1 and "units.flops" in warned[0]
    derived = plain.drop(columns=["D"]).assign(C=plain["C"] / 8.64e19)  # D from C: C/(N D) is 6 by construction
    assert not any("C/(N D)" in w for w in select_fit_rows(load_results(write(tmp_path, derived))).warnings)


def test_a_perplexity_column_is_found_by_name_and_a_wide_tables_columns_are_capped(tmp_path: Path) -> None:
    raw = sweep()
    ppl = pd.DataFrame({"N": raw["params_total"], "D": raw["tokens"], "C": raw["flops"], "ppl": np.exp(raw["val_bpb"])})
    from harness.analysis.units import load_table

    np.testing.assert_allclose(load_table(str(write(tmp_path, ppl)), {})["loss"], raw["val_bpb"])
    wide = pd.DataFrame({f"c{i}": [1.0, 2.0] for i in range(50)})
    with pytest.raises(HarnessError, match=r"'c19', \.\.\. \(30 more\)\)$"):
        load_results(write(tmp_path, wide))
