"""DARTS candidate operations (Liu, Simonyan & Yang, "DARTS: Differentiable
Architecture Search", ICLR 2019, Sec. 3.1.1).

The definitions follow the authors' released operations: every conv is
bias-free, every op that computes is "ReLU first, BatchNorm last", and
``affine`` is False in the search network and True in the evaluation network.

    OPS[name](C, stride, affine) -> nn.Module      # C channels in and out
    search_op(name, C, stride)                      # as the search supernet builds it
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PRIMITIVES",
    "OPS",
    "ReLUConvBN",
    "FactorizedReduce",
    "SepConv",
    "DilConv",
    "Zero",
    "Identity",
    "search_op",
]

# Column order of DARTS's alpha matrices; 'none' first because derivation
# skips it by position in the original code.
PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class ReLUConvBN(nn.Sequential):
    """ReLU, bias-free conv, BatchNorm."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise dilated kxk conv (carries the stride), pointwise conv, BatchNorm."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in,
                      bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable blocks; only the first carries the stride.

    DARTS's "sep_conv" is this doubled block (as in NASNet), so a 3x3 sep conv
    has a 5x5 receptive field at stride 1.
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine),
        )


class Identity(nn.Module):
    """The stride-1 skip connection. A class of its own because drop path skips it by type."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    """The 'none' op: zeros shaped like the op's output (strided for stride > 1)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two 1x1 stride-2 convs, one offset by a pixel.

    Each conv gives C_out/2 channels; the second reads ``x[:, :, 1:, 1:]`` so the
    two together see every pixel. The right/bottom zero pad (from NAS-Bench-201's
    version of the op) only matters for odd sizes, where DARTS's own code fails
    on a shape mismatch; on even sizes the result is identical to DARTS.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


OPS: Dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
}


def search_op(name: str, C: int, stride: int) -> nn.Module:
    """The op as DARTS's search network builds it: affine=False BatchNorms, and a
    BatchNorm2d(C, affine=False) after each pool so pool outputs are on the same
    scale as the conv outputs they are mixed with (search code only; the
    evaluation network has no such BN)."""
    if name not in OPS:
        raise ValueError(f"unknown DARTS op {name!r}; known: {', '.join(PRIMITIVES)}")
    op = OPS[name](C, stride, False)
    if "pool" in name:
        op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
    return op
