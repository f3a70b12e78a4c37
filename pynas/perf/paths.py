"""Path benchmark: scoring many candidate paths of a single-path supernet at once, and its training steps.

    python -m bench.paths [--preset quick|cpu|gpu] [--cases macro-eval,...] [--paths 8,32,128]
                          [--results-dir bench/results] [--repeats N] [--check-targets]

Cases, on NAS-Bench-Macro (``macro``, ``create_space("nasbench-macro")``) and
SPOS's ShuffleNetV2 space (``spos``, ``create_space("spos-shufflenetv2")``):

* ``<space>-eval``: score P random paths the way SPOS scores candidates:
  reset the batch norms, recalibrate them on R training batches, evaluate on E
  batches. ``batched`` is :func:`pynas.evaluation.evaluate_paths` with its
  default strategy (on a CPU the depth-first walk of the paths' prefix trie in
  channels-last, on a GPU passes of many paths with per-path batch-norm
  statistics); ``sequential`` is
  :func:`pynas.evaluation.evaluate_paths_sequential` (one path at a time, as
  SPOS's code does, inputs as given). One timed call scores all P paths; both
  run on the same supernet, paths and batches, and the record gives the
  largest difference between their accuracies and losses. Where the batched
  evaluation changes the memory format (CPU), ``sequential_same_format`` times
  the one-path loop in that format too, and ``speedup_same_format`` says how
  much of the speedup is not the layout.
* ``<space>-step``: one SGD step of supernet training on one sampled path
  (SPOS): ``ours`` runs ``supernet(x, path)``; ``eager`` runs
  :class:`~pynas.perf.reference_paths.ReferencePathSupernet`, the same weights
  in a plain ``ops[layer][choice](x)`` loop.
* ``<space>-fair``: one SGD step on m paths (FairNAS's strict fairness: m is the
  number of choices per layer and every choice of every layer is in exactly one
  path): ``batched`` runs ``supernet.forward_paths(x, paths)`` and one
  backward; ``sequential`` runs m forward/backward passes, then the step.

The two implementations of a training step are timed in alternation, call
by call (``timing.interleaved_median_ms``). Training steps use SPOS's recipe
(SGD, momentum 0.9, weight decay 4e-5, label smoothing 0.1, learning rate
0.5 per 1024 images). The step cases
compare the losses and the weight updates of one step taken from the same
weights on the same batch and path(s), dropout off.

The ``gpu`` preset uses the papers' networks, input sizes and SPOS's
evaluation batch (fewer recalibration and evaluation batches, see
``PRESETS``); ``cpu`` and ``quick`` reduce them and say so in the output and
in every record (``config.reduced``). A space that is not registered is
skipped with a note.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from pynas.algorithms.path_sampling import SPOS_DEFAULTS
from pynas.evaluation import auto_memory_format, evaluate_paths, evaluate_paths_sequential
from pynas.spaces import create_space, list_spaces

from . import results, timing
from .args import choices_list, parse_device_args, positive_int
from .reference_paths import ReferencePathSupernet, copy_supernet

SPACES = {"macro": "nasbench-macro", "spos": "spos-shufflenetv2"}
KINDS = ("eval", "step", "fair")
CASES = tuple(f"{space}-{kind}" for kind in KINDS for space in SPACES)
# (baseline, ours) of each kind; speedup = baseline ms / ours ms.
IMPLS = {"eval": ("sequential", "batched"), "step": ("eager", "ours"), "fair": ("sequential", "batched")}
# Eval cases: the one-path loop again, in the batched evaluation's memory format (information, no target).
SAME_FORMAT = "sequential_same_format"
STEP_SETS = 2  # distinct (batch, paths) sets the timed training steps cycle through (median_ms warms up on each)


@dataclass(frozen=True)
class Config:
    space: str  # registered name
    image: int  # input size (square)
    classes: int
    batch: int  # evaluation batch (recalibration and evaluation)
    recal_batches: int  # R
    eval_batches: int  # E
    train_batch: int  # step and fair cases
    options: dict = field(default_factory=dict)  # other create_space keywords (width)
    paths_per_pass: Optional[int] = None  # None: evaluate_paths' default for the device
    reduced: bool = False  # smaller than the papers' settings

    def build_space(self):
        return create_space(self.space, num_classes=self.classes, input_size=self.image, **self.options)

    def record(self, kind: str) -> dict:
        out = dict(space=self.space, image=self.image, classes=self.classes, options=dict(self.options),
                   reduced=self.reduced)
        if kind == "eval":
            return dict(out, batch=self.batch, recal_batches=self.recal_batches, eval_batches=self.eval_batches,
                        paths_per_pass=self.paths_per_pass)
        return dict(out, batch=self.train_batch)

    def describe(self, kind: str) -> str:
        size = " ".join([f"{self.image}x{self.image} {self.classes} classes",
                         *(f"{k}={v}" for k, v in self.options.items())])
        if kind == "eval":
            return f"{size} batch {self.batch} R={self.recal_batches} E={self.eval_batches}"
        return f"{size} batch {self.train_batch}"


@dataclass(frozen=True)
class Preset:
    configs: dict  # "macro" / "spos" -> Config
    paths: tuple  # P of the eval cases
    repeats: int  # timed evaluations per (impl, P), after one warm-up
    step_warmup: int  # at least STEP_SETS
    step_repeats: int  # timed training steps per impl


PRESETS = {
    # NAS-Bench-Macro's CIFAR-10 network; SPOS's ImageNet supernet at 224x224, 1000 classes. Evaluation
    # batch 200 (SPOS's), R=20 recalibration and E=5 evaluation batches per path: SPOS recalibrates on
    # 20,000 training images and evaluates on 50,000 held-out ones, but both implementations scale
    # linearly with R + E, so fewer batches keep the ratio. Training batch 256 (SPOS trains with 1024;
    # FairNAS's 4-path batched step at 1024 would not fit one 80 GB GPU).
    "gpu": Preset({"macro": Config("nasbench-macro", 32, 10, 200, 20, 5, 256),
                   "spos": Config("spos-shufflenetv2", 224, 1000, 200, 20, 5, 256)}, (8, 32, 128), 2, 3, 10),
    # The same networks (SPOS's at 64x64 with 10 classes), batch 32, R=2, E=1, one timed evaluation
    # (each P=128 one is 384 forward passes per implementation and lasts seconds); 11 training steps
    # per implementation, since single steps vary by +-20% on 2 shared cores. About 13 minutes in all
    # on 2 cores (AMD EPYC).
    "cpu": Preset({"macro": Config("nasbench-macro", 32, 10, 32, 2, 1, 32, reduced=True),
                   "spos": Config("spos-shufflenetv2", 64, 10, 32, 2, 1, 32, reduced=True)}, (8, 32, 128), 1, 2, 11),
    # For the tests: narrow networks, tiny batches, seconds.
    "quick": Preset({"macro": Config("nasbench-macro", 16, 10, 4, 2, 1, 4, dict(init_channels=8, head_channels=32),
                                     reduced=True),
                     "spos": Config("spos-shufflenetv2", 64, 10, 4, 2, 1, 4, dict(width_multiplier=0.5),
                                    reduced=True)}, (2, 6), 1, 2, 2),
}


# ------------------------------------------------------------------ building
def space_missing(name: str) -> Optional[str]:
    """Why space ``name`` cannot be created here (a space still being written), or None."""
    return None if name in list_spaces() else f"no space {name!r} is registered in pynas.spaces"


def build_supernet(cfg: Config, device: torch.device, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # the spaces initialise weights from the global generator
    return cfg.build_space().build_supernet().to(device)


def fair_paths(space, generator: torch.Generator) -> torch.Tensor:
    """FairNAS's strictly fair m paths ``[m, L]``: column l is a random permutation of layer l's choices."""
    m = max(space.num_choices)
    cols = [torch.cat([torch.randperm(k, generator=generator) for _ in range(-(-m // k))])[:m]
            for k in space.num_choices]
    return torch.stack(cols, 1)


def _batch(n: int, cfg: Config, device: torch.device, g: torch.Generator):
    x = torch.randn(n, 3, cfg.image, cfg.image, generator=g)
    return x.to(device), torch.randint(0, cfg.classes, (n,), generator=g).to(device)


def sgd(net: nn.Module, batch: int) -> torch.optim.SGD:
    """SPOS's supernet optimiser: learning rate 0.5 at batch 1024, scaled linearly to ``batch``."""
    lr = 0.5 * batch / SPOS_DEFAULTS["base_batch_size"]
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=SPOS_DEFAULTS["momentum"],
                           weight_decay=SPOS_DEFAULTS["weight_decay"])


def train_step(kind: str, impl: str, net: nn.Module, opt: torch.optim.Optimizer):
    """One SGD step on ``(x, y, paths)`` (as ``SinglePathSearch.step``): returns the summed loss of the paths."""
    smoothing = SPOS_DEFAULTS["label_smoothing"]

    def step(s):
        x, y, paths = s
        opt.zero_grad(set_to_none=True)
        if kind == "fair" and impl == "batched":
            logits = net.forward_paths(x, paths)  # [m, n, classes], row p * n + i follows path p
            m, n = logits.shape[:2]
            # Sum over paths of each path's mean loss: the gradients of m separate passes.
            loss = F.cross_entropy(logits.reshape(m * n, -1), y.repeat(m), label_smoothing=smoothing,
                                   reduction="none").view(m, n).mean(1).sum()
            loss.backward()
        else:
            loss = torch.zeros((), device=x.device)
            for path in paths.tolist():
                one = F.cross_entropy(net(x, path), y, label_smoothing=smoothing)
                one.backward()
                loss = loss + one.detach()
        opt.step()
        return loss.detach()
    return step


def _step_net(impl: str, supernet: nn.Module, dropout: bool = True) -> nn.Module:
    """A separate copy for ``impl`` in training mode: every impl starts from the same weights.

    ``dropout=False`` turns dropout off (SPOS's head has one), so that two
    implementations can be compared: FairNAS's batched step draws its masks
    for all paths at once, the sequential one path by path.
    """
    net = ReferencePathSupernet(supernet) if impl == "eager" else copy_supernet(supernet)
    net.train()
    for m in net.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train(dropout)
    return net


# ------------------------------------------------------------------ running
def _timed(fn, arg_sets, device, *, warmup, repeats) -> dict:
    ticks = timing.cpu_ticks()
    ms = timing.median_ms(fn, arg_sets, device, warmup=warmup, repeats=repeats)
    return dict(ms=ms, others_cpu_share=timing.others_share(ticks, timing.cpu_ticks()))


def _attempt(what: str, notes: list, fn):
    """``fn()``, or None with a note when it runs out of memory or fails."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        notes.append(f"{what} skipped, out of memory")
    except Exception as err:
        notes.append(f"ERROR {what} failed, {timing.failure_reason(err)}")
    return None


def run_eval(name: str, cfg: Config, supernet: nn.Module, counts, device, *, repeats, notes):
    """{P: ({impl: timing}, max_diff)} for each P of ``counts``."""
    g = torch.Generator().manual_seed(1)
    recal = [_batch(cfg.batch, cfg, device, g) for _ in range(cfg.recal_batches)]
    data = [_batch(cfg.batch, cfg, device, g) for _ in range(cfg.eval_batches)]
    kwargs = dict(recalibrate_batches=cfg.recal_batches, recalibrate_data=recal, eval_batches=cfg.eval_batches)
    funcs = {"sequential": lambda paths: evaluate_paths_sequential(supernet, paths, data, **kwargs),
             "batched": lambda paths: evaluate_paths(supernet, paths, data, paths_per_pass=cfg.paths_per_pass,
                                                     **kwargs),
             SAME_FORMAT: lambda paths: evaluate_paths_sequential(supernet, paths, data, memory_format=fmt, **kwargs)}
    # The batched evaluation's memory format on this device; when it is not the inputs' own, the one-path
    # loop is also timed in it, so the records separate the layout's gain from the batching's.
    fmt = auto_memory_format(device)
    impls = list(IMPLS["eval"]) + ([SAME_FORMAT] if fmt != "preserve" else [])
    out = {}
    for count in counts:
        paths = supernet.space.sample(count, generator=torch.Generator().manual_seed(count))
        measured, scores = {}, {}

        def timed(impl):
            def call(_):
                scores[impl] = funcs[impl](paths)  # the last call's scores are compared
            return _timed(call, [None], device, warmup=1, repeats=repeats)

        for impl in impls:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            m = _attempt(f"{name} P={count}: {impl}", notes, lambda: timed(impl))
            if m is not None:
                measured[impl] = dict(m, settings=scores[impl].settings)
        diff = None
        if "batched" in scores and "sequential" in scores:
            a, b = scores["batched"], scores["sequential"]
            diff = dict(accuracy=float((a.accuracy - b.accuracy).abs().max()),
                        loss=float((a.loss - b.loss).abs().max()), samples=b.samples)
        out[count] = (measured, diff)
    return out


def run_step(name: str, kind: str, cfg: Config, supernet: nn.Module, device, *, warmup, repeats, notes):
    """({impl: timing}, max_diff) of one training step per impl."""
    g = torch.Generator().manual_seed(2)
    space = supernet.space
    sets = [(*_batch(cfg.train_batch, cfg, device, g),
             fair_paths(space, g) if kind == "fair" else space.sample(1, generator=g)) for _ in range(STEP_SETS)]
    start = [p.detach().clone() for p in supernet.parameters()]
    measured, after, steps = {}, {}, {}
    for impl in IMPLS[kind]:
        if device.type == "cuda":
            torch.cuda.empty_cache()

        def agree_then_build():
            # One step from the shared initial weights, kept for the comparison; then a fresh copy to time.
            net = _step_net(impl, supernet, dropout=False)
            loss = train_step(kind, impl, net, sgd(net, cfg.train_batch))(sets[0])
            params = list(net.parameters())
            if [p.shape for p in params] != [p.shape for p in start]:
                raise RuntimeError("its parameters do not line up with the supernet's")
            after[impl] = (float(loss), [p.detach() - p0 for p, p0 in zip(params, start)])
            net = _step_net(impl, supernet)
            return train_step(kind, impl, net, sgd(net, cfg.train_batch))

        step = _attempt(f"{name}: {impl}", notes, agree_then_build)
        if step is not None:
            steps[impl] = step

    def timed_together():
        # Both steps in alternation, call by call: a drifting machine biases neither.
        ticks = timing.cpu_ticks()
        ms = timing.interleaved_median_ms(steps, sets, device, warmup=warmup, repeats=repeats)
        share = timing.others_share(ticks, timing.cpu_ticks())
        return {impl: dict(ms=v, others_cpu_share=share) for impl, v in ms.items()}

    if steps:
        measured = _attempt(f"{name}: timing", notes, timed_together) or {}
    diff = None
    if len(after) == 2:
        (la, da), (lb, db) = (after[impl] for impl in IMPLS[kind])
        # The updates' difference relative to the largest update: float32 rounding, amplified where batch
        # norms see few values, makes small absolute differences in large gradients.
        largest = max(float(d.abs().max()) for d in da)
        worst = max(float((a - b).abs().max()) for a, b in zip(da, db))
        diff = dict(loss=abs(la - lb), update=worst / largest if largest > 0 else float(worst > 0))
    return measured, diff


def records(name: str, kind: str, cfg: Config, count: int, measured: dict, diff, meta: dict) -> list[dict]:
    base, ours = IMPLS[kind]
    rows = []
    for impl, m in measured.items():
        speedup = measured[base]["ms"] / m["ms"] if impl == ours and base in measured else None
        same = measured.get(SAME_FORMAT)
        extra = {}
        if impl == ours and same is not None:
            extra["speedup_same_format"] = same["ms"] / m["ms"]
        if "settings" in m:
            extra["settings"] = {k: v for k, v in m["settings"].items() if k != "device"}
        rows.append(dict(bench="paths", case=name, kind=kind, impl=impl, baseline=base, paths=count,
                         config=cfg.record(kind), setup=cfg.describe(kind), ms=m["ms"],
                         paths_per_s=count * 1e3 / m["ms"], speedup=speedup, max_diff=diff,
                         others_cpu_share=m["others_cpu_share"], **extra, **meta))
    return rows


# ------------------------------------------------------------------ output
def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _times(v):
    return "-" if v is None else f"{v:.2f}x"


def _diff(d) -> str:
    return "-" if not d else " ".join(f"{k} {v:.1e}" for k, v in d.items() if k != "samples")


def format_table(rows: list[dict]) -> str:
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["case"], r["paths"]), {})[r["impl"]] = r
    head = ["case", "config", "P", "baseline", "base ms", "ours ms", "speedup", "base paths/s", "ours paths/s",
            "max |diff|"]
    lines = [head]
    for (case, count), impls in by_key.items():
        r = next(iter(impls.values()))
        base, ours = impls.get(r["baseline"], {}), impls.get(IMPLS[r["kind"]][1], {})
        lines.append([case, r["setup"], str(count), r["baseline"], _fmt(base.get("ms"), ".1f"),
                      _fmt(ours.get("ms"), ".1f"), _times(ours.get("speedup")), _fmt(base.get("paths_per_s"), ".1f"),
                      _fmt(ours.get("paths_per_s"), ".1f"), _diff(r["max_diff"])])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    left = (0, 1, 3, 9)
    return "\n".join("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     .rstrip() for line in lines)


# ------------------------------------------------------------------ targets
def _verdict(text: str, ok: bool) -> tuple[str, bool]:
    return f"{text} {'PASS' if ok else 'FAIL'}", ok


def tolerance(device: torch.device) -> float:
    """Largest loss difference accepted between two implementations (TF32 convolutions on CUDA)."""
    return 1e-2 if device.type == "cuda" else 1e-3


UPDATE_TOLERANCE = 5e-2  # of the largest weight update; a wrong gradient is off by O(1)


def evaluate_targets(rows: list[dict], device: torch.device) -> list[tuple[str, bool]]:
    """(line, passed): speed targets, and agreement of every pair of implementations.

    Evaluation: batched >= 4x (GPU) / 2x (CPU) faster than sequential at the
    largest P measured. Single-path step: ours no slower than eager (>= 0.95x,
    timing noise). Agreement: losses within :func:`tolerance`, accuracies
    within one sample (a near-tie may flip under rounding), the weight updates
    of one training step within :data:`UPDATE_TOLERANCE` of the largest one.
    """
    where = "gpu" if device.type == "cuda" else "cpu"
    tol = tolerance(device)
    ours = [r for r in rows if r["impl"] == IMPLS[r["kind"]][1]]
    out = []
    for space in SPACES:
        evals = [r for r in ours if r["case"] == f"{space}-eval" and r["speedup"] is not None]
        if evals:
            r = max(evals, key=lambda r: r["paths"])
            need, x = (4.0 if where == "gpu" else 2.0), r["speedup"]
            scope = " (reduced config)" if r["config"]["reduced"] else ""
            out.append(_verdict(f"TARGET {where} {space} evaluation of {r['paths']} paths, batched vs sequential"
                                f"{scope}: {x:.2f}x (need >= {need:.0f}x)", x >= need))
        r = next((r for r in ours if r["case"] == f"{space}-step" and r["speedup"] is not None), None)
        if r is not None:
            scope = " (reduced config)" if r["config"]["reduced"] else ""
            out.append(_verdict(f"TARGET {where} {space} single-path step, ours vs eager{scope}: {r['speedup']:.2f}x "
                                f"(need >= 0.95x: no slower, within timing noise)", r["speedup"] >= 0.95))
    for r in ours:
        d = r["max_diff"]
        if d is None:
            continue
        if r["kind"] == "eval":
            ok = d["loss"] <= tol and d["accuracy"] <= 100.0 / d["samples"] + 1e-9
            text = f"max |acc diff| {d['accuracy']:.3g} pp, max |loss diff| {d['loss']:.1e}"
        else:
            ok = d["loss"] <= tol and d["update"] <= UPDATE_TOLERANCE
            text = f"|loss diff| {d['loss']:.1e}, max |update diff| {d['update']:.1e} of the largest update"
        out.append(_verdict(f"AGREE {r['case']} P={r['paths']} {r['impl']} vs {r['baseline']}: {text}", ok))
    return out


def info_lines(rows: list[dict]) -> list[str]:
    """Measurements without a target: smaller P of the evaluations, the FairNAS step."""
    out = []
    for space in SPACES:
        evals = sorted((r for r in rows if r["case"] == f"{space}-eval" and r["speedup"] is not None),
                       key=lambda r: r["paths"])
        for r in evals[:-1]:
            out.append(f"INFO {space} evaluation of {r['paths']} paths, batched vs sequential: {r['speedup']:.2f}x")
        for r in evals:
            if r.get("speedup_same_format") is not None:
                s = r.get("settings", {})
                out.append(f"INFO {space} evaluation of {r['paths']} paths, batched ({s.get('strategy')}) vs the "
                           f"one-path loop in the same memory format ({s.get('memory_format')}): "
                           f"{r['speedup_same_format']:.2f}x")
        for r in rows:
            if r["case"] == f"{space}-fair" and r["speedup"] is not None:
                out.append(f"INFO {space} FairNAS {r['paths']}-path step, batched vs sequential: "
                           f"{r['speedup']:.2f}x (no target)")
    return out


# ------------------------------------------------------------------ CLI
def _counts(text: str) -> list[int]:
    try:
        values = [positive_int(t.strip()) for t in text.split(",") if t.strip()]
    except argparse.ArgumentTypeError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers, got {text!r}")
    return list(dict.fromkeys(values))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.paths", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=list(PRESETS), help="sizes (default: gpu on CUDA, cpu otherwise)")
    p.add_argument("--cases", type=choices_list(list(CASES)), default=list(CASES),
                   help="comma-separated cases (default: all)")
    p.add_argument("--paths", type=_counts, help="comma-separated P of the eval cases (default: per preset)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--results-dir", default="bench/results", help="where <device>.json is appended")
    p.add_argument("--repeats", type=positive_int,
                   help="timed evaluations / training steps per measurement (default: per preset)")
    p.add_argument("--check-targets", action="store_true", help="exit with 1 when a target or agreement fails")
    return parse_device_args(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    name = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    preset = PRESETS[name]
    counts = args.paths or list(preset.paths)
    repeats = args.repeats or preset.repeats
    step_repeats = args.repeats or preset.step_repeats
    dev_name = results.device_name(device)
    meta = dict(device=dev_name, torch=torch.__version__, commit=results.git_commit(), date=results.now_iso(),
                preset=name, threads=torch.get_num_threads())
    print(f"device: {dev_name} | torch {meta['torch']} | commit {meta['commit']} | threads {meta['threads']}")
    print(f"preset {name}: evaluations median of {repeats} after 1 warm-up, P = {', '.join(map(str, counts))}; "
          f"training steps median of {step_repeats} after {preset.step_warmup} warm-up")
    spaces = list(dict.fromkeys(c.split("-")[0] for c in args.cases))
    if any(preset.configs[s].reduced for s in spaces):
        print(f"REDUCED CONFIGURATION ({name} preset), not the papers' sizes (see the gpu preset):")
        for s in spaces:
            cfg = preset.configs[s]
            print(f"  {s}: eval {cfg.describe('eval')}; training steps {cfg.describe('step')}")
    sys.stdout.flush()

    notes: list[str] = []
    notes += timing.load_notes(device)
    rows: list[dict] = []
    supernets: dict[str, nn.Module] = {}
    for i, case in enumerate(args.cases, 1):
        space, kind = case.split("-")
        cfg = preset.configs[space]
        missing = space_missing(cfg.space)
        if missing:
            notes.append(f"{case}: skipped, {missing}")
            continue
        t0 = time.perf_counter()
        if space not in supernets:
            supernets[space] = _attempt(f"{case}: building the {cfg.space} supernet", notes,
                                        lambda: build_supernet(cfg, device))
        supernet = supernets[space]
        if supernet is None:
            continue
        if kind == "eval":
            for count, (measured, diff) in run_eval(case, cfg, supernet, counts, device, repeats=repeats,
                                                    notes=notes).items():
                rows += records(case, kind, cfg, count, measured, diff, meta)
        else:
            measured, diff = run_step(case, kind, cfg, supernet, device, warmup=preset.step_warmup,
                                      repeats=step_repeats, notes=notes)
            count = max(supernet.space.num_choices) if kind == "fair" else 1
            rows += records(case, kind, cfg, count, measured, diff, meta)
        print(f"[{i}/{len(args.cases)}] {case} {cfg.describe(kind)}: {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
    for r in rows:
        share = r["others_cpu_share"]
        if device.type == "cpu" and share is not None and share > timing.OTHERS_WARN:
            notes.append(f"WARNING {r['case']} P={r['paths']}: other processes took {share:.0%} of the CPU time "
                         f"while {r['impl']} was timed; its timing is not trustworthy")

    results.report(format_table(rows), notes, args.results_dir, dev_name, rows)
    return results.verdict(evaluate_targets(rows, device), notes, check_targets=args.check_targets,
                           info=info_lines(rows))
