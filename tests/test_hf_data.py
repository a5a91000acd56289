"""harness.hf_data through load_corpus: JSONL, Parquet, CSV, Arrow and save_to_disk read offline, the files'
own splits or a by-document split recorded in the fingerprint, and one clear message per bad input."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from harness.data import load_corpus
from harness.errors import HarnessError
from harness.hf_data import SEPARATOR, is_val_doc

datasets = pytest.importorskip("datasets")
pytestmark = pytest.mark.usefixtures("restore_torch_threads")

WORDS = ["scaling", "law", "token", "budget", "loss", "model", "data", "fit", "curve", "héllo", "naïve", "def"]


def docs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": i, "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 160))) + "\n"}
            for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def hf_dc(path: Path | str, cache: Path, **kw):
    base = {"kind": "hf", "path": str(path), "text_field": "text", "tokenizer": "bytes", "vocab_size": 256,
            "token_dtype": None, "val_fraction": 0.1, "max_epochs": 4, "cache_dir": str(cache)}
    return OmegaConf.create({**base, **kw})


def test_jsonl_split_by_document_never_within_one(tmp_path: Path) -> None:
    rows = docs(200)
    c = load_corpus(hf_dc(write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "c"), 32)
    val = [r["text"] for r in rows if is_val_doc(r["text"] + SEPARATOR, 0.1)]
    train = [r["text"] for r in rows if not is_val_doc(r["text"] + SEPARATOR, 0.1)]
    assert 5 < len(val) < 40
    assert bytes(c.val) == "".join(t + SEPARATOR for t in val).encode()  # whole documents, in order
    assert bytes(c.train) == "".join(t + SEPARATOR for t in train).encode()
    assert c.tokenizer == "bytes" and c.vocab_size == 256 and c.eval_bytes_per_token(
        __import__("torch").zeros(2, 9, dtype=__import__("torch").long)) == 1.0
    other = load_corpus(hf_dc(tmp_path / "d.jsonl", tmp_path / "c2", val_fraction=0.2), 32)
    assert other.fingerprint != c.fingerprint  # the split rule is part of the fingerprint


def test_parquet_csv_arrow_and_jsonl_give_one_corpus(tmp_path: Path) -> None:
    rows = docs(120, seed=1)
    import pandas as pd

    df = pd.DataFrame(rows)
    df.to_parquet(tmp_path / "d.parquet")
    df.to_csv(tmp_path / "d.csv", index=False, quoting=csv.QUOTE_ALL)
    ds = datasets.Dataset.from_pandas(df)
    ds.save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    paths = [write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "d.parquet", tmp_path / "d.csv", arrow,
             tmp_path / "saved"]
    corpora = [load_corpus(hf_dc(p, tmp_path / f"c{i}"), 32) for i, p in enumerate(paths)]
    assert len({c.fingerprint for c in corpora}) == 1
    assert all(np.array_equal(c.train, corpora[0].train) and np.array_equal(c.val, corpora[0].val) for c in corpora)


def test_the_files_own_splits_are_used(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    d.mkdir()
    write_jsonl(d / "train.jsonl", docs(50, seed=2))
    val_rows = docs(8, seed=3)
    write_jsonl(d / "validation.jsonl", val_rows)
    c = load_corpus(hf_dc(d, tmp_path / "c"), 32)
    assert bytes(c.val) == "".join(r["text"] + SEPARATOR for r in val_rows).encode()
    saved = datasets.DatasetDict({"train": datasets.Dataset.from_list(docs(50, seed=2)),
                                  "validation": datasets.Dataset.from_list(val_rows)})
    saved.save_to_disk(str(tmp_path / "saved"))
    s = load_corpus(hf_dc(tmp_path / "saved", tmp_path / "c2"), 32)
    assert np.array_equal(s.val, c.val) and np.array_equal(s.train, c.train)


def test_hf_with_bpe_is_exact_and_cached(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", docs(200, seed=4))
    c = load_corpus(hf_dc(p, tmp_path / "c", tokenizer="bpe", vocab_size=300), 32)
    byte = load_corpus(hf_dc(p, tmp_path / "c"), 32)
    assert c.vocab_size == 300 and c.fingerprint.startswith(byte.fingerprint.removesuffix("/bytes") + "/bpe-300@")
    assert int(c.token_bytes[np.asarray(c.val)].sum()) == len(byte.val)  # exact bytes, not a mean


def test_a_cached_corpus_does_not_open_the_dataset(tmp_path: Path, monkeypatch) -> None:
    """A sweep job after the dry run: fingerprint memo, BPE and token cache all hit, `datasets` never opened."""
    p = write_jsonl(tmp_path / "d.jsonl", docs(100, seed=6))
    first = load_corpus(hf_dc(p, tmp_path / "c", tokenizer="bpe", vocab_size=300), 32)

    def refuse(*a, **kw):
        raise AssertionError("opened the dataset again")

    monkeypatch.setattr("harness.hf_data._load", refuse)
    again = load_corpus(hf_dc(p, tmp_path / "c", tokenizer="bpe", vocab_size=300), 32)
    assert again.fingerprint == first.fingerprint and np.array_equal(again.val, first.val)
    with pytest.raises(AssertionError, match="opened the dataset again"):  # a new tokenizer reads the text
        load_corpus(hf_dc(p, tmp_path / "c", tokenizer="bpe", vocab_size=320), 32)


def test_bad_hf_inputs(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", docs(60))
    with pytest.raises(HarnessError, match=r"no field 'body'; its fields are id, text"):
        load_corpus(hf_dc(p, tmp_path / "c", text_field="body"), 32)
    d = tmp_path / "split"
    d.mkdir()
    write_jsonl(d / "train.jsonl", docs(20))
    write_jsonl(d / "validation.jsonl", [{"id": 0, "text": ""}, {"id": 1, "text": None}])
    with pytest.raises(HarnessError, match="the val split of the dataset holds no document"):
        load_corpus(hf_dc(d, tmp_path / "c"), 32)
    with pytest.raises(HarnessError, match=r"the val split .* raise data.val_fraction"):
        load_corpus(hf_dc(write_jsonl(tmp_path / "one.jsonl", docs(1)), tmp_path / "c", val_fraction=0.0001), 32)
    with pytest.raises(HarnessError, match="holds int values, not text"):
        load_corpus(hf_dc(p, tmp_path / "c", text_field="id"), 32)
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(HarnessError, match=r"cannot read .* as a dataset"):
        load_corpus(hf_dc(tmp_path / "broken.jsonl", tmp_path / "c"), 32)
    with pytest.raises(HarnessError, match="does not exist"):
        load_corpus(hf_dc(tmp_path / "nope.jsonl", tmp_path / "c"), 32)
    with pytest.raises(HarnessError, match="fewer than one context window"):
        load_corpus(hf_dc(write_jsonl(tmp_path / "tiny.jsonl", docs(12)), tmp_path / "c"), 4096)
    assert not (tmp_path / "c" / "tokens").exists() or all(
        (k / "meta.json").exists() for k in (tmp_path / "c" / "tokens").iterdir())  # nothing half-written


def test_harness_train_hf_bpe_row(run_cli, tiny_overrides: list[str], tmp_path: Path) -> None:
    """The done-when command at test scale: data=hf + bpe through the console script, offline."""
    p = write_jsonl(tmp_path / "d.jsonl", docs(300, seed=5))
    over = [o for o in tiny_overrides if not o.startswith("data")]
    r = run_cli("harness-train", *over, "data=hf", f"data.path={p}", "data.tokenizer=bpe", "data.vocab_size=320",
                f"data.cache_dir={tmp_path / 'cache'}", f"results_dir={tmp_path / 'res'}")
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(csv.DictReader((tmp_path / "res" / "results.csv").read_text().splitlines()))
    assert row["tokenizer"].startswith("bpe-320@") and row["vocab_size"] == "320" and row["bpb_method"] == "exact"
    bad = run_cli("harness-train", *over, "data=hf", f"data.path={p}", "data.text_field=body",
                  f"data.cache_dir={tmp_path / 'cache'}", f"results_dir={tmp_path / 'res2'}")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: the dataset has no field")


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    """A broken file is named (alone or among good files), not its directory; a .txt is refused as not data."""
    broken = tmp_path / "d" / "broken.jsonl"
    broken.parent.mkdir()
    broken.write_text('{"text": "a"}\n{"text": broken\n')
    with pytest.raises(HarnessError, match=rf"cannot read '{re.escape(str(broken))}' as a dataset \(JSON parse error"):
        load_corpus(hf_dc(broken, tmp_path / "c"), 32)
    write_jsonl(tmp_path / "d" / "good.jsonl", docs(30))
    with pytest.raises(HarnessError, match=rf"cannot read '{re.escape(str(broken))}' as a dataset"):
        load_corpus(hf_dc(tmp_path / "d", tmp_path / "c"), 32)
    txt = tmp_path / "notes.txt"
    txt.write_text("plain text\n" * 50)
    with pytest.raises(HarnessError, match=rf"^'{re.escape(str(txt))}' is not a .jsonl/.json/.parquet/.csv/.arrow file; use data=text"):
        load_corpus(hf_dc(txt, tmp_path / "c"), 32)


def test_paths_with_glob_characters_that_exist_are_used_as_given(tmp_path: Path) -> None:
    rows = docs(80, seed=3)
    plain = load_corpus(hf_dc(write_jsonl(tmp_path / "plain.jsonl", rows), tmp_path / "c"), 32)
    odd = write_jsonl(tmp_path / "c[1].jsonl", rows)  # also a name `datasets` would read as a pattern
    assert bytes(load_corpus(hf_dc(odd, tmp_path / "c"), 32).val) == bytes(plain.val)
    d = tmp_path / "set [v2]"
    d.mkdir()
    write_jsonl(d / "a.jsonl", rows)
    assert bytes(load_corpus(hf_dc(d, tmp_path / "c"), 32).train) == bytes(plain.train)
    with pytest.raises(HarnessError, match="does not exist and, as a glob, matches no file"):
        load_corpus(hf_dc(tmp_path / "set [v3]", tmp_path / "c"), 32)
