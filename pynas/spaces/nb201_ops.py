"""NAS-Bench-201 cell operations and its residual reduction block (Dong & Yang,
"NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search",
ICLR 2020, Sec. 2.1).

    OPS[name](C_in, C_out, stride, affine=True, track_running_stats=True) -> nn.Module

Convs are ReLU-Conv-BN with no bias; the average pool ignores padded pixels
(count_include_pad=False) and has no BatchNorm after it. The benchmark trains
its networks with affine BatchNorms that track running statistics; search
networks built on these ops may turn either off.
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
    "AvgPool",
    "FactorizedReduce",
    "Zero",
    "Identity",
    "ResNetBasicBlock",
    "nb201_op",
]

# Op order of the benchmark: the op codes 0..4 used by its tables and the
# order in which it enumerated the 5^6 cells.
PRIMITIVES = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


class ReLUConvBN(nn.Sequential):
    """ReLU, bias-free conv, BatchNorm."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )


class AvgPool(nn.Module):
    """3x3 average pool (padding not counted), preceded by a 1x1 ReLU-Conv-BN only
    when the channel count changes."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.preprocess = (ReLUConvBN(C_in, C_out, 1, 1, 0, affine, track_running_stats)
                           if C_in != C_out else None)
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        return self.pool(x)


class Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    """The 'none' op: zeros shaped like the op's output."""

    def __init__(self, C_in: int, C_out: int, stride: int):
        super().__init__()
        self.C_in, self.C_out, self.stride = C_in, C_out, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.C_in == self.C_out:
            # x * 0 rather than zeros keeps the autograd graph connected, as the benchmark's code does.
            return x[:, :, :: self.stride, :: self.stride].mul(0.0) if self.stride > 1 else x.mul(0.0)
        shape = list(x[:, :, :: self.stride, :: self.stride].shape)
        shape[1] = self.C_out
        return x.new_zeros(shape)

    def extra_repr(self) -> str:
        return f"C_in={self.C_in}, C_out={self.C_out}, stride={self.stride}"


class FactorizedReduce(nn.Module):
    """The skip connection when shapes change.

    stride 2: ReLU, then two 1x1 stride-2 convs (the second on the input shifted
    by one pixel, zero-padded at the right/bottom), concatenated, then BN.
    stride 1: a 1x1 conv then BN, with no ReLU (as in the benchmark's code).
    """

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"FactorizedReduce supports stride 1 or 2, got {stride}")
        self.stride = stride
        if stride == 2:
            self.relu = nn.ReLU(inplace=False)
            halves = (C_out // 2, C_out - C_out // 2)
            self.convs = nn.ModuleList(nn.Conv2d(C_in, c, 1, stride=2, bias=False) for c in halves)
        else:
            self.conv = nn.Conv2d(C_in, C_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 2:
            x = self.relu(x)
            shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
            out = torch.cat([self.convs[0](x), self.convs[1](shifted)], dim=1)
        else:
            out = self.conv(x)
        return self.bn(out)


def _skip(C_in: int, C_out: int, stride: int, affine: bool, track: bool) -> nn.Module:
    if stride == 1 and C_in == C_out:
        return Identity()
    return FactorizedReduce(C_in, C_out, stride, affine, track)


OPS: Dict[str, Callable[..., nn.Module]] = {
    "none": lambda C_in, C_out, stride, affine=True, track_running_stats=True: Zero(C_in, C_out, stride),
    "skip_connect": lambda C_in, C_out, stride, affine=True, track_running_stats=True: _skip(
        C_in, C_out, stride, affine, track_running_stats),
    "nor_conv_1x1": lambda C_in, C_out, stride, affine=True, track_running_stats=True: ReLUConvBN(
        C_in, C_out, 1, stride, 0, affine, track_running_stats),
    "nor_conv_3x3": lambda C_in, C_out, stride, affine=True, track_running_stats=True: ReLUConvBN(
        C_in, C_out, 3, stride, 1, affine, track_running_stats),
    "avg_pool_3x3": lambda C_in, C_out, stride, affine=True, track_running_stats=True: AvgPool(
        C_in, C_out, stride, affine, track_running_stats),
}


def nb201_op(name: str, C_in: int, C_out: int, stride: int = 1, affine: bool = True,
             track_running_stats: bool = True) -> nn.Module:
    """``OPS[name](...)`` with a clear error for an unknown name."""
    if name not in OPS:
        raise ValueError(f"unknown NAS-Bench-201 op {name!r}; known: {', '.join(PRIMITIVES)}")
    return OPS[name](C_in, C_out, stride, affine, track_running_stats)


class ResNetBasicBlock(nn.Module):
    """The fixed (not searched) block between NAS-Bench-201's stages.

    Two 3x3 ReLU-Conv-BN (the first carries the stride), plus a shortcut:
    stride 2 uses a 2x2 average pool then a bias-free 1x1 conv (no BN); a
    channel change at stride 1 uses a 1x1 ReLU-Conv-BN; otherwise identity.
    Output = shortcut + residual branch, with no activation after the sum.
    """

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicBlock supports stride 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, affine, track_running_stats)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine, track_running_stats)
        if stride == 2:
            self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(C_in, C_out, 1, bias=False))
        elif C_in != C_out:
            self.downsample = ReLUConvBN(C_in, C_out, 1, 1, 0, affine, track_running_stats)
        else:
            self.downsample = None
        self.in_channels, self.out_channels, self.stride = C_in, C_out, stride

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))

    def extra_repr(self) -> str:
        return f"C_in={self.in_channels}, C_out={self.out_channels}, stride={self.stride}"
