"""FTSO: Effective NAS via First Topology Second Operator (Wang & Chen; arXiv 2303.12948).

FTSO splits the search in two. First the *topology*: a supernet whose every
edge carries a single parameter-free op (a skip connection) and a learnable
edge weight ``beta``, normalised (softmax) over each node's incoming edges;
the strongest edges of each node are kept. Then the *operators* of the kept
edges, by one of the two variants the paper reports:

* ``operator="fixed"``: every kept edge gets one op (default: the 3x3
  separable convolution on the DARTS space, ``nor_conv_3x3`` on
  NAS-Bench-201); no second search, which is how the paper reaches its
  sub-second search time.
* ``operator="search"``: a DARTS search (first or second order) over the
  non-zero ops, restricted to the kept edges.

Only the abstract and introduction could be read (docs/papers/differentiable.md;
no official code was found in the code index). Everything below them is a
reading, each configurable:

* the topology op (``topology_op``, default ``skip_connect``), the number of
  kept edges per node (``edges_per_node``, default 2 as in DARTS's
  discretisation), the stage's length (``topology_epochs``, default 1,
  optionally capped by ``topology_steps``; ``topology_steps=1`` is our reading
  of the paper's 0.68 s search), and the weights' optimiser (DARTS's: Liu et
  al., ICLR 2019, Sec. A.1.1).
* How beta is learnt (``topology_update``). ``beta`` starts equal (zeros)
  in the first two modes, so the result cannot depend on an initialisation draw:

  - ``"gradient"`` (default): beta stays at zero (uniform edge weights) and the
    edges are ranked by ``-dL_val/dbeta``, averaged over the stage's steps
    (one per step, on that step's validation batch, at the weights of the
    moment; the weights train as usual). At one iteration this is exactly the
    ranking any gradient-descent step from equal weights gives, which is our
    reading of how a single iteration can fix the topology; over more steps it
    was the most seed-robust of the three modes we measured.
  - ``"sgd"``: plain SGD on beta (no momentum, no weight decay), lr
    ``topology_lr`` (default 1.0). From equal beta any lr > 0 gives the
    gradient's ranking at the first step; the lr only sets how far beta
    departs from uniform later. 1.0 because measured ``|dL/dbeta|`` per step is
    1e-3..2e-2, so one CPU-demo epoch (46 steps) spreads beta to about 0.4:
    visibly non-uniform but not saturated (lr 10 reached 1.7 and agreed less
    across seeds).
  - ``"adam"``: the previous behaviour, DARTS's alpha recipe: beta drawn
    1e-3 * N(0, 1) and Adam at ``arch_lr`` 3e-4. **Noise-dominated**: Adam's
    first step is +-lr whatever the gradient, smaller than the init noise, so
    at one iteration the kept edges are those of the random draw (61 of 64
    kept edges over 8 seeds), and after one demo epoch beta is within 0.014 of
    uniform. Kept only for comparison.

* Degeneracy of the skip-only supernet (a property of the maths, not a
  choice): at uniform edge weights every intermediate node of a normal cell
  equals the mean of the two (preprocessed) cell inputs, so an edge from an
  intermediate node carries the mean and its gradient is exactly zero, and
  the two input edges' gradients are opposite. In "gradient" mode, and at the
  first step of "sgd", a normal-cell node therefore says one thing: input 0 or
  input 1. The remaining pick is a tie among intermediate nodes, which we break
  towards the lower input index (DARTS's edge order, deterministic).
  A skip-only NAS-Bench-201 cell is fully degenerate: at uniform weights every
  node equals the cell input, dL/dbeta is exactly zero, and "gradient" or
  "sgd" keep the tie-break topology (each node's lowest inputs); there use a
  topology op with weights (e.g. ``topology_op="nor_conv_3x3"``). Scores
  that differ by less than ``tie_tolerance`` (relative to the largest
  magnitude among the node's edges; default 1e-4, float32 rounding of those
  zeros being ~1e-6 of the signal) count as ties.
* Reduction cells (``reduction_skip``). In DARTS a stride-2 ``skip_connect``
  is a FactorizedReduce (two 1x1 convs), so in a reduction cell the edges
  from the two cell inputs carry freshly initialised weights while the edges
  from intermediate nodes are identities. ``"factorized"`` (default) keeps
  DARTS's op, our reading of a method built on the DARTS space; its ranking
  then compares random projections against identities and depends on the
  network's initialisation (measured below). ``"pool"`` makes the stride-2
  skip a weight-free 2x2 average pool, so no cell edge has weights, as the
  paper's argument for a near-instant topology search assumes; reduction
  cells then have the normal cells' structure (and degeneracy). The topology
  op only exists in the topology supernet: the final cell uses the fixed or
  searched ops either way. NAS-Bench-201 cells have no stride-2 edges.

Measured seed robustness (8 network seeds, same Fashion-MNIST batches,
C=8, 5 cells; share of (seed, node) pairs of nodes with more than two inputs
whose kept pair is the most common one): at one iteration every mode is
about 50% (adam 44%, gradient 46-54%; the gradient at a random initialisation
depends on that initialisation, and more or larger batches did not help),
so the one-iteration topology reflects the network's random weights rather
than the data. After 46 steps, "gradient" reaches 92-96% on normal cells and 62-65%
overall with ``reduction_skip="factorized"``, 100% and 81% with ``"pool"``;
"sgd" (lr 1) 52% overall.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from pynas.spaces.darts_space import DartsCellSpace, NB201CellSpace
from pynas.spaces.genotypes import DartsGenotype, NB201Genotype
from pynas.training import distributed

from . import register_algorithm
from ._validate import check_choice, check_nonneg_float, check_nonneg_int, check_positive_float, check_positive_int
from .darts import DARTS

FTSO_DEFAULTS = dict(epochs=1, batch_size=64, C=16, layers=8, topology_epochs=1, operator="fixed",
                     operator_epochs=50)
_FIXED_OP = {"darts": "sep_conv_3x3", "nas-bench-201": "nor_conv_3x3"}
TOPOLOGY_UPDATES = ("gradient", "sgd", "adam")
REDUCTION_SKIPS = ("factorized", "pool")


def node_groups(space: Any) -> list[list[int]]:
    """The incoming edges of each intermediate node, in edge order."""
    if isinstance(space, DartsCellSpace):
        return [list(range(a, b)) for a, b in space.edge_groups]
    return [[e for e, (to, _) in enumerate(space.edges) if to == node] for node in (1, 2, 3)]


def _kept_edges(space: Any, scores: torch.Tensor, per_node: int, tie_tolerance: float = 1e-4) -> list[int]:
    """Per node, the ``per_node`` incoming edges with the largest score.

    Scores closer than ``tie_tolerance`` times the node's largest magnitude are a tie (they are snapped to
    multiples of it), broken towards the lower input: float32 rounding must not pick among edges that are
    equal in exact arithmetic (see the module docstring)."""
    kept = []
    w = scores.detach().double()
    for edges in node_groups(space):
        step = tie_tolerance * float(w[edges].abs().max())
        key = {e: round(float(w[e]) / step) if step > 0 else 0 for e in edges}
        ranked = sorted(edges, key=lambda e: (-key[e], e))
        kept += sorted(ranked[:per_node])
    return kept


class TopologySearch(DARTS):
    """FTSO's topology stage: DARTS's loop on the skip-only supernet, with beta learnt per ``update``."""

    def __init__(self, *, update: str, topology_lr: float, **options: Any):
        super().__init__(**options)
        self.update = update
        beta = self.supernet.beta
        if update != "adam":
            # Equal edge weights: nothing but the gradient can order the edges.
            with torch.no_grad():
                beta.zero_()
        if update == "sgd":
            self.a_optimizer = torch.optim.SGD([beta], lr=topology_lr, momentum=0.0, weight_decay=0.0)
        # "gradient": the sum of dL_val/dbeta over the stage's steps and their number.
        self.grad_sum = torch.zeros_like(beta, dtype=torch.float32)
        self.grad_steps = 0

    def _arch_step(self, x_train, y_train, x_valid, y_valid):
        if self.update != "gradient":
            return super()._arch_step(x_train, y_train, x_valid, y_valid)
        beta = self.supernet.beta
        loss = self._loss(x_valid, y_valid)
        (grad,) = torch.autograd.grad(self.scaler.scale(loss), [beta])
        (grad,) = distributed.average_gradient_list([grad], [beta])
        grad = grad.float() / float(self.scaler.get_scale()) if self.scaler.is_enabled() else grad.float()
        # An fp16 overflow step carries no ranking information; it is left out of the mean.
        if bool(torch.isfinite(grad).all()):
            self.grad_sum += grad.detach().to(self.grad_sum.device)
            self.grad_steps += 1
        return loss.detach()

    def scores(self) -> torch.Tensor:
        """Larger = stronger edge: ``-mean dL/dbeta`` ("gradient") or beta itself (its per-node softmax
        has the same order)."""
        if self.update == "gradient":
            return -self.grad_sum / max(self.grad_steps, 1)
        return self.supernet.beta.detach().float()

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["topology_grad_sum"] = self.grad_sum.clone()
        state["topology_grad_steps"] = self.grad_steps
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "topology_grad_sum" in state:
            self.grad_sum.copy_(state["topology_grad_sum"])
            self.grad_steps = int(state["topology_grad_steps"])

    def arch_snapshot(self) -> dict:
        snap = super().arch_snapshot()
        snap["topology_score"] = self.scores().cpu().tolist()
        if self.update == "gradient":  # beta stays uniform: the pictures show what ranks the edges instead
            snap["edge_score"] = snap["topology_score"]
        return snap


@register_algorithm("ftso")
class FTSO:
    """Topology search, then operators (fixed or searched) on the kept edges."""

    defaults = FTSO_DEFAULTS

    def __init__(
        self,
        *,
        space: Any,
        num_classes: int,
        in_channels: int = 3,
        C: int = 16,
        layers: Optional[int] = None,
        topology_epochs: int = 1,
        topology_steps: Optional[int] = None,
        topology_op: str = "skip_connect",
        edges_per_node: int = 2,
        topology_update: str = "gradient",
        topology_lr: float = 1.0,
        reduction_skip: str = "factorized",
        tie_tolerance: float = 1e-4,
        operator: str = "fixed",
        fixed_op: Optional[str] = None,
        operator_epochs: int = 50,
        order: int = 1,
        amp: str = "none",
        seed: int = 0,
        epochs: Optional[int] = None,
        **darts_options: Any,
    ):
        if not isinstance(space, (DartsCellSpace, NB201CellSpace)):
            raise TypeError(f"FTSO needs a cell space (darts or nas-bench-201), got {type(space).__name__}")
        self.space = space
        self.operator = check_choice(operator, "operator", ("fixed", "search"))
        self.topology_epochs = check_positive_int(topology_epochs, "topology_epochs")
        self.topology_steps = None if topology_steps is None else check_positive_int(topology_steps, "topology_steps")
        self.edges_per_node = check_positive_int(edges_per_node, "edges_per_node")
        self.operator_epochs = check_nonneg_int(operator_epochs, "operator_epochs") if operator == "search" else 0
        if epochs is not None and epochs != self.topology_epochs + self.operator_epochs:
            raise ValueError(f"epochs = {epochs} disagrees with topology_epochs + operator_epochs = "
                             f"{self.topology_epochs + self.operator_epochs}; set those instead")
        if topology_op not in space.primitives or topology_op == "none":
            raise ValueError(f"topology_op must be one of the space's non-none ops {list(space.primitives)}, "
                             f"got {topology_op!r}")
        self.fixed_op = fixed_op or _FIXED_OP[space.name]
        if self.fixed_op not in space.primitives or self.fixed_op == "none":
            raise ValueError(f"fixed_op must be a non-none op of the space, got {self.fixed_op!r}")
        self._common = dict(space=space, num_classes=num_classes, in_channels=in_channels, C=C, layers=layers,
                            amp=amp, seed=seed, **darts_options)
        self.order = order
        self.stage = "topology"
        self.topology: Optional[dict] = None
        self.topology_update = check_choice(topology_update, "topology_update", TOPOLOGY_UPDATES)
        self.topology_lr = check_positive_float(topology_lr, "topology_lr")
        self.reduction_skip = check_choice(reduction_skip, "reduction_skip", REDUCTION_SKIPS)
        self.tie_tolerance = check_nonneg_float(tie_tolerance, "tie_tolerance")
        topology_options = {}
        if isinstance(space, DartsCellSpace):
            topology_options["stride2_skip"] = self.reduction_skip
        elif self.reduction_skip != "factorized":
            raise ValueError(f"reduction_skip={reduction_skip!r} applies to the darts space only "
                             "(NAS-Bench-201 cells have no stride-2 edges)")
        self.search = TopologySearch(update=self.topology_update, topology_lr=self.topology_lr,
                                     epochs=self.topology_epochs, primitives=(topology_op,), edge_normalization=True,
                                     search_ops=False, **topology_options, **self._common)
        self.epochs = self.topology_epochs + self.operator_epochs
        self.steps_in_stage = 0

    # -- the trainer's interface -------------------------------------------------
    @property
    def supernet(self):
        return self.search.supernet

    @property
    def epoch(self) -> int:
        return self.search.epoch + (self.topology_epochs if self.stage == "operator" else 0)

    @property
    def global_step(self) -> int:
        return self.search.global_step

    def stage_done(self) -> bool:
        """The topology stage may be capped at ``topology_steps`` steps (the paper's sub-second setting)."""
        return self.stage == "topology" and self.topology_steps is not None \
            and self.steps_in_stage >= self.topology_steps

    def step(self, train_batch, valid_batch) -> dict:
        self.steps_in_stage += 1
        return self.search.step(train_batch, valid_batch)

    def end_epoch(self) -> None:
        self.search.end_epoch()
        if self.stage == "topology" and (self.search.epoch >= self.topology_epochs or self.stage_done()):
            self._finish_topology()

    def _current_topology(self) -> dict:
        """The kept edges by the topology stage's current scores."""
        scores = self.search.scores().cpu()
        if isinstance(self.space, DartsCellSpace):
            return {"normal": _kept_edges(self.space, scores[0], self.edges_per_node, self.tie_tolerance),
                    "reduce": _kept_edges(self.space, scores[1], self.edges_per_node, self.tie_tolerance)}
        return {"cell": _kept_edges(self.space, scores, self.edges_per_node, self.tie_tolerance)}

    def _finish_topology(self) -> None:
        self.topology = self._current_topology()
        self.stage = "done"
        if self.operator == "search" and self.operator_epochs > 0:
            self._start_operator_stage()

    def _start_operator_stage(self) -> None:
        active = self.topology if isinstance(self.space, DartsCellSpace) else self.topology["cell"]
        self.search = DARTS(epochs=self.operator_epochs, order=self.order, active_edges=active, **self._common)
        self.stage = "operator"
        self.steps_in_stage = 0

    # -- results ----------------------------------------------------------------
    def genotype(self):
        """The current best cell: during the topology stage, its kept edges with the fixed op."""
        topology = self.topology if self.topology is not None else self._current_topology()
        alpha = self.search.supernet.alpha.detach().float().cpu() if self.stage == "operator" else None
        if isinstance(self.space, DartsCellSpace):
            cells = []
            for kind, index in (("normal", 0), ("reduce", 1)):
                cells.append([(self._op(alpha[index][e] if alpha is not None else None), self.space.edges[e][1])
                              for e in topology[kind]])
            return DartsGenotype(cells[0], self.space.concat, cells[1], self.space.concat)
        kept = set(topology["cell"])
        return NB201Genotype(tuple(
            self._op(alpha[e] if alpha is not None else None) if e in kept else "none"
            for e in range(self.space.num_edges)))

    def _op(self, logits: Optional[torch.Tensor]) -> str:
        if logits is None:
            return self.fixed_op
        names = self.space.primitives
        best = max((k for k, n in enumerate(names) if n != "none"), key=lambda k: (float(logits[k]), -k))
        return names[best]

    def arch_snapshot(self) -> dict:
        snap = self.search.arch_snapshot()
        snap["stage"] = self.stage
        return snap

    def state_dict(self) -> dict:
        return {"stage": self.stage, "topology": self.topology, "steps_in_stage": self.steps_in_stage,
                "search": self.search.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.topology = state["topology"]
        if state["stage"] == "operator":
            self._start_operator_stage()
        self.stage = state["stage"]
        self.steps_in_stage = int(state["steps_in_stage"])
        self.search.load_state_dict(state["search"])
