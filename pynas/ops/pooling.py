"""Global average pooling whose gradient keeps the input's memory format.

``nn.AdaptiveAvgPool2d(1)`` gives a channels-last input an NCHW gradient: its
output ``[N, C, 1, 1]`` is both contiguous and channels-last, so the backward
cannot tell which layout to make, picks NCHW, and every layer upstream then
runs its backward in NCHW (or converts back). This pooling remembers the
input's layout and makes its gradient in it, at the same cost (one write of
the input-sized gradient).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _layout(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class _GlobalAvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.shape = x.shape
        ctx.layout = _layout(x)
        return x.mean((2, 3), keepdim=True)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        n, c, h, w = ctx.shape
        return (grad / (h * w)).expand(n, c, h, w).contiguous(memory_format=ctx.layout)


def global_avg_pool2d(x: Tensor) -> Tensor:
    """``[N, C, H, W] -> [N, C, 1, 1]`` mean over the spatial dims; the gradient has x's layout."""
    if x.dim() != 4:
        raise ValueError(f"global_avg_pool2d expects [N, C, H, W], got shape {list(x.shape)}")
    return _GlobalAvgPool.apply(x)


class GlobalAvgPool2d(nn.Module):
    """Drop-in for ``nn.AdaptiveAvgPool2d(1)`` that keeps channels-last gradients channels-last."""

    def forward(self, x: Tensor) -> Tensor:
        return global_avg_pool2d(x)
