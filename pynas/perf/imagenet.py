"""ImageNet input-pipeline benchmark: training images per second at 224x224, ours against the papers' loader.

    python -m bench.imagenet [--preset quick|cpu|gpu] [--data DIR] [--images N] [--batch-size B]
                             [--workers 1,2] [--rounds R] [--impls baseline,ours,ours-pillow] [--step]
                             [--device cpu|cuda] [--results-dir bench/results] [--check-targets]

The data: ``--data DIR`` reads ``DIR/train/<class>/*`` (an ImageNet folder or one written by
``pynas data imagenet-like``; written there first when DIR has no train/), otherwise an ImageNet-like
folder of the preset's size is generated in a temporary folder (see :mod:`pynas.data.synthetic`:
CIFAR-10 photographs upscaled to ImageNet's sizes, JPEG quality 90, 4:2:0). Every file is read once
before timing, so every implementation reads from the page cache.

Two implementations load the same files, in shuffled order, as float32 [B, 3, 224, 224] batches
normalized with ImageNet's mean and std, with labels:

* ``baseline``: what the papers' code does with torchvision, written here with Pillow and torch:
  ``torch.utils.data.DataLoader`` over a dataset whose ``__getitem__`` opens the file, decodes it
  whole (``convert("RGB")``), draws torchvision's RandomResizedCrop(224) parameters (scale
  0.08-1, ratio 3/4-4/3, ten tries then a centre crop), crops and resizes bilinearly with
  Pillow's antialiasing, flips with probability 1/2, converts as ToTensor does (uint8 HWC ->
  float CHW / 255) and normalizes, one sample at a time; the default collate stacks them;
* ``ours``: :class:`pynas.data.stream.StreamLoader` over a :class:`pynas.data.stream.FileDataset`
  of the same files (``train=True``: its random-resized-crop and flip), with its default decoder:
  the region JPEG decoder (``pynas._jpeg``) where it was built;
* ``ours-pillow`` (on request): the same loader decoding with Pillow (``decoder="pillow"``: full
  or draft-scaled decode), to show what the region decoder adds.

``--workers 1,N`` runs each with one worker process (the per-core rate) and with N (default: every
core this process may use). A pass is one epoch over the files with a fresh iterator; its rate is
the images after the first batch over the time after the first batch (worker start-up excluded:
``startup_s`` records it), and ``rate_with_startup`` counts everything. The implementations are
alternated in rounds (baseline first in even rounds, ours first in odd ones) and each figure is
the median over rounds; ``vs_baseline`` is the median over rounds of ours / baseline of the same
round. ``cpu_ms_per_image`` is the CPU time of the whole process tree (main process and workers)
per image of a pass, start-up included, and ``cpu_vs_baseline`` the baseline's over ours, round by
round: the per-core figure free of how the main process and the workers share the cores. Each
record holds the load average around its passes and ``others_cpu_share``: the share
of the machine's busy CPU time that processes outside this benchmark's process tree (its worker
processes included) took during its passes; above a few percent the figure is suspect.

``--step`` adds (c): supernet training steps of SPOS's ShuffleNetV2 supernet at 224x224
(``spos-shufflenetv2``, one uniformly sampled path per step, SGD) fed by each loader with every
worker, against the same steps on one batch held in memory: ``data_bound`` when feeding makes a
step more than 10% slower.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from . import results, timing
from pynas.data.decode import ratio_clamped_centre_crop

from .args import choices_list, parse_device_args, positive_int

IMPLS = ("baseline", "ours", "ours-pillow")
DEFAULT_IMPLS = ("baseline", "ours")
IMAGE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
TARGET_PER_CORE = 2.0  # ours / baseline with one worker
DATA_BOUND = 1.10  # a fed step this much slower than a step on a held batch is data-bound


@dataclass(frozen=True)
class Preset:
    classes: int  # of a generated folder
    per_class: int  # train images per class of a generated folder
    batch: int
    rounds: int
    all_workers: bool  # also time with every core's worth of workers
    step_batch: int
    step_steps: int
    step_width: float  # width_multiplier of the supernet


PRESETS = {
    # For the tests: 16 files, one round, one worker, a narrow supernet.
    "quick": Preset(4, 4, 4, 1, False, 2, 2, 0.25),
    # 2 shared cores: 600 files (about 45 MB), 3 rounds, batch 32 (the papers' 256 per GPU would leave
    # a pass of 2 batches); SPOS's supernet at width 0.5 with batch 8 for the steps.
    "cpu": Preset(10, 60, 32, 3, True, 8, 4, 0.5),
    # A GPU machine's cores (16 on the lent ones): 5,000 files, batch 256 as in SPOS.
    "gpu": Preset(100, 50, 256, 3, True, 64, 10, 1.0),
}


# ------------------------------------------------------------------ baseline
def random_resized_crop_params(width: int, height: int, scale=RRC_SCALE, ratio=RRC_RATIO) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop as torchvision's RandomResizedCrop.get_params draws it
    (from the global torch generator, as there)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,)).item())
            left = int(torch.randint(0, width - w + 1, size=(1,)).item())
            return top, left, h, w
    # Fallback: the largest centred crop within the ratio range (the same geometry as the streaming loader's).
    left, top, w, h = ratio_clamped_centre_crop(width, height, ratio)
    return top, left, h, w


class BaselineImageSet(torch.utils.data.Dataset):
    """The papers' per-sample pipeline: full decode, RandomResizedCrop, flip, ToTensor, Normalize."""

    def __init__(self, paths, labels, mean=IMAGENET_MEAN, std=IMAGENET_STD, size: int = IMAGE):
        self.paths, self.labels, self.size = list(paths), [int(v) for v in labels], size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        with open(self.paths[index], "rb") as f:  # torchvision's pil_loader
            image = Image.open(f)
            image = image.convert("RGB")
        top, left, h, w = random_resized_crop_params(*image.size)
        image = image.crop((left, top, left + w, top + h)).resize((self.size, self.size), Image.Resampling.BILINEAR)
        if torch.rand(1).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = torch.from_numpy(np.array(image, np.uint8, copy=True))
        x = pixels.view(image.size[1], image.size[0], 3).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return x.sub(self.mean).div(self.std), self.labels[index]


def baseline_loader(paths, labels, classes, *, batch_size: int, workers: int, seed: int, device: torch.device):
    data = BaselineImageSet(paths, labels)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       generator=torch.Generator().manual_seed(seed),
                                       pin_memory=device.type == "cuda", drop_last=False)


# ------------------------------------------------------------------ ours
def stream_missing() -> Optional[str]:
    """Why pynas.data.stream cannot be used here, or None."""
    try:
        from pynas.data.stream import FileDataset, StreamLoader  # noqa: F401
    except ImportError as err:
        return f"pynas.data.stream is not available ({err})"
    return None


def ours_loader(paths, labels, classes, *, batch_size: int, workers: int, seed: int, device: torch.device,
                decoder: str = "auto"):
    from pynas.data.stream import FileDataset, StreamLoader

    data = FileDataset(paths=list(paths), labels=torch.as_tensor(labels, dtype=torch.int64), classes=tuple(classes),
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, name="imagenet-bench/train", image_size=IMAGE)
    return StreamLoader(data, batch_size=batch_size, shuffle=True, train=True, colour_jitter=None, drop_last=False,
                        seed=seed, device=str(device), workers=workers, prefetch=2, decoder=decoder)


def ours_pillow_loader(paths, labels, classes, **kw):
    return ours_loader(paths, labels, classes, decoder="pillow", **kw)


LOADERS: dict[str, Callable] = {"baseline": baseline_loader, "ours": ours_loader, "ours-pillow": ours_pillow_loader}
_TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else None


# ------------------------------------------------------------------ CPU accounting
def _proc_stat(pid: str) -> Optional[tuple[int, int]]:
    """(parent pid, clock ticks of the process and its reaped children) of /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), sum(int(v) for v in fields[11:15])  # ppid; utime stime cutime cstime
    except (OSError, ValueError, IndexError):
        return None


def tree_ticks() -> Optional[tuple[int, int]]:
    """(busy clock ticks of the whole machine, ticks of this process and all its descendants), or None off
    Linux. Finished children count through this process's cutime/cstime once reaped, live ones by their
    own /proc entries, so the difference of two readings is the tree's CPU time in between."""
    machine = timing.cpu_ticks()
    if machine is None:
        return None
    me = str(os.getpid())
    stats = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            s = _proc_stat(pid)
            if s is not None:
                stats[pid] = s
    children: dict[str, list[str]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(str(ppid), []).append(pid)
    total, todo = 0, [me]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo += children.get(pid, [])
    return machine[0], total


def others_share(before, after) -> Optional[float]:
    if before is None or after is None or after[0] <= before[0]:
        return None
    busy = after[0] - before[0]
    return max(0.0, busy - (after[1] - before[1])) / busy


def _load() -> Optional[float]:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


# ------------------------------------------------------------------ one pass
def check_batch(images, labels, batch_size: int, classes: int) -> Optional[str]:
    """What is wrong with a training batch, or None."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.float32 or images.dim() != 4 \
            or tuple(images.shape[1:]) != (3, IMAGE, IMAGE) or not 0 < images.shape[0] <= batch_size:
        return f"images must be float32 [<= {batch_size}, 3, {IMAGE}, {IMAGE}], got " \
               f"{getattr(images, 'dtype', type(images).__name__)} {list(getattr(images, 'shape', []))}"
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
        return f"labels must be int64 [{images.shape[0]}], got {getattr(labels, 'dtype', type(labels).__name__)}"
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        return f"labels must lie in 0..{classes - 1}"
    values = images.float()
    if not torch.isfinite(values).all() or values.abs().max() > 10 or values.std() < 0.05:
        return "images are not finite ImageNet-normalized pixels (|x| <= 10, some spread)"
    return None


def time_pass(make_loader: Callable[[], object], batch_size: int, classes: int, device: torch.device) -> dict:
    """One epoch with a fresh iterator: images, seconds, start-up, the checked first batch."""
    ticks, load_before = tree_ticks(), _load()
    t0 = time.perf_counter()
    loader = make_loader()
    it = iter(loader)
    first = None
    images = first_images = 0
    problem = None
    for x, y in it:
        if first is None:
            timing.synchronize(device)
            first = time.perf_counter()
            first_images = int(x.shape[0])
            problem = check_batch(x.cpu() if x.device.type != "cpu" else x, y.cpu(), batch_size, classes)
        images += int(x.shape[0])
    timing.synchronize(device)
    end = time.perf_counter()
    del it, loader
    if first is None:
        raise RuntimeError("the loader yielded no batch")
    steady = images - first_images
    after = tree_ticks()
    cpu_ms = (after[1] - ticks[1]) * _TICK_MS / images if ticks and after and _TICK_MS else None
    return dict(images=images, seconds=end - t0, startup_s=first - t0, cpu_ms_per_image=cpu_ms,
                rate=steady / (end - first) if steady and end > first else None,
                rate_with_startup=images / (end - t0), problem=problem,
                others_cpu_share=others_share(ticks, after), load_before=load_before, load_after=_load())


# ------------------------------------------------------------------ data
def train_files(root: Path, limit: Optional[int], seed: int):
    """Paths, labels and classes of ``root/train`` (``limit``: a seeded sample of that many, by class)."""
    from pynas.data.images import scan_image_folder
    from pynas.data.loader import stratified_indices

    listing = scan_image_folder(root / "train")
    paths, labels = list(listing.paths), list(listing.labels)
    if limit is not None and limit < len(paths):
        keep = sorted(stratified_indices(torch.tensor(labels), limit, seed=seed).tolist())
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return paths, labels, listing.classes


def describe_files(paths) -> dict:
    """Read every file once (the page cache then holds them all) and summarise their sizes."""
    from PIL import Image

    pixels = nbytes = 0
    widths, heights = [], []
    for path in paths:
        with open(path, "rb") as f:
            nbytes += len(f.read())
        try:
            with Image.open(path) as image:
                widths.append(image.size[0])
                heights.append(image.size[1])
                pixels += image.size[0] * image.size[1]
        except Exception:  # noqa: BLE001 - an undecodable file: the loaders will meet it too
            pass
    n = max(1, len(widths))
    return dict(files=len(paths), mean_width=sum(widths) / n, mean_height=sum(heights) / n,
                mean_bytes=nbytes / max(1, len(paths)), bytes_per_pixel=nbytes / max(1, pixels))


def prepare_data(args, preset: Preset, workdir: Optional[str]) -> tuple[Path, str]:
    """The folder to read and how it was obtained."""
    from pynas.data.synthetic import generate_imagenet_like

    if args.data is not None:
        root = Path(args.data).expanduser()
        if (root / "train").is_dir():
            return root, "given"
        where = root
    else:
        where = Path(workdir) / "imagenet-like"
    print(f"generating an ImageNet-like folder in {where} ({preset.classes} classes x {preset.per_class} "
          f"train images)", flush=True)
    generate_imagenet_like(where, classes=preset.classes, train_per_class=preset.per_class, val_per_class=0,
                           seed=args.seed, source=args.source, workers=len(os.sched_getaffinity(0))
                           if hasattr(os, "sched_getaffinity") else 1)
    return where, "generated"


# ------------------------------------------------------------------ loader runs
def run_loaders(args, preset: Preset, files, device: torch.device, notes: list) -> list[dict]:
    paths, labels, classes = files
    impls = list(args.impls)
    if (why := stream_missing()):
        for impl in ("ours", "ours-pillow"):
            if impl in impls:
                notes.append(f"{impl}: skipped, {why}")
                impls.remove(impl)
    rates: dict[tuple[str, int], list[dict]] = {}
    for r in range(args.rounds):
        for wi, workers in enumerate(args.workers):
            order = impls if (r + wi) % 2 == 0 else impls[::-1]  # alternated: no one always goes first
            for impl in order:
                def make(impl=impl, workers=workers, r=r):
                    return LOADERS[impl](paths, labels, classes, batch_size=args.batch_size, workers=workers,
                                         seed=args.seed + r, device=device)
                try:
                    result = time_pass(make, args.batch_size, len(classes), device)
                except Exception as err:  # noqa: BLE001 - report and go on
                    notes.append(f"ERROR {impl} workers={workers} round {r}: {timing.failure_reason(err)}")
                    continue
                if result["problem"]:
                    notes.append(f"ERROR {impl} workers={workers}: bad batch: {result['problem']}")
                result["round"] = r
                rates.setdefault((impl, workers), []).append(result)
                rate = result["rate"]
                print(f"round {r + 1}/{args.rounds} workers={workers} {impl}: "
                      + (f"{rate:.1f} images/s" if rate else "-")
                      + f" (start-up {result['startup_s']:.2f} s, others {_pct(result['others_cpu_share'])}, "
                        f"load {result['load_after']:.2f})", file=sys.stderr, flush=True)
    rows = []
    for (impl, workers), passes in rates.items():
        steady = [p["rate"] for p in passes if p["rate"]]
        others = [p["others_cpu_share"] for p in passes if p["others_cpu_share"] is not None]
        cpu = [p["cpu_ms_per_image"] for p in passes if p["cpu_ms_per_image"]]
        rate = statistics.median(steady) if steady else None
        row = dict(kind="loader", impl=impl, workers=workers, rate=rate,
                   rate_per_worker=rate / workers if rate else None,
                   rate_with_startup=statistics.median(p["rate_with_startup"] for p in passes),
                   startup_s=statistics.median(p["startup_s"] for p in passes),
                   rounds=[p["rate"] for p in passes], images=passes[0]["images"],
                   others_cpu_share=statistics.median(others) if others else None,
                   others_cpu_share_max=max(others) if others else None,
                   load=[min(p["load_before"] for p in passes), max(p["load_after"] for p in passes)]
                   if passes[0]["load_before"] is not None else None,
                   cpu_ms_per_image=statistics.median(cpu) if cpu else None,
                   batch_size=args.batch_size, vs_baseline=None, cpu_vs_baseline=None,
                   bad_batch=any(p["problem"] for p in passes))
        if impl != "baseline" and ("baseline", workers) in rates:
            base = {b["round"]: b for b in rates["baseline", workers]}
            pairs = [o["rate"] / base[o["round"]]["rate"] for o in passes
                     if o["rate"] and o["round"] in base and base[o["round"]]["rate"]]
            row["vs_baseline"] = statistics.median(pairs) if pairs else None
            cpu_pairs = [base[o["round"]]["cpu_ms_per_image"] / o["cpu_ms_per_image"] for o in passes
                         if o["cpu_ms_per_image"] and o["round"] in base and base[o["round"]]["cpu_ms_per_image"]]
            row["cpu_vs_baseline"] = statistics.median(cpu_pairs) if cpu_pairs else None
        rows.append(row)
    return rows


# ------------------------------------------------------------------ (c) training steps
def run_steps(args, preset: Preset, files, device: torch.device, notes: list) -> list[dict]:
    import torch.nn.functional as F

    from pynas.spaces import create_space, list_spaces

    paths, labels, classes = files
    if "spos-shufflenetv2" not in list_spaces():
        notes.append("step: skipped, no space 'spos-shufflenetv2' is registered")
        return []
    torch.manual_seed(args.seed)
    space = create_space("spos-shufflenetv2", num_classes=len(classes), input_size=IMAGE,
                         width_multiplier=preset.step_width)
    net = space.build_supernet().to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(args.seed)

    def step(x, y):
        path = space.sample(1, generator=g).tolist()[0]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x.to(device, non_blocking=True), path), y.to(device, non_blocking=True)).backward()
        opt.step()

    workers = max(args.workers)
    impls = [i for i in args.impls if i == "baseline" or stream_missing() is None]
    rows = []
    for impl in impls:
        loader = LOADERS[impl](paths, labels, classes, batch_size=preset.step_batch, workers=workers, seed=args.seed,
                               device=device)
        it = iter(loader)
        held = None
        try:
            x, y = next(it)  # start-up and the first (warm-up) step
            held = (x, y)
            step(x, y)
            ticks = tree_ticks()
            timing.synchronize(device)
            t0 = time.perf_counter()
            done = 0
            for x, y in it:
                step(x, y)
                done += 1
                if done == preset.step_steps:
                    break
            timing.synchronize(device)
            fed = (time.perf_counter() - t0) / max(done, 1)
            fed_others = others_share(ticks, tree_ticks())
        except Exception as err:  # noqa: BLE001
            notes.append(f"ERROR step {impl}: {timing.failure_reason(err)}")
            continue
        finally:
            del it, loader
        if done < preset.step_steps:
            notes.append(f"step {impl}: only {done} batches after the first ({len(paths)} files, batch "
                         f"{preset.step_batch}); the fed steps are fewer than asked")
        ticks = tree_ticks()
        held_ms = timing.median_ms(lambda _: step(*held), [None], device, warmup=1, repeats=preset.step_steps)
        rows.append(dict(kind="step", impl=impl, workers=workers, space="spos-shufflenetv2",
                         width_multiplier=preset.step_width, batch_size=preset.step_batch, steps=done,
                         fed_ms=fed * 1e3, held_ms=held_ms, fed_over_held=fed * 1e3 / held_ms,
                         data_bound=fed * 1e3 / held_ms > DATA_BOUND, others_cpu_share=fed_others,
                         others_cpu_share_held=others_share(ticks, tree_ticks()), load=_load()))
        print(f"step {impl}: fed {fed * 1e3:.0f} ms, held batch {held_ms:.0f} ms", file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------ output
def _pct(v) -> str:
    return "-" if v is None else f"{v:.0%}"


def _fmt(v, spec) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[dict]) -> str:
    head = ["impl", "workers", "images/s", "per worker", "vs baseline", "CPU ms/img", "CPU vs base", "start-up s",
            "others", "load"]
    lines = [head]
    for r in (r for r in rows if r["kind"] == "loader"):
        load = "-" if not r["load"] else f"{r['load'][0]:.1f}-{r['load'][1]:.1f}"
        lines.append([r["impl"], str(r["workers"]), _fmt(r["rate"], ".1f"), _fmt(r["rate_per_worker"], ".1f"),
                      "-" if r["vs_baseline"] is None else f"{r['vs_baseline']:.2f}x",
                      _fmt(r["cpu_ms_per_image"], ".2f"),
                      "-" if r["cpu_vs_baseline"] is None else f"{r['cpu_vs_baseline']:.2f}x", _fmt(r["startup_s"], ".2f"),
                      _pct(r["others_cpu_share"]), load])
    steps = [r for r in rows if r["kind"] == "step"]
    if steps:
        lines.append(["step", "workers", "fed ms", "held ms", "fed/held", "bound", "", "", "others", "load"])
        for r in steps:
            lines.append([r["impl"], str(r["workers"]), f"{r['fed_ms']:.0f}", f"{r['held_ms']:.0f}",
                          f"{r['fed_over_held']:.2f}", "data" if r["data_bound"] else "compute", "", "",
                          _pct(r["others_cpu_share"]), _fmt(r["load"], ".1f")])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


def evaluate_targets(rows: list[dict]) -> list[tuple[str, bool]]:
    """Per core, two ways: the rate with one worker each, and the process tree's CPU time per image."""
    one = [r for r in rows if r["kind"] == "loader" and r["impl"] == "ours" and r["workers"] == 1]
    out = []
    for key, what in (("vs_baseline", "images/s with one worker"), ("cpu_vs_baseline", "CPU time per image")):
        x = one[0][key] if one else None
        if x is None:
            out.append((f"TARGET cpu loader per core vs baseline ({what}): not measured (needs ours and baseline "
                        "with --workers 1) FAIL", False))
            continue
        ok = x >= TARGET_PER_CORE
        out.append((f"TARGET cpu loader per core vs baseline ({what}): {x:.2f}x (need >= {TARGET_PER_CORE:.0f}x) "
                    f"{'PASS' if ok else 'FAIL'}", ok))
    return out


# ------------------------------------------------------------------ CLI
def _workers_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of positive integers, got {text!r}")
    return list(dict.fromkeys(values))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.imagenet", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=list(PRESETS), help="sizes (default: gpu on CUDA, cpu otherwise)")
    p.add_argument("--data", help="ImageNet-style folder with train/ (written there when it has none); "
                                  "default: a generated one in a temporary folder, removed afterwards")
    p.add_argument("--source", help="photographs for a generated folder (default: cifar10 in the data folder)")
    p.add_argument("--images", type=positive_int, help="use a class-stratified sample of N training files")
    p.add_argument("--batch-size", type=positive_int, dest="batch_size", help="default: per preset")
    p.add_argument("--workers", type=_workers_list,
                   help="comma-separated worker counts (default: 1 and every core, 1 only in the quick preset)")
    p.add_argument("--rounds", type=positive_int, help="alternated rounds (default: per preset)")
    p.add_argument("--impls", type=choices_list(IMPLS), default=list(DEFAULT_IMPLS),
                   help=f"some of {','.join(IMPLS)} (default: baseline,ours)")
    p.add_argument("--step", action="store_true", help="also time supernet training steps fed by each loader")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], help="where batches go (default: cuda when available)")
    p.add_argument("--results-dir", default="bench/results", help="where <device>.json is appended")
    p.add_argument("--check-targets", action="store_true", help="exit with 1 when a target fails")
    args = parse_device_args(p, argv)
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    preset_name = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    preset = PRESETS[preset_name]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    args.batch_size = args.batch_size or preset.batch
    args.rounds = args.rounds or preset.rounds
    args.workers = args.workers or ([1, cores] if preset.all_workers and cores > 1 else [1])
    dev_name = results.device_name(device)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pynas-bench-imagenet-") if args.data is None else nullcontext() as tmp:
        root, origin = prepare_data(args, preset, tmp)
        files = train_files(root, args.images, args.seed)
        data = describe_files(files[0])
        import PIL
        from PIL import features

        meta = dict(device=dev_name, torch=torch.__version__, commit=results.git_commit(), date=results.now_iso(),
                    preset=preset_name, cores=cores, pillow=PIL.__version__,
                    libjpeg_turbo=features.version("libjpeg_turbo") if features.check_feature("libjpeg_turbo")
                    else None, data=dict(origin=origin, root=str(root) if origin == "given" else None,
                                         classes=len(files[2]), **data), image=IMAGE)
        print(f"device: {dev_name} | torch {meta['torch']} | Pillow {meta['pillow']} | commit {meta['commit']}")
        print(f"data: {data['files']} files, {len(files[2])} classes, mean {data['mean_width']:.0f}x"
              f"{data['mean_height']:.0f} px, {data['mean_bytes'] / 1e3:.1f} KB ({data['bytes_per_pixel']:.2f} "
              f"bytes/pixel), {origin} | batch {args.batch_size} | workers {args.workers} | {args.rounds} rounds, "
              f"implementations alternated | load average {_fmt(_load(), '.2f')} on {cores} cores", flush=True)
        notes += timing.load_notes(torch.device("cpu"))
        notes.append("others: the share of the machine's busy CPU time taken by processes outside this benchmark's "
                     "process tree while a row was timed (median over rounds); above a few percent the row is "
                     "suspect")
        notes.append("images/s: after the first batch (worker start-up excluded), median over rounds; per worker "
                     "= images/s / workers; vs baseline = median over rounds of ours / baseline")
        rows = run_loaders(args, preset, files, device, notes)
        if args.step:
            rows += run_steps(args, preset, files, device, notes)
    rows = [{**r, **meta} for r in rows]
    if hasattr(os, "getloadavg"):
        notes.append("load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.1f}" for v in os.getloadavg())
                     + f" on {cores} cores")
    results.report(format_table(rows), notes, args.results_dir, dev_name, rows)
    return results.verdict(evaluate_targets(rows), notes, check_targets=args.check_targets)
