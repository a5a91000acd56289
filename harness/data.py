"""Corpora as memory-mapped token arrays with a fingerprint, split into train/val without leakage.

Three sources, chosen by `data.kind`:
- stdlib: the Python standard library's own .py files on this machine (real text, no download), bytes.
- text:   a text file, a directory of text files or a glob, tokenized as bytes.
- hf:     JSONL/Parquet/CSV/Arrow files or a save_to_disk directory, read by HF `datasets` (harness.hf_data).
- tokens: a pre-tokenized nanoGPT-style binary (uint16/uint32), or a directory with train.bin + val.bin.
Text sources are tokenized once into a cache (one uint8 file per split) and then memory-mapped, so memory
does not grow with corpus size; with data.tokenizer=bpe|PATH that byte cache is tokenized again into a token
cache (harness.tokenize). Multi-file sources are split by file (a file is in train or val, never both);
single files and token files are split by a contiguous tail; hf documents by document.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.confcheck import number_in
from harness.errors import HarnessError
from harness.fsutil import atomic_write
from harness.hf_data import glob_files, is_glob, load_documents
from harness.tokenize import (
    Tokenizer,
    build_token_cache,
    cache_dtype,
    check_token_width,
    exactness,
    load_tokenizer_file,
    make_tokenizer,
    open_split,
    text_chunks,
)

if TYPE_CHECKING:  # torch loads only where batches are made, so planning and analysis never import it
    import torch

_CHUNK = 1 << 24
DEFAULT_VAL_FRACTION = 0.05  # the split every committed result was measured on (see split_suffix)


@dataclass
class Corpus:
    """Train and val token streams plus what a result must record about them."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    bytes_per_token: float
    fingerprint: str
    description: str
    token_bytes: np.ndarray | None = None  # UTF-8 bytes of each token id (None: only the mean is known)
    tokenizer: str = "bytes"

    def eval_bytes_per_token(self, windows: torch.Tensor) -> float:
        """Exact mean UTF-8 bytes of the target tokens of eval windows (their bytes / their count), so val bits
        per byte = summed nats / (ln 2 x exact bytes); without per-token lengths, data.bytes_per_token."""
        if self.token_bytes is None:
            return self.bytes_per_token
        targets = windows[:, 1:].numpy()
        return float(self.token_bytes[targets].sum()) / targets.size

    def row(self, tokens: int) -> dict[str, Any]:
        """What a result row records about the data: tokenizer, epochs over the train split, and whether
        val_bpb is exact (per-token byte lengths) or approximate (a mean data.bytes_per_token)."""
        return {"tokenizer": self.tokenizer, "epochs": round(tokens / max(1, len(self.train)), 4),
                "bpb_method": "exact" if self.token_bytes is not None else "approximate"}


def default_cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


def _is_val_file(rel: str, val_fraction: float) -> bool:
    """Deterministic by-file split: a file is held out when a hash of its relative path falls below the
    fraction, so the split is the same on every machine and never depends on listing order."""
    return zlib.crc32(rel.encode()) % 10_000 < val_fraction * 10_000


def stdlib_files() -> tuple[Path, list[Path]]:
    """The standard library's .py files (without site-packages), sorted for a deterministic order. The same list as
    root.rglob("*.py") filtered, found with os.scandir without entering site-packages: 0.05 s instead of 0.9 s, paid
    by every command and sweep job that opens the corpus."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip, found, stack = {"site-packages", "dist-packages"}, [], [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for e in entries:
                if e.name.endswith(".py"):
                    found.append(Path(e.path))
                if e.name not in skip and e.is_dir() and not e.is_symlink():  # rglob does not follow dir links
                    stack.append(e.path)
    return root, sorted(p for p in found if skip.isdisjoint(p.parts))


def _text_files(path: str, pattern: str) -> tuple[Path, list[Path]]:
    """data.path as (root, files): one file, a directory's files matching data.pattern, or a glob (a path with
    *, ? or [ that does not exist; the root is then the matches' deepest common directory)."""
    if is_glob(path):
        files = glob_files(path)
        return Path(os.path.commonpath([str(f.parent) for f in files])), files
    p = Path(path).expanduser()
    if not p.exists():
        raise HarnessError(f"data.path {str(p)!r} does not exist; point data.path at a text file or directory")
    if p.is_file():
        return p.parent, [p]
    files = sorted(f for f in p.glob(pattern) if f.is_file())
    if not files:
        raise HarnessError(f"directory {str(p)!r} holds no file matching {pattern!r}; set data.pattern")
    return p, files


def _not_text(path: Path) -> str | None:
    """Why a file's first 64 KiB are not text (NUL bytes, mostly invalid UTF-8), or None."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if b"\0" in head:
        return "holds NUL bytes"
    bad = len(head) - len(head.decode("utf-8", errors="ignore").encode())
    return f"is {bad / len(head):.0%} invalid UTF-8" if head and bad > 0.3 * len(head) else None


def _text_only(files: list[Path], skip_binary: bool) -> list[Path]:
    """Refuse a binary file among text inputs (or, with data.skip_binary=true, leave such files out)."""
    bad = [(f, why) for f in files if (why := _not_text(f))]
    if not bad:
        return files
    first, why = bad[0]
    if len(files) == 1:
        raise HarnessError(f"data.path {str(first)!r} {why}: it is not a text file; pass text (or data=tokens)")
    if not skip_binary:
        raise HarnessError(f"{len(bad)} of {len(files)} files are not text (first: {str(first)!r} {why}); remove "
                           "them, narrow data.pattern, or set data.skip_binary=true to leave them out")
    if len(bad) == len(files):
        raise HarnessError(f"all {len(files)} files are binary (first: {str(first)!r} {why}); pass a text corpus")
    print(f"warning: skipped {len(bad)} binary file(s) of {len(files)} (first: {first})")
    skip = {f for f, _ in bad}
    return [f for f in files if f not in skip]


def split_suffix(val_fraction: float) -> str:
    """What a byte corpus' fingerprint (sha256 prefix-total bytes) gets for its split rule: nothing at the default
    data.val_fraction=0.05, so committed results keep their fingerprint and run ids, else '+vf<fraction>' (e.g.
    4aed743daa1919b2-31525224+vf0.1), so runs on another val split never share a results directory and the
    tokenizer and token caches, keyed by the fingerprint, keep the splits apart (data=hf hashes its rule in)."""
    return "" if val_fraction == DEFAULT_VAL_FRACTION else f"+vf{val_fraction!r}"


def _check_file_split(root: Path, files: list[Path], val_fraction: float, name: str) -> None:
    """Refuse a by-file split that leaves train or val without a file, saying so and how to fix it (rather than
    'the val split holds 0 tokens', which points at model.seq_len)."""
    if len(files) < 2:
        return
    rels = [str(f.relative_to(root)) for f in files]
    n_val = sum(_is_val_file(r, val_fraction) for r in rels)
    if 0 < n_val < len(files):
        return
    h = sorted(zlib.crc32(r.encode()) % 10_000 for r in rels)
    split, other, fix = (("val", "train", f">={(h[0] + 1) / 10_000:g} holds one out") if not n_val
                         else ("train", "val", f"<={h[-1] / 10_000:g} keeps one in train"))
    raise HarnessError(f"{name}: no file landed in the {split} split: all {len(files)} files under {root} hash into "
                       f"{other} (the split is by file: a file is held out when a hash of its name falls below "
                       f"data.val_fraction={val_fraction:g}); add files, or set data.val_fraction{fix}")


def _files_corpus(root: Path, files: list[Path], val_fraction: float, cache_dir: Path, name: str) -> Corpus:
    """Byte-tokenize a list of files into cached train/val arrays; fingerprint = sha256 of names + bytes, plus
    split_suffix(val_fraction)."""
    _check_file_split(root, files, val_fraction, name)
    stat_key = hashlib.sha256(f"val_fraction={val_fraction!r}\n".encode())
    for f in files:
        st = f.stat()
        stat_key.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
    key_dir = cache_dir / "text" / stat_key.hexdigest()[:20]
    meta_path = key_dir / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
    else:
        meta = _build_files_cache(root, files, val_fraction, key_dir)
    train = np.memmap(key_dir / "train.bin", dtype=np.uint8, mode="r") if meta["train_bytes"] else np.zeros(0)
    val = np.memmap(key_dir / "val.bin", dtype=np.uint8, mode="r") if meta["val_bytes"] else np.zeros(0)
    size = meta["train_bytes"] + meta["val_bytes"]
    desc = (f"{name}: {files[0]} ({size} bytes)" if len(files) == 1
            else f"{name}: {len(files)} files, {size} bytes under {root}")
    fp = meta["fingerprint"] + split_suffix(val_fraction)
    return Corpus(train, val, 256, 1.0, fp, desc, np.ones(256, dtype=np.int64))


def _build_files_cache(root: Path, files: list[Path], val_fraction: float, key_dir: Path) -> dict:
    digest = hashlib.sha256()
    if len(files) == 1:  # one file: split by a contiguous tail
        data = files[0].read_bytes()
        digest.update(data)
        cut = len(data) - math.ceil(len(data) * val_fraction)
        parts = {"train": [data[:cut]], "val": [data[cut:]]}
    else:
        parts = {"train": [], "val": []}
        for f in files:
            rel = str(f.relative_to(root))
            data = f.read_bytes()
            digest.update(rel.encode() + b"\0" + data + b"\0")
            parts["val" if _is_val_file(rel, val_fraction) else "train"].append(data)
    total = sum(len(b) for bs in parts.values() for b in bs)
    meta = {
        "fingerprint": f"{digest.hexdigest()[:16]}-{total}",
        "train_bytes": sum(len(b) for b in parts["train"]),
        "val_bytes": sum(len(b) for b in parts["val"]),
        "files": len(files),
        "val_fraction": val_fraction,
    }
    for split, chunks in parts.items():
        atomic_write(key_dir / f"{split}.bin", chunks)
    atomic_write(key_dir / "meta.json", [json.dumps(meta).encode()])
    return meta


def _file_digest(path: Path, cache_dir: Path) -> str:
    """sha256 of a (possibly huge) file, memoised by path, size, mtime and ctime (which no `touch -r` or `cp -p` can
    set back) so reruns do not rehash it."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}".encode()).hexdigest()[:20]
    memo = cache_dir / "digests" / key
    if memo.exists():
        return memo.read_text()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    atomic_write(memo, [h.hexdigest().encode()])
    return h.hexdigest()


def _check_token_range(arr: np.ndarray, vocab_size: int, path: Path) -> None:
    check_token_width(arr, path)
    for start in range(0, len(arr), _CHUNK):
        hi = int(arr[start : start + _CHUNK].max(initial=0))
        if hi >= vocab_size:
            raise HarnessError(f"token file {str(path)!r} holds token id {hi} >= data.vocab_size={vocab_size}; set "
                               "data.vocab_size to your tokenizer's vocabulary size (or check data.token_dtype)")


def _token_meta(dc: Any, p: Path) -> tuple[int, float]:
    """(vocab size, mean bytes per token > 0) of token data: data.* settings, else meta.json beside the .bin."""
    meta_file = (p if p.is_dir() else p.parent) / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    vocab = int(dc.vocab_size if dc.vocab_size is not None else meta.get("vocab_size", 0))
    bpt = dc.bytes_per_token if dc.bytes_per_token is not None else meta.get("bytes_per_token")
    if not vocab:
        raise HarnessError("token data needs its vocabulary size; set data.vocab_size=<V> (or meta.json)")
    if bpt is None:
        raise HarnessError("token data needs the mean bytes per token to report bits per byte; set data.bytes_per_token"
                           "=<x> (or write {\"bytes_per_token\": x} to meta.json beside the .bin)")
    # 0 divides by zero later, a negative one records a negative val_bpb
    where = "data.bytes_per_token" if dc.bytes_per_token is not None else f"bytes_per_token in {str(meta_file)!r}"
    x = number_in(where, bpt, lambda v: 0 < v < math.inf, "a positive number, the mean UTF-8 bytes per token of the "
                  "tokenizer that made the ids (e.g. 4.2); set it to that")
    return vocab, x


def _token_files(p: Path, dtype: np.dtype) -> list[Path]:
    """[train.bin, val.bin] of a token directory or [the file], each checked to hold whole tokens."""
    files = [p / "train.bin", p / "val.bin"] if p.is_dir() else [p]
    for f in files:
        if not f.exists():
            raise HarnessError(f"{str(f)!r} does not exist; a token directory needs train.bin and val.bin")
        if f.stat().st_size % dtype.itemsize:
            raise HarnessError(f"{str(f)!r} is not a whole number of {dtype.name} tokens; check data.token_dtype")
    return files


def _tokens_corpus(dc: Any, cache_dir: Path) -> Corpus:
    """A pre-tokenized corpus, memory-mapped; one file is split by a contiguous tail of val_fraction."""
    p = Path(str(dc.path)).expanduser()
    if not p.exists():
        raise HarnessError(f"data.path {str(p)!r} does not exist; point it at a token .bin file or a directory")
    dtype = np.dtype(str(dc.token_dtype))
    if dtype not in (np.uint16, np.uint32):
        raise HarnessError(f"data.token_dtype={dc.token_dtype!r} is not supported; use uint16 or uint32")
    tok = load_tokenizer_file(Path(str(dc.tokenizer)).expanduser()) if dc.get("tokenizer") else None
    vocab, bpt = _token_meta(dc, p) if tok is None else (tok.vocab_size, 1.0)
    files = _token_files(p, dtype)
    arrays = [np.memmap(f, dtype=dtype, mode="r") if f.stat().st_size else np.zeros(0, dtype) for f in files]
    for f, a in zip(files, arrays):
        _check_token_range(a, vocab, f)
    if len(arrays) == 2:
        train, val = arrays
    else:
        cut = len(arrays[0]) - math.ceil(len(arrays[0]) * float(dc.val_fraction))
        train, val = arrays[0][:cut], arrays[0][cut:]
    digest = hashlib.sha256("".join(_file_digest(f, cache_dir) for f in files).encode()).hexdigest()[:16]
    nbytes = sum(f.stat().st_size for f in files)
    fp = f"{digest}-{nbytes}" + (split_suffix(float(dc.val_fraction)) if len(arrays) == 1 else "")
    if tok is not None:  # the tokenizer that made the ids: exact bytes per token (harness.tokenize)
        return Corpus(train, val, vocab, float(tok.token_bytes.mean()), f"{fp}/{tok.tag}",
                      f"tokens: {p} ({dtype.name}), {tok.tag} tokens", tok.token_bytes, tok.tag)
    return Corpus(train, val, vocab, bpt, fp, f"tokens: {p} ({dtype.name})",
                  tokenizer=f"none (bytes_per_token={bpt:g}, approximate bpb)")


def _token_corpus(splits: dict, tok: Tokenizer, dc: Any, cache_dir: Path, fp: str, split_bytes: dict[str, int],
                  desc: str, late: Any = None) -> Corpus:
    """Text splits tokenized once into a memmapped cache keyed by (corpus, tokenizer) fingerprint; per-token
    byte lengths are used only where they add up to each split's true bytes (harness.tokenize.exactness)."""
    dtype = cache_dtype(tok.vocab_size, dc.get("token_dtype"))
    key = hashlib.sha256(f"{fp}\0{tok.fingerprint}\0{dtype.name}".encode()).hexdigest()[:20]
    key_dir = cache_dir / "tokens" / key
    nbytes = sum(split_bytes.values())
    meta = build_token_cache(key_dir, splits, tok, dtype, nbytes, {"corpus": fp, "bytes": nbytes}, late)
    train = open_split(key_dir, "train", dtype, meta["train_tokens"])
    val = open_split(key_dir, "val", dtype, meta["val_tokens"])
    token_bytes, val_bpt = exactness(tok, meta, {"train": train, "val": val}, split_bytes)
    bpt = val_bpt if val_bpt is not None else nbytes / max(1, len(train) + len(val))
    return Corpus(train, val, tok.vocab_size, bpt, f"{fp}/{tok.tag}", f"{desc}, {tok.tag} tokens", token_bytes,
                  tok.tag)


def _retokenized(corpus: Corpus, dc: Any, cache_dir: Path) -> Corpus:
    """A byte corpus (stdlib, text) under data.tokenizer: itself for bytes, else its byte splits tokenized
    (counting the bytes that are not UTF-8, which the tokenizer sees as U+FFFD)."""
    if str(dc.get("tokenizer") or "bytes") == "bytes":
        return corpus
    tr, va, bad = corpus.train, corpus.val, [0]
    tok = make_tokenizer(dc, lambda: text_chunks(tr), corpus.fingerprint, cache_dir)
    splits = {"train": lambda: text_chunks(tr, invalid=bad), "val": lambda: text_chunks(va, invalid=bad)}
    return _token_corpus(splits, tok, dc, cache_dir, corpus.fingerprint, {"train": len(tr), "val": len(va)},
                         corpus.description, lambda: {"invalid_utf8_bytes": bad[0]})


def _hf_corpus(dc: Any, cache_dir: Path) -> Corpus:
    """A datasets corpus (harness.hf_data) tokenized by data.tokenizer (bytes included) into the token cache."""
    docs = load_documents(dc, cache_dir)
    tok = make_tokenizer(dc, docs.splits["train"], docs.fingerprint, cache_dir)
    return _token_corpus(docs.splits, tok, dc, cache_dir, docs.fingerprint, docs.split_bytes, docs.description)


def _open_corpus(dc: Any, kind: str, val_fraction: float, cache_dir: Path) -> Corpus:
    """The corpus of one data.kind, tokenized by data.tokenizer."""
    if kind == "stdlib":
        root, files = stdlib_files()
        return _retokenized(_files_corpus(root, files, val_fraction, cache_dir, "python stdlib"), dc, cache_dir)
    if kind == "text":
        if not dc.get("path"):
            raise HarnessError("data=text needs data.path=<file, directory or glob>")
        root, files = _text_files(str(dc.path), str(dc.get("pattern", "**/*.txt")))
        files = _text_only(files, bool(dc.get("skip_binary", False)))
        return _retokenized(_files_corpus(root, files, val_fraction, cache_dir, "text"), dc, cache_dir)
    if kind == "hf":
        return _hf_corpus(dc, cache_dir)
    if kind == "tokens":
        if not dc.get("path"):
            raise HarnessError("data=tokens needs data.path=<file.bin or directory with train.bin/val.bin>")
        return _tokens_corpus(dc, cache_dir)
    raise HarnessError(f"unknown data.kind={kind!r}; choose stdlib, text, hf or tokens")


def load_corpus(dc: Any, seq_len: int) -> Corpus:
    """Open the corpus described by a `data` config and check it can fill a context window in each split."""
    cache_dir = Path(dc.cache_dir).expanduser() if dc.get("cache_dir") else default_cache_dir()
    val_fraction = float(dc.val_fraction)
    if not 0 < val_fraction < 1:
        raise HarnessError(f"data.val_fraction={val_fraction} must lie in (0, 1)")
    corpus = _open_corpus(dc, str(dc.kind), val_fraction, cache_dir)
    for split, arr in (("train", corpus.train), ("val", corpus.val)):
        if len(arr) < seq_len + 1:
            raise HarnessError(
                f"{corpus.description}: the {split} split holds {len(arr)} tokens, fewer than one context "
                f"window ({seq_len + 1}); use more data or a smaller model.seq_len"
            )
    return corpus


def sample_batch(
    tokens: np.ndarray, batch_size: int, seq_len: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows (x, y=x shifted by one) read straight from the memmap: only the batch is copied."""
    import torch

    starts = torch.randint(0, len(tokens) - seq_len, (batch_size,), generator=gen).numpy()
    window = tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
    t = torch.from_numpy(window)
    return t[:, :-1], t[:, 1:]


def eval_windows(tokens: np.ndarray, n_windows: int, seq_len: int) -> torch.Tensor:
    """A fixed held-out slice: n windows spread evenly over the val split (same for every run)."""
    import torch

    n = max(1, min(n_windows, (len(tokens) - 1) // seq_len))
    starts = np.linspace(0, len(tokens) - seq_len - 1, n).astype(np.int64)
    return torch.from_numpy(tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64))
