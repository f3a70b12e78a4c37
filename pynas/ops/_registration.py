"""Fake kernels and autograd formulas of every pynas op, in one place.

The schemas live in csrc/ops/schemas.cpp and the CPU/CUDA kernels in
csrc/cpu and csrc/cuda; this module makes the ops traceable by
torch.compile (fake kernels) and differentiable (register_autograd).
"""
from __future__ import annotations

import torch
from torch.fx.experimental.symbolic_shapes import guard_or_false

import pynas._extension  # noqa: F401  (loads the schemas and kernels)

from ._layout import accumulate_dtype, empty_in_common_layout, empty_like_ncs, empty_rows_like

_ops = torch.ops.pynas


def _is_nhwc(t) -> bool:
    """A 4-D tensor laid out channels-last (channels innermost), and not also contiguous."""
    return t.dim() == 4 and t.shape[1] > 1 and t.shape[2] * t.shape[3] > 1 and t.stride(1) == 1


def _in_forward_layout(ctx, grad):
    """The incoming gradient, channels-last when the op's output was: autograd may hand an op of a
    channels-last network an NCHW gradient (adaptive pooling to 1x1 does: its memory format is then
    ambiguous), and the input gradients, made in the gradient's layout, would carry NCHW upstream."""
    if ctx.channels_last and not _is_nhwc(grad) and grad.dim() == 4:
        return grad.contiguous(memory_format=torch.channels_last)
    return grad


# ---------------------------------------------------------------- weighted_sum
@torch.library.register_fake("pynas::weighted_sum")
def _weighted_sum_fake(xs, weights):
    return empty_in_common_layout(xs[0])


@torch.library.register_fake("pynas::_weighted_sum_backward")
def _weighted_sum_backward_fake(grad, xs, weights, xs_need_grad, weights_need_grad):
    grads = [empty_in_common_layout(grad) for need in xs_need_grad if need]
    grad_w = weights.new_empty(weights.shape) if weights_need_grad else weights.new_empty(0)
    return grads, grad_w


def _weighted_sum_setup(ctx, inputs, output):
    xs, weights = inputs
    ctx.xs_need_grad = [x.requires_grad for x in xs]
    ctx.weights_need_grad = weights.requires_grad
    # The inputs are needed only for the weights' gradient: keep them alive
    # only then (a DARTS node holds 35 of them).
    ctx.num_xs = len(xs)
    ctx.save_for_backward(weights, *(xs if weights.requires_grad else ()))
    ctx.channels_last = _is_nhwc(output)


def _weighted_sum_backward(ctx, grad):
    weights, *xs = ctx.saved_tensors
    grad = _in_forward_layout(ctx, grad)
    if torch.is_grad_enabled():
        return _weighted_sum_backward_differentiable(ctx, grad, weights, xs)
    if not xs:
        xs = [grad] * ctx.num_xs  # shape placeholders; not read without the weights' gradient
    grads, grad_w = _ops._weighted_sum_backward(grad, xs, weights, ctx.xs_need_grad, ctx.weights_need_grad)
    it = iter(grads)
    grad_xs = [next(it) if need else None for need in ctx.xs_need_grad]
    return grad_xs, (grad_w if ctx.weights_need_grad else None)


def _weighted_sum_backward_differentiable(ctx, grad, weights, xs):
    """The same gradients from differentiable ops, for double backward (create_graph=True)."""
    shape = (-1,) + (1,) * (grad.dim() - 1)
    w = weights.to(accumulate_dtype(grad.dtype))
    grad_xs = [(w[k] if w.dim() == 1 else w[:, k].reshape(shape)).mul(grad).to(grad.dtype) if need else None
               for k, need in enumerate(ctx.xs_need_grad)]
    grad_w = None
    if ctx.weights_need_grad:
        dims = tuple(range(grad.dim())) if weights.dim() == 1 else tuple(range(1, grad.dim()))
        grad_w = torch.stack([(grad.to(w.dtype) * x.to(w.dtype)).sum(dims) for x in xs], dim=-1).to(weights.dtype)
    return grad_xs, grad_w


def _not_twice_differentiable(name):
    if torch.is_grad_enabled():
        raise NotImplementedError(
            f"pynas.ops.{name} has no double backward (create_graph=True); use its *_reference "
            "for higher-order gradients")


torch.library.register_autograd("pynas::weighted_sum", _weighted_sum_backward, setup_context=_weighted_sum_setup)


# --------------------------------------------------------- partial_channel_mix
@torch.library.register_fake("pynas::partial_channel_mix")
def _partial_channel_mix_fake(ys, weights, x, groups):
    return empty_like_ncs(x, x.shape[1])


@torch.library.register_fake("pynas::_partial_channel_mix_backward")
def _partial_channel_mix_backward_fake(grad, ys, weights, groups, ys_need_grad, weights_need_grad, x_need_grad):
    grads = [empty_like_ncs(ys[0], ys[0].shape[1]) for need in ys_need_grad if need]
    grad_w = weights.new_empty(weights.shape) if weights_need_grad else weights.new_empty(0)
    grad_x = empty_like_ncs(grad, grad.shape[1]) if x_need_grad else grad.new_empty(0)
    return grads, grad_w, grad_x


def _partial_channel_mix_setup(ctx, inputs, output):
    ys, weights, x, groups = inputs
    ctx.groups = groups
    ctx.ys_need_grad = [y.requires_grad for y in ys]
    ctx.weights_need_grad = weights.requires_grad
    ctx.x_need_grad = x.requires_grad
    ctx.num_ys = len(ys)
    ctx.save_for_backward(weights, *(ys if weights.requires_grad else ()))
    ctx.channels_last = _is_nhwc(output)


def _partial_channel_mix_backward(ctx, grad):
    _not_twice_differentiable("partial_channel_mix")
    weights, *ys = ctx.saved_tensors
    grad = _in_forward_layout(ctx, grad)
    if not ys:
        # Shape placeholders; the ys are read only for the weights' gradient.
        n, c = grad.shape[:2]
        ys = [grad.new_empty((n, c // ctx.groups) + tuple(grad.shape[2:]))] * ctx.num_ys
    grads, grad_w, grad_x = _ops._partial_channel_mix_backward(
        grad, ys, weights, ctx.groups, ctx.ys_need_grad, ctx.weights_need_grad, ctx.x_need_grad
    )
    it = iter(grads)
    grad_ys = [next(it) if need else None for need in ctx.ys_need_grad]
    return (
        grad_ys,
        grad_w if ctx.weights_need_grad else None,
        grad_x if ctx.x_need_grad else None,
        None,
    )


torch.library.register_autograd(
    "pynas::partial_channel_mix", _partial_channel_mix_backward, setup_context=_partial_channel_mix_setup
)


# ------------------------------------------------------ path_dispatch/combine
@torch.library.register_fake("pynas::path_dispatch")
def _path_dispatch_fake(x, choices, num_choices):
    # Bucket sizes depend on the values of choices.
    ctx = torch.library.get_ctx()
    return [empty_rows_like(x, ctx.new_dynamic_size()) for _ in range(num_choices)]


@torch.library.register_fake("pynas::path_combine")
def _path_combine_fake(ys, choices, residual=None):
    # Mirror of prepare_path_combine: the first bucket with rows fixes the layout.
    proto = next((y for y in ys if guard_or_false(y.shape[0] > 0)), ys[0])
    return empty_rows_like(proto, choices.shape[0])


def _path_dispatch_setup(ctx, inputs, output):
    x, choices, num_choices = inputs
    ctx.save_for_backward(choices)
    ctx.bucket_shapes = [o.shape for o in output]


def _path_dispatch_backward(ctx, grads):
    (choices,) = ctx.saved_tensors
    # path_combine is path_dispatch's adjoint; unused buckets get zero gradients, laid out like the
    # others (path_combine adopts the first bucket's layout: an NCHW placeholder would make the
    # gradient of a channels-last x NCHW).
    ref = next(g for g in grads if g is not None)
    grads = [g if g is not None else empty_rows_like(ref, s[0]).zero_() for g, s in zip(grads, ctx.bucket_shapes)]
    return _ops.path_combine(grads, choices, None), None, None


torch.library.register_autograd("pynas::path_dispatch", _path_dispatch_backward, setup_context=_path_dispatch_setup)


def _path_combine_setup(ctx, inputs, output):
    ys, choices, residual = inputs
    ctx.save_for_backward(choices)
    ctx.num_ys = len(ys)
    ctx.ys_need_grad = any(y.requires_grad for y in ys)
    ctx.has_residual = residual is not None
    ctx.residual_need_grad = residual is not None and residual.requires_grad


def _path_combine_backward(ctx, grad):
    (choices,) = ctx.saved_tensors
    grad_ys = _ops.path_dispatch(grad, choices, ctx.num_ys) if ctx.ys_need_grad else None
    # Autograd counts an omitted optional tensor as no input at all.
    if not ctx.has_residual:
        return grad_ys, None
    return grad_ys, None, (grad if ctx.residual_need_grad else None)


torch.library.register_autograd("pynas::path_combine", _path_combine_backward, setup_context=_path_combine_setup)


# ---------------------------------------------------------- grouped_batch_norm
@torch.library.register_fake("pynas::grouped_batch_norm")
def _grouped_batch_norm_fake(x, groups, num_groups, weight, bias, mean, var, eps):
    acc = accumulate_dtype(x.dtype)
    stats = x.new_empty((num_groups, x.shape[1]), dtype=acc)
    return empty_like_ncs(x, x.shape[1]), stats, torch.empty_like(stats)


@torch.library.register_fake("pynas::_grouped_batch_norm_backward")
def _grouped_batch_norm_backward_fake(grad, x, groups, num_groups, weight, mean, invstd, batch_stats, output_mask):
    acc = accumulate_dtype(x.dtype)
    grad_x = empty_like_ncs(x, x.shape[1]) if output_mask[0] else x.new_empty(0)
    c = x.shape[1] if weight is not None else 0
    grad_w = x.new_empty((c if output_mask[1] else 0,), dtype=acc)
    grad_b = x.new_empty((x.shape[1] if output_mask[2] else 0,), dtype=acc)
    return grad_x, grad_w, grad_b


def _grouped_batch_norm_setup(ctx, inputs, output):
    x, groups, num_groups, weight, bias, mean, var, eps = inputs
    _, mean_out, invstd_out = output
    ctx.num_groups = num_groups
    ctx.batch_stats = mean is None
    ctx.mask = [x.requires_grad, weight is not None and weight.requires_grad,
                bias is not None and bias.requires_grad]
    ctx.param_dtypes = (None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    ctx.save_for_backward(x, groups, weight, mean_out, invstd_out)
    ctx.mark_non_differentiable(mean_out, invstd_out)


def _grouped_batch_norm_backward(ctx, grad_out, _grad_mean, _grad_invstd):
    _not_twice_differentiable("grouped_batch_norm")
    x, groups, weight, mean, invstd = ctx.saved_tensors
    grad_x, grad_w, grad_b = _ops._grouped_batch_norm_backward(
        grad_out, x, groups, ctx.num_groups, weight, mean, invstd, ctx.batch_stats, ctx.mask
    )
    w_dtype, b_dtype = ctx.param_dtypes
    return (
        grad_x if ctx.mask[0] else None,
        None,
        None,
        grad_w.to(w_dtype) if ctx.mask[1] else None,
        grad_b.to(b_dtype) if ctx.mask[2] else None,
        None,
        None,
        None,
    )


torch.library.register_autograd(
    "pynas::grouped_batch_norm", _grouped_batch_norm_backward, setup_context=_grouped_batch_norm_setup
)
