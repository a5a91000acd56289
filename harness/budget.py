"""Budget calculator: a target compute C, or a model size N and token count D (C = 6ND, Kaplan et al. 2020;
Hoffmann et al. 2022), turned into GPU-hours and cost for a GPU's peak, a utilisation (MFU) and a price; with a
fits.json it adds the compute-optimal N, D and the predicted loss from both Chinchilla approaches, a table of
strategies for the same compute (over-trained, Kaplan et al. 2020-style, given sizes) with inference cost, and
with inference_tokens= the lifetime-optimal size (Sardana et al. 2024, "Beyond Chinchilla-Optimal"). The maths
lives in harness.analysis.allocation; here are hardware costs and the text, markdown and JSON renderings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.analysis import Estimate, Fits, approach2_loss_at, load_fits, predict_at_budget, predict_loss
from harness.analysis.allocation import EXTRAPOLATION_WARN, KAPLAN_EXPONENT, OVERTRAIN, law3, lifetime_plan, strategies
from harness.analysis.fits import to_jsonable
from harness.analysis.load import cfg_get
from harness.errors import HarnessError


def _pos(cfg: Any, key: str, zero_ok: bool = False) -> float | None:
    """cfg[key] as a finite float > 0 (>= 0 with zero_ok), or None when unset; one error line otherwise."""
    v = cfg_get(cfg, key)
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise HarnessError(f"{key}={v!r} is not a number; pass e.g. {key}=1e21") from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not zero_ok):
        raise HarnessError(f"{key}={v!r} must be {'>= 0' if zero_ok else 'a positive number'}")
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
    infer_util = float(cfg_get(cfg, "inference_utilization") or util)
    if not 0 < infer_util <= 1:
        raise HarnessError(f"inference_utilization={infer_util} must be in (0, 1]; e.g. inference_utilization=0.2")
    return {"gpu": gpu, "peak_tflops": peak, "utilization": util, "price_per_hour": price, "n_gpus": n_gpus,
            "inference_utilization": infer_util}


def inference_flops_per_token(N: float, context: float | None, aspect_ratio: float = 128.0) -> float:
    """Forward FLOPs per generated token: 2N plus attention 2 n_layer n_ctx d_model at full context (Kaplan et al.
    2020, Table 1), the shape taken from N = 12 n_layer d_model^2 with d_model = aspect_ratio x n_layer."""
    if not context:
        return 2.0 * N
    n_layer = (N / (12.0 * aspect_ratio**2)) ** (1.0 / 3.0)
    return 2.0 * N + 2.0 * n_layer * float(context) * aspect_ratio * n_layer


def _costed(row: dict[str, Any], hw: Mapping[str, Any], context: float | None, aspect: float) -> dict[str, Any]:
    """A strategy row with training GPU-hours and cost, inference FLOPs/token and USD per 1M generated tokens."""
    train = gpu_cost(row["train_flops"], hw["peak_tflops"], hw["utilization"], hw["price_per_hour"], hw["n_gpus"])
    fpt = inference_flops_per_token(row["N"].value, context, aspect)
    serve = gpu_cost(fpt * 1e6, hw["peak_tflops"], hw["inference_utilization"], hw["price_per_hour"])
    return {**row, "gpu_hours": train["gpu_hours"], "cost": train["cost"], "inference_flops_per_token": fpt,
            "cost_per_1M_tokens": serve["cost"]}


def _allocations(cfg: Any, fits: Fits, C: float, hw: Mapping[str, Any]) -> dict[str, Any]:
    """Strategies at C with costs, the extrapolation multiple and (with inference_tokens=) the lifetime plan."""
    inference_tokens = _pos(cfg, "inference_tokens", zero_ok=True)
    context, aspect = _pos(cfg, "context"), _pos(cfg, "aspect_ratio") or 128.0
    sizes = [float(x) for x in (cfg_get(cfg, "sizes") or [])]
    overtrain = [float(x) for x in (cfg_get(cfg, "overtrain") or OVERTRAIN)]
    rows = strategies(fits, C, sizes, overtrain, float(cfg_get(cfg, "kaplan_exponent") or KAPLAN_EXPONENT))
    largest = max(b["C"] for b in fits.budgets)
    out: dict[str, Any] = {"strategies": [_costed(r, hw, context, aspect) for r in rows],
                           "extrapolation": C / largest, "largest_fitted_C": largest, "warnings": []}
    if C / largest > EXTRAPOLATION_WARN:
        out["warnings"].append(f"C is {C / largest:.3g}x the largest fitted budget ({largest:.3g} FLOPs), past "
                               f"{EXTRAPOLATION_WARN:g}x: every number below is a long extrapolation of the fit")
    if cfg_get(cfg, "plot") and inference_tokens is None:
        raise HarnessError("plot= draws the lifetime curve: pass inference_tokens=<tokens served> too")
    if inference_tokens is not None:
        out["lifetime"] = lifetime_plan(fits, C, inference_tokens, _pos(cfg, "target_loss"))
    return out


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
        law3(fits)  # a clear error when the file has no Approach 3 fit
        out["optimum"] = predict_at_budget(fits, flops)
        if N is not None and D is not None:
            out["loss_at_N_D"] = predict_loss(fits, N, D)
            out["loss_at_N_D_approach2"] = approach2_loss_at(fits, flops, N)
        out.update(_allocations(cfg, fits, flops, hw))
    elif cfg_get(cfg, "inference_tokens") is not None or cfg_get(cfg, "sizes"):
        raise HarnessError("strategies and inference_tokens= need a fit: pass fits=<fits.json from harness-analyze>")
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
    if plan.get("loss_at_N_D_approach2"):
        lines.append(f"predicted loss at (N, D) (Approach 2, its frontier raised along the IsoFLOP parabola to N): "
                     f"{_est(plan['loss_at_N_D_approach2'])}")
    return "\n".join(lines)


STRATEGY_COLUMNS = ("strategy", "N", "D", "tokens/param", "loss [interval]", "penalty", "GPU-hours", "cost $",
                    "infer FLOPs/token", "$ per 1M tokens")
LIFETIME_COLUMNS = ("model", "N", "D", "tokens/param", "loss [interval]", "train FLOPs", "inference FLOPs",
                    "total FLOPs")


def _strategy_rows(plan: Mapping[str, Any]) -> list[list[str]]:
    """The strategies table as strings, one list per row in STRATEGY_COLUMNS order."""
    return [[r["strategy"], _g(r["N"].value), _g(r["D"].value), _g(r["tokens_per_param"]), _est(r["loss"]),
             f"+{r['penalty']:.4f} ({r['penalty_pct']:+.2f}%)", _g(r["gpu_hours"]), f"{r['cost']:,.0f}",
             _g(r["inference_flops_per_token"]), f"{r['cost_per_1M_tokens']:.4g}"] for r in plan["strategies"]]


def _lifetime_rows(life: Mapping[str, Any]) -> list[list[str]]:
    """The lifetime table as strings: compute-optimal, lifetime-optimal and best loss at the same total."""
    names = {"compute_optimal": "compute-optimal (same loss)", "lifetime_optimal": "lifetime-optimal (same loss)",
             "fixed_total": "best loss, same total compute"}
    return [[label, _g(m["N"]), _g(m["D"]), _g(m["tokens_per_param"]), _est(m["loss_estimate"]),
             _g(m["train_flops"]), _g(m["inference_flops"]), _g(m["total_flops"])]
            for key, label in names.items() for m in [life[key]]]


def _table(columns: Sequence[str], rows: list[list[str]], markdown: bool) -> list[str]:
    """A padded plain-text table, or a GitHub markdown table."""
    if markdown:
        return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + \
               ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(list(columns)), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def _lifetime_lines(life: Mapping[str, Any], markdown: bool) -> list[str]:
    """The lifetime section (Sardana et al. 2024): target, table, savings and the law behind it."""
    co, lo = life["compute_optimal"], life["lifetime_optimal"]
    return [
        "", f"lifetime sizing for {_g(life['inference_tokens'])} inference tokens at target loss "
        f"{life['target_loss']:.4g} (Sardana et al. 2024; {life['law']}):", "",
        *_table(LIFETIME_COLUMNS, _lifetime_rows(life), markdown), "",
        f"lifetime-optimal: N {lo['N'] / co['N']:.3g}x, D {lo['D'] / co['D']:.3g}x the compute-optimal model; saves "
        f"{100 * life['savings']:.2f}% of total compute ({_g(co['total_flops'] - lo['total_flops'])} FLOPs)",
        f"same total compute, best size: loss {life['fixed_total']['loss']:.4g} "
        f"({life['loss_gain_at_fixed_total']:.3g} below the compute-optimal model's)",
    ]


def _allocation_lines(plan: Mapping[str, Any], markdown: bool) -> list[str]:
    """Strategies table, the law behind each row, extrapolation warnings and the lifetime section."""
    lines = ["", f"strategies at C={_g(plan['flops'])} FLOPs ({_g(plan['extrapolation'])}x the largest fitted "
             f"budget {_g(plan['largest_fitted_C'])}); loss from Approach 3's L(N, D) with bootstrap interval, "
             "penalty vs Approach 3's optimum; inference on the same GPU at "
             f"utilization {plan['inference_utilization']:g}:", ""]
    lines += _table(STRATEGY_COLUMNS, _strategy_rows(plan), markdown)
    lines += ["", "laws:", *(f"  {r['strategy']}: {r['law']}" for r in plan["strategies"])]
    lines += [f"WARNING: {w}" for w in plan.get("warnings", [])]
    if plan.get("lifetime"):
        lines += _lifetime_lines(plan["lifetime"], markdown)
    return lines


def render_plan(plan: Mapping[str, Any], fmt: str = "text") -> str:
    """harness-plan-budget output: format=text (readable), format=json (machine) or format=markdown (to paste)."""
    if fmt == "json":
        return json.dumps(to_jsonable(plan), indent=2)
    if fmt not in ("text", "markdown"):
        raise HarnessError(f"format={fmt!r}: use format=text, format=json or format=markdown")
    text = format_plan(plan)
    if fmt == "markdown":
        text = "\n".join(f"- {line}" if line and not line.startswith(" ") else line for line in text.splitlines())
    if plan.get("strategies"):
        text += "\n" + "\n".join(_allocation_lines(plan, fmt == "markdown"))
    return text
