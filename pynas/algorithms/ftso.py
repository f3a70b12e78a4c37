"""FTSO: Effective NAS via First Topology Second Operator (Wang & Chen; arXiv 2303.12948).

FTSO splits the search in two. First the *topology*: a supernet whose every
edge carries a single parameter-free op (a skip connection) and a learnable
edge weight, normalised over each node's incoming edges; the strongest edges
of each node are kept. Then the *operators* of the kept edges, by one of the
two variants the paper reports:

* ``operator="fixed"``: every kept edge gets one op (default: the 3x3
  separable convolution on the DARTS space, ``nor_conv_3x3`` on
  NAS-Bench-201); no second search, which is how the paper reaches its
  sub-second search time.
* ``operator="search"``: a DARTS search (first or second order) over the
  non-zero ops, restricted to the kept edges.

Readings of details the available text does not settle (the full text could
not be consulted here; see docs/papers/differentiable.md), each configurable:
the topology op (``topology_op``, default ``skip_connect``), the number of
kept edges per node (``edges_per_node``, default 2 as in DARTS's
discretisation), the topology stage's length (``topology_epochs``, default 1,
optionally capped by ``topology_steps``), and the optimiser settings, which
default to DARTS's (Liu et al., ICLR 2019, Sec. A.1.1).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from pynas.spaces.darts_space import DartsCellSpace, NB201CellSpace
from pynas.spaces.genotypes import DartsGenotype, NB201Genotype

from . import register_algorithm
from ._validate import check_choice, check_nonneg_int, check_positive_int
from .darts import DARTS

FTSO_DEFAULTS = dict(epochs=1, batch_size=64, C=16, layers=8, topology_epochs=1, operator="fixed",
                     operator_epochs=50)
_FIXED_OP = {"darts": "sep_conv_3x3", "nas-bench-201": "nor_conv_3x3"}


def _kept_edges(space: Any, edge_weights: torch.Tensor, per_node: int) -> list[int]:
    """Per node, the ``per_node`` incoming edges with the largest weight (ties: lower input first)."""
    if isinstance(space, DartsCellSpace):
        groups = [list(range(a, b)) for a, b in space.edge_groups]
    else:
        groups = [[e for e, (to, _) in enumerate(space.edges) if to == node] for node in (1, 2, 3)]
    kept = []
    w = edge_weights.tolist()
    for edges in groups:
        ranked = sorted(edges, key=lambda e: -w[e])
        kept += sorted(ranked[:per_node])
    return kept


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
        self.search = DARTS(epochs=self.topology_epochs, primitives=(topology_op,), edge_normalization=True,
                            search_ops=False, **self._common)
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

    def _finish_topology(self) -> None:
        ew = self.search.supernet.edge_weights().detach().float().cpu()
        if isinstance(self.space, DartsCellSpace):
            self.topology = {"normal": _kept_edges(self.space, ew[0], self.edges_per_node),
                             "reduce": _kept_edges(self.space, ew[1], self.edges_per_node)}
        else:
            self.topology = {"cell": _kept_edges(self.space, ew, self.edges_per_node)}
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
        topology = self.topology
        if topology is None:
            ew = self.search.supernet.edge_weights().detach().float().cpu()
            topology = ({"normal": _kept_edges(self.space, ew[0], self.edges_per_node),
                         "reduce": _kept_edges(self.space, ew[1], self.edges_per_node)}
                        if isinstance(self.space, DartsCellSpace)
                        else {"cell": _kept_edges(self.space, ew, self.edges_per_node)})
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
