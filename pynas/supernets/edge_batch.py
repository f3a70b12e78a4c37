"""Run one candidate op on every edge that reads the same state, in one set of calls.

In a DARTS cell a state feeds up to 4 edges (the two cell inputs feed every
node), and each edge holds its own copy of every candidate op. Run edge by
edge, a state with E outgoing edges costs E calls per conv, BN and pool,
each on a few channels: at search sizes (C = 8-16, and C/4 for PC-DARTS)
the step is dominated by per-call overhead, not arithmetic. This module
computes the same values with the E edges stacked along the channel axis:

* separable / dilated conv: one depthwise conv with a channel multiplier of
  E (its output is channel-major, so it is reordered edge-major once), one
  pointwise conv with ``groups=E``, one batch norm over ``E*C`` channels;
* the second block of a separable conv: a depthwise conv over ``E*C``
  channels, a grouped pointwise conv, one batch norm;
* the stride-2 skip (factorized reduce): one conv per offset for all edges;
* pools: a pool and an affine-free batch norm have no weights, so every edge
  computes the same tensor; it is computed once and the other edges' batch
  norms get the same running statistics.

The weights stay in the per-edge modules (state dicts, derivation and the
eager reference see the same parameters); the stacked weights are rebuilt on
every call (a few hundred numbers each), and batch-norm running statistics
are written back to each edge's module. The outputs are channel slices
(views) of the stacked results, which ``weighted_sum`` reads in place.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pynas.spaces.darts_ops import DilConv, FactorizedReduce, Identity, SepConv

__all__ = ["batch_norm_group", "batchable", "needs_relu", "run_op_group"]


def _cat(tensors: Sequence[Tensor]) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))


def batch_norm_group(y: Tensor, bns: Sequence[nn.BatchNorm2d]) -> Tensor:
    """``cat([bn_e(y_e) for e], 1)`` for ``y = cat([y_e for e], 1)``, as one batch-norm call.

    Mirrors ``nn.BatchNorm2d.forward`` (momentum, cumulative average when
    momentum is None, eval mode with running statistics) on the concatenated
    parameters and buffers, then writes the updated running statistics back
    into each module. All modules must share momentum, eps and flags, as the
    modules of one op column of a cell do.
    """
    first = bns[0]
    if len(bns) == 1:
        return first(y)
    tracking = first.track_running_stats and first.running_mean is not None
    factor = 0.0 if first.momentum is None else first.momentum
    if first.training and tracking:
        counters = [bn.num_batches_tracked for bn in bns]
        torch._foreach_add_(counters, 1)
        if first.momentum is None:
            factor = 1.0 / float(first.num_batches_tracked)
    use_batch_stats = first.training or not tracking
    means = [bn.running_mean for bn in bns] if tracking else None
    variances = [bn.running_var for bn in bns] if tracking else None
    mean = _cat(means) if tracking else None
    var = _cat(variances) if tracking else None
    weight = _cat([bn.weight for bn in bns]) if first.affine else None
    bias = _cat([bn.bias for bn in bns]) if first.affine else None
    out = F.batch_norm(y, mean, var, weight, bias, use_batch_stats, factor, first.eps)
    if use_batch_stats and tracking:
        with torch.no_grad():
            torch._foreach_copy_(means + variances, list(mean.split(first.num_features)) +
                                 list(var.split(first.num_features)))
    return out


def _nhwc(t: Tensor) -> bool:
    """Whether t is laid out channels-last (and not also contiguous, as 1x1 or 1-channel maps are)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _edge_major(y: Tensor, C: int, E: int) -> Tensor:
    """Channels c*E + e -> e*C + c, in y's own layout (a channels-last y stays channels-last)."""
    if _nhwc(y):
        n, _, h, w = y.shape
        return y.permute(0, 2, 3, 1).unflatten(3, (C, E)).transpose(3, 4).reshape(n, h, w, E * C).permute(0, 3, 1, 2)
    return y.unflatten(1, (C, E)).transpose(1, 2).flatten(1, 2)


def _interleave_halves(a: Tensor, b: Tensor, E: int, half: int) -> Tensor:
    """[a_0, b_0, a_1, b_1, ...] over the E edges' halves along channels, in a's layout."""
    if _nhwc(a):
        stacked = torch.stack([a.permute(0, 2, 3, 1).unflatten(3, (E, half)),
                               b.permute(0, 2, 3, 1).unflatten(3, (E, half))], 4)
        return stacked.flatten(3, 5).permute(0, 3, 1, 2)
    return torch.stack([a.unflatten(1, (E, half)), b.unflatten(1, (E, half))], 2).flatten(1, 3)


def _depthwise_multiplier_block(blocks: Sequence[DilConv], relu_x: Tensor) -> Tensor:
    """The first ReLU-depthwise-pointwise-BN block of E edges reading one state; edge-major output."""
    dw = blocks[0][1]
    E, C = len(blocks), relu_x.shape[1]
    # Output channel c*E + e of a depthwise conv with multiplier E is edge e's filter on channel c.
    weight = torch.stack([b[1].weight for b in blocks], 1).flatten(0, 1)
    y = F.conv2d(relu_x, weight, None, dw.stride, dw.padding, dw.dilation, C)
    if E > 1:
        y = _edge_major(y, C, E)
    y = F.conv2d(y, _cat([b[2].weight for b in blocks]), None, 1, 0, 1, E)
    return batch_norm_group(y, [b[3] for b in blocks])


def _depthwise_block(blocks: Sequence[DilConv], y: Tensor) -> Tensor:
    """A ReLU-depthwise-pointwise-BN block applied to E edges' stacked (edge-major) channels."""
    dw = blocks[0][1]
    E = len(blocks)
    y = F.conv2d(torch.relu(y), _cat([b[1].weight for b in blocks]), None, dw.stride, dw.padding, dw.dilation,
                 y.shape[1])
    y = F.conv2d(y, _cat([b[2].weight for b in blocks]), None, 1, 0, 1, E)
    return batch_norm_group(y, [b[3] for b in blocks])


def _factorized_reduce(mods: Sequence[FactorizedReduce], relu_x: Tensor) -> Tensor:
    E = len(mods)
    half = mods[0].conv_1.out_channels
    shifted = F.pad(relu_x, (0, 1, 0, 1))[:, :, 1:, 1:]
    a = F.conv2d(relu_x, _cat([m.conv_1.weight for m in mods]), None, 2)
    b = F.conv2d(shifted, _cat([m.conv_2.weight for m in mods]), None, 2)
    # Edge e's output is [conv_1_e, conv_2_e]: interleave the two stacks per edge.
    y = _interleave_halves(a, b, E, half)
    return batch_norm_group(y, [m.bn for m in mods])


def _is_pool_with_bn(op: nn.Module) -> bool:
    return (type(op) is nn.Sequential and len(op) == 2 and isinstance(op[0], (nn.MaxPool2d, nn.AvgPool2d))
            and isinstance(op[1], nn.BatchNorm2d) and not op[1].affine)


def _shared_pool(mods: Sequence[nn.Sequential], x: Tensor) -> Tensor:
    """A pool and an affine-free BN computed once for every edge; the other edges' BNs mirror the first's."""
    out = mods[0](x)
    first = mods[0][1]
    if len(mods) > 1 and first.training and first.track_running_stats and first.running_mean is not None:
        others = [m[1] for m in mods[1:]]
        with torch.no_grad():
            torch._foreach_copy_([bn.running_mean for bn in others] + [bn.running_var for bn in others]
                                 + [bn.num_batches_tracked for bn in others],
                                 [first.running_mean] * len(others) + [first.running_var] * len(others)
                                 + [first.num_batches_tracked] * len(others))
    return out


def _is_plain_dilconv(op: nn.Module) -> bool:
    return (type(op) is DilConv and op[1].bias is None and op[2].bias is None and op[2].kernel_size == (1, 1)
            and op[1].groups == op[1].in_channels == op[1].out_channels)


def batchable(op: nn.Module) -> bool:
    """Whether :func:`run_op_group` computes ``op`` stacked (else it runs it edge by edge)."""
    if type(op) is SepConv:
        return all(_is_plain_dilconv(block) for block in op)
    return type(op) in (Identity, FactorizedReduce) or _is_plain_dilconv(op) or _is_pool_with_bn(op)


def needs_relu(op: nn.Module) -> bool:
    """Whether the stacked computation of ``op`` reads ReLU(state) (conv ops and the factorized reduce)."""
    return type(op) in (SepConv, DilConv, FactorizedReduce)


def run_op_group(mods: Sequence[nn.Module], x: Tensor, relu_x: Tensor | None) -> list[Tensor]:
    """``[m(x) for m in mods]`` for the same op on E edges reading ``x``; ``relu_x`` = ``relu(x)``
    (needed when :func:`needs_relu`). Ops that :func:`batchable` rejects run one by one."""
    first = mods[0]
    kind = type(first)
    if not batchable(first):
        return [m(x) for m in mods]
    if kind is Identity:
        return [x] * len(mods)
    if _is_pool_with_bn(first):
        return [_shared_pool(mods, x)] * len(mods)
    if kind is DilConv:
        y = _depthwise_multiplier_block(mods, relu_x)
    elif kind is SepConv:
        y = _depthwise_block([m[1] for m in mods], _depthwise_multiplier_block([m[0] for m in mods], relu_x))
    else:  # FactorizedReduce
        y = _factorized_reduce(mods, relu_x)
    return list(y.split(y.shape[1] // len(mods), dim=1))
