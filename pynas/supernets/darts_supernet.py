"""The DARTS search network (Liu et al., ICLR 2019, Sec. 2 and 3.1.1) on fused kernels.

Differences from the papers' code are in how the same function is computed:

* a node's output ``sum_edges sum_ops w * op(h)`` is one ``weighted_sum`` call
  over every (edge, op) pair entering the node, instead of one Python sum per
  edge and another over edges;
* the ``none`` op is never computed: its output is zero, so dropping it from
  the sum is exact (its logit still takes part in the softmax);
* the op softmax of every edge of both cell types, and PC-DARTS's edge
  softmax, are one batched call per forward (:mod:`.arch_weights`);
* PC-DARTS's partial-channel edge (Xu et al., ICLR 2020, Sec. 3.2) is one
  ``partial_channel_mix`` call (mix, bypass, concat and channel shuffle);
* the cell runs state by state: as soon as a state exists, every candidate
  op of every edge reading it runs stacked along the channel axis
  (:mod:`.edge_batch`: one depthwise, one grouped pointwise conv and one BN
  per op for up to 4 edges; pools and affine-free BNs, identical on every
  edge, computed once), and ReLU(state), which every conv op opens with, is
  computed once for all of them: same values, a fraction of the calls.

The same class serves DARTS (``partial_channels=1``), PC-DARTS
(``partial_channels=K``, ``edge_normalization=True``), FTSO's topology search
(``primitives=('skip_connect',)``, ``edge_normalization=True``, optionally
``stride2_skip="pool"``) and FTSO's operator search on a fixed topology
(``active_edges``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from pynas.ops.pooling import GlobalAvgPool2d
from pynas import ops
from pynas.spaces.darts_ops import PRIMITIVES, FactorizedReduce, ReLUConvBN, search_op

from .arch_weights import ArchitectureMixin, NodeSoftmax
from .edge_batch import needs_relu, run_op_group


def cell_edges(steps: int) -> list[tuple[int, int]]:
    """(node, input state) of every edge, node-major as in DARTS: 2 + 3 + 4 + 5 = 14 for 4 steps."""
    return [(node, j) for node in range(steps) for j in range(node + 2)]


STRIDE2_SKIPS = ("factorized", "pool")


def _edge_op(name: str, C: int, stride: int, stride2_skip: str) -> nn.Module:
    """``search_op``, except that ``stride2_skip="pool"`` makes the stride-2 skip connection a
    weight-free 2x2 average pool instead of DARTS's FactorizedReduce (two 1x1 convs): FTSO's
    topology supernet then has no kernel weights on any cell edge (see pynas.algorithms.ftso)."""
    if name == "skip_connect" and stride == 2 and stride2_skip == "pool":
        return nn.AvgPool2d(2, 2)
    return search_op(name, C, stride)


class MixedCell(nn.Module):
    """One searchable cell: 2 input states, ``steps`` nodes, output = concat of the last ``multiplier``."""

    def __init__(
        self,
        *,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        steps: int,
        multiplier: int,
        primitives: Sequence[str],
        partial_channels: int,
        active_edges: Optional[Sequence[int]],
        stride2_skip: str = "factorized",
    ):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        self.partial_channels = partial_channels
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = cell_edges(steps)
        active = set(range(len(self.edges)) if active_edges is None else active_edges)
        # Columns of the op weights that are computed ('none' never is).
        self.op_columns = [k for k, name in enumerate(primitives) if name != "none"]
        computed = [primitives[k] for k in self.op_columns]
        if not computed:
            raise ValueError("primitives must contain at least one op other than 'none'")
        op_channels = C // partial_channels
        self.edge_ops = nn.ModuleDict()
        self.bypass_pool = nn.ModuleDict()
        for e, (node, j) in enumerate(self.edges):
            if e not in active:
                continue
            stride = 2 if reduction and j < 2 else 1
            self.edge_ops[str(e)] = nn.ModuleList(_edge_op(name, op_channels, stride, stride2_skip)
                                                  for name in computed)
            if partial_channels > 1 and stride == 2:
                # PC-DARTS max-pools the bypassed channels of a stride-2 edge.
                self.bypass_pool[str(e)] = nn.MaxPool2d(2, 2)
        self.node_edges = [[e for e, (n, _) in enumerate(self.edges) if n == node and e in active]
                           for node in range(steps)]
        for node, edges in enumerate(self.node_edges):
            if not edges:
                raise ValueError(f"node {node} has no active incoming edge")
        # The active edges reading each state, and per op column their modules (plain lists of
        # references: the modules are registered once, in edge_ops).
        self.state_edges = [[e for e, (_, j) in enumerate(self.edges) if j == state and str(e) in self.edge_ops]
                            for state in range(steps + 2)]
        self.state_op_columns = [[[self.edge_ops[str(e)][p] for e in edges] for p in range(len(computed))] if edges
                                 else [] for edges in self.state_edges]
        self.relu_needed = [any(needs_relu(mods[0]) for mods in columns) for columns in self.state_op_columns]

    def forward(self, s0: Tensor, s1: Tensor, op_weights: Tensor, edge_weights: Optional[Tensor]) -> Tensor:
        """``op_weights``: ``[E, P]`` over the computed ops; ``edge_weights``: ``[E]`` or None."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        edge_outs: dict[int, list[Tensor]] = {}  # edge -> its op outputs, in op-column order
        bypass: dict[int, Tensor] = {}  # PC-DARTS: edge -> the tensor its bypassed channels come from
        self._run_state(0, states[0], edge_outs, bypass)
        self._run_state(1, states[1], edge_outs, bypass)
        for node in range(self.steps):
            edges = self.node_edges[node]
            if self.partial_channels == 1:
                w = op_weights[edges]
                if edge_weights is not None:
                    w = w * edge_weights[edges].unsqueeze(1)
                state = ops.weighted_sum([out for e in edges for out in edge_outs.pop(e)], w.reshape(-1))
            else:
                mixed = [ops.partial_channel_mix(edge_outs.pop(e), op_weights[e], bypass.pop(e), self.partial_channels)
                         for e in edges]
                w = edge_weights[edges] if edge_weights is not None else op_weights.new_ones(len(edges))
                state = ops.weighted_sum(mixed, w)
            states.append(state)
            self._run_state(node + 2, state, edge_outs, bypass)
        return torch.cat(states[-self.multiplier:], dim=1)

    def _run_state(self, j: int, x: Tensor, edge_outs: dict, bypass: dict) -> None:
        """Every candidate op of every active edge reading state ``j``, stacked over the edges."""
        edges = self.state_edges[j]
        if not edges:
            return
        part = x[:, : x.shape[1] // self.partial_channels] if self.partial_channels > 1 else x
        relu_part = torch.relu(part) if self.relu_needed[j] else None
        columns = [run_op_group(mods, part, relu_part) for mods in self.state_op_columns[j]]
        for i, e in enumerate(edges):
            edge_outs[e] = [outs[i] for outs in columns]
        if self.partial_channels > 1:
            # PC-DARTS max-pools the bypassed channels of a stride-2 edge; the pool has no weights,
            # so the edges reading one state share it.
            pooled = self.bypass_pool[str(edges[0])](x) if str(edges[0]) in self.bypass_pool else x
            bypass.update((e, pooled) for e in edges)


STEMS = ("cifar", "imagenet")


class DartsSupernet(ArchitectureMixin, nn.Module):
    """DARTS search network: stem, ``layers`` mixed cells (reductions at 1/3 and 2/3), classifier.

    Defaults are DARTS's CIFAR-10 search settings (C=16, 8 layers, 4 steps,
    multiplier 4, stem multiplier 3). ``stem="imagenet"`` is the stem of
    PC-DARTS's direct ImageNet search (Xu et al., ICLR 2020; the authors'
    ``model_search_imagenet.py``): three stride-2 3x3 convs, so cells start
    at 1/8 of the input size. ``stride2_skip="pool"``: the stride-2
    ``skip_connect`` of reduction cells is a 2x2 average pool (no weights)
    instead of FactorizedReduce. Architecture parameters: ``alpha``
    ``[2, E, len(primitives)]`` (normal, reduce), initialised to 1e-3 * N(0, 1)
    as in DARTS, and with ``edge_normalization`` PC-DARTS's ``beta`` ``[2, E]``.
    """

    def __init__(
        self,
        *,
        C: int = 16,
        layers: int = 8,
        num_classes: int = 10,
        in_channels: int = 3,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        stem: str = "cifar",
        primitives: Sequence[str] = PRIMITIVES,
        partial_channels: int = 1,
        edge_normalization: bool = False,
        search_ops: bool = True,
        active_edges: Optional[dict] = None,
        stride2_skip: str = "factorized",
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        if stride2_skip not in STRIDE2_SKIPS:
            raise ValueError(f"stride2_skip must be one of {STRIDE2_SKIPS}, got {stride2_skip!r}")
        for name, value in (("C", C), ("layers", layers), ("num_classes", num_classes), ("in_channels", in_channels),
                            ("steps", steps), ("multiplier", multiplier), ("partial_channels", partial_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if C % partial_channels:
            raise ValueError(f"C = {C} must be divisible by partial_channels = {partial_channels}")
        unknown = [p for p in primitives if p not in PRIMITIVES]
        if unknown:
            raise ValueError(f"unknown primitives {unknown}; known: {list(PRIMITIVES)}")
        if multiplier > steps:
            raise ValueError(f"multiplier = {multiplier} cannot exceed steps = {steps}")
        self.primitives = tuple(primitives)
        self.steps = steps
        self.search_ops = search_ops
        self.edges = cell_edges(steps)
        num_edges = len(self.edges)
        active_edges = active_edges or {}
        self.reduction_layers = {layers // 3, 2 * layers // 3} if layers >= 3 else set()

        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        self.stem_kind = stem
        if stem == "cifar":
            C_curr = stem_multiplier * C
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(C_curr))
            reduction_prev = False
        else:
            # PC-DARTS's ImageNet search network (its model_search_imagenet.py): two stride-2 convs give
            # s0 at 1/4 of the input, one more gives s1 at 1/8, so the first cell reduces s0.
            if C % 2:
                raise ValueError(f"the imagenet stem needs an even C, got {C}")
            C_curr = C
            self.stem0 = nn.Sequential(
                nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
                nn.ReLU(inplace=False), nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(C))
            reduction_prev = True
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in self.reduction_layers
            if reduction:
                C_curr *= 2
            cell = MixedCell(
                C_prev_prev=C_prev_prev, C_prev=C_prev, C=C_curr, reduction=reduction, reduction_prev=reduction_prev,
                steps=steps, multiplier=multiplier, primitives=self.primitives, partial_channels=partial_channels,
                active_edges=active_edges.get("reduce" if reduction else "normal"), stride2_skip=stride2_skip,
            )
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = GlobalAvgPool2d()
        self.classifier = nn.Linear(C_prev, num_classes)

        self.op_columns = self.cells[0].op_columns
        self.alpha = nn.Parameter(1e-3 * torch.randn(2, num_edges, len(self.primitives), generator=generator),
                                  requires_grad=search_ops)
        self.edge_normalization = edge_normalization
        if edge_normalization:
            self.beta = nn.Parameter(1e-3 * torch.randn(2, num_edges, generator=generator))
            node_edges = [[e for e, (n, _) in enumerate(self.edges) if n == node] for node in range(steps)]
            self.node_softmax = NodeSoftmax(node_edges, num_edges)
        else:
            self.register_parameter("beta", None)

    # -- forward -----------------------------------------------------------
    def stem_states(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The two input states of the first cell."""
        if self.stem_kind == "cifar":
            s = self.stem(x)
            return s, s
        s0 = self.stem0(x)
        return s0, self.stem1(s0)

    def forward(self, x: Tensor) -> Tensor:
        op_w = self.op_weights()[..., self.op_columns]
        edge_w = self.edge_weights()
        s0, s1 = self.stem_states(x)
        for cell in self.cells:
            kind = 1 if cell.reduction else 0
            s0, s1 = s1, cell(s0, s1, op_w[kind], None if edge_w is None else edge_w[kind])
        return self.classifier(self.global_pooling(s1).flatten(1))
