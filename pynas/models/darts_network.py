"""DARTS evaluation networks built from a genotype (Liu et al., "DARTS:
Differentiable Architecture Search", ICLR 2019, Sec. 3.2 and A.2).

``DartsNetworkCIFAR``: 3x3 conv stem to 3C channels, ``layers`` cells with
reduction cells (channels doubled, stride 2 on the edges from the two cell
inputs) at 1/3 and 2/3 of the depth, global average pool, linear. The CIFAR-10
setting is C=36, 20 layers (DARTS_V2: 3.3M parameters).

``DartsNetworkImageNet``: the mobile setting (C=48, 14 layers) with a
three-conv stride-8 stem for 224x224 inputs.

Both return ``(logits, aux_logits)``; ``aux_logits`` is the auxiliary head's
output (weight 0.4 in DARTS's loss) in training mode when ``auxiliary`` is on,
else None. Drop path (Larsson et al., FractalNet, ICLR 2017) zeroes whole
samples of every non-identity op output in training; the trainer sets
``model.drop_path_prob`` (DARTS ramps it linearly to 0.2 over training).

Deviations from DARTS's code, none of which change the computed function:
ReLUs are never in-place (DARTS's in-place ReLU at the auxiliary head's input
rectifies the main path's tensor too, which is harmless only because every
consumer starts with a ReLU); the ImageNet head pools adaptively (identical to
DARTS's AvgPool2d(7) at 224 input); the auxiliary heads' pooling falls back to
adaptive 2x2 pooling at sizes where DARTS's fixed pooling does not give 2x2
(see ``AuxiliaryHead``).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pynas.ops.pooling import GlobalAvgPool2d
from pynas.spaces.darts_ops import OPS, FactorizedReduce, Identity, ReLUConvBN
from pynas.spaces.genotypes import DartsGenotype

__all__ = ["drop_path", "DartsCell", "AuxiliaryHead", "DartsNetworkCIFAR", "DartsNetworkImageNet"]


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero each sample of ``x`` with probability ``drop_prob``; scale the kept ones by 1/keep."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask


class DartsCell(nn.Module):
    """A discrete DARTS cell: node i = op(state a) + op(state b), output = concat of ``concat`` states."""

    def __init__(self, genotype: DartsGenotype, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        # After a reduction cell, s0 has twice the spatial size of s1.
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        gene = genotype.reduce if reduction else genotype.normal
        self.concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.inputs = [index for _, index in gene]
        self.ops = nn.ModuleList(OPS[name](C, 2 if reduction and index < 2 else 1, True) for name, index in gene)
        self.steps = len(gene) // 2
        self.out_channels = len(self.concat) * C

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(self.steps):
            total = None
            for e in (2 * node, 2 * node + 1):
                h = self.ops[e](states[self.inputs[e]])
                if self.training and drop_prob > 0.0 and not isinstance(self.ops[e], Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier on the output of the second reduction cell.

    ReLU, 5x5 average pool (stride 3 for CIFAR: 8x8 -> 2x2; stride 2 for
    ImageNet: 7x7 -> 2x2), 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, [BN],
    ReLU, linear. The ImageNet head has no BN after the 768-channel conv, as in
    the DARTS experiments (its code comments that BN out on purpose).

    Adaptation: where the fixed pool would not give 2x2 (e.g. CIFAR's stride 3
    on the 7x7 maps of 28x28 Fashion-MNIST inputs gives 1x1, which the 2x2
    conv cannot take), adaptive average pooling to 2x2 is used instead (at 7x7:
    4x4 windows at stride 3). Parameters do not depend on the input size.
    """

    def __init__(self, C: int, num_classes: int, pool_stride: int, bn_after_768: bool):
        super().__init__()
        self.pool_stride = pool_stride
        self.reduce = nn.Sequential(nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=False))
        expand = [nn.Conv2d(128, 768, 2, bias=False)] + ([nn.BatchNorm2d(768)] if bn_after_768 else [])
        self.expand = nn.Sequential(*expand, nn.ReLU(inplace=False))
        self.classifier = nn.Linear(768, num_classes)

    def _pool(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if min(h, w) >= 5 and (h - 5) // self.pool_stride == 1 and (w - 5) // self.pool_stride == 1:
            return F.avg_pool2d(x, 5, stride=self.pool_stride)  # no padding, so count_include_pad is moot
        return F.adaptive_avg_pool2d(x, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.expand(self.reduce(self._pool(F.relu(x))))
        return self.classifier(x.flatten(1))


def _as_genotype(genotype: Union[DartsGenotype, str]) -> DartsGenotype:
    if isinstance(genotype, str):
        return DartsGenotype.parse(genotype)
    if not isinstance(genotype, DartsGenotype):
        raise TypeError(f"genotype must be a DartsGenotype or its string, got {type(genotype).__name__}")
    return genotype


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class _DartsNetwork(nn.Module):
    """Cells, auxiliary head and classifier shared by the CIFAR and ImageNet networks."""

    def _build_cells(self, genotype: DartsGenotype, C: int, layers: int, C_stem: int, reduction_prev: bool,
                     num_classes: int, auxiliary: bool, aux_pool_stride: int, aux_bn_after_768: bool) -> None:
        self.layers = layers
        self.auxiliary = auxiliary
        self.aux_position = 2 * layers // 3
        reductions = {layers // 3, 2 * layers // 3}
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        self.cells = nn.ModuleList()
        C_aux = None
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            cell = DartsCell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.out_channels
            if i == self.aux_position:
                C_aux = C_prev
        self.auxiliary_head = (AuxiliaryHead(C_aux, num_classes, aux_pool_stride, aux_bn_after_768)
                               if auxiliary else None)
        self.global_pooling = GlobalAvgPool2d()
        self.classifier = nn.Linear(C_prev, num_classes)

    def _run_cells(self, s0: Tensor, s1: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, aux_logits


class DartsNetworkCIFAR(_DartsNetwork):
    """DARTS's CIFAR evaluation network (also runs on 28x28 inputs, e.g. Fashion-MNIST)."""

    def __init__(self, genotype: Union[DartsGenotype, str], *, C: int = 36, layers: int = 20, num_classes: int = 10,
                 in_channels: int = 3, auxiliary: bool = True, drop_path_prob: float = 0.0):
        super().__init__()
        _check_sizes(C=C, layers=layers, num_classes=num_classes, in_channels=in_channels)
        genotype = _as_genotype(genotype)
        self.genotype = genotype
        self.drop_path_prob = drop_path_prob
        C_stem = 3 * C  # DARTS's stem_multiplier
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        self._build_cells(genotype, C, layers, C_stem, reduction_prev=False, num_classes=num_classes,
                          auxiliary=auxiliary, aux_pool_stride=3, aux_bn_after_768=True)

    def forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        s = self.stem(x)
        return self._run_cells(s, s)


class DartsNetworkImageNet(_DartsNetwork):
    """DARTS's ImageNet (mobile setting) evaluation network for 224x224 inputs.

    Stem: conv3x3 s2 (to C/2), BN, ReLU, conv3x3 s2 (to C), BN gives s0 at 56x56;
    ReLU, conv3x3 s2, BN gives s1 at 28x28. The first cell therefore treats s0
    as coming from a reduction (FactorizedReduce preprocessing).
    """

    def __init__(self, genotype: Union[DartsGenotype, str], *, C: int = 48, layers: int = 14,
                 num_classes: int = 1000, in_channels: int = 3, auxiliary: bool = True, drop_path_prob: float = 0.0):
        super().__init__()
        _check_sizes(C=C, layers=layers, num_classes=num_classes, in_channels=in_channels)
        genotype = _as_genotype(genotype)
        self.genotype = genotype
        self.drop_path_prob = drop_path_prob
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=False),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self._build_cells(genotype, C, layers, C, reduction_prev=True, num_classes=num_classes,
                          auxiliary=auxiliary, aux_pool_stride=2, aux_bn_after_768=False)

    def forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        s0 = self.stem0(x)
        return self._run_cells(s0, self.stem1(s0))
