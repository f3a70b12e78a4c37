import pytest
import torch

from pynas import ops
from helpers import DTYPES, LAYOUTS, lesser_cpu_capabilities, make, run_tests_with_cpu_capability


@pytest.mark.parametrize("dtype", DTYPES + [torch.int64])
@pytest.mark.parametrize("num_choices", [1, 3, 7])
def test_dispatch_matches_reference(dtype, num_choices):
    x = torch.randn(17, 3, 4, 5).to(dtype)
    choices = torch.randint(0, num_choices, (17,))
    outs = ops.path_dispatch(x, choices, num_choices)
    refs = ops.path_dispatch_reference(x, choices, num_choices)
    assert len(outs) == num_choices
    for o, r in zip(outs, refs):
        assert o.dtype == dtype
        assert torch.equal(o, r)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dispatch_layouts(layout):
    x = make((9, 4, 3, 5), torch.float32, layout)
    choices = torch.randint(0, 3, (9,))
    for o, r in zip(ops.path_dispatch(x, choices, 3), ops.path_dispatch_reference(x, choices, 3)):
        assert torch.equal(o, r)
        if layout == "channels_last" and o.shape[0] > 0:
            assert o.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_combine_inverts_dispatch(dtype, with_residual):
    x = torch.randn(23, 6, 2).to(dtype)
    choices = torch.randint(0, 4, (23,), dtype=torch.int32)
    buckets = ops.path_dispatch(x, choices, 4)
    residual = torch.randn_like(x) if with_residual else None
    out = ops.path_combine(buckets, choices, residual)
    ref = ops.path_combine_reference(buckets, choices, residual)
    assert torch.equal(out, ref)
    if not with_residual:
        assert torch.equal(out, x)


def test_combine_with_changed_inner_shape():
    # Ops of one layer may change channels and resolution; rows still line up.
    choices = torch.tensor([2, 0, 2, 1, 0])
    ys = [torch.randn(2, 8, 3), torch.randn(1, 8, 3), torch.randn(2, 8, 3)]
    assert torch.equal(ops.path_combine(ys, choices), ops.path_combine_reference(ys, choices))


def test_empty_buckets_and_zero_rows():
    x = torch.randn(4, 3)
    outs = ops.path_dispatch(x, torch.zeros(4, dtype=torch.long), 3)
    assert [o.shape[0] for o in outs] == [4, 0, 0]
    empty = ops.path_dispatch(torch.randn(0, 3), torch.zeros(0, dtype=torch.long), 2)
    assert [tuple(o.shape) for o in empty] == [(0, 3), (0, 3)]
    assert ops.path_combine(empty, torch.zeros(0, dtype=torch.long)).shape == (0, 3)


def test_gradients_flow_through_both():
    x = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    residual = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    choices = torch.randint(0, 3, (11,))
    scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)

    def f(x, residual):
        buckets = ops.path_dispatch(x, choices, 3)
        return ops.path_combine([b * scale[k] for k, b in enumerate(buckets)], choices, residual)

    assert torch.autograd.gradcheck(f, (x, residual))
    f(x, residual).sum().backward()
    assert torch.equal(x.grad, scale[choices].unsqueeze(1).expand(11, 5))


def test_unused_bucket_gets_zero_gradient():
    x = torch.randn(6, 2, requires_grad=True)
    choices = torch.tensor([0, 1, 0, 1, 1, 0])
    a, b = ops.path_dispatch(x, choices, 2)
    a.sum().backward()  # bucket 1 never used
    assert torch.equal(x.grad, (choices == 0).float().unsqueeze(1).expand(6, 2))


class TestBadInput:
    def test_choice_out_of_range(self):
        with pytest.raises(IndexError, match=r"choices must lie in \[0, num_choices = 3\)"):
            ops.path_dispatch(torch.randn(4, 2), torch.tensor([0, 1, 3, 2]), 3)

    def test_negative_choice(self):
        with pytest.raises(IndexError, match="got values in \\[-1, 1\\]"):
            ops.path_dispatch(torch.randn(3, 2), torch.tensor([0, -1, 1]), 3)

    def test_wrong_length(self):
        with pytest.raises(ValueError, match="choices has 3 entries but the batch has 4 samples"):
            ops.path_dispatch(torch.randn(4, 2), torch.tensor([0, 1, 1]), 3)

    def test_float_choices(self):
        with pytest.raises(TypeError, match="choices must be an integer tensor"):
            ops.path_dispatch(torch.randn(2, 2), torch.tensor([0.0, 1.0]), 2)

    def test_num_choices(self):
        with pytest.raises(ValueError, match="num_choices must be at least 1"):
            ops.path_dispatch(torch.randn(2, 2), torch.tensor([0, 0]), 0)

    def test_scalar_x(self):
        with pytest.raises(ValueError, match="x must have a batch dimension"):
            ops.path_dispatch(torch.tensor(1.0), torch.tensor([0]), 1)

    def test_combine_bucket_size(self):
        with pytest.raises(ValueError, match=r"ys\[1\] has 1 rows but choices select 1 for 2 samples"):
            ops.path_combine([torch.randn(1, 2), torch.randn(1, 2)], torch.tensor([0, 1, 1]))

    def test_combine_inner_shape(self):
        with pytest.raises(ValueError, match=r"ys\[1\] has shape"):
            ops.path_combine([torch.randn(1, 2), torch.randn(1, 3)], torch.tensor([0, 1]))

    def test_combine_choice_out_of_range(self):
        with pytest.raises(IndexError, match=r"len\(ys\) = 2"):
            ops.path_combine([torch.randn(1, 2), torch.randn(1, 2)], torch.tensor([0, 2]))

    def test_combine_residual_shape(self):
        with pytest.raises(ValueError, match="residual must have shape"):
            ops.path_combine([torch.randn(1, 2), torch.randn(1, 2)], torch.tensor([0, 1]), torch.randn(2, 3))


def test_combine_without_residual_backward():
    ys = [torch.randn(2, 3, requires_grad=True), torch.randn(1, 3, requires_grad=True)]
    choices = torch.tensor([1, 0, 0])
    ops.path_combine(ys, choices).sum().backward()
    assert torch.equal(ys[0].grad, torch.ones(2, 3)) and torch.equal(ys[1].grad, torch.ones(1, 3))


def test_strided_choices():
    # A column of a [N, L] path table is a strided view; the kernels must not read it as dense.
    table = torch.randint(0, 3, (40, 5))
    x = torch.randn(40, 4, 3, requires_grad=True)
    for layer in range(5):
        choices = table[:, layer]
        assert not choices.is_contiguous()
        outs = ops.path_dispatch(x, choices, 3)
        for o, r in zip(outs, ops.path_dispatch_reference(x, choices.contiguous(), 3)):
            assert torch.equal(o, r)
        back = ops.path_combine(outs, choices)
        assert torch.equal(back, x)
        back.sum().backward()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", [(1,), (3, 11), (5, 7, 9), (16385,)])
def test_combine_residual_odd_rows(dtype, row):
    # The vectorized residual add: rows below, at and past whole vectors, and misaligned rows.
    n = 13
    choices = torch.randint(0, 3, (n,))
    ys = [torch.randn(int((choices == k).sum()), *row).to(dtype) for k in range(3)]
    flat = torch.randn(n * torch.Size(row).numel() + 1).to(dtype)
    residual = flat[1:].view(n, *row)
    assert torch.equal(ops.path_combine(ys, choices, residual), ops.path_combine_reference(ys, choices, residual))


@pytest.mark.slow
@pytest.mark.parametrize("capability", lesser_cpu_capabilities())
def test_lesser_cpu_kernel_builds(capability):
    run_tests_with_cpu_capability(__file__, capability, "not lesser_cpu_kernel_builds and not Bad")
