"""The search loop: steps of an algorithm over train/valid loaders, with logging,
atomic checkpoints and exact resume.

The loop owns no method-specific logic: an algorithm exposes ``step``,
``end_epoch``, ``epochs``, ``epoch``, ``genotype``, ``arch_snapshot`` and
``state_dict``/``load_state_dict``. Checkpoints carry the algorithm (supernet,
optimisers, schedules), both loaders' cursors and generators, every global
random state and the partial epoch's running sums, so a run killed at any
step and resumed produces the same numbers as one that never stopped.

Data-parallel (torchrun, :mod:`pynas.training.distributed`): every rank runs
this loop on its shard of each global batch; the algorithms average
gradients, the loop averages batch-norm running statistics after each step
(so every rank's supernet stays identical) and sums the logged metrics over
ranks. Only rank 0 writes files; a checkpoint is written by rank 0 while the
others wait at a barrier, and it restores every rank: the algorithm, the
loaders and the metric sums are the same on all ranks by construction, and
the global random states, which differ per rank on purpose (each rank draws
its own dropout masks), are gathered into it rank by rank.

Stopping (:mod:`pynas.training.guard`): while :meth:`SearchRunner.run` runs,
SIGTERM and SIGINT are recorded, not fatal; at the next step boundary every
rank agrees to stop, the checkpoint is written as at ``checkpoint_every``
and :class:`~pynas.training.guard.Preempted` is raised (the CLI exits with
128 + the signal's number; rerunning resumes exactly). After every step the
loss, gradients, weights, architecture parameters and batch-norm statistics
are checked, and again before every save:
:class:`~pynas.training.guard.NonFiniteError` stops the run before a
non-finite state can replace the last good checkpoint.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from . import distributed
from .guard import FiniteCheck, NonFiniteError, Preempted, StopSignals
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .metrics_log import MetricsLog
from .progress import Progress

CHECKPOINT = "checkpoint.pt"


def _mix(*parts: int) -> int:
    """One 63-bit seed from ints (SplitMix64 finalizer per part)."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        z = (state ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state = z ^ (z >> 31)
    return state & ((1 << 63) - 1)


class SearchRunner:
    def __init__(
        self,
        *,
        algorithm: Any,
        train_loader: Any,
        valid_loader: Any,
        out_dir: Path,
        checkpoint_every: int = 0,
        max_steps_per_epoch: Optional[int] = None,
        log_every: int = 50,
        progress: bool = True,
        tensorboard: bool = True,
        on_epoch_end: Optional[Callable[[dict], None]] = None,
        stop: Optional[StopSignals] = None,
    ):
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be a non-negative int (steps; 0 = epoch ends only), "
                             f"got {checkpoint_every!r}")
        if max_steps_per_epoch is not None and (not isinstance(max_steps_per_epoch, int) or max_steps_per_epoch < 1):
            raise ValueError(f"max_steps_per_epoch must be a positive int or None, got {max_steps_per_epoch!r}")
        self.algorithm = algorithm
        self.train_loader = train_loader
        self.valid_loader = valid_loader
        self.out_dir = Path(out_dir)
        self.checkpoint_every = checkpoint_every
        self.max_steps_per_epoch = max_steps_per_epoch
        self.log_every = max(int(log_every), 1)
        self.progress = progress
        self.on_epoch_end = on_epoch_end
        # SIGTERM/SIGINT handling for run()'s duration; a command holding one for longer passes it in.
        self.stop = stop if stop is not None else StopSignals()
        self.finite = FiniteCheck()
        self.rank, self.world_size = distributed.world()
        self.main = self.rank == 0
        self.log = MetricsLog(self.out_dir / "metrics.jsonl",
                              tensorboard_dir=self.out_dir / "tensorboard" if tensorboard else None) \
            if self.main else None
        self.sums = self._zero_sums()
        self.search_seconds = 0.0
        self.history: list[dict] = []
        self._rng_split = False  # whether the global random streams were made per-rank (done once per run)

    @staticmethod
    def _zero_sums() -> dict:
        return {"loss": 0.0, "correct": 0, "count": 0, "steps": 0}

    # -- checkpointing -------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def _save(self) -> None:
        # Every rank takes part (the random states are gathered); rank 0 writes; the barrier keeps the
        # others from running ahead, so once any rank is past a save the file on disk is the new one.
        # A non-finite state never replaces the last good checkpoint (every rank checks: a collective).
        self._check_state(f"before writing the checkpoint of global step {self.algorithm.global_step}")
        rng = rng_state()
        per_rank = distributed.all_gather_object(rng) if self.world_size > 1 else None
        if self.main:
            payload = {
                "algorithm": self.algorithm.state_dict(),
                "train_loader": self.train_loader.state_dict(),
                "valid_loader": self.valid_loader.state_dict(),
                "rng": rng,
                "sums": dict(self.sums),
                "search_seconds": self.search_seconds,
                "history": self.history,
                "world_size": self.world_size,
            }
            if per_rank is not None:
                payload["rng_per_rank"] = per_rank
            save_checkpoint(self.checkpoint_path, payload)
        distributed.barrier()

    def resume(self) -> bool:
        """Load the run dir's checkpoint if there is one, on every rank; returns whether it did.

        Under torchrun rank 0 decides whether there is a checkpoint and every
        rank loads the same file, so the run dir must be on a file system
        every rank sees (a shared one on several nodes).
        """
        found = distributed.broadcast_object(self.checkpoint_path.is_file())
        if not found:
            return False
        missing = distributed.all_reduce_sum(float(not self.checkpoint_path.is_file()))
        if float(missing) > 0:
            raise RuntimeError(f"{self.checkpoint_path}: rank 0 resumes from this checkpoint but {int(missing)} "
                               f"rank(s) cannot see it; put the run dir on a file system shared by every rank")
        state = load_checkpoint(self.checkpoint_path)
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size:
            raise ValueError(f"{self.checkpoint_path} was written by a run of {saved_world} process(es), this one "
                             f"has {self.world_size}: the global batch and the per-rank random streams would "
                             f"differ, so resuming would not reproduce the run; relaunch with "
                             f"--nproc_per_node={saved_world}")
        try:
            self.algorithm.load_state_dict(state["algorithm"])
            self.train_loader.load_state_dict(state["train_loader"])
            self.valid_loader.load_state_dict(state["valid_loader"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
            # The commands compare configs first; this catches a library caller's mismatch (and a payload
            # that is a dict but not a search checkpoint) with one line, not load_state_dict's listing.
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{self.checkpoint_path} holds another algorithm, supernet or data than this run's "
                             f"(start it in another run dir): {first[:300]}") from None
        set_rng_state(state["rng_per_rank"][self.rank] if "rng_per_rank" in state else state["rng"])
        self._rng_split = True  # the saved streams are already per rank
        self.sums = dict(state["sums"])
        self.search_seconds = float(state["search_seconds"])
        self.history = list(state["history"])
        return True

    def _start_distributed(self) -> None:
        """Make every rank start from rank 0's supernet, and give each rank its own global random stream.

        The supernet is broadcast (ranks build it from the same seed, this
        makes sure). The global generators (dropout masks and other
        per-sample noise; path sampling and data order use their own
        generators) are re-seeded from a number every rank draws alike,
        mixed with the rank, so ranks do not draw the same masks for their
        different samples. Done once per run, not after a resume (the
        checkpoint restores each rank's own stream).
        """
        if self.world_size == 1:
            return
        distributed.broadcast_parameters(self.algorithm.supernet)
        if not self._rng_split:
            base = int(torch.randint(0, 2 ** 62, (1,)))
            seed = _mix(base, self.rank)
            random.seed(seed)
            np.random.seed(seed % 2 ** 32)
            torch.manual_seed(seed)  # also seeds every CUDA device
            self._rng_split = True

    def _reduce_metrics(self, metrics: dict) -> dict:
        """This step's metrics summed over ranks: loss x count, correct, count (and the arch loss's mean)."""
        count = int(metrics["count"])
        values = [float(metrics["loss"]) * count, float(metrics["correct"]), float(count)]
        if "arch_loss" in metrics:
            values.append(float(metrics["arch_loss"]))
        if self.world_size > 1:
            values = distributed.all_reduce_sum(torch.tensor(values, dtype=torch.float64)).tolist()
        step = {"loss_sum": values[0], "correct": int(round(values[1])), "count": int(round(values[2]))}
        # The step's mean loss over the global batch (in one process: the algorithm's own number, as logged before).
        step["loss"] = float(metrics["loss"]) if self.world_size == 1 else values[0] / max(step["count"], 1)
        if "arch_loss" in metrics:
            step["arch_loss"] = values[3] / self.world_size
        return step

    # -- guards --------------------------------------------------------------------------
    def _arch_tensors(self) -> dict:
        """Architecture parameters the algorithm keeps outside its supernet (DSNAS's per-layer alphas)."""
        alpha = getattr(self.algorithm, "alpha", None)
        if isinstance(alpha, (list, tuple)) and all(isinstance(a, torch.Tensor) for a in alpha):
            return {f"alpha[{i}]": a for i, a in enumerate(alpha)}
        return {}

    def _scaler(self):
        """The algorithm's GradScaler (FTSO keeps it on its current DARTS stage), or None."""
        for owner in (self.algorithm, getattr(self.algorithm, "search", None)):
            scaler = getattr(owner, "scaler", None)
            if isinstance(scaler, torch.amp.GradScaler):
                return scaler
        return None

    def _where(self, epoch: int, steps_per_epoch: int) -> str:
        return (f"at epoch {epoch + 1}/{self.algorithm.epochs}, step {self.sums['steps']}/{steps_per_epoch} "
                f"(global step {self.algorithm.global_step})")

    def _check_step(self, loss: float, where: str) -> None:
        try:
            self.finite.step(loss, self.algorithm.supernet, extra=self._arch_tensors(), scaler=self._scaler(),
                             where=where)
        except NonFiniteError as err:
            raise self._kept(err) from None

    def _check_state(self, where: str) -> None:
        try:
            self.finite.state(self.algorithm.supernet, extra=self._arch_tensors(), where=where)
        except NonFiniteError as err:
            raise self._kept(err) from None

    def _kept(self, err: NonFiniteError) -> NonFiniteError:
        """``err`` saying what became of the checkpoint (nothing is written after a non-finite value)."""
        note = (f"{self.checkpoint_path} (the last good checkpoint) was left as it was"
                if self.checkpoint_path.is_file() else "no checkpoint had been written yet")
        return NonFiniteError(err.what, where=err.where, note=note)

    def _stop_if_asked(self, where: str, *, saved: bool, start: Optional[float] = None) -> None:
        """At a step boundary: if a stop signal arrived (on any rank), save unless just saved, then raise."""
        signum = self.stop.should_stop()
        if not signum:
            return
        if not saved:
            if start is not None:
                self.search_seconds += time.perf_counter() - start
            self._save()
        raise Preempted(signum, checkpoint=self.checkpoint_path, where=where)

    # -- the loop --------------------------------------------------------------------
    def _next_valid(self):
        if not hasattr(self, "_valid_iter"):
            self._valid_iter = iter(self.valid_loader)
        try:
            return next(self._valid_iter)
        except StopIteration:  # the valid half cycles, as DARTS's loader pairing does
            self._valid_iter = iter(self.valid_loader)
            return next(self._valid_iter)

    def run(self) -> dict:
        """Train to the last epoch; raises :class:`~pynas.training.guard.Preempted` (checkpoint written)
        on SIGTERM/SIGINT and :class:`~pynas.training.guard.NonFiniteError` (nothing written) on NaN/Inf."""
        try:
            with self.stop:
                return self._run()
        finally:
            self.log.close() if self.log else None

    def _run(self) -> dict:
        algo = self.algorithm
        steps_per_epoch = len(self.train_loader)
        if self.max_steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, self.max_steps_per_epoch)
        self._start_distributed()
        signum = self.stop.should_stop()  # a signal during start-up: nothing new to save
        if signum:
            found = self.checkpoint_path.is_file()
            raise Preempted(signum, checkpoint=self.checkpoint_path if found else None, written=False,
                            where=f"before the first step (epoch {algo.epoch + 1}/{algo.epochs}, global step "
                                  f"{algo.global_step})")
        while algo.epoch < algo.epochs:
            epoch = algo.epoch
            bar = Progress(steps_per_epoch, prefix=f"epoch {epoch + 1}/{algo.epochs}", enabled=self.progress and self.main)
            start = time.perf_counter()
            stage_cut = False
            for train_batch in self.train_loader:
                metrics = self._reduce_metrics(algo.step(train_batch, self._next_valid()))
                if self.world_size > 1:
                    distributed.sync_buffers(algo.supernet)
                # The loss was read (and summed over ranks) above: the check adds one host copy.
                self._check_step(metrics["loss"], f"at epoch {epoch + 1}/{algo.epochs}, step "
                                                  f"{self.sums['steps'] + 1}/{steps_per_epoch} (global step "
                                                  f"{algo.global_step})")
                self.sums["loss"] += metrics["loss_sum"]
                self.sums["correct"] += metrics["correct"]
                self.sums["count"] += metrics["count"]
                self.sums["steps"] += 1
                done = self.sums["steps"]
                bar.update(done, samples=self.sums["count"], loss=self.sums["loss"] / self.sums["count"],
                           acc=100.0 * self.sums["correct"] / self.sums["count"])
                if self.main and algo.global_step % self.log_every == 0:
                    self.log.write("step", algo.global_step, epoch=epoch, loss=metrics["loss"],
                                   **({"arch_loss": float(metrics["arch_loss"])} if "arch_loss" in metrics else {}))
                stage_cut = bool(getattr(algo, "stage_done", lambda: False)())
                if done >= steps_per_epoch or stage_cut:
                    break  # the epoch's end saves (and checks for a stop) below
                saved = False
                if self.checkpoint_every and algo.global_step % self.checkpoint_every == 0:
                    self.search_seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    self._save()
                    saved = True
                # A stop signal (on any rank: one tiny all-reduce per step on several) ends the run here.
                self._stop_if_asked(self._where(epoch, steps_per_epoch), saved=saved, start=start)
            if stage_cut or self.sums["steps"] >= steps_per_epoch:
                # A capped or cut epoch leaves the loader mid-epoch: start the next one cleanly.
                self.train_loader.set_epoch(self.train_loader.epoch + (1 if self.train_loader.position else 0))
            self.search_seconds += time.perf_counter() - start
            self.finite.reset()  # once an epoch, the supernet's tensors are collected afresh (cheap insurance)
            self._end_epoch(epoch)
            self._stop_if_asked(f"after epoch {epoch + 1}/{algo.epochs} (global step {algo.global_step})", saved=True)
        return {"epochs": algo.epochs, "search_seconds": self.search_seconds, "history": self.history}

    def _end_epoch(self, epoch: int) -> None:
        algo = self.algorithm
        snapshot = algo.arch_snapshot()
        algo.end_epoch()
        sums = self.sums
        record = {
            "epoch": epoch + 1,
            "loss": sums["loss"] / max(sums["count"], 1),
            "accuracy": 100.0 * sums["correct"] / max(sums["count"], 1),
            "steps": sums["steps"],
            "search_seconds": self.search_seconds,
            "genotype": str(algo.genotype()),
            "arch": snapshot,
        }
        self.history.append({k: v for k, v in record.items() if k != "arch"})
        if self.main:
            self.log.write("epoch", algo.global_step, **record)
        self.sums = self._zero_sums()
        self._save()
        if self.on_epoch_end is not None:
            self.on_epoch_end(record)


def write_json(path: Path, payload: dict) -> None:
    """Atomic JSON write (temporary file + rename).

    The temporary name carries the process id: data-parallel ranks that all
    write the same result file each rename a whole file of their own, and
    none can rename another's half-written one away.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)
