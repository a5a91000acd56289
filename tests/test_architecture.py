"""The code's shape as README "Architecture" states it: floors imported one way only, no cycles, and functions
and modules small enough to read in one sitting (radon complexity, line counts)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"

# Floors, lowest first. A module may import from a lower floor only; modules of one package on the same floor
# (harness.analysis.*) may also import each other, as long as there is no cycle. A new module must be placed
# here (and in README "Architecture") before the test passes.
FLOORS: dict[str, int] = {
    "harness": 0, "harness.errors": 0, "harness.fsutil": 0, "harness.shape": 0,
    "harness.model": 1, "harness.tokenize": 1, "harness.hf_data": 1, "harness.runtime": 1, "harness.lr_rule": 1, "harness.figures": 1, "harness.confcheck": 1,
    "harness.trackers": 1, "harness.schedule": 1, "harness.ngram": 1,
    "harness.counting": 2, "harness.data": 2, "harness.ensemble": 2,
    "harness.plan": 3,
    "harness.results": 4, "harness.repetition": 4, "harness.curves": 4, "harness.ladder": 4, "harness.chain": 4,
    "harness.pack": 4,
    "harness.train": 5,
    "harness.analysis": 6, "harness.chain_run": 6, "harness.pack_run": 6,
    "harness.report": 7, "harness.plots": 7, "harness.watch": 7, "harness.budget": 7, "harness.lr_report": 7,
    "harness.table_report": 7, "harness.track_fits": 7, "harness.adapt": 7,
    "harness.sweep": 8, "harness.validate": 8, "harness.analyze": 8, "harness.tune": 8,
    "harness.ladder_validate": 8,
    "harness.cli": 9, "harness.live": 9,
}
MAX_FUNCTION_LINES = 60
MAX_COMPLEXITY = 15
MAX_MODULE_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _floor(module: str) -> int:
    """The floor of a module: its own entry, else its package's (harness.analysis.fits -> harness.analysis)."""
    name = module
    while name not in FLOORS:
        if "." not in name:
            raise KeyError(module)
        name = name.rsplit(".", 1)[0]
    return FLOORS[name]


def _imports(module: str, path: Path) -> set[str]:
    """Every harness module this file imports, at top level or inside functions."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    mods = _modules()
    return {m for m in found if m in mods and m != module}


def test_every_module_has_a_floor() -> None:
    missing = []
    for module in _modules():
        try:
            _floor(module)
        except KeyError:
            missing.append(module)
    assert not missing, f"place {missing} in FLOORS here and in README 'Architecture'"


def test_imports_point_down_only() -> None:
    bad = []
    for module, path in _modules().items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for target in _imports(module, path):
            same_package = package != "harness" and target.startswith(package + ".")
            if target != "harness" and (_floor(target) > _floor(module)
                                        or (_floor(target) == _floor(module) and not same_package)):
                bad.append(f"{module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    mods = _modules()
    graph = {m: _imports(m, p) - {"harness"} for m, p in mods.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(t):], t]))
            if t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_floor_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an analysis module importing the report is reported as pointing up."""
    fake = tmp_path / "fits.py"
    fake.write_text("from harness.report import write_report\nimport harness.errors\n")
    assert _imports("harness.analysis.fits", fake) >= {"harness.report"}
    assert _floor("harness.report") > _floor("harness.analysis.fits")


def test_functions_are_short_and_simple() -> None:
    too_big = []
    for module, path in _modules().items():
        for block in cc_visit(path.read_text()):
            for b in getattr(block, "methods", None) or [block]:  # a class counts through its methods
                lines = b.endline - b.lineno + 1
                if b.complexity > MAX_COMPLEXITY or lines > MAX_FUNCTION_LINES:
                    too_big.append(f"{module}.{b.name}: complexity {b.complexity}, {lines} lines")
    assert not too_big, "\n".join(too_big)


def test_modules_are_short() -> None:
    long = [f"{m}: {n} lines" for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, "\n".join(long)


def test_readme_architecture_lists_every_floor() -> None:
    section = (ROOT / "README.md").read_text().split("## Architecture", 1)[-1].split("\n## ", 1)[0]
    missing = [m for m in FLOORS if m != "harness" and f"`{m.removeprefix('harness.')}" not in section]
    assert not missing, f"README 'Architecture' does not mention {missing}"
