"""Shared fixtures: tiny corpora in tmp dirs and composed Hydra configs for fast CPU runs."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import harness.cli
from harness.data import _is_val_file

# Everything a test run needs to be small and quick: a nano model at context 32, batches of 4, few eval
# windows, one thread (the box is shared), no progress bar.
TINY = [
    "model=nano",
    "model.seq_len=32",
    "train.batch_size=4",
    "train.eval_windows=8",
    "train.progress=false",
    "train.threads=1",
    "train.checkpoint_every_s=0",
]
# A tiny sweep: 2 budgets x 3 family sizes (d_model 8..48, 5K to 82K params) at context 32, batch 16; plans
# print instantly and each of the six runs trains 15-200 steps in well under 3 s.
SWEEP_SMALL = [
    "sweep.budgets=[1e9,2e9]",
    "sweep.sizes_per_budget=3",
    "sweep.d_model_min=8",
    "sweep.d_model_max=48",
    "sweep.min_steps=5",
    "sweep.tokens_per_param=4",
    "sweep.spread=16",
    "model.seq_len=32",
    "train.batch_size=16",
    "sweep.adapt.max_rounds=0",  # the grid only: adaptive rounds (harness.adapt) are tested in tests/test_adapt.py
    "train.schedule=cosine",  # independent runs (the demo's WSD chains are tested in tests/test_chain.py)
    "train.lr_rule=default",  # the rule fitted on cosine runs (its D-dependence is what test_chain's splits need)
    "sweep.holdout.multiples=null",  # one held-out run at sweep.holdout.multiple (ladders: tests/test_validate.py)
]
# 3e9 FLOPs buy 127 sequences of nano at context 32 (737,280 FLOPs/token): 32 optimizer steps.
BUDGET = 3e9

_WORDS = ["the", "of", "and", "to", "in", "is", "for", "that", "with", "as", "on", "by", "scaling", "law", "model", "token", "loss", "budget", "compute", "data", "train", "val", "curve", "fit", "power", "exponent", "layer", "head", "width", "depth", "optimum", "frontier", "parabola", "python", "def", "return"]


def _text(rng: random.Random, n_words: int) -> str:
    lines, line = [], []
    for _ in range(n_words):
        line.append(rng.choice(_WORDS))
        if len(line) >= 12:
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    return "\n".join(lines) + "\n"


def text_dir_names(val_fraction: float = 0.05, n_val: int = 3, n_train: int = 12) -> tuple[list[str], list[str]]:
    """File names chosen so the by-file split holds exactly n_val val files and n_train train files."""
    val, train = [], []
    i = 0
    while len(val) < n_val or len(train) < n_train:
        name = f"doc{i:04d}.txt"
        if _is_val_file(name, val_fraction):
            if len(val) < n_val:
                val.append(name)
        elif len(train) < n_train:
            train.append(name)
        i += 1
    return train, val


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of 15 small .txt files (12 train, 3 val at val_fraction=0.05), ~90 KB in all."""
    root = tmp_path_factory.mktemp("text_corpus")
    rng = random.Random(1234)
    train, val = text_dir_names()
    for name in sorted(train + val):
        (root / name).write_text(_text(rng, 1000))
    return root


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], object]:
    """load_benchmark(name) -> benchmarks/<name>.py as a module (benchmarks/ is not a package; it is put on sys.path
    so a benchmark can import its neighbours, e.g. tiny.py its nanogpt_ref)."""
    import importlib.util

    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(bench_dir) not in sys.path:
        sys.path.insert(0, str(bench_dir))

    def _load(name: str) -> object:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", bench_dir / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return _load


@pytest.fixture
def compose_cfg() -> Callable[..., object]:
    """compose_cfg(*overrides) -> a DictConfig of conf/run.yaml with those overrides."""
    from hydra import compose, initialize_config_dir

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=harness.cli.CONF_DIR, version_base=None):
            return compose("run", overrides=list(overrides))

    return _compose


@pytest.fixture
def tiny_cfg(compose_cfg, tiny_overrides: list[str], tmp_path: Path) -> Callable[..., object]:
    """tiny_cfg(*extra) -> a tiny text-corpus run config writing to tmp_path/results (extra overrides last)."""

    def _cfg(*extra: str):
        return compose_cfg(*tiny_overrides, f"results_dir={tmp_path / 'results'}", *extra)

    return _cfg


@pytest.fixture
def restore_torch_threads():
    """train.threads=1 sets torch's process-wide thread count; put it back afterwards."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_overrides(text_corpus: Path, tmp_path: Path) -> list[str]:
    """The overrides of tiny_cfg, for passing to a console script."""
    return [
        *TINY,
        "data=text",
        f"data.path={text_corpus}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"budget={BUDGET}",
    ]


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """run_cli(script, *args, cwd=...) runs a console script of this venv (default cwd: a fresh dir)."""

    def _run(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        exe = Path(sys.executable).parent / script
        if not exe.exists():
            pytest.skip(f"console script {script} not installed beside {sys.executable}")
        if cwd is None:
            cwd = tmp_path / "cwd"
            cwd.mkdir(exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("HYDRA_FULL_ERROR", None)
        return subprocess.run(
            [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )

    return _run


@pytest.fixture(scope="session")
def stdlib_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir for the stdlib corpus per session (built once, ~1 s, ~31 MB)."""
    return tmp_path_factory.mktemp("stdlib_cache")
