"""Reading table files as researchers save them (harness.analysis.tablefile): trailing delimiters, pasted markdown
tables, comment and Excel 'sep=' lines above the header, and one clear error for JSON, a title line or a missing
header."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.synthetic import isoflop_sweep
from harness.analysis.tablefile import read_table, sniff_dialect
from harness.analysis.units import load_table
from harness.errors import HarnessError

REPO = Path(__file__).resolve().parents[1]
ROWS = [(2.01e7, 8.29187e9, 1e18, 3.71449, 0.00048547), (3.2e7, 5.20833e9, 1e18, 3.60975, 0.000422256),
        (5.08e7, 3.28084e9, 1e18, 3.5656, 0.000367589)]
WANT = pd.DataFrame(ROWS, columns=["N", "D", "C", "loss", "lr"])


def table(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def lines(rows: list[tuple], sep: str = ",", end: str = "") -> str:
    return "".join(sep.join(f"{v:g}" for v in row) + end + "\n" for row in rows)


def assert_reads_as_want(df: pd.DataFrame, cols: list[str]) -> None:
    assert list(df.columns) == cols
    np.testing.assert_allclose(df[cols].to_numpy(dtype=float), WANT[cols].to_numpy(), rtol=1e-12)


@pytest.mark.parametrize(("sep", "cols"), [(",", ["N", "D", "C", "loss", "lr"]), (",", ["N", "D", "C", "loss"]),
                                           ("\t", ["N", "D", "C", "loss"]), (";", ["N", "D", "C", "loss"])])
def test_a_trailing_delimiter_on_every_row_shifts_no_column(tmp_path: Path, sep: str, cols: list[str]) -> None:
    """'2.01e+07,8.29e+09,1e+18,3.71,' under 'N,D,C,loss': pandas took N as the index and read D as N."""
    rows = [row[: len(cols)] for row in ROWS]
    df = read_table(table(tmp_path, sep.join(cols) + "\n" + lines(rows, sep, end=sep)))
    assert_reads_as_want(df, cols)
    assert isinstance(df.index, pd.RangeIndex)


def test_trailing_delimiters_on_some_rows_or_two_of_them(tmp_path: Path) -> None:
    text = "N,D,C,loss,lr\n" + lines(ROWS[:1], end=",,") + lines(ROWS[1:], end=",,")
    assert_reads_as_want(read_table(table(tmp_path, text)), list(WANT.columns))
    mixed = "N,D,C,loss,lr\n" + lines(ROWS[:2], end=",") + lines(ROWS[2:])  # the last row without one
    assert_reads_as_want(read_table(table(tmp_path, mixed, "m.csv")), list(WANT.columns))


def test_a_filled_field_beyond_the_header_is_refused_not_dropped(tmp_path: Path) -> None:
    text = "N,D,C,loss\n" + lines(ROWS)  # five values per row under four names: the lr column has no name
    with pytest.raises(HarnessError, match=r"data rows hold 1 field\(s\) more than its header row \(line 1\)"):
        read_table(table(tmp_path, text))


def test_tables_without_those_problems_read_exactly_as_pandas_reads_them(tmp_path: Path) -> None:
    """The harness's own results.csv and a plain hand-written table: read_table is pd.read_csv plus the header
    strip, as before."""
    ours = isoflop_sweep(budgets=(1e18, 1e19), sizes_per_budget=5, noise=0.01)
    path = tmp_path / "results.csv"
    ours.to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_table(tmp_path), pd.read_csv(path, skipinitialspace=True))
    plain = table(tmp_path, "N,D,C,loss,lr\n" + lines(ROWS), "plain.csv")
    pd.testing.assert_frame_equal(read_table(plain), pd.read_csv(plain))
    assert read_table(plain).attrs["dialect"] == ""


@pytest.mark.parametrize("rule", ["|---|---|---|---|---|", "|:---|---:|:-:|---|---|", "| --- | --- | --- | --- | --- |"])
def test_a_pasted_markdown_table_reads_like_the_csv(tmp_path: Path, rule: str) -> None:
    body = "".join("| " + " | ".join(f"{v:g}" for v in row) + " |\n" for row in ROWS)
    df = read_table(table(tmp_path, "| N | D | C | loss | lr |\n" + rule + "\n" + body, "t.md"))
    assert_reads_as_want(df, list(WANT.columns))  # no '---' row, no empty first or last column
    assert df.attrs["dialect"] == "pipe-separated"
    got = load_table(str(tmp_path / "t.md"), {})
    np.testing.assert_allclose(got["params"], WANT["N"])


def test_comment_lines_above_the_header_and_between_rows_are_skipped(tmp_path: Path) -> None:
    text = "# results from lab X\n#loss is val loss\n\nN,D,C,loss,lr\n" + lines(ROWS[:2]) + "# a note\n" + lines(ROWS[2:])
    assert_reads_as_want(read_table(table(tmp_path, text)), list(WANT.columns))
    # a header whose first column is named '#' is a header, and a run named '#3' is a run
    runs = read_table(table(tmp_path, "#,N,loss\n#3,1e7,3.1\n#4,2e7,3.0\n", "hash.csv"))
    assert list(runs.columns) == ["#", "N", "loss"] and list(runs["#"]) == ["#3", "#4"]


def test_excel_sep_line_names_the_delimiter(tmp_path: Path) -> None:
    """Excel writes 'sep=;' above a semicolon table (here with decimal commas, as it writes them in many locales)."""
    rows = "".join(";".join(f"{v:g}".replace(".", ",") for v in row) + "\n" for row in ROWS)
    df = read_table(table(tmp_path, "sep=;\nN;D;C;loss;lr\n" + rows))
    assert_reads_as_want(df, list(WANT.columns))
    assert df.attrs["dialect"] == "semicolon-separated, decimal comma"
    assert sniff_dialect(b"N;loss\n1e7;3,14\n", sep=";") == (";", ",")
    tab = read_table(table(tmp_path, "sep=\t\nN\tD\tC\tloss\tlr\n" + lines(ROWS, "\t"), "tab.csv"))
    assert_reads_as_want(tab, list(WANT.columns))


@pytest.mark.parametrize(("text", "match"), [
    ('[{"N":20100000.0,"D":8291873963.5,"C":1e+18,"loss":3.71},' * 200 + "]\n", r"is JSON, not a table \(line 1: "),
    ('{"N":20100000.0,"D":8291873963.5,"C":1e+18,"loss":3.71}\n' * 50, r"is JSON.*lines=True"),
    ("Table 3: IsoFLOP runs\nN,D,C,loss\n" + lines([r[:4] for r in ROWS]),
     r"line 1 \('Table 3: IsoFLOP runs'\) is not a header row.*delete the lines above the header row"),
    ("# N,D,C,loss\n" + lines([r[:4] for r in ROWS]), r"has no header row: line 2 \('2.01e\+07,.*add a header row"),
])
def test_what_is_not_a_table_gets_one_short_error_naming_its_first_line(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(HarnessError, match=match) as err:
        read_table(table(tmp_path, text))
    assert len(str(err.value)) < 300 and "\n" not in str(err.value)  # never kilobytes of column names


def test_the_cli_prints_one_error_line_and_exits_2(tmp_path: Path) -> None:
    path = table(tmp_path, '{"N":2e7,"D":8e9,"C":1e18,"loss":3.7}\n' * 5, "runs.jsonl")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", "from harness.cli import analyze_main; analyze_main()",
                           f"results={path}", f"out={tmp_path / 'o'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "is JSON, not a table" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_decimal_comma_that_first_shows_past_the_first_4_kb_is_found(tmp_path: Path) -> None:
    rows = [f"{1000 + i};{2000 + i};4,{500 + i % 400:03d}" for i in range(400)]  # each could group thousands
    rows[300] = "1300;2300;3,7145"  # the first value that can only be a decimal comma
    path = tmp_path / "late.csv"
    path.write_text("N;D;loss\n" + "\n".join(rows) + "\n")
    assert path.stat().st_size > 4096 and "3,7145" not in path.read_text()[:4096]
    df = read_table(path)
    assert df["loss"].dtype.kind == "f" and df["loss"].iloc[0] == 4.5 and df["loss"].iloc[300] == 3.7145


def test_a_trailing_delimiter_on_a_later_row_only_is_dropped_a_filled_one_refused(tmp_path: Path) -> None:
    """Only the third row ends in ',': pandas refused the whole file ('Expected 5 fields in line 4, saw 6')."""
    later = "N,D,C,loss,lr\n" + lines(ROWS[:2]) + lines(ROWS[2:], end=", ,")
    assert_reads_as_want(read_table(table(tmp_path, later)), list(WANT.columns))
    quoted = 'name,N\n"a,",1\n"b,",2,\n'  # a quoted field holding the delimiter is one field, not a trailing one
    df = read_table(table(tmp_path, quoted, "q.csv"))
    assert df["name"].tolist() == ["a,", "b,"] and df["N"].tolist() == [1, 2]
    filled = "N,D,C,loss,lr\n" + lines(ROWS[:2]) + lines(ROWS[2:], end=",7")
    with pytest.raises(HarnessError, match=r"not a readable table \(.*Expected 5 fields in line 4, saw 6"):
        read_table(table(tmp_path, filled, "f.csv"))


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zip"])
def test_compressed_tables_read_like_the_plain_one(tmp_path: Path, kind: str) -> None:
    """pandas reads results.csv.gz and the like; so does the harness (the file's own sha256 is recorded)."""
    import bz2
    import gzip
    import lzma
    import zipfile

    text = ("N;D;C;loss;lr\n" + lines(ROWS, ";")).replace(".", ",").encode()  # a dialect the sniffing must see
    path = tmp_path / f"t.csv.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("t.csv", text)
    else:
        path.write_bytes({"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind](text))
    df = read_table(path)
    assert_reads_as_want(df, list(WANT.columns))
    assert df.attrs["dialect"] == "semicolon-separated, decimal comma"
    assert df.attrs["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_zip_of_several_files_or_a_damaged_gzip_gets_one_error(tmp_path: Path) -> None:
    import gzip
    import zipfile

    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "N,loss\n1,2\n")
        zf.writestr("b.csv", "N,loss\n1,2\n")
    with pytest.raises(HarnessError, match=r"zip archive of 2 files; pass the one table in it"):
        read_table(two)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(("N,D,C,loss,lr\n" + lines(ROWS)).encode())[:30])
    with pytest.raises(HarnessError, match=r"is a damaged compressed file .*recompress or pass the plain table"):
        read_table(cut)


def test_a_windows_1252_export_reads_with_its_header(tmp_path: Path) -> None:
    """Excel's legacy export writes 'µ' as one byte 0xB5, which is not UTF-8; the numbers are ASCII either way."""
    path = tmp_path / "legacy.csv"
    path.write_bytes(("N,D,C,loss (µ),lr\n" + lines(ROWS)).encode("cp1252"))
    df = read_table(path)
    assert list(df.columns) == ["N", "D", "C", "loss (µ)", "lr"]
    np.testing.assert_allclose(df["loss (µ)"], WANT["loss"])
