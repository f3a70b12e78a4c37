"""Eager baselines: the DARTS and PC-DARTS search networks computed the way the
papers' released code computes them, on a :class:`DartsSupernet`'s own modules.

The supernet benchmark compares our fused cell against this. Only the cell
forward is rewritten; stem, preprocessing, candidate ops, classifier and the
architecture parameters are the wrapped supernet's, so both networks hold the
same parameters and compute the same function, and any difference in time or
memory comes from how the cell is evaluated:

* DARTS (quark0/darts, ``cnn/model_search.py``): each edge is a MixedOp,
  ``sum(w * op(x) for w, op in zip(weights, ops))`` over *every* primitive,
  'none' included (a ``Zero`` that allocates ``x.mul(0.)``, strided on
  reduction edges); a node is another Python ``sum`` over its edges; the op
  softmax is recomputed for every cell.
* PC-DARTS (yuhuixu1993/PC-DARTS, ``model_search.py``): an edge mixes the ops
  on ``x[:, :C // K]``, concatenates the bypassed ``x[:, C // K:]`` (max-pooled
  when the ops reduced the spatial size), then channel-shuffles in a separate
  call; a node is ``sum(beta_j * edge_j(h_j))``; op and edge softmaxes are
  recomputed for every cell, the edge softmax one node slice at a time.

Used by the supernet benchmark (:mod:`pynas.perf.supernet`) and its equivalence tests.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pynas.ops.reference import channel_shuffle
from pynas.spaces.darts_ops import Zero
from pynas.supernets.darts_supernet import DartsSupernet, MixedCell


class _EdgeOps:
    """One edge's candidate ops in primitive order, 'none' as a ``Zero`` module.

    A plain holder, not a module: the computing ops are the supernet's own
    (registered there), and ``Zero`` has no state to register.
    """

    def __init__(self, cell: MixedCell, e: int, primitives: tuple[str, ...], stride: int):
        computed = iter(cell.edge_ops[str(e)])
        self.ops = [Zero(stride) if name == "none" else next(computed) for name in primitives]
        # Stateless either way; the supernet builds one only for stride-2 PC edges.
        self.bypass_pool = cell.bypass_pool[str(e)] if str(e) in cell.bypass_pool else nn.MaxPool2d(2, 2)

    def mixed(self, x: Tensor, weights: Tensor) -> Tensor:
        """DARTS MixedOp: every op, 'none' included, weighted and summed in Python."""
        return sum(w * op(x) for w, op in zip(weights, self.ops))

    def partial(self, x: Tensor, weights: Tensor, k: int) -> Tensor:
        """PC-DARTS MixedOp: mix on the first C/k channels, concat the rest, shuffle."""
        c = x.shape[1]
        xtemp, xtemp2 = x[:, : c // k], x[:, c // k:]
        temp1 = sum(w * op(xtemp) for w, op in zip(weights, self.ops))
        if temp1.shape[2] != x.shape[2]:  # the ops reduced: so must the bypass
            xtemp2 = self.bypass_pool(xtemp2)
        return channel_shuffle(torch.cat([temp1, xtemp2], dim=1), k)


class _ReferenceCell:
    """A cell forward in the papers' style over a :class:`MixedCell`'s modules."""

    def __init__(self, cell: MixedCell, primitives: tuple[str, ...]):
        self.cell = cell
        self.edges = [_EdgeOps(cell, e, primitives, 2 if cell.reduction and j < 2 else 1)
                      for e, (_, j) in enumerate(cell.edges)]

    def __call__(self, s0: Tensor, s1: Tensor, weights: Tensor, weights2: Optional[Tensor]) -> Tensor:
        cell = self.cell
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        offset = 0
        for _ in range(cell.steps):
            if cell.partial_channels == 1:
                s = sum(self.edges[offset + j].mixed(h, weights[offset + j]) for j, h in enumerate(states))
            else:
                k = cell.partial_channels
                s = sum(weights2[offset + j] * self.edges[offset + j].partial(h, weights[offset + j], k)
                        for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-cell.multiplier:], dim=1)


class ReferenceDartsSupernet(nn.Module):
    """The papers' eager search network around ``supernet`` (same parameters, same function).

    Exposes the interface :class:`~pynas.algorithms.differentiable.DifferentiableSearch`
    uses, so the same search step runs on either network.
    """

    def __init__(self, supernet: DartsSupernet):
        super().__init__()
        if not isinstance(supernet, DartsSupernet):
            raise TypeError(f"expected a DartsSupernet, got {type(supernet).__name__}")
        partial = supernet.cells[0].partial_channels
        if any(len(cell.edge_ops) != len(cell.edges) for cell in supernet.cells):
            raise ValueError("the reference needs every edge active (no active_edges)")
        if (partial > 1) != (supernet.beta is not None):
            # The two papers' networks: DARTS (K=1, no beta) and PC-DARTS (K>1 with edge normalisation).
            raise ValueError("the reference covers DARTS (partial_channels=1, no edge_normalization) and "
                             "PC-DARTS (partial_channels>1 with edge_normalization)")
        self.supernet = supernet
        self.primitives = supernet.primitives
        self._cells = [_ReferenceCell(cell, supernet.primitives) for cell in supernet.cells]

    # The search loop's interface, delegated to the wrapped supernet.
    def arch_parameters(self) -> list[nn.Parameter]:
        return self.supernet.arch_parameters()

    def weight_parameters(self) -> list[nn.Parameter]:
        return self.supernet.weight_parameters()

    def op_weights(self) -> Tensor:
        return self.supernet.op_weights()

    def edge_weights(self) -> Optional[Tensor]:
        return self.supernet.edge_weights()

    def _betas(self, beta: Tensor) -> Tensor:
        """PC-DARTS's edge normalisation: a softmax per node slice, concatenated."""
        steps = self.supernet.steps
        starts = [sum(n + 2 for n in range(node)) for node in range(steps + 1)]
        return torch.cat([F.softmax(beta[a:b], dim=-1) for a, b in zip(starts[:-1], starts[1:])], dim=0)

    def forward(self, x: Tensor) -> Tensor:
        net = self.supernet
        s0, s1 = net.stem_states(x)
        for cell, ref in zip(net.cells, self._cells):
            kind = 1 if cell.reduction else 0
            weights = F.softmax(net.alpha[kind], dim=-1)
            weights2 = self._betas(net.beta[kind]) if net.beta is not None else None
            s0, s1 = s1, ref(s0, s1, weights, weights2)
        return net.classifier(net.global_pooling(s1).view(s1.shape[0], -1))
