"""Few-shot NAS (Zhao et al., "Few-shot Neural Architecture Search", ICML 2021) on single-path spaces.

Few-shot NAS trains several supernets, each covering one region of the
space, to cut the co-adaptation of one shared supernet. The space is split
on one compound edge (Sec. 3): here one searchable layer, ``split_layer``,
whose K choices give K sub-supernets (:class:`pynas.supernets.few_shot.
FewShotSupernet`). Each sub-supernet starts as a copy of the trained
one-shot supernet (Sec. 3, transfer learning), and a path is evaluated by
the sub-supernet its split choice selects.

Schedule
--------
1. epochs ``[0, split_epoch)``: the one-shot supernet trained as SPOS (one
   uniform path per step, :class:`pynas.search.samplers.UniformSampler`);
2. at the end of epoch ``split_epoch - 1``: split into K sub-supernets;
3. **sequential** (``sub_epochs`` given, and the default): sub-supernet k
   trains alone during epochs ``[split_epoch + k sub_epochs, split_epoch +
   (k+1) sub_epochs)`` on uniform paths of its region (the split layer fixed
   to k), with a fresh optimiser (no momentum carried over) and its own
   cosine from ``lr`` to ``min_lr`` over its ``sub_epochs``; the one-shot
   phase has its own cosine over ``split_epoch`` epochs. This is the
   authors' NAS-Bench-201 procedure (aoiang/few-shot-NAS,
   ``Few-Shot_NasBench201/supernet/few-shot/train.sh`` runs
   ``exps/supernet/few-shot-supernet_train.py`` once per ``--edge_op``, each
   run loading the one-shot checkpoint, lines 140-160, and training for the
   ``epochs`` of ``configs/nas-benchmark/algos/FEW-SHOT-SUPERNET.config``:
   300, after the 600 of ``ONE-SHOT-SUPERNET.config``), run one after
   another in one resumable run (``active_subnet`` is in the state);
   ``epochs`` is then ``split_epoch + K sub_epochs`` (give None or that);
4. **interleaved** (``epochs`` given, ``sub_epochs`` None; pynas's earlier
   behaviour, kept for ranking studies): every step samples a uniform path
   and trains the sub-supernet it belongs to, so the K sub-supernets share
   the ``epochs - split_epoch`` remaining epochs (about 1/K of the steps
   each); with ``restart_schedule`` (default) the LR schedule restarts over
   them at the split, else it continues.

Defaults (``epochs=None, sub_epochs=None``): the authors' 600 + K x 300
epochs. ``split_epoch`` defaults to 600 in that case, to half of ``epochs``
for the interleaved schedule.

After training, :meth:`search` is SPOS's evolution
(:meth:`SinglePathSearch.search`) scored with the caller's ``score_fn``,
normally :func:`pynas.evaluation.evaluate_paths` on ``algorithm.supernet``,
which routes each path to its sub-supernet, with BN recalibration
(:attr:`evaluation_defaults`, as SPOS's).

Recipe (both configs): SGD, nesterov, momentum 0.9, lr 0.025 at batch 48
(``lr=None`` scales it linearly to ``batch_size``) cosine to 0.001, weight
decay 1e-4 on every weight, plain cross-entropy (``criterion: Softmax``, no
label smoothing), the schedule moved every iteration
(``scheduler.update(None, step / len(loader))``, few-shot-supernet_train.py
line 30: ``lr_unit="iteration"``, or per epoch without ``steps_per_epoch``).

Deviations: the authors split NAS-Bench-201's cell on one edge (the same
op in every cell); here the split is on one searchable layer of a
single-path space. Their sub-supernet runs are separate processes (any
order, possibly in parallel); here they run in order 0..K-1. The
``--track_running_stats`` option of their scripts is the supernet's
business here (batch norms always track).

Data-parallel (torchrun): as :class:`SinglePathSearch`: every rank draws the
same path, so every rank trains the same sub-supernet in a step; only the
parameters some rank used are all-reduced (the other sub-supernets keep
``grad=None`` and are skipped by SGD, as in one process).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from pynas.search import create_sampler
from pynas.spaces.path_space import Constraint, PathSpace
from pynas.supernets.few_shot import FewShotSupernet

from . import register_algorithm
from ._validate import check_nonneg_int
from .single_path import SinglePathSearch, check_path_supernet, warmup_then_decay

__all__ = ["FewShotNAS"]


#: the authors' NAS-Bench-201 runs (configs/nas-benchmark/algos/ONE-SHOT-SUPERNET.config and
#: FEW-SHOT-SUPERNET.config): 600 one-shot epochs, then 300 for every sub-supernet
ONE_SHOT_EPOCHS, SUB_EPOCHS = 600, 300


def _lr_factor(schedule: str, total: int, offset: int, lr: float = 1.0, min_lr: float = 0.0):
    """LR multiplier of unit ``e`` for a schedule over ``total`` units that has already run ``offset``."""
    decay = warmup_then_decay(schedule=schedule, lr=lr, min_lr=min_lr, total=total, warmup=0, warmup_start=0.0)
    return lambda e: decay(e + offset)


@register_algorithm("few-shot")
class FewShotNAS(SinglePathSearch):
    """SPOS training of a one-shot supernet, split on ``split_layer`` after ``split_epoch`` epochs.

    ``supernet`` defaults to ``space.build_supernet(**supernet_options)``;
    after the split, ``self.supernet`` is the :class:`FewShotSupernet`. ``lr=None`` is SPOS's 0.5 at
    batch 1024 scaled linearly to ``batch_size``; ``search_options`` go to the evolution.
    """

    name = "few-shot"
    strategy = "evolution"
    #: the authors' 0.025 at batch 48 (``lr=None`` scales it linearly to ``batch_size``)
    base_lr = 0.025
    evaluation_defaults = {"bn": "recalibrate"}

    def __init__(
        self,
        *,
        space: PathSpace,
        supernet: Optional[nn.Module] = None,
        supernet_options: Optional[dict] = None,
        epochs: Optional[int] = None,
        split_epoch: Optional[int] = None,
        sub_epochs: Optional[int] = None,
        split_layer: int = 0,
        lr: Optional[float] = 0.025,
        batch_size: Optional[int] = None,
        base_batch_size: int = 48,
        steps_per_epoch: Optional[int] = None,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.0,
        grad_clip: float = 0.0,
        nesterov: bool = True,
        schedule: str = "cosine",
        min_lr: float = 0.001,
        lr_unit: Optional[str] = None,
        restart_schedule: bool = True,
        amp: str = "none",
        constraint: Optional[Constraint] = None,
        seed: int = 0,
        search_options: Optional[dict] = None,
    ):
        check_path_supernet(space, supernet)
        if isinstance(split_layer, bool) or not isinstance(split_layer, int):
            raise TypeError(f"split_layer must be an int, got {type(split_layer).__name__}")
        if not 0 <= split_layer < space.num_layers:
            raise ValueError(f"split_layer must be in [0, {space.num_layers}) (a searchable layer of {space.name}), "
                             f"got {split_layer}")
        if not isinstance(restart_schedule, bool):
            raise TypeError(f"restart_schedule must be a bool, got {type(restart_schedule).__name__}")
        num_subnets = space.num_choices[split_layer]
        if epochs is None and sub_epochs is None:  # the authors' whole schedule
            split_epoch = ONE_SHOT_EPOCHS if split_epoch is None else split_epoch
            sub_epochs = SUB_EPOCHS
        if sub_epochs is not None:  # sequential: one-shot, then every sub-supernet for sub_epochs in turn
            check_nonneg_int(sub_epochs, "sub_epochs")
            if sub_epochs < 1:
                raise ValueError(f"sub_epochs must be >= 1, got {sub_epochs}")
            if split_epoch is None:
                raise ValueError("sub_epochs needs split_epoch (the one-shot epochs before the split)")
            total = check_nonneg_int(split_epoch, "split_epoch") + num_subnets * sub_epochs
            if epochs is not None and epochs != total:
                raise ValueError(f"epochs ({epochs}) must be split_epoch + {num_subnets} x sub_epochs = {total} "
                                 f"(or None) when sub_epochs is given")
            epochs = total
        elif epochs is None:
            raise ValueError("few-shot needs epochs, or sub_epochs (and split_epoch) for the sequential schedule")
        if lr_unit is None:  # the authors' scheduler moves every iteration (scheduler.update per step)
            lr_unit = "iteration" if steps_per_epoch is not None else "epoch"
        super().__init__(space=space, supernet=supernet, supernet_options=supernet_options, epochs=epochs, lr=lr,
                         batch_size=batch_size, base_batch_size=base_batch_size, steps_per_epoch=steps_per_epoch,
                         momentum=momentum, weight_decay=weight_decay, label_smoothing=label_smoothing,
                         grad_clip=grad_clip, nesterov=nesterov, schedule=schedule, min_lr=min_lr, lr_unit=lr_unit,
                         amp=amp, constraint=constraint, seed=seed)
        self.sub_epochs = sub_epochs
        if search_options is not None and not isinstance(search_options, dict):
            raise TypeError(f"search_options must be a dict of evolution options, got {type(search_options).__name__}")
        self.search_options = dict(search_options or {})
        if split_epoch is None:
            split_epoch = max(1, self.epochs // 2)
        check_nonneg_int(split_epoch, "split_epoch")
        if not 1 <= split_epoch < self.epochs:
            raise ValueError(f"split_epoch must be in [1, epochs) = [1, {self.epochs}): one-shot training comes "
                             f"first and the sub-supernets need epochs left; got {split_epoch}")
        self.split_epoch = split_epoch
        self.split_layer = split_layer
        self.restart_schedule = restart_schedule
        self.sampler = create_sampler("uniform", space=space, seed=seed)
        self.split = False
        self.subnet_steps = [0] * num_subnets
        #: sequential schedule: the sub-supernet being trained (-1 before the split)
        self.active_subnet = -1
        if self.sub_epochs is not None:  # the one-shot run has its own schedule over its split_epoch epochs
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._factor(self.split_epoch, 0))

    def _factor(self, epochs: int, offset_epochs: int):
        unit = self.steps_per_epoch if self.lr_unit == "iteration" else 1
        return _lr_factor(self.schedule, epochs * unit, offset_epochs * unit, self.lr, self.min_lr)

    def _fresh_optimizer(self, factor) -> None:
        """SGD over every sub-supernet's weights with fresh momentum, and a schedule from its start: what a
        new run of the authors' few-shot-supernet_train.py builds. Weights without a gradient (the
        sub-supernets not trained) are skipped by SGD."""
        options = {k: self.optimizer.defaults[k] for k in ("lr", "momentum", "weight_decay", "nesterov")}
        options["lr"] = self.lr
        self.optimizer = torch.optim.SGD(self.supernet.weight_parameters(), **options)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    # -- the split -------------------------------------------------------------------------
    def split_supernet(self) -> None:
        """Replace the one-shot supernet by K copies of it, and the optimiser by one over their weights."""
        if self.split:
            raise RuntimeError("the supernet is already split")
        self.supernet = FewShotSupernet(self.supernet, split_layer=self.split_layer)
        self.split = True
        if self.sub_epochs is not None:
            self.start_subnet(0)
        elif self.restart_schedule:
            self._fresh_optimizer(self._factor(self.epochs - self.split_epoch, 0))
        else:
            self._fresh_optimizer(self._factor(self.epochs, self.split_epoch))

    def start_subnet(self, k: int) -> None:
        """Sequential schedule: sub-supernet ``k`` trains from now for ``sub_epochs``, its own optimiser
        and cosine from ``lr`` to ``min_lr`` (FEW-SHOT-SUPERNET.config: 300 epochs, 0.025 -> 0.001)."""
        self.active_subnet = k
        self._fresh_optimizer(self._factor(self.sub_epochs, 0))

    def _due_subnet(self) -> int:
        return min((self.epoch - self.split_epoch) // self.sub_epochs, len(self.subnet_steps) - 1)

    def _maybe_split(self) -> None:
        if not self.split and self.epoch >= self.split_epoch:
            self.split_supernet()
        if self.split and self.sub_epochs is not None and self._due_subnet() != self.active_subnet:
            self.start_subnet(self._due_subnet())

    # -- training --------------------------------------------------------------------------
    def training_paths(self, valid_batch) -> Tensor:
        paths = self.sampler.next_paths()
        if self.split and self.sub_epochs is not None:
            # Uniform within the active sub-supernet's region: the split layer is fixed to its choice.
            paths = paths.clone()
            paths[:, self.split_layer] = self.active_subnet
        if self.split:
            self.subnet_steps[int(paths[0, self.split_layer])] += 1
        return paths

    def step(self, train_batch, valid_batch) -> dict:
        self._maybe_split()
        return super().step(train_batch, valid_batch)

    def end_epoch(self) -> None:
        super().end_epoch()
        self._maybe_split()

    # -- after training ----------------------------------------------------------------------
    def strategy_defaults(self) -> dict:
        return dict(self.search_options)

    def derive_network(self, path: Sequence[int]) -> nn.Module:
        """The stand-alone network of ``path`` with the weights of the (sub-)supernet that evaluates it."""
        path = self.space.check_path(path)
        extract = getattr(self.space, "extract_network", None)
        if extract is None:
            raise NotImplementedError(f"{type(self.space).__name__} has no extract_network(supernet, path)")
        source = self.supernet.subnet_for(path) if self.split else self.supernet
        return extract(source, path)

    # -- runner interface ------------------------------------------------------------------------
    def arch_snapshot(self) -> dict:
        return {"lr": self.optimizer.param_groups[0]["lr"], "split": self.split,
                "subnet_steps": list(self.subnet_steps), "active_subnet": self.active_subnet}

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update({"split": self.split, "split_layer": self.split_layer, "split_epoch": self.split_epoch,
                      "sub_epochs": self.sub_epochs, "active_subnet": self.active_subnet,
                      "subnet_steps": list(self.subnet_steps)})
        return state

    def load_state_dict(self, state: dict) -> None:
        """Exact resume, across the split: a split state re-creates the split structure before loading."""
        if int(state["split_layer"]) != self.split_layer or int(state["split_epoch"]) != self.split_epoch \
                or state.get("sub_epochs") != self.sub_epochs:
            raise ValueError(f"state was saved with split_layer={state['split_layer']}, split_epoch="
                             f"{state['split_epoch']}, sub_epochs={state.get('sub_epochs')}; this run has "
                             f"{self.split_layer}, {self.split_epoch}, {self.sub_epochs}")
        if bool(state["split"]) and not self.split:
            self.split_supernet()  # the structure only: weights, optimiser and schedule come from state
        elif self.split and not bool(state["split"]):
            raise ValueError("cannot load a state saved before the split into an algorithm already split; "
                             "build a fresh one")
        self.active_subnet = int(state.get("active_subnet", -1))  # its optimiser's shape is every sub's
        super().load_state_dict(state)
        self.subnet_steps = [int(v) for v in state["subnet_steps"]]
