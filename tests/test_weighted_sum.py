import math

import pytest
import torch

from pynas import ops
from helpers import DTYPES, LAYOUTS, assert_close, lesser_cpu_capabilities, make, run_tests_with_cpu_capability

SHAPE = (4, 6, 5, 7)


def _grads(out, inputs, seed_grad):
    return torch.autograd.grad(out, inputs, seed_grad, allow_unused=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 7, 35, 64])
@pytest.mark.parametrize("per_sample", [False, True])
def test_matches_reference(dtype, k, per_sample):
    xs = [make(SHAPE, dtype, requires_grad=True) for _ in range(k)]
    w = torch.randn((SHAPE[0], k) if per_sample else (k,), requires_grad=True)
    out = ops.weighted_sum(xs, w)
    ref = ops.weighted_sum_reference(xs, w)
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out, ref, dtype)
    g = torch.randn_like(out)
    for a, b in zip(_grads(out, xs + [w], g), _grads(ref, xs + [w], g)):
        assert_close(a, b, dtype, grad=True)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("per_sample", [False, True])
def test_layouts(layout, per_sample):
    xs = [make(SHAPE, torch.float32, layout, requires_grad=True) for _ in range(5)]
    # Mixed layouts in one call too.
    xs.append(make(SHAPE, torch.float32, "contiguous", requires_grad=True))
    w = torch.randn((SHAPE[0], 6) if per_sample else (6,), requires_grad=True)
    out = ops.weighted_sum(xs, w)
    ref = ops.weighted_sum_reference(xs, w)
    assert_close(out, ref, torch.float32)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(out)
    for a, b in zip(_grads(out, xs + [w], g), _grads(ref, xs + [w], g)):
        assert_close(a, b, torch.float32, grad=True)


def test_permuted_batch_dim_with_per_sample_weights():
    # Dense but with the batch dimension not outermost: must not mix samples up.
    xs = [torch.randn(5, 4, 3).permute(1, 0, 2) for _ in range(3)]
    w = torch.randn(4, 3)
    assert_close(ops.weighted_sum(xs, w), ops.weighted_sum_reference(xs, w), torch.float32)


def test_same_tensor_twice():
    x = torch.randn(SHAPE, requires_grad=True)
    y = torch.randn(SHAPE, requires_grad=True)
    w = torch.randn(3, requires_grad=True)
    out = ops.weighted_sum([x, y, x], w)
    assert_close(out, w[0] * x + w[1] * y + w[2] * x, torch.float32)
    out.sum().backward()
    assert_close(x.grad, (w[0] + w[2]).detach().expand_as(x), torch.float32)


def test_some_inputs_without_grad():
    xs = [torch.randn(SHAPE, requires_grad=(k % 2 == 0)) for k in range(4)]
    w = torch.randn(4)
    ops.weighted_sum(xs, w).sum().backward()
    for k, x in enumerate(xs):
        if k % 2 == 0:
            assert_close(x.grad, w[k].expand_as(x), torch.float32)
        else:
            assert x.grad is None


@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0), (0,)])
def test_zero_size(shape):
    xs = [torch.randn(shape, requires_grad=True) for _ in range(3)]
    w = torch.randn(3, requires_grad=True)
    out = ops.weighted_sum(xs, w)
    assert out.shape == torch.Size(shape)
    out.sum().backward()
    assert w.grad is not None and torch.equal(w.grad, torch.zeros(3))
    assert xs[0].grad.shape == torch.Size(shape)


def test_scalar_inputs():
    xs = [torch.tensor(2.0), torch.tensor(3.0)]
    assert ops.weighted_sum(xs, torch.tensor([0.5, 2.0])).item() == pytest.approx(7.0)


def test_gradcheck():
    xs = [torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    wn = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: ops.weighted_sum(list(a[:-1]), a[-1]), (*xs, w))
    assert torch.autograd.gradcheck(lambda *a: ops.weighted_sum(list(a[:-1]), a[-1]), (*xs, wn))


def test_float32_weights_with_half_inputs():
    # Mixed precision: alphas stay float32 while activations are half.
    xs = [make(SHAPE, torch.float16, requires_grad=True) for _ in range(3)]
    w = torch.randn(3, requires_grad=True)
    out = ops.weighted_sum(xs, w)
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert w.grad.dtype == torch.float32


def test_deterministic_weight_gradient():
    xs = [torch.randn(8, 16, 32, 32) for _ in range(4)]
    w = torch.randn(4, requires_grad=True)
    g = torch.randn(8, 16, 32, 32)
    first = torch.autograd.grad(ops.weighted_sum(xs, w), w, g)[0]
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            again = torch.autograd.grad(ops.weighted_sum(xs, w), w, g)[0]
        finally:
            torch.set_num_threads(old)
        assert torch.equal(first, again)


class TestBadInput:
    def test_empty_list(self):
        with pytest.raises(ValueError, match="xs must hold at least one tensor"):
            ops.weighted_sum([], torch.randn(0))

    def test_not_a_list(self):
        with pytest.raises(TypeError, match="xs must be a list"):
            ops.weighted_sum(torch.randn(3, 4), torch.randn(3))

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match=r"xs\[1\] has shape"):
            ops.weighted_sum([torch.randn(2, 3), torch.randn(3, 2)], torch.randn(2))

    def test_dtype_mismatch(self):
        with pytest.raises(TypeError, match=r"xs\[1\] has dtype"):
            ops.weighted_sum([torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64)], torch.randn(2))

    def test_integer_inputs(self):
        with pytest.raises(TypeError, match=r"xs\[0\] must be float64, float32, float16 or bfloat16"):
            ops.weighted_sum([torch.ones(2, dtype=torch.int64)], torch.randn(1))

    def test_wrong_weight_count(self):
        with pytest.raises(ValueError, match=r"weights must have shape \[K\] or \[N, K\] with K = 3"):
            ops.weighted_sum([torch.randn(2, 3)] * 3, torch.randn(4))

    def test_wrong_per_sample_weights(self):
        with pytest.raises(ValueError, match="N = 2 and K = 3"):
            ops.weighted_sum([torch.randn(2, 3)] * 3, torch.randn(5, 3))

    def test_integer_weights(self):
        with pytest.raises(TypeError, match="weights must be a floating tensor"):
            ops.weighted_sum([torch.randn(2, 3)] * 3, torch.ones(3, dtype=torch.int64))

    def test_weights_not_a_tensor(self):
        with pytest.raises(TypeError, match="weights must be a tensor"):
            ops.weighted_sum([torch.randn(2, 3)] * 3, [0.1, 0.2, 0.7])


@pytest.mark.parametrize("per_sample", [False, True])
def test_double_backward(per_sample):
    xs = [torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    w = torch.randn((2, 3) if per_sample else (3,), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda *a: ops.weighted_sum(list(a[:-1]), a[-1]), (*xs, w))


def test_other_ops_refuse_double_backward_clearly():
    x = torch.randn(2, 4, 3, requires_grad=True)
    ys = [torch.randn(2, 2, 3, requires_grad=True)]
    out = ops.partial_channel_mix(ys, torch.ones(1, requires_grad=True), x, 2)
    with pytest.raises(NotImplementedError, match="no double backward"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


# -- the vectorized CPU kernels: tails, groups of inputs, alignment, thread counts ---------------------------
def _misaligned(shape, dtype, requires_grad=False):
    """A contiguous tensor that starts one element into its storage: not aligned to any vector."""
    flat = torch.randn(math.prod(shape) + 1, dtype=torch.float64).to(dtype)
    return flat[1:].view(shape).requires_grad_(requires_grad)


def _check_grads(xs, w, dtype, grad=None):
    out = ops.weighted_sum(xs, w)
    ref = ops.weighted_sum_reference(xs, w)
    assert_close(out, ref, dtype)
    g = torch.randn_like(ref) if grad is None else grad
    for a, b in zip(_grads(out, xs + [w], g), _grads(ref, xs + [w], g)):
        assert_close(a, b, dtype, grad=True)


# Sizes that are no multiple of any vector width, one over a work item (16384 elements).
ODD_SHAPES = [(1,), (3, 17), (2, 3, 37, 5), (2, 16385)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [3, 9, 20])  # one group of inputs; two and three (through the L1 tile)
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_odd_sizes_and_input_groups(dtype, k, per_sample, shape):
    xs = [make(shape, dtype, requires_grad=True) for _ in range(k)]
    w = torch.randn((shape[0], k) if per_sample else (k,), requires_grad=True)
    _check_grads(xs, w, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [2, 11])
def test_misaligned_inputs_and_gradient(dtype, k):
    shape = (3, 5, 7, 9)
    xs = [_misaligned(shape, dtype, requires_grad=True) for _ in range(k)]
    w = torch.randn(k, requires_grad=True)
    _check_grads(xs, w, dtype, grad=_misaligned(shape, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_strided_inputs_and_gradient(dtype):
    # Channel slices of a concatenation: each sample block has its own stride, read in place.
    shape = (4, 3, 5, 7)
    bigs = [make((4, 8, 5, 7), dtype) for _ in range(10)]
    xs = [b[:, 1:4].detach().requires_grad_() for b in bigs]
    grad = make((4, 6, 5, 7), dtype)[:, 2:5]
    for per_sample in (False, True):
        w = torch.randn((4, 10) if per_sample else (10,), requires_grad=True)
        _check_grads(xs, w, dtype, grad=grad)
    assert xs[0].shape == shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [4, 19])
@pytest.mark.parametrize("per_sample", [False, True])
def test_weight_gradient_independent_of_threads(dtype, k, per_sample):
    xs = [torch.randn(6, 8, 33, 31).to(dtype) for _ in range(k)]
    w = torch.randn((6, k) if per_sample else (k,), requires_grad=True)
    g = torch.randn(6, 8, 33, 31).to(dtype)
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = ops.weighted_sum(xs, w)
            results.append((out, torch.autograd.grad(out, w, g)[0]))
    finally:
        torch.set_num_threads(old)
    for out, gw in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(gw, results[0][1])


@pytest.mark.slow
@pytest.mark.parametrize("capability", lesser_cpu_capabilities())
def test_lesser_cpu_kernel_builds(capability):
    run_tests_with_cpu_capability(__file__, capability, "not lesser_cpu_kernel_builds and not Bad")
