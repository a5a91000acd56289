"""Optional experiment trackers (train.tracker: none | tensorboard | wandb): each run logs its config, its learning
curve and its final row, grouped by sweep, so a sweep can be followed in the tools researchers already use;
log_summary adds one run that is not a training run (the sweep's analysis, harness.track_fits) to the same group.

Neither package is required: they come with the extras `pip install -e '.[tensorboard]'` / `'.[wandb]'`, and a
tracker whose package is missing is refused before training with the extra to install. W&B runs in offline mode
unless WANDB_MODE says otherwise (these machines have no network; `wandb sync DIR` uploads later).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Protocol

from harness.errors import HarnessError

TRACKERS = ("none", "tensorboard", "wandb")
# tracker -> (module that must import, extra that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


class Tracker(Protocol):
    """What a run hands its tracker: curve points as they come, then the final record."""

    def log_point(self, point: dict[str, Any]) -> None: ...

    def log_final(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def check_tracker(kind: str, key: str = "train.tracker") -> str:
    """The tracker name, or a HarnessError for an unknown one or one whose package is not installed (key: the
    config key the user sets, named in the message)."""
    kind = str(kind).lower()
    if kind not in TRACKERS:
        raise HarnessError(f"unknown {key}={kind!r}; use one of {', '.join(TRACKERS)}")
    if kind in PACKAGES:
        module, extra = PACKAGES[kind]
        if importlib.util.find_spec(module) is None:
            raise HarnessError(f"{key}={kind} needs the {module!r} package; install it with "
                               f"pip install -e '.[{extra}]' (or set {key}=none)")
    return kind


def _scalars(point: dict[str, Any]) -> dict[str, float]:
    """A curve point as tracker scalars: train/loss, train/lr, val/loss, val/bpb."""
    kind = point.get("kind")
    keys = ("loss", "lr") if kind == "train" else ("loss", "bpb")
    return {f"{kind}/{k}": float(point[k]) for k in keys if point.get(k) is not None}


def _final_scalars(record: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k in ("val_loss", "val_bpb", "train_loss", "flops", "tokens", "params_total", "wall_seconds",
              "tokens_per_second"):
        try:
            out[f"final/{k}"] = float(record[k])
        except (KeyError, TypeError, ValueError):
            continue
    return out


class TensorBoardTracker:
    """Event files under <dir>/<group>/<run_id> (torch.utils.tensorboard); a resumed run purges steps after its
    checkpoint, so the curve stays continuous."""

    def __init__(self, logdir: Path, group: str, name: str, config: dict[str, Any], start_step: int) -> None:
        """Open the writer and log the config as text."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(logdir) / group / name), purge_step=start_step or None)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=1, default=str) + "\n```", 0)
        self.step = start_step

    def log_point(self, point: dict[str, Any]) -> None:
        """Each scalar of a curve point at its step."""
        self.step = int(point["step"])
        for k, v in _scalars(point).items():
            self.writer.add_scalar(k, v, self.step)

    def log_final(self, record: dict[str, Any]) -> None:
        """The final row: its numbers as scalars at the last step and the whole row as text."""
        for k, v in _final_scalars(record).items():
            self.writer.add_scalar(k, v, self.step)
        self.writer.add_text("record", "```\n" + json.dumps(record, indent=1, default=str) + "\n```", self.step)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class WandbTracker:
    """A W&B run named by run_id in the sweep's group; offline (files under <dir>/wandb) unless WANDB_MODE is set."""

    def __init__(self, logdir: Path, group: str, name: str, config: dict[str, Any], start_step: int) -> None:
        """wandb.init in offline mode by default (no network needed)."""
        self.run = _wandb_init(logdir, group=group, name=name, id=name, config=config,
                               resume="allow" if start_step else None)

    def log_point(self, point: dict[str, Any]) -> None:
        """The curve point's scalars at its step."""
        self.run.log(_scalars(point), step=int(point["step"]))

    def log_final(self, record: dict[str, Any]) -> None:
        """The final row as the run's summary."""
        self.run.summary.update({k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))})

    def close(self) -> None:
        """Finish the run (offline: write its files)."""
        self.run.finish()


def make_tracker(kind: str, logdir: Path, group: str, name: str, config: dict[str, Any],
                 start_step: int = 0) -> Tracker | None:
    """The tracker of one run (None for train.tracker=none); refuses unknown or missing ones (check_tracker)."""
    kind = check_tracker(kind)
    cls = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}.get(kind)
    return None if cls is None else cls(logdir, group, name, config, start_step)


# ------------------------------------------------------------------------------------------------ summary runs
def _wandb_init(logdir: Path, **kw: Any) -> Any:
    """wandb.init under logdir, in the project WANDB_PROJECT (default harness), offline unless WANDB_MODE is set."""
    import wandb

    Path(logdir).mkdir(parents=True, exist_ok=True)
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "harness"), dir=str(logdir),
                      mode=os.environ.get("WANDB_MODE", "offline"), **kw)


def _rgb(path: Path) -> Any:
    """A PNG as an HxWx3 uint8 array (what SummaryWriter.add_image takes)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def log_summary(kind: str, logdir: Path, group: str, name: str, scalars: dict[str, float], images: dict[str, Path],
                config: dict[str, Any]) -> Path | None:
    """Log one run that is not a training run (the analysis of a sweep) to the sweep's group: its scalars (at step
    0), its PNG plots as images and its config; returns the directory its files went to (None for tracker none).
    TensorBoard: <logdir>/<group>/<name>, replacing what an earlier call logged there (purge_step=0); W&B: a new
    offline run with job_type=<name> in the group."""
    kind = check_tracker(kind, "tracker")
    if kind == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(Path(logdir) / group / name), purge_step=0)
        writer.add_text("config", "```\n" + json.dumps(config, indent=1, default=str) + "\n```", 0)
        for k, v in scalars.items():
            writer.add_scalar(k, v, 0)
        for tag, path in images.items():
            writer.add_image(tag, _rgb(path), 0, dataformats="HWC")
        writer.close()
        return Path(writer.log_dir)
    if kind == "wandb":
        import wandb

        run = _wandb_init(logdir, group=group, name=name, job_type=name, config=config)
        run.log({**scalars, **{tag: wandb.Image(str(path)) for tag, path in images.items()}}, step=0)
        run.summary.update(scalars)
        where = Path(run.dir).parent  # <logdir>/wandb/offline-run-<time>-<id>
        run.finish()
        return where
    return None
