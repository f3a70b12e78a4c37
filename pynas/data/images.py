"""Decoded image sets: an ImageFolder of JPEG/PNG files, and CIFAR-10 python batches.

Both end as one uint8 tensor [N, C, H, W] plus int64 labels, so training can
keep the whole set on the device and never decode again. Decoding 60k small
JPEGs takes seconds of pure Python/Pillow work (threads do not help: the time
is spent holding the GIL), so a decoded folder is cached as an .npz under
$PYNAS_CACHE (default ~/.cache/pynas), keyed by what would change if the folder
changed: its absolute path, its file names and count, and the newest mtime.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "IMAGE_SUFFIXES",
    "CIFAR10_CLASSES",
    "DecodedImages",
    "FolderListing",
    "default_cache_dir",
    "scan_image_folder",
    "decode_image_files",
    "load_image_folder",
    "find_cifar10_batches",
    "load_cifar10_batches",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Bump when the cache layout or decoding changes, so old caches are not reused.
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class DecodedImages:
    """A decoded image set on the CPU: `images` uint8 [N, C, H, W], `labels` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]


@dataclass(frozen=True)
class FolderListing:
    """The files of an ImageFolder, in reading order (classes sorted, then file names sorted)."""

    root: Path
    classes: tuple[str, ...]
    paths: tuple[str, ...]  # strings, not Path: 50k Path objects cost a second
    labels: tuple[int, ...]
    newest_mtime_ns: int

    def cache_key(self, channels: int | None) -> str:
        digest = hashlib.sha256()
        for part in (self.root, len(self.paths), self.newest_mtime_ns, channels, _CACHE_FORMAT):
            digest.update(str(part).encode() + b"\0")
        # Names too: a rename keeps the count and may keep every mtime.
        prefix = len(str(self.root))
        for path in self.paths:
            digest.update(path[prefix:].encode() + b"\0")
        return digest.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("PYNAS_CACHE") or Path.home() / ".cache" / "pynas")


def scan_image_folder(root: str | os.PathLike) -> FolderListing:
    """List `root`/<class>/<image> files; raises if `root` is missing or has no class folders."""
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found (expected <root>/<class>/<image>.jpg|.png)")
    newest = root.stat().st_mtime_ns
    class_dirs = sorted(
        (e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name
    )
    if not class_dirs:
        raise ValueError(f"no class folders in {root} (expected <root>/<class>/<image>.jpg|.png)")
    paths: list[str] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        newest = max(newest, class_dir.stat().st_mtime_ns)
        files = sorted(
            (e for e in os.scandir(class_dir.path) if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)),
            key=lambda e: e.name,
        )
        if not files:
            raise ValueError(
                f"{class_dir.path}: class folder has no images (expected files ending in {', '.join(IMAGE_SUFFIXES)})"
            )
        for entry in files:
            newest = max(newest, entry.stat().st_mtime_ns)
            paths.append(entry.path)
            labels.append(label)
    return FolderListing(root, tuple(e.name for e in class_dirs), tuple(paths), tuple(labels), newest)


def _pillow():
    try:
        from PIL import Image
    except ImportError as err:  # pillow is only needed for image folders
        raise ImportError("decoding JPEG/PNG image folders needs Pillow: pip install pillow") from err
    return Image


def decode_image_files(
    paths: tuple[str | Path, ...] | list[str | Path], *, channels: int | None = None
) -> torch.Tensor:
    """Decode same-sized images into uint8 [N, C, H, W].

    channels=None keeps grayscale sets at 1 channel and makes everything else
    RGB (a set mixing both becomes RGB); 1 or 3 forces that many channels.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    if not paths:
        raise ValueError("decode_image_files: no files given")
    Image = _pillow()
    out: np.ndarray | None = None
    all_gray = True
    for i, path in enumerate(paths):
        try:
            with Image.open(path, formats=("JPEG", "PNG")) as image:
                gray = image.mode in ("1", "L", "LA", "I", "I;16", "F") if channels is None else channels == 1
                mode = "L" if gray else "RGB"
                pixels = np.asarray(image if image.mode == mode else image.convert(mode))
        except (OSError, SyntaxError, ValueError) as err:  # Pillow's errors for unreadable/truncated files
            raise ValueError(f"{path}: cannot decode image ({err})") from err
        if out is None:
            first_path = path
            out = np.empty((len(paths), *pixels.shape[:2], 3), dtype=np.uint8)
        elif pixels.shape[:2] != out.shape[1:3]:
            raise ValueError(
                f"{path}: expected {out.shape[2]}x{out.shape[1]} pixels like {first_path}, "
                f"got {pixels.shape[1]}x{pixels.shape[0]} (images are not resized)"
            )
        # Gray pixels are written to all three planes so a mixed set is already RGB.
        out[i] = pixels[..., None] if pixels.ndim == 2 else pixels
        all_gray &= pixels.ndim == 2
    if channels == 1 or (channels is None and all_gray):
        out = out[..., :1]
    return torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2)))


def _cache_path(listing: FolderListing, channels: int | None, cache_dir: Path) -> Path:
    readable = "-".join(listing.root.parts[-2:]).replace(os.sep, "_")
    return cache_dir / f"imagefolder-{readable}-{listing.cache_key(channels)[:20]}.npz"


def _read_cache(path: Path, listing: FolderListing) -> DecodedImages | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels, classes = archive["images"], archive["labels"], tuple(str(c) for c in archive["classes"])
    except (OSError, ValueError, KeyError, EOFError) as err:
        warnings.warn(f"{path}: ignoring unreadable decode cache ({err}); decoding again", stacklevel=3)
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(listing.paths) or classes != listing.classes:
        warnings.warn(f"{path}: decode cache does not match {listing.root}; decoding again", stacklevel=3)
        return None
    return DecodedImages(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), classes)


def _write_cache_atomically(path: Path, decoded: DecodedImages) -> None:
    # Write a temporary file beside the target and rename it: a reader (or a
    # second process decoding the same folder) never sees half a file.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    except OSError as err:
        warnings.warn(f"cannot write decode cache in {path.parent} ({err}); continuing without it", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                images=decoded.images.numpy(),
                labels=decoded.labels.numpy(),
                classes=np.array(decoded.classes, dtype=str),
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache is as readable as the data
        os.replace(tmp, path)
    except OSError as err:
        warnings.warn(f"cannot write decode cache {path} ({err}); continuing without it", stacklevel=3)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_image_folder(
    root: str | os.PathLike,
    *,
    channels: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> DecodedImages:
    """Decode `root`/<class>/<image> into uint8 [N, C, H, W] with labels by sorted class folder.

    With cache=True the decoded arrays are read from, or written to,
    `cache_dir` (default $PYNAS_CACHE, else ~/.cache/pynas).
    """
    if not isinstance(cache, bool):
        raise ValueError(f"cache must be a bool, got {cache!r}")
    listing = scan_image_folder(root)
    path = _cache_path(listing, channels, Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if cache:
        hit = _read_cache(path, listing)
        if hit is not None:
            return hit
    images = decode_image_files(listing.paths, channels=channels)
    decoded = DecodedImages(images, torch.tensor(listing.labels, dtype=torch.int64), listing.classes)
    if cache:
        _write_cache_atomically(path, decoded)
    return decoded


# --- CIFAR-10 python batches -------------------------------------------------

_CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_TEST_BATCHES = ("test_batch",)


def find_cifar10_batches(root: str | os.PathLike) -> Path | None:
    """The folder holding data_batch_1..5/test_batch under `root` (itself or cifar-10-batches-py/), or None."""
    root = Path(root)
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / _CIFAR10_TRAIN_BATCHES[0]).is_file() or (candidate / _CIFAR10_TEST_BATCHES[0]).is_file():
            return candidate
    return None


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else.

    The batches are pickles; refusing every other global means a tampered
    file cannot run code while we read it.
    """

    @staticmethod
    @functools.cache
    def _allowed() -> dict[tuple[str, str], object]:
        import codecs

        try:
            from numpy._core import multiarray
        except ImportError:  # numpy < 2
            from numpy.core import multiarray
        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(module, "_reconstruct")] = multiarray._reconstruct
            allowed[(module, "scalar")] = multiarray.scalar
        return allowed

    def find_class(self, module: str, name: str):
        allowed = self._allowed()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return allowed[(module, name)]


def _read_batch(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            raw = _ArraysOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{path}: expected a CIFAR-10 python batch (a pickled dict), could not unpickle it ({err})"
        ) from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    # Python-2 era pickles have bytes keys.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def load_cifar10_batches(root: str | os.PathLike, *, train: bool) -> DecodedImages:
    """Read CIFAR-10 "python version" batches: data_batch_1..5 (train=True) or test_batch."""
    if not isinstance(train, bool):
        raise ValueError(f"train must be a bool, got {train!r}")
    folder = find_cifar10_batches(root)
    if folder is None:
        raise FileNotFoundError(f"{root}: no CIFAR-10 python batches (expected data_batch_1..5 and test_batch)")
    images, labels = [], []
    for name in _CIFAR10_TRAIN_BATCHES if train else _CIFAR10_TEST_BATCHES:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: CIFAR-10 batch missing")
        batch = _read_batch(path)
        data, batch_labels = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            got = getattr(data, "shape", type(data).__name__)
            raise ValueError(f"{path}: expected 'data' as uint8 [N, 3072], got {got}")
        if batch_labels is None or len(batch_labels) != len(data):
            raise ValueError(f"{path}: expected 'labels' with one entry per image ({len(data)})")
        # Each row is the R plane, then G, then B, each 32x32 row-major: already CHW.
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    all_labels = np.concatenate(labels)
    if all_labels.min() < 0 or all_labels.max() >= len(CIFAR10_CLASSES):
        raise ValueError(f"{folder}: expected labels in 0..9, got {all_labels.min()}..{all_labels.max()}")
    return DecodedImages(
        torch.from_numpy(np.concatenate(images)), torch.from_numpy(all_labels), CIFAR10_CLASSES
    )
