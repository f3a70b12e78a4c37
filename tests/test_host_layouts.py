"""Layout handling shared by both backends (csrc/ops/common.cpp), on every device the build has.

- Dense tensors whose trailing dims do not nest must not be read as one spatial axis, even when a
  size-1 dim sits between them (``x.transpose(2, 3).unsqueeze(3)``): that view once gave
  grouped_batch_norm results off by ~6 and made partial_channel_mix read outside the tensor.
- weighted_sum's backward reads a gradient that is a channel slice (a DARTS node's gradient is a slice
  of its cell's concatenation) and channels-last inputs in place: no ``aten::copy_`` at all.
"""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from conftest import cuda_ready
from helpers import DTYPES, assert_close
from pynas import ops
from pynas.ops._layout import is_non_overlapping_and_dense

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _unmergeable(n, c, h, w, dtype, device):
    """Dense 5-D [n, c, w, 1, h] whose last dims do not nest: strides (c*h*w, h*w, 1, ·, w)."""
    x = torch.randn(n, c, h, w, dtype=torch.float64).to(dtype).to(device)
    t = x.transpose(2, 3).unsqueeze(3)
    assert is_non_overlapping_and_dense(t) and not t.is_contiguous()
    return t


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_batch_norm_unmergeable_trailing_dims(device, dtype):
    x = _unmergeable(6, 3, 5, 7, dtype, device).requires_grad_()
    groups = torch.tensor([0, 1, 0, 1, 2, 2])
    w = torch.randn(3, dtype=torch.float64, device=device).to(dtype).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, device=device).to(dtype).requires_grad_()
    out = ops.grouped_batch_norm(x, groups, 3, w, b, training=True)
    xr, wr, br = (t.detach().cpu().double().requires_grad_() for t in (x, w, b))
    ref = ops.grouped_batch_norm_reference(xr, groups, 3, wr, br, training=True)
    assert_close(out.detach().cpu(), ref.to(dtype), dtype)
    g = torch.randn(out.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, (x, w, b), g.to(dtype).to(device))
    want = torch.autograd.grad(ref, (xr, wr, br), g)
    for a, e in zip(got, want):
        assert_close(a.cpu(), e.to(dtype), dtype, grad=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_partial_channel_mix_unmergeable_trailing_dims(device, dtype):
    x = _unmergeable(3, 8, 5, 7, dtype, device).requires_grad_()
    ys = [_unmergeable(3, 2, 5, 7, dtype, device).requires_grad_() for _ in range(3)]
    w = torch.randn(3, device=device).softmax(0).requires_grad_()
    out = ops.partial_channel_mix(ys, w, x, 4)
    ref_in = [t.detach().cpu().double().requires_grad_() for t in (*ys, w, x)]
    ref = ops.partial_channel_mix_reference(ref_in[:3], ref_in[3], ref_in[4], 4)
    assert_close(out.detach().cpu(), ref.to(dtype), dtype)
    g = torch.randn(out.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, (*ys, w, x), g.to(dtype).to(device))
    want = torch.autograd.grad(ref, ref_in, g)
    for a, e in zip(got, want):  # the weights' gradient is float32 whatever the dtype
        assert_close(a.cpu(), e.to(a.dtype), a.dtype if dtype == torch.float64 else dtype, grad=True)


def _copies_in_backward(fn, inputs, grad):
    """Number of aten::copy_ calls while autograd computes the gradients of fn(inputs)."""
    out = fn(inputs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        grads = torch.autograd.grad(out, inputs, grad)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::copy_"), grads


def _node_inputs(device, memory_format, k=10):
    return [torch.randn(4, 8, 6, 6, device=device).contiguous(memory_format=memory_format).requires_grad_()
            for _ in range(k)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weights_need_grad", [False, True])
def test_darts_node_backward_with_channel_slice_gradient_copies_nothing(device, weights_need_grad):
    xs = _node_inputs(device, torch.contiguous_format)
    w = torch.randn(10, device=device).softmax(0).requires_grad_(weights_need_grad)
    others = torch.randn(4, 24, 6, 6, device=device)

    def cell(inputs):  # the node's state is one channel slice of the cell's output
        node = ops.weighted_sum(inputs[:10], w)
        return torch.cat([others[:, :8], node, others[:, 8:]], dim=1)

    inputs = xs + ([w] if weights_need_grad else [])
    g = torch.randn(4, 32, 6, 6, device=device)
    copies, grads = _copies_in_backward(cell, inputs, g)
    assert copies == 0
    gs = g[:, 8:16]
    for k in range(10):
        torch.testing.assert_close(grads[k], w[k].detach() * gs)
    if weights_need_grad:
        want = torch.stack([(gs * x.detach()).sum() for x in xs])
        torch.testing.assert_close(grads[10], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_node_stays_channels_last_without_copies(device):
    xs = _node_inputs(device, torch.channels_last, k=6)
    w = torch.randn(4, 6, device=device).softmax(1).requires_grad_()
    out = ops.weighted_sum(xs, w)
    assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn(out.shape, device=device).contiguous(memory_format=torch.channels_last)
    copies, grads = _copies_in_backward(lambda t: ops.weighted_sum(t[:6], t[6]), xs + [w], g)
    assert copies == 0
    assert all(gx.is_contiguous(memory_format=torch.channels_last) for gx in grads[:6])


def test_copy_counter_sees_a_copy():
    """The profiler count above can fail: a backward that does copy is counted."""
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    copies, _ = _copies_in_backward(lambda t: t[0].to(torch.float64), [x], torch.randn(4, 8, 6, 6,
                                                                                         dtype=torch.float64))
    assert copies >= 1


def test_cuda_marker_matches_build():
    # The cuda params above run only where a GPU and the CUDA kernels are there.
    assert cuda_ready() in (True, False)
