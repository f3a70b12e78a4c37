"""Op microbenchmark: the fused pynas ops against their eager and compiled references.

    python -m bench.ops [--preset quick|cpu|gpu] [--ops weighted_sum,...] [--dtype float32,...]
                        [--results-dir bench/results] [--repeats N] [--threads N] [--no-compile]
                        [--check-targets]

Each (op, case, dtype) gets fresh random inputs shared by three implementations:
``ours`` (the pynas op), ``eager`` (its ``*_reference``) and ``compile``
(``torch.compile`` of the reference). Each is timed forward only (``fwd``,
under no_grad), forward + ``torch.autograd.grad`` (``fwd+bwd``, against fixed
random output gradients) and forward + ``.backward()`` (``fwd+backward``: the
gradients land in ``.grad``, which is None before each step as after
``zero_grad()``, so AccumulateGrad keeps the gradient it is given unless its
layout differs from the parameter's). The implementations are timed in
alternation, call by call, so a busy machine slows them alike. GB/s counts the
minimum bytes the work must move: each input read once and each output
written once; the backward adds the output gradient read, the inputs its
formulas need read, and the input gradients written. ``of copy`` is that
rate over the measured copy bandwidth of the device.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import pynas.ops as P

from . import results, timing
from .args import choices_list, parse_device_args, positive_int

OPS = ("weighted_sum", "partial_channel_mix", "path_dispatch", "path_combine", "grouped_batch_norm")
MODES = ("fwd", "fwd+bwd", "fwd+backward")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
PC_GROUPS = 4  # PC-DARTS mixes one channel in four
# Input sets per case are added until they fill this much memory (up to
# MAX_SETS), so consecutive timed calls do not find their inputs in a cache
# (server CPUs now have L3 caches of several hundred MB).
ROTATE_BYTES = 1 << 30
MAX_SETS = 32
BIG_INPUT = 16 << 20  # the bandwidth targets apply from 16 MiB per input
CPU_FRACTION = 0.70  # CPU target: of the copy bandwidth, at BIG_INPUT and above


@dataclass(frozen=True)
class Case:
    op: str
    shape: tuple[int, ...]  # of each input (weighted_sum) or of x / the combined tensor
    k: int  # inputs (weighted_sum, partial_channel_mix), choices (path ops) or groups (batch norm)
    label: str  # where the size comes from: darts, imagenet, 16MB, target, quick
    compile: bool = True  # False where the preset cannot afford compiling it

    def describe(self) -> str:
        return f"{self.label} k={self.k} {'x'.join(map(str, self.shape))}"


@dataclass
class InputSet:
    args: tuple  # the op's arguments, the same for every implementation
    diff: list[Tensor]  # what fwd+bwd differentiates
    grads: list[Tensor]  # fixed random gradients of the outputs


# ------------------------------------------------------------------ inputs
def _rand(shape, dtype, device, grad=True) -> Tensor:
    return torch.randn(shape, dtype=dtype, device=device).requires_grad_(grad)


def _mix_weights(k, device) -> Tensor:
    # DARTS mixes with softmax(alpha), kept in float32 as mixed precision does.
    return torch.randn(k, device=device).softmax(0).requires_grad_()


def _host_choices(n, k) -> tuple[Tensor, list[int]]:
    # On the host, as a sampler produces them: the ops then need no synchronisation.
    choices = torch.randint(0, k, (n,))
    return choices, torch.bincount(choices, minlength=k).tolist()


def _build_weighted_sum(case, dtype, device):
    xs = [_rand(case.shape, dtype, device) for _ in range(case.k)]
    w = _mix_weights(case.k, device)
    return InputSet((xs, w), xs + [w], [_rand(case.shape, dtype, device, grad=False)])


def _build_partial_channel_mix(case, dtype, device):
    n, c, *rest = case.shape
    ys = [_rand((n, c // PC_GROUPS, *rest), dtype, device) for _ in range(case.k)]
    w = _mix_weights(case.k, device)
    x = _rand(case.shape, dtype, device)
    return InputSet((ys, w, x, PC_GROUPS), ys + [w, x], [_rand(case.shape, dtype, device, grad=False)])


def _build_path_dispatch(case, dtype, device):
    n, *rest = case.shape
    choices, counts = _host_choices(n, case.k)
    x = _rand(case.shape, dtype, device)
    grads = [_rand((m, *rest), dtype, device, grad=False) for m in counts]
    return InputSet((x, choices, case.k), [x], grads)


def _build_path_combine(case, dtype, device):
    n, *rest = case.shape
    choices, counts = _host_choices(n, case.k)
    ys = [_rand((m, *rest), dtype, device) for m in counts]
    return InputSet((ys, choices), ys, [_rand(case.shape, dtype, device, grad=False)])


def _build_grouped_batch_norm(case, dtype, device):
    n, c = case.shape[:2]
    x = _rand(case.shape, dtype, device)
    groups = torch.randint(0, case.k, (n,))  # host groups: no synchronisation
    weight = (1 + 0.1 * torch.randn(c, device=device)).requires_grad_()
    bias = (0.1 * torch.randn(c, device=device)).requires_grad_()
    return InputSet((x, groups, case.k, weight, bias), [x, weight, bias],
                    [_rand(case.shape, dtype, device, grad=False)])


# ------------------------------------------------------- minimum bytes moved
def _bytes_weighted_sum(case, size):  # size: bytes of one input
    w = 4 * case.k
    fwd = case.k * size + w + size
    bwd = size + case.k * size + case.k * size + w  # grad; xs for grad_w; grad_xs; grad_w
    return fwd, bwd


def _bytes_partial_channel_mix(case, size):
    part, w = size // PC_GROUPS, 4 * case.k
    fwd = case.k * part + w + (size - part) + size  # ys, weights, bypassed channels of x; out
    bwd = size + case.k * part + case.k * part + w + size  # grad; ys for grad_w; grad_ys; grad_w; grad_x
    return fwd, bwd


def _bytes_path(case, size):  # dispatch and combine: every row read once and written once, both ways
    return 2 * size, 2 * size


def _bytes_grouped_batch_norm(case, size):
    params = 4 * case.shape[1]  # one float32 [C] parameter
    fwd = size + 2 * params + size  # x, weight, bias; out
    bwd = size + size + params + size + 2 * params  # grad, x, weight; grad_x, grad_weight, grad_bias
    return fwd, bwd


@dataclass(frozen=True)
class OpSpec:
    ours: Callable
    reference: Callable
    build: Callable[[Case, torch.dtype, torch.device], InputSet]
    min_bytes: Callable[[Case, int], tuple[int, int]]


SPECS = {
    "weighted_sum": OpSpec(P.weighted_sum, P.weighted_sum_reference, _build_weighted_sum, _bytes_weighted_sum),
    "partial_channel_mix": OpSpec(P.partial_channel_mix, P.partial_channel_mix_reference,
                                  _build_partial_channel_mix, _bytes_partial_channel_mix),
    "path_dispatch": OpSpec(P.path_dispatch, P.path_dispatch_reference, _build_path_dispatch, _bytes_path),
    "path_combine": OpSpec(P.path_combine, P.path_combine_reference, _build_path_combine, _bytes_path),
    "grouped_batch_norm": OpSpec(P.grouped_batch_norm, P.grouped_batch_norm_reference,
                                 _build_grouped_batch_norm, _bytes_grouped_batch_norm),
}


# ------------------------------------------------------------------ presets
DARTS = [(64, c, 32, 32) for c in (16, 64)]  # DARTS CIFAR search
IMAGENET = [(256, c, 56, 56) for c in (64, 256)]
MB16 = (256, 16, 32, 32)  # 4 Mi elements: 16 MiB per float32 input


def _quick():
    shape = (8, 16, 16, 16)
    return [Case(op, shape, 3, "quick") for op in OPS]


def _cpu():
    # Compiling costs 5-40 s a case on 2 cores, so the compiled reference is
    # timed where the targets are judged: every op's smallest DARTS case and
    # its 16 MiB one, plus weighted_sum K=8 at 1 Mi elements and at 16 MiB.
    # The other cases time ours against eager only (--compile-all adds them).
    small, big = DARTS  # 4 MiB and 16 MiB per float32 input
    cases = []
    for op, ks in (("weighted_sum", (7, 35)), ("partial_channel_mix", (7,)), ("path_dispatch", (4, 7)),
                   ("path_combine", (4, 7)), ("grouped_batch_norm", (8, 32))):
        for shape in (small, big):
            cases += [Case(op, shape, k, "darts", compile=i == 0) for i, k in enumerate(ks)]
        if op == "weighted_sum":
            cases.append(Case(op, (64, 16, 32, 32), 8, "target"))  # 1 Mi elements per input
            cases.append(Case(op, MB16, 8, "16MB"))
    return cases


def _gpu():
    cases = [Case("weighted_sum", s, k, "darts") for s in DARTS for k in (7, 14, 35)]
    # 35 inputs of 822 MB (C=256) and their gradients would not fit in 80 GB.
    cases += [Case("weighted_sum", IMAGENET[0], k, "imagenet") for k in (7, 14, 35)]
    cases += [Case("weighted_sum", IMAGENET[1], k, "imagenet") for k in (7, 14)]
    cases.append(Case("weighted_sum", MB16, 7, "16MB"))
    cases += [Case("partial_channel_mix", s, 7, label) for s, label in _labelled()]
    for op in ("path_dispatch", "path_combine"):
        cases += [Case(op, s, k, label) for s, label in _labelled() for k in (4, 7)]
        cases.append(Case(op, MB16, 4, "16MB"))
    cases += [Case("grouped_batch_norm", s, g, label) for s, label in _labelled() for g in (8, 32)]
    return cases


def _labelled():
    return [(s, "darts") for s in DARTS] + [(s, "imagenet") for s in IMAGENET]


PRESETS = {"quick": (_quick, 1, 3), "cpu": (_cpu, 2, 20), "gpu": (_gpu, 5, 30)}  # cases, warm-up, repeats


# ------------------------------------------------------------------ running
def _step(fn, mode):
    if mode == "fwd":
        def call(s):
            with torch.no_grad():
                return fn(*s.args)
    elif mode == "fwd+bwd":
        def call(s):
            out = fn(*s.args)
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            return torch.autograd.grad(outs, s.diff, s.grads, allow_unused=True)
    else:
        def call(s):
            out = fn(*s.args)
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            torch.autograd.backward(outs, s.grads)
            for t in s.diff:  # as zero_grad(): the next step starts from .grad = None
                t.grad = None
    return call


def _agrees(spec, s: InputSet) -> bool:
    with torch.no_grad():
        a, b = spec.ours(*s.args), spec.reference(*s.args)
    a, b = (list(a), list(b)) if isinstance(a, (list, tuple)) else ([a], [b])
    tol = 1e-3 if a[0].dtype in (torch.float32, torch.float64) else 3e-2
    return len(a) == len(b) and all(x.shape == y.shape and torch.allclose(x.float(), y.float(), rtol=tol, atol=tol)
                                    for x, y in zip(a, b))


@contextlib.contextmanager
def _quiet_compile():
    """Silence dynamo's graph-break warnings: the references' boolean indexing
    breaks graphs by design, and the table is what the reader came for."""
    logger = logging.getLogger("torch._dynamo")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def run_case(case: Case, dtype: torch.dtype, device: torch.device, *, compile: bool, warmup: int,
             repeats: int, notes: list[str]) -> tuple[dict[tuple[str, str], float], dict[str, float | None]]:
    """Median ms of every (impl, mode) measured for this case, and per mode the share of the machine's
    busy CPU time that other processes took while it was timed (None off Linux or on a GPU)."""
    spec = SPECS[case.op]
    what = f"{case.op} {case.describe()} {str(dtype).removeprefix('torch.')}"
    torch.manual_seed(0)
    try:
        sets = [spec.build(case, dtype, device)]
        resident = sum(t.nbytes for t in sets[0].diff + sets[0].grads)
        sets += [spec.build(case, dtype, device) for _ in range(min(MAX_SETS, ROTATE_BYTES // resident) - 1)]
    except torch.OutOfMemoryError:
        notes.append(f"{what}: skipped, inputs do not fit in memory")
        return {}, {}
    if not _agrees(spec, sets[0]):
        notes.append(f"WARNING {what}: ours and eager disagree, timings are suspect")
    impls = {"ours": spec.ours, "eager": spec.reference}
    if compile and case.compile:
        torch._dynamo.reset()  # a fresh compile per case: no recompile limits, no shapes left dynamic
        impls["compile"] = torch.compile(spec.reference)
    ms, others = {}, {}
    for mode in MODES:
        # A first call of each alone (it compiles there) tells which can be timed.
        steps = {}
        for name, fn in list(impls.items()):
            step = _step(fn, mode)
            try:
                with _quiet_compile() if name == "compile" else contextlib.nullcontext():
                    step(sets[0])
                steps[name] = step
            except torch.OutOfMemoryError:
                notes.append(f"{what}: {name} {mode} skipped, out of memory")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            except Exception as err:
                # Report and go on: one broken op should not cost the whole run.
                # A failing compile is an expected limitation; anything else is an error.
                reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]}"
                if name == "compile":
                    notes.append(f"{what}: compile skipped, {reason}")
                    del impls["compile"]
                else:
                    notes.append(f"ERROR {what}: {name} {mode} failed, {reason}")
        if not steps:
            continue
        try:
            ticks = timing.cpu_ticks()
            with _quiet_compile():
                times = timing.interleaved_median_ms(steps, sets, device, warmup, repeats)
            others[mode] = timing.others_share(ticks, timing.cpu_ticks())
        except torch.OutOfMemoryError:
            notes.append(f"{what}: {mode} skipped, out of memory")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        except Exception as err:
            notes.append(f"ERROR {what}: {mode} failed, {type(err).__name__}: "
                         f"{(str(err).splitlines() or [''])[0][:160]}")
            continue
        for name, t in times.items():
            ms[name, mode] = t
    return ms, others


def _records(case, dtype, ms, others, peak, meta) -> list[dict]:
    spec = SPECS[case.op]
    size = math.prod(case.shape) * dtype.itemsize
    fwd_bytes, bwd_bytes = spec.min_bytes(case, size)
    rows = []
    for (impl, mode), t in ms.items():
        moved = fwd_bytes if mode == "fwd" else fwd_bytes + bwd_bytes
        gbps = moved / t / 1e6
        row = dict(op=case.op, impl=impl, mode=mode, case=case.label, dtype=str(dtype).removeprefix("torch."),
                   shape=list(case.shape), k=case.k, ms=t, bytes=moved, input_bytes=size, gbps=gbps,
                   frac_peak=gbps / peak, speedup_vs_eager=None, speedup_vs_compile=None,
                   others_cpu_share=others.get(mode))
        if case.op == "partial_channel_mix":
            row["groups"] = PC_GROUPS
        if impl == "ours":
            row["speedup_vs_eager"] = ms[("eager", mode)] / t if ("eager", mode) in ms else None
            row["speedup_vs_compile"] = ms[("compile", mode)] / t if ("compile", mode) in ms else None
        rows.append({**row, **meta})
    return rows


# ------------------------------------------------------------------ output
def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _times(v):
    return "-" if v is None else f"{v:.2f}x"


def format_table(rows: list[dict]) -> str:
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        key = (r["op"], f"{r['case']} k={r['k']} {'x'.join(map(str, r['shape']))}", r["dtype"], r["mode"])
        by_key.setdefault(key, {})[r["impl"]] = r
    head = ["op", "case", "dtype", "mode", "ours ms", "eager ms", "compile ms", "ours GB/s", "of copy",
            "vs eager", "vs compile", "others"]
    lines = [head]
    for key, impls in by_key.items():
        ours = impls.get("ours", {})
        lines.append([*key, *(_fmt(impls.get(i, {}).get("ms"), ".3f") for i in ("ours", "eager", "compile")),
                      _fmt(ours.get("gbps"), ".1f"), _fmt(ours.get("frac_peak"), ".0%"),
                      _times(ours.get("speedup_vs_eager")), _times(ours.get("speedup_vs_compile")),
                      _fmt(ours.get("others_cpu_share"), ".0%")])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


# ------------------------------------------------------------------ targets
def _worst(rows, field):
    rows = [r for r in rows if r[field] is not None]
    return min(rows, key=lambda r: r[field]) if rows else None


def _where(r):
    return f"{r['case']} k={r['k']} {'x'.join(map(str, r['shape']))} {r['dtype']} {r['mode']}"


def _verdict(text: str, ok: bool) -> tuple[str, bool]:
    return f"{text} {'PASS' if ok else 'FAIL'}", ok


def evaluate_targets(rows: list[dict], device: torch.device) -> list[tuple[str, bool]]:
    """(line, passed) for every target the measured rows cover."""
    ours = [r for r in rows if r["impl"] == "ours"]
    out = []
    if device.type != "cuda":
        target = [r for r in ours if r["op"] == "weighted_sum" and r["case"] == "target"
                  and r["mode"] == "fwd+bwd" and r["dtype"] == "float32"]
        if r := _worst(target, "speedup_vs_eager"):
            x = r["speedup_vs_eager"]
            out.append(_verdict(f"TARGET cpu weighted_sum K=8 1M fwd+bwd vs eager: {x:.2f}x (need >= 1.5)", x >= 1.5))
        for op in OPS:
            for mode in ("fwd", "fwd+bwd"):
                big = [r for r in ours if r["op"] == op and r["mode"] == mode and r["input_bytes"] >= BIG_INPUT]
                if r := _worst(big, "frac_peak"):
                    out.append(_verdict(f"TARGET cpu {op} {mode} >=16MB/input: {r['frac_peak']:.0%} of copy "
                                        f"bandwidth, worst of {len(big)} at {_where(r)} "
                                        f"(need >= {CPU_FRACTION:.0%})", r["frac_peak"] >= CPU_FRACTION))
        for op in OPS:
            compiled = [r for r in ours if r["op"] == op and r["speedup_vs_compile"] is not None]
            if r := _worst(compiled, "speedup_vs_compile"):
                x = r["speedup_vs_compile"]
                out.append(_verdict(f"TARGET cpu {op} vs compiled reference: {x:.2f}x, worst of {len(compiled)} "
                                    f"at {_where(r)} (need >= 1.00x)", x >= 1.0))
        return out
    for op in ("weighted_sum", "path_dispatch", "path_combine"):
        for mode in ("fwd", "fwd+bwd"):
            big = [r for r in ours if r["op"] == op and r["mode"] == mode and r["input_bytes"] >= BIG_INPUT]
            if r := _worst(big, "frac_peak"):
                out.append(_verdict(f"TARGET gpu {op} {mode} >=16MB/input: {r['frac_peak']:.0%} of copy bandwidth, "
                                    f"worst of {len(big)} at {_where(r)} (need >= 85%)", r["frac_peak"] >= 0.85))
    for mode, need in (("fwd", 3.0), ("fwd+bwd", 2.0)):
        ws = [r for r in ours if r["op"] == "weighted_sum" and r["mode"] == mode]
        if r := _worst(ws, "speedup_vs_eager"):
            x = r["speedup_vs_eager"]
            out.append(_verdict(f"TARGET gpu weighted_sum {mode} vs eager: {x:.2f}x, worst of {len(ws)} "
                                f"at {_where(r)} (need >= {need:.0f}x)", x >= need))
    for op in OPS:
        compiled = [r for r in ours if r["op"] == op and r["speedup_vs_compile"] is not None]
        if r := _worst(compiled, "speedup_vs_compile"):
            x = r["speedup_vs_compile"]
            out.append(_verdict(f"TARGET gpu {op} vs compiled reference: {x:.2f}x, worst of {len(compiled)} "
                                f"at {_where(r)} (need >= 1.00x)", x >= 1.0))
    return out


# ------------------------------------------------------------------ CLI
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ops", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=list(PRESETS), help="case set (default: gpu on CUDA, cpu otherwise)")
    p.add_argument("--ops", type=choices_list(OPS), default=list(OPS), help="comma-separated ops (default: all)")
    p.add_argument("--dtype", type=choices_list(list(DTYPES)), default=["float32"],
                   help="comma-separated dtypes (default: float32)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--results-dir", default="bench/results", help="where <device>.json is appended")
    p.add_argument("--repeats", type=positive_int, help="timed calls per measurement (default: per preset)")
    p.add_argument("--threads", type=positive_int,
                   help="intra-op threads for every implementation and the copy bandwidth (default: torch's)")
    p.add_argument("--allocator", choices=["retain", "system"], default="retain",
                   help="CPU: 'retain' (default) keeps freed memory in glibc's heap, as a training process in its "
                        "steady state does, so no implementation's timing includes the page faults of memory "
                        "freshly mapped for its outputs; 'system' leaves glibc's defaults")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd reference")
    p.add_argument("--compile-all", action="store_true", help="compile every case, even where the preset skips it")
    p.add_argument("--check-targets", action="store_true", help="exit with 1 when a target fails")
    args = parse_device_args(p, argv)
    if args.no_compile and args.compile_all:
        p.error("--no-compile and --compile-all contradict each other")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    preset = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    make_cases, warmup, repeats = PRESETS[preset]
    repeats = args.repeats or repeats
    cases = [c for c in make_cases() if c.op in args.ops]
    if args.compile_all:
        cases = [Case(c.op, c.shape, c.k, c.label) for c in cases]
    if args.threads:
        torch.set_num_threads(args.threads)
    dev_name = results.device_name(device)
    allocator = "system"
    if device.type == "cpu" and args.allocator == "retain":
        largest = max(math.prod(c.shape) * max(DTYPES[d].itemsize for d in args.dtype) for c in cases) if cases else 0
        allocator = "retain" if timing.retain_freed_memory(2 * largest) else "system"
    peak = timing.copy_bandwidth_gbps(device)
    meta = dict(device=dev_name, peak_copy_gbps=peak, torch=torch.__version__, commit=results.git_commit(),
                date=results.now_iso(), preset=preset, threads=torch.get_num_threads(), repeats=repeats,
                allocator=allocator)
    print(f"device: {dev_name} | torch {meta['torch']} | commit {meta['commit']} | threads {meta['threads']}")
    # Other work on the machine skews every timing (OpenMP threads wait for a busy core): say so.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"copy bandwidth: {peak:.1f} GB/s | preset {preset}: {len(cases)} cases x {len(args.dtype)} dtype(s), "
          f"median of {repeats} after {warmup} warm-up, implementations alternated"
          + (f" | load average {load:.1f} on {os.cpu_count()} cores" if device.type == "cpu" else ""), flush=True)

    notes: list[str] = timing.load_notes(device)
    if device.type == "cpu":
        notes.append("others: the share of the machine's busy CPU time that other processes took while a row was "
                     "timed; above a few percent the CPU timings of that row are suspect")
    if device.type == "cpu":
        notes.append("allocator: " + ("freed memory retained in glibc's heap (--allocator retain): outputs are "
                                      "not freshly page-faulted on every call" if allocator == "retain" else
                                      "the C library's defaults: large outputs may be mapped and page-faulted "
                                      "afresh on every call"))
    if args.no_compile:
        notes.append("compile: skipped everywhere (--no-compile)")
    elif skipped := sum(not c.compile for c in cases):
        notes.append(f"compile: skipped for {skipped} of {len(cases)} cases to keep the {preset} preset short "
                     f"(--compile-all times them all)")
    rows: list[dict] = []
    total = len(cases) * len(args.dtype)
    for i, (dtype, case) in enumerate(((DTYPES[d], c) for d in args.dtype for c in cases), 1):
        t0 = time.perf_counter()
        ms, others = run_case(case, dtype, device, compile=not args.no_compile, warmup=warmup, repeats=repeats,
                              notes=notes)
        rows += _records(case, dtype, ms, others, peak, meta)
        print(f"[{i}/{total}] {case.op} {case.describe()} {str(dtype).removeprefix('torch.')}: "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    if device.type == "cpu" and hasattr(os, "getloadavg"):
        notes.append("load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.1f}" for v in os.getloadavg())
                     + f" on {os.cpu_count()} cores")
    results.report(format_table(rows), notes, args.results_dir, dev_name, rows)
    return results.verdict(evaluate_targets(rows, device), notes, check_targets=args.check_targets)
