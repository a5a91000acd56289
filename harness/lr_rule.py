"""A fitted learning-rate rule file: lr = c * N^p * D^q (N: parameters under the file's convention, or the width
d_model; D tokens).

`harness-sweep sweep=lr` writes one (results/lr/lr_rule.json) with its provenance: the corpus fingerprint, the
size family and the points it was fitted on. `train.lr=rule` reads `train.lr_rule` (default: the rule fitted
on the embedded corpus and the default family, shipped in conf/lr_rules/). A rule is JSON data, never code.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import CONF_DIR
from harness.errors import HarnessError

SCHEMA = 1
DEFAULT = "default"
DEFAULT_PATH = Path(CONF_DIR) / "lr_rules" / "stdlib_family.json"
PARAM_CONVENTIONS = ("total", "nonembedding", "scaling", "width")
EXTRAPOLATION_WARN = 10.0
FAMILY_KEYS = ("aspect", "min_layers", "head_dim", "ff_mult", "d_model_step", "seq_len")
Range = tuple[float, float] | None  # (min, max) over the points a rule was fitted on; None for a hand-written rule


@dataclass(frozen=True)
class LRRuleFile:
    """The rule's coefficients, the parameter convention N is counted in, and where it came from."""

    c: float
    p: float
    q: float
    params: str
    provenance: dict[str, Any]
    path: str
    sha256: str
    n_range: Range = None  # the N and D the rule was fitted on (from its points)
    d_range: Range = None
    nd_range: Range = None  # and their product N*D (~ compute): a sweep's points pair large N with small D,
                            # so a run can sit inside both ranges yet far beyond every point

    def lr(self, n_params: float, tokens: float) -> float:
        """The learning rate the rule gives a model of n_params (this file's convention) trained on tokens."""
        return self.c * n_params**self.p * tokens**self.q

    @property
    def tag(self) -> str:
        """Short provenance for result rows: the file name and 12 hex digits of the hash of its coefficients."""
        return f"{Path(self.path).name}@{self.sha256[:12]}"


def rule_size(convention: str, counts: Mapping[str, Any], d_model: int | None) -> float:
    """The N a rule of this convention reads: a parameter count (counts: harness.counting.param_counts, or a
    result row), or, for `width`, d_model. Adam's optimal LR follows the width, not the depth (muP: Yang et al.
    2022), so a width rule carries across the family's depth steps (results/FINDINGS.md "The 3-layer sizes")."""
    if convention == "width":
        if not d_model:
            raise HarnessError("this LR rule is fitted on the width (params: width) and the model config has no "
                               "d_model: use a model with model.d_model, or a rule fitted on parameters")
        return float(d_model)
    return float(counts[f"params_{convention}"])


def convention_text(convention: str) -> str:
    """What N of a rule is, in words, for reports."""
    return "d_model (the width)" if convention == "width" else f"{convention} parameters"


def lr_source(lr: Any, lr_rule: Any) -> str:
    """What a run records as its `lr_rule` under train.lr / train.lr_rule: auto, fixed, or the rule file's tag."""
    text = str(lr)
    if text == "auto":
        return "auto"
    return load_rule(lr_rule).tag if text == "rule" else "fixed"


def resolve_path(value: Any) -> Path:
    """train.lr_rule: 'default' (the shipped rule), the name of another rule shipped in conf/lr_rules (e.g.
    stdlib_family_wsd), or a path (~ expanded)."""
    text = str(value or DEFAULT)
    if text == DEFAULT:
        return DEFAULT_PATH
    shipped = DEFAULT_PATH.parent / f"{text}.json"
    if "/" not in text and not text.endswith(".json") and shipped.exists():
        return shipped
    return Path(text).expanduser()


def load_rule(value: Any) -> LRRuleFile:
    """Read and check a rule file; a missing or malformed file is one clear error naming the fix."""
    path = resolve_path(value)
    try:
        d = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise HarnessError(f"train.lr_rule={str(path)!r} does not exist; fit one with `scripts/sweep.sh sweep=lr` "
                           "or use train.lr=auto") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HarnessError(f"train.lr_rule={str(path)!r} is not a rule file (JSON written by the lr sweep)") from None
    try:
        c, p, q = (float(d["rule"][k]["value"]) for k in ("c", "p", "q"))
        params = str(d["params"])
    except (KeyError, TypeError, ValueError):
        raise HarnessError(f"{str(path)!r} lacks rule.c/p/q values or params; refit it with the lr sweep") from None
    if int(d.get("schema", 0)) != SCHEMA or params not in PARAM_CONVENTIONS or not all(map(math.isfinite, (c, p, q))) \
            or c <= 0:
        raise HarnessError(f"{str(path)!r} is not a valid schema-{SCHEMA} rule file; refit it with the lr sweep")
    # the rule's identity is what sets the LR (coefficients, convention), not its intervals or provenance text
    ident = json.dumps({"c": c, "p": p, "q": q, "params": params}, sort_keys=True).encode()
    return LRRuleFile(c, p, q, params, dict(d.get("provenance") or {}), str(path), hashlib.sha256(ident).hexdigest(),
                      *_ranges(d.get("points") or []))


def _ranges(points: list[Any]) -> tuple[Range, Range, Range]:
    """(min, max) of N, of D and of N*D over the points the rule was fitted on (None for a hand-written rule)."""
    try:
        nd = [(float(pt["N"]), float(pt["D"])) for pt in points if pt.get("status") == "ok"]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None, None, None
    if not nd:
        return None, None, None
    return tuple((min(v), max(v)) for v in ([n for n, _ in nd], [d for _, d in nd], [n * d for n, d in nd]))


def extrapolation(rule: LRRuleFile, n_params: float, tokens: float, factor: float = EXTRAPOLATION_WARN) -> list[str]:
    """A warning when N, D or N*D lies more than `factor` times outside what the rule was fitted on: a power law
    fitted on one regime (here, runs of hundreds to thousands of steps) need not hold far from it. N*D (~ the
    budget) catches a large model trained long, inside both one-dimensional ranges but beyond every point: the
    demo's 1.2e13 held-out run got twice its optimal LR from a rule fitted up to 1e12 (README "Learning rate")."""
    out = []
    n = "d_model" if rule.params == "width" else "N"  # what the rule's N is (rule_size)
    checks = ((n, n_params, rule.n_range), ("D", tokens, rule.d_range), (f"{n}*D", n_params * tokens, rule.nd_range))
    for name, value, rng in checks:
        if rng and not rng[0] / factor <= value <= rng[1] * factor:
            out.append(f"the LR rule {rule.tag} was fitted on {name} in [{rng[0]:.3g}, {rng[1]:.3g}]; this run's "
                       f"{name} = {value:.3g} is more than {factor:g}x outside it: refit the rule at this scale "
                       "(scripts/sweep.sh sweep=lr with larger sweep.budgets/d_models) or use train.lr=auto")
    return out


def mismatches(rule: LRRuleFile, fingerprint: str | None, model: Any, schedule: str | None = None) -> list[str]:
    """How this run differs from what the rule was fitted on (corpus, model family, LR schedule): warnings, not
    errors, since a rule transfers approximately; the result rows carry the rule's tag either way."""
    out = _schedule_mismatch(rule, schedule)
    prov = rule.provenance
    if fingerprint and prov.get("data_fingerprint") and prov["data_fingerprint"] != fingerprint:
        out.append(f"the LR rule {rule.tag} was fitted on corpus {prov['data_fingerprint']}, this run uses "
                   f"{fingerprint}; refit it on this corpus with `scripts/sweep.sh sweep=lr data=...`")
    family = prov.get("family") or {}
    if family:
        if str(model.get("name")) != "family":
            out.append(f"the LR rule {rule.tag} was fitted on the size family, this run trains preset "
                       f"{model.get('name')!r}")
        else:
            diff = [k for k in FAMILY_KEYS if k in family and str(model.get(k)) != str(family[k])]
            if diff:
                out.append(f"the LR rule {rule.tag} was fitted on a family with "
                           + ", ".join(f"{k}={family[k]}" for k in diff) + "; this run's model differs")
    return out


def _schedule_mismatch(rule: LRRuleFile, schedule: str | None) -> list[str]:
    """A warning when the run's LR schedule is not the one the rule was fitted on (rule files that do not say
    which, e.g. hand-written ones, get none)."""
    fitted = (rule.provenance.get("train") or {}).get("schedule")
    if not schedule or not fitted or str(fitted) == str(schedule):
        return []
    return [f"the LR rule {rule.tag} was fitted on {fitted} runs, this run trains {schedule}; the optimal LR moves "
            f"with the schedule (results/FINDINGS.md, \"Under WSD, a rule fitted on WSD chains\"), and "
            f"`scripts/sweep.sh sweep=lr train.schedule={schedule}` fits a rule on it"]


def rule_warnings(rule: LRRuleFile, fingerprint: str | None, model: Any, params: dict[str, int],
                  tokens: float, schedule: str | None = None) -> list[str]:
    """Where a run leaves what its LR rule was fitted on: another corpus, family or schedule, or far outside its
    N, D (params: the run's parameter counts under every convention, as harness.counting.param_counts gives;
    model: the model config, whose d_model a width rule reads)."""
    return [*mismatches(rule, fingerprint, model, schedule),
            *extrapolation(rule, rule_size(rule.params, params, model.get("d_model")), tokens)]
