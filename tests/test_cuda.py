"""CPU/CUDA parity of every op (skipped without a GPU and CUDA kernels)."""
import pytest
import torch

from pynas import ops
from helpers import DTYPES, LAYOUTS, assert_close, make

pytestmark = pytest.mark.cuda


def _to_cuda(ts):
    return [t.detach().cuda().requires_grad_(t.requires_grad) for t in ts]


def _grads(out, inputs, g):
    return torch.autograd.grad(out, [t for t in inputs if t.requires_grad], g)


def _parity(fn, cpu_inputs, dtype):
    cuda_inputs = _to_cuda(cpu_inputs)
    out_cpu, out_cuda = fn(cpu_inputs), fn(cuda_inputs)
    assert out_cuda.is_cuda and out_cuda.dtype == out_cpu.dtype and out_cuda.stride() == out_cpu.stride()
    assert_close(out_cuda.cpu(), out_cpu, dtype)
    g = torch.randn(out_cpu.shape, dtype=torch.float64).to(dtype)
    for a, b in zip(_grads(out_cuda, cuda_inputs, g.cuda()), _grads(out_cpu, cpu_inputs, g)):
        assert_close(a.cpu(), b, dtype, grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 7, 35, 64, 130])
@pytest.mark.parametrize("per_sample", [False, True])
def test_weighted_sum(dtype, k, per_sample):
    xs = [make((6, 5, 9, 7), dtype, requires_grad=True) for _ in range(k)]
    w = torch.randn((6, k) if per_sample else (k,), requires_grad=True)
    _parity(lambda t: ops.weighted_sum(t[:-1], t[-1]), xs + [w], dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_weighted_sum_layouts_and_large(layout):
    xs = [make((8, 16, 33, 31), torch.float32, layout, requires_grad=True) for _ in range(4)]
    w = torch.randn(4, requires_grad=True)
    _parity(lambda t: ops.weighted_sum(t[:-1], t[-1]), xs + [w], torch.float32)


def test_weighted_sum_reference_on_cuda():
    xs = [torch.randn(64, 16, 32, 32, device="cuda") for _ in range(8)]
    w = torch.randn(64, 8, device="cuda")
    torch.testing.assert_close(ops.weighted_sum(xs, w), ops.weighted_sum_reference(xs, w))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("per_sample", [False, True])
def test_partial_channel_mix(dtype, layout, per_sample):
    x = make((5, 16, 7, 9), dtype, layout, requires_grad=True)
    ys = [make((5, 4, 7, 9), dtype, layout, requires_grad=True) for _ in range(7)]
    w = torch.randn((5, 7) if per_sample else (7,), requires_grad=True)
    _parity(lambda t: ops.partial_channel_mix(t[:7], t[7], t[8], 4), ys + [w, x], dtype)


@pytest.mark.parametrize("dtype", DTYPES + [torch.int32])
@pytest.mark.parametrize("choices_on", ["cpu", "cuda"])
def test_path_dispatch_combine(dtype, choices_on):
    x = torch.randn(37, 6, 5, 3).to(dtype)
    choices = torch.randint(0, 5, (37,))
    c = choices.to(choices_on)
    outs = ops.path_dispatch(x.cuda(), c, 5)
    for o, r in zip(outs, ops.path_dispatch_reference(x, choices, 5)):
        assert torch.equal(o.cpu(), r)
    assert torch.equal(ops.path_combine(outs, c).cpu(), x)
    if dtype.is_floating_point:
        res = torch.randn_like(x)
        torch.testing.assert_close(ops.path_combine(outs, c, res.cuda()).cpu(),
                                   ops.path_combine_reference(ops.path_dispatch_reference(x, choices, 5), choices, res))


def test_path_ops_with_host_choices_do_not_synchronize():
    x = torch.randn(64, 32, 8, 8, device="cuda", requires_grad=True)
    choices = torch.randint(0, 4, (64,))
    torch.cuda.set_sync_debug_mode("error")
    try:
        buckets = ops.path_dispatch(x, choices, 4)
        out = ops.path_combine([b * 2 for b in buckets], choices, x)
        groups = torch.randint(0, 4, (64,))
        ops.grouped_batch_norm(out, groups, 4)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_recalibration_with_host_groups_does_not_synchronize(momentum):
    """Running statistics updated in training mode (SPOS's recalibration): the group sizes are counted on
    the host and sent from pinned memory; nothing waits for the device."""
    x = torch.randn(64, 32, 8, 8, device="cuda")
    groups = torch.randint(0, 4, (64,))
    rm, rv = torch.zeros(4, 32, device="cuda"), torch.ones(4, 32, device="cuda")
    nbt = torch.zeros(4, dtype=torch.long, device="cuda")
    ops.grouped_batch_norm(x, groups, 4, running_mean=rm, running_var=rv, num_batches_tracked=nbt,
                           momentum=momentum, training=True)  # warm-up: allocator, pinned pool
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ops.grouped_batch_norm(x, groups, 4, running_mean=rm, running_var=rv, num_batches_tracked=nbt,
                               momentum=momentum, training=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    ref_rm, ref_rv = torch.zeros(4, 32), torch.ones(4, 32)
    ref_nbt = torch.zeros(4, dtype=torch.long)
    for _ in range(2):
        ops.grouped_batch_norm_reference(x.cpu(), groups, 4, running_mean=ref_rm, running_var=ref_rv,
                                         num_batches_tracked=ref_nbt, momentum=momentum, training=True)
    torch.testing.assert_close(rm.cpu(), ref_rm)
    torch.testing.assert_close(rv.cpu(), ref_rv)
    assert torch.equal(nbt.cpu(), ref_nbt)


def test_group_sizes_of_device_groups_without_bincount():
    from pynas.ops import _group_sizes

    groups = torch.tensor([0, 2, 2, 1, 2], device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        sizes = _group_sizes(groups, 4, torch.device("cuda"))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert sizes.tolist() == [1, 1, 3, 0]


def test_path_choice_out_of_range_on_device():
    with pytest.raises(IndexError, match="choices must lie in"):
        ops.path_dispatch(torch.randn(3, 2, device="cuda"), torch.tensor([0, 5, 1], device="cuda"), 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_grouped_batch_norm(dtype, layout):
    x = make((24, 6, 5, 7), dtype, layout, requires_grad=True)
    groups = torch.randint(0, 5, (24,))
    w = torch.randn(6, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    _parity(lambda t: ops.grouped_batch_norm(t[0], groups, 5, t[1], t[2]), [x, w, b], dtype)
    rm, rv = torch.randn(5, 6), torch.rand(5, 6) + 0.5
    _parity(lambda t: ops.grouped_batch_norm(t[0], groups.to(t[0].device), 5, t[1], t[2], rm.to(t[0].device),
                                             rv.to(t[0].device), training=False), [x, w, b], dtype)


def test_grouped_batch_norm_running_stats():
    x = torch.randn(32, 8, 6, 6) + 2
    groups = torch.randint(0, 3, (32,))
    stats = [torch.zeros(3, 8), torch.ones(3, 8), torch.zeros(3, dtype=torch.long)]
    stats_cuda = [s.cuda() for s in stats]
    for momentum in (0.1, None):
        ops.grouped_batch_norm(x, groups, 3, None, None, *stats, momentum=momentum)
        ops.grouped_batch_norm(x.cuda(), groups.cuda(), 3, None, None, *stats_cuda, momentum=momentum)
        for a, b in zip(stats_cuda, stats):
            torch.testing.assert_close(a.cpu(), b)


def test_bad_device_mix():
    with pytest.raises(ValueError, match="weights is on"):
        ops.weighted_sum([torch.randn(2, 3, device="cuda")], torch.randn(1))


def _copies_in_backward(fn, inputs, grad):
    """Number of aten::copy_ calls while autograd computes the gradients of fn(inputs)."""
    from torch.profiler import ProfilerActivity, profile

    out = fn(inputs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        grads = torch.autograd.grad(out, inputs, grad)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::copy_"), grads


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("k", [10, 130])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_darts_node_channel_slice_gradient_backward_copies_nothing_on_cuda(per_sample, k, memory_format):
    """The CUDA backward reads a node's gradient (a channel slice of its cell's concatenation: sample stride
    4*C*H*W, inner C*H*W) and the xs in place: no aten::copy_ (k = 130: the device pointer/stride table)."""
    xs = [torch.randn(4, 8, 6, 6, device="cuda").contiguous(memory_format=memory_format).requires_grad_()
          for _ in range(k)]
    w = torch.randn((4, k) if per_sample else (k,), device="cuda").softmax(-1).requires_grad_()
    others = torch.randn(4, 24, 6, 6, device="cuda").contiguous(memory_format=memory_format)

    def cell(inputs):
        node = ops.weighted_sum(inputs[:k], inputs[k])
        return torch.cat([others[:, :8], node, others[:, 8:]], dim=1)

    g = torch.randn(4, 32, 6, 6, device="cuda").contiguous(memory_format=memory_format)
    copies, grads = _copies_in_backward(cell, xs + [w], g)
    assert copies == 0
    gs = g[:, 8:16]
    wd = w.detach()
    for i in range(k):
        wi = wd[:, i].view(4, 1, 1, 1) if per_sample else wd[i]
        torch.testing.assert_close(grads[i], wi * gs)
    if per_sample:
        want = torch.stack([(gs * x.detach()).sum(dim=(1, 2, 3)) for x in xs], dim=1)
    else:
        want = torch.stack([(gs * x.detach()).sum() for x in xs])
    torch.testing.assert_close(grads[k], want, rtol=1e-4, atol=1e-4)


def test_weighted_sum_forward_reads_strided_samples_on_cuda():
    """Forward on channel slices (sample stride > inner): same result as on dense copies, no copy."""
    big = [torch.randn(5, 32, 7, 7, device="cuda") for _ in range(3)]
    xs = [b[:, 8:16] for b in big]
    w = torch.randn(3, device="cuda")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = ops.weighted_sum(xs, w)
    assert sum(e.count for e in prof.key_averages() if e.key == "aten::copy_") == 0
    torch.testing.assert_close(out, ops.weighted_sum([x.contiguous() for x in xs], w))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c, groups", [(32, 4), (16, 2), (24, 4)])
def test_partial_channel_mix_channels_last_parity(dtype, c, groups):
    """Channels-last: the channel-pack path (cg a multiple of the pack width) and its fallback."""
    x = make((3, c, 5, 6), dtype, "channels_last", requires_grad=True)
    ys = [make((3, c // groups, 5, 6), dtype, "channels_last", requires_grad=True) for _ in range(4)]
    w = torch.randn(3, 4, requires_grad=True)
    _parity(lambda t: ops.partial_channel_mix(t[:4], t[4], t[5], groups), ys + [w, x], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [16, 12])
def test_grouped_batch_norm_channels_last_parity(dtype, c):
    x = make((12, c, 5, 6), dtype, "channels_last", requires_grad=True)
    groups = torch.randint(0, 3, (12,))
    w = torch.randn(c, requires_grad=True)
    b = torch.randn(c, requires_grad=True)
    _parity(lambda t: ops.grouped_batch_norm(t[0], groups, 3, t[1], t[2]), [x, w, b], dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_grouped_batch_norm_device_and_host_groups_agree(layout):
    """Host groups (index built on the host) and device groups (stable sort on the device) give the same
    group index, hence bit-identical statistics and gradients; an empty group included."""
    x = make((40, 8, 6, 5), torch.float32, layout, requires_grad=True)
    groups = torch.randint(0, 4, (40,))
    groups[groups == 2] = 0  # group 2 gets no sample
    w = torch.randn(8, device="cuda", requires_grad=True)
    xc = x.detach().cuda().requires_grad_()
    outs = []
    for gr in (groups, groups.cuda()):
        out = ops.grouped_batch_norm(xc, gr, 4, w, None)
        g = torch.ones_like(out)
        outs.append((out.detach(),) + torch.autograd.grad(out, [xc, w], g))
    for a, b in zip(*outs):
        assert torch.equal(a, b)
