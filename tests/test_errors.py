"""The bad-input matrix: every console script answers a mistake with exit 2, one `error:` line, no traceback,
no numpy repr, no warning noise, and writes nothing (issue #17)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import harness.cli
from harness.confcheck import check_keys, composition_message
from harness.data import load_corpus
from harness.errors import HarnessError

CONF = Path(harness.cli.CONF_DIR)
# (script, overrides with {tmp} for the test's directory, words the error line must hold)
MATRIX = [
    ("harness-train", ["model=giant"], ["model=giant", "nano"]),
    ("harness-sweep", ["sweep=nosuch"], ["sweep=nosuch", "demo"]),
    ("harness-train", ["train.learning_rate=1e-3"], ["train.learning_rate", "lr"]),
    ("harness-count", ["bugdet=1e11"], ["bugdet", "did you mean 'budget'"]),
    ("harness-train", ["+train.learning_rate=1e-3", "results_dir={tmp}/res"], ["train.learning_rate", "nothing reads it"]),
    ("harness-validate", ["+analysis.isoflop.exclude_edg=false", "results_dir={tmp}/res"], ["exclude_edge"]),
    ("harness-count", ["seed=abc"], ["seed", "number"]),
    ("harness-analyze", ["results={tmp}/results.csv", "bootstrap.resamples=50"], ["'bootstrap' is a single value",
                                                                             "bootstrap=<value>"]),
    ("harness-validate", ["print=plan", "results_dir={tmp}/res"], ["print=plan", "harness-sweep"]),
    ("harness-sweep", ["sweep.adapt.extra_per_round=0", "results_dir={tmp}/res"], ["sweep.adapt.extra_per_round=0"]),
    ("harness-count", ["budget=[1"], ["budget=[1"]),
    ("harness-train", ["model=nano", "results_dir={tmp}/afile/res"], ["afile", "not a directory"]),
    ("harness-train", ["model.pos_emb=alibi", "model=nano", "results_dir={tmp}/res"], ["pos_emb='alibi'", "rope"]),
    ("harness-analyze", ["results={tmp}/results.csv", "out={tmp}/afile"], ["afile"]),
    ("harness-analyze", ["results={tmp}/results.csv", "parametric.outliers=drop"], ["outliers='drop'", "keep"]),
    ("harness-train", ["model=nano", "data=text", "data.path={tmp}/bin.dat", "results_dir={tmp}/res"], ["bin.dat", "not a text"]),
]


def _setup(tmp: Path) -> None:
    (tmp / "afile").write_text("x")
    (tmp / "bin.dat").write_bytes(bytes(range(256)) * 64)
    rows = ["params_total,tokens,flops,val_bpb,budget_flops"]
    rows += [f"{n},{c / (6 * n):.0f},{c},{2 + (i - 2) ** 2 / 10},{c}"
             for c in (3e12, 1e13, 3e13) for i, n in enumerate([1e5, 2e5, 4e5, 8e5, 1.6e6])]
    (tmp / "results.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize(("script", "args", "words"), MATRIX, ids=[f"{s}:{a[0]}" for s, a, _ in MATRIX])
def test_bad_input_one_error_line(run_cli, tmp_path: Path, script: str, args: list[str], words: list[str]) -> None:
    _setup(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli(script, *(a.format(tmp=tmp_path) for a in args))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert all(w in errors[0] for w in words), errors[0]
    for noise in ("Traceback", "np.float64", "RuntimeWarning", "HYDRA_FULL_ERROR"):
        assert noise not in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) in (before, sorted([*before, "cwd"])), "something was written"
    assert not (tmp_path / "cwd").exists() or not any((tmp_path / "cwd").iterdir())


def test_help_and_cfg_still_work(run_cli) -> None:
    proc = run_cli("harness-count", "model=nano", "--cfg", "job")
    assert proc.returncode == 0 and "d_model: 64" in proc.stdout, proc.stderr


def test_unknown_key_suggestion_pure() -> None:
    cfg = OmegaConf.create({"budget": 1e12, "seed": 0, "bugdet": 3, "model": {}, "data": {}, "train": {}})
    with pytest.raises(HarnessError, match="did you mean 'budget'"):
        check_keys(cfg, CONF, "run", {"model": None, "data": None, "train": None})


def test_missing_option_message() -> None:
    from hydra.errors import MissingConfigException

    msg = composition_message(MissingConfigException("x", "model/gaint", ["nano", "giant2", "micro"]))
    assert msg.startswith("unknown model=gaint") and "giant2" in msg


def test_binary_files_in_a_directory(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"t{i}.txt").write_text("hello scaling law\n" * 400)
    (corpus / "z.txt").write_bytes(b"\0\x01\x02" * 1000)
    dc = OmegaConf.create({"kind": "text", "path": str(corpus), "pattern": "*.txt", "val_fraction": 0.3,
                           "cache_dir": str(tmp_path / "cache")})
    with pytest.raises(HarnessError, match=r"1 of 5 files are not text \(first: .*z\.txt"):
        load_corpus(dc, 8)
    dc.skip_binary = True
    assert "4 files" in load_corpus(dc, 8).description


def test_single_file_wording(tmp_path: Path) -> None:
    f = tmp_path / "one.txt"
    f.write_text("")
    dc = OmegaConf.create({"kind": "text", "path": str(f), "val_fraction": 0.1, "cache_dir": str(tmp_path / "c")})
    with pytest.raises(HarnessError) as e:
        load_corpus(dc, 8)
    assert "1 files" not in str(e.value) and "one.txt (0 bytes)" in str(e.value)


def test_sweep_sh_refuses_a_dry_run_flag(tmp_path: Path) -> None:
    """scripts/sweep.sh print=table would otherwise train the whole sweep: one error line, exit 2, nothing written."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "sweep.sh"
    proc = subprocess.run(["bash", str(script), "print=table", f"results_dir={tmp_path}/res"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "print=table" in errors[0] and "harness-sweep" in errors[0], proc.stderr
    assert proc.stdout == "" and not (tmp_path / "res").exists()
