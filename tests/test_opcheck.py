"""torch.library.opcheck on every op: schema, fake kernel, autograd registration, AOT dispatch."""
import pytest
import torch

import pynas  # noqa: F401

P = torch.ops.pynas


def _rg(*shape, dtype=torch.float32, grad=True):
    return torch.randn(*shape, dtype=dtype, requires_grad=grad)


def _cases():
    xs = [_rg(3, 4, 5, 5) for _ in range(5)]
    yield "weighted_sum", P.weighted_sum.default, (xs, _rg(5))
    yield "weighted_sum_per_sample", P.weighted_sum.default, (xs, _rg(3, 5))
    cl = [x.detach().contiguous(memory_format=torch.channels_last).requires_grad_() for x in xs]
    yield "weighted_sum_channels_last", P.weighted_sum.default, (cl, _rg(5))
    # A DARTS node's gradient: a channel slice of the cell's concatenation, read in place.
    grad_slice = torch.randn(3, 12, 5, 5)[:, 4:8]
    yield "weighted_sum_backward_channel_slice", P._weighted_sum_backward.default, (
        grad_slice, [x.detach() for x in xs], torch.randn(5), [True] * 5, True)
    yield "weighted_sum_channel_slice", P.weighted_sum.default, (
        [torch.randn(3, 12, 5, 5)[:, 4:8].requires_grad_() for _ in range(5)], _rg(3, 5))
    yield "weighted_sum_backward", P._weighted_sum_backward.default, (
        torch.randn(3, 4, 5, 5), [x.detach() for x in xs], torch.randn(5), [True, False, True, True, False], True)
    ys = [_rg(3, 2, 5, 5) for _ in range(4)]
    yield "partial_channel_mix", P.partial_channel_mix.default, (ys, _rg(4), _rg(3, 8, 5, 5), 4)
    yield "partial_channel_mix_backward", P._partial_channel_mix_backward.default, (
        torch.randn(3, 8, 5, 5), [y.detach() for y in ys], torch.randn(4), 4, [True] * 4, True, True)
    choices = torch.tensor([2, 0, 1, 2, 2, 0])
    yield "path_combine", P.path_combine.default, (
        [_rg(2, 3, 4), _rg(1, 3, 4), _rg(3, 3, 4)], choices, _rg(6, 3, 4))
    yield "grouped_batch_norm", P.grouped_batch_norm.default, (
        _rg(6, 3, 4, 4), torch.tensor([0, 1, 0, 1, 2, 2]), 3, _rg(3), _rg(3), None, None, 1e-5)
    yield "grouped_batch_norm_eval", P.grouped_batch_norm.default, (
        _rg(6, 3, 4, 4), torch.tensor([0, 1, 0, 1, 2, 2]), 3, _rg(3), _rg(3), torch.randn(3, 3),
        torch.rand(3, 3) + 0.5, 1e-5)
    # Dense 5-D with a size-1 dim between two dims that do not nest: not mergeable (copied).
    unmerged = torch.randn(6, 3, 4, 5).transpose(2, 3).unsqueeze(3).requires_grad_()
    yield "grouped_batch_norm_unmergeable", P.grouped_batch_norm.default, (
        unmerged, torch.tensor([0, 1, 0, 1, 2, 2]), 3, _rg(3), _rg(3), None, None, 1e-5)
    x = torch.randn(6, 3, 4, 4)
    yield "grouped_batch_norm_backward", P._grouped_batch_norm_backward.default, (
        torch.randn(6, 3, 4, 4), x, torch.tensor([0, 1, 0, 1, 2, 2]), 3, torch.randn(3), torch.randn(3, 3),
        torch.rand(3, 3), True, [True, True, True])


CASES = list(_cases())


@pytest.mark.parametrize("name,op,args", CASES, ids=[c[0] for c in CASES])
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


def test_opcheck_path_dispatch():
    # Data-dependent output sizes: the fake kernel uses unbacked sizes, which the
    # dynamic AOT-dispatch check cannot compare; the other checks still apply.
    args = (_rg(6, 3, 4), torch.tensor([2, 0, 1, 2, 2, 0]), 3)
    torch.library.opcheck(P.path_dispatch.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
