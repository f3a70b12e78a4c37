"""Streaming image data for sets too large for the device: files decoded per batch in worker processes.

    from pynas.data import create_dataset, StreamLoader
    train = create_dataset("imagenet", root="/data/imagenet", split="train")   # a FileDataset
    with StreamLoader(train, batch_size=128, train=True, colour_jitter=0.4, device="cuda") as loader:
        for images, labels in loader: ...   # float [B, 3, 224, 224] normalized, int64 [B]

A FileDataset is a list of image files with labels and normalization stats;
nothing is decoded up front. A StreamLoader decodes each batch in worker
processes (torch DataLoader workers, persistent, prefetching): per image a
JPEG decode at reduced size (see pynas.data.decode), RandomResizedCrop and a
flip for training, resize + centre crop for evaluation, into one uint8 NHWC
batch. Only uint8 crosses to the device (a quarter of float's bytes, from
pinned memory, non-blocking); the float conversion, colour jitter and
normalization run there.

The loader behaves like DeviceLoader: the order of epoch e is a pure
function of (seed, e), data-parallel ranks take rows [rB, (r+1)B) of every
global batch, and `state_dict()` is a few numbers. Every random draw of a
sample (crop, flip, jitter) comes from a generator seeded by
(seed, epoch, position of the sample in the epoch's order), so a batch is the
same whichever worker decodes it, however many workers or ranks there are,
and after a resume from any position.
"""
from __future__ import annotations

import atexit
import dataclasses
import math
import os
import warnings
import weakref
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from pynas.data.augment import channel_stats_tensor, normalize
from pynas.data.decode import (
    DRAWS, DecodeError, check_decoder, decode_sample, draft_scale, jitter_coefficients, open_image,
)
from pynas.data.loader import (
    MEMORY_FORMATS,
    DeviceDataset,
    DeviceLoader,
    EpochCursor,
    _as_index,
    _check_seed,
    _check_shard,
    _generator,
    _mix_seed,
)

__all__ = ["FileDataset", "StreamLoader", "make_loader", "estimate_channel_stats", "default_workers"]

# Warnings about unreadable files stop after this many (each names the batch's files); loader.skipped keeps all.
_MAX_SKIP_WARNINGS = 10


@dataclass(frozen=True, eq=False)
class FileDataset:
    """Image files (JPEG/PNG) with int64 labels, decoded only when a StreamLoader reads them.

    `paths` is kept as a numpy array of str: one buffer instead of a million
    Python strings, so forked worker processes share it instead of copying
    it page by page as reference counts change. `mean`/`std` are RGB stats
    in [0, 1] units. Samples are `image_size` square; evaluation resizes the
    shorter side to `resize_size` (default round(image_size / 0.875), 256 for
    224) and takes the centre.
    """

    paths: np.ndarray
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = "dataset"
    image_size: int = 224
    resize_size: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise ValueError(f"FileDataset: name must be a str, got {type(self.name).__name__}")
        paths = self.paths
        if isinstance(paths, np.ndarray):
            if paths.dtype.kind != "U" or paths.ndim != 1:
                raise ValueError(f"{self.name}: paths must be a 1-d numpy array of str, "
                                 f"got {paths.dtype} {paths.shape}")
        elif isinstance(paths, (tuple, list)):
            if not all(isinstance(p, (str, os.PathLike)) for p in paths):
                raise ValueError(f"{self.name}: paths must be strings or path-likes")
            paths = np.array([os.fspath(p) for p in paths], dtype=str).reshape(-1)
        else:
            raise ValueError(f"{self.name}: paths must be a tuple of str or a numpy array of str, "
                             f"got {type(paths).__name__}")
        object.__setattr__(self, "paths", paths)
        labels = self.labels
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (len(paths),):
            got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"{self.name}: labels must be an int64 tensor [{len(paths)}] (one per path), got {got}")
        if labels.device.type != "cpu":
            raise ValueError(f"{self.name}: labels must be on the CPU (the files are read there), got {labels.device}")
        object.__setattr__(self, "classes", tuple(self.classes))
        if not self.classes:
            raise ValueError(f"{self.name}: no classes")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise ValueError(f"{self.name}: labels must lie in 0..{len(self.classes) - 1}, "
                             f"got {int(labels.min())}..{int(labels.max())}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or any(not s > 0 for s in self.std):
            raise ValueError(f"{self.name}: expected 3 means and 3 positive stds (RGB), got {self.mean} and {self.std}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"{self.name}: image_size must be an int >= 1, got {self.image_size!r}")
        if self.resize_size is None:
            object.__setattr__(self, "resize_size", round(self.image_size / 0.875))
        elif (isinstance(self.resize_size, bool) or not isinstance(self.resize_size, int)
              or self.resize_size < self.image_size):
            raise ValueError(f"{self.name}: resize_size must be an int >= image_size ({self.image_size}) "
                             f"(evaluation crops image_size out of it), got {self.resize_size!r}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"FileDataset(name={self.name!r}, n={len(self)}, image_shape={self.image_shape}, "
                f"resize_size={self.resize_size}, num_classes={self.num_classes})")

    def subset(self, indices: torch.Tensor | Sequence[int], *, name: str | None = None) -> "FileDataset":
        """The files at `indices` (in that order), same stats and sizes."""
        index = _as_index(indices, len(self), what=f"{self.name}.subset")
        return dataclasses.replace(self, paths=self.paths[index.numpy()], labels=self.labels[index],
                                   name=name or self.name)


def default_workers(world_size: int = 1) -> int:
    """Decode workers per rank: the usable cores shared among the ranks, at most 8, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // world_size))


def estimate_channel_stats(
    paths: Sequence[str] | np.ndarray, *, count: int = 500, seed: int = 0, side: int = 64
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """RGB mean and std (in [0, 1] units) over the pixels of a seeded sample of `count` images.

    Each image is decoded at reduced size (a JPEG's DCT scaled so the shorter
    side stays >= `side`): the mean is unchanged by that and the std barely.
    Unreadable files are left out; raises ValueError when none can be read.
    """
    _check_seed(seed, "estimate_channel_stats")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"estimate_channel_stats: count must be an int >= 1, got {count!r}")
    if len(paths) == 0:
        raise ValueError("estimate_channel_stats: no images given")
    picked = torch.randperm(len(paths), generator=_generator(seed, 0x57A75))[:count].sort().values.tolist()
    total = np.zeros(3)
    squares = np.zeros(3)
    pixels = 0
    failures = []
    for i in picked:
        try:
            with open_image(str(paths[i])) as image:
                if image.format == "JPEG":
                    s = draft_scale(*image.size, side)
                    if s > 1:
                        image.draft("RGB", (image.size[0] // s, image.size[1] // s))
                rgb = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
        except (DecodeError, OSError, ValueError, SyntaxError) as err:
            failures.append(f"{paths[i]} ({err})")
            continue
        total += rgb.sum(axis=0)
        squares += np.square(rgb).sum(axis=0)
        pixels += rgb.shape[0]
    if not pixels:
        raise ValueError(f"estimate_channel_stats: none of the {len(picked)} sampled images could be decoded: "
                         + "; ".join(failures[:3]))
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - np.square(mean), 0))
    std = np.where(std > 0, std, 255.0)  # a constant channel: leave it unscaled
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


# --- what travels between the main process and the workers ----------------------------------

class _Request(NamedTuple):
    """One rank's part of one global batch: the dataset rows, where they sit in the epoch order."""

    seed: int
    epoch: int
    start: int  # epoch-order position of the first row
    end: int  # epoch-order position after the whole global batch
    indices: np.ndarray


class _Batch(NamedTuple):
    images: torch.Tensor  # uint8 [b, S, S, 3]
    labels: torch.Tensor  # int64 [b]
    jitter: torch.Tensor | None  # float32 [b, 3, 3] (see decode.jitter_coefficients)
    skipped: list  # [(path, reason)]
    epoch: int
    end: int


def _as_is(batch):
    return batch


def _sample_uniforms(seed: int, epoch: int, position: int) -> list[float]:
    generator = torch.Generator().manual_seed(_mix_seed(seed, epoch, position))
    return torch.rand(DRAWS, generator=generator, dtype=torch.float64).tolist()


class _Decoder(torch.utils.data.Dataset):
    """Runs in the workers: a _Request in, a decoded uint8 _Batch out."""

    def __init__(self, dataset: FileDataset, *, train: bool, colour_jitter: float | None, decoder: str):
        self.paths = dataset.paths
        self.labels = dataset.labels.numpy()
        self.image_size = dataset.image_size
        self.resize_size = dataset.resize_size
        self.train = train
        self.colour_jitter = colour_jitter
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, request: _Request) -> _Batch:
        n, size = len(request.indices), self.image_size
        shape = (n, size, size, 3)
        if torch.utils.data.get_worker_info() is not None:
            # Decoded straight into shared memory (as torch's default_collate does in workers): sending
            # the batch then passes a handle instead of copying every pixel once more.
            storage = torch.UntypedStorage._new_shared(math.prod(shape))
            images = torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)
        else:
            images = torch.empty(shape, dtype=torch.uint8)
        pixels = images.numpy()
        labels = torch.empty(n, dtype=torch.int64)
        jitter = torch.empty((n, 3, 3), dtype=torch.float32) if self.colour_jitter else None
        skipped = []
        kept = 0
        for offset, row in enumerate(request.indices.tolist()):
            uniforms = _sample_uniforms(request.seed, request.epoch, request.start + offset) if self.train else None
            path = str(self.paths[row])
            try:
                pixels[kept] = decode_sample(path, train=self.train, image_size=size,
                                             resize_size=self.resize_size, uniforms=uniforms,
                                             decoder=self.decoder)
            except DecodeError as err:
                skipped.append((path, str(err)))
                continue
            labels[kept] = int(self.labels[row])
            if jitter is not None:
                jitter[kept] = torch.from_numpy(jitter_coefficients(uniforms, self.colour_jitter))
            kept += 1
        if kept < n:
            images, labels = images[:kept], labels[:kept]
            jitter = jitter[:kept] if jitter is not None else None
        return _Batch(images, labels, jitter, skipped, request.epoch, request.end)


class _Plan:
    """The sampler: requests of one pass, this rank's rows of each global batch up to the epoch's end.

    The loader sets `pass_args` before each iter() of the DataLoader, which
    calls __iter__ in the main process at that moment.
    """

    def __init__(self):
        self.pass_args: tuple | None = None

    def __iter__(self) -> Iterator[_Request]:
        seed, epoch, position, end, order, global_batch, rank, world_size = self.pass_args
        while position < end:
            index = order[position:position + global_batch]
            total = len(index)
            first, last = rank * total // world_size, (rank + 1) * total // world_size
            yield _Request(seed, epoch, position + first, position + total, index[first:last])
            position += total


# Loaders whose workers may be running: closed at exit, before multiprocessing's own exit handler would
# terminate the workers with SIGTERM, which they ignore (below).
_LIVE_LOADERS: "weakref.WeakSet[StreamLoader]" = weakref.WeakSet()


@atexit.register
def _close_live_loaders() -> None:
    for loader in list(_LIVE_LOADERS):
        loader.close()


def _ignore_stop_signals(worker_id: int) -> None:
    """Decoding processes ignore SIGINT and SIGTERM: a Ctrl-C or a scheduler's SIGTERM reaches every process
    of the job, and a worker that died of it would fail the training step in flight instead of letting the
    main process finish it and write its checkpoint (:mod:`pynas.training.guard`). The workers still end
    with the main process (torch's watchdog) or when the loader shuts them down (at exit too:
    :func:`_close_live_loaders`)."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _apply_jitter(x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """x float [B, 3, H, W] in [0, 1] (modified in place); per image three steps
    x <- clamp(a x + b gray(x) + c mean(gray(x)), 0, 1), (a, b, c) = coefficients[:, step]."""
    w_r, w_g, w_b = 0.2989, 0.587, 0.114  # torchvision's rgb_to_grayscale
    for step in range(coefficients.shape[1]):
        a, b, c = (coefficients[:, step, k].to(x.dtype).view(-1, 1, 1, 1) for k in range(3))
        gray = (x[:, 0:1] * w_r).add_(x[:, 1:2], alpha=w_g).add_(x[:, 2:3], alpha=w_b)
        mean = gray.mean(dim=(2, 3), keepdim=True)
        shift = gray.mul_(b).add_(mean.mul_(c))  # [B, 1, H, W]: a third of the image's size
        x.mul_(a).add_(shift).clamp_(0.0, 1.0)
    return x


class StreamLoader(EpochCursor):
    """Decoded, augmented float batches from a FileDataset, on `device`, resumable mid-epoch.

    Yields (images float [B, 3, S, S] normalized by the dataset's mean/std,
    labels int64 [B]), S the dataset's image_size. train=True: torchvision's
    RandomResizedCrop(S, scale=(0.08, 1), ratio=(3/4, 4/3)) and a horizontal
    flip with p=0.5, plus ColorJitter(j, j, j) when colour_jitter=j (factors
    drawn in the worker, applied on the device in float before
    normalization). train=False: resize the shorter side to the dataset's
    resize_size, centre crop S.

    Interface as DeviceLoader's: `len()` (global steps per epoch), `epoch`,
    `position` (global samples of the epoch consumed), `set_epoch`,
    `global_batch_size`, iteration continuing from the current position
    (only the newest iterator may advance), `state_dict()` /
    `load_state_dict()`, sharding by rank/world_size (default: the torchrun
    process group's).

    workers: decode processes (0 decodes in this process; None:
    default_workers(world_size)). They persist between epochs and decode
    `prefetch` batches each ahead; batches arrive in order. close() (or
    leaving a `with` block) stops them; iterating again starts new ones.

    Unreadable images are skipped (that batch is one sample smaller), named
    in a warning and recorded in `skipped` as (path, reason), one entry per
    skipped sample; strict=True raises ValueError naming the file instead.

    decoder: "auto" (region JPEG decode where pynas._jpeg was built, else
    Pillow), "libjpeg" (the region decoder, an error where not built) or
    "pillow" (see pynas.data.decode).
    A file that fails is skipped again in every epoch.
    """

    def __init__(
        self,
        dataset: FileDataset,
        *,
        batch_size: int,
        shuffle: bool = True,
        train: bool = True,
        colour_jitter: float | None = None,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        rank: int | None = None,
        world_size: int | None = None,
        memory_format: str = "preserve",
        workers: int | None = None,
        prefetch: int = 2,
        strict: bool = False,
        decoder: str = "auto",
    ):
        if not isinstance(dataset, FileDataset):
            raise ValueError(f"StreamLoader: dataset must be a FileDataset, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"StreamLoader: batch_size must be an int >= 1, got {batch_size!r}")
        for flag_name, flag in (("shuffle", shuffle), ("train", train), ("drop_last", drop_last),
                                ("strict", strict)):
            if not isinstance(flag, bool):
                raise ValueError(f"StreamLoader: {flag_name} must be a bool, got {flag!r}")
        if colour_jitter is not None:
            if isinstance(colour_jitter, bool) or not isinstance(colour_jitter, (int, float)) \
                    or not 0 <= colour_jitter < math.inf:
                raise ValueError(f"StreamLoader: colour_jitter must be None or a number >= 0, got {colour_jitter!r}")
            if not train and colour_jitter > 0:
                raise ValueError("StreamLoader: colour_jitter is a training augmentation; "
                                 "it needs train=True (evaluation batches are not jittered)")
            colour_jitter = float(colour_jitter) or None
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"StreamLoader: bad device {device!r} ({err})") from err
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"StreamLoader: dtype must be a floating torch.dtype, got {dtype!r}")
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"StreamLoader: memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
        rank, world_size = _check_shard(rank, world_size, what="StreamLoader")
        if workers is None:
            workers = default_workers(world_size)
        elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"StreamLoader: workers must be None or an int >= 0, got {workers!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"StreamLoader: prefetch must be an int >= 1 (batches per worker), got {prefetch!r}")
        self.check_batching(len(dataset), batch_size=batch_size, world_size=world_size, drop_last=drop_last,
                            what="StreamLoader")
        self.decoder = check_decoder(decoder, "StreamLoader: decoder")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.train = train
        self.colour_jitter = colour_jitter
        self.drop_last = drop_last
        self.seed = _check_seed(seed, "StreamLoader")
        self.device = device
        self.dtype = dtype
        self.rank = rank
        self.world_size = world_size
        self.memory_format = memory_format
        self.workers = workers
        self.prefetch = prefetch
        self.strict = strict
        self.skipped: list[tuple[str, str]] = []
        self._skip_warnings = 0
        self._epoch = 0
        self._position = 0
        self._iteration = 0
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._plan = _Plan()
        self._decoder = _Decoder(dataset, train=train, colour_jitter=colour_jitter, decoder=self.decoder)
        self._loader: torch.utils.data.DataLoader | None = None
        self._mean = channel_stats_tensor(dataset.mean, device=device)
        self._std = channel_stats_tensor(dataset.std, device=device)
        # normalize()'s (x / 255 - mean) / std as one multiply-add on pixels 0..255.
        self._scale = (self._std.to(torch.float32) * 255.0).reciprocal().view(1, -1, 1, 1)
        self._bias = (-self._mean.to(torch.float32) / self._std.to(torch.float32)).view(1, -1, 1, 1)

    # -- sizes and position ----------------------------------------------------
    def _order(self, epoch: int) -> np.ndarray:
        if self._order_cache is None or self._order_cache[0] != epoch:
            n = len(self.dataset)
            order = torch.randperm(n, generator=_generator(self.seed, epoch)) if self.shuffle else torch.arange(n)
            self._order_cache = (epoch, order.numpy())
        return self._order_cache[1]

    # -- workers -----------------------------------------------------------------
    def _dataloader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            options = {}
            if self.workers:
                options = dict(persistent_workers=True, prefetch_factor=self.prefetch,
                               worker_init_fn=_ignore_stop_signals)
            _LIVE_LOADERS.add(self)
            self._loader = torch.utils.data.DataLoader(
                self._decoder, batch_size=None, sampler=self._plan, num_workers=self.workers,
                collate_fn=_as_is, pin_memory=self.device.type == "cuda",
                # Its own generator: iter() would otherwise draw a worker base seed from torch's global RNG.
                generator=torch.Generator(), **options,
            )
        return self._loader

    def close(self) -> None:
        """Stop the worker processes (iterating again starts new ones); live iterators become stale."""
        self._iteration += 1
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None) if loader is not None else None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            loader._iterator = None

    def __enter__(self) -> "StreamLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the DataLoader cleans up after itself
            pass

    # -- iteration --------------------------------------------------------------
    def _batches(self, iteration: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        end = self._begin_pass(iteration)
        self._plan.pass_args = (self.seed, self._epoch, self._position, end, self._order(self._epoch),
                                self.global_batch_size, self.rank, self.world_size)
        stream = iter(self._dataloader())
        while True:
            # Checked before next(): a newer iter() reset the same DataLoader iterator for itself.
            self._check_current(iteration)
            try:
                batch = next(stream)
            except StopIteration:
                break
            self._note_skipped(batch.skipped)
            self._position = batch.end
            yield self._to_device(batch)
        if iteration == self._iteration:
            self._epoch, self._position = self._epoch + 1, 0

    def _note_skipped(self, skipped: list) -> None:
        if not skipped:
            return
        if self.strict:
            path, reason = skipped[0]
            raise ValueError(f"{path}: cannot decode image ({reason})")
        self.skipped.extend((str(path), str(reason)) for path, reason in skipped)
        if self._skip_warnings >= _MAX_SKIP_WARNINGS:
            return
        self._skip_warnings += 1
        names = ", ".join(f"{path} ({reason})" for path, reason in skipped[:3])
        if len(skipped) > 3:
            names += f" and {len(skipped) - 3} more"
        last = "; further skips are only recorded in loader.skipped" if self._skip_warnings == _MAX_SKIP_WARNINGS \
            else ""
        warnings.warn(f"StreamLoader: skipped {len(skipped)} unreadable image(s) in this batch "
                      f"({len(self.skipped)} so far, listed in loader.skipped): {names}{last}", stacklevel=3)

    def _to_device(self, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch.images, batch.labels
        if self.device.type != "cpu":
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
        x = images.permute(0, 3, 1, 2)  # NCHW shape over NHWC memory: channels-last already
        if batch.jitter is None:
            # Two passes over the batch: uint8 -> float32 in the layout asked for, then x / (255 std) -
            # mean / std in place (the general path below makes four).
            fmt = torch.channels_last if self.memory_format == "channels_last" else torch.contiguous_format
            out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=fmt)
            out.copy_(x)
            torch.addcmul(self._bias, out, self._scale, out=out)
            return out.to(self.dtype), labels
        if self.memory_format == "preserve":
            x = x.contiguous()  # on uint8: a quarter of the bytes of doing it in float
        if batch.jitter is not None:
            x = _apply_jitter(x.to(torch.float32).div_(255.0), batch.jitter.to(self.device, non_blocking=True))
        x = normalize(x, mean=self._mean, std=self._std, dtype=self.dtype)
        if self.memory_format == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()
        return x, labels

    # -- checkpointing ----------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self._epoch,
            "position": self._position,
            "seed": self.seed,
            "num_samples": len(self.dataset),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "world_size": self.world_size,
            "train": self.train,
            "image_size": self.dataset.image_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue where the loader that wrote `state` stopped (same data, batch size, shuffle, drop_last,
        world size, transform: the state is the same on every rank, so any rank's state restores all)."""
        if not isinstance(state, dict):
            raise ValueError(f"StreamLoader.load_state_dict: expected a dict, got {type(state).__name__}")
        required = ("epoch", "position", "seed", "num_samples", "batch_size", "shuffle", "drop_last", "world_size")
        missing = [key for key in required if key not in state]
        if missing:
            raise ValueError(f"StreamLoader.load_state_dict: missing keys {missing}")
        state = {"train": self.train, "image_size": self.dataset.image_size, **state}
        for key, mine in (("num_samples", len(self.dataset)), ("batch_size", self.batch_size),
                          ("shuffle", self.shuffle), ("drop_last", self.drop_last),
                          ("world_size", self.world_size), ("train", self.train),
                          ("image_size", self.dataset.image_size)):
            if state[key] != mine:
                raise ValueError(f"StreamLoader.load_state_dict: state has {key}={state[key]!r}, this loader {mine!r}; "
                                 "resuming would not reproduce the saved run")
        epoch, position = state["epoch"], state["position"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"StreamLoader.load_state_dict: epoch must be an int >= 0, got {epoch!r}")
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= len(self.dataset):
            raise ValueError(
                f"StreamLoader.load_state_dict: position {position!r} outside 0..{len(self.dataset)}"
            )
        self.seed = _check_seed(state["seed"], "StreamLoader.load_state_dict")
        self._epoch, self._position = epoch, position
        self._order_cache = None
        self._iteration += 1  # iterators from before the load must not advance the restored cursor


def make_loader(
    dataset: DeviceDataset | FileDataset,
    *,
    batch_size: int,
    shuffle: bool = True,
    augment: bool = False,
    drop_last: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    rank: int | None = None,
    world_size: int | None = None,
    memory_format: str = "preserve",
    colour_jitter: float | None = None,
    workers: int | None = None,
    prefetch: int = 2,
    strict: bool = False,
    decoder: str = "auto",
) -> DeviceLoader | StreamLoader:
    """The loader for `dataset`: a DeviceLoader for a DeviceDataset, a StreamLoader for a FileDataset.

    `augment` is the training switch: for a DeviceDataset it is DeviceLoader's
    (False, True for the dataset's recipe, or an Augmentation); for a
    FileDataset True means train=True (RandomResizedCrop + flip), False the
    evaluation resize + centre crop. `device` (default: the DeviceDataset's
    own, the CPU for files) moves a DeviceDataset there when it differs.
    colour_jitter exists only for streams; workers, prefetch, strict and decoder
    concern file decoding and are ignored for a DeviceDataset (its images
    were decoded, strictly, when it was made).
    """
    common = dict(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, dtype=dtype, rank=rank,
                  world_size=world_size, memory_format=memory_format)
    if isinstance(dataset, DeviceDataset):
        if colour_jitter is not None:
            raise ValueError("make_loader: colour_jitter is only for streamed datasets (FileDataset); "
                             f"{dataset.name} is a DeviceDataset (use its Augmentation)")
        if device is not None:
            try:
                target = torch.device(device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(f"make_loader: bad device {device!r} ({err})") from err
            if target != dataset.device:
                dataset = dataset.to(target)
        return DeviceLoader(dataset, augment=augment, **common)
    if isinstance(dataset, FileDataset):
        if not isinstance(augment, bool):
            raise ValueError(f"make_loader: augment must be a bool for a FileDataset (train transform or not), "
                             f"got {type(augment).__name__}")
        return StreamLoader(dataset, train=augment, colour_jitter=colour_jitter,
                            device=device if device is not None else "cpu", workers=workers, prefetch=prefetch,
                            strict=strict, decoder=decoder, **common)
    raise ValueError(f"make_loader: dataset must be a DeviceDataset or a FileDataset, got {type(dataset).__name__}")
