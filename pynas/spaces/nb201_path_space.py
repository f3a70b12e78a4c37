"""NAS-Bench-201's cell as a single-path space ("nas-bench-201-path"), shared by all cells or not.

NAS-Bench-201 (Dong & Yang, ICLR 2020, Sec. 2.1): one cell of 6 edges, one of
5 ops per edge, repeated in all 3N cells of a fixed skeleton; 5^6 = 15,625
cells. As a path: entry e is the op index on edge ``NB201_EDGES[e]``, ops in
the benchmark's order (0 none, 1 skip_connect, 2 nor_conv_1x1,
3 nor_conv_3x3, 4 avg_pool_3x3). Path ``(a, b, c, d, e, f)`` is the genotype
whose arch string is ``|op_a~0|+|op_b~0|op_c~1|+|op_d~0|op_e~1|op_f~2|``.

:meth:`PathSpace.index_of` is the mixed-radix code of the path (edge 0 most
significant), the order in which the benchmark enumerated its cells *before*
shuffling them; :meth:`NB201PathSpace.benchmark_index` gives the benchmark's
own index (``NB201CellSpace.index_of``).

Cell topology (``cell_topology``). ``"shared"`` (default) is the benchmark's:
one genotype for all 3N cells, a path of 6 entries. ``"stage"`` gives each of
the 3 stages its own genotype (18 entries) and ``"independent"`` each of the
3N cells (6 x 3N entries, 90 at N=5): entry ``6 g + e`` is edge e of cell group
g, groups in network order (cell k of the skeleton, counted without the two
reduction blocks, is in group 0, ``k // N`` or ``k``). These larger spaces are
not NAS-Bench-201's (whose cells all share one topology), so no benchmark
table ranks them: :meth:`benchmark_index` and :meth:`genotype` refuse them
and :meth:`cell_genotypes` gives the genotype of every cell instead.

Cost of a path = the stand-alone :class:`pynas.models.NB201Network`'s:
``params`` counts every parameter (the benchmark reports the same count in
millions, for C=16, N=5, 10 classes); ``flops`` is the multiply-accumulates of
the convs and the classifier's weight matrix for one ``input_size`` image.
The benchmark's own FLOPs figure (as NASLib copies it) also counts the
average pools and per-element terms of the conv ops, so it exceeds these
MACs (by 0.2 to 8 M at C=16, N=5, growing with the number of pool and conv
edges); it is not reproduced.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

from torch import Tensor, nn

from pynas.spaces import register_space
from pynas.spaces._checks import check_positive_int
from pynas.spaces.cost import Cost, conv_cost, conv_out_size, linear_cost
from pynas.spaces.darts_space import NB201CellSpace
from pynas.spaces.genotypes import NB201_EDGES, NB201Genotype
from pynas.spaces.nb201_ops import PRIMITIVES
from pynas.spaces.path_space import ConfiguredPathSpace, PathLike

__all__ = ["NB201PathSpace", "CELL_TOPOLOGIES"]

#: how the 3N cells share genotypes: all one, one per stage, one per cell
CELL_TOPOLOGIES = ("shared", "stage", "independent")


@register_space("nas-bench-201-path")
class NB201PathSpace(ConfiguredPathSpace):
    """6 entries x 5 ops per cell group; ``C``, ``N``, ``num_classes``, ``in_channels`` describe the skeleton
    (the benchmark's: 16, 5, 10, 3), ``input_size`` the resolution :meth:`flops` assumes and ``cell_topology``
    which cells share a genotype (see the module docstring)."""

    name = "nas-bench-201-path"
    layer_choices = (tuple(PRIMITIVES),) * len(NB201_EDGES)

    def __init__(self, *, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3,
                 input_size: int = 32, cell_topology: str = "shared"):
        for arg, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels),
                           ("input_size", input_size)):
            check_positive_int(value, arg)
        if input_size % 4:
            # The residual reductions add a strided 3x3 conv to a 2x2 average pool: sizes agree only when even.
            raise ValueError(f"input_size must be a multiple of 4 (two stride-2 reductions), got {input_size}")
        if not isinstance(cell_topology, str):
            raise TypeError(f"cell_topology must be a str, one of {', '.join(CELL_TOPOLOGIES)}; "
                            f"got {type(cell_topology).__name__}")
        if cell_topology not in CELL_TOPOLOGIES:
            raise ValueError(f"cell_topology must be one of {', '.join(CELL_TOPOLOGIES)}, got {cell_topology!r}")
        self.C, self.N, self.num_classes, self.in_channels, self.input_size = C, N, num_classes, in_channels, input_size
        self.cell_topology = cell_topology
        self.cell_groups = cell_groups(cell_topology, N)
        self.num_groups = max(self.cell_groups) + 1
        self.layer_choices = (tuple(PRIMITIVES),) * (len(NB201_EDGES) * self.num_groups)
        self._costs, self._fixed = self._count()

    def config(self) -> Dict[str, Any]:
        return dict(C=self.C, N=self.N, num_classes=self.num_classes, in_channels=self.in_channels,
                    input_size=self.input_size, cell_topology=self.cell_topology)

    @property
    def shared(self) -> bool:
        """One genotype for all cells: NAS-Bench-201's own space."""
        return self.cell_topology == "shared"

    def _refuse_unshared(self, what: str) -> None:
        if not self.shared:
            raise ValueError(f"{what} exists for cell_topology='shared' only (NAS-Bench-201's cells all share one "
                             f"topology); this space has cell_topology={self.cell_topology!r}")

    # -- genotypes -----------------------------------------------------------------
    def group_genotypes(self, path: PathLike) -> List[NB201Genotype]:
        """The genotype of each cell group (one for shared cells, 3 per stage, 3N per cell)."""
        p = self.check_path(path)
        width = len(NB201_EDGES)
        return [NB201Genotype(tuple(PRIMITIVES[v] for v in p[g * width:(g + 1) * width]))
                for g in range(self.num_groups)]

    def cell_genotypes(self, path: PathLike) -> List[NB201Genotype]:
        """The genotype of each of the 3N cells, in network order."""
        groups = self.group_genotypes(path)
        return [groups[g] for g in self.cell_groups]

    def genotype(self, path: PathLike) -> NB201Genotype:
        """The one genotype of a shared-cell path (see :meth:`cell_genotypes` for the other topologies)."""
        self._refuse_unshared("one genotype for the whole network")
        return NB201Genotype(tuple(PRIMITIVES[v] for v in self.check_path(path)))

    def path_of(self, genotype: Union[NB201Genotype, str, Sequence]) -> Tuple[int, ...]:
        """The path of a genotype or arch string (shared cells), or of one per cell group."""
        if isinstance(genotype, (list, tuple)) and not self.shared:
            if len(genotype) != self.num_groups:
                raise ValueError(f"genotype must hold {self.num_groups} cell genotypes (cell_topology="
                                 f"{self.cell_topology!r}), got {len(genotype)}")
            return tuple(v for g in genotype for v in self._one_path(g))
        if not self.shared:
            raise ValueError(f"genotype must be a list of {self.num_groups} cell genotypes for cell_topology="
                             f"{self.cell_topology!r}, got one")
        return self._one_path(genotype)

    @staticmethod
    def _one_path(genotype: Union[NB201Genotype, str]) -> Tuple[int, ...]:
        if isinstance(genotype, str):
            genotype = NB201Genotype.from_arch_str(genotype)
        if not isinstance(genotype, NB201Genotype):
            raise TypeError(f"genotype must be an NB201Genotype or arch string, got {type(genotype).__name__}")
        return tuple(PRIMITIVES.index(op) for op in genotype.edges)

    def benchmark_index(self, path: PathLike) -> int:
        """NAS-Bench-201's index (0..15624) of the path's cell (shared cells only: the benchmark's)."""
        self._refuse_unshared("a NAS-Bench-201 index")
        return NB201CellSpace().index_of(self.genotype(path))

    # -- cost ------------------------------------------------------------------------
    def _count(self) -> Tuple[List[List[Cost]], Cost]:
        """Cost of each op on one edge of every cell of a group, summed over the group's cells (per
        group), and of everything outside the cells."""
        C, N = self.C, self.N
        size = self.input_size
        fixed = conv_cost(self.in_channels, C, 3, size)  # 3x3, padding 1: same size
        per_op = [[Cost()] * len(PRIMITIVES) for _ in range(self.num_groups)]
        for stage, c in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                # ResNetBasicBlock: two 3x3 ReLU-Conv-BN (the first strided), 2x2 avg pool + 1x1 conv (no BN).
                size = conv_out_size(size, 3, 2, 1)
                fixed = (fixed + conv_cost(c // 2, c, 3, size) + conv_cost(c, c, 3, size)
                         + conv_cost(c // 2, c, 1, size, bn=False))
            # Every edge of a cell maps c -> c at stride 1: skip is the identity, the pool has no 1x1 conv.
            cell = {"nor_conv_1x1": conv_cost(c, c, 1, size), "nor_conv_3x3": conv_cost(c, c, 3, size)}
            for position in range(N):
                group = per_op[self.cell_groups[stage * N + position]]
                for op_index, op in enumerate(PRIMITIVES):
                    if op in cell:
                        group[op_index] = group[op_index] + cell[op]
        fixed = fixed + Cost(0, 2 * 4 * C)  # the last BN's affine weights
        fixed = fixed + linear_cost(4 * C, self.num_classes, bias=True)
        return per_op, fixed

    def _path_cost(self, path: PathLike) -> Cost:
        width = len(NB201_EDGES)
        total = self._fixed
        for entry, v in enumerate(self.check_path(path)):
            total = total + self._costs[entry // width][v]
        return total

    def params(self, path: PathLike) -> int:
        """Parameter count of ``build_network(path)`` (the benchmark's params x 1e6)."""
        return self._path_cost(path).params

    def flops(self, path: PathLike) -> int:
        """Multiply-accumulates of ``build_network(path)`` on one image (convs and classifier weights)."""
        return self._path_cost(path).macs

    # -- networks --------------------------------------------------------------------
    def build_supernet(self, **kwargs: Any):
        if kwargs:
            raise TypeError(f"build_supernet takes no options (the space holds the skeleton); got {sorted(kwargs)}")
        from pynas.supernets.nb201_path_supernet import NB201PathSupernet

        return NB201PathSupernet(C=self.C, N=self.N, num_classes=self.num_classes, in_channels=self.in_channels,
                                 cell_groups=self.cell_groups, space=self)

    def build_network(self, path: PathLike, **kwargs: Any):
        if kwargs:
            raise TypeError(f"build_network takes no options (the space holds the skeleton); got {sorted(kwargs)}")
        from pynas.models.nb201_network import NB201Network

        genotype: Any = self.genotype(path) if self.shared else self.cell_genotypes(path)
        return NB201Network(genotype, C=self.C, N=self.N, num_classes=self.num_classes,
                            in_channels=self.in_channels)

    def path_state_dict(self, supernet: nn.Module, path: PathLike) -> Dict[str, Tensor]:
        """State dict of ``build_network(path)`` holding the supernet's weights (and BN buffers) of that path."""
        p = self.check_path(path)
        space = getattr(supernet, "space", None)
        if not isinstance(space, NB201PathSpace) or space.config() != {**self.config(), "input_size": space.input_size}:
            raise ValueError(f"supernet was not built from a space like {self!r}; got space {space!r}")
        # Block b of ``cells`` (reduction blocks included) -> the cell's index k among the 3N choice cells.
        reductions = (self.N, 2 * self.N + 1)  # the ResNet blocks between the stages
        cell_blocks = [block for block in range(3 * self.N + 2) if block not in reductions]
        cell_of_block = {block: k for k, block in enumerate(cell_blocks)}
        width = len(NB201_EDGES)
        out: Dict[str, Tensor] = {}
        for key, value in supernet.state_dict().items():
            parts = key.split(".")
            # cells.{b}.ops.{e}.candidates.{op}.rest -> cells.{b}.ops.{e}.rest for the op the path gives that edge.
            if len(parts) > 6 and parts[0] == "cells" and parts[2] == "ops" and parts[4] == "candidates":
                group = self.cell_groups[cell_of_block[int(parts[1])]]
                if int(parts[5]) != p[group * width + int(parts[3])]:
                    continue
                key = ".".join(parts[:4] + parts[6:])
            out[key] = value
        return out


def cell_groups(cell_topology: str, N: int) -> Tuple[int, ...]:
    """The genotype group of each of the 3N cells (network order) under ``cell_topology``."""
    if cell_topology == "shared":
        return (0,) * (3 * N)
    if cell_topology == "stage":
        return tuple(k // N for k in range(3 * N))
    return tuple(range(3 * N))
