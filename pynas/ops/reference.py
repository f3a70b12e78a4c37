"""Pure-PyTorch references of the fused ops: the test oracle and the eager baseline.

Each function has the signature of the op it mirrors and is written the way a
reader would write it by hand, with no attempt at speed.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "channel_shuffle",
    "weighted_sum_reference",
    "partial_channel_mix_reference",
    "path_dispatch_reference",
    "path_combine_reference",
    "grouped_batch_norm_reference",
]


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def weighted_sum_reference(xs: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``sum_k weights[..., k] * xs[k]``, accumulated in float32 (float64 for float64)."""
    acc = _accumulate_dtype(xs[0].dtype)
    w = weights.to(acc)
    out = torch.zeros(xs[0].shape, dtype=acc, device=xs[0].device)
    for k, x in enumerate(xs):
        wk = w[k] if w.dim() == 1 else w[:, k].reshape((-1,) + (1,) * (x.dim() - 1))
        out = out + wk * x.to(acc)
    return out.to(xs[0].dtype)


def channel_shuffle(t: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle, as PC-DARTS applies it after the concat."""
    n, c = t.shape[:2]
    rest = t.shape[2:]
    return t.view(n, groups, c // groups, *rest).transpose(1, 2).reshape(n, c, *rest)


def partial_channel_mix_reference(ys: Sequence[Tensor], weights: Tensor, x: Tensor, groups: int) -> Tensor:
    """PC-DARTS edge output: mix the first C/groups channels, bypass the rest, shuffle."""
    c_part = x.shape[1] // groups
    mixed = weighted_sum_reference(ys, weights)
    return channel_shuffle(torch.cat([mixed, x[:, c_part:]], dim=1), groups)


def path_dispatch_reference(x: Tensor, choices: Tensor, num_choices: int) -> list[Tensor]:
    """Bucket k holds the rows ``x[i]`` with ``choices[i] == k``, in increasing i."""
    choices = choices.to(x.device)
    return [x[choices == k] for k in range(num_choices)]


def path_combine_reference(ys: Sequence[Tensor], choices: Tensor, residual: Optional[Tensor] = None) -> Tensor:
    """Inverse of :func:`path_dispatch_reference`: row i is the next row of ``ys[choices[i]]``."""
    choices = choices.to(ys[0].device)
    out = ys[0].new_empty((choices.shape[0],) + tuple(ys[0].shape[1:]))
    for k, y in enumerate(ys):
        out[choices == k] = y
    if residual is not None:
        out = out + residual
    return out


def grouped_batch_norm_reference(
    x: Tensor,
    groups: Tensor,
    num_groups: int,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    num_batches_tracked: Optional[Tensor] = None,
    momentum: Optional[float] = 0.1,
    eps: float = 1e-5,
    training: bool = True,
) -> Tensor:
    """Batch norm run separately on each group of samples with ``F.batch_norm``.

    Running statistics are ``[num_groups, C]``; ``num_batches_tracked`` is
    ``[num_groups]`` and counts the batches each group appeared in (needed for
    ``momentum=None``, the cumulative average).
    """
    groups = groups.to(x.device)
    acc = _accumulate_dtype(x.dtype)
    w = weight.to(acc) if weight is not None else None
    b = bias.to(acc) if bias is not None else None
    out = torch.empty_like(x)
    for g in range(num_groups):
        rows = (groups == g).nonzero().flatten()
        if rows.numel() == 0:
            continue
        rm = running_mean[g].to(acc, copy=True) if running_mean is not None else None
        rv = running_var[g].to(acc, copy=True) if running_var is not None else None
        factor = momentum
        if training and num_batches_tracked is not None:
            num_batches_tracked[g] += 1
            if momentum is None:
                factor = 1.0 / float(num_batches_tracked[g])
        out[rows] = torch.nn.functional.batch_norm(
            x[rows].to(acc), rm, rv, w, b, training=training or rm is None,
            momentum=0.0 if factor is None else factor, eps=eps,
        ).to(x.dtype)
        if training and running_mean is not None:
            with torch.no_grad():
                running_mean[g] = rm
                running_var[g] = rv
    return out
