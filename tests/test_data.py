"""harness.data: the three corpus kinds, leak-free splits, memmapping, fingerprints and batch sampling."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from harness.data import _is_val_file, eval_windows, load_corpus, sample_batch, stdlib_files
from harness.errors import HarnessError


def text_dc(path: Path | str, cache: Path, **kw) -> OmegaConf:
    return OmegaConf.create({"kind": "text", "path": str(path), "pattern": "**/*.txt", "val_fraction": 0.05,
                             "vocab_size": 256, "bytes_per_token": 1.0, "cache_dir": str(cache), **kw})


def tokens_dc(path: Path, cache: Path, **kw) -> OmegaConf:
    base = {"kind": "tokens", "path": str(path), "token_dtype": "uint16", "vocab_size": None,
            "bytes_per_token": None, "val_fraction": 0.05, "cache_dir": str(cache)}
    return OmegaConf.create({**base, **kw})


# ---------------------------------------------------------------- stdlib


def test_stdlib_corpus_split_by_file_and_fingerprint(stdlib_cache: Path, tmp_path: Path) -> None:
    dc = OmegaConf.create({"kind": "stdlib", "path": None, "val_fraction": 0.05, "vocab_size": 256,
                           "bytes_per_token": 1.0, "cache_dir": str(stdlib_cache)})
    a = load_corpus(dc, 128)
    b = load_corpus(dc, 128)  # from the cache
    c = load_corpus(OmegaConf.merge(dc, {"cache_dir": str(tmp_path / "fresh")}), 128)  # rebuilt
    assert a.fingerprint == b.fingerprint == c.fingerprint
    assert a.vocab_size == 256 and a.bytes_per_token == 1.0
    assert isinstance(a.train, np.memmap) and isinstance(a.val, np.memmap)

    root, files = stdlib_files()
    # the scandir walk finds exactly what rglob would (the list the corpus' fingerprint was first taken over)
    assert files == sorted(p for p in root.rglob("*.py") if not {"site-packages", "dist-packages"} & set(p.parts))
    rels = [str(f.relative_to(root)) for f in files]
    val = [f for f, r in zip(files, rels) if _is_val_file(r, 0.05)]
    train = [f for f, r in zip(files, rels) if not _is_val_file(r, 0.05)]
    assert val and train and not set(val) & set(train)
    assert 0.01 < len(val) / len(files) < 0.15
    # each split is exactly the concatenation of its own files, in sorted order
    assert len(a.val) == sum(f.stat().st_size for f in val)
    assert len(a.train) == sum(f.stat().st_size for f in train)
    first_val, first_train = val[0].read_bytes(), train[0].read_bytes()
    assert bytes(a.val[: len(first_val)]) == first_val
    assert bytes(a.train[: len(first_train)]) == first_train
    last_val = val[-1].read_bytes()
    assert bytes(a.val[len(a.val) - len(last_val):]) == last_val


def test_is_val_file_deterministic_fraction() -> None:
    names = [f"pkg/mod{i}.py" for i in range(4000)]
    frac = sum(_is_val_file(n, 0.1) for n in names) / len(names)
    assert 0.08 < frac < 0.12
    assert [_is_val_file(n, 0.1) for n in names] == [_is_val_file(n, 0.1) for n in names]
    # a larger fraction holds out a superset
    assert all(_is_val_file(n, 0.2) for n in names if _is_val_file(n, 0.1))


# ---------------------------------------------------------------- text


def test_text_dir_split_by_file(text_corpus: Path, tmp_path: Path) -> None:
    c = load_corpus(text_dc(text_corpus, tmp_path), 32)
    files = sorted(text_corpus.glob("*.txt"))
    val = [f for f in files if _is_val_file(f.name, 0.05)]
    train = [f for f in files if not _is_val_file(f.name, 0.05)]
    assert len(val) == 3 and len(train) == 12
    assert bytes(c.val) == b"".join(f.read_bytes() for f in val)
    assert bytes(c.train) == b"".join(f.read_bytes() for f in train)
    assert isinstance(c.train, np.memmap)
    assert c.description.startswith("text: 15 files")


def test_text_fingerprint_depends_on_content_not_cache(text_corpus: Path, tmp_path: Path) -> None:
    fp1 = load_corpus(text_dc(text_corpus, tmp_path / "c1"), 32).fingerprint
    fp2 = load_corpus(text_dc(text_corpus, tmp_path / "c2"), 32).fingerprint
    assert fp1 == fp2
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in text_corpus.glob("*.txt"):
        (copy / f.name).write_bytes(f.read_bytes())
    assert load_corpus(text_dc(copy, tmp_path / "c3"), 32).fingerprint == fp1  # same names + bytes
    first = sorted(copy.glob("*.txt"))[0]
    first.write_bytes(first.read_bytes().replace(b"the", b"THE", 1))
    assert load_corpus(text_dc(copy, tmp_path / "c3"), 32).fingerprint != fp1  # edit -> new fingerprint


def test_text_glob(text_corpus: Path, tmp_path: Path) -> None:
    c = load_corpus(text_dc(f"{text_corpus}/doc*.txt", tmp_path), 32)
    total = sum(f.stat().st_size for f in text_corpus.glob("*.txt"))
    assert len(c.train) + len(c.val) == total


def test_single_text_file_split_by_tail(tmp_path: Path) -> None:
    data = bytes(range(1, 128)) * 80  # 10160 bytes of ASCII (a binary file is refused: test_errors.py)
    f = tmp_path / "one.txt"
    f.write_bytes(data)
    c = load_corpus(text_dc(f, tmp_path / "cache", val_fraction=0.1), 32)
    n_val = math.ceil(len(data) * 0.1)
    assert bytes(c.val) == data[-n_val:]
    assert bytes(c.train) == data[:-n_val]
    assert isinstance(c.train, np.memmap) and isinstance(c.val, np.memmap)


def test_val_fraction_change_changes_split(text_corpus: Path, tmp_path: Path) -> None:
    """The tokenized cache must not hand back a split made with another data.val_fraction."""
    small = load_corpus(text_dc(text_corpus, tmp_path), 32)
    large = load_corpus(text_dc(text_corpus, tmp_path, val_fraction=0.5), 32)
    files = sorted(text_corpus.glob("*.txt"))
    want = sum(f.stat().st_size for f in files if _is_val_file(f.name, 0.5))
    assert len(large.val) == want
    assert len(large.val) > len(small.val)


def test_text_errors(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(HarnessError, match="does not exist"):
        load_corpus(text_dc(tmp_path / "missing", cache), 32)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(HarnessError, match="no file matching"):
        load_corpus(text_dc(tmp_path / "empty_dir", cache), 32)
    with pytest.raises(HarnessError, match="matches no file"):
        load_corpus(text_dc(f"{tmp_path}/nothing*.txt", cache), 32)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(HarnessError, match="fewer than one context window"):
        load_corpus(text_dc(tmp_path / "empty.txt", cache), 32)
    (tmp_path / "short.txt").write_bytes(b"x" * 30)
    with pytest.raises(HarnessError, match=r"fewer than one context window \(33\)"):
        load_corpus(text_dc(tmp_path / "short.txt", cache), 32)
    with pytest.raises(HarnessError, match="val_fraction"):
        load_corpus(text_dc(tmp_path / "short.txt", cache, val_fraction=1.0), 32)


# ---------------------------------------------------------------- tokens


@pytest.mark.parametrize(("dtype", "vocab"), [(np.uint16, 50_257), (np.uint32, 100_000)])
def test_token_file_memmapped_and_split_by_tail(tmp_path: Path, dtype, vocab: int) -> None:
    rng = np.random.default_rng(0)
    toks = rng.integers(0, vocab, 5000).astype(dtype)
    toks[0] = vocab - 1
    path = tmp_path / "data.bin"
    toks.tofile(path)
    dc = tokens_dc(path, tmp_path / "cache", token_dtype=np.dtype(dtype).name, vocab_size=vocab,
                   bytes_per_token=3.5, val_fraction=0.1)
    c = load_corpus(dc, 64)
    assert isinstance(c.train, np.memmap) and isinstance(c.val, np.memmap)
    assert c.train.dtype == dtype and c.val.dtype == dtype
    assert c.vocab_size == vocab and c.bytes_per_token == 3.5
    n_val = math.ceil(5000 * 0.1)
    np.testing.assert_array_equal(np.asarray(c.val), toks[-n_val:])
    np.testing.assert_array_equal(np.asarray(c.train), toks[:-n_val])
    assert c.fingerprint == load_corpus(dc, 64).fingerprint
    x, _ = sample_batch(c.train, 4, 64, torch.Generator().manual_seed(0))
    assert x.dtype == torch.int64 and int(x.max()) < vocab


def test_a_uint32_token_file_read_as_uint16_is_refused(tmp_path: Path) -> None:
    """GPT-2 ids saved as uint32 fit uint16's range, so read as uint16 they pass the range check and train on a
    stream where every second token is 0; the zero high halves give it away."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50_257, 4000)
    path = tmp_path / "u32.bin"
    ids.astype(np.uint32).tofile(path)
    with pytest.raises(HarnessError, match=r"reads as uint32 ids \(every second uint16 is 0\); set "
                                           r"data.token_dtype=uint32"):
        load_corpus(tokens_dc(path, tmp_path / "c", vocab_size=50_257, bytes_per_token=3.5), 32)
    assert load_corpus(tokens_dc(path, tmp_path / "c", token_dtype="uint32", vocab_size=50_257,
                                 bytes_per_token=3.5), 32).train.dtype == np.uint32
    common = ids.astype(np.uint16)
    common[rng.random(4000) < 0.3] = 0  # a real uint16 stream where id 0 is common (30%) still loads
    common.tofile(tmp_path / "u16.bin")
    assert len(load_corpus(tokens_dc(tmp_path / "u16.bin", tmp_path / "c", vocab_size=50_257,
                                     bytes_per_token=3.5), 32).train) > 3000


def test_token_dir_with_meta(tmp_path: Path) -> None:
    d = tmp_path / "tok"
    d.mkdir()
    train = np.arange(3000, dtype=np.uint16) % 300
    val = (np.arange(500, dtype=np.uint16) * 7) % 300
    train.tofile(d / "train.bin")
    val.tofile(d / "val.bin")
    (d / "meta.json").write_text(json.dumps({"vocab_size": 300, "bytes_per_token": 2.0}))
    c = load_corpus(tokens_dc(d, tmp_path / "cache"), 32)
    assert isinstance(c.train, np.memmap) and isinstance(c.val, np.memmap)
    np.testing.assert_array_equal(np.asarray(c.train), train)
    np.testing.assert_array_equal(np.asarray(c.val), val)
    assert c.vocab_size == 300 and c.bytes_per_token == 2.0
    # different bytes -> different fingerprint
    fp = c.fingerprint
    ((val + 1) % 300).astype(np.uint16).tofile(d / "val.bin")
    assert load_corpus(tokens_dc(d, tmp_path / "cache"), 32).fingerprint != fp


def test_a_same_size_edit_with_its_mtime_set_back_is_not_served_from_the_cache(tmp_path: Path) -> None:
    """`cp -p` or `touch -r` can restore a file's size and mtime after an edit, but not its ctime."""
    import time

    path, cache = tmp_path / "t.bin", tmp_path / "cache"
    np.arange(2000, dtype=np.uint16).tofile(path)
    dc = tokens_dc(path, cache, vocab_size=2000, bytes_per_token=1.0)
    before, st = load_corpus(dc, 32).fingerprint, path.stat()
    time.sleep(0.01)
    (np.arange(2000, dtype=np.uint16)[::-1]).tofile(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert load_corpus(dc, 32).fingerprint != before


def test_token_errors(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = tmp_path / "t.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    with pytest.raises(HarnessError, match=r"token id 999 >= data.vocab_size=500"):
        load_corpus(tokens_dc(path, cache, vocab_size=500, bytes_per_token=1.0), 32)
    with pytest.raises(HarnessError, match="vocabulary size"):
        load_corpus(tokens_dc(path, cache, bytes_per_token=1.0), 32)
    with pytest.raises(HarnessError, match="bytes_per_token"):
        load_corpus(tokens_dc(path, cache, vocab_size=1000), 32)
    with pytest.raises(HarnessError, match="does not exist"):
        load_corpus(tokens_dc(tmp_path / "nope.bin", cache, vocab_size=1000, bytes_per_token=1.0), 32)
    with pytest.raises(HarnessError, match="token_dtype"):
        load_corpus(tokens_dc(path, cache, vocab_size=1000, bytes_per_token=1.0, token_dtype="int8"), 32)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\0" * 1001)
    with pytest.raises(HarnessError, match="whole number"):
        load_corpus(tokens_dc(odd, cache, vocab_size=1000, bytes_per_token=1.0), 32)
    d = tmp_path / "dir"
    d.mkdir()
    np.arange(100, dtype=np.uint16).tofile(d / "train.bin")
    with pytest.raises(HarnessError, match=r"train.bin and val.bin"):
        load_corpus(tokens_dc(d, cache, vocab_size=1000, bytes_per_token=1.0), 32)
    assert not (cache / "digests").exists() or not any((cache / "digests").iterdir())


# ---------------------------------------------------------------- batches


def test_sample_batch_shapes_and_shift(tmp_path: Path) -> None:
    tokens = np.arange(1000, dtype=np.int64) % 251  # position-revealing, so the shift is checkable
    x, y = sample_batch(tokens, 8, 32, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 32)
    assert x.dtype == y.dtype == torch.int64
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    assert ((y - x) % 251 == 1).all()  # y[i] is the token after x[i]
    x2, _ = sample_batch(tokens, 8, 32, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, x2)  # same generator state -> same batch
    x3, _ = sample_batch(tokens, 8, 32, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x3)


def test_sample_batch_reaches_both_ends() -> None:
    """Windows may start at 0 and end at the very last token, never beyond."""
    tokens = np.arange(40, dtype=np.int64)
    x, y = sample_batch(tokens, 500, 32, torch.Generator().manual_seed(0))
    assert int(x[:, 0].min()) == 0
    assert int(y[:, -1].max()) == 39


def test_sample_batch_window_exactly_fills(tmp_path: Path) -> None:
    tokens = np.arange(33, dtype=np.uint8)
    x, y = sample_batch(tokens, 2, 32, torch.Generator().manual_seed(0))
    assert x[0].tolist() == list(range(32)) and y[0].tolist() == list(range(1, 33))


def test_eval_windows_deterministic_and_spread() -> None:
    tokens = np.arange(10_000, dtype=np.int64)
    a = eval_windows(tokens, 8, 32)
    b = eval_windows(tokens, 8, 32)
    assert a.shape == (8, 33)
    torch.testing.assert_close(a, b)
    starts = a[:, 0].tolist()
    assert starts[0] == 0 and int(a[-1, -1]) == 9_999  # first and last token of the split covered
    assert all(b_ - a_ > 0 for a_, b_ in itertools.pairwise(starts))  # distinct, increasing
    assert (a[:, 1:] - a[:, :-1] == 1).all()  # contiguous windows
    few = eval_windows(np.arange(100, dtype=np.int64), 50, 32)
    assert few.shape == (3, 33)  # capped by how many windows fit
    one = eval_windows(np.arange(33, dtype=np.int64), 8, 32)
    assert one.shape == (1, 33)


# ---------------------------------------------------------------- split rule, bad settings, odd paths


def test_val_fraction_is_part_of_the_fingerprint_and_of_every_cache(text_corpus: Path, tmp_path: Path) -> None:
    """The default split keeps its historic fingerprint (sha256-bytes); another data.val_fraction adds '+vf<x>',
    so a results dir cannot mix val sets, and the BPE and token caches (keyed by it) keep the splits apart."""
    cache = tmp_path / "c"
    default = load_corpus(text_dc(text_corpus, cache), 32)
    half = load_corpus(text_dc(text_corpus, cache, val_fraction=0.5), 32)
    assert re.fullmatch(r"[0-9a-f]{16}-\d+", default.fingerprint)
    assert half.fingerprint == default.fingerprint + "+vf0.5"
    bpe = {vf: load_corpus(text_dc(text_corpus, cache, val_fraction=vf, tokenizer="bpe", vocab_size=400), 32)
           for vf in (0.05, 0.5)}  # the 0.05 tokenizer and token cache exist when 0.5 is asked for
    assert bpe[0.05].fingerprint.startswith(default.fingerprint + "/bpe-400@")
    assert bpe[0.5].fingerprint.startswith(half.fingerprint + "/bpe-400@")
    for vf, byte in ((0.05, default), (0.5, half)):  # each token split spells exactly its own byte split
        c = bpe[vf]
        assert int(c.token_bytes[np.asarray(c.val)].sum()) == len(byte.val)
        assert int(c.token_bytes[np.asarray(c.train)].sum()) == len(byte.train)
    assert len(list((cache / "tokenizers").glob("*.json"))) == 2  # trained on each train split
    # a single token file is split by a tail of val_fraction too; a train.bin + val.bin directory is not
    path = tmp_path / "t.bin"
    np.arange(3000, dtype=np.uint16).tofile(path)
    tok = [load_corpus(tokens_dc(path, cache, vocab_size=3000, bytes_per_token=2.0, val_fraction=vf), 32)
           for vf in (0.05, 0.1)]
    assert tok[1].fingerprint == tok[0].fingerprint + "+vf0.1" and len(tok[1].val) == 300
    d = tmp_path / "tokdir"
    d.mkdir()
    for name in ("train.bin", "val.bin"):
        np.arange(500, dtype=np.uint16).tofile(d / name)
    fps = {load_corpus(tokens_dc(d, cache, vocab_size=500, bytes_per_token=2.0, val_fraction=vf), 32).fingerprint
           for vf in (0.05, 0.3)}
    assert len(fps) == 1 and "+vf" not in fps.pop()


@pytest.mark.parametrize("bad", [0, -1, "nan", "four"])
def test_bytes_per_token_must_be_positive(tmp_path: Path, bad) -> None:
    path = tmp_path / "t.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    with pytest.raises(HarnessError, match=r"data.bytes_per_token=.* must be a positive number"):
        load_corpus(tokens_dc(path, tmp_path / "c", vocab_size=1000, bytes_per_token=bad), 32)
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 1000, "bytes_per_token": bad}))
    with pytest.raises(HarnessError, match=r"bytes_per_token in '.*meta.json'=.* must be a positive number"):
        load_corpus(tokens_dc(path, tmp_path / "c"), 32)
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 1000, "bytes_per_token": 0.5}))
    assert load_corpus(tokens_dc(path, tmp_path / "c"), 32).bytes_per_token == 0.5


def test_paths_with_glob_characters_that_exist_are_used_as_given(text_corpus: Path, tmp_path: Path) -> None:
    d = tmp_path / "set [v2]"
    d.mkdir()
    for f in sorted(text_corpus.glob("*.txt")):
        (d / f.name).write_bytes(f.read_bytes())
    c = load_corpus(text_dc(d, tmp_path / "c"), 32)
    assert len(c.train) + len(c.val) == sum(f.stat().st_size for f in text_corpus.glob("*.txt"))
    one = tmp_path / "notes[1].txt"
    one.write_bytes(b"some notes\n" * 100)
    assert len(load_corpus(text_dc(one, tmp_path / "c"), 32).train) == 1100 - 55
    assert len(load_corpus(text_dc(f"{tmp_path}/notes?1?.txt", tmp_path / "c"), 32).val) == 55  # still a glob
    with pytest.raises(HarnessError, match=r"'.*set \[v3\]' does not exist and, as a glob, matches no file"):
        load_corpus(text_dc(tmp_path / "set [v3]", tmp_path / "c"), 32)


def test_a_by_file_split_with_an_empty_side_says_so(tmp_path: Path) -> None:
    """Two files that both hash into train (a.txt 7066, b.txt 8346 of 10,000): the message names the by-file
    split, the file count and the fix, not model.seq_len; nothing is cached."""
    d = tmp_path / "ab"
    d.mkdir()
    for name in ("a.txt", "b.txt"):
        (d / name).write_text("plenty of text\n" * 500)
    cache = tmp_path / "c"
    with pytest.raises(HarnessError, match=r"no file landed in the val split: all 2 files under .* hash into train "
                                           r".*add files, or set data.val_fraction>=0.7067") as e:
        load_corpus(text_dc(d, cache), 32)
    assert "seq_len" not in str(e.value)
    with pytest.raises(HarnessError, match=r"no file landed in the train split: all 2 files .* hash into val .*"
                                           r"data.val_fraction<=0.8346 keeps one in train"):
        load_corpus(text_dc(d, cache, val_fraction=0.9), 32)
    assert not cache.exists()
    c = load_corpus(text_dc(d, cache, val_fraction=0.7067), 32)  # the suggested fraction works
    assert len(c.val) == len(c.train) == 15 * 500
    (d / "b.txt").write_text("")  # a genuinely too-short split still speaks of the context window
    with pytest.raises(HarnessError, match="the train split holds 0 tokens, fewer than one context window"):
        load_corpus(text_dc(d, cache, val_fraction=0.7067), 32)
