"""Ops of several edges computed stacked equal the same ops run edge by edge (values, gradients, BN buffers)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pynas.spaces.darts_ops import PRIMITIVES, search_op
from pynas.supernets.edge_batch import batch_norm_group, batchable, needs_relu, run_op_group

COMPUTED = [name for name in PRIMITIVES if name != "none"]


def _randomize(modules, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            for b in m.buffers():
                if b.is_floating_point():
                    b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)


def _check_same(stacked_mods, single_mods, x, train: bool):
    for m in stacked_mods + single_mods:
        m.train(train)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    relu = torch.relu(xa) if needs_relu(stacked_mods[0]) else None
    outs = run_op_group(stacked_mods, xa, relu)
    refs = [m(xb) for m in single_mods]
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # Different upstream gradients per edge, so a mixed-up edge order shows.
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(r.shape, generator=g, dtype=r.dtype) for r in refs]
    torch.autograd.backward(outs, grads)
    torch.autograd.backward(refs, grads)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-10)
    for a, b in zip(stacked_mods, single_mods):
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-10, atol=1e-10, msg=name)
        for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
            torch.testing.assert_close(ba, bb, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("name", COMPUTED)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("edges", [1, 3])
@pytest.mark.parametrize("train", [True, False])
def test_stacked_op_equals_edge_by_edge(name, stride, edges, train):
    mods = [search_op(name, 4, stride).double() for _ in range(edges)]
    _randomize(mods, seed=edges * 10 + stride)
    if "pool" in name:
        # A pool's affine-free BN sees the same input on every edge, so in a supernet the edges'
        # running statistics never differ; the stacked run relies on that.
        for m in mods[1:]:
            m.load_state_dict(mods[0].state_dict())
    single = copy.deepcopy(mods)
    assert batchable(mods[0])
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    _check_same(mods, single, x, train)


def test_pools_are_computed_once_and_their_bns_kept_in_step():
    mods = [search_op("max_pool_3x3", 4, 1).double() for _ in range(3)]
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    outs = run_op_group(mods, x, None)
    assert outs[0] is outs[1] is outs[2]
    for m in mods[1:]:
        torch.testing.assert_close(m[1].running_mean, mods[0][1].running_mean)
        assert int(m[1].num_batches_tracked) == 1


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_group_matches_each_module(momentum, affine):
    bns = [nn.BatchNorm2d(3, momentum=momentum, affine=affine).double() for _ in range(4)]
    _randomize(bns, seed=1)
    single = copy.deepcopy(bns)
    for step in range(3):  # several steps: the cumulative average depends on the counter
        ys = [torch.randn(5, 3, 4, 4, dtype=torch.float64) for _ in bns]
        out = batch_norm_group(torch.cat(ys, 1), bns)
        ref = torch.cat([bn(y) for bn, y in zip(single, ys)], 1)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(bns, single):
        for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
            torch.testing.assert_close(ba, bb, rtol=1e-10, atol=1e-10, msg=name)
    for bn in bns + single:
        bn.eval()
    y = torch.randn(2, 12, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(batch_norm_group(y, bns),
                               torch.cat([bn(part) for bn, part in zip(single, y.split(3, 1))], 1))


def test_unknown_ops_run_one_by_one():
    mods = [nn.Conv2d(4, 4, 3, padding=1) for _ in range(2)]
    assert not batchable(mods[0])
    x = torch.randn(1, 4, 5, 5)
    outs = run_op_group(mods, x, None)
    for out, m in zip(outs, mods):
        torch.testing.assert_close(out, m(x))
