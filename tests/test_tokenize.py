"""harness.tokenize through load_corpus and train: exact bits per byte on one scale for any tokenizer, a BPE
trained deterministically on the train split and cached, the token cache written whole, bad tokenizers refused."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from harness import tokenize
from harness.data import eval_windows, load_corpus
from harness.errors import HarnessError
from harness.tokenize import cache_dtype, load_tokenizer_file

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (Radford et al. 2019), as ByteLevel uses it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def single_byte_tokenizer(path: Path) -> Path:
    """A byte-level tokenizer.json whose 256 tokens are single bytes with id = byte value (no merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: b for b, ch in gpt2_bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(path))
    return path


def dc(path: Path, cache: Path, **kw):
    base = {"kind": "text", "path": str(path), "pattern": "**/*.txt", "val_fraction": 0.05, "vocab_size": 256,
            "tokenizer": "bytes", "token_dtype": None, "bytes_per_token": 1.0, "cache_dir": str(cache)}
    return OmegaConf.create({**base, **kw})


def test_a_single_byte_tokenizer_gives_the_byte_runs_bpb(tiny_cfg, tmp_path: Path) -> None:
    """Same text, same ids: the tokenizer path reproduces the byte run's val_bpb exactly, and the rows say
    which tokenizer made them."""
    from harness.train import run

    tj = single_byte_tokenizer(tmp_path / "bytes.json")
    a = run(tiny_cfg("results_dir=" + str(tmp_path / "a")))
    b = run(tiny_cfg("results_dir=" + str(tmp_path / "b"), f"data.tokenizer={tj}"))
    assert a["val_bpb"] == b["val_bpb"] and a["val_loss"] == b["val_loss"]
    assert a["tokenizer"] == "bytes" and b["tokenizer"].startswith("bytes.json@")
    assert a["data_fingerprint"] != b["data_fingerprint"] and b["data_fingerprint"].startswith(a["data_fingerprint"])
    assert a["bpb_method"] == b["bpb_method"] == "exact"
    train_tokens = len(load_corpus(tiny_cfg().data, 32).train)
    assert 0 < a["epochs"] == round(a["tokens"] / train_tokens, 4) < 1


def test_bpe_bytes_are_exact_and_bpb_is_nats_over_bytes(text_corpus: Path, tmp_path: Path) -> None:
    """The per-token byte lengths of a trained BPE add up to exactly the bytes of the split they encode, and
    the eval's bytes per token is their sum over the eval targets."""
    byte = load_corpus(dc(text_corpus, tmp_path / "c"), 32)
    bpe = load_corpus(dc(text_corpus, tmp_path / "c", tokenizer="bpe", vocab_size=512), 32)
    assert bpe.vocab_size == 512 and bpe.tokenizer.startswith("bpe-512@") and bpe.train.dtype == np.uint16
    for split in ("train", "val"):
        toks, raw = getattr(bpe, split), getattr(byte, split)
        assert int(bpe.token_bytes[np.asarray(toks)].sum()) == len(raw)
        assert len(toks) < 0.6 * len(raw)  # merges happened
    w = eval_windows(bpe.val, 8, 32)
    exact = bpe.token_bytes[w[:, 1:].numpy()].sum() / w[:, 1:].numel()
    assert bpe.eval_bytes_per_token(w) == pytest.approx(exact) and exact > 1.5
    # decoding the tokens gives the text back byte for byte
    hf = load_tokenizer_file(next((tmp_path / "c" / "tokenizers").glob("*.json"))).hf
    assert hf.decode(np.asarray(bpe.val[:2000]).tolist()).encode() == bytes(byte.val[: int(bpe.token_bytes[np.asarray(bpe.val[:2000])].sum())])
    nats = 1.234
    assert nats / math.log(2) / bpe.eval_bytes_per_token(w) == pytest.approx(
        nats * w[:, 1:].numel() / (math.log(2) * exact * w[:, 1:].numel()))


def test_bpe_is_deterministic_trained_on_train_only_and_cached(text_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    a = load_corpus(dc(text_corpus, tmp_path / "c1", tokenizer="bpe", vocab_size=400), 32)
    b = load_corpus(dc(text_corpus, tmp_path / "c2", tokenizer="bpe", vocab_size=400), 32)
    assert a.fingerprint == b.fingerprint and np.array_equal(a.train, b.train)
    seen: list[str] = []
    real = tokenize.train_bpe

    def spy(texts, *args, **kw):
        seen.extend(texts())
        return real(texts, *args, **kw)

    monkeypatch.setattr("harness.tokenize.train_bpe", spy)
    load_corpus(dc(text_corpus, tmp_path / "c3", tokenizer="bpe", vocab_size=400), 32)
    byte = load_corpus(dc(text_corpus, tmp_path / "c3"), 32)
    assert "".join(seen).encode() == bytes(byte.train)  # the train split only, whole
    cached = sorted(p for p in (tmp_path / "c1").rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = load_corpus(dc(text_corpus, tmp_path / "c1", tokenizer="bpe", vocab_size=400), 32)
    assert again.fingerprint == a.fingerprint  # from the cache: nothing retrained, retokenized or rewritten
    assert sorted(p for p in (tmp_path / "c1").rglob("*") if p.is_file()) == cached
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert any(p.parent.name == "tokenizers" for p in cached) and any(p.name == "train.bin" for p in cached)


def test_a_failed_tokenization_leaves_nothing_in_the_cache(text_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    calls = []

    def boom(self, texts):
        calls.append(1)
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr(tokenize.Tokenizer, "encode_batch", boom)
    tj = single_byte_tokenizer(tmp_path / "t.json")
    with pytest.raises(RuntimeError):
        load_corpus(dc(text_corpus, tmp_path / "c", tokenizer=str(tj)), 32)
    assert calls and list((tmp_path / "c" / "tokens").iterdir()) == []  # no key dir, no temp dir


def test_bad_tokenizers_are_refused(text_corpus: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1.0", "model": ')
    with pytest.raises(HarnessError, match="does not parse as a tokenizers JSON"):
        load_corpus(dc(text_corpus, tmp_path / "c", tokenizer=str(bad)), 32)
    with pytest.raises(HarnessError, match="is not a file"):
        load_corpus(dc(text_corpus, tmp_path / "c", tokenizer=str(tmp_path / "nope.json")), 32)
    for v in (256, 100):
        with pytest.raises(HarnessError, match="leaves no merges for a byte-level BPE"):
            load_corpus(dc(text_corpus, tmp_path / "c", tokenizer="bpe", vocab_size=v), 32)
    with pytest.raises(HarnessError, match=r"does not fit uint16.*data.token_dtype=uint32"):
        load_corpus(dc(text_corpus, tmp_path / "c", tokenizer="bpe", vocab_size=70000), 32)
    assert cache_dtype(70000, "uint32") == np.uint32 and cache_dtype(256, None) == np.uint8
    assert not (tmp_path / "c" / "tokens").exists() or list((tmp_path / "c" / "tokens").iterdir()) == []


def test_byte_level_lengths_special_tokens_and_byte_fallback(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({"<0x0A>": 0, "héllo": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.add_special_tokens(["<eos>"])
    lengths = tokenize.token_byte_lengths(tok)
    assert lengths.tolist() == [1, 6, 5, 0]  # byte fallback, UTF-8 of the text, plain text, special
    bl = load_tokenizer_file(single_byte_tokenizer(tmp_path / "b.json"))
    assert bl.vocab_size == 256 and (bl.token_bytes == 1).all()


def test_harness_train_text_bpe_row(run_cli, tiny_overrides: list[str], tmp_path: Path) -> None:
    """The console script end to end: data=text + bpe writes a row with tokenizer, vocab, exact bpb, epochs."""
    out = tmp_path / "res"
    r = run_cli("harness-train", *tiny_overrides, "data.tokenizer=bpe", "data.vocab_size=384", f"results_dir={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert row["tokenizer"].startswith("bpe-384@") and row["vocab_size"] == "384" and row["bpb_method"] == "exact"
    assert 0 < float(row["epochs"]) < 1 and math.isfinite(float(row["val_bpb"]))
    rec = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert rec["val_bpb"] < rec["val_loss"] / math.log(2) / 1.5  # nats per token over > 1.5 bytes per token


def test_token_files_are_exact_with_their_tokenizer_and_approximate_without(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, 20_000).astype(np.uint16)
    ids.tofile(tmp_path / "t.bin")
    base = {"kind": "tokens", "path": str(tmp_path / "t.bin"), "token_dtype": "uint16", "vocab_size": None,
            "bytes_per_token": None, "val_fraction": 0.05, "cache_dir": str(tmp_path / "c")}
    tj = single_byte_tokenizer(tmp_path / "bytes.json")
    exact = load_corpus(OmegaConf.create({**base, "tokenizer": str(tj)}), 32)
    approx = load_corpus(OmegaConf.create({**base, "vocab_size": 256, "bytes_per_token": 3.0}), 32)
    w = eval_windows(exact.val, 4, 32)
    assert exact.eval_bytes_per_token(w) == 1.0 and exact.row(100)["bpb_method"] == "exact"
    assert approx.eval_bytes_per_token(w) == 3.0 and approx.row(100)["bpb_method"] == "approximate"
    assert "approximate" in approx.tokenizer and exact.tokenizer.startswith("bytes.json@")
    assert exact.fingerprint.startswith(approx.fingerprint + "/")
