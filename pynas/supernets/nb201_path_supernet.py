"""Single-path supernet of NAS-Bench-201's cell (Dong & Yang, ICLR 2020, Sec. 2.1 and 5).

The one-shot baselines of NAS-Bench-201 that train one path at a time
(Random search with weight sharing, SETN, GDAS's sampled forward) share one
cell genotype across all 3N cells of the skeleton, but every cell has its own
weights. Here every cell holds one :class:`ChoiceLayer` per edge (the 5
candidate ops of that edge), and edge e of every cell follows path entry e.
A path is 6 op indices in ``NB201_EDGES`` order, ops in the benchmark's order
``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``.

Cells need not share their topology: ``cell_groups`` (one group id per cell,
in network order; what ``NB201PathSpace(cell_topology=...)`` computes) makes
the path 6 entries per group, entries ``6 g .. 6 g + 5`` driving the cells of
group g. Every cell still has its own weights either way, so only the path's
length and which entries a cell reads change; the batched forward
(``forward_paths``, rows routed per layer) works unchanged.

This module does not import the space (the space builds the supernet, not the
other way round): ``space`` is checked by its name and configuration only.

BatchNorms are affine and track running statistics, as in the stand-alone
network (NAS-Bench-201's own search code uses affine-free BNs): the weights of
a path then deploy to :class:`pynas.models.NB201Network` unchanged (see
``NB201PathSpace.extract_network``). Module names mirror that network's
(``cells.{b}.ops.{e}`` there is ``cells.{b}.ops.{e}.candidates.{op}`` here).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

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

    ``supernet(x, path)``: path is ``6 G`` ints (G cell groups; 6 with shared
    cells) or a ``[N, 6 G]`` per-row tensor. Without a ``space`` (the space's
    ``build_supernet`` passes itself) paths are checked by length only and
    ``space`` stays None. Weights are initialised from torch's global RNG, as
    the other supernets.
    """

    def __init__(self, *, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3,
                 cell_groups: Optional[Sequence[int]] = None, space: Any = None):
        super().__init__()
        for name, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels)):
            _positive_int(name, value)
        groups = _check_groups(cell_groups, N)
        if space is not None:
            config = getattr(space, "config", None)
            if getattr(space, "name", None) != "nas-bench-201-path" or not callable(config):
                raise TypeError(f"space must be an NB201PathSpace, got {type(space).__name__}")
            wanted = dict(C=C, N=N, num_classes=num_classes, in_channels=in_channels)
            if {k: config()[k] for k in wanted} != wanted or tuple(space.cell_groups) != groups:
                raise ValueError(f"space {space!r} does not match C={C}, N={N}, num_classes={num_classes}, "
                                 f"in_channels={in_channels}, cell_groups={list(groups)}")
        self.space = space
        self.cell_groups = groups
        self.num_groups = max(groups) + 1
        self.C, self.N = C, N
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        blocks: List[nn.Module] = []
        C_prev = C
        for stage, C_stage in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                blocks.append(ResNetBasicBlock(C_prev, C_stage, 2))
            cells = [NB201ChoiceCell(C_stage) for _ in range(N)]
            for position, cell in enumerate(cells):
                cell.group = groups[stage * N + position]
            blocks += cells
            C_prev = C_stage
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = GlobalAvgPool2d()
        self.classifier = nn.Linear(C_prev, num_classes)
        convert_to_path_batch_norm(self)

    @property
    def num_layers(self) -> int:
        """Path length: 6 entries per cell group (the space's, or the groups' without one)."""
        return len(NB201_EDGES) * self.num_groups

    def choice_layers(self) -> List[ChoiceLayer]:
        """All 18N ChoiceLayers, cell by cell, edges in path order within a cell.

        Entry e of group g drives edge e of every cell of group g (:meth:`layers_of`),
        so with shared cells this list is longer than the path.
        """
        return [layer for cell in self.cells if isinstance(cell, NB201ChoiceCell) for layer in cell.ops]

    def layers_of(self, entry: int) -> List[ChoiceLayer]:
        """The ChoiceLayers that follow path entry ``entry``: edge ``entry % 6`` of the cells of group ``entry // 6``."""
        width = len(NB201_EDGES)
        if isinstance(entry, bool) or not isinstance(entry, int) or not 0 <= entry < self.num_layers:
            raise ValueError(f"entry must be an int in [0, {self.num_layers}), got {entry!r}")
        return [cell.ops[entry % width] for cell in self.cells
                if isinstance(cell, NB201ChoiceCell) and cell.group == entry // width]

    def forward_columns(self, x: Tensor, columns: List[Column]) -> Tensor:
        width = len(NB201_EDGES)
        h = self.stem(x)
        for block in self.cells:
            if isinstance(block, NB201ChoiceCell):
                h = block(h, columns[block.group * width:(block.group + 1) * width])
            else:
                h = block(h)
        return self.classifier(self.global_pooling(self.lastact(h)).flatten(1))


def _check_groups(cell_groups: Optional[Sequence[int]], N: int) -> Tuple[int, ...]:
    """``None`` (all cells share group 0), else 3N group ids numbering the groups 0..G-1 in first-use order."""
    if cell_groups is None:
        return (0,) * (3 * N)
    if isinstance(cell_groups, (str, bytes)) or not isinstance(cell_groups, Sequence):
        raise TypeError(f"cell_groups must be a sequence of {3 * N} ints, got {type(cell_groups).__name__}")
    groups = tuple(cell_groups)
    if len(groups) != 3 * N or any(isinstance(g, bool) or not isinstance(g, int) for g in groups):
        raise ValueError(f"cell_groups must hold {3 * N} ints (one per cell), got {list(groups)}")
    first_use: List[int] = []
    for g in groups:
        if g not in first_use:
            first_use.append(g)
    if first_use != list(range(len(first_use))):
        raise ValueError(f"cell_groups must number the groups 0, 1, ... in the order cells first use them, "
                         f"got {list(groups)}")
    return groups
