"""The NAS-Bench-201 network for one cell (Dong & Yang, "NAS-Bench-201:
Extending the Scope of Reproducible Neural Architecture Search", ICLR 2020,
Sec. 2.1 and Fig. 1).

Stem (3x3 conv to C, BN); three stages of N copies of the cell at C, 2C and
4C channels, with a ResNet basic block of stride 2 between stages; then BN,
ReLU, global average pool and a linear classifier. The benchmark's setting is
C=16, N=5. Unlike the benchmark's code, ``forward`` returns the logits only.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

from torch import Tensor, nn

from pynas.ops.pooling import GlobalAvgPool2d
from pynas.spaces.genotypes import NB201_EDGES, NB201Genotype
from pynas.spaces.nb201_ops import ResNetBasicBlock, nb201_op

__all__ = ["NB201Cell", "NB201Network"]


class NB201Cell(nn.Module):
    """Node j = sum over i < j of op_ij(node i); output node 3.

    Edges from node 0 map C_in to C_out (carrying ``stride``); the others are
    C_out to C_out at stride 1. 'none' edges are kept as modules that output
    zeros, as the benchmark does.
    """

    def __init__(self, genotype: NB201Genotype, C_in: int, C_out: int, stride: int = 1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.edges = list(NB201_EDGES)
        self.ops = nn.ModuleList(
            nb201_op(op, C_in, C_out, stride, affine, track_running_stats) if frm == 0
            else nb201_op(op, C_out, C_out, 1, affine, track_running_stats)
            for (to, frm), op in zip(self.edges, genotype.edges)
        )
        self.out_channels = C_out

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            total = None
            for e, (to, frm) in enumerate(self.edges):
                if to == node:
                    h = self.ops[e](nodes[frm])
                    total = h if total is None else total + h
            nodes.append(total)
        return nodes[3]


class NB201Network(nn.Module):
    """NAS-Bench-201's skeleton around one genotype (or its arch string), or around one genotype per cell.

    ``genotype`` may be a list of 3N genotypes (or arch strings), cell k of the
    skeleton (network order, reduction blocks not counted) taking entry k: the
    independent-cell topologies of ``NB201PathSpace(cell_topology=...)``, which
    are not NAS-Bench-201's (its cells share one). ``self.genotype`` is then
    that list, as a tuple of genotypes.
    """

    def __init__(self, genotype: Union[NB201Genotype, str, Sequence[Union[NB201Genotype, str]]], *, C: int = 16,
                 N: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        for name, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(genotype, (list, tuple)):
            if len(genotype) != 3 * N:
                raise ValueError(f"genotype: a list needs one genotype per cell, 3N = {3 * N}, got {len(genotype)}")
            cells = [_genotype(g) for g in genotype]
            self.genotype: Union[NB201Genotype, Tuple[NB201Genotype, ...]] = tuple(cells)
        else:
            self.genotype = _genotype(genotype)
            cells = [self.genotype] * (3 * N)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        blocks = []
        C_prev = C
        for stage, C_stage in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                blocks.append(ResNetBasicBlock(C_prev, C_stage, 2))
            blocks += [NB201Cell(cells[stage * N + k], C_stage, C_stage) for k in range(N)]
            C_prev = C_stage
        self.cells = nn.Sequential(*blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = GlobalAvgPool2d()
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.global_pooling(out).flatten(1))


def _genotype(genotype: Union[NB201Genotype, str]) -> NB201Genotype:
    if isinstance(genotype, str):
        genotype = NB201Genotype.from_arch_str(genotype)
    if not isinstance(genotype, NB201Genotype):
        raise TypeError(f"genotype must be an NB201Genotype or arch string, got {type(genotype).__name__}")
    return genotype
