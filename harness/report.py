"""Report stage: report.md and fits.json (with the bootstrap samples and the plots of harness.plots) from a
Fits object. Nothing is fitted here. Every file is replaced atomically (harness.fsutil.atomic_write), the old
fits.json is removed first and the new one written last, so an interrupted write never leaves a set of outputs
that looks complete.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from harness.analysis import Estimate, Fits
from harness.analysis.approach3 import form_choice_text, form_rule_text, formula_of
from harness.analysis.estimate import format_cell, format_estimate, format_flag, format_number, markdown_table
from harness.analysis.noise import noise_floor, prediction_interval, within_noise
from harness.analysis.outliers import outlier_lines
from harness.figures import png_bytes, stale_outputs
from harness.fsutil import publish


class RenderedPlot(Protocol):
    """What write_report needs of a plot (harness.plots.Plot): file name, caption, PNG bytes."""

    name: str
    caption: str
    png: bytes


fmt, fmt_est, _table = format_number, format_estimate, markdown_table  # the names this module and cli use


LIMITATIONS = [
    "- Intervals reflect run-to-run noise only (the bootstrap over runs); they do not cover a wrong functional form, "
    "hyperparameters that are off at some sizes, or a different corpus.",
    "- Parabola (Approach 2) optima are biased when the size grid is off-centre or narrow; compare with "
    "Approach 3, and prefer budgets whose optimum is well inside the sampled sizes.",
    "- Exponents depend on the parameter convention (total / non-embedding / scaling) and on how FLOPs are "
    "counted; compare laws only under the same conventions.",
    "- Extrapolations far beyond the largest budget widen quickly; check one with a held-out run.",
]


SCHEME_TEXT = {"runs": "runs drawn with replacement",
               "bayesian": "Bayesian bootstrap: Dirichlet weights on every run (Rubin 1981)"}


def _inputs_section(fits: Fits) -> list[str]:
    """Where the table came from, what was fitted, and how the intervals were made."""
    d, inp = fits.data, fits.inputs
    lvl = round(100 * float(fits.bootstrap.get("level", 0.95)))
    excl = ", ".join(f"{k}: {v}" for k, v in d["excluded"].items()) or "none"
    return [
        f"Source: `{inp.get('source') or 'DataFrame'}` (sha256 `{(inp.get('sha256') or '-')[:16]}`, data "
        f"fingerprint {', '.join(inp.get('data_fingerprint') or []) or '-'}, fitted rows hash `{d['data_hash']}`).",
        f"Rows: {d['n_rows']} in the table, {d['n_used']} fitted; excluded: {excl}.",
        f"Intervals are {lvl}% bootstrap percentile intervals over {fits.bootstrap['n']} resamples of runs "
        f"({SCHEME_TEXT.get(fits.bootstrap.get('scheme', 'runs'), 'resampled')} within each budget, seed "
        f"{fits.bootstrap['seed']}).",
    ]


def _assumptions_section(fits: Fits) -> list[str]:
    """Column mapping, budget grouping, kappa and how each approach was fitted."""
    d, inp, fr, a3 = fits.data, fits.inputs, fits.frontier, fits.approach3
    cols = inp.get("columns") or {}
    tokens = ("C/(6N), **derived: the table has no tokens column**" if d["tokens_derived"]
              else f"column `{cols.get('tokens', 'tokens')}`")
    flops = ("6ND, **derived: the table has no compute column**" if d.get("flops_derived")
             else f"column `{cols.get('flops', 'flops')}`")
    tol = inp.get("budget_tolerance") or 0.1
    budgets = (f"grouped from C (runs within {tol:.0%} of a group's first run share a budget)"
               if inp.get("budget_inferred") else f"column `{cols.get('budget', 'budget')}`")
    points = "minima" if fr["source"] == "minima" else "lowest observed losses"
    return ["", "## Assumptions", "",
            f"- N = column `{cols.get('params', 'params')}`; D = {tokens}; C = {flops}; "
            f"loss = column `{cols.get('loss', 'loss')}`.",
            f"- Budgets: {budgets}; a budget's C is the geometric mean of its runs' FLOPs.",
            f"- C = kappa N D with kappa = {fmt(d['kappa'])} (median over runs) converts Approach 3's optimum "
            "to a budget (Hoffmann et al. 2022 use 6).",
            "- Approach 2 parabolas are Huber-IRLS fits of loss vs log N; a budget is used only if its optimum is "
            "bracketed (the sampled size nearest the vertex is neither the smallest nor the largest).",
            f"- Frontier L_opt(C) = E + K C^-k fitted to the parabola {points} of the usable budgets "
            f"({fr['method']}; {fr['dof']} residual dof).",
            "- Approach 3: log L = LSE(gamma LSE(a - alpha log N, b - beta log D), e), Huber delta "
            f"{a3['huber_delta']:g} summed, L-BFGS from the {a3['n_starts']} best points of each form's grid "
            f"(Besiroglu et al. 2024); form {form_rule_text(a3)} (the Approach 3 section gives each form's AICc and "
            "what the bootstrap chose)."]


def _warnings_section(fits: Fits) -> list[str]:
    """Warnings (or 'none') and notes."""
    out = ["", "## Warnings", ""]
    out += [f"- {w}" for w in fits.warnings] or ["- none"]
    if fits.notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in fits.notes]
    return out


def _fits_sections(fits: Fits) -> list[str]:
    """Tables of the exponents, the frontier and Approach 3's parameters."""
    a2, fr, a3 = fits.approach2, fits.frontier, fits.approach3
    return [
        "", "## Compute-optimal exponents", "",
        _table(["quantity", "Approach 2 (IsoFLOP)", "Approach 3 (parametric)"], [
            ["a (N_opt ∝ C^a)", fmt_est(a2["a"]), fmt_est(a3["a"])],
            ["b (D_opt ∝ C^b)", fmt_est(a2["b"]), fmt_est(a3["b"])],
            ["k_N", fmt_est(a2["k_N"]), "-"], ["k_D", fmt_est(a2["k_D"]), "-"],
            ["budgets / runs used", str(a2["n_budgets"]), str(a3["n_runs"])],
        ]),
        "", "## Loss frontier L_opt(C) = E + K C^-k", "",
        _table(["E", "K", "k", f"K_ref at C_ref={fmt(fr['C_ref'])}", "rmse"],
               [[fmt_est(fr["E"]), fmt_est(fr["K"]), fmt_est(fr["k"]), fmt_est(fr["K_ref"]), fmt(fr["rmse"])]]),
        "", f"## Approach 3: L(N, D) = {formula_of(a3)}", "",
        _table(["E", "A", "B", "alpha", "beta", "gamma", "G"],
               [[fmt_est(a3[k]) if k in a3 else "1" for k in ("E", "A", "B", "alpha", "beta", "gamma", "G")]]),
        f"\nObjective {fmt(a3['objective'])}, converged: {a3['converged']}, rmse of log residuals "
        f"{fmt(a3['rmse_log'], 3)}. Form: {form_choice_text(a3)}.",
        *outlier_lines(a3),
    ]


def _usable_share(budget: dict[str, Any]) -> str:
    """'582 / 1000' from a budget's bootstrap status counts (the notes say why the rest were lost); '-' if none."""
    counts = budget.get("resamples") or {}
    return f"{counts.get('ok', 0)} / {sum(counts.values())}" if counts else "-"


def _budgets_section(fits: Fits) -> list[str]:
    """One table row per budget: sizes, status and the fitted optimum."""
    rows = [[fmt(b["budget"], 3), fmt(b["C"], 3), str(b["n_runs"]), str(b["n_sizes"]),
             f"{fmt(b['N_min'], 3)}..{fmt(b['N_max'], 3)}", b["status"] + ("" if b["used"] else " (excluded)"),
             fmt_est(b["N_opt"], 3), fmt_est(b["D_opt"], 3), fmt_est(b["L_opt"], 4), _vertex_gap(b), _usable_share(b)]
            for b in fits.budgets]
    return ["", "## Budgets", "",
            _table(["budget", "C", "runs", "sizes", "N range", "status", "N*", "D*", "L*", "L* vs best run",
                    "usable in resamples"], rows),
            "", "`L* vs best run`: the parabola's minimum against the budget's lowest observed loss. On a noise-free "
            "curve that a parabola fits, L* lies at or below the best run; as the lowest of several noisy runs, the "
            "best run can sit up to about one seed-noise sd below that. A gap well beyond it means the IsoFLOP curve "
            "is lopsided over these sizes (e.g. the large-N side's runs too short to leave a common plateau), which "
            "biases that budget's L* and N* and so the frontier (Open-Athena's scaling-law-analysis: asymmetric "
            "surfaces shift the vertex). Narrower size grids around the optimum reduce it; Approach 3 fits the runs "
            "themselves, not the parabolas."]


def _vertex_gap(b: dict[str, Any]) -> str:
    """(L* - lowest observed loss) / lowest observed loss of one budget, '-' without a parabola minimum."""
    L, best = b["L_opt"].value, b.get("L_min_observed")
    return "-" if L is None or not best else f"{(L - best) / best:+.2%}"


def _predictions_section(fits: Fits) -> list[str]:
    """N*, D* and loss at each prediction budget, per approach; with a seed-noise figure, also where one run there
    should land (the loss's interval widened by that noise: noise.prediction_interval)."""
    floor = noise_floor(fits.noise)
    level = float(fits.settings.get("level", 0.95))

    def one_run(est: Estimate) -> list[str]:
        if floor is None:
            return []
        wide = prediction_interval(est, floor, level)
        return ["-" if wide is None else f"[{format_number(wide.lo, 4)}, {format_number(wide.hi, 4)}]"]

    rows = [[fmt(p["C"], 3), f"{fmt(p['extrapolation'], 3)}x", name, fmt_est(p[name]["N"], 3),
             fmt_est(p[name]["D"], 3), fmt_est(p[name]["loss"]), *one_run(p[name]["loss"])]
            for p in fits.predictions for name in ("approach2", "approach3")]
    head = ["C", "beyond largest budget", "approach", "N*", "D*", "loss"]
    out = ["", "## Predictions", "", _table(head + (["one run there"] if floor is not None else []), rows)]
    if floor is not None:
        out += ["", f"`one run there`: the loss's interval widened by one run's seed noise ({floor:.2%} sd of ln "
                "loss, from the section on seed noise) in quadrature: where a single training run at that N*, D* "
                "should land, if its seed noise is the sweep's."]
    return out


def _pct(x: Any) -> str:
    """A signed fraction as a percentage ('-' for missing)."""
    return "-" if x is None else f"{x:+.2%}"



def backtest_lines(fits: Fits) -> list[str]:
    """One line per backtest series (mean |error|, largest extrapolation, k of n inside), or why it was skipped."""
    bt = fits.backtest
    if not bt:
        return []
    if bt.get("skipped"):
        return [f"backtest: skipped, {bt['skipped']}"]
    lines = [f"backtest {s['approach']} {s['quantity']}: mean |error| {s['mean_abs_rel_error']:.2%}"
             f"{_median_text(s)} over {s['n']} "
             f"predictions up to {s['max_extrapolation']:.3g}x, {s['inside']} of {s['n_intervals']} inside the "
             f"interval{_with_target_text(s)}" for s in bt["summary"]]
    favoured = favoured_text(bt.get("favoured_loss"))
    return lines + ([f"backtest favours for loss: {favoured}"] if favoured else [])


def _median_text(s: dict[str, Any]) -> str:
    """' (median 38.20%)' where a series' median |error| is under half its mean (a few far misses dominate the
    mean), else '' (summaries from before the median have none)."""
    med = s.get("median_abs_rel_error")
    return f" (median {med:.2%})" if med is not None and med < 0.5 * s["mean_abs_rel_error"] else ""


def _target_cell(r: dict[str, Any]) -> str:
    """A backtest row's actual value, with the target's own interval where it has one."""
    target = r.get("target_interval")
    text = fmt_est(target, 4) if isinstance(target, Estimate) and target.has_interval else fmt(r["actual"], 4)
    return text + ("" if r["reference"].startswith("parabola") else " (lowest observed)")


def _with_target_text(s: dict[str, Any]) -> str:
    """' (10 of 10 with the target's own interval)' where that count differs from the plain one, else ''."""
    n = s.get("n_with_target")
    if not n or (s["inside_with_target"], n) == (s["inside"], s["n_intervals"]):
        return ""
    return f" ({s['inside_with_target']} of {n} with the target's own interval)"


def _with_target_cell(s: dict[str, Any]) -> str:
    """A summary's count of predictions that agree with their target once its own interval is added ('-' without)."""
    return f"{s['inside_with_target']} of {s['n_with_target']}" if s.get("n_with_target") else "-"


def favoured_text(f: dict[str, Any] | None) -> str:
    """'frontier (4.92% mean |error|, over-predicts) over approach3 (8.67%, over-predicts)', or '' without a
    choice."""
    if not f:
        return ""
    own, other = (f", {f[k]}" if f.get(k) else "" for k in ("bias", "other_bias"))
    return (f"{f['approach']} ({f['mean_abs_rel_error']:.2%} mean |error|{own}) over {f['other']} "
            f"({f['other_mean_abs_rel_error']:.2%}{other})")


def _noise_cells(fits: Fits, row: dict[str, Any]) -> list[str]:
    """A backtest row's seed-noise floor (its budget's, else pooled; loss targets only) and whether the error is
    within NOISE_Z of it."""
    floor = noise_floor(fits.noise, row["C"]) if row["quantity"] == "loss" else None
    near = within_noise(row["rel_error"], floor)
    return [format_cell(floor, ".2%"), format_flag(near)]


def _bias_cells(s: dict[str, Any]) -> list[str]:
    """A backtest series' signed mean error, errors below / above zero and its sign-test verdict (older fits.json
    files have none: '-')."""
    if "sign_p" not in s:
        return ["-", "-", "-"]
    return [_pct(s["mean_rel_error"]), f"{s['below']} / {s['n'] - s['below']}",
            f"{s['bias'] or 'none'} (p={s['sign_p']:.2g})"]


def _backtest_section(fits: Fits) -> list[str]:
    """The leave-future-out backtest: how it was done, a summary per series, every comparison, skipped cut-offs."""
    bt = fits.backtest
    if not bt:
        return []
    if bt.get("skipped"):
        return ["", "## Backtest (leave-future-out)", "", f"Skipped: {bt['skipped']}."]
    out = ["", "## Backtest (leave-future-out)", "",
           f"Refit on the smallest k budgets only ({bt['bootstrap']} bootstrap resamples per refit) and predicted "
           "every larger budget of this table; nothing was trained. Loss targets are the held-back budget's parabola "
           "minimum L_opt, or its lowest observed loss where it has no usable parabola or the frontier is fitted to "
           "lowest losses (column `actual`); N targets "
           "its parabola N_opt. Approach 3 is scored at its compute-optimal point. Error = (actual - predicted) / "
           f"actual; `inside`: the prediction's {round(100 * float(bt['level']))}% interval covers the actual value "
           "(whose own fitting noise it does not include); `with target`: the same once the target's own bootstrap "
           "interval is added in quadrature (in ln units), i.e. whether the two estimates agree (`-` where the "
           "target has no interval: a lowest observed loss). `bias`: a series' errors fall on one side of zero more "
           "often than chance allows (two-sided sign test, p < 0.05; the cut-offs share budgets, so p is a rough "
           "guide): its law bends the wrong way, and predictions further out will miss the same way. Method: "
           "leave-future-out as in Marin's scaling-law validation; rollout as in Bhagia et al. 2024's OLMo model "
           "ladders."]
    out += ["", _table(["approach", "target", "predictions", "largest extrapolation", "mean abs error",
                        "median abs error", "max abs error", "inside", "with target", "mean error",
                        "below / above", "bias (sign test)"],
                       [[s["approach"], s["quantity"], str(s["n"]), f"{fmt(s['max_extrapolation'], 3)}x",
                         f"{s['mean_abs_rel_error']:.2%}",
                         f"{s['median_abs_rel_error']:.2%}" if "median_abs_rel_error" in s else "-",
                         f"{s['max_abs_rel_error']:.2%}",
                         f"{s['inside']} of {s['n_intervals']}", _with_target_cell(s), *_bias_cells(s)]
                        for s in bt["summary"]])]
    favoured = favoured_text(bt.get("favoured_loss"))
    if favoured:
        out += ["", f"**Loss predictions the backtest favours on this table:** {favoured}, over the same "
                f"{bt['favoured_loss']['n']} held-back budgets. Read the other approach's predictions (and its "
                "held-out error) in that light."]
    rows = [[f"{r['cutoff']} (<= {fmt(r['fitted_up_to'], 3)})", fmt(r["C"], 3), f"{fmt(r['extrapolation'], 3)}x",
             r["approach"], r["quantity"], fmt_est(r["predicted"], 4),
             _target_cell(r),
             _pct(r["rel_error"]), format_flag(r["inside"]), format_flag(r.get("inside_with_target")), *_noise_cells(fits, r)]
            for r in bt["rows"]]
    out += ["", _table(["fitted budgets", "held-back C", "extrapolation", "approach", "target", "predicted",
                        "actual", "error", "inside", "with target", "seed noise (1 sd)", "within noise"], rows)]
    skipped = [f"- k={c['k']} (budgets <= {fmt(c['largest_budget'], 3)}): {c['reason']}"
               for c in bt["cutoffs"] if c["status"] != "ok"]
    return out + (["", "Skipped cut-offs:", "", *skipped] if skipped else [])


def noise_line(fits: Fits) -> str:
    """One line: the pooled seed noise with its interval, or why it was not measured."""
    nz = fits.noise or {}
    if not nz.get("measured"):
        assumed = nz.get("assumed")
        judged = f"; errors judged against {assumed['rel_sd']:.2%} from {assumed['source']}" if assumed else ""
        return f"seed noise: not measured ({nz.get('reason', 'no repeats')}){judged}" if nz else ""
    p = nz["pooled"]
    return (f"seed noise: sd of ln(loss) {p['rel_sd']:.2%} [{p['rel_sd_lo']:.2%}, {p['rel_sd_hi']:.2%}] from "
            f"{p['points']} repeated points ({p['dof']} degrees of freedom)")


def _noise_section(fits: Fits) -> list[str]:
    """Seed noise: pooled and per budget, how the bootstrap used it, and every repeated point."""
    nz = fits.noise or {}
    if not nz:
        return []
    out = ["", "## Seed noise", "", noise_line(fits) + "."]
    if nz.get("assumed"):
        return [*out, "", "Prediction errors below are judged against that floor, measured elsewhere (analysis "
                "`noise.floor`), not in this table; the bootstrap intervals do not carry seed noise (no repeats to "
                "resample)."]
    if not nz.get("measured"):
        return [*out, "", "Prediction errors below are not judged against a noise floor."]
    out += ["", f"Method: {nz['method']}. The bootstrap resampled points within each budget and then seeds within "
            "each point (Davison & Hinkley 1997's two-stage bootstrap), so every interval carries seed noise."]
    out += ["", _table(["budget", "repeated points", "dof", "sd of ln(loss)", "95% interval"],
                       [[fmt(b["budget"], 3), str(b["points"]), str(b["dof"]), f"{b['rel_sd']:.2%}",
                         f"[{b['rel_sd_lo']:.2%}, {b['rel_sd_hi']:.2%}]"] for b in nz["per_budget"]])]
    if nz.get("wild_points"):
        out += ["", f"{nz['wild_points']} point(s) whose seeds disagree far beyond this noise are left out of these "
                "figures and named in the warnings."]
    return out


def render_markdown(fits: Fits, extra: Sequence[str] = (), plots: Sequence[RenderedPlot] = ()) -> str:
    """report.md text: inputs, assumptions, warnings, tables, backtest, plots, limitations, extra sections."""
    out = ["# Scaling-law analysis", "", *_inputs_section(fits), *_assumptions_section(fits),
           *_warnings_section(fits), *_fits_sections(fits), *_budgets_section(fits), *_predictions_section(fits),
           *_noise_section(fits), *_backtest_section(fits), "", "## Plots", ""]
    out += [f"![{p.caption}]({p.name})\n" for p in plots]
    out += ["## Limitations", "", *LIMITATIONS]
    for section in extra:
        out += ["", section.rstrip()]
    return "\n".join(out) + "\n"


def _extra(extra_sections: Sequence[Any] | None) -> tuple[list[str], dict[str, bytes]]:
    """Markdown of the extra sections and the images they bring ({file name: PNG bytes})."""
    texts: list[str] = []
    images: dict[str, bytes] = {}
    for i, sec in enumerate(extra_sections or []):
        if isinstance(sec, str):
            texts.append(sec)
            continue
        title = str(sec.get("title", f"Section {i + 1}"))
        body = str(sec.get("body", sec.get("markdown", "")))
        text = f"## {title}\n\n{body}".rstrip()
        image = sec.get("image", sec.get("figure"))
        if image is not None:
            if hasattr(image, "savefig"):
                slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or f"extra{i + 1}"
                name, data = f"{slug}.png", png_bytes(image)
            else:
                name, data = Path(image).name, Path(image).read_bytes()
            images[name] = data
            text += f"\n\n![{title}]({name})"
        texts.append(text)
    return texts, images


def render_outputs(fits: Fits, plots: Sequence[RenderedPlot] = (),
                   extra_sections: Sequence[Any] | None = None) -> dict[str, bytes]:
    """Every output file's bytes, in memory: the plots, extra images, report.md, the samples, fits.json."""
    files = {p.name: p.png for p in plots}
    extra, images = _extra(extra_sections)
    files.update(images)
    files["report.md"] = render_markdown(fits, extra, plots).encode()
    if fits.samples:
        files["bootstrap_samples.npz"] = fits.samples_npz()
    files["fits.json"] = fits.to_json().encode()
    return files


def write_report(fits: Fits, plots: Sequence[RenderedPlot], out_dir: str | Path,
                 extra_sections: Sequence[Any] | None = None) -> dict[str, Path]:
    """Write fits.json, bootstrap_samples.npz, report.md and the plots into out_dir; extra_sections are markdown
    strings or {title, body, image} (a Figure or a PNG path). All is rendered first, so a failure leaves the old
    outputs alone; each file is replaced atomically, fits.json (the completion mark) last. Returns {name: path}."""
    files = render_outputs(fits, plots, extra_sections)
    return publish(Path(out_dir).expanduser(), files, last="fits.json", stale=stale_outputs(files))
