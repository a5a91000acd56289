"""Tokenizers (bytes, a byte-level BPE trained on the train split, or a tokenizer.json) and the token cache.

Every tokenizer carries its per-token UTF-8 byte lengths (measured in context), so bits per byte is exact:
summed nats over the eval tokens / (ln 2 x the bytes those tokens decode to) (the metric of Gao et al.
2020, The Pile) wherever those lengths add up to each split's true bytes (`exactness`; else approximate).
Text is tokenized once, in batches (HF `tokenizers` encodes a batch on all cores), into uint8/uint16/uint32
files that are memory-mapped afterwards; a cache is built in a temporary directory and renamed into place
whole, so a failure or a kill never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from harness.errors import HarnessError
from harness.fsutil import atomic_write

BATCH_BYTES = 1 << 22  # text per encode_batch call: big enough for all cores, small enough for memory
_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclass
class Tokenizer:
    """A tokenizer as the data layer uses it: ids for text, and the UTF-8 bytes each id decodes to."""

    name: str  # bytes | bpe-<V> | the tokenizer.json's file name
    vocab_size: int
    fingerprint: str  # sha256 prefix of the tokenizer's JSON ("bytes" for bytes)
    token_bytes: np.ndarray  # token_bytes[id] = UTF-8 bytes the token decodes to
    hf: Any = field(default=None, repr=False)  # a tokenizers.Tokenizer, or None for bytes

    @property
    def tag(self) -> str:
        """What a result row records as its tokenizer: name plus a hash of the exact vocabulary."""
        return self.name if self.hf is None else f"{self.name}@{self.fingerprint[:8]}"

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text (no special tokens added), batched across cores by `tokenizers`."""
        if self.hf is None:
            return [np.frombuffer(t.encode("utf-8", "replace"), dtype=np.uint8) for t in texts]
        return [np.asarray(e.ids, dtype=np.int64) for e in self.hf.encode_batch(texts, add_special_tokens=False)]


def byte_tokenizer() -> Tokenizer:
    """The byte tokenizer: id = byte value, every token one byte."""
    return Tokenizer("bytes", 256, "bytes", np.ones(256, dtype=np.int64))


def _has_byte_level(node: Any) -> bool:
    """Whether a tokenizer.json component (or a Sequence of them) is ByteLevel."""
    if not isinstance(node, dict):
        return False
    if node.get("type") == "ByteLevel":
        return True
    return any(_has_byte_level(n) for key in ("decoders", "pretokenizers") for n in node.get(key) or [])


_ANCHORS = "aeoitnsrlhdcumAEOITNSRL0123456789"  # plain one-character tokens to measure other tokens after


def _anchor(hf: Any, special: set[int]) -> int | None:
    """A token that decodes alone to one ASCII letter or digit: what other tokens are decoded after, so a
    decoder that treats the first token specially (Metaspace drops its leading '▁', WordPiece keeps '##')
    measures each token as it reads inside a text. None when the vocabulary has no such token."""
    for ch in _ANCHORS:
        i = hf.token_to_id(ch)
        if i is not None and i not in special and hf.decode([i], skip_special_tokens=False) == ch:
            return i
    return None


def _vocabulary(hf: Any, spec: dict[str, Any]) -> tuple[dict[int, str], set[int]]:
    """({id: token} for every id that has one, the ids of special added tokens) of a tokenizer and its JSON."""
    special = {t["id"] for t in spec.get("added_tokens") or [] if t.get("special")}
    return {i: t for i in range(hf.get_vocab_size()) if (t := hf.id_to_token(i)) is not None}, special


def token_byte_lengths(hf: Any) -> np.ndarray:
    """UTF-8 bytes each id stands for inside a text: a ByteLevel token has one byte per character (GPT-2's
    byte-to-unicode map), a <0xNN> byte-fallback token one byte (even if marked special), another special token
    none, any other token the bytes it adds when decoded after a plain anchor token (decode([anchor, id]) -
    decode([anchor]); alone, '▁the' decodes to 'the' and loses its space). Without a decoder (tokens joined by
    spaces) or an anchor, decode([id]); `exactness` checks the sums against the text's true bytes."""
    spec = json.loads(hf.to_str())
    byte_level = _has_byte_level(spec.get("decoder")) or _has_byte_level(spec.get("pre_tokenizer"))
    names, special = _vocabulary(hf, spec)
    out = np.zeros(hf.get_vocab_size(), dtype=np.int64)
    if byte_level:
        kept = [i for i in names if i not in special]
        out[kept] = [len(names[i]) for i in kept]
        return out
    fallback = {i for i, t in names.items() if _BYTE_FALLBACK.match(t)}  # special or not: trainers may mark them
    out[list(fallback)] = 1
    plain = [i for i in names if i not in special and i not in fallback]
    out[plain] = _decoded_lengths(hf, plain, _anchor(hf, special) if spec.get("decoder") else None)
    return out


def _decoded_lengths(hf: Any, ids: list[int], anchor: int | None) -> list[int]:
    """UTF-8 bytes each id adds to a text: decoded after the anchor, less the anchor's own bytes, or alone."""
    if anchor is None:
        return [len(t.encode("utf-8")) for t in hf.decode_batch([[i] for i in ids], skip_special_tokens=False)]
    base = len(hf.decode([anchor], skip_special_tokens=False).encode("utf-8"))
    texts = hf.decode_batch([[anchor, i] for i in ids], skip_special_tokens=False)
    return [max(0, len(t.encode("utf-8")) - base) for t in texts]


def _from_hf(hf: Any, name: str) -> Tokenizer:
    text = hf.to_str()
    return Tokenizer(name, hf.get_vocab_size(), hashlib.sha256(text.encode()).hexdigest()[:16],
                     token_byte_lengths(hf), hf)


def load_tokenizer_file(path: Path) -> Tokenizer:
    """A tokenizer.json from disk (HF `tokenizers` format), or a HarnessError saying why it cannot be used."""
    from tokenizers import Tokenizer as HFTokenizer

    if not path.is_file():
        raise HarnessError(f"data.tokenizer={str(path)!r} is not a file; use bytes, bpe or a path to a tokenizer.json")
    try:
        hf = HFTokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HarnessError(f"data.tokenizer {str(path)!r} does not parse as a tokenizers JSON file ({first}); "
                           "save it with tokenizer.save('tokenizer.json') or use data.tokenizer=bpe") from None
    return _from_hf(hf, path.name)


def check_bpe_vocab(vocab_size: int, token_dtype: str | None) -> None:
    """Refuse a byte-level BPE vocabulary with no room for merges, or one that needs uint32 ids unasked."""
    if vocab_size <= 256:
        raise HarnessError(f"data.vocab_size={vocab_size} leaves no merges for a byte-level BPE (it starts from 256 "
                           "byte symbols); use e.g. data.vocab_size=1024, or data.tokenizer=bytes")
    cache_dtype(vocab_size, token_dtype)


def train_bpe(texts: Callable[[], Iterable[str]], vocab_size: int, corpus_fp: str, cache_dir: Path) -> Tokenizer:
    """A byte-level BPE (GPT-2 style, Radford et al. 2019) of vocab_size trained on the train split's texts;
    deterministic, cached under cache_dir/tokenizers by the corpus fingerprint and the settings."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    key = hashlib.sha256(f"bytelevel-bpe\0{vocab_size}\0{corpus_fp}".encode()).hexdigest()[:20]
    path = cache_dir / "tokenizers" / f"{key}.json"
    if not path.exists():
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=[], show_progress=True)
        hf.train_from_iterator(texts(), trainer)
        atomic_write(path, [hf.to_str().encode()])
    tok = _from_hf(HFTokenizer.from_file(str(path)), f"bpe-{vocab_size}")
    if tok.vocab_size < vocab_size:  # a small corpus ran out of pairs to merge: keep the vocabulary asked for
        tok.token_bytes = np.pad(tok.token_bytes, (0, vocab_size - tok.vocab_size))
        tok.vocab_size = vocab_size
    return tok


def check_token_width(arr: np.ndarray, path: Path) -> None:
    """Refuse a uint32 token file read as uint16: its ids (< 65,536) then read as the id followed by a zero high
    half, a zero at nearly every odd position, which a real token stream never shows."""
    head = np.asarray(arr[: 1 << 20])
    if arr.dtype == np.uint16 and len(arr) % 2 == 0 and len(head) >= 1024 and (head[1::2] == 0).mean() > 0.99 > 2 * (
            head[0::2] == 0).mean():
        raise HarnessError(f"token file {str(path)!r} reads as uint32 ids (every second uint16 is 0); set "
                           "data.token_dtype=uint32")


def cache_dtype(vocab_size: int, token_dtype: str | None) -> np.dtype:
    """The smallest id type for the vocabulary: uint8 for bytes, uint16, or uint32 when data.token_dtype asks."""
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(str(token_dtype) if token_dtype else "uint16")
    if str(token_dtype) != "uint32":
        raise HarnessError(f"a vocabulary of {vocab_size} ids does not fit uint16 tokens (max 65,536); set "
                           "data.token_dtype=uint32 or a smaller data.vocab_size")
    return np.dtype(np.uint32)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def batches(texts: Iterable[str], limit: int = BATCH_BYTES) -> Iterator[list[str]]:
    """Texts grouped into lists of about `limit` characters (one encode_batch call each)."""
    batch: list[str] = []
    size = 0
    for t in texts:
        batch.append(t)
        size += len(t)
        if size >= limit:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _encoded(texts: Iterable[str], tok: Tokenizer, dtype: np.dtype, bar: tqdm, counts: list[int]) -> Iterator[bytes]:
    """The split's tokens as raw bytes of dtype, one batch at a time; counts accumulates [tokens, their summed
    per-token byte lengths] (the second is checked against the text's true bytes by `exactness`)."""
    for batch in batches(texts):
        ids = tok.encode_batch(batch)
        arr = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        counts[0] += len(arr)
        counts[1] += int(tok.token_bytes[arr].sum())
        bar.update(sum(len(t.encode("utf-8", "replace")) for t in batch))
        yield arr.astype(dtype).tobytes()


def build_token_cache(key_dir: Path, splits: dict[str, Callable[[], Iterable[str]]], tok: Tokenizer,
                      dtype: np.dtype, total_bytes: int, meta: dict[str, Any],
                      late: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Tokenize each split into key_dir/<split>.bin plus meta.json (with `late()`, what reading the text
    counted, merged in); built in a temporary sibling directory and renamed into place whole (a concurrent
    builder's identical result wins; a failure leaves nothing)."""
    if (key_dir / "meta.json").exists():
        return json.loads((key_dir / "meta.json").read_text())
    key_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=key_dir.parent, prefix=f".{key_dir.name}."))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the cache is as shareable as the byte cache
    try:
        meta = {**meta, "tokenizer": tok.tag, "vocab_size": tok.vocab_size, "dtype": dtype.name}
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"tokenizing ({tok.name})",
                  dynamic_ncols=True, leave=False) as bar:
            for split, texts in splits.items():
                counts = [0, 0]
                atomic_write(tmp / f"{split}.bin", _encoded(texts(), tok, dtype, bar, counts))
                meta[f"{split}_tokens"], meta[f"{split}_token_bytes"] = counts
        meta.update(late() if late else {})
        atomic_write(tmp / "meta.json", [json.dumps(meta).encode()])
        try:
            os.replace(tmp, key_dir)
        except OSError:  # another process finished the same cache first: keep theirs
            if not (key_dir / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json.loads((key_dir / "meta.json").read_text())


def open_split(key_dir: Path, split: str, dtype: np.dtype, n_tokens: int) -> np.ndarray:
    """A cached split as a read-only memmap (an empty array for an empty split)."""
    if not n_tokens:
        return np.zeros(0, dtype)
    return np.memmap(key_dir / f"{split}.bin", dtype=dtype, mode="r")


def make_tokenizer(dc: Any, train_texts: Callable[[], Iterable[str]], corpus_fp: str, cache_dir: Path) -> Tokenizer:
    """data.tokenizer as a Tokenizer: bytes, bpe (trained on train_texts, cached) or a tokenizer.json path."""
    spec = str(dc.get("tokenizer") or "bytes")
    if spec == "bytes":
        return byte_tokenizer()
    if spec == "bpe":
        vocab = int(dc.vocab_size) if dc.get("vocab_size") else 0
        check_bpe_vocab(vocab, dc.get("token_dtype"))
        return train_bpe(train_texts, vocab, corpus_fp, cache_dir)
    tok = load_tokenizer_file(Path(spec).expanduser())
    cache_dtype(tok.vocab_size, dc.get("token_dtype"))
    return tok


def text_chunks(arr: np.ndarray, size: int = 1 << 20, invalid: list[int] | None = None) -> Iterator[str]:
    """A byte array (a cached byte split) as text chunks of about `size` bytes, cut after a newline where one
    is near, so tokenization matches the whole text except at rare chunk edges. Invalid UTF-8 becomes U+FFFD;
    invalid[0], when given, accumulates how many bytes were invalid (what the tokenizer did not see)."""
    start, n = 0, len(arr)
    while start < n:
        end = min(n, start + size)
        if end < n:
            nl = np.flatnonzero(np.asarray(arr[max(start, end - 65536):end]) == 10)
            if len(nl):
                end = max(start, end - 65536) + int(nl[-1]) + 1
            while end > start + 1 and (int(arr[end]) & 0xC0) == 0x80:  # never split a UTF-8 character
                end -= 1
        raw = bytes(arr[start:end])
        text = raw.decode("utf-8", "replace")
        if invalid is not None and "\ufffd" in text:  # (a real U+FFFD in the text is valid: it is not counted)
            invalid[0] += len(raw) - len(raw.decode("utf-8", "ignore").encode("utf-8"))
        yield text
        start = end


TOLERANCE = 0.001  # per-token byte sums may differ from a split's true bytes by this fraction and stay exact


def _summed(token_bytes: np.ndarray, arr: np.ndarray) -> int:
    """Summed per-token byte lengths of a token split (for a token cache written before meta recorded them)."""
    return sum(int(token_bytes[np.asarray(arr[i:i + (1 << 24)])].sum()) for i in range(0, len(arr), 1 << 24))


def exactness(tok: Tokenizer, meta: dict[str, Any], arrays: dict[str, np.ndarray],
              true_bytes: dict[str, int]) -> tuple[np.ndarray | None, float | None]:
    """(per-token byte lengths, None) when they add up to each split's true UTF-8 bytes within TOLERANCE, else
    (None, the val split's true bytes / its tokens) with a warning: val_bpb is then approximate, never wrongly
    exact (a decoder the lengths misread, text normalised by the tokenizer, invalid UTF-8 replaced)."""
    bad = int(meta.get("invalid_utf8_bytes", 0))
    if bad:
        print(f"warning: {bad:,} of {sum(true_bytes.values()):,} bytes of the text are not valid UTF-8, so "
              f"{tok.name} tokenized replacement characters (U+FFFD) in their place; convert the text to UTF-8 "
              "(e.g. iconv -f latin1 -t utf-8) or use data.tokenizer=bytes")
    for split, n in true_bytes.items():
        got = meta.get(f"{split}_token_bytes")
        got = _summed(tok.token_bytes, arrays[split]) if got is None else int(got)
        if abs(got - n) > TOLERANCE * n:
            bpt = true_bytes["val"] / max(1, len(arrays["val"]))
            print(f"warning: the per-token byte lengths of {tok.tag} add up to {got:,} bytes on the {split} "
                  f"split, which holds {n:,}; val_bpb uses the val split's mean of {bpt:.4f} bytes per token "
                  "instead (bpb_method=approximate)")
            return None, bpt
    return tok.token_bytes, None
