"""Time the own-data path on a JSONL corpus: reading the documents (HF `datasets`, offline), training a byte-level
BPE on the train split, and tokenizing both splits into the memmapped token cache.

The corpus is this machine's Python standard library source as JSONL (one .py file per line, {"text": ...}), cut
to --mb megabytes, so the numbers are reproducible anywhere without a download. Run:
python benchmarks/tokenize_speed.py [--mb 20] [--vocab 1024] [--out results/bench/tokenize.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from harness.data import stdlib_files
from harness.fsutil import atomic_write
from harness.hf_data import load_documents
from harness.tokenize import build_token_cache, cache_dtype, train_bpe


def write_jsonl(path: Path, mb: float) -> int:
    """The stdlib's .py files as JSONL documents, up to mb megabytes of text; returns the text bytes."""
    _, files = stdlib_files()
    total, limit = 0, int(mb * 1e6)
    with open(path, "w") as f:
        for p in files:
            text = p.read_text(errors="replace")
            f.write(json.dumps({"text": text}) + "\n")
            total += len(text.encode())
            if total >= limit:
                break
    return total


def main() -> None:
    """Build the JSONL, time the three phases, print them and write the JSON record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--out", default="results/bench/tokenize.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        nbytes = write_jsonl(tmpdir / "corpus.jsonl", args.mb)
        dc = OmegaConf.create({"path": str(tmpdir / "corpus.jsonl"), "text_field": "text", "val_fraction": 0.05})
        t0 = time.perf_counter()
        docs = load_documents(dc, tmpdir / "cache")
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        tok = train_bpe(docs.splits["train"], args.vocab, docs.fingerprint, tmpdir / "cache")
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        meta = build_token_cache(tmpdir / "cache" / "tokens", docs.splits, tok, cache_dtype(tok.vocab_size, None),
                                 docs.nbytes, {})
        t_tok = time.perf_counter() - t0
    tokens = meta["train_tokens"] + meta["val_tokens"]
    record = {
        "corpus": f"python stdlib .py files as JSONL ({nbytes / 1e6:.1f} MB of text)", "vocab_size": args.vocab,
        "read_and_fingerprint_s": round(t_read, 2), "bpe_train_s": round(t_train, 2), "tokenize_s": round(t_tok, 2),
        "tokenize_mb_per_s": round(docs.nbytes / 1e6 / t_tok, 2), "bytes_per_token": round(docs.nbytes / tokens, 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs)",
        "load_average_1min_after": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(record, indent=1))
    atomic_write(Path(args.out), [json.dumps(record, indent=1).encode()])


if __name__ == "__main__":
    main()
