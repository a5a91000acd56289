"""Approach 3 stage: run arrays, the parametric point fit, derived quantities and its summary."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import canonicalize, select_fit_rows
from harness.analysis.approach3 import (
    SCREEN_MIN_RUNS,
    SCREEN_SD,
    RunArrays,
    aicc,
    approach3_samples,
    derived,
    fit_approach3,
    form_choice_text,
    resample_aicc,
    resample_forms,
    summarize_approach3,
)
from harness.analysis.bootstrap import group_weights
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.parametric import E_OFF, FORMS, bootstrap_parametric, predict_log_loss
from harness.analysis.synthetic import Law, isoflop_sweep

LAW = Law()


# Kaplan et al. 2020's law in theta form: (A/N^alpha + B/D)^gamma, alpha = alpha_N / alpha_D, gamma = alpha_D.
KAPLAN = np.array([0.8 * np.log(8.8e13), np.log(5.4e13), E_OFF, 0.8, 1.0, 0.095])


def runs(kappa: float = 6.0, noise: float = 0.0, seed: int = 0, budgets: tuple = (1e18, 1e19, 1e20, 1e21),
         sizes: int = 7) -> RunArrays:
    raw = isoflop_sweep(LAW, budgets=budgets, sizes_per_budget=sizes, span=12, noise=noise, kappa=kappa, seed=seed)
    return RunArrays.from_frame(select_fit_rows(canonicalize(raw)).used)


def kaplan_runs(noise: float, seed: int) -> RunArrays:
    """The same (N, D) grid with log losses from Kaplan's law plus log-normal noise."""
    r = runs()
    rng = np.random.default_rng(seed)
    lnL = predict_log_loss(KAPLAN, r.lnN, r.lnD) + noise * rng.standard_normal(r.lnN.size)
    return RunArrays(r.lnN, r.lnD, lnL, r.lnC)


def test_point_fit_recovers_the_law() -> None:
    r, diag = runs(), Diagnostics()
    fit = fit_approach3(r, Settings(starts=8), diag)
    block = summarize_approach3(r, fit, {}, Settings(starts=8), diag)
    assert r.kappa == pytest.approx(6.0) and diag.warnings == []
    assert block["a"].value == pytest.approx(LAW.a, abs=1e-3) and block["alpha"].lo is None
    assert block["n_runs"] == 28 and block["rmse_log"] < 1e-3


def test_derived_exponents_follow_hoffmann_eq_4() -> None:
    theta = np.array([np.log(400.0), np.log(410.0), np.log(1.7), 0.34, 0.28])
    d = derived(theta)
    assert d["a"] == pytest.approx(0.28 / 0.62) and d["b"] == pytest.approx(0.34 / 0.62)
    assert d["E"] == pytest.approx(1.7) and derived(np.stack([theta, theta]))["a"].shape == (2,)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_form_picks_the_form_that_made_the_data(seed: int) -> None:
    """AICc tells the two forms apart at 1% noise: Chinchilla's surface (a floor E = 1.69) and Kaplan's (none)."""
    s = Settings()
    chin = fit_approach3(runs(noise=0.01, seed=seed), s, Diagnostics())
    kap = fit_approach3(kaplan_runs(0.01, seed), s, Diagnostics())
    assert chin.form.name == "chinchilla" and kap.form.name == "kaplan"
    assert chin.candidates["kaplan"]["aicc"] > chin.candidates["chinchilla"]["aicc"] + 10
    assert kap.candidates["chinchilla"]["aicc"] > kap.candidates["kaplan"]["aicc"]
    assert kap.E == 0.0 and abs(derived(kap.theta)["a"] - 0.095 / (0.076 + 0.095)) < 0.05
    assert "AICc" in chin.rule


def test_fixed_form_and_too_few_runs() -> None:
    fit = fit_approach3(kaplan_runs(0.01, 0), Settings(starts=8, form="chinchilla"), Diagnostics())
    assert fit.form.name == "chinchilla" and list(fit.candidates) == ["chinchilla"] and "fixed" in fit.rule
    few = runs(noise=0.01, budgets=(1e18, 1e19), sizes=3)  # 6 runs: AICc of a 5-parameter fit is undefined
    fit = fit_approach3(few, Settings(starts=8), Diagnostics())
    assert fit.form.name == "chinchilla" and "too few runs (6)" in fit.rule
    assert fit.candidates["chinchilla"]["aicc"] == float("inf")
    block = summarize_approach3(few, fit, {}, Settings(starts=8), Diagnostics())
    assert block["form"] == "chinchilla" and set(block["forms"]) == {"chinchilla", "kaplan"}


def test_aicc_penalises_parameters_and_small_samples() -> None:
    assert aicc(1.0, 20, 5) - aicc(1.0, 20, 4) == pytest.approx(2 + 60 / 14 - 40 / 15)
    assert aicc(1.0, 6, 5) == float("inf") and aicc(0.0, 20, 4) == float("-inf")


def test_auto_with_one_failed_form_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where one form finds no finite fit, auto keeps the other and the rule says why (not "fixed")."""
    import harness.analysis.approach3 as a3

    real = a3.fit_parametric

    def kaplan_fails(*args, **kwargs):
        if args[-1] == "kaplan":
            raise FloatingPointError("no finite start")
        return real(*args, **kwargs)

    monkeypatch.setattr(a3, "fit_parametric", kaplan_fails)
    fit = fit_approach3(runs(noise=0.01), Settings(starts=8), Diagnostics())
    assert fit.form.name == "chinchilla" and fit.rule == "the only form that converged"


def test_bootstrap_rechooses_the_form_on_every_resample() -> None:
    """Under auto each resample refits both forms and keeps its lower AICc, so a close call shows up in the
    intervals: here Kaplan's form wins on all runs but Chinchilla's on some resamples. The chosen form's own
    parameters take their intervals from the resamples that chose it; a and b from every resample."""
    r, s = kaplan_runs(0.03, 0), Settings(starts=8)
    fit = fit_approach3(r, s, Diagnostics())
    W = group_weights(np.zeros(r.lnN.size, int), 60, 0, "bayesian")
    boot = approach3_samples(r, W, fit, s)
    names = resample_forms(boot)
    assert fit.form.name == "kaplan" and 0 < np.sum(names == "chinchilla") < np.sum(names == "kaplan")
    refits = {n: bootstrap_parametric(r.lnN, r.lnD, r.lnL, W, theta, s.delta) for n, theta in fit.alternatives.items()}
    scores = {n: resample_aicc(r, W, refits[n], FORMS[n].n_params) for n in refits}
    for i, name in enumerate(names):
        other = "chinchilla" if name == "kaplan" else "kaplan"
        assert scores[name][i] <= scores[other][i]
        np.testing.assert_array_equal(boot[i], refits[name][i])
    block = summarize_approach3(r, fit, {"approach3": boot}, s, Diagnostics())
    n_kaplan = int(np.sum(names == "kaplan"))
    assert block["form_resamples"] == {"kaplan": n_kaplan, "chinchilla": 60 - n_kaplan}
    assert block["E"].hi == 0.0 and block["gamma"].n == n_kaplan and block["a"].n == 60
    only_kaplan = summarize_approach3(r, fit, {"approach3": boot[names == "kaplan"]}, s, Diagnostics())
    assert only_kaplan["gamma"] == block["gamma"] and only_kaplan["a"] != block["a"]  # a counts Chinchilla's too
    assert f"kaplan {n_kaplan}, chinchilla {60 - n_kaplan}" in form_choice_text(block)


def test_bootstrap_keeps_a_fixed_form() -> None:
    r = kaplan_runs(0.03, 0)
    W = group_weights(np.zeros(r.lnN.size, int), 20, 0, "bayesian")
    for form in ("kaplan", "chinchilla"):
        s = Settings(starts=8, form=form)
        boot = approach3_samples(r, W, fit_approach3(r, s, Diagnostics()), s)
        assert set(resample_forms(boot)) == {form}
        assert list(summarize_approach3(r, fit_approach3(r, s, Diagnostics()), {"approach3": boot}, s,
                                        Diagnostics())["form_resamples"]) == [form]


def test_a_form_far_behind_is_skipped_on_large_tables_only() -> None:
    """On Chinchilla's surface Kaplan's AICc lies far behind. On a large table (>= SCREEN_MIN_RUNS runs) it is more
    than SCREEN_SD resampling sd behind, could not win a resample, and is not refitted (the report says so); on a
    small table, where that approximation fails, it is refitted anyway."""
    s = Settings(starts=8)
    small = fit_approach3(runs(noise=0.005), s, Diagnostics())
    assert list(small.alternatives) == ["chinchilla", "kaplan"] and "sd_behind" not in small.candidates["kaplan"]
    r = runs(noise=0.01, sizes=SCREEN_MIN_RUNS // 4 + 1)
    fit = fit_approach3(r, s, Diagnostics())
    assert r.lnN.size >= SCREEN_MIN_RUNS and fit.form.name == "chinchilla"
    assert fit.candidates["kaplan"]["sd_behind"] > SCREEN_SD and list(fit.alternatives) == ["chinchilla"]
    W = group_weights(np.zeros(r.lnN.size, int), 8, 0, "bayesian")
    boot = approach3_samples(r, W, fit, s)
    block = summarize_approach3(r, fit, {"approach3": boot}, s, Diagnostics())
    assert set(resample_forms(boot)) == {"chinchilla"} and block["form_resamples"] == {"chinchilla": 8}
    assert "not refitted on the resamples, its AICc kaplan >= 8 resampling sd behind" in form_choice_text(block)
