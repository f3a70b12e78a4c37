"""The NAS-Bench-201 search network (Dong & Yang, ICLR 2020, Sec. 2.1 and 5) on fused kernels.

NAS-Bench-201's DARTS baseline searches one cell shared by all 15 cells of
the skeleton: 6 edges x 5 ops, node j = sum_{i<j} sum_ops softmax(alpha_ij) *
op(node i). Here each node is one ``weighted_sum`` over all its (edge, op)
pairs; ``none`` is never computed. Search BNs are affine-free and track
running statistics, as in the benchmark's search code.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from pynas.ops.pooling import GlobalAvgPool2d
from pynas import ops
from pynas.spaces.genotypes import NB201_EDGES
from pynas.spaces.nb201_ops import PRIMITIVES, ResNetBasicBlock, nb201_op

from .arch_weights import ArchitectureMixin, NodeSoftmax


class NB201MixedCell(nn.Module):
    """One searchable cell. With ``partial_channels = K > 1`` each edge mixes its ops
    on the first C/K channels and bypasses the rest (PC-DARTS), in one
    ``partial_channel_mix`` call; a node then sums its edges with one
    ``weighted_sum``. ``active_edges`` restricts the cell to a fixed topology."""

    def __init__(self, C: int, primitives: Sequence[str], *, partial_channels: int = 1,
                 active_edges: Optional[Sequence[int]] = None, affine: bool = False, track_running_stats: bool = True):
        super().__init__()
        self.edges = list(NB201_EDGES)  # (to, from)
        self.partial_channels = partial_channels
        self.op_columns = [k for k, p in enumerate(primitives) if p != "none"]
        op_c = C // partial_channels
        self.edge_ops = nn.ModuleList(
            nn.ModuleList(nb201_op(primitives[k], op_c, op_c, 1, affine, track_running_stats) for k in self.op_columns)
            for _ in self.edges
        )
        active = set(range(len(self.edges)) if active_edges is None else active_edges)
        self.node_edges = {node: [e for e, (to, _) in enumerate(self.edges) if to == node and e in active]
                           for node in (1, 2, 3)}
        for node, edges in self.node_edges.items():
            if not edges:
                raise ValueError(f"node {node} has no active incoming edge")

    def forward(self, x: Tensor, op_weights: Tensor, edge_weights: Optional[Tensor]) -> Tensor:
        """``op_weights``: ``[6, P]`` over the computed ops; ``edge_weights``: ``[6]`` or None."""
        nodes = [x]
        for node in (1, 2, 3):
            edges = self.node_edges[node]
            if self.partial_channels > 1:
                mixed = [self._partial_edge(e, nodes[self.edges[e][1]], op_weights[e]) for e in edges]
                w = edge_weights[edges] if edge_weights is not None else op_weights.new_ones(len(edges))
                nodes.append(ops.weighted_sum(mixed, w))
                continue
            outs = [op(nodes[self.edges[e][1]]) for e in edges for op in self.edge_ops[e]]
            w = op_weights[edges]
            if edge_weights is not None:
                w = w * edge_weights[edges].unsqueeze(1)
            nodes.append(ops.weighted_sum(outs, w.reshape(-1)))
        return nodes[3]

    def _partial_edge(self, e: int, x: Tensor, weights: Tensor) -> Tensor:
        ys = [op(x[:, : x.shape[1] // self.partial_channels]) for op in self.edge_ops[e]]
        return ops.partial_channel_mix(ys, weights, x, self.partial_channels)


class NB201Supernet(ArchitectureMixin, nn.Module):
    """Skeleton: stem, 3 stages of N mixed cells (C, 2C, 4C), residual reductions, BN-ReLU, pool, linear.

    Architecture parameters: ``alpha`` ``[6, len(primitives)]`` (one cell shared
    by all), and with ``edge_normalization`` a ``beta`` ``[6]`` normalised per node.
    """

    def __init__(
        self,
        *,
        C: int = 16,
        N: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
        primitives: Sequence[str] = PRIMITIVES,
        partial_channels: int = 1,
        edge_normalization: bool = False,
        search_ops: bool = True,
        active_edges: Optional[Sequence[int]] = None,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        for name, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(partial_channels, bool) or not isinstance(partial_channels, int) or partial_channels < 1 \
                or C % partial_channels:
            raise ValueError(f"partial_channels must be a positive int dividing C = {C}, got {partial_channels!r}")
        unknown = [p for p in primitives if p not in PRIMITIVES]
        if unknown:
            raise ValueError(f"unknown primitives {unknown}; known: {list(PRIMITIVES)}")
        self.primitives = tuple(primitives)
        self.search_ops = search_ops
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        blocks: list[nn.Module] = []
        C_prev = C
        for stage, C_stage in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                blocks.append(ResNetBasicBlock(C_prev, C_stage, 2))
            blocks += [NB201MixedCell(C_stage, self.primitives, partial_channels=partial_channels,
                                      active_edges=active_edges) for _ in range(N)]
            C_prev = C_stage
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = GlobalAvgPool2d()
        self.classifier = nn.Linear(C_prev, num_classes)
        num_edges = len(NB201_EDGES)
        self.op_columns = [k for k, p in enumerate(self.primitives) if p != "none"]
        self.alpha = nn.Parameter(1e-3 * torch.randn(num_edges, len(self.primitives), generator=generator),
                                  requires_grad=search_ops)
        self.edge_normalization = edge_normalization
        if edge_normalization:
            self.beta = nn.Parameter(1e-3 * torch.randn(num_edges, generator=generator))
            node_edges = [[e for e, (to, _) in enumerate(NB201_EDGES) if to == node] for node in (1, 2, 3)]
            self.node_softmax = NodeSoftmax(node_edges, num_edges)
        else:
            self.register_parameter("beta", None)

    def forward(self, x: Tensor) -> Tensor:
        op_w = self.op_weights()[..., self.op_columns]
        edge_w = self.edge_weights()
        h = self.stem(x)
        for block in self.cells:
            h = block(h, op_w, edge_w) if isinstance(block, NB201MixedCell) else block(h)
        return self.classifier(self.global_pooling(self.lastact(h)).flatten(1))
