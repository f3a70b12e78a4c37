"""SPOS's ShuffleNetV2 search space ("spos-shufflenetv2").

Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform
Sampling", ECCV 2020, Sec. 4 and Table 1 (supernet architecture for ImageNet).
20 choice blocks, 4 choices each (4^20 paths): ShuffleNetV2 units with a
3x3/5x5/7x7 depthwise conv and the Xception-like unit, see
:mod:`pynas.spaces.shufflenetv2_blocks`.

Macro-architecture (the paper's Table 1), as the official code builds it; read
from megvii-model's ShuffleNet-Series/OneShot ``network.py`` and from forks of
megvii-model/SinglePathOneShot (``Supernet/network.py``, ``blocks.py``), since
the search index holds only that repository's README and a training script:

===========  ==========  ========  =======  ======================================
input        block       channels  repeat   stride
===========  ==========  ========  =======  ======================================
224 x 224    3x3 conv    16        1        2   (conv -> BN -> ReLU, no max-pool)
112 x 112    CB          64        4        2   (first unit of every stage)
56 x 56      CB          160       4        2
28 x 28      CB          320       8        2
14 x 14      CB          640       4        2
7 x 7        1x1 conv    1024      1        1   (conv -> BN -> ReLU)
7 x 7        GAP, dropout 0.1, FC 1024 -> 1000 without bias
===========  ==========  ========  =======  ======================================

Other details read from the code: convs have no bias; the supernet's batch
norms have no affine parameters (``BatchNorm2d(affine=False)`` everywhere:
stem, blocks, last conv) while the evaluated stand-alone networks use affine
ones; dropout 0.1 before the classifier in both; the global pooling is
``AvgPool2d(7)`` (here adaptive average pooling, the same at 224 and usable at
other input sizes). Initialisation (``_initialize_weights``): the stem conv
N(0, 0.01), other convs N(0, 1 / (in_channels / groups)), BN weight 1 and bias
1e-4, the classifier N(0, 0.01).

Published numbers checked in the tests: the README of megvii-model/
SinglePathOneShot lists its searched architecture
``(2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3)`` at 323M FLOPs
and 3.5M params (block search only, so it lies in this space); we count
322.9M and 3,558,464 params (3,529,312 without the batch-norm affine
parameters, which ``params`` includes as the stand-alone network trains
them). The ShuffleNet-Series/OneShot README's block-and-channel model (328M,
3.4M) also agrees when its channel scales are priced. SPOS counts
FLOPs as multiply-accumulates of convs and FC layers (its ``get_flops`` hooks),
as :mod:`pynas.spaces.cost` does; its search keeps paths under 330M FLOPs.

Deduced, not in the papers: ``width_multiplier`` scales the stem and stage
widths (rounded to multiples of 8 so every unit splits evenly; 1.0 is the
paper's network) and the last conv only above 1.0, as ShuffleNetV2 keeps 1024
up to its 1.5x model; it is a convenience for small experiments.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from pynas.ops.pooling import GlobalAvgPool2d
from pynas.spaces import register_space
from pynas.spaces.chain_space import ChainPathSpace, make_divisible
from pynas.spaces.cost import Cost, conv_cost, conv_out_size, linear_cost
from pynas.spaces.shufflenetv2_blocks import ShuffleBlock, ShuffleXceptionBlock, unit_cost

__all__ = ["SPOSShuffleNetV2Space", "SPOS_SEARCHED"]

#: SPOS's searched block-search architecture (megvii-model/SinglePathOneShot README: 323M FLOPs, 3.5M params).
SPOS_SEARCHED = (2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3)

# (op name, kernel size, Xception-like) in SPOS's choice order: blockIndex 0..3.
_OPS = (("shuffle_3x3", 3, False), ("shuffle_5x5", 5, False), ("shuffle_7x7", 7, False),
        ("xception_3x3", 3, True))


@register_space("spos-shufflenetv2")
class SPOSShuffleNetV2Space(ChainPathSpace):
    """SPOS's ImageNet supernet space: 20 ShuffleNetV2 choice blocks x 4 choices.

    Keyword-only configuration: ``width_multiplier`` (1.0), ``num_classes``
    (1000), ``input_size`` (224), ``in_channels`` (3). Build options:
    ``build_supernet(bn_affine=False, dropout=0.1, generator=None)`` and
    ``build_network(path, dropout=0.1, generator=None)`` (affine batch norms).
    """

    name = "spos-shufflenetv2"
    ops = tuple(name for name, _, _ in _OPS)
    stage_repeats = (4, 4, 8, 4)
    base_stage_channels = (64, 160, 320, 640)
    base_stem_channels = 16
    base_last_channels = 1024

    supernet_defaults = {"bn_affine": False, "dropout": 0.1}
    network_defaults = {"dropout": 0.1}

    def __init__(self, *, width_multiplier: float = 1.0, num_classes: int = 1000, input_size: int = 224,
                 in_channels: int = 3):
        super().__init__(width_multiplier=width_multiplier, num_classes=num_classes, input_size=input_size,
                         in_channels=in_channels)
        wm = self.width_multiplier
        self.stem_channels = make_divisible(self.base_stem_channels * wm, 8)
        self.stage_channels = tuple(make_divisible(c * wm, 8) for c in self.base_stage_channels)
        self.last_channels = make_divisible(self.base_last_channels * wm, 8) if wm > 1.0 else self.base_last_channels
        # (in_channels, out_channels, stride, input size) of each choice block.
        size = conv_out_size(self.input_size, 3, 2, 1)
        self.stem_size = size
        shapes: List[Tuple[int, int, int, int]] = []
        channels = self.stem_channels
        for repeat, width in zip(self.stage_repeats, self.stage_channels):
            for i in range(repeat):
                stride = 2 if i == 0 else 1
                shapes.append((channels, width, stride, size))
                size = conv_out_size(size, 3, stride, 1)
                channels = width
        self.layer_shapes = tuple(shapes)
        self.final_size = size
        self._finish_init()

    # -- ChainPathSpace hooks -------------------------------------------------------------
    def _layer_choices(self) -> Tuple[Tuple[str, ...], ...]:
        return tuple(self.ops for _ in self.layer_shapes)

    def _cost_tables(self) -> Tuple[Cost, List[List[Cost]]]:
        fixed = conv_cost(self.in_channels, self.stem_channels, 3, self.stem_size)
        fixed = fixed + conv_cost(self.stage_channels[-1], self.last_channels, 1, self.final_size)
        fixed = fixed + linear_cost(self.last_channels, self.num_classes, bias=False)
        table = [[unit_cost(c_in, c_out, size, stride=stride, kernel_size=k, xception=x)
                  for _, k, x in _OPS] for c_in, c_out, stride, size in self.layer_shapes]
        return fixed, table

    def _op(self, layer: int, choice: int, bn_affine: bool) -> nn.Module:
        c_in, c_out, stride, _ = self.layer_shapes[layer]
        _, k, xception = _OPS[choice]
        if xception:
            return ShuffleXceptionBlock(c_in, c_out, stride=stride, bn_affine=bn_affine)
        return ShuffleBlock(c_in, c_out, kernel_size=k, stride=stride, bn_affine=bn_affine)

    def _modules(self, path: Optional[Tuple[int, ...]], *, bn_affine: bool = True,
                 dropout: float = 0.1) -> Tuple[nn.Module, List[nn.Module], nn.Module]:
        from pynas.supernets.choice_layer import ChoiceLayer  # lazy: see ChainPathSpace.build_supernet

        stem = nn.Sequential(
            nn.Conv2d(self.in_channels, self.stem_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(self.stem_channels, affine=bn_affine),
            nn.ReLU(inplace=True),
        )
        blocks: List[nn.Module] = []
        for layer in range(self.num_layers):
            if path is None:
                blocks.append(ChoiceLayer([self._op(layer, c, bn_affine) for c in range(len(_OPS))], self.ops))
            else:
                blocks.append(self._op(layer, path[layer], bn_affine))
        head = nn.Sequential(
            nn.Conv2d(self.stage_channels[-1], self.last_channels, 1, bias=False),
            nn.BatchNorm2d(self.last_channels, affine=bn_affine),
            nn.ReLU(inplace=True),
            GlobalAvgPool2d(),
            nn.Flatten(1),
            nn.Dropout(dropout),
            nn.Linear(self.last_channels, self.num_classes, bias=False),
        )
        return stem, blocks, head

    def _initialize(self, module: nn.Module, generator: Optional[torch.Generator]) -> None:
        stem = module[0]
        with torch.no_grad():
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    # SPOS: std 0.01 for the first conv, 1 / fan-in channels for the others.
                    std = 0.01 if any(m is s for s in stem.modules()) else 1.0 / m.weight.shape[1]
                    m.weight.normal_(0.0, std, generator=generator)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.BatchNorm2d):
                    if m.affine:
                        m.weight.fill_(1.0)
                        m.bias.fill_(1e-4)
                    if m.track_running_stats:
                        m.running_mean.zero_()
                elif isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, 0.01, generator=generator)
                    if m.bias is not None:
                        m.bias.zero_()
