"""Dataset files the way researchers keep them, read through HF `datasets`, locally and offline.

data.path is a JSONL/JSON, Parquet, CSV or Arrow file, a directory or glob of them, or a directory written by
`Dataset.save_to_disk`. The text is data.text_field of each row (a document). The files' own train/validation
splits are used when present (file names train*/validation*|valid*|val*|dev*|test*, or the splits of a saved
DatasetDict); otherwise documents are split deterministically by a hash of their text, so a document is never
cut between train and val and duplicates share a split. The split rule is part of the fingerprint.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from harness.errors import HarnessError
from harness.fsutil import atomic_write

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
VAL_NAMES = ("validation", "valid", "val", "dev", "test")  # the first present is the val split
_SPLIT_FILE = re.compile(r"^(train|validation|valid|val|dev|test)(?:[-_.].*)?$", re.IGNORECASE)
SEPARATOR = "\n\n"  # appended to every document, so documents never run into each other


@dataclass
class Documents:
    """A dataset's two splits as re-iterable text streams, with what a result must record about them."""

    splits: dict[str, Callable[[], Iterator[str]]]  # "train", "val" -> a fresh iterator of document texts
    fingerprint: str
    nbytes: int
    description: str
    split_bytes: dict[str, int]  # "train", "val" -> UTF-8 bytes of the split's text (checks per-token lengths)


def is_glob(path: str) -> bool:
    """Whether data.path is a glob: it holds *, ? or [ and names no existing file or directory (a real
    path such as 'set [v2]' is used as given)."""
    return any(ch in path for ch in "*?[") and not Path(path).expanduser().exists()


def glob_files(pattern: str) -> list[Path]:
    """The files a glob matches, sorted, or a HarnessError when it matches none."""
    files = sorted(Path(p) for p in globlib.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file())
    if not files:
        raise HarnessError(f"data.path {pattern!r} does not exist and, as a glob, matches no file; check the path")
    return files


def _files(path: str) -> list[Path]:
    """The data files data.path names: a glob, a file, or a directory's files of a known format."""
    if is_glob(path):
        return glob_files(path)
    p = Path(path).expanduser()
    if not p.exists():
        raise HarnessError(f"data.path {str(p)!r} does not exist; point it at a JSONL/Parquet/CSV/Arrow file or directory")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in BUILDERS)
    if not files:
        raise HarnessError(f"directory {str(p)!r} holds no .jsonl/.json/.parquet/.csv/.arrow file nor a "
                           "save_to_disk dataset; point data.path at your data files")
    return files


def _builder(files: list[Path]) -> str:
    """The `datasets` builder for the files (one format only)."""
    kinds = {BUILDERS.get(f.suffix.lower()) for f in files}
    if None in kinds:
        bad = next(f for f in files if f.suffix.lower() not in BUILDERS)
        raise HarnessError(f"{str(bad)!r} is not a .jsonl/.json/.parquet/.csv/.arrow file; use data=text for plain "
                           "text or convert it")
    if len(kinds) > 1:
        raise HarnessError(f"data.path mixes formats ({', '.join(sorted(k for k in kinds if k))}); use one format")
    return kinds.pop() or "json"


def _split_files(files: list[Path]) -> dict[str, list[str]]:
    """{split: files} from file names (train.jsonl, validation-0001.parquet, ...); all train when none say. Names
    are glob-escaped: `datasets` reads data_files as patterns, so 'c[1].jsonl' would match no file."""
    named: dict[str, list[str]] = {}
    for f in files:
        m = _SPLIT_FILE.match(f.name)
        named.setdefault(m.group(1).lower() if m else "", []).append(globlib.escape(str(f)))
    if "train" in named and any(v in named for v in VAL_NAMES) and "" not in named:
        return {k: v for k, v in named.items() if k}
    return {"train": [globlib.escape(str(f)) for f in files]}


def _is_saved(p: Path) -> bool:
    return p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists())


def _source_files(path: str) -> list[Path]:
    """The files data.path reads (a save_to_disk directory's own files included), for the memo's stat key."""
    p = Path(path).expanduser()
    if not is_glob(path) and _is_saved(p):
        return sorted(f for f in p.rglob("*") if f.is_file())
    return _files(path)


def _read_error(e: BaseException, files: list[Path], logged: list[str]) -> HarnessError:
    """A `datasets` read failure as one line naming the file that failed: the one a message of the exception
    chain or the builder's log names, the only file, or else the directory with the file count."""
    chain: list[str] = []
    while e is not None and len(chain) < 8:
        chain.append(str(e).strip() or type(e).__name__)
        e = e.__cause__ or e.__context__
    why = next((m for m in chain if not m.startswith("An error occurred")), chain[0]).splitlines()[0][:200]
    hits = (f for f in files for m in chain + logged if str(f) in m or str(f.resolve()) in m)
    named = next(hits, files[0] if len(files) == 1 else None)
    where = (repr(str(named)) if named is not None
             else f"one of the {len(files)} files under {os.path.commonpath([str(f.parent) for f in files])!r}")
    return HarnessError(f"cannot read {where} as a dataset ({why}); check that file")


class _Logged(logging.Handler):
    """Keeps the messages `datasets` logs while reading (its JSON builder names the file it failed on)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _load(path: str, files: list[Path], cache_dir: Path) -> dict[str, Any]:
    """{split: Dataset} of data.path (a save_to_disk directory, or the data files through their builder)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only: never reach for the Hub
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise HarnessError("data=hf needs the `datasets` package; pip install 'harness[hf]' "
                           "(scripts/setup.sh installs it)") from None
    datasets.disable_progress_bars()
    p = Path(path).expanduser()
    if not is_glob(path) and _is_saved(p):
        loaded = datasets.load_from_disk(str(p))
    else:
        builder, log = _builder(files), _Logged()
        logging.getLogger("datasets").addHandler(log)
        try:
            loaded = datasets.load_dataset(builder, data_files=_split_files(files), cache_dir=str(cache_dir / "hf"))
        except Exception as e:  # pyarrow/json parse errors come in many types
            raise _read_error(e, files, log.messages) from None
        finally:
            logging.getLogger("datasets").removeHandler(log)
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def _pick_splits(splits: dict[str, Any], field: str) -> tuple[Any, Any]:
    """(train, val or None) of the loaded splits, refusing a missing train split or text field."""
    if "train" not in splits:
        raise HarnessError(f"the dataset has no train split (splits: {', '.join(splits)}); name one train")
    val = next((splits[n] for n in VAL_NAMES if n in splits), None)
    for ds in (splits["train"], val):
        if ds is not None and field not in ds.column_names:
            raise HarnessError(f"the dataset has no field {field!r}; its fields are {', '.join(ds.column_names)}: "
                               "set data.text_field to the one holding the text")
    return splits["train"], val


def _texts(ds: Any, field: str) -> Iterator[str]:
    """Every non-empty document of a split, in order, followed by SEPARATOR."""
    for batch in ds.select_columns([field]).iter(batch_size=1024):
        for t in batch[field]:
            if t is None or t == "":
                continue
            if not isinstance(t, str):
                raise HarnessError(f"data.text_field {field!r} holds {type(t).__name__} values, not text; "
                                   "set data.text_field to a string field")
            yield t + SEPARATOR


def is_val_doc(text: str, val_fraction: float) -> bool:
    """Deterministic by-document split: held out when a hash of the text falls below the fraction."""
    return zlib.crc32(text.encode("utf-8", "replace")) % 10_000 < val_fraction * 10_000


def _streams(train: Any, val: Any, field: str, vf: float) -> dict[str, Callable[[], Iterator[str]]]:
    if val is not None:
        return {"train": lambda: _texts(train, field), "val": lambda: _texts(val, field)}
    return {"train": lambda: (t for t in _texts(train, field) if not is_val_doc(t, vf)),
            "val": lambda: (t for t in _texts(train, field) if is_val_doc(t, vf))}


def _summary(streams: dict[str, Callable[[], Iterator[str]]], rule: str) -> dict[str, Any]:
    """One pass over the text: sha256 fingerprint, bytes and documents per split; refuses an empty split."""
    h = hashlib.sha256(rule.encode())
    out: dict[str, Any] = {}
    with tqdm(desc="reading documents", unit="doc", dynamic_ncols=True, leave=False) as bar:
        for split, texts in streams.items():
            docs = nbytes = 0
            h.update(f"\0split={split}\0".encode())
            for t in texts():
                b = t.encode("utf-8", "replace")
                h.update(b)
                docs, nbytes = docs + 1, nbytes + len(b)
                bar.update(1)
            if not docs:
                fix = "add documents to it" if "files" in rule else "raise data.val_fraction or add documents"
                raise HarnessError(f"the {split} split of the dataset holds no document with text; {fix}")
            out[f"{split}_docs"], out[f"{split}_bytes"] = docs, nbytes
    total = out["train_bytes"] + out["val_bytes"]
    return {**out, "fingerprint": f"{h.hexdigest()[:16]}-{total}"}


def load_documents(dc: Any, cache_dir: Path) -> Documents:
    """The documents of data.path (data=hf): splits, fingerprint and a description. The fingerprint is
    memoised by the files' names, sizes and mtimes, and `datasets` is only opened when the text is read, so a
    sweep job whose token cache exists never imports it."""
    if not dc.get("path"):
        raise HarnessError("data=hf needs data.path=<JSONL/Parquet/CSV/Arrow file, directory, glob or save_to_disk dir>")
    path, field, vf = str(dc.path), str(dc.get("text_field") or "text"), float(dc.val_fraction)
    files = _source_files(path)
    state: dict[str, Any] = {}

    def opened() -> dict[str, Any]:
        if not state:
            train, val = _pick_splits(_load(path, files, cache_dir), field)
            state["rule"] = "files' own splits" if val is not None else f"by document, crc32 < {vf}"
            state["streams"] = _streams(train, val, field, vf)
        return state

    key = hashlib.sha256(f"{field}\0{vf!r}\0".encode())
    for f in files:
        st = f.stat()
        key.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
    memo = cache_dir / "hf_docs" / f"{key.hexdigest()[:20]}.json"
    if memo.exists():
        summary = json.loads(memo.read_text())
    else:
        summary = {**_summary(opened()["streams"], f"{opened()['rule']}\0field={field}"), "rule": opened()["rule"]}
        atomic_write(memo, [json.dumps(summary).encode()])
    nbytes = summary["train_bytes"] + summary["val_bytes"]
    desc = (f"hf: {path} [{field}] ({summary['train_docs']}+{summary['val_docs']} docs, {nbytes} bytes, "
            f"split {summary['rule']})")
    streams = {split: (lambda split=split: opened()["streams"][split]()) for split in ("train", "val")}
    split_bytes = {split: summary[f"{split}_bytes"] for split in ("train", "val")}
    return Documents(streams, summary["fingerprint"], nbytes, desc, split_bytes)
