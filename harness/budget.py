"""Budget calculator: a target compute C, or a model size N and token count D (C = 6ND, Kaplan et al. 2020;
Hoffmann et al. 2022), turned into GPU-hours and cost for a GPU's peak, a utilisation (MFU) and a price; with a
fits.json it adds the compute-optimal N, D and the predicted loss from both Chinchilla approaches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.analysis import Estimate, load_fits, predict_at_budget, predict_loss
from harness.analysis.load import cfg_get
from harness.errors import HarnessError


def _pos(cfg: Any, key: str) -> float | None:
    v = cfg_get(cfg, key)
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise HarnessError(f"{key}={v!r} is not a number; pass e.g. {key}=1e21") from None
    if not math.isfinite(x) or x <= 0:
        raise HarnessError(f"{key}={v!r} must be a positive number")
    return x


def gpu_cost(flops: float, peak_tflops: float, utilization: float, price_per_hour: float,
             n_gpus: int = 1) -> dict[str, float]:
    """GPU-hours = FLOPs / (peak x utilisation) / 3600; wall hours = GPU-hours / n_gpus; cost = GPU-hours x price."""
    rate = peak_tflops * 1e12 * utilization
    gpu_hours = flops / rate / 3600.0
    return {"gpu_hours": gpu_hours, "wall_hours": gpu_hours / n_gpus, "cost": gpu_hours * price_per_hour,
            "effective_tflops": rate / 1e12}


def _flops(cfg: Any) -> tuple[float, str, float | None, float | None]:
    """(FLOPs, where they came from, N, D): C= as given, or N= D= as 6ND (or flops= when given exactly)."""
    C, N, D, exact = _pos(cfg, "C"), _pos(cfg, "N"), _pos(cfg, "D"), _pos(cfg, "flops")
    if C is None and (N is None or D is None):
        raise HarnessError("give a target budget C=<FLOPs>, or a model size and token count N=<params> D=<tokens>")
    if C is not None and N is not None and D is not None:
        raise HarnessError("give either C=<FLOPs> or N= and D=, not both")
    if N is not None and D is not None:
        return (exact, "given", N, D) if exact is not None else (6.0 * N * D, "6ND", N, D)
    return float(C), "C", N, D


def _hardware(cfg: Any) -> dict[str, Any]:
    """gpu, peak_tflops, utilization, price_per_hour and n_gpus from cfg (a named gpu or explicit peak/price)."""
    gpus = cfg_get(cfg, "gpus", {}) or {}
    gpu = str(cfg_get(cfg, "gpu", "h100-sxm"))
    spec = gpus.get(gpu) if isinstance(gpus, Mapping) or hasattr(gpus, "get") else None
    peak = _pos(cfg, "peak_tflops")
    price = cfg_get(cfg, "price_per_hour")
    if spec is None and peak is None:
        raise HarnessError(f"unknown gpu={gpu!r}; pick one of {sorted(gpus)} or pass peak_tflops= and price_per_hour=")
    peak = peak if peak is not None else float(spec["peak_tflops"])
    price = float(price) if price is not None else float((spec or {}).get("price_per_hour", 0.0))
    if price < 0:
        raise HarnessError(f"price_per_hour={price} is negative")
    util = float(cfg_get(cfg, "utilization", 0.4))
    if not 0 < util <= 1:
        raise HarnessError(f"utilization={util} must be in (0, 1]; e.g. utilization=0.4")
    n_gpus = int(cfg_get(cfg, "n_gpus", 1))
    if n_gpus < 1:
        raise HarnessError(f"n_gpus={n_gpus} must be >= 1")
    return {"gpu": gpu, "peak_tflops": peak, "utilization": util, "price_per_hour": price, "n_gpus": n_gpus}


def plan_budget(cfg: Any) -> dict[str, Any]:
    """Pure function behind harness-plan-budget: FLOPs, GPU-hours, cost and (with fits=) the optimum at C."""
    flops, source, N, D = _flops(cfg)
    hw = _hardware(cfg)
    out: dict[str, Any] = {
        "flops": flops, "flops_source": source, "N": N, "D": D,
        "tokens_per_param": (D / N) if (N and D) else None, **hw,
        **gpu_cost(flops, hw["peak_tflops"], hw["utilization"], hw["price_per_hour"], hw["n_gpus"]),
    }
    fits_path = cfg_get(cfg, "fits")
    if fits_path:
        fits = load_fits(fits_path)
        out["optimum"] = predict_at_budget(fits, flops)
        if N is not None and D is not None:
            out["loss_at_N_D"] = predict_loss(fits, N, D)
    return out


def _g(x: Any) -> str:
    """A number with 4 significant digits, '-' when missing."""
    return "-" if x is None else f"{x:.4g}"


def _est(e: Estimate) -> str:
    """'value [lo, hi]' with 4 significant digits."""
    return f"{_g(e.value)} [{_g(e.lo)}, {_g(e.hi)}]"


def format_plan(plan: Mapping[str, Any]) -> str:
    """Human-readable summary printed by harness-plan-budget."""
    g = _g
    lines = [f"compute: {g(plan['flops'])} FLOPs ({plan['flops_source']})"]
    if plan.get("N"):
        lines.append(f"model: N={g(plan['N'])} params, D={g(plan['D'])} tokens ({g(plan['tokens_per_param'])} "
                     "tokens/param)")
    lines.append(f"gpu: {plan['gpu']} peak {g(plan['peak_tflops'])} TFLOP/s x utilization {plan['utilization']:g} = "
                 f"{g(plan['effective_tflops'])} TFLOP/s")
    lines.append(f"time: {g(plan['gpu_hours'])} GPU-hours; {g(plan['wall_hours'])} h wall on {plan['n_gpus']} GPU(s)")
    lines.append(f"cost: ${plan['cost']:,.2f} at ${plan['price_per_hour']:.2f}/GPU-hour")
    opt = plan.get("optimum")
    if opt:
        lines.append(f"compute-optimal at C={g(opt['C'])} ({g(opt['extrapolation'])}x the largest fitted budget):")
        for name in ("approach2", "approach3"):
            q = opt[name]
            lines.append(f"  {name}: N*={_est(q['N'])}  D*={_est(q['D'])}  loss={_est(q['loss'])}")
    if plan.get("loss_at_N_D"):
        lines.append(f"predicted loss at (N, D) (Approach 3): {_est(plan['loss_at_N_D'])}")
    return "\n".join(lines)
