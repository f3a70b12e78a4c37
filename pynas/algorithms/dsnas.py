r"""DSNAS: Direct Neural Architecture Search without Parameter Retraining (Hu et al., CVPR 2020).

DSNAS searches a single-path space end to end: one architecture distribution
and one set of supernet weights, both trained on the same batches, and the
child network is deployed with the weights it had in the supernet ("no
retraining"). Per searchable layer l (with K_l choices) it keeps logits
alpha_l; an architecture is a one-hot Z_l per layer drawn from
p_l = softmax(alpha_l) (Sec. 3; no Gumbel relaxation and no temperature:
DSNAS takes SNAS's temperature to its limit 0, so the sample is exactly
one-hot and only the sampled op runs, with Z_l kept in the graph as a gate).

Objective and estimator
-----------------------
The task objective is J(alpha) = E_{Z ~ p_alpha}[L(Z)]. The score-function
identity gives its exact gradient

    dJ/dalpha_l = E_Z[ L(Z) (Z_l - p_l) ],   since d log p(Z_l)/d alpha_l = Z_l - p_l.

DSNAS's search gradient (Sec. 3: SNAS's search gradient in the limit of
temperature 0; the one-hot gate kept in the graph is the "dummy 1" of its
Fig. 2 and Sec. 3.3) replaces the loss by the credit the sampled op gets
through its gate: with the layer output ``x_{l+1} = Z_{l,s} O_{l,s}(x_l)`` (s the
sampled op, Z_{l,s} = 1),

    g_l = (dL/dZ_{l,s}) (Z_l - p_l),   dL/dZ_{l,s} = <dL/dx_{l+1}, O_{l,s}(x_l)>,          (*)

one sample per step. Here Z_{l,s} is the ``gates`` tensor given to
``supernet(x, path, gates=...)``; autograd returns dL/dZ_{l,s} for all layers
in the same backward pass as the weight gradients.

Bias (why the paper says "low-biased"): let L_l^0(Z) be the loss with layer
l's gate set to 0. It does not depend on which op layer l sampled, so
E[L_l^0 (Z_l - p_l)] = 0 and

    E[g_l] - dJ/dalpha_l = E[ r_l(Z) (Z_l - p_l) ],   r_l = dL/dZ_{l,s} - (L - L_l^0),

r_l being the remainder of the first-order Taylor expansion of L in the gate
(r_l = L''/2 when L is quadratic in it). So (*) is **unbiased whenever the
loss is affine in each gate** (it is then REINFORCE with the baseline L_l^0),
and biased by a second-order term otherwise (cross-entropy, any nonlinearity
after the gate). tests/test_dsnas.py checks both: the Monte Carlo mean of (*)
matches dJ/dalpha for a gate-affine loss, and matches the exact expectation
of (*), not dJ/dalpha, for a quadratic one.

Resource penalty
----------------
The authors' search command adds a FLOPs penalty (``--flops_loss``,
DSNAS/network.py), SNAS's resource constraint (Xie et al., ICLR 2019,
Sec. 2.4): coef * E_Z[C(Z)] with a cost additive over layers,
C(Z) = C_0 + sum_l c_l[s_l]. The per-op
costs c_l[k] are read from the space (``flops`` or ``params`` of the path
with layer l set to k, minus that of the all-zero path; additivity is
checked on a few paths), in millions, as the authors' per-op FLOPs table is
in MFLOPs. ``penalty="expected"`` (default) adds the exact gradient
coef * p_l (c_l - <p_l, c_l>); ``penalty="sampled"`` adds the authors'
surrogate, the gradient of coef * p_l[s] c_l[s] for the sampled op
(DSNAS/network.py lines 126-128). The penalty applies only on steps whose sampled path
costs at least the target (network.py line 145: ``total_flops >= 290``), the constraint's ``max_flops``/``max_params``
(the authors' code: sampled-path FLOPs >= 290M blocks-only, about 330M whole
network, SPOS's budget); without a target it always applies. The
coefficient 1e-6 (per million) is the authors' ``--flops_loss_coef`` in the
README's search command; it is weak next to the task gradient.

Schedule and settings (defaults; sources: the authors' SNAS-Series/DSNAS
code, configs/SinglePath240epoch_arch_lr_1e-3_decay_0.yaml and
train_imagenet.py, for the paper's ImageNet search, batch 1024):

* weights: SGD lr 0.5 at batch 1024 (``lr=None`` scales it linearly to
  ``batch_size``), momentum 0.9, weight decay 4e-5 except on batch-norm
  parameters (train_imagenet.py lines 105-131: ``no_wd_bn_bias``), cosine to 0
  updated every iteration (train_imagenet.py line 303, ``lr_unit="iteration"``;
  "epoch" when ``steps_per_epoch`` is not given) after a linear warm-up from
  1e-4 over 5 epochs (config lines 11-13; devkit/core/lr_scheduler.py lines
  66-88: ``lr_warmup_epochs``/``lr_warmup_start``; the default warm-up is 5
  epochs capped at a quarter of ``epochs`` for short runs),
  label smoothing 0.1; 240 epochs in all (80 of supernet search, then 160
  more of the searched child, "DSNASsearch240");
* alpha: Adam lr 1e-3, betas (0.5, 0.999), no weight decay, initialised
  N(0, 0.01^2) (the code's N(1, 0.01^2); softmax ignores the shift);
* ``fix_threshold`` h = 0.3: the paper's early fixing (Eq. 8): at an epoch
  end, a layer whose two largest probabilities differ by at least h is fixed
  to its argmax; it is sampled only that way from then on and its alpha is
  frozen (the code's ``--early_fix_arch``);
* ``warmup_epochs``: epochs of uniform-sampling, weight-only supernet
  pretraining before alpha is updated (the code's ``--pretrain_epoch``,
  whose default 0 the README's search command keeps).

The valid batch is unused: DSNAS updates weights and alpha together, from
the same training batch (single-level, unlike DARTS's bilevel split).

Data-parallel (torchrun): every rank samples the same path (equal
generators, see :mod:`pynas.algorithms.single_path`); the weights' gradients
and the per-layer estimates (*) are averaged across ranks. (*) is linear in
the credit dL/dZ, so the average is (*) for the global batch's loss.

Deviations
----------
* Weight decay: the authors exempt batch-norm parameters only; pynas's split
  (:func:`pynas.training.train.parameter_groups`) also exempts biases (the
  classifier's, for one).
* The 5-epoch warm-up is capped at ``epochs // 4`` by default (the
  authors' runs are 240 epochs; a 2-epoch test run gets none).
* The penalty target is compared with the whole path's cost; the authors'
  290 counts the choice blocks only (about 330M for the whole network).
* After the early-fixing phase the authors restart from the 80-epoch
  checkpoint and train the argmax child alone (train_imagenet_child.py);
  here search simply continues, with fixed layers staying fixed, so unfixed
  layers keep their distribution until ``epochs`` ends.
* Frozen layers get no alpha gradient at all (the code lets Adam move them
  within an epoch and restores them at the next epoch start).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pynas.search.base import SearchResult
from pynas.spaces.path_space import Constraint, PathSpace
from pynas.training import distributed

from . import register_algorithm
from ._validate import check_choice, check_nonneg_float, check_nonneg_int, check_positive_float
from .single_path import ScoreFn, SinglePathSearch, check_path_supernet, mean_over_ranks

__all__ = ["DSNAS", "layer_cost_tables"]

#: the LR warm-up of the authors' config (configs/SinglePath240epoch_arch_lr_1e-3_decay_0.yaml lines 11-13)
WARMUP_EPOCHS = 5
#: costs enter the penalty in millions (the authors' FLOPs table is in MFLOPs)
COST_UNIT = 1e6
#: spaces up to this size are enumerated to find the most probable admitted path
ENUMERATE_LIMIT = 200_000


def layer_cost_tables(space: PathSpace, resource: str, *, checks: int = 8) -> Tuple[float, List[Tensor]]:
    """(C_0, [c_l]) with ``cost(path) = C_0 + sum_l c_l[path[l]]``, read from ``space.flops``/``space.params``.

    c_l[k] is the cost of the all-zero path with layer l set to k, minus that
    of the all-zero path. Raises ValueError if the cost is not additive over
    layers (checked on ``checks`` seeded random paths and the all-last path).
    """
    cost = space.flops if resource == "flops" else space.params
    base = [0] * space.num_layers
    c0 = float(cost(base))
    tables = []
    for layer, k in enumerate(space.num_choices):
        row = []
        for choice in range(k):
            path = list(base)
            path[layer] = choice
            row.append(float(cost(path)) - c0)
        tables.append(torch.tensor(row, dtype=torch.float64))
    probe = torch.Generator().manual_seed(0)
    samples = space.sample(checks, generator=probe).tolist() + [[k - 1 for k in space.num_choices]]
    for path in samples:
        additive = c0 + sum(float(tables[layer][v]) for layer, v in enumerate(path))
        actual = float(cost(path))
        if not math.isclose(additive, actual, rel_tol=1e-9, abs_tol=1e-6):
            raise ValueError(f"the resource penalty needs a {resource} cost additive over layers; {space.name} "
                             f"gives {actual} for {path} but the per-layer sum is {additive}")
    return c0, tables


@register_algorithm("dsnas")
class DSNAS(SinglePathSearch):
    """DSNAS on a single-path space (see the module docstring for the method, settings and deviations).

    ``supernet`` defaults to ``space.build_supernet(**supernet_options)``. ``lr=None`` is the
    authors' 0.5 at batch 1024 scaled linearly to ``batch_size`` (as :class:`SinglePathSearch`).
    ``criterion(logits, labels) -> loss`` is an attribute (cross-entropy with
    ``label_smoothing``); the architecture gradient differentiates whatever it
    returns.
    """

    name = "dsnas"
    strategy = "argmax"

    def __init__(
        self,
        *,
        space: PathSpace,
        supernet: Optional[nn.Module] = None,
        supernet_options: Optional[dict] = None,
        epochs: int = 240,
        lr: Optional[float] = None,
        batch_size: Optional[int] = None,
        base_batch_size: int = 1024,
        steps_per_epoch: Optional[int] = None,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        label_smoothing: float = 0.1,
        grad_clip: float = 0.0,
        nesterov: bool = False,
        schedule: str = "cosine",
        no_wd_bn_bias: bool = True,
        lr_unit: Optional[str] = None,
        lr_warmup_epochs: Optional[int] = None,
        lr_warmup_start: float = 1e-4,
        arch_lr: float = 1e-3,
        arch_betas: Sequence[float] = (0.5, 0.999),
        arch_weight_decay: float = 0.0,
        alpha_init_std: float = 0.01,
        warmup_epochs: int = 0,
        fix_threshold: Optional[float] = 0.3,
        resource: Optional[str] = None,
        resource_coef: float = 1e-6,
        penalty: str = "expected",
        amp: str = "none",
        constraint: Optional[Constraint] = None,
        seed: int = 0,
    ):
        check_path_supernet(space, supernet)
        if lr_unit is None:  # the authors' scheduler updates every iteration; per epoch when iterations are unknown
            lr_unit = "iteration" if steps_per_epoch is not None else "epoch"
        if lr_warmup_epochs is None:  # the authors' 5 epochs, at most a quarter of a shorter run
            lr_warmup_epochs = min(WARMUP_EPOCHS, check_nonneg_int(epochs, "epochs") // 4)
        super().__init__(space=space, supernet=supernet, supernet_options=supernet_options, epochs=epochs, lr=lr,
                         batch_size=batch_size, base_batch_size=base_batch_size, steps_per_epoch=steps_per_epoch,
                         momentum=momentum, weight_decay=weight_decay, label_smoothing=label_smoothing,
                         grad_clip=grad_clip, nesterov=nesterov, schedule=schedule, no_wd_bn_bias=no_wd_bn_bias,
                         lr_unit=lr_unit, lr_warmup_epochs=lr_warmup_epochs, lr_warmup_start=lr_warmup_start,
                         amp=amp, constraint=constraint, seed=seed)
        self.warmup_epochs = check_nonneg_int(warmup_epochs, "warmup_epochs")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({warmup_epochs}) must be below epochs ({epochs}): "
                             f"DSNAS would never update its architecture")
        if fix_threshold is not None:
            if isinstance(fix_threshold, bool) or not isinstance(fix_threshold, (int, float)) \
                    or not 0 < fix_threshold <= 1:
                raise ValueError(f"fix_threshold must be in (0, 1] or None (never fix), got {fix_threshold!r}")
            fix_threshold = float(fix_threshold)
        self.fix_threshold = fix_threshold
        self.penalty = check_choice(penalty, "penalty", ("expected", "sampled"))
        self.resource_coef = check_nonneg_float(resource_coef, "resource_coef")
        self.resource = self._pick_resource(resource)
        self.target = self.constraint.max_flops if self.resource == "flops" else self.constraint.max_params
        self.cost_base, self.cost_tables = (layer_cost_tables(space, self.resource)
                                            if self.resource_coef > 0 else (0.0, []))
        self.criterion: Callable[[Tensor, Tensor], Tensor] = \
            lambda logits, y: F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

        self.generator = torch.Generator().manual_seed(seed)
        std = check_nonneg_float(alpha_init_std, "alpha_init_std")
        self.alpha = [nn.Parameter(std * torch.randn(k, generator=self.generator)) for k in space.num_choices]
        betas = tuple(arch_betas) if isinstance(arch_betas, (tuple, list)) else arch_betas
        if not (isinstance(betas, tuple) and len(betas) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"arch_betas must be two numbers in [0, 1), got {arch_betas!r}")
        self.arch_optimizer = torch.optim.Adam(self.alpha, lr=check_positive_float(arch_lr, "arch_lr"),
                                               betas=betas,
                                               weight_decay=check_nonneg_float(arch_weight_decay, "arch_weight_decay"))
        self.fixed: Dict[int, int] = {}  # layer -> choice, by early fixing (Eq. 8)

    def _pick_resource(self, resource: Optional[str]) -> str:
        if resource is None:  # follow the constraint's budget when it only limits params
            only_params = self.constraint.max_params is not None and self.constraint.max_flops is None
            return "params" if only_params else "flops"
        return check_choice(resource, "resource", ("flops", "params"))

    # -- the distribution ----------------------------------------------------------------
    @property
    def searching(self) -> bool:
        """Whether alpha is being trained (False during the uniform warm-up)."""
        return self.epoch >= self.warmup_epochs

    def probabilities(self) -> List[Tensor]:
        return [torch.softmax(a.detach(), 0) for a in self.alpha]

    def argmax_path(self) -> Tuple[int, ...]:
        return tuple(int(torch.argmax(a.detach())) for a in self.alpha)

    def sample_path(self) -> Tuple[int, ...]:
        """This step's path: uniform during the warm-up, else Z_l ~ softmax(alpha_l) (fixed layers fixed)."""
        if not self.searching:
            return tuple(self.space.sample(1, generator=self.generator)[0].tolist())
        path = []
        for layer, a in enumerate(self.alpha):
            if layer in self.fixed:
                path.append(self.fixed[layer])
            else:
                probs = torch.softmax(a.detach().double(), 0)
                path.append(int(torch.multinomial(probs, 1, generator=self.generator)))
        return tuple(path)

    # -- gradients -----------------------------------------------------------------------
    def arch_gradient(self, x: Tensor, y: Tensor, path: Sequence[int]) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """Loss, logits and DSNAS's estimate (*) of d E[L]/d alpha_l for every layer, from one sample ``path``.

        Runs the forward and backward pass with the one-hot gates in the graph;
        the weights' gradients accumulate into their ``.grad`` as a side effect
        (``step`` zeroes them first and uses them).
        """
        path = self.space.check_path(path)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        gates = torch.ones(len(path), device=x.device, dtype=dtype, requires_grad=True)
        with self._autocast(x.device):
            logits = self.supernet(x, list(path), gates=gates)
            loss = self.criterion(logits, y)
        self.scaler.scale(loss).backward()
        # dL/dZ_{l,s} of every layer, unscaled (fp16 loss scaling multiplies every gradient by the scale).
        credit = gates.grad.detach().double().cpu() / self.scaler.get_scale()
        return loss.detach(), logits.detach(), self.score_gradient(path, credit)

    def score_gradient(self, path: Sequence[int], credit: Tensor) -> List[Tensor]:
        """(*): ``credit[l] * (onehot(path[l]) - softmax(alpha_l))`` per layer."""
        grads = []
        for layer, (a, choice) in enumerate(zip(self.alpha, path)):
            probs = torch.softmax(a.detach().double(), 0)
            onehot = F.one_hot(torch.tensor(choice), probs.numel()).double()
            grads.append((credit[layer] * (onehot - probs)).to(a.dtype))
        return grads

    def path_cost(self, path: Sequence[int]) -> float:
        """The penalty's resource of ``path`` (raw units: MACs or parameters)."""
        return self.cost_base + sum(float(t[v]) for t, v in zip(self.cost_tables, path))

    def penalty_gradient(self, path: Sequence[int]) -> Optional[List[Tensor]]:
        """coef x the gradient of the resource penalty (see the module docstring), or None when inactive."""
        # network.py line 145: the penalty is backpropagated only when the sampled path's FLOPs >= the target.
        if self.resource_coef == 0 or (self.target is not None and self.path_cost(path) < self.target):
            return None
        grads = []
        for a, table, choice in zip(self.alpha, self.cost_tables, path):
            probs = torch.softmax(a.detach().double(), 0)
            cost = table / COST_UNIT
            if self.penalty == "expected":  # d/d alpha of sum_k p_k c_k
                g = probs * (cost - (probs * cost).sum())
            else:  # d/d alpha of p_s c_s, the authors' surrogate
                g = cost[choice] * probs[choice] * (F.one_hot(torch.tensor(choice), probs.numel()).double() - probs)
            grads.append((self.resource_coef * g).to(a.dtype))
        return grads

    # -- training --------------------------------------------------------------------------
    def step(self, train_batch, valid_batch) -> dict:
        """One DSNAS step on ``train_batch``; ``valid_batch`` is unused (single-level: see the module docstring)."""
        self.supernet.train()
        x, y = train_batch
        path = self.sample_path()
        searching = self.searching
        self.optimizer.zero_grad(set_to_none=True)
        if searching:
            loss, logits, arch_grads = self.arch_gradient(x, y, path)
        else:
            with self._autocast(x.device):
                logits = self.supernet(x, list(path))
                loss = self.criterion(logits, y)
            self.scaler.scale(loss).backward()
            loss, logits = loss.detach(), logits.detach()
        # Before unscaling: every rank's fp16 scaler must see the same gradients (see SinglePathSearch.step).
        distributed.all_reduce_gradients(self.supernet.weight_parameters())
        if searching:
            arch_grads = distributed.average_gradient_list(arch_grads, self.alpha)
        self.scaler.unscale_(self.optimizer)
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.supernet.weight_parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.lr_unit == "iteration":
            self.scheduler.step()
        if searching and all(bool(torch.isfinite(g).all()) for g in arch_grads):
            self._arch_step(path, arch_grads)
        self.global_step += 1
        return {"loss": loss, "correct": (logits.argmax(1) == y).sum(), "count": y.shape[0], "paths": 1}

    def _arch_step(self, path: Tuple[int, ...], grads: List[Tensor]) -> None:
        penalty = self.penalty_gradient(path)
        self.arch_optimizer.zero_grad(set_to_none=True)
        for layer, (a, g) in enumerate(zip(self.alpha, grads)):
            if layer in self.fixed:
                continue  # grad None: Adam leaves a fixed layer's alpha (and its moments) alone
            a.grad = g if penalty is None else g + penalty[layer]
        self.arch_optimizer.step()

    def end_epoch(self) -> None:
        if self.searching and self.fix_threshold is not None:
            self._fix_confident_layers()
        super().end_epoch()

    def _fix_confident_layers(self) -> None:
        """Eq. 8: fix every layer whose top-2 probabilities differ by at least ``fix_threshold``."""
        for layer, probs in enumerate(self.probabilities()):
            if layer in self.fixed or probs.numel() < 2:
                continue
            top = torch.topk(probs, 2)
            if float(top.values[0] - top.values[1]) >= self.fix_threshold:
                self.fixed[layer] = int(top.indices[0])

    # -- after training ----------------------------------------------------------------------
    def derived_path(self) -> Tuple[int, ...]:
        """The argmax path; if the constraint rejects it, the most probable path the constraint admits."""
        best = self.argmax_path()
        if not self.constraint.active or self.constraint.admits(self.space, best):
            return best
        log_probs = [torch.log_softmax(a.detach().double(), 0) for a in self.alpha]
        if self.space.size <= ENUMERATE_LIMIT:
            candidates = self.space.all_paths()
        else:  # too many to list: the most probable of many draws from p(alpha)
            draw = torch.Generator().manual_seed(self.seed)
            candidates = torch.stack([torch.multinomial(lp.exp(), 4096, replacement=True, generator=draw)
                                      for lp in log_probs], 1).unique(dim=0)
        score = sum(lp[candidates[:, layer]] for layer, lp in enumerate(log_probs))
        for index in torch.argsort(score, descending=True).tolist():
            path = tuple(candidates[index].tolist())
            if self.constraint.admits(self.space, path):
                return path
        raise RuntimeError(f"no path of {self.space.name} that DSNAS considered satisfies {self.constraint}")

    def search(self, score_fn: ScoreFn, *, on_generation: Optional[Callable[[dict], None]] = None,
               state: Optional[dict] = None, on_state: Optional[Callable[[dict], None]] = None,
               **strategy_options: Any) -> SearchResult:
        """DSNAS needs no separate search: the derived path (:meth:`derived_path`) with its supernet score.

        ``score_fn(paths [1, L]) -> [1]`` scores it (e.g. ``evaluate_paths``
        accuracy). ``state``/``on_state`` are accepted for interface
        compatibility; there is nothing to resume.
        """
        if strategy_options:
            raise TypeError(f"DSNAS derives its path from alpha and takes no search options; "
                            f"got {sorted(strategy_options)}")
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable (paths [P, L] -> scores [P]), got {type(score_fn).__name__}")
        path = self.derived_path()
        score_fn = mean_over_ranks(score_fn)  # under torchrun every rank calls search (see SinglePathSearch.search)
        scores = torch.as_tensor(score_fn(torch.tensor([path], dtype=torch.long))).flatten()
        if scores.numel() != 1:
            raise ValueError(f"score_fn must return one score per path, got {scores.numel()} for 1 path")
        self.best_path, self.best_score = path, float(scores[0])
        record = {"path": self.space.format(path), "best_score": self.best_score}
        if on_generation is not None:
            on_generation(record)
        return SearchResult(best_path=path, best_score=self.best_score, history=[(path, self.best_score)],
                            evaluations=1, extra={"strategy": "argmax"})

    def derive_network(self, path: Optional[Sequence[int]] = None) -> nn.Module:
        """The child network of ``path`` (default: the searched or derived path) with its supernet weights."""
        path = self.space.check_path(path) if path is not None else (self.best_path or self.derived_path())
        extract = getattr(self.space, "extract_network", None)
        if extract is None:
            raise NotImplementedError(f"{type(self.space).__name__} has no extract_network(supernet, path): "
                                      f"cannot deploy a child with its supernet weights")
        return extract(self.supernet, path)

    # -- runner interface ------------------------------------------------------------------------
    def genotype(self) -> str:
        """The current argmax path (DSNAS's architecture at any time)."""
        return self.space.format(self.argmax_path())

    def arch_snapshot(self) -> dict:
        return {"probabilities": [p.tolist() for p in self.probabilities()],
                "fixed": [self.fixed.get(layer) for layer in range(self.space.num_layers)],
                "searching": self.searching, "lr": self.optimizer.param_groups[0]["lr"]}

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update({
            "alpha": [a.detach().clone() for a in self.alpha],
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "fixed": [[layer, choice] for layer, choice in sorted(self.fixed.items())],
        })
        return state

    def load_state_dict(self, state: dict) -> None:
        alpha = state["alpha"]
        if [tuple(a.shape) for a in alpha] != [(k,) for k in self.space.num_choices]:
            raise ValueError(f"state['alpha'] has shapes {[tuple(a.shape) for a in alpha]}, this space needs "
                             f"{[(k,) for k in self.space.num_choices]}")
        super().load_state_dict(state)
        with torch.no_grad():
            for a, saved in zip(self.alpha, alpha):
                a.copy_(saved)
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.generator.set_state(state["generator"])
        self.fixed = {int(layer): int(choice) for layer, choice in state["fixed"]}

