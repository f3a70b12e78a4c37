"""Single-path supernet of NAS-Bench-201's cell (Dong & Yang, ICLR 2020, Sec. 2.1 and 5).

The one-shot baselines of NAS-Bench-201 that train one path at a time
(Random search with weight sharing, SETN, GDAS's sampled forward) share one
cell genotype across all 3N cells of the skeleton, but every cell has its own
weights. Here every cell holds one :class:`ChoiceLayer` per edge (the 5
candidate ops of that edge), and edge e of every cell follows path entry e.
A path is 6 op indices in ``NB201_EDGES`` order, ops in the benchmark's order
``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``.

BatchNorms are affine and track running statistics, as in the stand-alone
network (NAS-Bench-201's own search code uses affine-free BNs): the weights of
a path then deploy to :class:`pynas.models.NB201Network` unchanged (see
``NB201PathSpace.extract_network``). Module names mirror that network's
(``cells.{b}.ops.{e}`` there is ``cells.{b}.ops.{e}.candidates.{op}`` here).
"""
from __future__ import annotations

from typing import Any, List, Optional

from torch import Tensor, nn

from pynas.ops.pooling import GlobalAvgPool2d
from pynas.spaces.genotypes import NB201_EDGES
from pynas.spaces.nb201_ops import PRIMITIVES, ResNetBasicBlock, nb201_op

from .choice_layer import ChoiceLayer
from .path_batch import convert_to_path_batch_norm
from .single_path import Column, SinglePathSupernet

__all__ = ["NB201ChoiceCell", "NB201PathSupernet"]


class NB201ChoiceCell(nn.Module):
    """NAS-Bench-201's cell with one ChoiceLayer per edge; node j = sum over i < j of edge_ij(node i)."""

    def __init__(self, C: int):
        super().__init__()
        self.edges = list(NB201_EDGES)  # (to, from)
        # Same attribute name as NB201Cell.ops, so a path's state dict maps key by key.
        self.ops = nn.ModuleList(ChoiceLayer([nb201_op(op, C, C, 1) for op in PRIMITIVES], PRIMITIVES)
                                 for _ in self.edges)

    def forward(self, x: Tensor, columns: List[Column]) -> Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            total: Optional[Tensor] = None
            for e, (to, frm) in enumerate(self.edges):
                if to == node:
                    h = self.ops[e](nodes[frm], columns[e])
                    total = h if total is None else total + h
            nodes.append(total)
        return nodes[3]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class NB201PathSupernet(SinglePathSupernet):
    """Stem, 3 stages of N choice cells (C, 2C, 4C channels) with residual reductions, BN-ReLU, pool, linear.

    ``supernet(x, path)``: path is 6 ints or a ``[N, 6]`` per-row tensor. With
    no ``space`` given, a matching ``NB201PathSpace`` is made. Weights are
    initialised from torch's global RNG, as the other supernets.
    """

    def __init__(self, *, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3,
                 space: Any = None):
        super().__init__()
        for name, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels)):
            _positive_int(name, value)
        from pynas.spaces.nb201_path_space import NB201PathSpace

        if space is None:
            space = NB201PathSpace(C=C, N=N, num_classes=num_classes, in_channels=in_channels)
        elif not isinstance(space, NB201PathSpace):
            raise TypeError(f"space must be an NB201PathSpace, got {type(space).__name__}")
        elif (space.C, space.N, space.num_classes, space.in_channels) != (C, N, num_classes, in_channels):
            raise ValueError(f"space {space!r} does not match C={C}, N={N}, num_classes={num_classes}, "
                             f"in_channels={in_channels}")
        self.space = space
        self.C, self.N = C, N
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        blocks: List[nn.Module] = []
        C_prev = C
        for stage, C_stage in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                blocks.append(ResNetBasicBlock(C_prev, C_stage, 2))
            blocks += [NB201ChoiceCell(C_stage) for _ in range(N)]
            C_prev = C_stage
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = GlobalAvgPool2d()
        self.classifier = nn.Linear(C_prev, num_classes)
        convert_to_path_batch_norm(self)

    def choice_layers(self) -> List[ChoiceLayer]:
        """All 18N ChoiceLayers, cell by cell, edges in path order within a cell.

        Path entry e drives the e-th layer of every cell (:meth:`layers_of`),
        so this list is longer than the path.
        """
        return [layer for cell in self.cells if isinstance(cell, NB201ChoiceCell) for layer in cell.ops]

    def layers_of(self, entry: int) -> List[ChoiceLayer]:
        """The ChoiceLayers that follow path entry ``entry`` (edge ``NB201_EDGES[entry]`` of every cell)."""
        if isinstance(entry, bool) or not isinstance(entry, int) or not 0 <= entry < len(NB201_EDGES):
            raise ValueError(f"entry must be an int in [0, {len(NB201_EDGES)}), got {entry!r}")
        return [cell.ops[entry] for cell in self.cells if isinstance(cell, NB201ChoiceCell)]

    def forward_columns(self, x: Tensor, columns: List[Column]) -> Tensor:
        h = self.stem(x)
        for block in self.cells:
            h = block(h, columns) if isinstance(block, NB201ChoiceCell) else block(h)
        return self.classifier(self.global_pooling(self.lastact(h)).flatten(1))
