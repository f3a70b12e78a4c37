"""Data for one-shot NAS: small datasets whole on the training device, large ones streamed from files.

    from pynas.data import create_dataset, make_loader, split
    train = create_dataset("cifar10", split="train", device="cuda")      # a DeviceDataset
    loader = make_loader(train, batch_size=256, augment=True, seed=0)    # a DeviceLoader
    for images, labels in loader: ...          # float [B, 3, 32, 32], int64 [B]
    state = loader.state_dict()                # resume mid-epoch with load_state_dict

    train = create_dataset("imagenet", root="/data/imagenet", split="train")   # a FileDataset
    loader = make_loader(train, batch_size=128, augment=True, colour_jitter=0.4, device="cuda")  # a StreamLoader

Modules: idx (MNIST-style IDX files), images (JPEG/PNG folders with a decode
cache, CIFAR-10 python batches), augment (batched crop/flip/cutout/normalize),
loader (DeviceDataset, DeviceLoader, split, fraction_subset), decode
(per-image crop geometry and reduced-size JPEG decode), stream (FileDataset,
StreamLoader, make_loader), registry (create_dataset).
"""
from __future__ import annotations

from pynas.data.augment import (
    Augmentation,
    channel_stats_tensor,
    crop_at,
    cutout,
    cutout_at,
    normalize,
    random_crop,
    random_flip,
)
from pynas.data.idx import read_idx, write_idx
from pynas.data.images import DecodedImages, default_cache_dir, load_cifar10_batches, load_image_folder
from pynas.data.loader import DeviceDataset, DeviceLoader, fraction_subset, split, stratified_indices
from pynas.data.registry import create_dataset, data_dir, list_datasets, read_nb201_split
from pynas.data.stream import FileDataset, StreamLoader, estimate_channel_stats, make_loader

__all__ = [
    "Augmentation",
    "DecodedImages",
    "DeviceDataset",
    "DeviceLoader",
    "FileDataset",
    "StreamLoader",
    "channel_stats_tensor",
    "create_dataset",
    "crop_at",
    "cutout",
    "cutout_at",
    "data_dir",
    "default_cache_dir",
    "estimate_channel_stats",
    "fraction_subset",
    "list_datasets",
    "load_cifar10_batches",
    "load_image_folder",
    "make_loader",
    "normalize",
    "random_crop",
    "random_flip",
    "read_idx",
    "read_nb201_split",
    "split",
    "stratified_indices",
    "write_idx",
]
