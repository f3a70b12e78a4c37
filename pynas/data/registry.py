"""Named datasets: `create_dataset("cifar10", split="train", device="cuda")` -> DeviceDataset or FileDataset.

Where data is looked for when no root is given:
  fashion-mnist   $PYNAS_DATA/fashion-mnist, else /usr/share/datasets/fashion-mnist
                  (Debian package dataset-fashion-mnist)
  cifar10         $PYNAS_DATA/cifar10, else ../shared/data/cifar10 beside the repo
  nb201-cifar10   the same CIFAR-10, plus nasbench201/eps_cifar-split.txt from the
                  same data folder
  imagenet        $PYNAS_DATA/imagenet, else ../shared/data/imagenet beside the repo
  imagefolder     no default: root is required

Which kind comes back: small sets of equal-sized images are decoded once and
held on the device (a DeviceDataset, for DeviceLoader); "imagenet", and an
"imagefolder" whose images differ in size or whose decoded pixels would
exceed DEVICE_BUDGET_BYTES, are read from their files batch by batch (a
FileDataset, for StreamLoader). `loader="device"` or `"stream"` forces the
choice for an imagefolder; `pynas.data.make_loader` picks the matching loader.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pynas.data.augment import Augmentation
from pynas.data.idx import idx_magic, read_idx
from pynas.data import images as _images
from pynas.data.decode import DecodeError, open_image
from pynas.data.images import (
    CIFAR10_CLASSES,
    IMAGE_SUFFIXES,
    DecodedImages,
    FolderListing,
    find_cifar10_batches,
    load_cifar10_batches,
    load_image_folder,
    scan_image_folder,
)
from pynas.data.loader import DeviceDataset, stratified_indices
from pynas.data.stream import FileDataset, estimate_channel_stats

__all__ = ["create_dataset", "list_datasets", "data_dir", "CIFAR10_MEAN", "CIFAR10_STD",
           "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "FASHION_MNIST_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD",
           "DEVICE_BUDGET_BYTES", "LOADERS"]

# The usual CIFAR-10 training-set statistics (as in DARTS and NAS-Bench-201). The
# JPEG copy in shared/data measures 0.4913/0.4821/0.4465 and 0.2452/0.2428/0.2606:
# close enough that the standard values are kept for comparability.
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
# Measured on the 60k Fashion-MNIST training images.
FASHION_MNIST_MEAN = (0.2860406,)
FASHION_MNIST_STD = (0.3530242,)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# CIFAR: 4-pixel zero-padded crop + flip is the standard recipe (DARTS, NAS-Bench-201);
# cutout (length 16) is left off by default because search phases do not use it.
# Enable it for final training with dataclasses.replace(ds.augmentation, cutout=16).
CIFAR_AUGMENTATION = Augmentation(crop_padding=4, flip=True)
# Fashion-MNIST: garments are centred and size-normalized in a 28x28 frame, so a
# small 2-pixel shift already covers the placement jitter there is, while CIFAR's
# 4 pixels (1/7 of the frame here) would cut off sleeves and soles. No flip: all
# footwear (sandal, sneaker, ankle boot) faces left in both train and test, so
# mirrored shoes are images the test set never shows.
FASHION_MNIST_AUGMENTATION = Augmentation(crop_padding=2, flip=False)

# The usual ImageNet training-set statistics (torchvision's, used by SPOS, FairNAS, PC-DARTS, ...).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# loader="auto" holds an imagefolder on the device only when its decoded uint8 pixels fit this.
DEVICE_BUDGET_BYTES = 4 << 30
LOADERS = ("auto", "device", "stream")
# A streamed imagefolder's stats come from this many training images (decoded at reduced size).
_STATS_SAMPLE = 500

_DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_NB201_SPLIT_FILE = "eps_cifar-split.txt"


def data_dir() -> Path | None:
    """$PYNAS_DATA, else shared/data beside the repository checkout, else None."""
    env = os.environ.get("PYNAS_DATA")
    if env:
        return Path(env).expanduser()
    beside_repo = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return beside_repo if beside_repo.is_dir() else None


def _default_root(name: str, subdir: str) -> Path:
    base = data_dir()
    if base is None or not (base / subdir).is_dir():
        raise FileNotFoundError(
            f"create_dataset({name!r}): no root given and no {subdir}/ found "
            f"(looked in $PYNAS_DATA and ../shared/data beside the repository); pass root=..."
        )
    return base / subdir


# --- loaders per dataset: (root, split, cache) -> (DecodedImages, mean, std, augmentation) ------

def _fashion_mnist(root: Path | None, split: str, cache: bool):
    if root is None:
        base = data_dir()
        in_data_dir = base is not None and (base / "fashion-mnist").is_dir()
        root = base / "fashion-mnist" if in_data_dir else _DEBIAN_FASHION_MNIST
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"), expected_magic=idx_magic(0x08, 3))
    labels_path = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    labels = read_idx(labels_path, expected_magic=idx_magic(0x08, 1)).to(torch.int64)
    if len(labels) != len(images):
        raise ValueError(f"{labels_path}: expected {len(images)} labels (one per image), got {len(labels)}")
    decoded = DecodedImages(images.unsqueeze(1).contiguous(), labels, FASHION_MNIST_CLASSES)
    return decoded, FASHION_MNIST_MEAN, FASHION_MNIST_STD, FASHION_MNIST_AUGMENTATION


def _find_idx(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{root / stem}[.gz]: Fashion-MNIST IDX file not found "
        f"(on Debian: apt-get install dataset-fashion-mnist, or pass root=...)"
    )


def _load_cifar10(root: Path, split: str, cache: bool) -> DecodedImages:
    if find_cifar10_batches(root) is not None:
        return load_cifar10_batches(root, train=split == "train")
    decoded = load_image_folder(root / split, cache=cache)
    if decoded.classes != CIFAR10_CLASSES or decoded.images.shape[1:] != (3, 32, 32):
        raise ValueError(
            f"{root / split}: expected the CIFAR-10 class folders {', '.join(CIFAR10_CLASSES)} of 32x32 RGB "
            f"images, got {', '.join(decoded.classes)} of {tuple(decoded.images.shape[1:])}"
        )
    return decoded


def _cifar10(root: Path | None, split: str, cache: bool):
    root = root if root is not None else _default_root("cifar10", "cifar10")
    return _load_cifar10(root, split, cache), CIFAR10_MEAN, CIFAR10_STD, CIFAR_AUGMENTATION


def _nb201_split_file(root: Path) -> Path:
    candidates = [root / _NB201_SPLIT_FILE, root.parent / "nasbench201" / _NB201_SPLIT_FILE]
    base = data_dir()
    if base is not None:
        candidates.append(base / "nasbench201" / _NB201_SPLIT_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"NAS-Bench-201 split file {_NB201_SPLIT_FILE} not found (looked at {', '.join(map(str, candidates))})"
    )


def read_nb201_split(path: Path, *, size: int) -> dict[str, torch.Tensor]:
    """The 'train' and 'valid' index lists of a NAS-Bench-201 split file.

    The published file is JSON {"train": ["int", ["0", "5", ...]], "valid": [...]}:
    a type tag and the indices as strings.
    """
    expected = f"{path}: expected JSON with keys 'train' and 'valid', each [\"int\", [indices]]"
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{expected} ({err})") from err
    if not isinstance(content, dict) or not {"train", "valid"} <= content.keys():
        keys = sorted(content) if isinstance(content, dict) else "-"
        raise ValueError(f"{expected}, got {type(content).__name__} with keys {keys}")
    parts = {}
    for key in ("train", "valid"):
        value = content[key]
        if isinstance(value, list) and len(value) == 2 and value[0] == "int" and isinstance(value[1], list):
            value = value[1]
        try:
            index = torch.tensor([int(i) for i in value], dtype=torch.int64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{expected}; '{key}' is not a list of integers ({err})") from err
        if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= size:
            raise ValueError(f"{path}: '{key}' indices must lie in 0..{size - 1} (the CIFAR-10 training set)")
        parts[key] = index
    if torch.isin(parts["train"], parts["valid"]).any():
        raise ValueError(f"{path}: 'train' and 'valid' indices overlap")
    return parts


def _nb201_cifar10(root: Path | None, split: str, cache: bool):
    root = root if root is not None else _default_root("nb201-cifar10", "cifar10")
    if split == "test":
        return _load_cifar10(root, "test", cache), CIFAR10_MEAN, CIFAR10_STD, CIFAR_AUGMENTATION
    train = _load_cifar10(root, "train", cache)
    if find_cifar10_batches(root) is None:
        # The JPEG folder lists images by class, not in the original CIFAR-10
        # order the NAS-Bench-201 indices refer to; there is no way back to that order.
        warnings.warn(
            f"nb201-cifar10 from the image folder {root}: the NAS-Bench-201 indices are applied to the "
            "folder's order (class, file name), not CIFAR-10's original order, so the two halves have the "
            "published sizes and are disjoint but are not the published images; use the CIFAR-10 python "
            "batches for the exact split",
            stacklevel=3,
        )
    index = read_nb201_split(_nb201_split_file(root), size=len(train.labels))[split]
    picked = DecodedImages(train.images[index], train.labels[index], train.classes)
    return picked, CIFAR10_MEAN, CIFAR10_STD, CIFAR_AUGMENTATION


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, in [0, 1] units."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(4096):  # bounded float64 memory for large sets
        chunk = chunk.to(torch.float64)
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel: leave it unscaled
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


@dataclass(frozen=True)
class _FileOptions:
    """What create_dataset passes to the datasets that can stream from files."""

    loader: str
    image_size: int | None
    resize_size: int | None
    cache: bool


def _class_folders(folder: Path) -> tuple[str, ...]:
    """The sorted class folder names of an ImageFolder, as scan_image_folder lists them."""
    return tuple(sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")))


def _check_classes(name: str, folder: Path, classes: tuple[str, ...], train_folder: Path | None) -> None:
    """At least two classes, and a held-out split must have exactly the training classes."""
    if len(classes) < 2:
        raise ValueError(f"create_dataset({name!r}): {folder} has {len(classes)} class folder "
                         f"({', '.join(classes)}); classification needs at least 2")
    if train_folder is None:
        return
    train_classes = _class_folders(train_folder)
    if classes != train_classes:
        missing = sorted(set(train_classes) - set(classes))
        extra = sorted(set(classes) - set(train_classes))
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} of train's: {', '.join(missing[:10])}"
                          + (" ..." if len(missing) > 10 else ""))
        if extra:
            detail.append(f"{len(extra)} not in train: {', '.join(extra[:10])}" + (" ..." if len(extra) > 10 else ""))
        if not detail:
            detail.append("same names, but not matched one to one")
        raise ValueError(
            f"create_dataset({name!r}): the class folders of {folder} differ from those of {train_folder} "
            f"({'; '.join(detail)}); labels are by sorted class folder, so they would not mean the same classes"
        )


def _size_mismatch(listing: FolderListing) -> tuple[str, tuple[int, int], str, tuple[int, int]] | None:
    """Two images of different sizes (path, size, path, size), or None when all headers agree.

    Reads only headers, stopping at the first difference. Unreadable files are
    passed over here; decoding names them.
    """
    first: tuple[str, tuple[int, int]] | None = None
    for path in listing.paths:
        try:
            with open_image(path) as image:
                size = image.size
        except DecodeError:
            continue
        if first is None:
            first = (path, size)
        elif size != first[1]:
            return first[0], first[1], path, size
    return None


def _first_size(listing: FolderListing) -> tuple[int, int] | None:
    for path in listing.paths:
        try:
            with open_image(path) as image:
                return image.size
        except DecodeError:
            continue
    return None


def _choose_loader(listing: FolderListing, cache: bool) -> str:
    """"device" for a folder of equal-sized images whose decoded pixels fit DEVICE_BUDGET_BYTES, else "stream"."""
    size = _first_size(listing)
    if size is None:
        return "device"  # nothing readable: decoding raises and names the first file
    if len(listing.paths) * 3 * size[0] * size[1] > DEVICE_BUDGET_BYTES:
        return "stream"
    if cache and _images._cache_path(listing, None, _images.default_cache_dir()).is_file():
        return "device"  # decoded before: the images all have one size
    return "stream" if _size_mismatch(listing) is not None else "device"


def _file_dataset(name: str, *, paths, labels, classes, mean, std, split: str, options: _FileOptions) -> FileDataset:
    extra = {}
    if options.image_size is not None:
        extra["image_size"] = options.image_size
    if options.resize_size is not None:
        extra["resize_size"] = options.resize_size
    try:
        return FileDataset(paths=paths, labels=labels, classes=classes, mean=mean, std=std, name=f"{name}/{split}",
                           **extra)
    except ValueError as err:
        raise ValueError(f"create_dataset({name!r}): {err}") from err


def _imagefolder(root: Path | None, split: str, cache: bool, options: _FileOptions):
    if root is None:
        raise ValueError("create_dataset('imagefolder'): root is required (a folder of <class>/<image> folders)")
    # root/<split>/<class>/... when that layout is there; otherwise root itself holds the classes.
    if (root / split).is_dir():
        folder = root / split
    elif split == "train":
        folder = root
    else:
        raise FileNotFoundError(f"{root / split}: no such folder (imagefolder split={split!r} reads root/{split})")
    listing = scan_image_folder(folder)
    # Valid/test are labelled and normalized like the training images when there are any.
    train_folder = root / "train" if folder != root and split != "train" and (root / "train").is_dir() else None
    _check_classes("imagefolder", folder, listing.classes, train_folder)
    loader = options.loader
    if loader == "auto":
        loader = _choose_loader(listing, cache)
    elif loader == "device":
        mismatch = _size_mismatch(listing)
        if mismatch is not None:
            a, (aw, ah), b, (bw, bh) = mismatch
            raise ValueError(
                f"create_dataset('imagefolder', loader='device'): {folder} holds images of different sizes "
                f"({a} is {aw}x{ah}, {b} is {bw}x{bh}); a device-resident dataset is one tensor of equal-sized "
                "images, decoded without resizing: use loader='stream' (or 'auto') to crop and resize per batch"
            )
    if loader == "device":
        if options.image_size is not None or options.resize_size is not None:
            raise ValueError(
                "create_dataset('imagefolder'): image_size/resize_size apply to streamed datasets; this folder is "
                "held on the device at its own image size (pass loader='stream' to crop and resize)"
            )
        decoded = load_image_folder(folder, cache=cache)
        stats_from = load_image_folder(train_folder, cache=cache) if train_folder is not None else decoded
        mean, std = _channel_stats(stats_from.images)
        # The natural-image default: CIFAR's shift of 1/8 of the side, and flip.
        augmentation = Augmentation(crop_padding=max(1, decoded.images.shape[2] // 8), flip=True)
        return decoded, mean, std, augmentation
    stats_paths = scan_image_folder(train_folder).paths if train_folder is not None else listing.paths
    mean, std = estimate_channel_stats(stats_paths, count=_STATS_SAMPLE, seed=0)
    return _file_dataset("imagefolder", paths=listing.paths, labels=torch.tensor(listing.labels, dtype=torch.int64),
                         classes=listing.classes, mean=mean, std=std, split=split, options=options)


def _list_image_files(folder: Path) -> tuple[tuple[str, ...], np.ndarray, torch.Tensor]:
    """(classes, paths, labels) of `folder`/<class>/<image>, ordered as scan_image_folder orders them.

    No stat per file (a million of them take minutes on network storage):
    the stream needs no decode-cache key.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found (expected {folder}/<class>/<image>.JPEG)")
    classes = _class_folders(folder)
    if not classes:
        raise ValueError(f"no class folders in {folder} (expected {folder}/<class>/<image>.JPEG)")
    paths: list[str] = []
    counts: list[int] = []
    for cls in classes:
        class_dir = os.path.join(folder, cls)
        names = sorted(e.name for e in os.scandir(class_dir)
                       if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())
        if not names:
            raise ValueError(
                f"{class_dir}: class folder has no images (expected files ending in {', '.join(IMAGE_SUFFIXES)})"
            )
        paths.extend(os.path.join(class_dir, n) for n in names)
        counts.append(len(names))
    labels = torch.repeat_interleave(torch.arange(len(classes)), torch.tensor(counts))
    return classes, np.array(paths, dtype=str), labels


def _imagenet(root: Path | None, split: str, cache: bool, options: _FileOptions):
    root = root if root is not None else _default_root("imagenet", "imagenet")
    # ImageNet's labelled held-out set is val/ (NAS papers report it as the test accuracy).
    folder = root / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: ImageNet {split} folder not found (expected {root}/train/<wnid>/*.JPEG and "
            f"{root}/val/<wnid>/*.JPEG, the validation images sorted into their class folders)"
        )
    if options.loader == "device":
        raise ValueError(
            "create_dataset('imagenet', loader='device'): ImageNet's images differ in size, and a device-resident "
            "dataset is one tensor of equal-sized images decoded without resizing; use loader='stream' (or 'auto')"
        )
    classes, paths, labels = _list_image_files(folder)
    train_folder = root / "train" if split != "train" and (root / "train").is_dir() else None
    _check_classes("imagenet", folder, classes, train_folder)
    return _file_dataset("imagenet", paths=paths, labels=labels, classes=classes, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD, split=split, options=options)


_Loader = Callable[[Path | None, str, bool], tuple]
_DATASETS: dict[str, tuple[_Loader, tuple[str, ...]]] = {
    "fashion-mnist": (_fashion_mnist, ("train", "test")),
    "cifar10": (_cifar10, ("train", "test")),
    "imagefolder": (_imagefolder, ("train", "valid", "test")),
    "imagenet": (_imagenet, ("train", "val", "test")),
    "nb201-cifar10": (_nb201_cifar10, ("train", "valid", "test")),
}
# Datasets of files that may stream: their loaders also take a _FileOptions.
_FILE_DATASETS = ("imagefolder", "imagenet")


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def create_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    split: str = "train",
    subset: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache: bool = True,
    loader: str = "auto",
    image_size: int | None = None,
    resize_size: int | None = None,
) -> DeviceDataset | FileDataset:
    """Load dataset `name` ("fashion-mnist", "cifar10", "imagefolder", "imagenet", "nb201-cifar10").

    split: "train" or "test" ("valid" too for nb201-cifar10 and imagefolder;
    "val" for imagenet, whose "test" also reads val/).
    subset: keep a seeded, class-stratified subset of that many images.
    cache: reuse/write the decode cache of JPEG/PNG folders ($PYNAS_CACHE).
    loader: "auto" (see the module docstring), "device" (decode everything
    onto `device`: a DeviceDataset) or "stream" (a FileDataset of the files;
    only "imagefolder" and "imagenet" stream). A DeviceDataset lives on
    `device`; a FileDataset stays on disk and its loader picks the device.
    image_size/resize_size: a streamed dataset's sample side (default 224)
    and evaluation resize (default image_size / 0.875).
    The normalization stats are the training set's for every split (for an
    imagefolder, computed from root/train when present, else from the split;
    for a streamed one estimated from 500 of those images; ImageNet's usual
    values for imagenet). A held-out split must have the training split's
    class folders, and a dataset at least two classes.
    """
    if name not in _DATASETS:
        raise ValueError(f"create_dataset: unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    load, splits = _DATASETS[name]
    if split not in splits:
        raise ValueError(
            f"create_dataset({name!r}): split must be one of {', '.join(map(repr, splits))}, got {split!r}"
        )
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"create_dataset: root must be a path, got {type(root).__name__}")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ValueError(f"create_dataset: subset must be None or an int >= 1, got {subset!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"create_dataset: seed must be an int >= 0, got {seed!r}")
    if not isinstance(cache, bool):
        raise ValueError(f"create_dataset: cache must be a bool, got {cache!r}")
    if loader not in LOADERS:
        raise ValueError(f"create_dataset: loader must be one of {', '.join(map(repr, LOADERS))}, got {loader!r}")
    for what, value in (("image_size", image_size), ("resize_size", resize_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"create_dataset: {what} must be None or an int >= 1, got {value!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"create_dataset: bad device {device!r} ({err})") from err

    root_path = Path(root).expanduser() if root is not None else None
    if name in _FILE_DATASETS:
        loaded = load(root_path, split, cache, _FileOptions(loader, image_size, resize_size, cache))
    else:
        if loader == "stream":
            raise ValueError(f"create_dataset({name!r}): loader='stream' is for folders of image files "
                             f"({', '.join(_FILE_DATASETS)}); {name} is held on the device")
        if image_size is not None or resize_size is not None:
            raise ValueError(f"create_dataset({name!r}): image_size/resize_size apply to streamed datasets "
                             f"({', '.join(_FILE_DATASETS)}); {name} keeps its own image size")
        loaded = load(root_path, split, cache)
    if isinstance(loaded, FileDataset):
        if subset is not None:
            if subset > len(loaded):
                raise ValueError(
                    f"create_dataset({name!r}): subset={subset} but the {split} split has {len(loaded)} images"
                )
            loaded = loaded.subset(stratified_indices(loaded.labels, subset, seed=seed))
        return loaded
    decoded, mean, std, augmentation = loaded
    images, labels = decoded.images, decoded.labels
    if subset is not None:
        if subset > len(labels):
            raise ValueError(
                f"create_dataset({name!r}): subset={subset} but the {split} split has {len(labels)} images"
            )
        keep = stratified_indices(labels, subset, seed=seed)
        images, labels = images[keep], labels[keep]
    return DeviceDataset(
        images=images.to(device), labels=labels.to(device), classes=decoded.classes,
        mean=mean, std=std, augmentation=augmentation, name=f"{name}/{split}",
    )


# --- packed: fixed-size uint8 arrays written by `pynas data pack` (pynas.data.pack) --------------

def _packed(root: Path | None, split: str, cache: bool):
    """``root/<split>`` of a pack: a zero-copy view of its images, the train images' stats, CIFAR's recipe
    scaled to the size (crop padding size // 8, flip)."""
    from pynas.data.pack import load_packed

    if root is None:
        raise ValueError("create_dataset('packed'): root is required (the --out folder of 'pynas data pack')")
    images, labels, meta = load_packed(root, split)
    decoded = DecodedImages(images, labels, tuple(meta["classes"]))
    augmentation = Augmentation(crop_padding=max(1, meta["size"] // 8), flip=True)
    return decoded, tuple(meta["mean"]), tuple(meta["std"]), augmentation


_DATASETS["packed"] = (_packed, ("train", "val", "valid", "test"))
