import math

import pytest
import torch

from pynas import ops
from helpers import DTYPES, LAYOUTS, assert_close, lesser_cpu_capabilities, make, run_tests_with_cpu_capability


def _case(n=3, c=8, hw=(5, 6), groups=4, k=4, dtype=torch.float32, layout="contiguous", per_sample=False):
    x = make((n, c) + hw, dtype, layout, requires_grad=True)
    ys = [make((n, c // groups) + hw, dtype, layout, requires_grad=True) for _ in range(k)]
    w = torch.randn((n, k) if per_sample else (k,), requires_grad=True)
    return ys, w, x


def _check(ys, w, x, groups, dtype):
    out = ops.partial_channel_mix(ys, w, x, groups)
    ref = ops.partial_channel_mix_reference(ys, w, x, groups)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close(out, ref, dtype)
    g = torch.randn_like(out)
    inputs = ys + [w, x]
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        assert_close(a, b, dtype, grad=True)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("per_sample", [False, True])
def test_matches_reference(dtype, groups, per_sample):
    _check(*_case(groups=groups, dtype=dtype, per_sample=per_sample), groups, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(layout):
    out = _check(*_case(layout=layout, k=7), 4, torch.float32)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_groups_equal_channels():
    _check(*_case(c=8, groups=8, k=3), 8, torch.float32)


def test_three_dim_input():
    x = torch.randn(2, 6, 5, requires_grad=True)
    ys = [torch.randn(2, 2, 5, requires_grad=True) for _ in range(2)]
    _check(ys, torch.randn(2, requires_grad=True), x, 3, torch.float32)


def test_zero_batch():
    ys, w, x = _case(n=0)
    out = ops.partial_channel_mix(ys, w, x, 4)
    assert out.shape == x.shape
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


def test_bypassed_channels_of_x_get_no_gradient_from_mix():
    ys, w, x = _case()
    ops.partial_channel_mix(ys, w, x, 4).sum().backward()
    # x[:, :C/groups] reaches the output only through the candidate ops (ys).
    assert torch.equal(x.grad[:, :2], torch.zeros_like(x.grad[:, :2]))
    assert torch.equal(x.grad[:, 2:], torch.ones_like(x.grad[:, 2:]))


def test_gradcheck():
    ys, w, x = _case(n=2, c=4, hw=(2, 3), groups=2, k=3, dtype=torch.float64)
    w = w.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: ops.partial_channel_mix(list(a[:3]), a[3], a[4], 2), (*ys, w, x))
    wn = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: ops.partial_channel_mix(list(a[:3]), a[3], a[4], 2), (*ys, wn, x))


class TestBadInput:
    def test_groups_do_not_divide(self):
        ys, w, x = _case(c=8)
        with pytest.raises(ValueError, match="which groups = 3 does not divide"):
            ops.partial_channel_mix([y[:, :2] for y in ys], w, x, 3)

    def test_groups_not_positive(self):
        ys, w, x = _case()
        with pytest.raises(ValueError, match="groups must be at least 1"):
            ops.partial_channel_mix(ys, w, x, 0)

    def test_groups_not_int(self):
        ys, w, x = _case()
        with pytest.raises(TypeError, match="groups must be an int"):
            ops.partial_channel_mix(ys, w, x, 4.0)

    def test_ys_wrong_channels(self):
        ys, w, x = _case(groups=4)
        with pytest.raises(ValueError, match=r"ys must have shape \[3, 4, 5, 6\].*got \[3, 2, 5, 6\]"):
            ops.partial_channel_mix(ys, w, x, 2)

    def test_ys_dtype(self):
        ys, w, x = _case()
        with pytest.raises(TypeError, match="but x has"):
            ops.partial_channel_mix([y.double() for y in ys], w, x, 4)

    def test_x_without_channels(self):
        ys, w, _ = _case()
        with pytest.raises(ValueError, match=r"x must have shape \[N, C, \*\]"):
            ops.partial_channel_mix(ys, w, torch.randn(3), 4)

    def test_weights(self):
        ys, _, x = _case(k=4)
        with pytest.raises(ValueError, match="K = 4"):
            ops.partial_channel_mix(ys, torch.randn(5), x, 4)


# -- the vectorized CPU kernels: contiguous planes and channels-last rows -----------------------------------
def _channels_last(t):
    fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
    return t.detach().contiguous(memory_format=fmt).requires_grad_()


# (groups, channels): the shuffle of 2, 4 and 8 groups is vectorized, others go element by element; the mixed
# channels C / groups are below, at and past whole vectors (up to 32 lanes).
GROUPS_CHANNELS = [(1, 5), (2, 38), (4, 20), (4, 128), (4, 148), (8, 24), (3, 21)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups, c", GROUPS_CHANNELS)
@pytest.mark.parametrize("per_sample", [False, True])
def test_channels_last_kernel(dtype, groups, c, per_sample):
    ys, w, x = _case(n=3, c=c, hw=(3, 5), groups=groups, k=3, dtype=dtype, layout="channels_last",
                     per_sample=per_sample)
    out = _check(ys, w, x, groups, dtype)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad(ops.partial_channel_mix(ys, w, x, groups), ys + [x], torch.randn_like(out))
    assert all(g.is_contiguous(memory_format=torch.channels_last) for g in grads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups, c", [(4, 20), (4, 148), (3, 21)])
def test_planes_kernel_odd_sizes(dtype, groups, c):
    _check(*_case(n=2, c=c, hw=(7, 5), groups=groups, k=9, dtype=dtype), groups, dtype)


def test_channels_last_3d_and_one_pixel():
    ys, w, x = _case(n=2, c=32, hw=(2, 3, 5), groups=4, k=2)
    ys, x = [_channels_last(y) for y in ys], _channels_last(x)
    out = _check(ys, w, x, 4, torch.float32)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    ys, w, x = _case(n=4, c=64, hw=(1, 1), groups=4, k=3, layout="channels_last")
    _check(ys, w, x, 4, torch.float32)


def test_mixed_layouts():
    # x channels-last, ys contiguous: the strided loop, same results.
    ys, w, x = _case(c=16, k=3)
    _check(ys, w, _channels_last(x), 4, torch.float32)
    _check([_channels_last(y) for y in ys], w, x, 4, torch.float32)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_misaligned_inputs(layout):
    def misaligned(t):
        flat = torch.empty(t.numel() + 1, dtype=t.dtype)
        out = flat[1:].view(t.shape)
        if layout == "channels_last":
            out = flat[1:].view(t.shape[0], *t.shape[2:], t.shape[1]).permute(0, 3, 1, 2)
        return out.copy_(t).detach().requires_grad_()

    ys, w, x = _case(c=36, k=5, layout=layout)
    _check([misaligned(y) for y in ys], w, misaligned(x), 4, torch.float32)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_weight_gradient_independent_of_threads(layout, per_sample):
    ys, w, x = _case(n=5, c=64, hw=(31, 33), k=4, layout=layout, per_sample=per_sample)
    g = torch.randn_like(x)
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = ops.partial_channel_mix(ys, w, x, 4)
            results.append((out, *torch.autograd.grad(out, ys + [w, x], g)))
    finally:
        torch.set_num_threads(old)
    for r in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(r, results[0]))


@pytest.mark.slow
@pytest.mark.parametrize("capability", lesser_cpu_capabilities())
def test_lesser_cpu_kernel_builds(capability):
    run_tests_with_cpu_capability(__file__, capability, "not lesser_cpu_kernel_builds and not Bad")
