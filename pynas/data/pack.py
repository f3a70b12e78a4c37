"""Pack an ImageNet-style JPEG folder into fixed-size uint8 arrays that load without decoding.

    pynas data pack DIR --size 64 --out OUT [--splits train,val] [--workers N] [--strict]

reads ``DIR/<split>/<class>/<image>`` (.jpg, .jpeg, .png, any case) and writes per split

    OUT/<split>/images.u8    raw uint8 [N, size, size, 3] (NHWC, C order, no header)
    OUT/<split>/labels.npy   int64 [N] (np.save), index into meta.json's classes
    OUT/<split>/meta.json    format and version, classes in order, size, count, source folder,
                             per-channel mean/std of the packed train images, the files skipped
                             as undecodable with the reason, the pynas version

Images keep the folder's order (classes sorted, then file names sorted), minus the skipped
ones. Every file is written under a temporary name and renamed when complete; meta.json,
written last, is what marks a split as packed (an older one is removed first, so an
interrupted run leaves no split that looks complete).

Each image is resized so its shorter side is ``size`` and the central ``size x size`` square
is kept, as torchvision's ``Resize(size)`` followed by ``CenterCrop(size)`` computes them
(long side ``int(size * long / short)``, crop offset ``round((long' - size) / 2)``), after
decoding the JPEG with Pillow's ``draft`` at the largest of 1/2, 1/4, 1/8 scale that keeps
the resized size within reach (libjpeg scales in the inverse DCT, several times faster than
a full decode). The filter is Pillow's box filter (an area average) when downscaling, the
usual choice for downsampling by large factors, and bicubic when an image is smaller than
``size``.

This differs from Chrabaszcz, Loshchilov & Hutter's Downsampled ImageNet (Imagenet16/32/64,
2017), which box-resizes the *whole* image to ``size x size``: their images keep the full
field of view but are squashed to a square (a 500x333 photograph is compressed by 1.5 in x),
ours keep objects' proportions and lose the ends of the long side (about 1/4 of a 4:3
photograph), which is what a centre-crop evaluation at full resolution sees and what
random-resized-crop training at full resolution samples around. Networks trained on our
packs are therefore not directly comparable with results on the published Imagenet64x64.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

__all__ = ["FORMAT", "FORMAT_VERSION", "MIN_SIZE", "PackedSplit", "centre_crop_box", "decode_resized", "pack",
           "load_packed", "parse_size", "parse_splits"]

FORMAT = "pynas-packed-images"
FORMAT_VERSION = 1
MIN_SIZE = 8
IMAGES_FILE, LABELS_FILE, META_FILE = "images.u8", "labels.npy", "meta.json"
CHUNK = 32  # images per task sent to a worker
DEFAULT_SPLITS = ("train", "val")


def parse_size(value: object) -> int:
    """The packed side length: an int >= MIN_SIZE (a string of digits is accepted)."""
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            raise ValueError(f"--size must be an integer >= {MIN_SIZE}, got {value!r}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_SIZE:
        raise ValueError(f"--size must be an integer >= {MIN_SIZE}, got {value!r}")
    return value


def parse_splits(value: str | Sequence[str]) -> tuple[str, ...]:
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
    items = [s for s in items if s]
    bad = [s for s in items if s in (".", "..") or "/" in s or os.sep in s]
    if not items or bad:
        raise ValueError(f"--splits must be a comma-separated list of split folder names, got {value!r}")
    return tuple(dict.fromkeys(items))


# ------------------------------------------------------------------ one image
def centre_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(resized width, resized height, left, top) of Resize(size) then CenterCrop(size) of a width x height
    image, as torchvision computes them."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    return new_w, new_h, int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))


def decode_resized(path: str | os.PathLike, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: the file decoded (reduced with draft where the format allows), resized so its
    shorter side is ``size`` and centre-cropped. Raises Pillow's errors for undecodable files."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        new_w, new_h, left, top = centre_crop_box(width, height, size)
        extent = (0.0, 0.0, float(width), float(height))  # the original's extent in decoded pixels
        if image.format == "JPEG":
            drafted = image.draft(image.mode, (new_w, new_h))  # any 1/s keeping at least new_w x new_h
            if drafted is not None:
                extent = drafted[1]
        image = image.convert("RGB")
        resample = Image.Resampling.BOX if extent[2] >= new_w else Image.Resampling.BICUBIC
        # The whole image, then a slice: resampling only the centre window (resize's box) computes the
        # box filter's window bounds from other floating-point values, and where a bound falls exactly
        # on a pixel centre (it does, for rational scales) a row or column comes out different.
        resized = np.asarray(image.resize((new_w, new_h), resample, box=extent), dtype=np.uint8)
        return resized[top:top + size, left:left + size]


def _decode_chunk(task: tuple[Sequence[str], int]):
    """(images uint8 [n_ok, S, S, 3], indices of the failures and their reasons, channel sums, squared sums)."""
    paths, size = task
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    ok = 0
    failed = []
    for i, path in enumerate(paths):
        try:
            out[ok] = decode_resized(path, size)
            ok += 1
        except Exception as err:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, struct.error...
            failed.append((i, f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"))
    images = out[:ok]
    flat = images.reshape(-1, 3)
    sums = flat.sum(0, dtype=np.float64)
    squares = np.einsum("ij,ij->j", flat.astype(np.float64), flat.astype(np.float64)) if ok else np.zeros(3)
    return images, failed, sums, squares


# ------------------------------------------------------------------ packing
def _listing(folder: Path):
    from pynas.data.images import scan_image_folder

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: split folder not found (expected <dir>/<split>/<class>/<image>)")
    return scan_image_folder(folder)


def _check_classes(listings: dict) -> tuple[str, ...]:
    splits = list(listings)
    first = listings[splits[0]].classes
    for split in splits[1:]:
        other = listings[split].classes
        if other != first:
            only_a = sorted(set(first) - set(other))
            only_b = sorted(set(other) - set(first))
            parts = []
            if only_a:
                parts.append(f"{splits[0]} has {_names(only_a)} that {split} lacks")
            if only_b:
                parts.append(f"{split} has {_names(only_b)} that {splits[0]} lacks")
            raise ValueError(f"class folders differ between splits: {'; '.join(parts)}")
    return first


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _atomic_path(final: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)
    return Path(tmp)


def _write_json(path: Path, content: dict) -> None:
    tmp = _atomic_path(path)
    try:
        tmp.write_text(json.dumps(content, indent=1) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _stats(sums: np.ndarray, squares: np.ndarray, pixels: int) -> tuple[list[float], list[float]]:
    mean = sums / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    std = np.where(std > 0, std, 255.0)  # a constant channel: leave it unscaled
    return (mean / 255).tolist(), (std / 255).tolist()


@dataclass
class _SplitResult:
    count: int
    skipped: list
    mean: list
    std: list


def _pack_split(listing, split_dir: Path, size: int, pool, strict: bool, progress: bool, root: Path) -> _SplitResult:
    paths, labels = list(listing.paths), np.asarray(listing.labels, dtype=np.int64)
    n = len(paths)
    tmp = _atomic_path(split_dir / IMAGES_FILE)
    kept: list[np.ndarray] = []
    skipped: list[dict] = []
    sums, squares = np.zeros(3), np.zeros(3)
    written = 0
    try:
        images = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, size, size, 3))
        tasks = [(paths[i:i + CHUNK], size) for i in range(0, n, CHUNK)]
        results = pool.imap(_decode_chunk, tasks) if pool is not None else map(_decode_chunk, tasks)
        for t, (chunk, failed, s, q) in enumerate(results):
            start = t * CHUNK
            bad = {i for i, _ in failed}
            for i, reason in failed:
                path = paths[start + i]
                if strict:
                    raise ValueError(f"{path}: cannot decode ({reason}); without --strict it would be skipped")
                skipped.append(dict(path=os.path.relpath(path, root), reason=reason))
            images[written:written + len(chunk)] = chunk
            written += len(chunk)
            kept.append(np.asarray([start + i for i in range(len(tasks[t][0])) if i not in bad], dtype=np.int64))
            sums += s
            squares += q
            if progress and (t + 1) % max(1, 2000 // CHUNK) == 0:
                print(f"  {split_dir.name}: {min(n, start + CHUNK)}/{n} images", flush=True)
        images.flush()
        del images
        if written == 0:
            raise ValueError(f"{listing.root}: none of its {n} images could be decoded "
                             f"(first: {skipped[0]['path']}: {skipped[0]['reason']})")
        os.truncate(tmp, written * size * size * 3)  # skipped images leave unused rows at the end
        label_tmp = _atomic_path(split_dir / LABELS_FILE)
        try:
            with open(label_tmp, "wb") as f:
                np.save(f, labels[np.concatenate(kept)])
            os.replace(tmp, split_dir / IMAGES_FILE)
            os.replace(label_tmp, split_dir / LABELS_FILE)
        finally:
            if label_tmp.exists():
                label_tmp.unlink()
    finally:
        if tmp.exists():
            tmp.unlink()
    mean, std = _stats(sums, squares, written * size * size)
    return _SplitResult(written, skipped, mean, std)


def pack(
    src: str | os.PathLike,
    *,
    size: int,
    out: str | os.PathLike,
    splits: Optional[Sequence[str]] = None,
    workers: int = 1,
    strict: bool = False,
    progress: bool = False,
) -> dict[str, dict]:
    """Pack ``src/<split>`` for each split into ``out/<split>`` (see the module docstring); returns each
    split's meta.json content. ``splits=None``: those of train and val that exist. ``strict``: an
    undecodable file is an error instead of being skipped and recorded."""
    size = parse_size(size)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {workers!r}")
    src, out = Path(src).expanduser().absolute(), Path(out).expanduser().absolute()
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: folder not found (expected {src}/<split>/<class>/<image>)")
    if splits is None:
        splits = tuple(s for s in DEFAULT_SPLITS if (src / s).is_dir())
        if not splits:
            raise ValueError(f"{src}: neither train/ nor val/ found; name the split folders with --splits")
    else:
        splits = parse_splits(splits)
    if out == src or src in out.parents and out.relative_to(src).parts[0] in splits:
        raise ValueError(f"--out {out} lies inside the split folders it would read")
    listings = {split: _listing(src / split) for split in splits}
    classes = _check_classes(listings)

    import multiprocessing
    from pynas import __version__

    metas: dict[str, dict] = {}
    pool = multiprocessing.get_context().Pool(workers) if workers > 1 else None
    try:
        for split in splits:
            split_dir = out / split
            split_dir.mkdir(parents=True, exist_ok=True)
            (split_dir / META_FILE).unlink(missing_ok=True)  # from here on the split is not complete
            result = _pack_split(listings[split], split_dir, size, pool, strict, progress, src)
            metas[split] = dict(
                format=FORMAT, format_version=FORMAT_VERSION, split=split, layout="NHWC", dtype="uint8",
                size=size, count=result.count, classes=list(classes),
                class_counts=np.bincount(np.load(split_dir / LABELS_FILE, allow_pickle=False),
                                         minlength=len(classes)).tolist(),
                source=str(src / split), files=len(listings[split].paths),
                resize=dict(method="shorter side to size, centre crop", draft=True, filter="box (bicubic when "
                            "upscaling)", as_in="torchvision Resize(size) + CenterCrop(size)"),
                split_mean=result.mean, split_std=result.std, skipped=result.skipped,
                pynas_version=__version__, created=datetime.datetime.now(datetime.timezone.utc)
                .isoformat(timespec="seconds"),
            )
    except BaseException:
        if pool is not None:
            pool.terminate()  # not close(): the workers would first decode every chunk already queued
            pool.join()
            pool = None
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    # Normalization stats are the training images' for every split.
    train_meta = metas.get("train")
    if train_meta is None and (out / "train" / META_FILE).is_file():
        try:
            train_meta = json.loads((out / "train" / META_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            train_meta = None
    for split, meta in metas.items():
        if train_meta is not None and train_meta.get("classes") == meta["classes"]:
            meta.update(mean=train_meta["split_mean"], std=train_meta["split_std"], stats_from="train")
        else:
            meta.update(mean=meta["split_mean"], std=meta["split_std"], stats_from=split)
        _write_json(out / split / META_FILE, meta)
    return metas


# ------------------------------------------------------------------ reading
class PackedSplit(NamedTuple):
    images: "torch.Tensor"  # noqa: F821 - uint8 [N, 3, size, size], a view of the read-only memmap
    labels: "torch.Tensor"  # noqa: F821 - int64 [N]
    meta: dict


def _meta_error(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: {what}")


def load_packed(out: str | os.PathLike, split: str = "train") -> PackedSplit:
    """The packed split ``out/<split>``: images as a zero-copy uint8 [N, 3, S, S] view (NCHW strides over
    the NHWC file, read-only: copy before writing), labels int64 [N] and meta.json's content.

    Checks the files against meta.json: the image file's size must be count x size x size x 3 bytes and
    labels.npy an int64 [count] array of class indices; raises ValueError naming the file otherwise.
    """
    import torch

    folder = Path(out).expanduser() / split
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        hint = "" if folder.is_dir() else " (no such split folder)"
        raise FileNotFoundError(f"{meta_path}: not found{hint}; pack the split with "
                                f"'pynas data pack DIR --size S --out {out}'")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _meta_error(meta_path, f"unreadable ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _meta_error(meta_path, f"not a {FORMAT} meta.json")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _meta_error(meta_path, f"format version {meta.get('format_version')!r}, this pynas reads "
                                     f"{FORMAT_VERSION}; pack again")
    count, size, classes = meta.get("count"), meta.get("size"), meta.get("classes")
    if not (isinstance(count, int) and count > 0 and isinstance(size, int) and size >= 1
            and isinstance(classes, list) and classes and meta.get("dtype") == "uint8"
            and meta.get("layout") == "NHWC"):
        raise _meta_error(meta_path, "expected count > 0, size, classes, dtype 'uint8' and layout 'NHWC'")
    for key in ("mean", "std"):
        values = meta.get(key)
        if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values)):
            raise _meta_error(meta_path, f"'{key}' must be 3 numbers")
    images_path = folder / IMAGES_FILE
    expected = count * size * size * 3
    actual = images_path.stat().st_size if images_path.is_file() else None
    if actual != expected:
        found = "missing" if actual is None else f"{actual} bytes"
        raise ValueError(f"{images_path}: expected {expected} bytes (uint8 [{count}, {size}, {size}, 3] per "
                         f"{META_FILE}), found {found}")
    labels_path = folder / LABELS_FILE
    try:
        labels = np.load(labels_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{labels_path}: unreadable ({err})") from err
    if labels.dtype != np.int64 or labels.shape != (count,):
        raise ValueError(f"{labels_path}: expected int64 [{count}] per {META_FILE}, got {labels.dtype} "
                         f"{list(labels.shape)}")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"{labels_path}: labels must lie in 0..{len(classes) - 1} ({len(classes)} classes in "
                         f"{META_FILE}), got {labels.min()}..{labels.max()}")
    array = np.memmap(images_path, dtype=np.uint8, mode="r", shape=(count, size, size, 3))
    with warnings.catch_warnings():
        # A read-only array: torch warns that writing through the tensor would be undefined.
        warnings.simplefilter("ignore", UserWarning)
        images = torch.from_numpy(array)
    return PackedSplit(images.permute(0, 3, 1, 2), torch.from_numpy(labels), meta)
