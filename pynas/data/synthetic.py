"""An ImageNet-like JPEG folder made from real photographs, for loader benchmarks and tests.

    pynas data imagenet-like --out DIR --classes 10 --train-per-class 100 --val-per-class 20 [--seed 0]
                             [--source ../shared/data/cifar10] [--grain 20] [--grayscale K] [--cmyk K]
                             [--corrupt K] [--workers N]

writes ``DIR/train/<wnid>/<wnid>_<i>.JPEG`` and ``DIR/val/<wnid>/ILSVRC2012_val_<n>.JPEG`` (ImageNet's
names; ``<wnid>`` is ``n00000000``, ``n00000001``, ...) plus ``DIR/synthetic.json`` (the parameters and
what was written). Class k takes its photographs from the source's class ``k mod C`` (C = 10 for
CIFAR-10; classes k and k + C use disjoint images while there are enough), train images from the
source's ``train/`` and val images from its ``val/`` or ``test/``. Each 32x32 photograph is cropped
to the drawn aspect ratio at a seeded offset and upscaled (bicubic) to the drawn size, given a
film grain (see below) and saved as a baseline JPEG of quality 90 with 4:2:0 chroma subsampling.
Everything is a function of the seed: the same arguments give byte-identical files (with the
same Pillow/libjpeg).

The size model approximates ImageNet (ILSVRC-2012 classification) from these facts, not from a
measurement of its 1,281,167 training files (not available here):

* most files were stored by Flickr at its "medium" size, 500 px on the long side, so a handful
  of sizes dominate: 500x375 (4:3 landscape) far ahead, then 500x333 (3:2), 375x500 and 333x500
  (portrait) and 500x500;
* a minority has other sizes, from under 100 px to over 2000 px on the long side;
* the mean resolution usually quoted is about 400x350 (the 500-px sizes alone average about
  470x400, so the remaining files must be smaller on average).

Model: with probability 0.69 one of the atoms ``SIZE_ATOMS`` (500x375 0.38, 500x333 0.14,
375x500 0.09, 333x500 0.05, 500x500 0.03); otherwise a long side drawn log-normally (median
270 px, sigma 0.6 in log space, clipped to 80..2600 px; about 1.5% of these files exceed
1000 px), an aspect ratio from 4:3 (0.45), 3:2 (0.25), 1:1 (0.15), 16:9 (0.10), 2:1 (0.05) and
landscape orientation with probability 0.7. Its mean is about 415x355 (``size_model_mean``).

Grain: a 32-px photograph blown up to 500 px is far smoother than a real photograph and
compresses to about 0.1 bytes per pixel, while ImageNet's files average about 110 KB (the
training tar holds about 138 GiB for 1.28M files), i.e. roughly 0.5-0.8 bytes per pixel.
A decoder spends much of its time in entropy decoding (all of it when it decodes at a reduced
scale with ``draft``), so files that small would flatter every loader. Gaussian noise of
``grain`` levels (default 20, about 0.53 bytes per pixel) brings the size, and the
decoding time, close to real files'; ``--grain 0`` turns it off.

Odd files, as ImageNet has a few: ``--grayscale K`` and ``--cmyk K`` save K images of each split
as 1-channel and as CMYK JPEGs (ILSVRC-2012's training set has 22 CMYK files and some grayscale
ones). ``--corrupt K`` adds K undecodable ``.JPEG`` files to the train split, in turn a
truncated JPEG (its first half), random bytes, and a JPEG start marker followed by random
bytes, named ``<wnid>_corrupt<j>.JPEG``; they are extra files, not counted in
``--train-per-class``.
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["SIZE_ATOMS", "GeneratorConfig", "sample_size", "size_model_mean", "generate_imagenet_like", "wnid"]

# (width, height, probability): Flickr's 500-px "medium" sizes.
SIZE_ATOMS = ((500, 375, 0.38), (500, 333, 0.14), (375, 500, 0.09), (333, 500, 0.05), (500, 500, 0.03))
# The rest: long side log-normal, an aspect ratio (long / short) and an orientation.
LONG_SIDE_MEDIAN = 270.0
LONG_SIDE_SIGMA = 0.6
LONG_SIDE_RANGE = (80, 2600)
ASPECTS = ((4 / 3, 0.45), (3 / 2, 0.25), (1.0, 0.15), (16 / 9, 0.10), (2.0, 0.05))
LANDSCAPE = 0.7
JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 2  # Pillow's code for 4:2:0
DEFAULT_GRAIN = 20.0
SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}
_CORRUPT_KINDS = ("truncated", "random-bytes", "jpeg-marker-then-garbage")


def wnid(k: int) -> str:
    """The class folder name of class k: ImageNet's form, 'n' and 8 digits."""
    return f"n{k:08d}"


def sample_size(rng: np.random.Generator) -> tuple[int, int]:
    """One (width, height) from the size model."""
    u = rng.random()
    for w, h, p in SIZE_ATOMS:
        if u < p:
            return w, h
        u -= p
    long_side = LONG_SIDE_MEDIAN * math.exp(LONG_SIDE_SIGMA * rng.standard_normal())
    long_side = int(round(min(max(long_side, LONG_SIDE_RANGE[0]), LONG_SIDE_RANGE[1])))
    ratios, weights = zip(*ASPECTS)
    ratio = ratios[int(rng.choice(len(ratios), p=np.asarray(weights) / sum(weights)))]
    short_side = max(1, int(round(long_side / ratio)))
    return (long_side, short_side) if rng.random() < LANDSCAPE else (short_side, long_side)


def size_model_mean(samples: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """Mean (width, height) of the size model, by sampling."""
    rng = np.random.default_rng(seed)
    sizes = np.array([sample_size(rng) for _ in range(samples)], dtype=np.float64)
    return float(sizes[:, 0].mean()), float(sizes[:, 1].mean())


@dataclass(frozen=True)
class GeneratorConfig:
    out: str
    classes: int = 10
    train_per_class: int = 100
    val_per_class: int = 20
    seed: int = 0
    source: Optional[str] = None
    grain: float = DEFAULT_GRAIN
    grayscale: int = 0
    cmyk: int = 0
    corrupt: int = 0


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _default_source() -> Path:
    from pynas.data.registry import data_dir

    base = data_dir()
    if base is None or not (base / "cifar10" / "train").is_dir():
        raise FileNotFoundError("no --source given and no cifar10/train found in $PYNAS_DATA or ../shared/data "
                                "beside the repository")
    return base / "cifar10"


def _source_split_dir(source: Path, split: str) -> Path:
    names = ("train",) if split == "train" else ("val", "test")
    for name in names:
        if (source / name).is_dir():
            return source / name
    raise FileNotFoundError(f"{source}: no {' or '.join(n + '/' for n in names)} folder of source photographs "
                            f"for the {split} split")


def _source_files(folder: Path) -> tuple[list[str], list[list[str]]]:
    from pynas.data.images import scan_image_folder

    listing = scan_image_folder(folder)
    per_class: list[list[str]] = [[] for _ in listing.classes]
    for path, label in zip(listing.paths, listing.labels):
        per_class[label].append(path)
    return list(listing.classes), per_class


def _rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *parts])


@dataclass(frozen=True)
class _Task:
    source: str
    dest: str
    width: int
    height: int
    mode: str  # RGB, L or CMYK
    seed: tuple  # for the crop offset and the grain
    grain: float


def _make_image(task: _Task) -> tuple[int, int, int]:
    """Write one JPEG; returns (width, height, bytes)."""
    from PIL import Image

    rng = np.random.default_rng(list(task.seed))
    with Image.open(task.source) as src:
        src = src.convert("RGB")
        sw, sh = src.size
        # The largest window of the target's aspect ratio, at a random offset: no distortion.
        aspect = task.width / task.height
        bw, bh = (sw, sw / aspect) if aspect >= sw / sh else (sh * aspect, sh)
        left, top = rng.random() * (sw - bw), rng.random() * (sh - bh)
        image = src.resize((task.width, task.height), Image.Resampling.BICUBIC, box=(left, top, left + bw, top + bh))
    if task.grain > 0:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(task.grain)
        image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    if task.mode != "RGB":
        image = image.convert(task.mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
    data = buffer.getvalue()
    Path(task.dest).write_bytes(data)
    return task.width, task.height, len(data)


def _corrupt_bytes(kind: str, rng: np.random.Generator, valid: bytes) -> bytes:
    if kind == "truncated":
        return valid[: len(valid) // 2]
    garbage = rng.integers(0, 256, size=int(rng.integers(200, 4000)), dtype=np.uint8).tobytes()
    return garbage if kind == "random-bytes" else b"\xff\xd8\xff\xe0" + garbage


def generate_imagenet_like(
    out: str | os.PathLike,
    *,
    classes: int = 10,
    train_per_class: int = 100,
    val_per_class: int = 20,
    seed: int = 0,
    source: str | os.PathLike | None = None,
    grain: float = DEFAULT_GRAIN,
    grayscale: int = 0,
    cmyk: int = 0,
    corrupt: int = 0,
    workers: int = 1,
    progress: bool = False,
) -> dict:
    """Write the folder (see the module docstring); returns what ``DIR/synthetic.json`` holds."""
    _check_count("classes", classes, 1)
    _check_count("train_per_class", train_per_class, 1)
    _check_count("val_per_class", val_per_class, 0)
    _check_count("seed", seed, 0)
    _check_count("grayscale", grayscale, 0)
    _check_count("cmyk", cmyk, 0)
    _check_count("corrupt", corrupt, 0)
    _check_count("workers", workers, 1)
    if isinstance(grain, bool) or not isinstance(grain, (int, float)) or not 0 <= grain <= 128:
        raise ValueError(f"grain must be a number of levels in 0..128, got {grain!r}")
    out = Path(out).expanduser()
    splits = [s for s in SPLITS if (train_per_class if s == "train" else val_per_class) > 0]
    for split in splits:
        if (out / split).is_dir() and any((out / split).iterdir()):
            raise ValueError(f"{out / split} already exists and is not empty; choose another --out")
    source = Path(source).expanduser() if source is not None else _default_source()
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: source folder of photographs not found")
    source_dirs = {split: _source_split_dir(source, split) for split in splits}

    tasks: list[_Task] = []
    written: dict[str, dict] = {}
    val_number = 0
    for split in splits:
        per_class_count = train_per_class if split == "train" else val_per_class
        src_classes, src_files = _source_files(source_dirs[split])
        n_src = len(src_classes)
        code = _SPLIT_CODE[split]
        # Odd modes: K images of the split picked by the seed.
        total = classes * per_class_count
        pick = _rng(seed, code, 1 << 20).permutation(total)
        if grayscale + cmyk > total:
            raise ValueError(f"--grayscale {grayscale} and --cmyk {cmyk} ask for more odd images than the "
                             f"{total} of the {split} split")
        modes = np.full(total, "RGB", dtype=object)
        modes[pick[:grayscale]] = "L"
        modes[pick[grayscale:grayscale + cmyk]] = "CMYK"
        for k in range(classes):
            name = wnid(k)
            (out / split / name).mkdir(parents=True, exist_ok=True)
            files = src_files[k % n_src]
            order = _rng(seed, code, 1 << 21, k % n_src).permutation(len(files))
            block = k // n_src  # classes k and k + C start at different places of the same shuffled list
            size_rng = _rng(seed, code, 1 << 22, k)
            for i in range(per_class_count):
                width, height = sample_size(size_rng)
                if split == "train":
                    dest = out / split / name / f"{name}_{i}.JPEG"
                else:
                    val_number += 1
                    dest = out / split / name / f"ILSVRC2012_val_{val_number:08d}.JPEG"
                tasks.append(_Task(files[order[(block * per_class_count + i) % len(files)]], str(dest), width,
                                   height, str(modes[k * per_class_count + i]), (seed, code, k, i), float(grain)))
        # A photograph is used twice when a source class has fewer files than its classes here take.
        reuses = any(len(range(c, classes, n_src)) * per_class_count > len(src_files[c]) for c in range(n_src))
        written[split] = dict(source=str(source_dirs[split]), source_classes=src_classes, reuses_photographs=reuses,
                              images=total, grayscale=grayscale, cmyk=cmyk)

    sizes = _run(tasks, workers, progress)
    offset = 0
    for split in splits:
        chunk = sizes[offset:offset + written[split]["images"]]
        offset += written[split]["images"]
        arr = np.asarray(chunk, dtype=np.float64)
        written[split].update(mean_width=float(arr[:, 0].mean()), mean_height=float(arr[:, 1].mean()),
                              mean_bytes=float(arr[:, 2].mean()),
                              bytes_per_pixel=float(arr[:, 2].sum() / (arr[:, 0] * arr[:, 1]).sum()))

    corrupt_files = []
    if corrupt:
        rng = _rng(seed, 2, 1 << 23)
        valid = Path(tasks[0].dest).read_bytes()
        for j in range(corrupt):
            kind = _CORRUPT_KINDS[j % len(_CORRUPT_KINDS)]
            name = wnid(j % classes)
            dest = out / "train" / name / f"{name}_corrupt{j}.JPEG"
            dest.write_bytes(_corrupt_bytes(kind, rng, valid))
            corrupt_files.append(dict(path=str(dest.relative_to(out)), kind=kind))

    from pynas import __version__

    config = GeneratorConfig(str(out), classes, train_per_class, val_per_class, seed, str(source), float(grain),
                             grayscale, cmyk, corrupt)
    import PIL

    manifest = dict(generator="pynas.data.synthetic", format_version=1, config=asdict(config),
                    classes=[wnid(k) for k in range(classes)], splits=written, corrupt=corrupt_files,
                    jpeg=dict(quality=JPEG_QUALITY, subsampling="4:2:0"), pillow=PIL.__version__,
                    pynas_version=__version__)
    (out / "synthetic.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _run(tasks: Sequence[_Task], workers: int, progress: bool) -> list[tuple[int, int, int]]:
    if workers == 1 or len(tasks) < 2:
        results = []
        for i, task in enumerate(tasks, 1):
            results.append(_make_image(task))
            if progress and i % 500 == 0:
                print(f"  {i}/{len(tasks)} images", flush=True)
        return results
    import multiprocessing

    with multiprocessing.get_context().Pool(workers) as pool:
        results = []
        for i, r in enumerate(pool.imap(_make_image, tasks, chunksize=16), 1):
            results.append(r)
            if progress and i % 500 == 0:
                print(f"  {i}/{len(tasks)} images", flush=True)
        return results
