"""A dataset held whole on the training device, and a resumable batch loader over it.

Small vision sets (CIFAR-10 is 150 MB as uint8) fit in device memory many
times over, so instead of worker processes decoding and copying per batch,
the uint8 images live on the device; a batch is one index_select, the
augmentations of pynas.data.augment and a float conversion, all on device.

The loader's whole position is (seed, epoch, samples consumed, augmentation
generator state): the order of an epoch is a pure function of (seed, epoch),
so `state_dict()` is a few numbers plus the generator state, and a run killed
mid-epoch resumes with exactly the batches it would have seen.

Data-parallel runs (torchrun) shard each *global* batch of
``world_size x batch_size`` consecutive samples of the epoch's order: rank r
takes rows [r B, (r + 1) B) of it, i.e. batches r, r + W, r + 2W, ... of the
epoch cut into per-rank batches. Every rank computes the same order and draws
the augmentation parameters of the whole global batch from an equal
generator (keeping only its rows), so the loader's state is the same on all
ranks (rank 0's checkpoint restores every rank), and W ranks together see
exactly the batches, augmentations included, of one process with batch W B.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from pynas.data.augment import Augmentation, channel_stats_tensor, normalize
from pynas.training import distributed

__all__ = ["DeviceDataset", "DeviceLoader", "EpochCursor", "fraction_subset", "split", "stratified_indices"]

_MASK63 = (1 << 63) - 1


def _check_seed(seed: object, what: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{what}: seed must be an int >= 0, got {seed!r}")
    return seed


def _mix_seed(*parts: int) -> int:
    """Combine ints into one well-spread 63-bit seed (SplitMix64 finalizer per part)."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        z = (state ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state = z ^ (z >> 31)
    return state & _MASK63


def _check_shard(rank: object, world_size: object, *, what: str = "DeviceLoader") -> tuple[int, int]:
    """(rank, world_size) given, or this process's place in the process group when both are None."""
    if rank is None and world_size is None:
        return distributed.world()
    if rank is None or world_size is None:
        raise ValueError(f"{what}: give both rank and world_size, or neither (the process group's); "
                         f"got rank={rank!r}, world_size={world_size!r}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"{what}: world_size must be an int >= 1, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"{what}: rank must be an int in 0..{world_size - 1}, got {rank!r}")
    return rank, world_size


def _generator(*seed_parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_mix_seed(*seed_parts))


@dataclass(frozen=True, eq=False)
class DeviceDataset:
    """Images uint8 [N, C, H, W] and labels int64 [N] on one device, with what training needs to know.

    `mean`/`std` are per-channel normalization stats in [0, 1] units;
    `augmentation` is the recipe a training loader applies by default.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: Augmentation = Augmentation()
    name: str = "dataset"

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"{self.name}: images must be a uint8 tensor [N, C, H, W], got {_describe(images)}")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"{self.name}: labels must be an int64 tensor [{images.shape[0]}], got {_describe(labels)}"
            )
        if labels.device != images.device:
            raise ValueError(f"{self.name}: images on {images.device} but labels on {labels.device}")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        channels = images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels or any(s <= 0 for s in self.std):
            raise ValueError(
                f"{self.name}: expected {channels} means and {channels} positive stds, got {self.mean} and {self.std}"
            )
        if not self.classes:
            raise ValueError(f"{self.name}: no classes")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise ValueError(
                f"{self.name}: labels must lie in 0..{len(self.classes) - 1}, "
                f"got {int(labels.min())}..{int(labels.max())}"
            )
        if not isinstance(self.augmentation, Augmentation):
            raise ValueError(
                f"{self.name}: augmentation must be an Augmentation, got {type(self.augmentation).__name__}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (f"DeviceDataset(name={self.name!r}, n={len(self)}, image_shape={self.image_shape}, "
                f"num_classes={self.num_classes}, device={self.device})")

    def to(self, device: torch.device | str) -> "DeviceDataset":
        device = torch.device(device)
        return dataclasses.replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def subset(self, indices: torch.Tensor | Sequence[int], *, name: str | None = None) -> "DeviceDataset":
        """The images at `indices` (in that order), same stats and recipe."""
        index = _as_index(indices, len(self), what=f"{self.name}.subset").to(self.device)
        return dataclasses.replace(
            self, images=self.images.index_select(0, index), labels=self.labels.index_select(0, index),
            name=name or self.name,
        )


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {tuple(value.shape)}"
    return type(value).__name__


def _as_index(indices: torch.Tensor | Sequence[int], size: int, *, what: str) -> torch.Tensor:
    index = torch.as_tensor(indices).cpu()
    if index.dim() == 1 and index.numel() == 0:
        return torch.empty(0, dtype=torch.int64)  # as_tensor([]) is float; an empty list is still valid
    if index.dim() != 1 or index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
        raise ValueError(f"{what}: expected a 1-d list of integer indices, got {index.dtype} {tuple(index.shape)}")
    index = index.to(torch.int64)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
        raise ValueError(f"{what}: indices must lie in 0..{size - 1}, got {int(index.min())}..{int(index.max())}")
    if torch.unique(index).numel() != index.numel():
        raise ValueError(f"{what}: indices contain duplicates")
    return index


def stratified_indices(labels: torch.Tensor, count: int, *, seed: int) -> torch.Tensor:
    """`count` indices drawn without replacement, each class in proportion to its share (sorted).

    Rounding follows the largest remainder, so the total is exactly `count`
    and a class never gets more than it has.
    """
    _check_seed(seed, "stratified_indices")
    labels = labels.cpu()
    total = labels.numel()
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= total:
        raise ValueError(f"stratified_indices: count must be an int in 0..{total}, got {count!r}")
    classes, per_class = torch.unique(labels, return_counts=True)
    exact = per_class.double() * count / max(total, 1)
    take = exact.floor().long()
    leftover = count - int(take.sum())
    # Largest remainders first; ties go to the lower class (stable sort).
    order = torch.sort(exact - take, descending=True, stable=True).indices
    take[order[:leftover]] += 1
    generator = _generator(seed, 0x5742)
    chosen = []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:k]])
    return torch.sort(torch.cat(chosen)).values if chosen else torch.empty(0, dtype=torch.int64)


def _per_class_orders(labels: torch.Tensor, *, seed: int, tag: int) -> list[tuple[int, torch.Tensor]]:
    """(class, its members' indices in a seeded random order) for every class present, classes ascending.

    Each class's order comes from its own generator (seed, tag, class), so it
    depends only on that class's members: the same images are picked for a
    class whatever the other classes hold. One sort instead of a scan per
    class: ImageNet's 1000 classes of 1.28M labels take milliseconds.
    """
    labels = labels.cpu()
    grouped = torch.argsort(labels, stable=True)  # each class's members in dataset order
    classes, counts = torch.unique_consecutive(labels[grouped], return_counts=True)
    return [(cls, members[torch.randperm(members.numel(), generator=_generator(seed, tag, cls))])
            for cls, members in zip(classes.tolist(), grouped.split(counts.tolist()))]


def _class_name(dataset, cls: int) -> str:
    classes = getattr(dataset, "classes", ())
    return repr(classes[cls]) if 0 <= cls < len(classes) else str(cls)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _check_split_dataset(dataset: object, what: str) -> None:
    from pynas.data.stream import FileDataset  # stream builds on this module

    if not isinstance(dataset, (DeviceDataset, FileDataset)):
        raise ValueError(f"{what}: dataset must be a DeviceDataset or a FileDataset, got {type(dataset).__name__}")


def split(
    dataset,
    *,
    valid_fraction: float | None = None,
    valid_per_class: int | None = None,
    indices: tuple[Sequence[int] | torch.Tensor, Sequence[int] | torch.Tensor] | None = None,
    seed: int = 0,
):
    """Carve (train, valid) out of `dataset` (a DeviceDataset or a FileDataset; both parts are the same kind).

    Exactly one of: `valid_fraction` (a seeded, class-stratified valid part;
    train is the rest), `valid_per_class` (exactly that many seeded images of
    every class held out, as SPOS holds out 50 ImageNet training images per
    class for its search; a class needs more than that many) or
    `indices=(train_indices, valid_indices)` (disjoint lists, as published
    splits such as NAS-Bench-201's come). Both parts keep the dataset's
    normalization stats, so valid is normalized like train.
    """
    _check_split_dataset(dataset, "split")
    _check_seed(seed, "split")
    if sum(option is not None for option in (valid_fraction, valid_per_class, indices)) != 1:
        raise ValueError("split: give exactly one of valid_fraction, valid_per_class or "
                         "indices=(train_indices, valid_indices)")
    n = len(dataset)
    if indices is not None:
        if not isinstance(indices, (tuple, list)) or len(indices) != 2:
            raise ValueError("split: indices must be a pair (train_indices, valid_indices)")
        train_index = _as_index(indices[0], n, what="split train indices")
        valid_index = _as_index(indices[1], n, what="split valid indices")
        if torch.isin(train_index, valid_index).any():
            raise ValueError("split: train and valid indices overlap")
    else:
        if valid_per_class is not None:
            if isinstance(valid_per_class, bool) or not isinstance(valid_per_class, int) or valid_per_class < 1:
                raise ValueError(f"split: valid_per_class must be an int >= 1, got {valid_per_class!r}")
            held_out = []
            for cls, members in _per_class_orders(dataset.labels, seed=seed, tag=0x5750):
                if members.numel() <= valid_per_class:
                    raise ValueError(
                        f"split: valid_per_class={valid_per_class} but class {_class_name(dataset, cls)} has "
                        f"{members.numel()} images; train would keep none of it"
                    )
                held_out.append(members[:valid_per_class])
            valid_index = torch.sort(torch.cat(held_out)).values if held_out else torch.empty(0, dtype=torch.int64)
        else:
            is_number = isinstance(valid_fraction, (int, float)) and not isinstance(valid_fraction, bool)
            if not is_number or not 0.0 < valid_fraction < 1.0:
                raise ValueError(f"split: valid_fraction must be in (0, 1), got {valid_fraction!r}")
            valid_index = stratified_indices(dataset.labels, round(valid_fraction * n), seed=seed)
        keep = torch.ones(n, dtype=torch.bool)
        keep[valid_index] = False
        train_index = torch.nonzero(keep).flatten()
    return (dataset.subset(train_index, name=f"{dataset.name}/train"),
            dataset.subset(valid_index, name=f"{dataset.name}/valid"))


def fraction_subset(dataset, fraction: float, *, seed: int, offset: float = 0.0, name: str | None = None):
    """A class-balanced, seeded part of `dataset`: each class keeps round(fraction x its count), at least 1.

    As PC-DARTS searches on ImageNet with 10% of the training images for the
    weights and 2.5% for the architecture. `offset` skips that fraction of
    each class first, in the same seeded per-class order, so parts drawn with
    one seed and offsets that do not overlap are disjoint:
        weights = fraction_subset(train, 0.1, seed=s)
        arch = fraction_subset(train, 0.025, seed=s, offset=0.1)   # disjoint from weights
    and with one seed a smaller fraction is contained in a larger one.
    Rounding is half up. Works on a DeviceDataset and a FileDataset.
    """
    _check_split_dataset(dataset, "fraction_subset")
    _check_seed(seed, "fraction_subset")
    for what, value, low_open in (("fraction", fraction, True), ("offset", offset, False)):
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        inside = is_number and ((0.0 < value <= 1.0) if low_open else (0.0 <= value < 1.0))
        if not inside:
            expected = "(0, 1]" if low_open else "[0, 1)"
            raise ValueError(f"fraction_subset: {what} must be a number in {expected}, got {value!r}")
    chosen = []
    for cls, members in _per_class_orders(dataset.labels, seed=seed, tag=0xF5AC):
        count = members.numel()
        # Exactly what fraction_subset(dataset, offset) takes, its at-least-one included.
        skip = max(1, _round_half_up(offset * count)) if offset > 0 else 0
        take = max(1, _round_half_up(fraction * count))
        if skip + take > count:
            raise ValueError(
                f"fraction_subset: class {_class_name(dataset, cls)} has {count} images; offset {offset} skips "
                f"{skip} and fraction {fraction} takes {take}, more than it has"
            )
        chosen.append(members[skip:skip + take])
    index = torch.sort(torch.cat(chosen)).values if chosen else torch.empty(0, dtype=torch.int64)
    return dataset.subset(index, name=name)


# How batches are laid out: as the augmentation makes them ("preserve": contiguous NCHW) or
# channels-last (NHWC in memory), which the fused ops and the supernets keep end to end.
MEMORY_FORMATS = ("preserve", "channels_last")


class EpochCursor:
    """The position of a loader over epochs of sharded global batches, shared by DeviceLoader and
    StreamLoader: a subclass sets ``dataset``, ``batch_size``, ``world_size``, ``drop_last``, ``_epoch``,
    ``_position`` and ``_iteration``, and defines ``_batches(iteration)``, the generator ``iter()`` returns."""

    dataset: object
    batch_size: int
    world_size: int
    drop_last: bool
    _epoch: int
    _position: int
    _iteration: int

    @staticmethod
    def check_batching(samples: int, *, batch_size: int, world_size: int, drop_last: bool, what: str) -> None:
        """Refuse batching that would yield nothing, or leave a rank an empty last batch."""
        global_batch = batch_size * world_size
        if drop_last and samples < global_batch:
            size = f"batch_size {batch_size}" if world_size == 1 else \
                f"a global batch of {world_size} x {batch_size} = {global_batch}"
            raise ValueError(f"{what}: drop_last with {size} > {samples} samples yields nothing")
        tail = samples % global_batch
        if not drop_last and 0 < tail < world_size:
            raise ValueError(
                f"{what}: the last global batch of an epoch has {tail} samples for {world_size} ranks; "
                f"a rank would get an empty batch (use drop_last=True or another batch size)"
            )

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all ranks: world_size x batch_size."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        """Batches (steps) per epoch; every rank yields this many."""
        n, g = len(self.dataset), self.global_batch_size
        return n // g if self.drop_last else math.ceil(n / g)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def position(self) -> int:
        """Samples of the current epoch already yielded (by all ranks together)."""
        return self._position

    def _epoch_end(self) -> int:
        n = len(self.dataset)
        return n - n % self.global_batch_size if self.drop_last else n

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` from its first batch (random streams other than the order carry on)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"set_epoch: epoch must be an int >= 0, got {epoch!r}")
        self._epoch, self._position = epoch, 0

    # -- iteration: a subclass's _batches(iteration) yields from the cursor --------------------------
    def __iter__(self):
        self._iteration += 1
        return self._batches(self._iteration)

    def _check_current(self, iteration: int) -> None:
        # Two live iterators would share (and scramble) the one resumable cursor (and a stream's workers).
        if iteration != self._iteration:
            raise RuntimeError(f"{type(self).__name__}: this iterator was superseded by a newer iter() of the "
                               "same loader")

    def _begin_pass(self, iteration: int) -> int:
        """Check `iteration` is the newest, step past an epoch consumed but not closed, and return the
        epoch's end position."""
        self._check_current(iteration)
        end = self._epoch_end()
        if self._position >= end:
            self._epoch, self._position = self._epoch + 1, 0
        return end


class DeviceLoader(EpochCursor):
    """Shuffled, augmented float batches from a DeviceDataset, on its device, resumable mid-epoch.

    Yields (images float [B, C, H, W] normalized by the dataset's mean/std,
    labels int64 [B]). `augment` is False (normalize only), True (the
    dataset's own recipe) or an Augmentation. The order of epoch e depends
    only on (seed, e); augmentation draws come from the loader's own CPU
    generator, so batches are the same on CPU and GPU.

    Iterating continues from the current position: breaking out of a loop
    and iterating again resumes the same epoch (use set_epoch to restart).
    Only the most recent iterator of a loader may be advanced.

    `rank`/`world_size` (default: this process's place in the torchrun
    process group, (0, 1) outside one) shard every global batch of
    world_size x batch_size samples: this rank yields its batch_size rows of
    it (see the module docstring). `len()` counts global batches (steps),
    `position` global samples, and the state is the same on every rank.
    Without drop_last the last global batch is split as evenly as the
    remainder allows, and must give every rank at least one sample.

    `memory_format="channels_last"` yields image batches channels-last.
    """

    def __init__(
        self,
        dataset: DeviceDataset,
        *,
        batch_size: int,
        shuffle: bool = True,
        augment: bool | Augmentation = False,
        drop_last: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        rank: int | None = None,
        world_size: int | None = None,
        memory_format: str = "preserve",
    ):
        if not isinstance(dataset, DeviceDataset):
            raise ValueError(f"DeviceLoader: dataset must be a DeviceDataset, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DeviceLoader: batch_size must be an int >= 1, got {batch_size!r}")
        for flag_name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, bool):
                raise ValueError(f"DeviceLoader: {flag_name} must be a bool, got {flag!r}")
        if isinstance(augment, bool):
            augment = dataset.augmentation if augment else Augmentation()
        elif not isinstance(augment, Augmentation):
            raise ValueError(f"DeviceLoader: augment must be a bool or an Augmentation, got {type(augment).__name__}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"DeviceLoader: dtype must be a floating torch.dtype, got {dtype!r}")
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"DeviceLoader: memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
        rank, world_size = _check_shard(rank, world_size)
        self.check_batching(len(dataset), batch_size=batch_size, world_size=world_size, drop_last=drop_last,
                            what="DeviceLoader")
        self.rank = rank
        self.world_size = world_size
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augmentation = augment
        self.drop_last = drop_last
        self.dtype = dtype
        self.memory_format = memory_format
        self.seed = _check_seed(seed, "DeviceLoader")
        self._generator = _generator(seed, 0xA06)
        self._epoch = 0
        self._position = 0
        self._order_cache: tuple[int, torch.Tensor] | None = None
        # On the device once, so a batch needs no blocking host->device copy.
        self._mean = channel_stats_tensor(dataset.mean, device=dataset.device)
        self._std = channel_stats_tensor(dataset.std, device=dataset.device)
        self._iteration = 0

    # -- sizes and position ----------------------------------------------------
    def _order(self, epoch: int) -> torch.Tensor:
        if self._order_cache is None or self._order_cache[0] != epoch:
            n = len(self.dataset)
            order = torch.randperm(n, generator=_generator(self.seed, epoch)) if self.shuffle else torch.arange(n)
            self._order_cache = (epoch, order.to(self.dataset.device))
        return self._order_cache[1]

    # -- iteration --------------------------------------------------------------
    def _batches(self, iteration: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        end = self._begin_pass(iteration)
        order = self._order(self._epoch)
        while self._position < end:
            self._check_current(iteration)
            index = order[self._position:self._position + self.global_batch_size]
            self._position += index.numel()
            total = index.numel()
            # This rank's rows of the global batch: [rB, (r+1)B) of a full one, an even split of the last.
            start = self.rank * total // self.world_size
            stop = (self.rank + 1) * total // self.world_size
            yield self._batch(index[start:stop], start=start, total=total)
        if iteration == self._iteration:
            self._epoch, self._position = self._epoch + 1, 0

    def _batch(self, index: torch.Tensor, *, start: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self._float_batch(index, start=start, total=total)
        if self.memory_format == "channels_last" and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def _float_batch(self, index: torch.Tensor, *, start: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.dataset.images.index_select(0, index)
        labels = self.dataset.labels.index_select(0, index)
        mean, std = self._mean, self._std
        if self.augmentation.is_identity:
            return normalize(images, mean=mean, std=std, dtype=self.dtype), labels
        if self.world_size == 1:
            return self.augmentation(images, generator=self._generator, mean=mean, std=std, dtype=self.dtype), labels
        return self.augmentation.augment_rows(images, start=start, total=total, generator=self._generator,
                                              mean=mean, std=std, dtype=self.dtype), labels

    # -- checkpointing ----------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self._epoch,
            "position": self._position,
            "seed": self.seed,
            "generator": self._generator.get_state(),
            "num_samples": len(self.dataset),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue where the loader that wrote `state` stopped (same data, batch size, shuffle, drop_last,
        world size: the state is the same on every rank, so any rank's state restores all of them)."""
        required = ("epoch", "position", "seed", "generator", "num_samples", "batch_size", "shuffle", "drop_last")
        missing = [key for key in required if key not in state]
        if missing:
            raise ValueError(f"DeviceLoader.load_state_dict: missing keys {missing}")
        state = {"world_size": 1, **state}  # states from before data-parallel loading: one process
        for key, mine in (("num_samples", len(self.dataset)), ("batch_size", self.batch_size),
                          ("shuffle", self.shuffle), ("drop_last", self.drop_last),
                          ("world_size", self.world_size)):
            if state[key] != mine:
                raise ValueError(f"DeviceLoader.load_state_dict: state has {key}={state[key]!r}, this loader {mine!r}; "
                                 "resuming would not reproduce the saved run")
        if not 0 <= state["position"] <= len(self.dataset):
            raise ValueError(
                f"DeviceLoader.load_state_dict: position {state['position']} outside 0..{len(self.dataset)}"
            )
        self.seed = _check_seed(state["seed"], "DeviceLoader.load_state_dict")
        self._generator.set_state(state["generator"].cpu())
        self._epoch, self._position = int(state["epoch"]), int(state["position"])
        self._order_cache = None
        self._iteration += 1  # iterators from before the load must not advance the restored cursor
