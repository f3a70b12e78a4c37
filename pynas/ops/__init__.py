"""Fused supernet ops (CPU and CUDA kernels), registered as torch custom ops.

Each op has a pure-PyTorch ``*_reference`` with the same signature
(:mod:`pynas.ops.reference`), which the tests use as their oracle.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _registration  # noqa: F401  (fake kernels and autograd)
from .reference import (
    channel_shuffle,
    grouped_batch_norm_reference,
    partial_channel_mix_reference,
    path_combine_reference,
    path_dispatch_reference,
    weighted_sum_reference,
)

__all__ = [
    "weighted_sum",
    "partial_channel_mix",
    "path_dispatch",
    "path_combine",
    "grouped_batch_norm",
    "channel_shuffle",
    "weighted_sum_reference",
    "partial_channel_mix_reference",
    "path_dispatch_reference",
    "path_combine_reference",
    "grouped_batch_norm_reference",
]

_ops = torch.ops.pynas


def _tensor_list(xs, name: str) -> list[Tensor]:
    if isinstance(xs, Tensor) or not isinstance(xs, Sequence):
        raise TypeError(f"{name} must be a list or tuple of tensors, got {type(xs).__name__}")
    out = list(xs)
    for k, x in enumerate(out):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}[{k}] must be a tensor, got {type(x).__name__}")
    return out


def _tensor(t, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    return t


def _int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    return v


def weighted_sum(xs: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``sum_k weights[..., k] * xs[k]`` in one pass, accumulated in float32.

    Args:
        xs: K tensors of one shape, dtype (float64/32/16, bfloat16) and device;
            any strides. The same tensor may appear more than once.
        weights: floating, ``[K]`` (shared) or ``[N, K]`` (per sample,
            ``N = xs[0].shape[0]``).

    A DARTS node (5 edges x 7 ops = 35 inputs) is one call.
    """
    return _ops.weighted_sum(_tensor_list(xs, "xs"), _tensor(weights, "weights"))


def partial_channel_mix(ys: Sequence[Tensor], weights: Tensor, x: Tensor, groups: int) -> Tensor:
    """PC-DARTS partial-channel edge in one pass.

    Equals ``channel_shuffle(cat([weighted_sum(ys, weights), x[:, C // groups:]], 1), groups)``
    where ``ys`` are the candidate ops applied to ``x[:, :C // groups]``.
    """
    return _ops.partial_channel_mix(
        _tensor_list(ys, "ys"), _tensor(weights, "weights"), _tensor(x, "x"), _int(groups, "groups")
    )


def path_dispatch(x: Tensor, choices: Tensor, num_choices: int) -> list[Tensor]:
    """Split the rows of ``x`` by ``choices``: bucket k holds ``x[choices == k]``, in order.

    Give ``choices`` on the CPU to avoid any host synchronisation when ``x`` is
    on a GPU; choices on the GPU cost one synchronisation (the bucket sizes).
    """
    return _ops.path_dispatch(_tensor(x, "x"), _tensor(choices, "choices"), _int(num_choices, "num_choices"))


def path_combine(ys: Sequence[Tensor], choices: Tensor, residual: Optional[Tensor] = None) -> Tensor:
    """Inverse of :func:`path_dispatch`: row i is the next row of ``ys[choices[i]]`` (+ ``residual[i]``)."""
    if residual is not None:
        _tensor(residual, "residual")
    return _ops.path_combine(_tensor_list(ys, "ys"), _tensor(choices, "choices"), residual)


def grouped_batch_norm(
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
    """Batch norm with statistics per group of samples (``groups[i]`` in ``[0, num_groups)``).

    P paths batched together each see their own batch statistics. Running
    statistics are ``[num_groups, C]``; a group's are updated only when it has
    samples in the batch. ``momentum=None`` gives the cumulative average
    (SPOS-style recalibration) and needs ``num_batches_tracked``
    (``[num_groups]`` integers, updated in place). ``weight``/``bias`` are the
    shared ``[C]`` affine parameters.
    """
    _tensor(x, "x")
    _tensor(groups, "groups")
    num_groups = _int(num_groups, "num_groups")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if momentum is not None and not (0.0 <= float(momentum) <= 1.0):
        raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    if momentum is None and training and running_mean is not None and num_batches_tracked is None:
        raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
    if num_batches_tracked is not None and tuple(num_batches_tracked.shape) != (num_groups,):
        raise ValueError(
            f"num_batches_tracked must have shape [num_groups] = [{num_groups}], got {list(num_batches_tracked.shape)}"
        )
    if not training and running_mean is not None:
        out, _, _ = _ops.grouped_batch_norm(x, groups, num_groups, weight, bias, running_mean, running_var, eps)
        return out
    out, mean, invstd = _ops.grouped_batch_norm(x, groups, num_groups, weight, bias, None, None, eps)
    if training and running_mean is not None:
        _update_running_stats(x, groups, num_groups, mean, invstd, eps, running_mean, running_var,
                              num_batches_tracked, momentum)
    return out


def _group_sizes(groups: Tensor, num_groups: int, device: torch.device) -> Tensor:
    """Samples per group, int64 [num_groups] on ``device``, without a host synchronisation.

    Host groups are counted on the host and sent from pinned memory (a non-blocking copy from pageable
    memory may wait for the device). Device groups are counted with a scatter-add: ``bincount`` on a
    GPU reads the maximum back to the host to size its output.
    """
    labels = groups.reshape(-1).long()
    if labels.device.type == "cpu":
        counts = torch.bincount(labels, minlength=num_groups)[:num_groups]
        if torch.device(device).type == "cuda":
            counts = counts.pin_memory()
        return counts.to(device, non_blocking=True)
    counts = torch.zeros(num_groups, dtype=torch.long, device=labels.device)
    counts.scatter_add_(0, labels.clamp(0, num_groups - 1), torch.ones_like(labels))
    return counts.to(device)


@torch.no_grad()
def _update_running_stats(x, groups, num_groups, mean, invstd, eps, running_mean, running_var,
                          num_batches_tracked, momentum):
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if tuple(t.shape) != (num_groups, x.shape[1]):
            raise ValueError(f"{name} must have shape [num_groups, C] = [{num_groups}, {x.shape[1]}], "
                             f"got {list(t.shape)}")
    per_group = _group_sizes(groups, num_groups, mean.device)
    present = per_group > 0
    elements = per_group.to(mean.dtype) * (x[0, 0].numel() if x.shape[0] > 0 else 1)
    if num_batches_tracked is not None:
        num_batches_tracked.add_(present.to(num_batches_tracked.dtype))
    if momentum is None:
        factor = 1.0 / num_batches_tracked.to(mean.dtype).clamp_min(1)
    else:
        factor = torch.full_like(elements, float(momentum))
    factor = torch.where(present, factor, torch.zeros_like(factor)).unsqueeze(1)
    var = invstd.pow(-2) - eps
    unbiased = var * (elements / (elements - 1).clamp_min(1)).unsqueeze(1)
    unbiased = torch.where(present.unsqueeze(1), unbiased, torch.zeros_like(unbiased))
    running_mean.add_((factor * (mean - running_mean.to(mean.dtype))).to(running_mean.dtype))
    running_var.add_((factor * (unbiased - running_var.to(mean.dtype))).to(running_var.dtype))
