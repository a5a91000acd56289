"""Read a table file as a researcher saved it: comma-, tab-, semicolon- or pipe-separated, with a decimal comma
where a spreadsheet wrote one, padding rows and columns dropped, refusing what is not a table with one clear error.
harness.analysis.load maps what it reads onto the canonical columns.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import lzma
import re
import zipfile
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
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SEP_HINT = re.compile(r'^"?sep=([,;\t|])"?[,;\t|]*$', re.IGNORECASE)  # Excel's first line: sep=; (padded: sep=;;;)
_RULE = re.compile(r"^[\s|:-]*-[\s|:-]*$")  # a markdown table's |---|:--:| row under its header
_COMMENT = re.compile(r"^\s*#(?:\s|#|$)")  # '# note' between rows ('#3,...' may be a run's id: kept)
_NUMBER = re.compile(r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*$")


def _unquoted(line: str) -> str:
    """A line with its quoted fields removed: a quoted column name may hold any delimiter."""
    return re.sub(r'"[^"]*"', "", line)


def _sniff(lines: list[str], sep: str | None = None) -> tuple[str, str]:
    """sniff_dialect on a table's lines, header first (blank lines dropped); `sep` fixes the delimiter."""
    if not lines:
        return sep or ",", "."
    if sep is None:
        header = _unquoted(lines[0])
        counts = {d: header.count(d) for d in DELIMITERS}
        sep = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
        if counts[sep] == 0:
            return ",", "."
    if sep == ",":
        return ",", "."
    fields = [f for line in lines[1:] for f in line.split(sep)]
    # a decimal comma only when some number cannot be a thousands separator (3,14 or 6,1e+18); if every comma
    # could be either, the numbers stay text and the loader names the first one
    decimal = any(_DECIMAL_COMMA.match(f) and not _THOUSANDS.match(f) for f in fields)
    return sep, ("," if decimal else ".")


SNIFF_BYTES = 1 << 20


def sniff_dialect(head: bytes, sep: str | None = None) -> tuple[str, str]:
    """(delimiter, decimal mark) of a table from its first bytes: the delimiter the header uses most (a comma on a
    tie; `sep` when a hint named it), and a decimal comma when a non-comma table writes numbers like 3,14."""
    text = head.decode("utf-8-sig", errors="replace")
    return _sniff([line for line in _LINE_BREAK.split(text) if line.strip()], sep)


def _preamble(lines: list[str]) -> tuple[int, str | None]:
    """(lines above the header row, the delimiter Excel's 'sep=X' line names or None): blank lines, '# ...'
    comments and that hint are skipped (a header's own '#' column, '#,N,...', is no comment)."""
    skip, hint = 0, None
    for line in lines:
        stripped = line.strip()
        m = _SEP_HINT.match(line.strip(" "))  # not strip(): 'sep=<tab>' names a tab
        if m and hint is None:
            hint = m.group(1)
        elif stripped and not (stripped.startswith("#") and stripped.lstrip("#")[:1] not in DELIMITERS):
            break
        skip += 1
    return skip, hint


def _refuse_json(name: str, lines: list[str]) -> None:
    """One error for a JSON or JSON-lines file (pandas would read its first line as kilobytes of column names)."""
    first = next((line.strip() for line in lines if line.strip()), "")
    if first[:1] in "{[" and (len(first) == 1 or '"' in first[:3] or ":" in first):
        lines_kw = ", lines=True" if first.startswith("{") else ""
        raise HarnessError(f"{name!r} is JSON, not a table (line 1: {first[:40]!r}); convert it first, e.g. "
                           f"pandas.read_json(path{lines_kw}).to_csv('table.csv', index=False), and pass "
                           "results=table.csv")


def _refuse_headless(name: str, lines: list[str], skip: int) -> None:
    """One error when the line the header should be on is not one: a title above it (no delimiter, while the rows
    below have some), or a row of numbers (a commented-out or missing header)."""
    rest = [line for line in lines[skip:] if line.strip()][:2]
    if len(rest) < 2:
        return
    header, below = _unquoted(rest[0]), _unquoted(rest[1])
    shown = rest[0].strip()[:60]
    if not any(d in header for d in DELIMITERS) and any(d in below for d in DELIMITERS):
        raise HarnessError(f"{name!r} line {skip + 1} ({shown!r}) is not a header row: it has no delimiter while "
                           "the rows below have several; delete the lines above the header row (or start them with #)")
    fields = [f for f in rest[0].split(_sniff(rest[:1])[0]) if f.strip()]
    if len(fields) >= 2 and all(_NUMBER.match(f) for f in fields):
        raise HarnessError(f"{name!r} has no header row: line {skip + 1} ({shown!r}) holds only numbers; add a "
                           "header row naming the columns (N,D,C,loss) or remove the # before one")


def _body(text: str, sep: str, skip: int) -> io.StringIO:
    """The table's text below its preamble without '# ...' comment lines and, in a pipe table, markdown separator
    rows (|---|:--:|); a data row's empty fields beyond the header's (a trailing delimiter: '1,2,3,' under 'N,D,C')
    are dropped, on any row (pandas would take the first column as the index, or refuse a later row)."""
    lines = _LINE_BREAK.split(text)[skip:]
    keep = [line for line in lines if not (_COMMENT.match(line) or (sep == "|" and _RULE.match(line)))]
    header = next((i for i, line in enumerate(keep) if line.strip()), None)
    if header is None:
        return io.StringIO("\n".join(keep))
    width = len(_fields(keep[header], sep))
    return io.StringIO("\n".join(keep[:header + 1] + [_trimmed(line, sep, width) for line in keep[header + 1:]]))


def _fields(line: str, sep: str) -> list[str]:
    """A line's fields as the csv module splits them (quoted fields may hold the delimiter)."""
    return next(csv.reader([line], delimiter=sep), [])


def _trimmed(line: str, sep: str, width: int) -> str:
    """A data line without trailing delimiters that only open empty fields beyond the header's `width`."""
    end = line
    while end.rstrip(" ").endswith(sep) and len(_fields(end, sep)) > width:
        cut = end.rstrip(" ")[:-1]
        if _fields(cut, sep) != _fields(end, sep)[:-1]:  # the delimiter closed a quoted field: keep it
            break
        end = cut
    return end


def _parse(name: str, text: str, sep: str, decimal: str, skip: int) -> pd.DataFrame:
    """pd.read_csv of the table below its preamble. A data row whose fields beyond the header's hold values is
    refused: pandas would make the extra columns the index and shift every column (or name only line N)."""
    source = _body(text, sep, skip)
    df = pd.read_csv(source, sep=sep, decimal=decimal, skipinitialspace=True)
    if not isinstance(df.index, pd.RangeIndex):
        raise HarnessError(f"{name!r}: its data rows hold {df.index.nlevels} field(s) more than its header row (line "
                           f"{skip + 1}) names; name every column in the header row, or delete the extra fields")
    return df


_MAGIC = {b"\x1f\x8b": gzip.decompress, b"BZh": bz2.decompress, b"\xfd7zXZ\x00": lzma.decompress}


def _text(p: Path) -> str:
    """A table file's text: gzip, bzip2, xz and one-file zip archives (pandas' compressions) are read through."""
    raw = p.read_bytes()
    try:
        if raw[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise HarnessError(f"{str(p)!r} is a zip archive of {len(names)} files; pass the one table in "
                                       "it (unzip it first)")
                raw = zf.read(names[0])
        for magic, open_ in _MAGIC.items():
            if raw.startswith(magic):
                raw = open_(raw)
                break
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile, ValueError) as exc:
        raise HarnessError(f"{str(p)!r} is a damaged compressed file ({exc}); recompress or pass the plain "
                           "table") from None
    if b"\x00" in raw[:SNIFF_BYTES]:
        raise HarnessError(f"{str(p)!r} is not a CSV (binary content); pass results=PATH to a text CSV file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # a spreadsheet's legacy export ('N (µ)' in Windows-1252): numbers are ASCII alike
        return raw.decode("cp1252", errors="replace")


def _dialect(name: str, head: str) -> tuple[int, str, str]:
    """(lines above the header, delimiter, decimal mark) of a table from its first megabyte, refusing JSON and a
    missing header row."""
    lines = _LINE_BREAK.split(head)
    _refuse_json(name, lines)
    skip, hint = _preamble(lines)
    _refuse_headless(name, lines, skip)
    body = [line for line in lines[skip:] if line.strip() and not (hint is None and _RULE.match(line))]
    return (skip, *_sniff(body, hint))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table file (or DIR/results.csv), refusing things that are not a readable table. Comma-, tab-,
    semicolon- and pipe-separated files (markdown tables too) are read alike (sniff_dialect), below any '#'
    comment lines and Excel's 'sep=;' line, so a spreadsheet's export or a pasted table needs no edit."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "results.csv"
    if not p.exists():
        raise HarnessError(f"results file {str(p)!r} does not exist; pass results=PATH to a results CSV")
    text = _text(p)
    head = text[:SNIFF_BYTES]  # the dialect is judged on up to 1 MB (a decimal comma may first show late) ...
    if len(text) > SNIFF_BYTES and "\n" in head:
        head = head[:head.rfind("\n") + 1]  # ... of whole lines only: a cut '1,500' must not read as '1,5'
    skip, sep, decimal = _dialect(str(p), head)
    try:
        df = _parse(str(p), text, sep, decimal, skip)
    except pd.errors.EmptyDataError:
        raise HarnessError(f"{str(p)!r} is empty; pass a CSV with a header row and one row per run") from None
    except (pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HarnessError(f"{str(p)!r} is not a readable table ({first}); pass a CSV (or tab- or "
                          "semicolon-separated) file with a header row") from None
    if df.shape[1] < 2:
        raise HarnessError(
            f"{str(p)!r} is not a table (found {df.shape[1]} column); pass a file with a header row and columns "
            "separated by commas, tabs, semicolons or pipes"
        )
    df.columns = [str(c).strip() for c in df.columns]
    # a spreadsheet's export pads with empty rows and unnamed empty columns (so do a markdown table's outer pipes):
    # they hold no run
    df = df.dropna(how="all").reset_index(drop=True)
    df = df.loc[:, [not (c.startswith("Unnamed: ") and df[c].isna().all()) for c in df.columns]]
    df.attrs["source"] = shown_path(p)
    df.attrs["sha256"] = file_sha256(p)
    df.attrs["dialect"] = "" if (sep, decimal) == (",", ".") else f"{DELIMITERS[sep]}-separated" + (
        ", decimal comma" if decimal == "," else "")
    return df
