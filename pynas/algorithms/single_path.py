"""Supernet training by path sampling, shared by SPOS, FairNAS, GreedyNAS, RandomNAS and EPS.

Each step asks the method's sampler for the paths to train on this batch
(one for SPOS/RandomNAS/EPS, m for FairNAS and GreedyNAS) and takes one SGD
step on the sum of their losses: FairNAS accumulates the m paths' gradients
before one update (Chu et al., Alg. 1), GreedyNAS trains its k kept paths
the same way. The m paths run in one batched pass (``forward_paths``: each
path's rows keep their own batch-norm statistics), which gives the same
gradients as m separate forward/backward passes.

After training, :meth:`SinglePathSearch.search` runs the method's search
strategy (evolution, random search) with a caller-given batched scorer,
normally :func:`pynas.evaluation.evaluate_paths` with BN recalibration.

Data-parallel training (torchrun; see :mod:`pynas.training.distributed`)
-------------------------------------------------------------------------
Policy: **every rank draws the same paths.** The samplers are seeded from
the run's seed, identically on every rank, and every input they consume
(GreedyNAS/EPS path losses, search scores) is averaged across ranks, so
their generators, candidate pools and populations stay equal. A step then
trains the same path(s) on every rank's shard and averages the gradients:
exactly a single process's step on the global batch (up to batch norm,
which normalises each shard with its own statistics), and rank 0's
checkpoint (sampler state included) restores every rank.

The alternative, SPOS's multi-GPU practice of one independent path per GPU
(more paths per step), would make every rank's sampler state different, so
exact resume would need every rank's state in the checkpoint, and the
FairNAS/GreedyNAS/EPS bookkeeping (strict fairness over one step's m
paths, pools and populations ranked by losses) has no single owner when
ranks draw their own paths. Gradient averaging itself does not depend on
this choice: ops trained on some ranks only are handled
(:func:`~pynas.training.distributed.all_reduce_gradients`).
"""
from __future__ import annotations

import inspect
import math
from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pynas.spaces.path_space import Constraint, PathSpace
from pynas.training import distributed
from pynas.training.train import parameter_groups

from ._validate import check_choice, check_nonneg_float, check_positive_float, check_positive_int

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
ScoreFn = Callable[[Tensor], Tensor]


def mean_over_ranks(score_fn: ScoreFn) -> ScoreFn:
    """``score_fn`` whose scores are averaged across data-parallel ranks (``score_fn`` itself in one process).

    Path samplers and search strategies take decisions from scores; when each
    rank scores on its own data shard, averaging makes every rank take the
    same decisions (with equal shards, the mean over ranks is the score on
    the union of the shards for per-sample means such as losses and
    accuracies). Scores come back on the CPU, as the strategies expect.
    """
    if distributed.world()[1] == 1:
        return score_fn

    def averaged(paths: Tensor) -> Tensor:
        scores = torch.as_tensor(score_fn(paths))
        dtype = scores.dtype if scores.is_floating_point() else torch.float64
        return distributed.all_reduce_mean(scores.to(dtype)).cpu()

    return averaged


def linear_decay(epochs: int, steps_per_epoch: Optional[int]):
    """SPOS's schedule: the learning rate falls linearly to 0 over training (per epoch here)."""
    return lambda epoch: max(0.0, 1.0 - epoch / epochs)


def warmup_then_decay(*, schedule: str, lr: float, min_lr: float, total: int, warmup: int,
                      warmup_start: float) -> Callable[[int], float]:
    """LR multiplier of unit ``t`` (an epoch or an iteration): a linear warm-up from ``warmup_start`` to
    ``lr`` over ``warmup`` units, then ``schedule`` over the remaining ``total - warmup`` units.

    This is the closed form of DSNAS's ``devkit/core/lr_scheduler.py`` (lines 66-88: linear warm-up
    ``warmup_lr + (base_lr - warmup_lr) * T / warmup_iters``, then cosine from ``base_lr`` to
    ``targetlr`` over ``max_iter - warmup_iters``), with ``warmup=0`` the plain per-unit cosine of
    EPS's searcher (``CosineAnnealingLR(optimizer, total_iters)`` stepped every iteration,
    ``search_cnn_nasbench/searcher.py`` lines 265, 357). Linear decays to 0 (SPOS), cosine to
    ``min_lr``; units past ``total`` keep the final rate.
    """
    def factor(t: int) -> float:
        if t < warmup:
            return (warmup_start + (lr - warmup_start) * t / warmup) / lr
        s = min(1.0, (t - warmup) / max(total - warmup, 1))
        if schedule == "linear":
            return 1.0 - s
        if schedule == "cosine":
            return (min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * s))) / lr
        return 1.0

    return factor


class SinglePathSearch:
    """Owns a single-path supernet, its SGD optimiser and schedule, and a path sampler.

    Subclasses set ``sampler`` (an object with ``next_paths(score_fn=None)``
    returning ``[m, L]`` paths, ``state_dict``/``load_state_dict``) and the
    search strategy used after training.
    """

    name = "single-path"
    strategy = "evolution"
    #: the paper's learning rate at ``base_batch_size`` (used when ``lr`` is None)
    base_lr = 0.5
    #: the method's own evaluation protocol for ``pynas search`` (keys of its ``evaluation`` section)
    evaluation_defaults: Dict[str, Any] = {}

    def __init__(
        self,
        *,
        space: PathSpace,
        epochs: int,
        lr: Optional[float],
        momentum: float,
        weight_decay: float,
        batch_size: Optional[int] = None,
        base_batch_size: int = 1024,
        label_smoothing: float = 0.0,
        grad_clip: float = 0.0,
        nesterov: bool = False,
        schedule: str = "linear",
        min_lr: float = 0.0,
        no_wd_bn_bias: bool = False,
        lr_unit: str = "epoch",
        lr_warmup_epochs: int = 0,
        lr_warmup_start: float = 0.0,
        amp: str = "none",
        constraint: Optional[Constraint] = None,
        seed: int = 0,
        steps_per_epoch: Optional[int] = None,
        supernet_options: Optional[dict] = None,
        supernet: Optional[nn.Module] = None,
    ):
        if not isinstance(space, PathSpace):
            raise TypeError(f"space must be a single-path space (PathSpace), got {type(space).__name__}")
        self.space = space
        if supernet is None:
            supernet = space.build_supernet(**(supernet_options or {}))
        elif supernet_options:
            raise ValueError("give supernet or supernet_options, not both")
        self.supernet = supernet
        self.epochs = check_positive_int(epochs, "epochs")
        if steps_per_epoch is not None:
            check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.steps_per_epoch = steps_per_epoch
        self.amp = check_choice(amp, "amp", tuple(AMP_DTYPES))
        self.grad_clip = check_nonneg_float(grad_clip, "grad_clip")
        self.label_smoothing = check_nonneg_float(label_smoothing, "label_smoothing")
        if self.label_smoothing >= 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.schedule = check_choice(schedule, "schedule", ("linear", "cosine", "constant"))
        if constraint is not None and not isinstance(constraint, Constraint):
            raise TypeError(f"constraint must be a pynas Constraint or None, got {type(constraint).__name__}")
        self.constraint = constraint or Constraint()
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.seed = seed
        if lr is None:
            # The papers' rates are for their batch (SPOS: 0.5 at 1024); other batches scale linearly
            # (Goyal et al., 2017), which is how their ImageNet recipes are usually transferred.
            if batch_size is None:
                raise ValueError("lr=None (the paper's rate scaled to the batch) needs batch_size")
            lr = self.base_lr * check_positive_int(batch_size, "batch_size") / check_positive_int(
                base_batch_size, "base_batch_size")
        self.lr = check_positive_float(lr, "lr")
        self.min_lr = check_nonneg_float(min_lr, "min_lr")
        if not isinstance(no_wd_bn_bias, bool):
            raise TypeError(f"no_wd_bn_bias must be a bool, got {type(no_wd_bn_bias).__name__}")
        self.no_wd_bn_bias = no_wd_bn_bias
        weight_decay = check_nonneg_float(weight_decay, "weight_decay")
        # SPOS's optimizer exempts BN and bias parameters from weight decay (its utils.get_parameters);
        # pynas.training.train.parameter_groups makes the same split for the stand-alone retraining.
        weights = {id(p) for p in supernet.weight_parameters()}
        groups = [{**group, "params": [p for p in group["params"] if id(p) in weights]}
                  for group in parameter_groups(supernet, weight_decay=weight_decay, no_wd_bn_bias=no_wd_bn_bias)]
        self.optimizer = torch.optim.SGD([g for g in groups if g["params"]], lr=self.lr,
                                         momentum=check_nonneg_float(momentum, "momentum"),
                                         weight_decay=weight_decay, nesterov=bool(nesterov))
        # lr_unit="iteration" steps the schedule after every optimiser step (EPS's and DSNAS's code do),
        # "epoch" at every epoch end; a warm-up (DSNAS: 5 epochs from 1e-4) is counted in the same unit.
        self.lr_unit = check_choice(lr_unit, "lr_unit", ("epoch", "iteration"))
        if isinstance(lr_warmup_epochs, bool) or not isinstance(lr_warmup_epochs, int) or lr_warmup_epochs < 0:
            raise ValueError(f"lr_warmup_epochs must be an int >= 0, got {lr_warmup_epochs!r}")
        if lr_warmup_epochs >= self.epochs and lr_warmup_epochs > 0:
            raise ValueError(f"lr_warmup_epochs ({lr_warmup_epochs}) must be below epochs ({self.epochs})")
        self.lr_warmup_epochs = lr_warmup_epochs
        self.lr_warmup_start = check_nonneg_float(lr_warmup_start, "lr_warmup_start")
        if self.lr_unit == "iteration" and steps_per_epoch is None:
            raise ValueError("lr_unit='iteration' needs steps_per_epoch (the schedule's length in iterations)")
        if self.lr_unit == "iteration" or self.lr_warmup_epochs:
            per_unit = steps_per_epoch if self.lr_unit == "iteration" else 1
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_then_decay(
                schedule=self.schedule, lr=self.lr, min_lr=self.min_lr, total=self.epochs * per_unit,
                warmup=self.lr_warmup_epochs * per_unit, warmup_start=self.lr_warmup_start))
        elif self.schedule == "linear":
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_decay(self.epochs, None))
        elif self.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.epochs,
                                                                        eta_min=self.min_lr)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda epoch: 1.0)
        self.scaler = torch.amp.GradScaler(enabled=self.amp == "fp16")
        self.sampler: Any = None
        self.epoch = 0
        self.global_step = 0
        self.best_path: Optional[tuple] = None
        self.best_score: Optional[float] = None

    # -- hooks for subclasses ---------------------------------------------------------
    def training_paths(self, valid_batch) -> Tensor:
        """Paths to train on this step, ``[m, L]``."""
        return self.sampler.next_paths()

    def stage_done(self) -> bool:
        """GreedyNAS stops supernet training early once its candidate pool settles."""
        return False

    # -- training ---------------------------------------------------------------------
    def _autocast(self, device: torch.device):
        dtype = AMP_DTYPES[self.amp]
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def step(self, train_batch, valid_batch) -> dict:
        self.supernet.train()
        x, y = train_batch
        paths = self.training_paths(valid_batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast(x.device):
            if paths.shape[0] == 1:
                logits = self.supernet(x, paths[0].tolist())
                loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
                first = logits
            else:
                logits = self.supernet.forward_paths(x, paths)  # [m, n, classes]
                m, n = logits.shape[:2]
                per_row = F.cross_entropy(logits.reshape(m * n, -1), y.repeat(m),
                                          label_smoothing=self.label_smoothing, reduction="none")
                # Sum over paths of each path's mean loss: the accumulated gradients of m passes.
                loss = per_row.view(m, n).mean(1).sum()
                first = logits[0]
        self.scaler.scale(loss).backward()
        # Averaged before unscaling, so every rank's fp16 scaler sees the same gradients and keeps the same scale.
        distributed.all_reduce_gradients(self.supernet.weight_parameters())
        self.scaler.unscale_(self.optimizer)
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.supernet.weight_parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.lr_unit == "iteration":
            self.scheduler.step()
        self.global_step += 1
        return {"loss": loss.detach() / paths.shape[0], "correct": (first.detach().argmax(1) == y).sum(),
                "count": y.shape[0], "paths": paths.shape[0]}

    def end_epoch(self) -> None:
        if self.lr_unit == "epoch":
            self.scheduler.step()
        self.epoch += 1

    # -- after training ---------------------------------------------------------------
    def search(self, score_fn: ScoreFn, *, on_generation: Optional[Callable[[dict], None]] = None,
               state: Optional[dict] = None, on_state: Optional[Callable[[dict], None]] = None,
               **strategy_options: Any):
        """Run the method's search strategy with ``score_fn(paths [P, L]) -> scores [P]`` (higher is better).

        ``state``/``on_state`` let the caller checkpoint and resume the search.
        Under torchrun every rank must call this: the scores are averaged
        across ranks (:func:`mean_over_ranks`), so each rank may score on its
        own shard of the evaluation data and all of them still make the same
        choices (and save the same state).
        """
        from pynas.search import STRATEGIES, create_strategy, list_strategies

        # ``strategy`` (``--set search.strategy=NAME``) swaps the method's strategy for another registered one.
        # The method's defaults are written for its own strategy: another one gets only those it takes
        # (GreedyNAS's initial_population, say), not e.g. EPS's top_k.
        name = strategy_options.pop("strategy", None)
        name = self.strategy if name is None else name
        if not isinstance(name, str) or name not in list_strategies():
            raise ValueError(f"search.strategy must be one of {', '.join(list_strategies())}, got {name!r}")
        options = dict(self.strategy_defaults())
        if name != self.strategy:
            accepted = inspect.signature(STRATEGIES.get(name)).parameters
            options = {k: v for k, v in options.items() if k in accepted}
        options.update(strategy_options)
        strategy = create_strategy(name, space=self.space, score_fn=mean_over_ranks(score_fn),
                                   constraint=self.constraint,
                                   seed=self.seed, **options)
        if state is not None:
            strategy.load_state_dict(state)
        result = strategy.run(on_generation=on_generation, on_state=on_state)
        self.best_path, self.best_score = tuple(int(v) for v in result.best_path), float(result.best_score)
        return result

    def strategy_defaults(self) -> Dict[str, Any]:
        return {}

    # -- runner interface ---------------------------------------------------------------
    def genotype(self) -> str:
        if self.best_path is None:
            return "(not searched yet)"
        return self.space.format(self.best_path)

    def arch_snapshot(self) -> dict:
        return {"lr": self.optimizer.param_groups[0]["lr"]}

    def state_dict(self) -> dict:
        return {
            "supernet": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_path": self.best_path,
            "best_score": self.best_score,
        }

    def load_state_dict(self, state: dict) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_path = tuple(state["best_path"]) if state.get("best_path") is not None else None
        self.best_score = state.get("best_score")


def check_path_supernet(space: PathSpace, supernet: Optional[nn.Module]) -> None:
    """A given supernet must be a single-path supernet of ``space`` (None: the base class builds one)."""
    if not isinstance(space, PathSpace):
        raise TypeError(f"space must be a single-path space (PathSpace), got {type(space).__name__}")
    if supernet is None:
        return
    if not isinstance(supernet, nn.Module) or not hasattr(supernet, "weight_parameters"):
        raise TypeError(f"supernet must be a single-path supernet, got {type(supernet).__name__}")
    own = getattr(supernet, "space", None)
    if own is not None and own is not space and own != space:
        raise ValueError(f"supernet was built from {own!r}, not from space {space!r}")
