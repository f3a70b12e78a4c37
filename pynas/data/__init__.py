"""Data for one-shot NAS: whole datasets on the training device, augmented there.

    from pynas.data import create_dataset, DeviceLoader, split
    train = create_dataset("cifar10", split="train", device="cuda")
    loader = DeviceLoader(train, batch_size=256, augment=True, seed=0)
    for images, labels in loader: ...          # float [B, 3, 32, 32], int64 [B]
    state = loader.state_dict()                # resume mid-epoch with load_state_dict

Modules: idx (MNIST-style IDX files), images (JPEG/PNG folders with a decode
cache, CIFAR-10 python batches), augment (batched crop/flip/cutout/normalize),
loader (DeviceDataset, DeviceLoader, split), registry (create_dataset).
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
from pynas.data.loader import DeviceDataset, DeviceLoader, split, stratified_indices
from pynas.data.registry import create_dataset, data_dir, list_datasets, read_nb201_split

__all__ = [
    "Augmentation",
    "DecodedImages",
    "DeviceDataset",
    "DeviceLoader",
    "channel_stats_tensor",
    "create_dataset",
    "crop_at",
    "cutout",
    "cutout_at",
    "data_dir",
    "default_cache_dir",
    "list_datasets",
    "load_cifar10_batches",
    "load_image_folder",
    "normalize",
    "random_crop",
    "random_flip",
    "read_idx",
    "read_nb201_split",
    "split",
    "stratified_indices",
    "write_idx",
]
