"""The ``data:`` section of a run's configuration, checked once where the run starts.

In YAML either a path (the dataset root, as ``--data DIR`` gives it) or a mapping:

    data:
      root: /data/imagenet      # null: the dataset's default location
      train_fraction: 0.1       # class-balanced, seeded share of the training images (PC-DARTS: 0.1)
      val_fraction: 0.025       # the same for the images the architecture is chosen on (PC-DARTS: 0.025)
      valid_per_class: null     # hold out exactly this many training images per class (SPOS: 50)
      loader: auto              # auto | device (decoded once, held on the device) | stream (worker processes)
      workers: null             # stream: decoding processes per rank (null: the cores / ranks, at most 8)
      colour_jitter: null       # stream: brightness/contrast/saturation strength (SPOS: 0.4)
      strict: false             # stream: a corrupt image is an error instead of a counted, skipped warning
      decoder: auto             # stream: auto | libjpeg (region JPEG decode, pynas._jpeg) | pillow
      image_size: null          # stream: the side of the training crops and evaluation centre crops (224)
      resize_size: null         # stream: evaluation resizes the shorter side to this first (image_size / 0.875)

``--data DIR`` sets ``data.root`` and keeps the other keys of a config file.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from pynas.data.decode import check_decoder

LOADERS = ("auto", "device", "stream")


@dataclass(frozen=True)
class DataOptions:
    root: Optional[str] = None
    train_fraction: Optional[float] = None
    val_fraction: Optional[float] = None
    valid_per_class: Optional[int] = None
    loader: str = "auto"
    workers: Optional[int] = None
    colour_jitter: Optional[float] = None
    strict: bool = False
    decoder: str = "auto"
    image_size: Optional[int] = None
    resize_size: Optional[int] = None

    def as_dict(self) -> dict:
        return asdict(self)


def _fraction(value: Any, key: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"data.{key} must be a number in (0, 1] or null, got {value!r}")
    return float(value)


def _positive_int(value: Any, key: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"data.{key} must be an int >= 1 or null, got {value!r}")
    return value


def data_options(value: Any) -> DataOptions:
    """``value`` (None, a path or a mapping, as the config holds it) checked and completed."""
    if value is None:
        return DataOptions()
    if isinstance(value, (str, os.PathLike)):
        value = {"root": value}
    if not isinstance(value, dict):
        raise ValueError(f"data must be a path or a mapping of {', '.join(f.name for f in fields(DataOptions))}, "
                         f"got {type(value).__name__}")
    known = {f.name for f in fields(DataOptions)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"data: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    root = value.get("root")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"data.root must be a path or null, got {root!r}")
    loader = value.get("loader", "auto")
    if loader not in LOADERS:
        raise ValueError(f"data.loader must be one of {', '.join(LOADERS)}, got {loader!r}")
    jitter = value.get("colour_jitter")
    if jitter is not None and (isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1):
        raise ValueError(f"data.colour_jitter must be a number in [0, 1) or null, got {jitter!r}")
    strict = value.get("strict", False)
    if not isinstance(strict, bool):
        raise ValueError(f"data.strict must be true or false, got {strict!r}")
    options = DataOptions(
        root=None if root is None else os.fspath(root),
        train_fraction=_fraction(value.get("train_fraction"), "train_fraction"),
        val_fraction=_fraction(value.get("val_fraction"), "val_fraction"),
        valid_per_class=_positive_int(value.get("valid_per_class"), "valid_per_class"),
        loader=loader,
        workers=_positive_int(value.get("workers"), "workers"),
        colour_jitter=None if jitter is None else float(jitter),
        strict=strict,
        decoder=check_decoder(value.get("decoder", "auto"), "data.decoder"),
        image_size=_positive_int(value.get("image_size"), "image_size"),
        resize_size=_positive_int(value.get("resize_size"), "resize_size"),
    )
    return options


def with_root(value: Any, root: Optional[str]) -> Any:
    """The config's ``data`` value with ``root`` set (``--data DIR``), keeping its other keys; a bare path
    becomes ``{"root": path}`` so that ``--set data.<key>=...`` can add to it."""
    if root is None:
        return {"root": os.fspath(value)} if isinstance(value, (str, os.PathLike)) else value
    if value is None or isinstance(value, (str, os.PathLike)):
        return {"root": os.fspath(root)}
    if isinstance(value, dict):
        return {**value, "root": os.fspath(root)}
    return value  # data_options() reports the bad type
