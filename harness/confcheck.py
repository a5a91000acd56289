"""Config and filesystem mistakes as one `error:` line: Hydra's composition errors translated, the composed
config's keys and types checked against the YAML defaults of the chosen presets, OSError mapped by errno, and the
ranges of run, sweep and held-out values: one check per setting, shared by every command that reads it
(harness-train through RunContext.resolve, the sweep's dry run, harness-validate), before anything trains."""

from __future__ import annotations

import difflib
import errno
import functools
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from harness.errors import HarnessError

# Keys the code reads with a default although no YAML file sets them (harness-count +measure=false).
OPTIONAL_KEYS = frozenset({"measure"})
# A sub-tree of a root config whose schema is another root config (harness-validate's analysis overrides).
SUBTREE_SCHEMAS = {"analysis": "analyze"}


def _suggest(word: str, options: list[str]) -> str:
    """' (did you mean X?)' for the closest option, or ''."""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def composition_message(ex: Exception) -> str:
    """One line for a Hydra composition error: the bad option or key, the valid ones, the closest match."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(ex, MissingConfigException) and ex.missing_cfg_file and "/" in ex.missing_cfg_file:
        group, _, name = ex.missing_cfg_file.rpartition("/")
        opts = sorted(ex.options or [])
        return (f"unknown {group}={name}{_suggest(name, opts)}; choose one of {', '.join(opts)} "
                f"(files in conf/{group}/)")
    cause = ex.__cause__
    key, parent = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    if key and isinstance(parent, DictConfig):
        valid = sorted(str(k) for k in parent if k != "hydra")
        where = key.rpartition(".")[0]
        if where and not valid:  # `bootstrap.resamples=50` where bootstrap is a number: no group to list
            return f"{where!r} is a single value, not a group of keys: set it as {where}=<value>, not {key}=..."
        return (f"unknown config key {key!r}{_suggest(str(cause.key), valid)}; valid keys"
                f"{' of ' + where if where else ''}: {', '.join(valid)}")
    if isinstance(ex, OverrideParseException):
        return f"cannot parse override {ex.override!r}: {ex.message.splitlines()[0]}; write key=value"
    return str(ex).strip().splitlines()[0]


@contextmanager
def hydra_config_errors() -> Iterator[None]:
    """While a @hydra.main function runs, its composition errors exit 2 with one `error:` line (Hydra's own
    report, with the full trace, when HYDRA_FULL_ERROR=1)."""
    import hydra._internal.utils as hu
    from hydra.errors import ConfigCompositionException, OverrideParseException

    original = hu.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        def translated() -> Any:
            try:
                return func()
            except (ConfigCompositionException, OverrideParseException) as ex:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"error: {composition_message(ex)}", file=sys.stderr)
                sys.exit(2)

        return original(translated)

    hu.run_and_report = run_and_report
    try:
        yield
    finally:
        hu.run_and_report = original


def config_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a @hydra.main function (the console-script entry) in hydra_config_errors."""

    @functools.wraps(main)
    def entry(*args: Any, **kwargs: Any) -> Any:
        with hydra_config_errors():
            return main(*args, **kwargs)

    return entry


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of a nested dict (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _yaml(path: Path) -> dict[str, Any]:
    """A config file as a plain dict, without its defaults list and hydra section."""
    d = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(d, dict)
    return {k: v for k, v in d.items() if k not in ("defaults", "hydra")}


def _package_global(path: Path) -> bool:
    """Whether a config file's header declares `# @package _global_`."""
    head = path.read_text().splitlines()[:5]
    return any(line.replace(" ", "") == "#@package_global_" for line in head)


def schema(conf_dir: Path, config_name: str, choices: dict[str, str | None]) -> dict[str, Any]:
    """{dotted key: default} of a root config and the chosen group presets: the keys a run may set."""
    tree: dict[str, Any] = {}
    global_parts = []  # presets declared `# @package _global_` (e.g. sweep/gpu.yaml) set keys from the root
    for group, choice in choices.items():
        path = conf_dir / group / f"{choice}.yaml"
        if choice and not group.startswith("hydra") and path.exists():
            if _package_global(path):
                global_parts.append(_yaml(path))
            else:
                tree[group] = _yaml(path)
    root = OmegaConf.merge(tree, *global_parts, _yaml(conf_dir / f"{config_name}.yaml"))
    flat = _flat(OmegaConf.to_container(root, resolve=False))
    for sub, name in SUBTREE_SCHEMAS.items():
        if sub in tree or any(k == sub or k.startswith(sub + ".") for k in flat):
            flat.update({f"{sub}.{k}": v for k, v in _flat(_yaml(conf_dir / f"{name}.yaml")).items()})
    return flat


def _known(key: str, flat: dict[str, Any]) -> bool:
    """A key is known when it, or a leaf above it (a null or free-form default), is in the schema."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in flat for i in range(1, len(parts) + 1)) or key in OPTIONAL_KEYS


def _type_error(key: str, value: Any, default: Any) -> str | None:
    """Why value cannot replace a numeric or boolean default, or None."""
    if (isinstance(value, str) and value.startswith("${")) or (isinstance(default, str) and "${" in default):
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        kind = "true or false"
    elif isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        kind = "a number"
    else:
        return None
    return None if ok else f"{key}={value!r} must be {kind} (default {default})"


def check_keys(cfg: DictConfig, conf_dir: Path, config_name: str, choices: dict[str, str | None]) -> None:
    """Refuse keys that no preset defines (a typo, or a `+key=` nothing reads) and mistyped values."""
    flat = schema(conf_dir, config_name, choices)
    given = _flat(OmegaConf.to_container(cfg, resolve=False))
    for key, value in given.items():
        if not _known(key, flat):
            parent = key.rpartition(".")[0]
            siblings = sorted({k[len(parent) + 1:].split(".")[0] if parent else k.split(".")[0]
                               for k in flat if not parent or k.startswith(parent + ".")})
            raise HarnessError(
                f"unknown config key {key!r}{_suggest(key.rpartition('.')[2], siblings)}: nothing reads it; "
                f"valid keys{' of ' + parent if parent else ''}: {', '.join(siblings)}"
            )
        msg = _type_error(key, value, flat.get(key))
        if msg:
            raise HarnessError(msg)


def check_hydra_cfg(cfg: DictConfig) -> None:
    """check_keys for the config of the running @hydra.main job (a no-op outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    conf_dir = next((Path(s.path) for s in hc.runtime.config_sources if s.provider == "main"), None)
    if conf_dir is None or not hc.job.config_name:
        return
    check_keys(cfg, conf_dir, hc.job.config_name, dict(hc.runtime.choices))


_FS_FIXES = {
    errno.EROFS: "the file system is read-only; point results_dir/out (or data.cache_dir) at a writable directory",
    errno.EACCES: "permission denied; use a directory you can write to, or fix its permissions",
    errno.EPERM: "permission denied; use a directory you can write to, or fix its permissions",
    errno.ENOSPC: "the disk is full; free space or point results_dir/out at another disk",
    errno.EDQUOT: "the disk quota is exhausted; free space or point results_dir/out at another disk",
    errno.EEXIST: "a file is in the way where a directory is needed; remove it or choose another path",
    errno.ENOTDIR: "a component of the path is a file, not a directory; choose another path",
    errno.EISDIR: "it is a directory where a file is needed; choose another path",
    errno.ENOENT: "no such file or directory; check the path",
    errno.ENAMETOOLONG: "the path is too long; choose a shorter one",
}


def filesystem_message(e: OSError) -> str:
    """One line naming the path of a failed file operation and the fix."""
    path = e.filename if e.filename is not None else "?"
    fix = _FS_FIXES.get(e.errno or 0, f"{e.strerror or e}; check the path")
    return f"cannot write or read {str(path)!r}: {fix}"


# ---------------------------------------------------------------- value ranges the key and type check cannot see

ROLES = ("sweep", "holdout", "tune")  # a result row's role: a grid run (fitted), held out (never fitted), LR sweep


def number_in(key: str, raw: Any, ok: Callable[[float], bool], want: str) -> float:
    """raw as a float when ok(it) holds, else a HarnessError '{key}={raw} must be {want}' (a bool, text or NaN is
    never a number here): the one range check every numeric setting goes through."""
    try:
        x = math.nan if isinstance(raw, bool) else float(raw)
    except (TypeError, ValueError):
        x = math.nan
    if math.isnan(x) or not ok(x):
        raise HarnessError(f"{key}={raw!r} must be {want}")
    return x


def _count(key: str, raw: Any, least: int, want: str) -> int:
    """raw as an integer >= least (a whole float such as 8.0 counts), else a HarnessError naming key."""
    return int(number_in(key, raw, lambda x: x.is_integer() and x >= least, want))


def fixed_lr(value: Any) -> float | None:
    """train.lr as a positive number, or None for auto and rule; a HarnessError for anything else."""
    if str(value) in ("auto", "rule"):
        return None
    return number_in("train.lr", value, lambda x: 0 < x < math.inf, "auto, rule or a positive number like 1e-3")


def check_train_settings(cfg: Any) -> None:
    """Refuse train.* values out of range and an unknown role: each would train and write a row that looks fine
    (warmup_frac=2 warms up for twice the run, eval_windows=0 evaluates one window, role=holdoutt is fitted as
    neither a sweep nor a held-out run)."""
    tc = cfg.train
    fixed_lr(tc.get("lr", "auto"))
    _count("train.batch_size", tc.get("batch_size", 16), 1, "a positive integer (sequences per optimizer step)")
    number_in("train.warmup_frac", tc.get("warmup_frac", 0.05), lambda x: 0 <= x < 1,
           "in [0, 1): the fraction of the steps that warms up (default 0.05)")
    number_in("train.min_lr_ratio", tc.get("min_lr_ratio", 0.1), lambda x: 0 <= x <= 1,
           "in [0, 1]: the final LR as a fraction of the peak (default 0.1)")
    _count("train.eval_windows", tc.get("eval_windows", 1024), 1,
           "an integer >= 1: the windows of the fixed held-out slice the final loss is measured on (default 1024)")
    _count("train.curve_points", tc.get("curve_points", 10), 0,
           "an integer >= 0: validation points on each run's learning curve (0 = none; default 10)")
    _count("train.curve_eval_windows", tc.get("curve_eval_windows", 32), 1,
           "an integer >= 1: the windows of the learning curve's eval slice (default 32)")
    role = str(cfg.get("role", "sweep"))
    if role not in ROLES:
        raise HarnessError(f"unknown role={role!r}{_suggest(role, list(ROLES))}; use one of {', '.join(ROLES)} "
                           "(holdout rows are never fitted, tune rows belong to the LR sweep)")


def parse_budget(value: Any) -> float:
    """A budget in FLOPs as a positive finite float, or a HarnessError saying how to write one."""
    try:
        budget = float(value)
    except (TypeError, ValueError):
        raise HarnessError(f"budget={value!r} is not a number; give FLOPs like budget=1e12") from None
    if not math.isfinite(budget) or budget <= 0:
        raise HarnessError(f"budget={value!r} must be a positive number of FLOPs, e.g. budget=1e12")
    return budget


def _listed_budget(key: str, b: Any) -> float:
    """One entry of a list of budgets (sweep.budgets, sweep.holdout.budgets) as FLOPs, or a HarnessError naming key."""
    try:
        return parse_budget(b)
    except HarnessError:
        raise HarnessError(f"{key} holds {b!r}, not a positive number of FLOPs; use e.g. {key}=[1e12,3e12]") from None


def sweep_budgets(sc: Any) -> list[float]:
    """sweep.budgets, sorted and deduplicated; a single value counts as a list of one."""
    raw = sc.get("budgets")
    if raw is not None and not isinstance(raw, (list, tuple, ListConfig)):
        raw = [raw]  # a single budget (sweep.budgets=1e12) or a typo (sweep.budgets=abc), not its characters
    if raw is None or len(raw) == 0:
        raise HarnessError("sweep.budgets is empty; give FLOP budgets like sweep.budgets=[1e12,3e12,1e13]")
    return sorted({_listed_budget("sweep.budgets", b) for b in raw})


def as_list(value: Any) -> list[Any]:
    """A config value as a list: None -> [], a scalar -> [it], a list (or ListConfig) -> its items."""
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def show(value: Any) -> str:
    """A config value as the user wrote it (lists in brackets)."""
    if value is None or isinstance(value, (str, int, float)):
        return str(value)
    return "[" + ",".join(str(v) for v in as_list(value)) + "]"


def seed_list(raw: Any, default: int, key: str) -> list[int]:
    """Seeds as distinct integers: null -> [default] (the run's seed); an empty list, a non-integer or a repeat is
    a HarnessError naming key (an empty list would silently train the run's seed, a repeat the same run twice)."""
    if raw is None:
        return [default]
    seeds = as_list(raw)
    if not seeds:
        raise HarnessError(f"{key}=[] names no seed; give e.g. {key}=[0,1], or null for the run's seed")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds) or len(set(seeds)) != len(seeds):
        raise HarnessError(f"{key}={show(raw)} must be distinct integers; use e.g. {key}=[0,1], or null for the "
                           "run's seed")
    return [int(x) for x in seeds]


def sizes_per_budget(raw: Any) -> int:
    """sweep.sizes_per_budget, refused below 3 (a parabola needs three points)."""
    return _count("sweep.sizes_per_budget", raw, 3, "an integer >= 3: an IsoFLOP parabola needs at least 3 sizes "
                  "per budget (5 or more give its bootstrap room)")


def sizes_warning(k: int) -> list[str]:
    """A warning when each budget gets exactly 3 sizes: the parabola then passes through them exactly, so
    resampling them cannot move it and Approach 2's bootstrap intervals come out zero-width."""
    if k != 3:
        return []
    return ["sweep.sizes_per_budget=3: a parabola through exactly 3 sizes fits them exactly, so Approach 2's "
            "bootstrap intervals come out zero-width (no measure of their uncertainty); use sweep.sizes_per_budget>=4 "
            "(5 or more preferred)"]


def grid_prior(sc: Any) -> tuple[float, float]:
    """(sweep.tokens_per_param, sweep.spread): the prior optimum's tokens per parameter (> 0) and the factor in N
    the grid spans around it (> 1), or a HarnessError naming the setting."""
    r = number_in("sweep.tokens_per_param", sc.get("tokens_per_param"), lambda x: 0 < x < math.inf,
               "a positive number: the prior optimum's tokens per parameter (~20 in Hoffmann et al. 2022)")
    spread = number_in("sweep.spread", sc.get("spread"), lambda x: 1 < x < math.inf,
                    "a number > 1: the factor in N the sizes of a budget span around the prior optimum (e.g. 8)")
    return r, spread


def holdout_multiples(h: Any) -> list[float]:
    """sweep.holdout.multiples (or the single-element alias `multiple`), each a number > 1, sorted, unique."""
    key = "multiples" if h.get("multiples") is not None else "multiple"
    raw = as_list(h.get(key))
    fix = (f"sweep.holdout.{key}={show(h.get(key))} must be numbers > 1 (multiples of the largest sweep budget); "
           "use e.g. sweep.holdout.multiples=[2,4,8], or absolute FLOPs with sweep.holdout.budgets=[...]")
    try:
        multiples = [float(m) for m in raw]
    except (TypeError, ValueError):
        raise HarnessError(fix) from None
    if not multiples or not all(math.isfinite(m) and m > 1 for m in multiples):
        raise HarnessError(fix)
    return sorted(set(multiples))


def target_budgets(cfg: Any) -> list[float]:
    """The held-out ladder's budgets, ascending: sweep.holdout.budgets (or budget) as absolute FLOPs if set, else
    each of sweep.holdout.multiples (or multiple) x the largest sweep budget."""
    h = cfg.sweep.holdout
    key = "budgets" if h.get("budgets") is not None else "budget"
    if h.get(key) is not None:
        budgets = [_listed_budget(f"sweep.holdout.{key}", b) for b in as_list(h.get(key))]
        if not budgets:
            raise HarnessError("sweep.holdout.budgets=[] names no budget; give FLOPs like [1e13] or use multiples")
        return sorted(set(budgets))
    largest = sweep_budgets(cfg.sweep)[-1]
    return [m * largest for m in holdout_multiples(h)]


def holdout_seeds(cfg: Any) -> list[int]:
    """Seeds of every held-out run: sweep.holdout.seeds (repeats measure the held-out run's own seed noise), else
    the run's seed."""
    return seed_list(cfg.sweep.holdout.get("seeds"), int(cfg.seed), "sweep.holdout.seeds")


def check_holdout(cfg: Any) -> list[float]:
    """The held-out ladder's budgets after every held-out setting is checked (budgets, multiples, seeds): what
    harness-validate checks first, and the sweep's dry run too, so a bad ladder stops before the grid trains."""
    budgets = target_budgets(cfg)
    holdout_seeds(cfg)
    return budgets
