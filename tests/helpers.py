"""Shared helpers for the op tests: fresh inputs in several layouts, tolerances."""
from __future__ import annotations

import torch

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}
# Gradients sum over many elements; low precisions need looser bounds.
GRAD_TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
}
LAYOUTS = ["contiguous", "channels_last", "strided"]


def make(shape, dtype, layout="contiguous", device="cpu", requires_grad=False):
    """A random tensor of `shape` in `layout`; 'strided' is a non-contiguous slice."""
    if layout == "contiguous":
        t = torch.randn(shape, dtype=torch.float64, device=device).to(dtype)
    elif layout == "channels_last":
        t = torch.randn(shape, dtype=torch.float64, device=device).to(dtype)
        t = t.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        big = torch.randn(tuple(shape[:-1]) + (shape[-1] * 2,), dtype=torch.float64, device=device).to(dtype)
        t = big[..., ::2]
    else:
        raise ValueError(layout)
    return t.requires_grad_(requires_grad)


def assert_close(a, b, dtype, grad=False):
    tol = (GRAD_TOL if grad else TOL)[dtype]
    torch.testing.assert_close(a.float() if dtype != torch.float64 else a, b.float() if dtype != torch.float64 else b,
                               **tol)
