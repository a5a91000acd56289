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


def metaspace_tokenizer(path: Path, text: str) -> Path:
    """A SentencePiece-style tokenizer.json: BPE with byte fallback, Metaspace pre-tokenizer and decoder, trained
    on ASCII text (so é and 中 are spelled by <0xNN> byte tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="always"),
                                     decoders.ByteFallback()])
    fallback = [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=600, special_tokens=fallback, show_progress=False))
    tok.save(str(path))
    return path


def wordpiece_tokenizer(path: Path, text: str) -> Path:
    """A BERT-style WordPiece tokenizer.json: whitespace is dropped, so no per-token lengths can spell the text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator([text], trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[UNK]"],
                                                              show_progress=False))
    tok.save(str(path))
    return path


def test_metaspace_byte_fallback_lengths_add_up_to_the_texts_bytes(text_corpus: Path, tmp_path: Path, capsys) -> None:
    """'▁the' is 4 bytes in a text (decoded alone it is 'the'), <0xE2> is 1 (alone it decodes to U+FFFD), so the
    lengths of a text's tokens add up to its UTF-8 bytes, plus the one '▁' Metaspace puts before the first word."""
    train = "".join(f.read_text() for f in sorted(text_corpus.glob("*.txt")))
    tj = metaspace_tokenizer(tmp_path / "ms.json", train)
    tok = load_tokenizer_file(tj)
    ids = {t: tok.hf.token_to_id(t) for t in ("▁the", "▁", "<0xE2>", "<0x41>", "<0x0A>")}
    assert [int(tok.token_bytes[i]) for i in ids.values()] == [4, 1, 1, 1, 1]
    text = "the naïve café\nserves 中文 tokens,  twice spaced\n" * 40 + train[:3000]
    enc = tok.hf.encode(text, add_special_tokens=False).ids
    assert any(tok.hf.id_to_token(i) == "<0xE4>" for i in enc)  # byte fallback was used
    assert int(tok.token_bytes[enc].sum()) == len(text.encode()) + 1
    # through the corpus: exact, no warning, and each split's lengths sum to its true bytes (+1 per text chunk)
    byte = load_corpus(dc(text_corpus, tmp_path / "c"), 32)
    c = load_corpus(dc(text_corpus, tmp_path / "c", tokenizer=str(tj)), 32)
    assert c.row(1)["bpb_method"] == "exact" and c.token_bytes is not None
    assert "warning" not in capsys.readouterr().out
    for split in ("train", "val"):
        assert int(c.token_bytes[np.asarray(getattr(c, split))].sum()) == len(getattr(byte, split)) + 1


def indented(text_corpus: Path, root: Path) -> Path:
    """The test corpus with every line indented by four spaces (whitespace WordPiece drops)."""
    root.mkdir()
    for f in text_corpus.glob("*.txt"):
        (root / f.name).write_text(f.read_text().replace("\n", "\n    "))
    return root


def test_lengths_that_do_not_spell_the_text_fall_back_to_an_approximate_mean(text_corpus: Path, tmp_path: Path,
                                                                              capsys) -> None:
    """WordPiece drops whitespace (a line's indentation): its lengths cannot add up to the text's bytes, so val_bpb
    uses the val split's true bytes per token, is marked approximate, and a warning says why (again when cached)."""
    corpus = indented(text_corpus, tmp_path / "indented")
    tj = wordpiece_tokenizer(tmp_path / "wp.json", "".join(f.read_text() for f in corpus.glob("*.txt")))
    byte = load_corpus(dc(corpus, tmp_path / "c"), 32)
    for _ in range(2):
        c = load_corpus(dc(corpus, tmp_path / "c", tokenizer=str(tj)), 32)
        out = capsys.readouterr().out
        assert out.count("warning:") == 1 and "per-token byte lengths of wp.json@" in out
        assert f"on the train split, which holds {len(byte.train):,}" in out and "approximate" in out
        assert c.token_bytes is None and c.row(1)["bpb_method"] == "approximate"
        assert c.bytes_per_token == len(byte.val) / len(c.val)
        assert c.eval_bytes_per_token(eval_windows(c.val, 4, 32)) == c.bytes_per_token
        assert c.tokenizer.startswith("wp.json@")


def test_invalid_utf8_is_counted_and_bpb_is_not_called_exact(tmp_path: Path, capsys) -> None:
    """Latin-1 text under a text tokenizer: the warning counts the invalid bytes (each é, ï is one), and the
    replacement characters' extra bytes make the lengths disagree with the true bytes: approximate bpb."""
    line = "café naïve résumé and some plain ascii words to merge\n"
    raw = (line * 400).encode("latin-1")
    f = tmp_path / "l.txt"
    f.write_bytes(raw)
    c = load_corpus(dc(f, tmp_path / "c", tokenizer="bpe", vocab_size=300), 32)
    out = capsys.readouterr().out
    n_bad = 400 * sum(ch in "éï" for ch in line)
    assert f"warning: {n_bad:,} of {len(raw):,} bytes of the text are not valid UTF-8" in out
    assert "per-token byte lengths of bpe-300@" in out
    assert c.row(1)["bpb_method"] == "approximate"
    n_val = math.ceil(len(raw) * 0.05)
    assert c.bytes_per_token == n_val / len(c.val)
    utf8 = tmp_path / "u.txt"  # the same text in UTF-8: no warning, exact
    utf8.write_text(line * 400)
    assert load_corpus(dc(utf8, tmp_path / "c", tokenizer="bpe", vocab_size=300), 32).row(1)["bpb_method"] == "exact"
    assert "warning" not in capsys.readouterr().out


def test_a_token_cache_without_recorded_sums_is_still_checked(text_corpus: Path, tmp_path: Path) -> None:
    """A token cache written before meta.json recorded per-split byte sums: they are summed from the tokens."""
    corpus = indented(text_corpus, tmp_path / "indented")
    tj = wordpiece_tokenizer(tmp_path / "wp.json", "".join(f.read_text() for f in corpus.glob("*.txt")))
    methods = []
    for spec in ("bpe", str(tj)):
        first = load_corpus(dc(corpus, tmp_path / "c", tokenizer=spec, vocab_size=400), 32)
        for meta in (tmp_path / "c" / "tokens").glob("*/meta.json"):
            m = json.loads(meta.read_text())
            meta.write_text(json.dumps({k: v for k, v in m.items() if not k.endswith("_token_bytes")}))
        again = load_corpus(dc(corpus, tmp_path / "c", tokenizer=spec, vocab_size=400), 32)
        assert again.row(1) == first.row(1) and again.bytes_per_token == first.bytes_per_token
        methods.append(again.row(1)["bpb_method"])
    assert methods == ["exact", "approximate"]
