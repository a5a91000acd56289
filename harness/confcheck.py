"""Config and filesystem mistakes as one `error:` line: Hydra's composition errors translated, the composed
config's keys and types checked against the YAML defaults of the chosen presets, OSError mapped by errno."""

from __future__ import annotations

import difflib
import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

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
