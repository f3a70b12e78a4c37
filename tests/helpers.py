"""Shared test helpers: fresh inputs in several layouts, tolerances (op tests); model counts and
supernet-versus-network checks (single-path space tests)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

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


# -- single-path spaces -------------------------------------------------------------------------------
def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def hook_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of convs and linear weights, counted from the shapes seen in a forward pass."""
    total = []

    def count(m, inputs, out):
        if isinstance(m, nn.Conv2d):
            total.append(out[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
        else:
            total.append(m.in_features * m.out_features)

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return sum(total)


def check_extracted_networks(space, size: int, extra_paths: Sequence[Sequence[int]]) -> nn.Module:
    """Each extracted network (3 sampled paths and ``extra_paths``) computes its path of ``space``'s float64
    supernet, in train and eval mode, after the running statistics moved; returns the supernet."""
    supernet = space.build_supernet().double().train()
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the running statistics away from their initial values
        for path in space.sample(6, generator=gen):
            supernet(x, path)
    for path in space.sample(3, generator=gen).tolist() + [list(p) for p in extra_paths]:
        net = space.extract_network(supernet, path)
        assert next(net.parameters()).dtype == torch.float64
        torch.testing.assert_close(net.train()(x), supernet.train()(x, path), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(net.eval()(x), supernet.eval()(x, path), rtol=1e-12, atol=1e-12)
    return supernet


def check_batched_rows(space, size: int, extra_paths: Sequence[Sequence[int]]) -> None:
    """Rows routed to several paths in one pass (``path_batch``) equal each path alone; differentiable."""
    from pynas.supernets.path_batch import path_batch

    supernet = space.build_supernet().double().train()
    n, x = 3, torch.randn(3, 3, size, size, dtype=torch.float64)
    paths = torch.cat([space.sample(4, generator=torch.Generator().manual_seed(1)), torch.tensor(extra_paths)])
    num_paths = paths.shape[0]
    row_paths = torch.arange(num_paths).repeat_interleave(n)
    with path_batch(row_paths, num_paths):
        out = supernet(x.repeat(num_paths, 1, 1, 1), paths[row_paths])
    alone = torch.cat([supernet(x, path) for path in paths])
    torch.testing.assert_close(out, alone, rtol=1e-10, atol=1e-10)
    out.sum().backward()  # routed rows are differentiable


# -- CPU kernel builds ----------------------------------------------------------------------------------
# The CPU kernels are built for several instruction sets and follow torch's choice, which the environment
# variable ATEN_CPU_CAPABILITY overrides: the tests run in process with the best build this CPU allows and,
# through run_tests_with_cpu_capability, again with each lesser one.
_CPU_CAPABILITIES = ["default", "avx2"]


def lesser_cpu_capabilities() -> list[str]:
    """The CPU kernel builds below the one this process runs (none off x86-64)."""
    import pynas

    best = pynas.build_info()["cpu_kernels"].lower()
    return _CPU_CAPABILITIES[:_CPU_CAPABILITIES.index(best)] if best in _CPU_CAPABILITIES else []


def run_tests_with_cpu_capability(test_file: str, capability: str, select: str) -> None:
    """Runs the tests of ``test_file`` that ``select`` (a pytest -k expression) picks in a fresh interpreter
    whose CPU kernels are the ``capability`` build, and fails with their output if any fails."""
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability,
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    check = subprocess.run([sys.executable, "-c", "import pynas; print(pynas.build_info()['cpu_kernels'])"],
                           env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert check.stdout.strip() == capability.upper(), check.stdout + check.stderr
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test_file,
                          "-k", select], env=env, cwd=root, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, f"with ATEN_CPU_CAPABILITY={capability}:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
