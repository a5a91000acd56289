"""harness-plan-budget: FLOPs, GPU-hours, cost, and the optimum from a fits.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.analysis import canonicalize, fit_all
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.budget import format_plan, gpu_cost, inference_flops_per_token, plan_budget, render_plan
from harness.errors import HarnessError

LAW = Law()


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("budget", overrides=list(overrides))


def test_n_d_to_flops_hours_and_cost() -> None:
    plan = plan_budget(cfg("N=1e9", "D=2e10", "gpu=h100-sxm", "utilization=0.4"))
    assert plan["flops"] == pytest.approx(1.2e20) and plan["flops_source"] == "6ND"
    hours = 1.2e20 / (989e12 * 0.4) / 3600
    assert plan["gpu_hours"] == pytest.approx(hours) and plan["cost"] == pytest.approx(hours * 2.5)
    assert plan["tokens_per_param"] == pytest.approx(20.0)
    exact = plan_budget(cfg("N=1e9", "D=2e10", "flops=1.5e20", "n_gpus=8", "price_per_hour=1"))
    assert exact["flops_source"] == "given" and exact["wall_hours"] == pytest.approx(exact["gpu_hours"] / 8)
    assert exact["cost"] == pytest.approx(exact["gpu_hours"])


def test_gpu_cost_arithmetic() -> None:
    c = gpu_cost(3.6e15, peak_tflops=1.0, utilization=0.5, price_per_hour=2.0, n_gpus=2)
    assert c == {"gpu_hours": 2.0, "wall_hours": 1.0, "cost": 4.0, "effective_tflops": 0.5}


def test_budget_with_fits_gives_the_optimum(tmp_path: Path) -> None:
    df = canonicalize(isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=7, noise=0.003, seed=1))
    fits = fit_all(df, {"bootstrap": 30})
    (tmp_path / "fits.json").write_text(fits.to_json())
    fits.save_samples(tmp_path / "bootstrap_samples.npz")
    plan = plan_budget(cfg("C=1e22", f"fits={tmp_path / 'fits.json'}", "gpu=a100-80gb"))
    for name in ("approach2", "approach3"):
        q = plan["optimum"][name]
        assert abs(q["N"].value / LAW.n_opt(1e22) - 1) < 0.3 and q["N"].lo < q["N"].value < q["N"].hi
    text = format_plan(plan)
    assert "a100-80gb" in text and "approach3: N*=" in text
    nd = plan_budget(cfg("N=1e9", "D=2e10", f"fits={tmp_path}"))
    assert abs(nd["loss_at_N_D"].value / LAW.loss(1e9, 2e10) - 1) < 0.02
    assert "predicted loss at (N, D) (Approach 3): " in format_plan(nd)
    # Approach 2 at (N, D): its frontier at C = 6ND raised to N (1e9 is ~0.6x that C's optimum): the law's loss
    assert abs(nd["loss_at_N_D_approach2"].value / LAW.loss(1e9, 2e10) - 1) < 0.02
    assert nd["loss_at_N_D_approach2"].value > nd["optimum"]["approach2"]["loss"].value
    assert "predicted loss at (N, D) (Approach 2, its frontier raised" in format_plan(nd)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ([], "give a target budget"),
        (["C=1e21", "N=1e9", "D=1e10"], "not both"),
        (["C=-5"], "positive"),
        (["C=1e21", "gpu=tpu-v9"], "unknown gpu"),
        (["C=1e21", "utilization=1.5"], "utilization"),
        (["C=1e21", "fits=/nonexistent/fits.json"], "does not exist"),
    ],
)
def test_bad_requests(overrides: list[str], match: str) -> None:
    with pytest.raises(HarnessError, match=match):
        plan_budget(cfg(*overrides))


def test_custom_gpu_peak() -> None:
    plan = plan_budget(cfg("C=3.6e15", "gpu=mine", "peak_tflops=1", "utilization=1", "price_per_hour=3"))
    assert plan["gpu_hours"] == pytest.approx(1.0) and plan["cost"] == pytest.approx(3.0)


DEMO = Path(__file__).resolve().parents[1] / "results" / "demo" / "fits.json"


def test_strategies_and_lifetime_on_demo_fits() -> None:
    plan = plan_budget(cfg("C=1e23", f"fits={DEMO}", "inference_tokens=1e13", "context=4096", "sizes=[7e9]"))
    rows = plan["strategies"]
    assert [r["strategy"] for r in rows][-1] == "N=7e+09" and len(rows) == 7
    assert all(r["gpu_hours"] == pytest.approx(plan["gpu_hours"]) for r in rows)
    assert all(r["inference_flops_per_token"] > 2 * r["N"].value for r in rows)  # attention at 4096 context
    assert plan["extrapolation"] > 100 and "past 100x" in plan["warnings"][0]
    assert plan["lifetime"]["savings"] > 0
    text = render_plan(plan)
    for needle in ("over-trained x10", "Kaplan 2020", "lifetime-optimal (same loss)", "WARNING", "laws:",
                   "Sardana et al. 2024", "$ per 1M tokens"):
        assert needle in text
    assert "| compute-optimal (Approach 3) |" in render_plan(plan, "markdown")
    data = json.loads(render_plan(plan, "json"))
    assert data["strategies"][1]["loss"]["lo"] is not None and data["lifetime"]["curve"]["N"]


def test_inference_cost_per_token() -> None:
    assert inference_flops_per_token(1e9, None) == 2e9
    n_layer = (1e9 / (12 * 128**2)) ** (1 / 3)
    assert inference_flops_per_token(1e9, 2048, 128) == pytest.approx(2e9 + 2 * n_layer * 2048 * 128 * n_layer)


def test_bad_allocation_requests(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="positive"):
        plan_budget(cfg("C=1e23", f"fits={DEMO}", "inference_tokens=1e13", "target_loss=0"))
    with pytest.raises(HarnessError, match="inference_tokens"):
        plan_budget(cfg("C=1e23", f"fits={DEMO}", "inference_tokens=-1"))
    with pytest.raises(HarnessError, match="need a fit"):
        plan_budget(cfg("C=1e23", "inference_tokens=1e12"))
    with pytest.raises(HarnessError, match="inference_tokens"):
        plan_budget(cfg("C=1e23", f"fits={DEMO}", f"plot={tmp_path / 'x.png'}"))
    with pytest.raises(HarnessError, match="format"):
        render_plan(plan_budget(cfg("C=1e21")), "yaml")
    d = json.loads(DEMO.read_text())
    d["approach3"] = {}
    (tmp_path / "fits.json").write_text(json.dumps(d))
    with pytest.raises(HarnessError, match="no Approach 3"):
        plan_budget(cfg("C=1e23", f"fits={tmp_path / 'fits.json'}"))


def test_cli_writes_the_lifetime_plot(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "from harness.cli import plan_budget_main; plan_budget_main()",
                          "C=1e22", f"fits={DEMO}", "inference_tokens=1e12", f"plot={tmp_path / 'life.png'}",
                          "format=markdown"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "life.png").stat().st_size > 1000 and "| lifetime-optimal (same loss) |" in out.stdout
    bad = subprocess.run([sys.executable, "-c", "from harness.cli import plan_budget_main; plan_budget_main()",
                          "C=1e22", f"fits={DEMO}", "inference_tokens=-5"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "error:" in bad.stderr + bad.stdout
