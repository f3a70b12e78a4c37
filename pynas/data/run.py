"""The data of a search run: the training images cut into a weight part and an architecture part,
with their loaders, as each method's authors cut them.

Three ways to cut, from the ``data:`` options (:mod:`pynas.data.options`):

- ``train_fraction`` + ``val_fraction``: two disjoint class-balanced parts of
  the training images, as PC-DARTS searches ImageNet (10% for the weights,
  2.5% for the architecture: yuhuixu1993/PC-DARTS, ``train_search_imagenet.py``);
- ``valid_per_class``: exactly that many images of every class held out, the
  rest trains the weights, as SPOS holds out 50,000 ImageNet training images
  (50 a class) to search on;
- otherwise ``valid_fraction`` of the images, class-stratified (DARTS's half).

Every cut is seeded with the run's seed, and :func:`write_split_record` writes
what it chose into the run dir (``data_split.json``): the options, the sizes
and per-class counts of both parts and, for datasets read from files, the
files of each part, so a run's data can be rebuilt or audited without pynas.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from pynas.data.loader import DeviceDataset, DeviceLoader, fraction_subset, split
from pynas.data.options import DataOptions
from pynas.data.registry import create_dataset
from pynas.data.stream import FileDataset, StreamLoader, make_loader

SPLIT_RECORD = "data_split.json"


@dataclass
class RunData:
    """The training images of a run, cut in two, and the loaders the runner trains with."""

    data: DeviceDataset | FileDataset
    train_part: DeviceDataset | FileDataset
    valid_part: DeviceDataset | FileDataset
    train_loader: DeviceLoader | StreamLoader
    valid_loader: DeviceLoader | StreamLoader
    cut: str
    seconds: float

    def close(self) -> None:
        """Stop the decoding processes of streamed loaders (a no-op for device-resident data)."""
        for loader in (self.train_loader, self.valid_loader):
            if isinstance(loader, StreamLoader):
                loader.close()


def cut_training_set(data, options: DataOptions, *, valid_fraction: float, seed: int) -> tuple[Any, Any, str]:
    """(weight part, architecture part, a one-line description of the cut)."""
    fractions = (options.train_fraction, options.val_fraction)
    if (fractions[0] is None) != (fractions[1] is None):
        raise ValueError("data.train_fraction and data.val_fraction go together (the weight part and the disjoint "
                         f"architecture part, as PC-DARTS's 0.1 and 0.025); got {fractions[0]!r} and {fractions[1]!r}")
    if fractions[0] is not None and options.valid_per_class is not None:
        raise ValueError("data.valid_per_class and data.train_fraction/val_fraction are two ways to cut the "
                         "training set; give one")
    if fractions[0] is not None:
        train_fraction, val_fraction = fractions
        if train_fraction + val_fraction > 1.0:
            raise ValueError(f"data.train_fraction + data.val_fraction must be <= 1 (disjoint parts), "
                             f"got {train_fraction} + {val_fraction}")
        train_part = fraction_subset(data, train_fraction, seed=seed, name=f"{data.name}/train")
        valid_part = fraction_subset(data, val_fraction, seed=seed, offset=train_fraction, name=f"{data.name}/valid")
        return train_part, valid_part, f"train_fraction {train_fraction} / val_fraction {val_fraction}"
    if options.valid_per_class is not None:
        train_part, valid_part = split(data, valid_per_class=options.valid_per_class, seed=seed)
        return train_part, valid_part, f"valid_per_class {options.valid_per_class}"
    train_part, valid_part = split(data, valid_fraction=valid_fraction, seed=seed)
    return train_part, valid_part, f"valid_fraction {valid_fraction}"


def load_run_data(
    dataset: str,
    options: DataOptions,
    *,
    device: torch.device,
    seed: int,
    batch_size: int,
    valid_fraction: float,
    subset: Optional[int] = None,
    augment: bool = True,
    augment_valid: bool = False,
    memory_format: str = "preserve",
) -> RunData:
    """``dataset``'s training split cut in two (:func:`cut_training_set`), a training loader (augmented when
    ``augment``) and the validation loader paired with it (augmented too when ``augment_valid``, as the
    cell searches' architecture steps are). Streamed datasets decode in worker processes."""
    t0 = time.perf_counter()
    data = create_dataset(dataset, root=options.root, split="train", subset=subset, seed=seed, device=device,
                          loader=options.loader, image_size=options.image_size, resize_size=options.resize_size)
    train_part, valid_part, cut = cut_training_set(data, options, valid_fraction=valid_fraction, seed=seed)
    common: dict[str, Any] = dict(batch_size=batch_size, drop_last=True, memory_format=memory_format, device=device)
    if isinstance(data, FileDataset):
        common.update(workers=options.workers, strict=options.strict, decoder=options.decoder)
    elif options.colour_jitter is not None or options.workers is not None or options.strict \
            or options.decoder != "auto":
        raise ValueError(f"data.colour_jitter, data.workers, data.strict and data.decoder concern streamed datasets; "
                         f"{dataset!r} was decoded onto the device (set data.loader=stream to stream it)")
    jitter = {"colour_jitter": options.colour_jitter} if isinstance(data, FileDataset) else {}
    train_loader = make_loader(train_part, augment=augment, seed=seed, **jitter, **common)
    valid_loader = make_loader(valid_part, augment=augment_valid and augment, seed=seed + 1,
                               **(jitter if augment_valid else {}), **common)
    return RunData(data, train_part, valid_part, train_loader, valid_loader, cut, time.perf_counter() - t0)


def _per_class(part) -> dict[str, int]:
    counts = torch.bincount(part.labels.cpu(), minlength=part.num_classes).tolist()
    return {name: count for name, count in zip(part.classes, counts)}


def _files(part: FileDataset, root: Optional[str]) -> list[str]:
    paths = [str(p) for p in part.paths]
    if root is None:
        return paths
    base = os.path.abspath(root)
    return [os.path.relpath(p, base) if os.path.abspath(p).startswith(base + os.sep) else p for p in paths]


def write_split_record(out_dir: Path, run: RunData, options: DataOptions, *, dataset: str, seed: int) -> Path:
    """``out_dir/data_split.json``: how the training set was cut, with the files of each part when the
    data is read from files (paths relative to ``data.root``). Written atomically."""
    record: dict[str, Any] = {
        "dataset": dataset, "seed": seed, "options": options.as_dict(), "cut": run.cut,
        "images": len(run.data), "loader": "stream" if isinstance(run.data, FileDataset) else "device",
    }
    for name, part in (("train", run.train_part), ("valid", run.valid_part)):
        entry: dict[str, Any] = {"images": len(part), "per_class": _per_class(part)}
        if isinstance(part, FileDataset):
            entry["files"] = _files(part, options.root)
        record[name] = entry
    path = Path(out_dir) / SPLIT_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path
