"""SPOS, RandomNAS, FairNAS, GreedyNAS and EPS: single-path supernet training that differs only
in which paths each step trains (:mod:`pynas.search.samplers`) and in the search run afterwards.

Training recipe (all five unless the method's paper says otherwise): SPOS's
supernet training (Guo et al., ECCV 2020, Sec. 4 and its released code): SGD,
momentum 0.9, weight decay 4e-5, learning rate 0.5 at batch 1024 decayed
linearly to 0, label smoothing 0.1, 120 epochs on ImageNet. Our runs use other
batches: ``lr=None`` scales 0.5 linearly to the batch. RandomNAS (Li &
Talwalkar, UAI 2019) trains with DARTS's recipe instead (SGD 0.025 cosine to
0.001, momentum 0.9, weight decay 3e-4, batch 64, grad clip 5); EPS with its
searcher's (:class:`EPS`). FairNAS's paper was not readable past its abstract here; it uses
SPOS's recipe, a reading. SPOS itself also exempts BN and bias parameters from
weight decay (``no_wd_bn_bias``). GreedyNAS uses the recipe of OpenMMLab's
GreedyNAS configuration (open-mmlab/mmrazor pull 124,
``configs/_base_/schedules/mmcls/imagenet_bs1024_greedynas.py`` lines 2-6):
SGD lr 0.12 at batch 1024 (scaled linearly here), momentum 0.9, weight decay
4e-5 on every parameter, cosine to 1e-5 over 150,000 iterations (~120 epochs);
label smoothing 0.1 (``greedynas_supernet_mobilenet_8xb128_in1k.py`` lines
22-25).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from pynas.evaluation import path_accuracy_and_loss, path_losses, path_losses_own_batches
from pynas.search import create_sampler
from pynas.spaces.path_space import Constraint

from . import register_algorithm
from ._validate import check_nonneg_float, check_positive_float, check_positive_int
from .single_path import SinglePathSearch, mean_over_ranks

SPOS_DEFAULTS: Dict[str, Any] = dict(
    epochs=120, batch_size=1024, base_batch_size=1024, lr=None, momentum=0.9, weight_decay=4e-5,
    label_smoothing=0.1, schedule="linear")
#: SPOS's own optimizer also exempts 1-D parameters from weight decay (FairNAS keeps SPOS_DEFAULTS as it was).
SPOS_OWN_DEFAULTS: Dict[str, Any] = dict(SPOS_DEFAULTS, no_wd_bn_bias=True)
GREEDYNAS_DEFAULTS: Dict[str, Any] = dict(
    epochs=120, batch_size=1024, base_batch_size=1024, lr=None, momentum=0.9, weight_decay=4e-5,
    label_smoothing=0.1, schedule="cosine", min_lr=1e-5)
RANDOMNAS_DEFAULTS: Dict[str, Any] = dict(
    epochs=50, batch_size=64, lr=0.025, momentum=0.9, weight_decay=3e-4, grad_clip=5.0, schedule="cosine",
    min_lr=0.001)
#: EPS's searcher (search_cnn_nasbench/searcher.py lines 47-58): 80,000 iterations of batch 128 (epochs=None)
EPS_ITERATIONS = 80_000
EPS_DEFAULTS: Dict[str, Any] = dict(
    epochs=None, batch_size=128, base_batch_size=128, lr=None, momentum=0.9, weight_decay=4e-5,
    label_smoothing=0.1, schedule="cosine", no_wd_bn_bias=True, lr_unit="iteration")


def _split(kwargs: dict, names: tuple) -> dict:
    return {k: kwargs.pop(k) for k in names if k in kwargs}


def _training_constraint(options: dict, default: Constraint) -> Constraint:
    """``sampler_options['constraint']`` (a Constraint or a dict of its limits, e.g. from YAML), else ``default``."""
    value = options.pop("constraint", default)
    if value is None:
        return Constraint()
    if isinstance(value, dict):
        try:
            return Constraint(**value)
        except TypeError as error:
            raise ValueError(f"sampler_options.constraint: {error}") from None
    if not isinstance(value, Constraint):
        raise TypeError(f"sampler_options.constraint must be a Constraint, a dict of its limits or None, "
                        f"got {type(value).__name__}")
    return value


class _SampledSearch(SinglePathSearch):
    """A SinglePathSearch whose paths come from a named sampler built with ``sampler_options``."""

    sampler_name = "uniform"
    defaults: Dict[str, Any] = SPOS_DEFAULTS

    def __init__(self, *, sampler_options: Optional[dict] = None, search_options: Optional[dict] = None,
                 **kwargs: Any):
        merged = {**self.defaults, **kwargs}
        super().__init__(**merged)
        self.search_options = dict(search_options or {})
        self.sampler = create_sampler(self.sampler_name, **self.sampler_kwargs(dict(sampler_options or {})))

    def sampler_kwargs(self, options: dict) -> dict:
        return {"space": self.space, "seed": self.seed, **options}

    def strategy_defaults(self) -> Dict[str, Any]:
        return dict(self.search_options)


@register_algorithm("spos")
class SPOS(_SampledSearch):
    """Single Path One-Shot (Guo et al., ECCV 2020): uniform single-path training (Sec. 3.2), then
    evolutionary search under a FLOPs/params constraint (Sec. 3.3, Alg. 1: population 50, top 10,
    20 generations, 25 mutations with probability 0.1, 25 crossovers).

    As the authors' code (megvii-model/SinglePathOneShot, commit 36eed6c):

    * training paths are uniform among the paths the constraint admits
      (``src/Supernet/train.py`` lines 211-224: random candidates rejected
      until one is inside the training FLOPs range). The constraint is the
      run's ``constraint`` (the one the search uses) unless
      ``sampler_options.constraint`` gives a separate training range (SPOS:
      ``{min_flops: 290e6, max_flops: 360e6}`` for a 330M search, line 212);
      ``sampler_options.flops_bins`` (SPOS: 7) draws a FLOPs bin first, as
      its code does; ``max_tries``/``exhausted`` control the rejection cap
      (see :class:`pynas.search.samplers.UniformSampler`). Without a
      constraint, training is plain uniform sampling;
    * BN and bias parameters are exempt from weight decay
      (``src/Supernet/utils.py`` lines 81-95 ``get_parameters``, used at
      ``train.py`` line 135): ``no_wd_bn_bias=True``. The code's rule is
      "decay iff the name contains 'weight' and the tensor has more than one
      dimension"; pynas's (:func:`pynas.training.train.parameter_groups`)
      exempts normalisation-layer parameters and biases: the same split for
      every supernet here;
    * parameters of ops not on the step's path get no update (the code sets
      their zero gradients to None, ``train.py`` lines 229-231; pynas's
      gradients of unused ops are None already, ``zero_grad(set_to_none)``);
    * the search recalibrates BN on 200 batches of 128 training images after
      resetting the statistics, and scores top-1 on 40 batches of 200
      validation images (``src/Search/tester.py`` lines 52-70 and 81-97,
      ``src/Search/search.py`` lines 247-250): :attr:`evaluation_defaults`,
      which ``pynas search`` applies (capped to the images the run's splits
      hold, see :func:`pynas.commands.path_search.evaluation_batches`).

    Deviations: the learning rate decays linearly per epoch, not per
    iteration (``train.py`` lines 149-150, 199); a rejection run that finds
    no admitted path raises by default where the code falls back to an
    unconstrained path (``exhausted="unconstrained"`` restores that); the
    search's population and mutations are as
    :class:`pynas.search.EvolutionSearch` documents.
    """

    name = "spos"
    sampler_name = "uniform"
    strategy = "evolution"
    defaults = SPOS_OWN_DEFAULTS
    evaluation_defaults: Dict[str, Any] = dict(bn="recalibrate", recalibrate_batches=200, recalibrate_batch_size=128,
                                               eval_batches=40, eval_batch_size=200)

    def sampler_kwargs(self, options: dict) -> dict:
        constraint = _training_constraint(options, self.constraint)
        return {"space": self.space, "seed": self.seed, "constraint": constraint, **options}


@register_algorithm("randomnas")
class RandomNAS(_SampledSearch):
    """Random search with weight sharing (Li & Talwalkar, UAI 2019, Sec. 4): uniform single-path
    training, then 1000 random paths scored with the shared weights, the best 10 re-scored.

    As the authors' code (liamcli/randomNAS_release):

    * recipe: DARTS's, SGD lr 0.025 cosine to 0.001 (``min_lr``), momentum
      0.9, weight decay 3e-4, batch 64, gradient clipping 5
      (``benchmarks/cnn/darts/darts_wrapper_discrete.py`` lines 28-36, 112-113;
      ``searchers/random_weight_share.py`` line 172);
    * evaluation protocol (:attr:`evaluation_defaults`): every path is scored
      in eval mode with the supernet's **shared running BN statistics** on 10
      validation batches of 64 (``evaluate``, wrapper lines 180-197:
      ``self.model.eval()``, ``n_batches = 10``) : ``bn="running"``,
      ``eval_batches=10``, ``eval_batch_size=64``;
    * the best 10 of the 1000 are re-scored on the **whole** validation split
      (``get_eval_arch``, random_weight_share.py lines 89-110, ``split='valid'``)
      and the best of those is the answer: ``evaluation.rerank="all"``, which
      ``pynas search`` turns into the random search's ``rerank_fn``.

    Deviations: the code draws the 10 scoring batches from one running
    iterator, so every path sees other images; here every path is scored on
    the same 10 batches (a fairer comparison). The epochs default to 50
    (DARTS's search length; the code's ``--epochs`` default is 100); the
    gradient clip is DARTS's 5 (the code's ``--grad_clip`` default, 0.25, is
    its PTB setting; the CNN value is a command-line choice). The cosine is
    stepped per epoch as the code's is, but the code (PyTorch 0.3 semantics)
    steps it at the start of every epoch, the first included
    (wrapper lines 136-137), so its epoch e trains at the value pynas uses
    for epoch e + 1.
    """

    name = "randomnas"
    sampler_name = "uniform"
    strategy = "random"
    defaults = RANDOMNAS_DEFAULTS
    evaluation_defaults: Dict[str, Any] = dict(bn="running", eval_batches=10, eval_batch_size=64, rerank="all")


@register_algorithm("fairnas")
class FairNAS(_SampledSearch):
    """FairNAS (Chu et al., ICCV 2021, Sec. 3.2, Alg. 1): strict fairness: each step trains m paths
    that use every op of every layer exactly once, their gradients accumulated into one update
    (one batched pass here). Search: multi-objective NSGA-II over the supernet's accuracy and the
    space's cost (:class:`pynas.search.nsga2.NSGA2Search`, strategy ``nsga2``; ``search.objectives``:
    ``[flops]`` by default, ``[params]`` or both), under the run's constraint by constrained
    domination. ``pynas search`` writes the Pareto front to ``pareto.json`` and the most accurate
    admissible path to ``path.json``. ``search.strategy=evolution`` restores SPOS's evolution.

    Deviations: the authors release no search code (xiaomi-automl/FairNAS holds the searched
    models and verification scripts only), so NSGA-II is Deb et al.'s (2002), without the paper's
    reinforced (RL) mutation, and without a latency objective; see :mod:`pynas.search.nsga2`.
    """

    name = "fairnas"
    sampler_name = "fair"
    strategy = "nsga2"
    evaluation_defaults: Dict[str, Any] = dict(bn="recalibrate")

    def sampler_kwargs(self, options: dict) -> dict:
        return {"space": self.space, "seed": self.seed, **options}


class _ScoredSampling(_SampledSearch):
    """Samplers that rank paths by their loss on the step's validation batch (EPS; GreedyNAS ranks by
    accuracy, its own ``training_paths``).

    Under torchrun each rank's validation batch is its shard of the global
    one; the losses are averaged across ranks, so all ranks rank the paths
    alike and their samplers (pools, populations) stay equal.
    """

    def training_paths(self, valid_batch) -> Tensor:
        def score(paths: Tensor) -> Tensor:
            return path_losses(self.supernet, paths, valid_batch, amp=self.amp)

        return self.sampler.next_paths(score_fn=mean_over_ranks(score))


@register_algorithm("greedynas")
class GreedyNAS(_ScoredSampling):
    """GreedyNAS (You et al., CVPR 2020): multi-path sampling with rejection and a candidate pool,
    as OpenMMLab's mmrazor trains it (``GreedySamplerTrainLoop``; the mechanism, its sources and
    its deviations are in :class:`pynas.search.samplers.GreedySampler`):

    * after ``warmup_steps`` uniform iterations (default: 10K of 150K, scaled to
      the run's iterations), every ``top_k`` (k=5) iterations ``num_samples``
      (m=10) paths are drawn (from the pool with probability q rising 0 -> 0.8,
      else uniform ones meeting the constraint) and scored on the step's
      validation batch by **top-1 accuracy** (ties: lower loss), in one batched
      pass; all of them enter the pool (best ``pool_size`` = 1000 kept), and the
      best k are trained **one per iteration**, each its own SGD step;
    * the training constraint is the run's ``constraint`` (mmrazor's
      ``constraints_range=dict(flops=(0, 330))``, the search's 330M), or
      ``sampler_options.constraint`` (a dict of limits);
    * recipe: SGD lr 0.12 at batch 1024 (``lr=None`` scales it linearly, as
      SPOS's), momentum 0.9, weight decay 4e-5 on every parameter, cosine to
      1e-5, label smoothing 0.1 (mmrazor pull 124, see the module docstring);
    * optional early stop once the pool settles (``sampler_options.stop_interval``,
      not in mmrazor), then evolution started from the pool (Sec. 4).

    Deviations: the cosine is stepped per epoch, not per iteration; scoring uses
    one validation batch with batch statistics (mmrazor: its whole validation
    loader, running statistics).
    """

    name = "greedynas"
    sampler_name = "greedy"
    strategy = "evolution"
    evaluation_defaults: Dict[str, Any] = dict(bn="recalibrate")
    defaults = GREEDYNAS_DEFAULTS
    base_lr = 0.12

    def sampler_kwargs(self, options: dict) -> dict:
        if "total_steps" not in options:
            if self.steps_per_epoch is None:
                raise ValueError("greedynas needs steps_per_epoch (or sampler_options.total_steps) for its "
                                 "pool schedule")
            options["total_steps"] = self.epochs * self.steps_per_epoch
        constraint = _training_constraint(options, self.constraint)
        options.setdefault("higher_is_better", True)
        return {"space": self.space, "seed": self.seed, "constraint": constraint, **options}

    def training_paths(self, valid_batch) -> Tensor:
        def score(paths: Tensor) -> Tensor:
            metrics = path_accuracy_and_loss(self.supernet, paths, valid_batch, amp=self.amp)
            return torch.stack([metrics[:, 0], -metrics[:, 1]], 1)  # both higher-is-better, ranked in order

        return self.sampler.next_paths(score_fn=mean_over_ranks(score))

    def stage_done(self) -> bool:
        return bool(self.sampler.should_stop)

    def strategy_defaults(self) -> Dict[str, Any]:
        options = dict(self.search_options)
        pool_paths, _ = self.sampler.pool()
        population = int(options.get("population_size", 50))
        if pool_paths.shape[0] and "initial_population" not in options:
            options["initial_population"] = pool_paths[:population]
        return options

    def arch_snapshot(self) -> dict:
        paths, scores = self.sampler.pool()
        best = scores[0].reshape(-1) if paths.shape[0] else None
        return {**super().arch_snapshot(), "pool_size": int(paths.shape[0]),
                "pool_best": self.space.format(paths[0]) if paths.shape[0] else None,
                "pool_best_score": float(best[0]) if best is not None else None,
                "warming_up": bool(self.sampler.warming_up)}


@register_algorithm("eps")
class EPS(_ScoredSampling):
    """EPS ("Improving Random-Sampling NAS by Evolving the Proxy Search Space", ICLR 2021
    submission): RandomNAS training whose paths come from a population evolved during training
    (:class:`pynas.search.samplers.EPSSampler`), the answer chosen over snapshots of the
    population's best near the end of training.

    As the authors' NAS-Bench-201 code (IcLr2020SuBmIsSiOn/EPS, ``search_cnn_nasbench``):

    * recipe (``searcher.py`` lines 47-58, 248-265): SGD lr 0.1 at batch 128
      (``lr=None`` scales it linearly to the run's batch), momentum 0.9,
      weight decay 4e-5 on multi-dimensional weights only (``utils.py``
      lines 89-103: ``no_wd_bn_bias``), label smoothing 0.1, cosine to 0
      stepped every iteration (``lr_unit="iteration"``) over 80,000
      iterations. ``epochs=None`` converts those iterations to the run's
      epochs, ``ceil(80000 / steps_per_epoch)`` (the scaling rule for
      CIFAR-size runs: the iteration budget is kept, whatever the split);
    * every ``interval`` (50) iterations each of the 64 trained members is
      scored on its **own** validation batch of 250 images, train-mode batch
      statistics, label-smoothed loss (``searcher.py`` lines 403-436). Here
      the validation batches the runner hands to the steps since the last
      scoring are kept and cut into one slice per member,
      ``min(score_batch_size, images // members)`` images each (250 when the
      run's batches hold enough: 64 x 250 = 16,000 images per 50 steps needs
      a validation batch of 320), and all members run in one pass
      (:func:`pynas.evaluation.path_losses_own_batches`);
    * the answer (``InstructionForSelection.ipynb``, "Selection" cell): every
      snapshot of the last 10,000 of 80,000 iterations (here the last
      ``snapshot_fraction`` = 1/8 of the run's iterations) contributes its
      population's best member; each such path keeps its loss at its latest
      snapshot, and the chosen path minimises ``loss + 1.4 exp(-5.2 params /
      max_params)`` (``snapshot_alpha``, ``snapshot_beta``; ``max_params``
      default: the space's largest network). :meth:`search` then scores that
      one path with the caller's scorer (an evolution of one member and no
      generations), so the run reports its accuracy.

    Deviations: the authors build the supernet with ``affine=False,
    track_running_stats=False`` batch norms (``searcher.py`` line 245); pynas's
    NAS-Bench-201 path supernet has affine, tracking batch norms (its builder
    takes no BN option; chain spaces take ``supernet.bn_affine=False``). Under
    EPS's ``batch`` evaluation protocol the running statistics are never
    read, so only the affine parameters differ. Fewer validation images than
    64 x 250 per interval give smaller slices (above); fewer than one per
    member score every member on all of them. The final snapshot is taken
    after the last step even when the run's iterations are not a multiple of
    ``interval``. With no snapshot in the window (runs too short to score
    there), the answer is the final population's best. The code's ranking
    uses members scored at least twice; see :class:`EPSSampler`.
    """

    name = "eps"
    sampler_name = "eps"
    strategy = "evolution"
    defaults = EPS_DEFAULTS
    base_lr = 0.1
    evaluation_defaults: Dict[str, Any] = dict(bn="batch", eval_batch_size=250)

    def __init__(self, *, score_batch_size: int = 250, snapshot_fraction: float = 10_000 / 80_000,
                 snapshot_alpha: float = 1.4, snapshot_beta: float = 5.2, max_params: Optional[float] = None,
                 **kwargs: Any):
        if kwargs.get("epochs", self.defaults.get("epochs")) is None:
            steps = kwargs.get("steps_per_epoch")
            if steps is None:
                raise ValueError("eps with epochs=None (the authors' 80,000 iterations) needs steps_per_epoch")
            kwargs["epochs"] = max(1, math.ceil(EPS_ITERATIONS / steps))
        if kwargs.get("steps_per_epoch") is None:  # per-iteration cosine needs the iterations; else per epoch
            kwargs.setdefault("lr_unit", "epoch")
        super().__init__(**kwargs)
        self.score_batch_size = check_positive_int(score_batch_size, "score_batch_size")
        self.snapshot_fraction = check_nonneg_float(snapshot_fraction, "snapshot_fraction")
        if self.snapshot_fraction > 1:
            raise ValueError(f"snapshot_fraction must be in [0, 1], got {snapshot_fraction!r}")
        self.snapshot_alpha = check_nonneg_float(snapshot_alpha, "snapshot_alpha")
        self.snapshot_beta = check_nonneg_float(snapshot_beta, "snapshot_beta")
        self.max_params = None if max_params is None else check_positive_float(max_params, "max_params")
        self.valid_buffer: List[Tuple[Tensor, Tensor]] = []
        self.snapshots: Dict[Tuple[int, ...], float] = {}  # path -> its loss at its latest snapshot as the best

    @property
    def total_steps(self) -> Optional[int]:
        return None if self.steps_per_epoch is None else self.epochs * self.steps_per_epoch

    def _snapshot_from(self) -> int:
        """Snapshots taken after more than this many steps count (the notebook's ``Total - T``)."""
        total = self.total_steps
        return -1 if total is None else total - int(round(self.snapshot_fraction * total))

    def member_batches(self, members: int) -> Tuple[Tensor, Tensor]:
        """``[members, n, ...]`` inputs and ``[members, n]`` labels: one slice of the buffered
        validation images per member (all of them for every member when they are fewer than members)."""
        if not self.valid_buffer:
            raise RuntimeError("eps scores its members on the validation batches of its steps; none was given")
        x = torch.cat([b[0] for b in self.valid_buffer])
        y = torch.cat([b[1] for b in self.valid_buffer])
        n = min(self.score_batch_size, x.shape[0] // members)
        if n == 0:
            return x.unsqueeze(0).expand(members, *x.shape), y.unsqueeze(0).expand(members, *y.shape)
        return x[:members * n].view(members, n, *x.shape[1:]), y[:members * n].view(members, n)

    def _score(self, paths: Tensor) -> Tensor:
        x, y = self.member_batches(paths.shape[0])
        losses = path_losses_own_batches(self.supernet, paths, x, y, label_smoothing=self.label_smoothing,
                                         amp=self.amp)
        self.valid_buffer = []  # every image is used once
        return losses

    def _remember(self, valid_batch) -> None:
        if valid_batch is None:
            return
        self.valid_buffer.append((valid_batch[0].detach(), valid_batch[1].detach()))
        needed = self.sampler.sample_size * self.score_batch_size
        while len(self.valid_buffer) > 1 and sum(b[1].shape[0] for b in self.valid_buffer[1:]) >= needed:
            self.valid_buffer.pop(0)  # the oldest are not needed: the latest images fill every slice

    def _record(self, before: int) -> None:
        if self.sampler.scored_at != before and self.sampler.scored_best is not None \
                and self.sampler.scored_at > self._snapshot_from():
            path, loss = self.sampler.scored_best
            self.snapshots[tuple(int(v) for v in path)] = float(loss)

    def training_paths(self, valid_batch) -> Tensor:
        self._remember(valid_batch)
        before = self.sampler.scored_at
        paths = self.sampler.next_paths(score_fn=mean_over_ranks(self._score))
        self._record(before)
        return paths

    def step(self, train_batch, valid_batch) -> dict:
        out = super().step(train_batch, valid_batch)
        if self.total_steps is not None and self.global_step == self.total_steps:
            # The snapshot after the last iteration (searcher.py lines 323-330: validate, then write).
            if not self.valid_buffer:  # this step's batch was used by a scoring at its start
                self._remember(valid_batch)
            before = self.sampler.scored_at
            self.sampler.score_now(mean_over_ranks(self._score))
            self._record(before)
        return out

    # -- the answer --------------------------------------------------------------------------
    def largest_params(self) -> float:
        """``max_params``, else the most parameters of any path of the space (per-layer maxima when the
        count is additive over layers, else every path enumerated)."""
        if self.max_params is not None:
            return self.max_params
        from .dsnas import ENUMERATE_LIMIT, layer_cost_tables

        try:
            base, tables = layer_cost_tables(self.space, "params")
            self.max_params = base + sum(float(t.max()) for t in tables)
        except ValueError:
            if self.space.size > ENUMERATE_LIMIT:
                raise ValueError(f"{self.space.name}: parameters are not additive over layers and the space is "
                                 f"too large to enumerate; give max_params") from None
            self.max_params = float(max(self.space.params(p) for p in self.space.all_paths().tolist()))
        return self.max_params  # computed once: a property of the space

    def snapshot_objective(self) -> Dict[Tuple[int, ...], float]:
        """``loss + alpha exp(-beta params / max_params)`` of every snapshot best (lower is better)."""
        largest = self.largest_params()
        return {path: loss + self.snapshot_alpha * math.exp(-self.snapshot_beta * self.space.params(path) / largest)
                for path, loss in self.snapshots.items()}

    def chosen_path(self) -> Optional[Tuple[int, ...]]:
        """The snapshot best minimising :meth:`snapshot_objective` (ties: more parameters, as the notebook's
        walk over paths sorted by parameters keeps the last of equal objectives), else the population's best."""
        objective = self.snapshot_objective()
        if objective:
            return min(objective, key=lambda p: (objective[p], -self.space.params(p), tuple(-v for v in p)))
        best = self.sampler.best()
        return tuple(int(v) for v in best[0]) if best is not None else None

    def strategy_defaults(self) -> Dict[str, Any]:
        options = dict(self.search_options)
        chosen = self.chosen_path()
        if chosen is None:  # never scored: the final population, as an evolution with no generations
            members = torch.unique(torch.tensor(self.sampler.members, dtype=torch.long), dim=0)
        else:
            members = torch.tensor([chosen], dtype=torch.long)
        options.setdefault("initial_population", members)
        options.setdefault("population_size", int(members.shape[0]))
        options.setdefault("generations", 0)
        options.setdefault("mutation_num", 0)
        options.setdefault("crossover_num", 0)
        options.setdefault("top_k", 1)
        return options

    def arch_snapshot(self) -> dict:
        try:
            chosen = self.chosen_path() if self.snapshots else None
        except ValueError:  # max_params unknown: reported by search(), not by a progress record
            chosen = None
        return {**super().arch_snapshot(), "snapshots": len(self.snapshots),
                "chosen": self.space.format(chosen) if chosen is not None else None}

    def state_dict(self) -> dict:
        state = super().state_dict()
        paths = sorted(self.snapshots)
        state["eps"] = {
            "valid_buffer": [[x, y] for x, y in self.valid_buffer],
            "snapshot_paths": torch.tensor(paths, dtype=torch.long).reshape(len(paths), self.space.num_layers),
            "snapshot_losses": torch.tensor([self.snapshots[p] for p in paths], dtype=torch.float64),
        }
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        extra = state.get("eps")
        if extra is None:
            raise ValueError("this eps state has no snapshot record (saved by an older pynas); retrain")
        self.valid_buffer = [(x, y) for x, y in extra["valid_buffer"]]
        self.snapshots = {tuple(int(v) for v in p): float(l)
                          for p, l in zip(extra["snapshot_paths"].tolist(), extra["snapshot_losses"].tolist())}
