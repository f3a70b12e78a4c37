import pytest
import torch

from pynas import ops
from helpers import DTYPES, LAYOUTS, assert_close, lesser_cpu_capabilities, make, run_tests_with_cpu_capability


def _case(n=12, c=5, hw=(4, 3), g=3, dtype=torch.float32, layout="contiguous"):
    x = make((n, c) + hw, dtype, layout, requires_grad=True)
    # A non-zero mean checks the numerics of the centred statistics.
    with torch.no_grad():
        x.add_(3.0)
    groups = torch.arange(n) % g
    groups = groups[torch.randperm(n)]
    weight = torch.randn(c, requires_grad=True)
    bias = torch.randn(c, requires_grad=True)
    return x, groups, weight, bias


def _check_training(x, groups, g, weight, bias, dtype, momentum=0.1):
    rm, rv = torch.randn(g, x.shape[1]), torch.rand(g, x.shape[1]) + 0.5
    rm_ref, rv_ref = rm.clone(), rv.clone()
    nbt, nbt_ref = torch.zeros(g, dtype=torch.long), torch.zeros(g, dtype=torch.long)
    out = ops.grouped_batch_norm(x, groups, g, weight, bias, rm, rv, nbt, momentum=momentum)
    ref = ops.grouped_batch_norm_reference(x, groups, g, weight, bias, rm_ref, rv_ref, nbt_ref, momentum=momentum)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close(out, ref, dtype)
    torch.testing.assert_close(rm, rm_ref, rtol=1e-3 if dtype != torch.float64 else 1e-9, atol=1e-3)
    torch.testing.assert_close(rv, rv_ref, rtol=1e-3 if dtype != torch.float64 else 1e-9, atol=1e-3)
    assert torch.equal(nbt, nbt_ref)
    grad = torch.randn_like(out)
    inputs = [t for t in (x, weight, bias) if t is not None]
    for a, b in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        assert_close(a, b, dtype, grad=True)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_matches_reference(dtype):
    x, groups, w, b = _case(dtype=dtype)
    _check_training(x, groups, 3, w, b, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(layout):
    x, groups, w, b = _case(layout=layout)
    out = _check_training(x, groups, 3, w, b, torch.float32)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_two_dim_input_and_no_affine():
    x = torch.randn(10, 4, requires_grad=True)
    groups = torch.tensor([0, 1] * 5)
    _check_training(x, groups, 2, None, None, torch.float32)


def test_cumulative_average():
    x, groups, w, b = _case()
    _check_training(x, groups, 3, w, b, torch.float32, momentum=None)


def test_cumulative_average_is_mean_of_batch_statistics():
    # SPOS recalibration: after B batches the running mean is the mean of the B batch means.
    g, c = 2, 3
    rm, rv, nbt = torch.zeros(g, c), torch.ones(g, c), torch.zeros(g, dtype=torch.long)
    batch_means = []
    for _ in range(4):
        x = torch.randn(8, c, 2, 2) * 2 + 1
        groups = torch.tensor([0] * 4 + [1] * 4)
        ops.grouped_batch_norm(x, groups, g, None, None, rm, rv, nbt, momentum=None)
        batch_means.append(torch.stack([x[:4].mean((0, 2, 3)), x[4:].mean((0, 2, 3))]))
    torch.testing.assert_close(rm, torch.stack(batch_means).mean(0))
    assert nbt.tolist() == [4, 4]


def test_absent_group_keeps_its_running_stats():
    x = torch.randn(6, 2, 3)
    rm, rv = torch.full((3, 2), 7.0), torch.full((3, 2), 9.0)
    nbt = torch.zeros(3, dtype=torch.long)
    ops.grouped_batch_norm(x, torch.tensor([0, 0, 0, 1, 1, 1]), 3, running_mean=rm, running_var=rv,
                           num_batches_tracked=nbt, momentum=None)
    assert rm[2].tolist() == [7.0, 7.0] and rv[2].tolist() == [9.0, 9.0]
    assert nbt.tolist() == [1, 1, 0]


def test_each_group_equals_plain_batch_norm():
    x = torch.randn(9, 4, 5, 5)
    groups = torch.tensor([2, 0, 1, 2, 0, 1, 2, 0, 1])
    out = ops.grouped_batch_norm(x, groups, 3)
    for g in range(3):
        rows = groups == g
        torch.testing.assert_close(out[rows], torch.nn.functional.batch_norm(x[rows], None, None, training=True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_evaluation_uses_running_stats(dtype):
    x, groups, w, b = _case(dtype=dtype)
    rm, rv = torch.randn(3, 5), torch.rand(3, 5) + 0.5
    out = ops.grouped_batch_norm(x, groups, 3, w, b, rm, rv, training=False)
    ref = ops.grouped_batch_norm_reference(x, groups, 3, w, b, rm.clone(), rv.clone(), training=False)
    assert_close(out, ref, dtype)
    grad = torch.randn_like(out)
    for a, c in zip(torch.autograd.grad(out, [x, w, b], grad), torch.autograd.grad(ref, [x, w, b], grad)):
        assert_close(a, c, dtype, grad=True)


def test_gradcheck():
    x = torch.randn(6, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    groups = torch.tensor([0, 1, 0, 1, 1, 0])
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: ops.grouped_batch_norm(x, groups, 2, w, b), (x, w, b))
    rm, rv = torch.randn(2, 3, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(
        lambda x, w, b: ops.grouped_batch_norm(x, groups, 2, w, b, rm, rv, training=False), (x, w, b)
    )


class TestBadInput:
    def test_group_out_of_range(self):
        with pytest.raises(IndexError, match=r"groups must lie in \[0, num_groups = 2\)"):
            ops.grouped_batch_norm(torch.randn(3, 2), torch.tensor([0, 2, 1]), 2)

    def test_groups_length(self):
        with pytest.raises(ValueError, match="groups has 2 entries but the batch has 3 samples"):
            ops.grouped_batch_norm(torch.randn(3, 2), torch.tensor([0, 1]), 2)

    def test_weight_shape(self):
        with pytest.raises(ValueError, match=r"weight must have shape \[C\] = \[2\]"):
            ops.grouped_batch_norm(torch.randn(3, 2), torch.tensor([0, 1, 0]), 2, torch.randn(3))

    def test_running_stats_shape(self):
        with pytest.raises(ValueError, match=r"running_mean must have shape \[num_groups, C\] = \[2, 2\]"):
            ops.grouped_batch_norm(torch.randn(3, 2), torch.tensor([0, 1, 0]), 2, running_mean=torch.zeros(2),
                                   running_var=torch.ones(2))

    def test_eval_stats_shape(self):
        with pytest.raises(ValueError, match=r"mean must have shape \[num_groups, C\]"):
            ops.grouped_batch_norm(torch.randn(3, 2), torch.tensor([0, 1, 0]), 2, running_mean=torch.zeros(2),
                                   running_var=torch.ones(2), training=False)

    def test_only_one_running_stat(self):
        with pytest.raises(ValueError, match="running_mean and running_var must be given together"):
            ops.grouped_batch_norm(torch.randn(3, 2), torch.tensor([0, 1, 0]), 2, running_mean=torch.zeros(2, 2))

    def test_cumulative_needs_counter(self):
        with pytest.raises(ValueError, match="needs num_batches_tracked"):
            ops.grouped_batch_norm(torch.randn(3, 2), torch.tensor([0, 1, 0]), 2, running_mean=torch.zeros(2, 2),
                                   running_var=torch.ones(2, 2), momentum=None)

    def test_momentum_range(self):
        with pytest.raises(ValueError, match="momentum must be in"):
            ops.grouped_batch_norm(torch.randn(3, 2), torch.tensor([0, 1, 0]), 2, momentum=1.5)

    def test_integer_x(self):
        with pytest.raises(TypeError, match="x must be float64"):
            ops.grouped_batch_norm(torch.ones(3, 2, dtype=torch.long), torch.tensor([0, 1, 0]), 2)


def test_strided_groups():
    table = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 1], [0, 0], [1, 0]])
    x = torch.randn(6, 3, 4)
    groups = table[:, 1]
    assert not groups.is_contiguous()
    out = ops.grouped_batch_norm(x, groups, 2)
    ref = ops.grouped_batch_norm_reference(x, groups.contiguous(), 2)
    torch.testing.assert_close(out, ref)


# -- the vectorized CPU kernels: contiguous planes and channels-last rows -----------------------------------
# Channels below, at and past whole vectors (up to 32 lanes); planes past a flush block (2048 elements).
SHAPES = [(5, (4, 3)), (37, (3, 5)), (64, (2, 2)), (3, (70, 61))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c, hw", SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_vector_kernels(dtype, c, hw, layout):
    x, groups, w, b = _case(n=7, c=c, hw=hw, dtype=dtype, layout=layout)
    out = _check_training(x, groups, 3, w, b, dtype)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
        again = ops.grouped_batch_norm(x, groups, 3, w, b)
        assert torch.autograd.grad(again, x, torch.randn_like(again))[0].is_contiguous(
            memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_large_mean_is_stable(layout):
    # float32 values near 1e4 with unit spread: sums of squares about zero would lose the variance.
    x = make((8, 16, 12, 12), torch.float64, layout) + 1e4
    groups = torch.arange(8) % 3
    out = ops.grouped_batch_norm(x.float(), groups, 3)
    ref = ops.grouped_batch_norm_reference(x.float().double(), groups, 3)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-3)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_misaligned_input(layout):
    x = make((6, 36, 5, 7), torch.float32, layout)
    flat = torch.empty(x.numel() + 1)
    y = flat[1:].view(6, 36, 5, 7) if layout == "contiguous" else flat[1:].view(6, 5, 7, 36).permute(0, 3, 1, 2)
    y.copy_(x)
    y.requires_grad_()
    groups = torch.tensor([0, 1, 2, 0, 1, 2])
    w, b = torch.randn(36, requires_grad=True), torch.randn(36, requires_grad=True)
    _check_training(y, groups, 3, w, b, torch.float32)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_results_independent_of_threads(layout):
    x, groups, w, b = _case(n=9, c=24, hw=(33, 31), layout=layout)
    g = torch.randn_like(x)
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = ops.grouped_batch_norm(x, groups, 3, w, b)
            results.append((out, *torch.autograd.grad(out, [x, w, b], g)))
    finally:
        torch.set_num_threads(old)
    for r in results[1:]:
        assert all(torch.equal(a, c) for a, c in zip(r, results[0]))


@pytest.mark.slow
@pytest.mark.parametrize("capability", lesser_cpu_capabilities())
def test_lesser_cpu_kernel_builds(capability):
    run_tests_with_cpu_capability(__file__, capability, "not lesser_cpu_kernel_builds and not Bad")
