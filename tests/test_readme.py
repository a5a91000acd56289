"""README and CI agree: .ci/run runs exactly the README's test command, and the README's commands exist."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _last_command(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return lines[-1]


def test_ci_runs_the_readme_test_command() -> None:
    command = _last_command(ROOT / ".ci" / "run")
    assert command.endswith("python -m pytest")
    assert f"\n{command}\n" in (ROOT / "README.md").read_text()


def test_readme_scripts_exist_and_are_executable() -> None:
    readme = (ROOT / "README.md").read_text()
    for script in ("setup.sh", "sweep.sh", "analyze.sh", "bench.sh", "slurm_local.sh"):
        assert f"scripts/{script}" in readme
        path = ROOT / "scripts" / script
        assert path.exists() and path.stat().st_mode & 0o111, script


def test_demo_output_is_committed_with_its_report() -> None:
    demo = ROOT / "results" / "demo"
    for name in ("results.csv", "fits.json", "report.md", "isoflop.png", "frontier.png", "optimal_nd.png",
                 "approach3.png"):
        assert (demo / name).stat().st_size > 0, name
    assert "## Held-out validation" in (demo / "report.md").read_text()
