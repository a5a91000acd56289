"""Read a table file as a researcher saved it: comma-, tab-, semicolon- or pipe-separated, with a decimal comma
where a spreadsheet wrote one, padding rows and columns dropped, refusing what is not a table with one clear error.
harness.analysis.load maps what it reads onto the canonical columns.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (the inputs' fingerprint recorded in fits.json)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shown_path(path: Path) -> str:
    """The path fits.json and report.md record as the source: relative to the working directory when the file
    lies under it (a committed results dir then names itself on every machine), else absolute (also from /)."""
    full, cwd = path.resolve(), Path.cwd().resolve()
    return str(full.relative_to(cwd)) if full.is_relative_to(cwd) and cwd != Path(cwd.anchor) else str(full)


DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
_DECIMAL_COMMA = re.compile(r"^\s*-?\d+,\d+(?:[eE][-+]?\d+)?\s*$")
_THOUSANDS = re.compile(r"^\s*-?\d{1,3},\d{3}\s*$")  # 1,234: a decimal comma or a thousands separator


def sniff_dialect(head: bytes) -> tuple[str, str]:
    """(delimiter, decimal mark) of a table from its first bytes: the delimiter the header uses most (a comma on a
    tie), and a decimal comma when a non-comma table writes numbers like 3,14 (spreadsheets in many locales)."""
    lines = [line for line in head.decode("utf-8-sig", errors="replace").splitlines() if line.strip()]
    if not lines:
        return ",", "."
    header = re.sub(r'"[^"]*"', "", lines[0])  # a quoted column name may hold any delimiter
    counts = {d: header.count(d) for d in DELIMITERS}
    sep = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    if sep == "," or counts[sep] == 0:
        return ",", "."
    fields = [f for line in lines[1:] for f in line.split(sep)]
    # a decimal comma only when some number cannot be a thousands separator (3,14 or 6,1e+18); if every comma
    # could be either, the numbers stay text and the loader names the first one
    decimal = any(_DECIMAL_COMMA.match(f) and not _THOUSANDS.match(f) for f in fields)
    return sep, ("," if decimal else ".")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table file (or DIR/results.csv), refusing things that are not a readable table. Comma-, tab-,
    semicolon- and pipe-separated files are read alike (sniff_dialect), so a spreadsheet's export needs no edit."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "results.csv"
    if not p.exists():
        raise HarnessError(f"results file {str(p)!r} does not exist; pass results=PATH to a results CSV")
    with open(p, "rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        raise HarnessError(f"{str(p)!r} is not a CSV (binary content); pass results=PATH to a text CSV file")
    sep, decimal = sniff_dialect(head)
    try:
        df = pd.read_csv(p, sep=sep, decimal=decimal, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise HarnessError(f"{str(p)!r} is empty; pass a CSV with a header row and one row per run") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HarnessError(f"{str(p)!r} is not a readable table ({first}); pass a CSV (or tab- or "
                          "semicolon-separated) file with a header row") from None
    if df.shape[1] < 2:
        raise HarnessError(
            f"{str(p)!r} is not a table (found {df.shape[1]} column); pass a file with a header row and columns "
            "separated by commas, tabs, semicolons or pipes"
        )
    df.columns = [str(c).strip() for c in df.columns]
    # a spreadsheet's export pads with empty rows and unnamed empty columns: they hold no run
    df = df.dropna(how="all").reset_index(drop=True)
    df = df.loc[:, [not (c.startswith("Unnamed: ") and df[c].isna().all()) for c in df.columns]]
    df.attrs["source"] = shown_path(p)
    df.attrs["sha256"] = file_sha256(p)
    df.attrs["dialect"] = "" if (sep, decimal) == (",", ".") else f"{DELIMITERS[sep]}-separated" + (
        ", decimal comma" if decimal == "," else "")
    return df
