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


def test_shipped_lr_rule_is_the_committed_lr_sweep_fit() -> None:
    """conf/lr_rules/stdlib_family.json (what train.lr=rule reads by default) is results/lr's fit, and the
    committed demo was trained with it."""
    import csv

    from harness.lr_rule import DEFAULT_PATH, load_rule

    lr = ROOT / "results" / "lr"
    assert (lr / "lr_rule.json").read_bytes() == DEFAULT_PATH.read_bytes()
    for name in ("results.csv", "report.md", "lr_curves.png", "lr_rule.png"):
        assert (lr / name).stat().st_size > 0, name
    with open(ROOT / "results" / "demo" / "results.csv") as fh:
        tags = {row["lr_rule"] for row in csv.DictReader(fh)}
    assert tags == {load_rule("default").tag}
