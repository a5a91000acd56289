"""Train one pack of seeds (harness.pack decides which runs share one, and says why a pack is exact)."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from harness.data import Corpus, sample_batch
from harness.ensemble import EnsembleGPT, clip_member_grads
from harness.fsutil import atomic_write, say
from harness.pack import pack_mode
from harness.plan import PlannedRun, RunContext, job_config, resolve_run
from harness.results import find_ok, sync_csv, write_record
from harness.runtime import Preemption, env_world_size
from harness.train import Trainer, lr_at, make_optimizer, prepare, run


def runtime_reason(dtype: torch.dtype, device: torch.device | None = None, mode: str = "true") -> str:
    """Why these runs do not train batched here ('' when they do): torchrun (one DDP model per process), fp16
    (one GradScaler would skip every member's step when one member overflows), or pack_seeds=auto on a CPU,
    where a batched pack of 4 seeds ran at 0.80-1.11x the speed of the same seeds one after another (1 thread,
    family d16-d72, results/bench/tiny.json), so the job trains its seeds one after another instead."""
    if mode == "auto" and device is not None and device.type == "cpu":
        return "train.pack_seeds=auto on CPU, where batching does not pay (train.pack_seeds=true forces it)"
    if env_world_size() > 1:
        return "torchrun with several processes"
    if dtype == torch.float16:
        return "fp16 (its loss scaling is per run)"
    return ""


def pack_checkpoint_path(ctxs: list[RunContext]) -> Path:
    """Where a pack of these runs checkpoints: named by a hash of its members' run_ids."""
    pid = hashlib.sha256(",".join(sorted(c.run_id for c in ctxs)).encode()).hexdigest()[:12]
    return ctxs[0].results_dir / "checkpoints" / f"pack-{pid}.pt"


class PackTrainer:
    """K Trainers (one per seed) whose training steps run as one EnsembleGPT; evaluate() and record() stay
    each member's own Trainer methods."""

    def __init__(self, ctxs: list[RunContext], tc: DictConfig, corpus: Corpus, seeds: list[int],
                 device: torch.device, dtype: torch.dtype, path: Path) -> None:
        """Build every member as harness-train would (same init and sampler seeds), then stack them; resume
        from the pack checkpoint at path if there is one."""
        self.members = [Trainer(c, tc, corpus, s, device, dtype, resume=False) for c, s in zip(ctxs, seeds)]
        m0 = self.members[0]
        self.ctx, self.tc, self.corpus, self.device, self.amp = m0.ctx, tc, corpus, m0.device, m0.amp
        self.path = path
        self.ensemble = EnsembleGPT([m.model for m in self.members]).to(self.device)
        self.opt = make_optimizer(self.ensemble, tc, self.ctx.peak_lr, self.ensemble.decay_mask())
        self.train_model = torch.compile(self.ensemble) if tc.compile else self.ensemble
        self.step_n, self.last_log, self.lr = 0, 0, self.ctx.peak_lr
        self.window_sum = torch.zeros(len(self.members), dtype=torch.float32, device=self.device)
        for k, m in enumerate(self.members):
            m.window_sum = self.window_sum[k]  # a view: a member's _close_window zeroes its slice
        if self.path.exists():
            self.resume()
        for m in self.members:  # a member that diverged before a resume keeps the step it stopped at
            m.step_n = self.step_n if m.status == "ok" else m.step_n
            m.start_step, m.last_log = min(self.step_n, m.step_n), self.last_log

    def active(self) -> list[int]:
        """The members still training (a diverged member stops where its own run would have stopped)."""
        return [k for k, m in enumerate(self.members) if m.status == "ok"]

    # ------------------------------------------------------------------------------------- step and loop
    def step(self) -> torch.Tensor:
        """One optimizer step of every member on its own next batch; returns the detached losses [K]."""
        plan, tc, B, T = self.ctx.plan, self.tc, self.members[0].batch_size, self.ctx.gcfg.seq_len
        n = plan.last_batch if self.step_n == plan.steps - 1 else B
        xs, ys = zip(*(sample_batch(self.corpus.train, B, T, m.gen) for m in self.members))
        x = torch.stack([t[:n] for t in xs]).to(self.device, non_blocking=True)
        y = torch.stack([t[:n] for t in ys]).to(self.device, non_blocking=True)
        self.lr = lr_at(self.step_n, plan.steps, self.ctx.peak_lr, float(tc.warmup_frac), float(tc.min_lr_ratio))
        for g in self.opt.param_groups:
            g["lr"] = self.lr
        with self.amp():
            losses = self.train_model(x, y)
        losses.sum().backward()  # member k's weights get the gradient of its own loss only
        if float(tc.grad_clip) > 0:
            clip_member_grads(self.ensemble, float(tc.grad_clip))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        losses = losses.detach()
        self.window_sum += losses
        self.step_n += 1
        if self.step_n % self.members[0].log_every == 0 or self.step_n == plan.steps:
            for k in self.active():
                m = self.members[k]
                m.step_n, m.last_log = self.step_n, self.last_log
                m._close_window()  # the member's own train_loss, or its status 'diverged'
            self.last_log = self.step_n
        return losses

    def train(self) -> PackTrainer:
        """Step until the plan is done or every member diverged, checkpointing every train.checkpoint_every_s
        and on a preemption signal (then exit 143, as harness.train does); then evaluate each member."""
        c, every = self.ctx, float(self.tc.checkpoint_every_s)
        bar = tqdm(total=c.plan.steps, initial=self.step_n, unit="step", leave=False, dynamic_ncols=True,
                   desc=f"{c.name} {c.budget:.2g}F x{len(self.members)} seeds", disable=not self.tc.progress)
        t0 = last_ckpt = time.time()
        with Preemption(self.members[0].ddp, self.device) as preemption, bar:
            while self.step_n < c.plan.steps and self.active():
                self.step()
                self._curves()
                bar.update(1)
                if self.last_log == self.step_n:
                    bar.set_postfix(loss=" ".join(f"{m.train_loss:.3f}" for m in self.members))
                if preemption.requested():
                    self.checkpoint()
                    say(f"[harness] preempted at step {self.step_n}/{c.plan.steps}; checkpoint saved to {self.path}")
                    preemption.hand_on()
                if every > 0 and time.time() - last_ckpt > every:
                    self.checkpoint()
                    last_ckpt = time.time()
        self.finish(time.time() - t0)
        return self

    def _curves(self) -> None:
        """Each member's learning curve (harness.curves): a train point per log window; before a val point the
        member's GPT gets its current weights, since its curve evaluates that model."""
        logged = self.last_log == self.step_n
        for k in self.active():
            m = self.members[k]
            if self.step_n in m.curves.points:
                m.model.load_state_dict(self.ensemble.member_state(k))
            m.curves.after_step(self.step_n, logged, m.train_loss, self.lr)

    def finish(self, seconds: float) -> None:
        """Hand each member its own weights back and evaluate it (an ok member only, as harness.train does)."""
        for k, m in enumerate(self.members):
            m.train_seconds = seconds
            if m.status == "ok":
                m.model.load_state_dict(self.ensemble.member_state(k))
                m.step_n = self.step_n
                m.evaluate()

    # ------------------------------------------------------------------------------------- checkpoints
    def checkpoint(self) -> None:
        """Save the pack (weights, moments, every sampler, the members' log windows) atomically."""
        state = {"model": self.ensemble.state_dict(), "opt": self.opt.state_dict(), "step": self.step_n,
                 "gens": [m.gen.get_state() for m in self.members], "rng": torch.get_rng_state(),
                 "window_sum": self.window_sum.detach().cpu().clone(), "last_log": self.last_log,
                 "members": [{"run_id": m.ctx.run_id, "train_loss": m.train_loss, "status": m.status,
                              "error": m.error, "step": m.step_n} for m in self.members]}
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(self.path, [buf.getbuffer()])

    def resume(self) -> None:
        """Continue from the pack's checkpoint (weights_only: a results dir may be shared, loading runs no code)."""
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if [s["run_id"] for s in state["members"]] != [m.ctx.run_id for m in self.members]:
            raise ValueError(f"{self.path} belongs to another pack")
        self.ensemble.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        for m, g, s in zip(self.members, state["gens"], state["members"]):
            m.gen.set_state(g)
            m.train_loss, m.status, m.error = float(s["train_loss"]), str(s["status"]), str(s["error"])
            m.step_n = int(s["step"])
        torch.set_rng_state(state["rng"])
        self.step_n, self.last_log = int(state["step"]), int(state["last_log"])
        self.window_sum.copy_(state["window_sum"].to(self.device))
        say(f"[harness] resuming pack of {len(self.members)} seeds ({self.ctx.name} @ {self.ctx.budget:.3g} FLOPs) "
            f"from checkpoint at step {self.step_n}/{self.ctx.plan.steps}")


def _fallback(jobs: list[DictConfig], reason: str) -> list[dict[str, Any]]:
    """Train the runs one after another, as harness-train would, saying why they are not packed."""
    say(f"[harness] training {len(jobs)} seeds unpacked: {reason}")
    return [run(j) for j in jobs]


def _contexts(jobs: list[DictConfig]) -> tuple[list[RunContext], Corpus, torch.device, torch.dtype]:
    """Resolve every member: the first through harness.train.prepare (the checks harness.train.run makes, the
    corpus opened once), the others, which differ only in seed, against that corpus."""
    ctx, corpus, device, dtype = prepare(jobs[0], 1)
    rest = [resolve_run(j, corpus.fingerprint, corpus.vocab_size, 1) for j in jobs[1:]]
    return [ctx, *rest], corpus, device, dtype


def _to_train(ctxs: list[RunContext], done: list[dict[str, Any] | None], path: Path) -> list[int]:
    """Which members the pack trains: those in its checkpoint (a kill while rows were written leaves some of
    them recorded: they train along, and their rows are kept), else those without an ok row."""
    if path.exists():
        ids = [s["run_id"] for s in torch.load(path, map_location="cpu", weights_only=True)["members"]]
        return [i for i, c in enumerate(ctxs) if c.run_id in ids]
    return [i for i, d in enumerate(done) if d is None]


def run_pack(cfg: DictConfig, runs: list[PlannedRun]) -> list[dict[str, Any]]:
    """Train the planned runs of one (budget, size), one per seed, as one pack; write and return one result row
    per seed. Seeds with an ok row are skipped (unless force); with one seed left it trains unpacked."""
    started = time.time()
    jobs = [job_config(cfg, pr) for pr in runs]
    ctxs, corpus, device, dtype = _contexts(jobs)
    reason = runtime_reason(dtype, device, pack_mode(cfg.train))
    if reason:
        return _fallback(jobs, reason)
    path = pack_checkpoint_path(ctxs)  # named by every planned seed, whichever of them still train
    done = [None if cfg.get("force", False) else find_ok(c.results_dir, c.run_id) for c in ctxs]
    keep = _to_train(ctxs, done, path)
    if len(keep) < 2:
        sync_csv(ctxs[0].results_dir)
        return [d if d is not None else run(jobs[i]) for i, d in enumerate(done)]
    trainer = PackTrainer([ctxs[i] for i in keep], cfg.train, corpus, [int(jobs[i].seed) for i in keep], device,
                          dtype, path).train()
    records = list(done)
    for i, m in zip(keep, trainer.members):
        if done[i] is None:
            records[i] = m.record(str(jobs[i].role), started)
            write_record(m.ctx.results_dir, records[i])
            m.curves.close(records[i])
            m.ctx.checkpoint_path.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return [r for r in records if r is not None]
