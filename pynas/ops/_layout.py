"""Python mirrors of the output layouts chosen in csrc/ops/common.cpp.

Fake kernels must predict the strides the real kernels return, so that
torch.compile and opcheck see the same tensors either way.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import guard_or_false


def is_non_overlapping_and_dense(t: Tensor) -> bool:
    """Whether t's elements fill one block of memory with no gaps or overlaps (any dim order)."""
    return _dense(t.shape, t.stride())


def _dense(sizes, strides) -> bool:
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(sizes, strides) if s != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _inner_numel(t: Tensor) -> int:
    inner = 1
    for size in t.shape[1:]:
        inner *= size
    return inner


def is_sample_blocked(t: Tensor) -> bool:
    """Mirror of ``is_sample_blocked``: each sample one dense block, samples at least a block apart."""
    if t.dim() == 0 or t.numel() == 0:
        return True
    if not _dense(t.shape[1:], t.stride()[1:]):
        return False
    return t.shape[0] == 1 or t.stride(0) >= _inner_numel(t)


def empty_in_common_layout(t: Tensor) -> Tensor:
    """Mirror of ``empty_sample_blocks_like``: what weighted_sum returns for inputs laid out like ``t``
    (dense, with t's layout inside each sample when t's samples are dense blocks)."""
    if t.dim() == 0 or t.numel() == 0 or not is_sample_blocked(t):
        return torch.empty(t.shape, dtype=t.dtype, device=t.device)
    return torch.empty_strided(t.shape, (_inner_numel(t),) + tuple(t.stride()[1:]), dtype=t.dtype, device=t.device)


def _trailing_dims_merge(t: Tensor) -> bool:
    """Mirror of ``trailing_dims_merge``: the dims from 2 on of size above 1 nest into one axis."""
    inner = None
    for d in range(t.dim() - 1, 1, -1):
        if t.shape[d] == 1:
            continue
        if inner is not None and t.stride(d) != t.stride(inner) * t.shape[inner]:
            return False
        inner = d
    return True


def empty_like_ncs(t: Tensor, channels: int) -> Tensor:
    """Mirror of ``mergeable_ncs`` followed by ``empty_like_ncs``."""
    shape = (t.shape[0], channels) + tuple(t.shape[2:])
    mergeable = is_non_overlapping_and_dense(t) and _trailing_dims_merge(t)
    channels_last = mergeable and t.dim() >= 3 and t.shape[1] > 1 and t.stride(1) == 1
    if channels_last and t.dim() == 4:
        return torch.empty(shape, dtype=t.dtype, device=t.device, memory_format=torch.channels_last)
    if channels_last and t.dim() == 5:
        return torch.empty(shape, dtype=t.dtype, device=t.device, memory_format=torch.channels_last_3d)
    return torch.empty(shape, dtype=t.dtype, device=t.device)


def _row_dense(t: Tensor) -> bool:
    """Mirror of ``row_dense``, asking nothing of a data-dependent batch size."""
    if t.dim() == 0:
        return True
    row = 1
    for size in t.shape[1:]:
        row *= size
    return _dense(t.shape[1:], t.stride()[1:]) and (guard_or_false(t.shape[0] <= 1) or t.stride(0) == row)


def empty_rows_like(t: Tensor, rows) -> Tensor:
    """Mirror of ``empty_rows_like``: ``[rows, *t.shape[1:]]`` with t's inner strides."""
    shape = (rows,) + tuple(t.shape[1:])
    if not _row_dense(t):
        return t.new_empty(shape)
    row = 1
    for s in t.shape[1:]:
        row *= s
    return torch.empty_strided(shape, (row,) + tuple(t.stride()[1:]), dtype=t.dtype, device=t.device)
