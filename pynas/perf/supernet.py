"""Supernet benchmark: one full search step of our fused supernet against the papers' eager code.

    python -m bench.supernet [--preset quick|cpu|gpu] [--cases darts-1st,...] [--results-dir bench/results]
                             [--repeats N] [--compile | --no-compile] [--check-targets]

A search step is what :meth:`DifferentiableSearch.step` does: an architecture
step on a validation batch, then a weight step on a training batch. Each case
(DARTS first order, DARTS second order, PC-DARTS) times it for three
implementations holding the same initial weights:

* ``ours``: the fused :class:`DartsSupernet`;
* ``eager``: :class:`ReferenceDartsSupernet` around a deep copy of it, the
  cell computed as the papers' released code computes it;
* ``compile``: a deep copy of ours under ``torch.compile`` (default mode).

Every timed step gets train and validation batches of its own (random
images and labels). The ``gpu`` preset uses DARTS's CIFAR-10 search sizes;
the ``cpu`` and ``quick`` presets reduce them, and say so in the output and in
every record (``config.reduced``).

Each record holds the median ms per step, the first step's ms (compilation
included), the peak memory of one step (``peak_mem_kind`` says what is
counted on the device) and, on Linux, the share of CPU time other processes
took while the steps were timed (``others_cpu_share``; a warning above 5%).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch
from torch import Tensor, nn

from pynas.algorithms.darts import DARTS_DEFAULTS
from pynas.algorithms.differentiable import DifferentiableSearch
from pynas.algorithms.pc_darts import PC_DARTS_DEFAULTS
from pynas.spaces import create_space
from pynas.supernets.factory import build_supernet

from . import results, timing
from .args import choices_list, parse_device_args, positive_int
from .reference_supernets import ReferenceDartsSupernet

CASES = ("darts-1st", "darts-2nd", "pc-darts")
IMPLS = ("ours", "eager", "compile")
IMAGE = 32  # CIFAR-10
CLASSES = 10
# What DifferentiableSearch takes from an algorithm's defaults (the rest sizes the network or the data).
_SEARCH_KEYS = ("epochs", "w_lr", "w_lr_min", "w_momentum", "w_weight_decay", "grad_clip", "arch_lr", "arch_betas",
                "arch_weight_decay")


@dataclass(frozen=True)
class Config:
    algorithm: str  # darts | pc-darts
    order: int
    layers: int
    C: int
    batch: int
    image: int = IMAGE
    classes: int = CLASSES
    partial_channels: int = 1
    reduced: bool = False  # smaller than the papers' search settings

    def describe(self) -> str:
        pc = f" K={self.partial_channels}" if self.partial_channels > 1 else ""
        return f"{self.layers} cells C={self.C}{pc} batch {self.batch} {self.image}x{self.image}"


def _configs(layers, C, darts_batch, pc_batch, reduced):
    return {
        "darts-1st": Config("darts", 1, layers, C, darts_batch, reduced=reduced),
        "darts-2nd": Config("darts", 2, layers, C, darts_batch, reduced=reduced),
        "pc-darts": Config("pc-darts", 1, layers, C, pc_batch, partial_channels=PC_DARTS_DEFAULTS["partial_channels"],
                           reduced=reduced),
    }


@dataclass(frozen=True)
class Preset:
    configs: dict
    warmup: int
    repeats: int
    compile: bool  # whether compile is timed unless --compile / --no-compile says otherwise
    why_no_compile: str = ""


PRESETS = {
    # DARTS's CIFAR-10 search (8 cells, C=16, batch 64) and PC-DARTS's (batch 256).
    "gpu": Preset(_configs(8, 16, DARTS_DEFAULTS["batch_size"], PC_DARTS_DEFAULTS["batch_size"], False), 3, 10, True),
    # Two cores run the full sizes at ~12 s a step; this keeps the preset under 5 minutes.
    "cpu": Preset(_configs(5, 8, 16, 64, True), 2, 7, False,
                  "on 2 cores its first step compiles for ~12 min at 5 cells with a cold inductor cache"),
    # For the tests: seconds, not minutes.
    "quick": Preset({name: replace(cfg, image=16) for name, cfg in _configs(3, 8, 4, 8, True).items()}, 1, 2,
                    False, "the quick preset is for tests"),
}


# ------------------------------------------------------------------ building
def _hyperparameters(cfg: Config) -> dict:
    defaults = PC_DARTS_DEFAULTS if cfg.algorithm == "pc-darts" else DARTS_DEFAULTS
    # warmup_epochs=0: PC-DARTS skips the architecture step for 15 epochs; the benchmark times the full step.
    return dict({k: defaults[k] for k in _SEARCH_KEYS}, order=cfg.order, warmup_epochs=0)


def build_ours(cfg: Config, device: torch.device, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # the weights' init draws from the global generator
    options = dict(partial_channels=cfg.partial_channels, edge_normalization=True) if cfg.partial_channels > 1 else {}
    net = build_supernet(create_space("darts"), num_classes=cfg.classes, in_channels=3, C=cfg.C, layers=cfg.layers,
                         generator=torch.Generator().manual_seed(seed), **options)
    return net.to(device)


def build_impl(impl: str, ours: nn.Module) -> nn.Module:
    """The network ``impl`` runs, on a deep copy of ``ours``: every impl starts from the same weights."""
    net = copy.deepcopy(ours)
    if impl == "eager":
        return ReferenceDartsSupernet(net)
    if impl == "compile":
        net.compile()  # compiles forward in place; the module keeps its search interface
    return net


def make_batches(cfg: Config, device: torch.device, count: int, seed: int = 1) -> list:
    """``count`` (train, valid) batch pairs, every tensor drawn afresh."""
    g = torch.Generator().manual_seed(seed)

    def batch():
        x = torch.randn(cfg.batch, 3, cfg.image, cfg.image, generator=g)
        y = torch.randint(0, cfg.classes, (cfg.batch,), generator=g)
        return x.to(device), y.to(device)

    return [(batch(), batch()) for _ in range(count)]


# ------------------------------------------------------------------ memory
MEMORY_KINDS = {
    "cuda": "torch.cuda.max_memory_allocated over one step: every live tensor on the GPU (weights, gradients, "
            "optimiser state, batches, activations)",
    "cpu": "tensor bytes live at the step's start (weights, buffers, gradients, optimiser state, batches) plus the "
           "step's peak of bytes allocated through torch's CPU allocator (torch.profiler memory events); "
           "malloc's caching and memory allocated outside torch are not counted",
}


def _resident_bytes(search: DifferentiableSearch, batches) -> int:
    """Bytes of the distinct storages a step starts with."""
    tensors = [*search.supernet.parameters(), *search.supernet.buffers()]
    tensors += [p.grad for p in search.supernet.parameters() if p.grad is not None]
    for opt in (search.w_optimizer, search.a_optimizer):
        tensors += [v for state in opt.state.values() for v in state.values() if isinstance(v, Tensor)]
    tensors += [t for pair in batches for xy in pair for t in xy]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _cpu_peak(search: DifferentiableSearch, step, batches) -> Optional[int]:
    """Resident bytes + the peak of new allocations, read from the profiler's allocator events.

    Two steps run under the profiler and the second is measured: the gradients
    it frees were allocated by the first, so the profiler sees those frees too
    (it ignores frees of blocks allocated before it started). Each allocation
    event carries the allocator's running total, so threads cannot reorder it.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    try:  # the event tree is the profiler's experimental API: report nothing rather than fail
        from torch._C._profiler import _EventType
    except ImportError:
        return None

    marker = "pynas_measured_step"
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(batches[0])
        resident = _resident_bytes(search, batches[1:])
        with record_function(marker):
            step(batches[1])
    try:
        todo = list(prof.profiler.kineto_results.experimental_event_tree())
    except AttributeError:
        return None
    events = []
    while todo:
        e = todo.pop()
        events.append(e)
        todo += e.children
    window = [e for e in events if e.name == marker]
    if len(window) != 1:
        return None
    start, end = window[0].start_time_ns, window[0].end_time_ns
    allocs = sorted((e.start_time_ns, e.typed[1]) for e in events
                    if e.typed[0] == _EventType.Allocation and start <= e.start_time_ns <= end
                    and e.typed[1].device.type == "cpu")
    if not allocs:
        return None
    at_start = allocs[0][1].total_allocated - allocs[0][1].alloc_size
    return resident + max(0, max(a.total_allocated for _, a in allocs) - at_start)


def peak_step_memory(search: DifferentiableSearch, step, batches, device: torch.device) -> Optional[int]:
    """Peak bytes over one search step, as :data:`MEMORY_KINDS` describes for the device."""
    if device.type == "cuda":
        step(batches[0])
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(batches[1])
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    # Gradients from earlier steps: set to None here so the profiler never sees an untracked block freed.
    search.w_optimizer.zero_grad(set_to_none=True)
    search.a_optimizer.zero_grad(set_to_none=True)
    return _cpu_peak(search, step, batches)


# ------------------------------------------------------------------ running
@contextlib.contextmanager
def _quiet_compile():
    """Keep dynamo's warnings out of the table; failures still raise."""
    logger = logging.getLogger("torch._dynamo")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def time_impl(impl: str, ours: nn.Module, cfg: Config, device: torch.device, *, warmup: int,
              repeats: int) -> dict:
    """ms per step (median), the first step's ms (compile time included) and the peak memory."""
    search = DifferentiableSearch(build_impl(impl, ours), **_hyperparameters(cfg))
    # Every step, warm-up included, takes the next unused batch pair; drawn beforehand so that
    # making them is not timed. (median_ms would revisit a list of input sets instead.)
    feed = iter(make_batches(cfg, device, 1 + warmup + repeats + 2))
    step = lambda b: search.step(*b)  # noqa: E731
    fresh = lambda _: step(next(feed))  # noqa: E731
    with _quiet_compile() if impl == "compile" else contextlib.nullcontext():
        timing.synchronize(device)
        t0 = time.perf_counter()
        fresh(None)  # alone and timed apart: under torch.compile it compiles
        timing.synchronize(device)
        first = (time.perf_counter() - t0) * 1e3
        ticks = timing.cpu_ticks()
        ms = timing.median_ms(fresh, [None], device, warmup=warmup, repeats=repeats)
        others = timing.others_share(ticks, timing.cpu_ticks())
        peak = peak_step_memory(search, step, [next(feed), next(feed)], device)
    return dict(ms_per_step=ms, first_step_ms=first, peak_mem_bytes=peak, others_cpu_share=others)


def run_case(name: str, cfg: Config, device: torch.device, impls: list[str], *, warmup: int, repeats: int,
             notes: list[str]) -> dict[str, dict]:
    ours = build_ours(cfg, device)
    measured = {}
    for impl in impls:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        try:
            measured[impl] = time_impl(impl, ours, cfg, device, warmup=warmup, repeats=repeats)
        except torch.OutOfMemoryError:
            notes.append(f"{name}: {impl} skipped, out of memory")
        except Exception as err:
            # A failing compile is a limitation to report; anything else is an error, but the other
            # implementations still get measured.
            if impl == "compile":
                notes.append(f"{name}: torch.compile failed, {timing.failure_reason(err)}")
            else:
                notes.append(f"ERROR {name}: {impl} failed, {timing.failure_reason(err)}")
        finally:
            if impl == "compile":
                torch._dynamo.reset()  # drop the compiled graphs before the next case
    return measured


def records(name: str, cfg: Config, measured: dict[str, dict], meta: dict) -> list[dict]:
    eager = measured.get("eager")
    compiled = measured.get("compile")
    rows = []
    for impl, m in measured.items():
        row = dict(bench="supernet", case=name, impl=impl, config=asdict(cfg), **m, speedup_vs_eager=None,
                   speedup_vs_compile=None, mem_ratio_vs_eager=None)
        if impl != "eager" and eager:
            row["speedup_vs_eager"] = eager["ms_per_step"] / m["ms_per_step"]
            if eager["peak_mem_bytes"] and m["peak_mem_bytes"]:
                row["mem_ratio_vs_eager"] = m["peak_mem_bytes"] / eager["peak_mem_bytes"]
        if impl == "ours" and compiled:
            row["speedup_vs_compile"] = compiled["ms_per_step"] / m["ms_per_step"]
        rows.append({**row, **meta})
    return rows


# ------------------------------------------------------------------ output
def _fmt(v, spec, scale=1.0):
    return "-" if v is None else format(v / scale, spec)


def _times(v):
    return "-" if v is None else f"{v:.2f}x"


def format_table(rows: list[dict]) -> str:
    by_case: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["impl"]] = r
    head = ["case", "config", *(f"{i} ms" for i in IMPLS), "vs eager", "vs compile",
            *(f"{i} MiB" for i in IMPLS), "mem vs eager"]
    lines = [head]
    for case, impls in by_case.items():
        ours = impls.get("ours", {})
        cfg = next(iter(impls.values()))["config"]
        lines.append([case, Config(**cfg).describe(),
                      *(_fmt(impls.get(i, {}).get("ms_per_step"), ".1f") for i in IMPLS),
                      _times(ours.get("speedup_vs_eager")), _times(ours.get("speedup_vs_compile")),
                      *(_fmt(impls.get(i, {}).get("peak_mem_bytes"), ".1f", 2 ** 20) for i in IMPLS),
                      _times(ours.get("mem_ratio_vs_eager"))])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


# ------------------------------------------------------------------ targets
def _verdict(text: str, ok: bool) -> tuple[str, bool]:
    return f"{text} {'PASS' if ok else 'FAIL'}", ok


def evaluate_targets(rows: list[dict], device: torch.device) -> list[tuple[str, bool]]:
    """(line, passed) for each target the rows cover; the second-order case is informational."""
    ours = {r["case"]: r for r in rows if r["impl"] == "ours"}
    gpu = device.type == "cuda"
    where = "gpu" if gpu else "cpu"
    out = []
    needs = (("darts-1st", "DARTS", 1.5 if gpu else 1.2), ("pc-darts", "PC-DARTS", 1.3 if gpu else 1.2))
    for case, label, need in needs:
        r = ours.get(case)
        if r is None or r["speedup_vs_eager"] is None:
            continue
        x = r["speedup_vs_eager"]
        scope = " (reduced config)" if r["config"]["reduced"] else ""
        out.append(_verdict(f"TARGET {where} {label} step vs eager{scope}: {x:.2f}x (need >= {need:.1f}x)", x >= need))
        if gpu and case == "darts-1st" and r["mem_ratio_vs_eager"] is not None:
            m = r["mem_ratio_vs_eager"]
            out.append(_verdict(f"TARGET gpu DARTS peak memory vs eager: {m:.2f}x (need <= 0.8x)", m <= 0.8))
    return out


def info_lines(rows: list[dict]) -> list[str]:
    """Cases without a target (second-order DARTS), reported alongside the targets."""
    out = []
    for r in rows:
        if r["impl"] == "ours" and r["case"] == "darts-2nd" and r["speedup_vs_eager"] is not None:
            mem = _times(r["mem_ratio_vs_eager"])
            out.append(f"INFO DARTS second order step vs eager: {r['speedup_vs_eager']:.2f}x, memory {mem} (no target)")
    return out


# ------------------------------------------------------------------ CLI
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.supernet", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=list(PRESETS), help="sizes (default: gpu on CUDA, cpu otherwise)")
    p.add_argument("--cases", type=choices_list(list(CASES)), default=list(CASES),
                   help="comma-separated cases (default: all)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--results-dir", default="bench/results", help="where <device>.json is appended")
    p.add_argument("--repeats", type=positive_int, help="timed steps per implementation (default: per preset)")
    compile_group = p.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_true", default=None,
                               help="time torch.compile even where the preset skips it")
    compile_group.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    p.add_argument("--check-targets", action="store_true", help="exit with 1 when a target fails")
    return parse_device_args(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    name = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    preset = PRESETS[name]
    repeats = args.repeats or preset.repeats
    compile_on = preset.compile if args.compile is None else args.compile
    impls = [i for i in IMPLS if i != "compile" or compile_on]
    dev_name = results.device_name(device)
    meta = dict(device=dev_name, torch=torch.__version__, commit=results.git_commit(), date=results.now_iso(),
                preset=name, threads=torch.get_num_threads(), warmup=preset.warmup, repeats=repeats,
                peak_mem_kind=MEMORY_KINDS[device.type])
    print(f"device: {dev_name} | torch {meta['torch']} | commit {meta['commit']} | threads {meta['threads']}")
    print(f"preset {name}: median of {repeats} steps after {preset.warmup} warm-up, a fresh batch pair each step")
    if any(preset.configs[c].reduced for c in args.cases):
        print(f"REDUCED CONFIGURATION ({name} preset), not the papers' search settings "
              "(DARTS: 8 cells, C=16, batch 64; PC-DARTS: batch 256):")
        for case in args.cases:
            print(f"  {case}: {preset.configs[case].describe()}")
    print(f"peak memory: {meta['peak_mem_kind']}", flush=True)

    notes: list[str] = []
    notes += timing.load_notes(device)
    if not compile_on:
        why = "--no-compile" if args.compile is False else f"skipped in the {name} preset: {preset.why_no_compile}"
        notes.append(f"compile: not timed ({why}; --compile times it)")
    if "pc-darts" in args.cases:
        notes.append("PC-DARTS runs with warmup_epochs=0 so that every step includes the architecture step")

    rows: list[dict] = []
    for i, case in enumerate(args.cases, 1):
        cfg = preset.configs[case]
        t0 = time.perf_counter()
        measured = run_case(case, cfg, device, impls, warmup=preset.warmup, repeats=repeats, notes=notes)
        rows += records(case, cfg, measured, meta)
        print(f"[{i}/{len(args.cases)}] {case} {cfg.describe()}: {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
        for impl, m in measured.items():
            share = m["others_cpu_share"]
            if device.type == "cpu" and share is not None and share > timing.OTHERS_WARN:
                notes.append(f"WARNING {case}: other processes took {share:.0%} of the CPU time while {impl} was "
                             "timed; its timing is not trustworthy")
            if m["peak_mem_bytes"] is None:
                notes.append(f"{case}: {impl} peak memory not measured (this torch's profiler gave no allocation "
                             "events)")
        if "compile" in measured:
            notes.append(f"{case}: compile's first step took {measured['compile']['first_step_ms'] / 1e3:.1f} s")

    results.report(format_table(rows), notes, args.results_dir, dev_name, rows)
    return results.verdict(evaluate_targets(rows, device), notes, check_targets=args.check_targets,
                           info=info_lines(rows))
