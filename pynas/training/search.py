"""The search loop: steps of an algorithm over train/valid loaders, with logging,
atomic checkpoints and exact resume.

The loop owns no method-specific logic: an algorithm exposes ``step``,
``end_epoch``, ``epochs``, ``epoch``, ``genotype``, ``arch_snapshot`` and
``state_dict``/``load_state_dict``. Checkpoints carry the algorithm (supernet,
optimisers, schedules), both loaders' cursors and generators, every global
random state and the partial epoch's running sums, so a run killed at any
step and resumed produces the same numbers as one that never stopped.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .metrics_log import MetricsLog
from .progress import Progress

CHECKPOINT = "checkpoint.pt"


def _is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


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
        self.main = _is_main_process()
        self.log = MetricsLog(self.out_dir / "metrics.jsonl",
                              tensorboard_dir=self.out_dir / "tensorboard" if tensorboard else None) \
            if self.main else None
        self.sums = self._zero_sums()
        self.search_seconds = 0.0
        self.history: list[dict] = []

    @staticmethod
    def _zero_sums() -> dict:
        return {"loss": 0.0, "correct": 0, "count": 0, "steps": 0}

    # -- checkpointing -------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def _save(self) -> None:
        if not self.main:
            return
        save_checkpoint(self.checkpoint_path, {
            "algorithm": self.algorithm.state_dict(),
            "train_loader": self.train_loader.state_dict(),
            "valid_loader": self.valid_loader.state_dict(),
            "rng": rng_state(),
            "sums": dict(self.sums),
            "search_seconds": self.search_seconds,
            "history": self.history,
        })

    def resume(self) -> bool:
        """Load the run dir's checkpoint if there is one; returns whether it did."""
        if not self.checkpoint_path.is_file():
            return False
        state = load_checkpoint(self.checkpoint_path)
        self.algorithm.load_state_dict(state["algorithm"])
        self.train_loader.load_state_dict(state["train_loader"])
        self.valid_loader.load_state_dict(state["valid_loader"])
        set_rng_state(state["rng"])
        self.sums = dict(state["sums"])
        self.search_seconds = float(state["search_seconds"])
        self.history = list(state["history"])
        return True

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
        algo = self.algorithm
        steps_per_epoch = len(self.train_loader)
        if self.max_steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, self.max_steps_per_epoch)
        while algo.epoch < algo.epochs:
            epoch = algo.epoch
            bar = Progress(steps_per_epoch, prefix=f"epoch {epoch + 1}/{algo.epochs}", enabled=self.progress and self.main)
            start = time.perf_counter()
            stage_cut = False
            for train_batch in self.train_loader:
                metrics = algo.step(train_batch, self._next_valid())
                self.sums["loss"] += float(metrics["loss"]) * int(metrics["count"])
                self.sums["correct"] += int(metrics["correct"])
                self.sums["count"] += int(metrics["count"])
                self.sums["steps"] += 1
                done = self.sums["steps"]
                bar.update(done, samples=self.sums["count"], loss=self.sums["loss"] / self.sums["count"],
                           acc=100.0 * self.sums["correct"] / self.sums["count"])
                if self.main and algo.global_step % self.log_every == 0:
                    self.log.write("step", algo.global_step, epoch=epoch, loss=float(metrics["loss"]),
                                   **({"arch_loss": float(metrics["arch_loss"])} if "arch_loss" in metrics else {}))
                stage_cut = bool(getattr(algo, "stage_done", lambda: False)())
                if done >= steps_per_epoch or stage_cut:
                    break
                if self.checkpoint_every and algo.global_step % self.checkpoint_every == 0:
                    self.search_seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    self._save()
            if stage_cut or self.sums["steps"] >= steps_per_epoch:
                # A capped or cut epoch leaves the loader mid-epoch: start the next one cleanly.
                self.train_loader.set_epoch(self.train_loader.epoch + (1 if self.train_loader.position else 0))
            self.search_seconds += time.perf_counter() - start
            self._end_epoch(epoch)
        self.log.close() if self.log else None
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
    """Atomic JSON write (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)
