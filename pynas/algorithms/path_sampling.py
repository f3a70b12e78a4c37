"""SPOS, RandomNAS, FairNAS, GreedyNAS and EPS: single-path supernet training that differs only
in which paths each step trains (:mod:`pynas.search.samplers`) and in the search run afterwards.

Training recipe (all five unless the method's paper says otherwise): SPOS's
supernet training (Guo et al., ECCV 2020, Sec. 4 and its released code): SGD,
momentum 0.9, weight decay 4e-5, learning rate 0.5 at batch 1024 decayed
linearly to 0, label smoothing 0.1, 120 epochs on ImageNet. Our runs use other
batches: ``lr=None`` scales 0.5 linearly to the batch. RandomNAS (Li &
Talwalkar, UAI 2019) trains with DARTS's recipe instead (SGD 0.025 cosine to
0.001... here cosine to 0, momentum 0.9, weight decay 3e-4, batch 64, grad
clip 5). FairNAS's paper was not readable past its abstract here; it uses
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

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from pynas.evaluation import path_accuracy_and_loss, path_losses
from pynas.search import create_sampler
from pynas.spaces.path_space import Constraint

from . import register_algorithm
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
    epochs=50, batch_size=64, lr=0.025, momentum=0.9, weight_decay=3e-4, grad_clip=5.0, schedule="cosine")


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
    evaluation_defaults: Dict[str, Any] = dict(recalibrate_batches=200, recalibrate_batch_size=128,
                                               eval_batches=40, eval_batch_size=200)

    def sampler_kwargs(self, options: dict) -> dict:
        constraint = _training_constraint(options, self.constraint)
        return {"space": self.space, "seed": self.seed, "constraint": constraint, **options}


@register_algorithm("randomnas")
class RandomNAS(_SampledSearch):
    """Random search with weight sharing (Li & Talwalkar, UAI 2019, Sec. 4): uniform single-path
    training, then 1000 random paths scored with the shared weights, the best few re-scored.

    The final re-scoring on the full validation split is ``search.rerank_fn`` (off by default:
    the command scores every candidate on the same validation batches).
    """

    name = "randomnas"
    sampler_name = "uniform"
    strategy = "random"
    defaults = RANDOMNAS_DEFAULTS


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
    (see :class:`pynas.search.samplers.EPSSampler`); the search then scores the final population
    and keeps its best (an evolution with no generations started from it).
    """

    name = "eps"
    sampler_name = "eps"
    strategy = "evolution"
    defaults = RANDOMNAS_DEFAULTS

    def strategy_defaults(self) -> Dict[str, Any]:
        options = dict(self.search_options)
        members = torch.unique(torch.tensor(self.sampler.members, dtype=torch.long), dim=0)
        options.setdefault("initial_population", members)
        options.setdefault("population_size", int(members.shape[0]))
        options.setdefault("generations", 0)
        options.setdefault("mutation_num", 0)
        options.setdefault("crossover_num", 0)
        options.setdefault("top_k", 1)
        return options
