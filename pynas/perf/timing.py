"""Device-aware timing: CUDA events on a GPU, perf_counter on the CPU.

Every timed call takes the next of several input sets in turn, so a small
case cannot run from a cache that a real training step would have evicted.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[Any], Any], arg_sets: Sequence[Any], device: torch.device,
              warmup: int = 2, repeats: int = 10) -> float:
    """Median milliseconds of ``fn(arg_sets[i % len(arg_sets)])`` over ``repeats`` calls.

    Warm-up visits every input set at least once: a compiled function that
    specialises on shapes (path ops give each set its own bucket sizes)
    recompiles there, not inside the timed calls.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n = len(arg_sets)
    for i in range(max(warmup, n)):
        fn(arg_sets[i % n])
    synchronize(device)
    if device.type == "cuda":
        # One event pair per call: the GPU time between them includes any
        # host-side stalls (launch overhead, synchronisations) the call causes.
        events = []
        for i in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(arg_sets[i % n])
            end.record()
            events.append((start, end))
        synchronize(device)
        times = [start.elapsed_time(end) for start, end in events]
    else:
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            fn(arg_sets[i % n])
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def interleaved_median_ms(fns: dict, arg_sets: Sequence[Any], device: torch.device, warmup: int = 2,
                          repeats: int = 10) -> dict:
    """``{name: median ms}`` of several implementations timed in alternation, call by call.

    Round i runs every implementation once on ``arg_sets[i % len(arg_sets)]``,
    in turn forwards and backwards, so a drift of the machine (clock, caches,
    another process) over the run lands on all of them alike instead of on
    whichever ran last. Warm-up as in :func:`median_ms`.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n = len(arg_sets)
    names = list(fns)
    for i in range(max(warmup, n)):
        for name in names:
            fns[name](arg_sets[i % n])
    synchronize(device)
    times: dict = {name: [] for name in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fns[name](arg_sets[i % n])
                end.record()
                synchronize(device)
                times[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fns[name](arg_sets[i % n])
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def copy_bandwidth_gbps(device: torch.device, nbytes: int | None = None, repeats: int = 10) -> float:
    """Copy bandwidth of the device in GB/s (1e9 bytes): bytes read + written over time.

    Copies into a preallocated tensor rather than timing a fresh ``clone``:
    on the CPU a fresh buffer this large comes straight from the OS and each
    clone would mostly time page faults (about 3x slower here), while on a
    GPU the caching allocator makes the two identical.
    """
    if nbytes is None:
        # Larger than any cache (H100 L2: 50 MB; recent Xeon L3: up to ~500 MB).
        nbytes = 1 << 30
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda _: dst.copy_(src), [None], device, warmup=2, repeats=repeats)
    return 2 * src.nbytes / (ms * 1e-3) / 1e9


# -- CPU contention -------------------------------------------------------------------------------
OTHERS_WARN = 0.05  # share of the CPU time taken by other processes that makes a CPU timing suspect


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def retain_freed_memory(largest_bytes: int) -> bool:
    """Make glibc serve blocks up to ``largest_bytes`` from its heap and never give freed
    memory back to the system; returns False where the C library is not glibc.

    By default glibc maps each block of over 128 KiB-32 MiB afresh and unmaps it on free,
    so every call that allocates a 16 MiB output also pays for thousands of page faults
    (each one a zeroed 4 KiB page) and the unmapping. Which calls pay depends on what the
    implementation timed before them freed: timed in alternation, one implementation's
    figures move with another's allocations. A training process in its steady state
    reuses its heap instead, and so do jemalloc and tcmalloc (PyTorch's CPU tuning guide
    recommends them). This is set for every implementation alike, once, before timing.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # mallopt returns 1 on success and refuses thresholds over its maximum.
    threshold = min(max(largest_bytes, 128 << 10), (1 << 31) - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))


def load_notes(device: torch.device) -> list[str]:
    """A warning when the load average already exceeds half the cores as a CPU run starts."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if device.type == "cpu" and load > 0.5 * (os.cpu_count() or 1):
        return [f"WARNING load average {load:.1f} on {os.cpu_count()} cores when the run started: "
                "other work shares the CPU, timings are noisy"]
    return []


def cpu_ticks() -> Optional[tuple[int, int]]:
    """(busy clock ticks of the whole machine, ticks of this process), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        return sum(cpu) - cpu[3] - cpu[4], int(own[11]) + int(own[12])  # minus idle, iowait; utime + stime
    except (OSError, ValueError, IndexError):
        return None


def others_share(before, after) -> Optional[float]:
    """Fraction of the machine's busy CPU time that other processes took between two cpu_ticks.

    A busy core slows a CPU step far more than its share suggests (our OpenMP
    threads wait at every barrier for the thread that lost its core), so even
    a small share is worth a warning.
    """
    if before is None or after is None or after[0] <= before[0]:
        return None
    busy, mine = after[0] - before[0], after[1] - before[1]
    return max(0.0, busy - mine) / busy


def failure_reason(err: BaseException) -> str:
    """The exception's type and the first line of its message (200 characters at most), for a note."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
