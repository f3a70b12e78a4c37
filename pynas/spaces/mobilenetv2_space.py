"""GreedyNAS's MobileNetV2 search space ("greedynas-mobilenetv2").

You et al., "GreedyNAS: Towards Fast One-Shot NAS with Greedy Supernet", CVPR
2020, Sec. 5: GreedyNAS searches ProxylessNAS's MobileNetV2-based mobile space
(Cai et al., ICLR 2019): 21 searchable layers, each a MobileNetV2 inverted
residual block with kernel 3, 5 or 7 and expansion 3 or 6, or identity (the
abstract quotes the size as 7^21). The paper's own text and tables were not
retrievable here, so the plan below is ProxylessNAS's, read from its code.
Blocks: :mod:`pynas.spaces.mbconv` (with in-place ReLU6).

Macro-structure, read from ProxylessNAS's search code (mit-han-lab/proxylessnas
``search/models/super_nets/super_proxyless.py`` and the defaults of
``search/imagenet_arch_search.py``):

============  =========================  ========  ======  ======
input         block                      channels  repeat  stride
============  =========================  ========  ======  ======
224 x 224     3x3 conv -> BN -> ReLU6    32        1       2
112 x 112     MBConv1 3x3 (fixed)        16        1       1
112 x 112     searchable                 24        4       2
56 x 56       searchable                 40        4       2
28 x 28       searchable                 80        4       2
14 x 14       searchable                 96        4       1
14 x 14       searchable                 192       4       2
7 x 7         searchable                 320       1       1
7 x 7         1x1 conv -> BN -> ReLU6    1280      1       1
7 x 7         GAP, dropout, FC 1280 -> 1000 with bias
============  =========================  ========  ======  ======

Identity where shapes change: the first layer of each stage changes the
width (and all but the 96-wide stage the stride), so identity cannot replace
it. ProxylessNAS offers its zero op only where ``stride == 1 and in ==
out``; we do the same: those 6 layers (0, 4, 8, 12, 16, 20) have the 6 MBConv
choices and the other 15 have 7, so the space holds 6^6 * 7^15 paths (the
paper's "7^21" counts every layer as 7). The identity is always the last
choice, so choices 0-5 name the same op in every layer. Which layers keep
their shape (identity allowed, MBConv with shortcut) is decided on the
unscaled widths, so a path means the same architecture at every
``width_multiplier`` even where rounding makes two scaled widths equal.

Deduced (no GreedyNAS code was found to read): ReLU6 activations, batch-norm
settings (affine in the supernet, PyTorch's eps/momentum), initialisation
(ProxylessNAS's "he_fout": conv N(0, sqrt(2 / (k * k * out_channels))), BN 1/0,
FC uniform(+-1/sqrt(in)) with zero bias) and dropout 0 by default, all as in
ProxylessNAS. ``width_multiplier`` scales the widths as ProxylessNAS does
(multiples of 8; the 1280 last conv only above 1.0). ``stage_channels``
replaces the six stage widths: ProxylessNAS's released mobile network
(``proxyless_mobile.config``) has 32 channels in its first stage where the
search code's default has 24; with ``stage_channels=(32, 40, 80, 96, 192, 320)``
it is a path of this space (:data:`PROXYLESS_MOBILE`), which lets the tests
check the counts against its published size.

GreedyNAS-A (366M FLOPs, 6.5M params) is built from inverted residual and
squeeze-and-excitation blocks (GreedyNAS's larger SE space), so it and its
siblings B/C lie outside this SE-free space; their per-layer choices were not
available to check either. FLOPs are multiply-accumulates of convs and FC
weights (ProxylessNAS's ``get_flops``); GreedyNAS's search keeps paths under
330M FLOPs (as mmrazor's GreedyNAS configuration does).
"""
from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from pynas.ops.pooling import GlobalAvgPool2d
from pynas.spaces import register_space
from pynas.spaces.chain_space import ChainPathSpace, make_divisible
from pynas.spaces.cost import Cost, conv_cost, conv_out_size, linear_cost
from pynas.spaces.mbconv import InvertedResidual, inverted_residual_cost

__all__ = ["GreedyNASMobileNetV2Space", "PROXYLESS_MOBILE", "PROXYLESS_MOBILE_STAGE_CHANNELS"]

# (op name, kernel size, expansion) in ProxylessNAS's candidate order; identity comes last.
_MB_OPS = (("mb_k3_e3", 3, 3), ("mb_k3_e6", 3, 6), ("mb_k5_e3", 5, 3), ("mb_k5_e6", 5, 6),
           ("mb_k7_e3", 7, 3), ("mb_k7_e6", 7, 6))
IDENTITY = "identity"
#: the blocks' activation (ProxylessNAS's MBInvertedConvLayer uses in-place ReLU6)
_relu6 = functools.partial(nn.ReLU6, inplace=True)

#: ProxylessNAS's released mobile network (proxyless_mobile.config) as a path of this space; build it with
#: ``stage_channels=PROXYLESS_MOBILE_STAGE_CHANNELS``. NAS tables quote it as 320M FLOPs, 4.0M-4.1M params.
PROXYLESS_MOBILE = (2, 0, 6, 6, 4, 0, 2, 2, 5, 2, 2, 2, 3, 2, 2, 2, 5, 5, 4, 4, 5)
PROXYLESS_MOBILE_STAGE_CHANNELS = (32, 40, 80, 96, 192, 320)


@register_space("greedynas-mobilenetv2")
class GreedyNASMobileNetV2Space(ChainPathSpace):
    """GreedyNAS's MobileNetV2 space (ProxylessNAS's mobile macro-structure), 21 searchable layers.

    Keyword-only configuration: ``width_multiplier`` (1.0), ``num_classes``
    (1000), ``input_size`` (224), ``in_channels`` (3), ``stage_channels``
    ((24, 40, 80, 96, 192, 320)). Build options:
    ``build_supernet(bn_affine=True, dropout=0.0, generator=None)`` and
    ``build_network(path, dropout=0.0, generator=None)``.
    """

    name = "greedynas-mobilenetv2"
    mb_ops = tuple(name for name, _, _ in _MB_OPS)
    stage_repeats = (4, 4, 4, 4, 4, 1)
    stage_strides = (2, 2, 2, 1, 2, 1)
    default_stage_channels = (24, 40, 80, 96, 192, 320)
    base_stem_channels = 32
    base_first_channels = 16
    base_last_channels = 1280

    config_keys = ChainPathSpace.config_keys + ("stage_channels",)
    supernet_defaults = {"bn_affine": True, "dropout": 0.0}
    network_defaults = {"dropout": 0.0}

    def __init__(self, *, width_multiplier: float = 1.0, num_classes: int = 1000, input_size: int = 224,
                 in_channels: int = 3, stage_channels: Sequence[int] = default_stage_channels):
        super().__init__(width_multiplier=width_multiplier, num_classes=num_classes, input_size=input_size,
                         in_channels=in_channels)
        if isinstance(stage_channels, (str, bytes)) or not isinstance(stage_channels, Sequence):
            raise TypeError(f"stage_channels must be a sequence of {len(self.stage_repeats)} ints, "
                            f"got {type(stage_channels).__name__}")
        if len(stage_channels) != len(self.stage_repeats) or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in stage_channels):
            raise ValueError(f"stage_channels must be {len(self.stage_repeats)} positive ints, got {stage_channels!r}")
        self.stage_channels = tuple(stage_channels)
        wm = self.width_multiplier
        self.stem_channels = make_divisible(self.base_stem_channels * wm, 8)
        self.first_channels = make_divisible(self.base_first_channels * wm, 8)
        self.widths = tuple(make_divisible(c * wm, 8) for c in self.stage_channels)
        self.last_channels = make_divisible(self.base_last_channels * wm, 8) if wm > 1.0 else self.base_last_channels
        # (in_channels, out_channels, stride, input size) of each searchable layer.
        size = conv_out_size(self.input_size, 3, 2, 1)
        self.stem_size = size
        shapes: List[Tuple[int, int, int, int]] = []
        channels = self.first_channels
        for repeat, stride, width in zip(self.stage_repeats, self.stage_strides, self.widths):
            for i in range(repeat):
                s = stride if i == 0 else 1
                shapes.append((channels, width, s, size))
                size = conv_out_size(size, 3, s, 1)
                channels = width
        self.layer_shapes = tuple(shapes)
        self.final_size = size
        # Identity (and the MBConv shortcut) where the unscaled network keeps the shape, so a path names
        # the same architecture at every width multiplier even when rounding makes two widths equal.
        base_in = (self.base_first_channels,) + tuple(
            w for w, r in zip(self.stage_channels, self.stage_repeats) for _ in range(r))[:-1]
        base_out = tuple(w for w, r in zip(self.stage_channels, self.stage_repeats) for _ in range(r))
        self._keeps_shape = tuple(s == 1 and i == o for (_, _, s, _), i, o in zip(shapes, base_in, base_out))
        self._finish_init()

    def allows_identity(self, layer: int) -> bool:
        """Whether ``layer`` keeps its input shape (stride 1, same width), so identity is one of its choices."""
        return self._keeps_shape[layer]

    # -- ChainPathSpace hooks -------------------------------------------------------------
    def _layer_choices(self) -> Tuple[Tuple[str, ...], ...]:
        return tuple(self.mb_ops + ((IDENTITY,) if self.allows_identity(layer) else ())
                     for layer in range(len(self.layer_shapes)))

    def _cost_tables(self) -> Tuple[Cost, List[List[Cost]]]:
        fixed = conv_cost(self.in_channels, self.stem_channels, 3, self.stem_size)
        fixed = fixed + inverted_residual_cost(self.stem_channels, self.first_channels, self.stem_size,
                                               kernel_size=3, expansion=1, stride=1)
        fixed = fixed + conv_cost(self.widths[-1], self.last_channels, 1, self.final_size)
        fixed = fixed + linear_cost(self.last_channels, self.num_classes, bias=True)
        table = []
        for layer, (c_in, c_out, stride, size) in enumerate(self.layer_shapes):
            row = [inverted_residual_cost(c_in, c_out, size, kernel_size=k, expansion=e, stride=stride)
                   for _, k, e in _MB_OPS]
            if self.allows_identity(layer):
                row.append(Cost())
            table.append(row)
        return fixed, table

    def _op(self, layer: int, choice: int, bn_affine: bool) -> nn.Module:
        if choice == len(_MB_OPS):
            return nn.Identity()
        c_in, c_out, stride, _ = self.layer_shapes[layer]
        _, k, e = _MB_OPS[choice]
        return InvertedResidual(c_in, c_out, kernel_size=k, expansion=e, stride=stride, activation=_relu6,
                                bn_affine=bn_affine, residual=self.allows_identity(layer))

    def _modules(self, path: Optional[Tuple[int, ...]], *, bn_affine: bool = True,
                 dropout: float = 0.0) -> Tuple[nn.Module, List[nn.Module], nn.Module]:
        from pynas.supernets.choice_layer import ChoiceLayer  # lazy: see ChainPathSpace.build_supernet

        stem = nn.Sequential(
            nn.Conv2d(self.in_channels, self.stem_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(self.stem_channels, affine=bn_affine),
            nn.ReLU6(inplace=True),
        )
        # ProxylessNAS's fixed first block has no shortcut (even if the widths round to equal values).
        blocks: List[nn.Module] = [InvertedResidual(self.stem_channels, self.first_channels, kernel_size=3,
                                                    expansion=1, stride=1, activation=_relu6, bn_affine=bn_affine,
                                                    residual=False)]
        for layer, names in enumerate(self.layer_choices):
            if path is None:
                blocks.append(ChoiceLayer([self._op(layer, c, bn_affine) for c in range(len(names))], names))
            else:
                blocks.append(self._op(layer, path[layer], bn_affine))
        head = nn.Sequential(
            nn.Conv2d(self.widths[-1], self.last_channels, 1, bias=False),
            nn.BatchNorm2d(self.last_channels, affine=bn_affine),
            nn.ReLU6(inplace=True),
            GlobalAvgPool2d(),
            nn.Flatten(1),
            nn.Dropout(dropout),
            nn.Linear(self.last_channels, self.num_classes),
        )
        return stem, blocks, head

    def _initialize(self, module: nn.Module, generator: Optional[torch.Generator]) -> None:
        with torch.no_grad():
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                    m.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=generator)
                elif isinstance(m, nn.BatchNorm2d) and m.affine:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                elif isinstance(m, nn.Linear):
                    bound = 1.0 / math.sqrt(m.in_features)
                    m.weight.uniform_(-bound, bound, generator=generator)
                    m.bias.zero_()
