"""Pieces shared by the subcommands."""
from __future__ import annotations

import random

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but no CUDA device is available")
    return device


def place_supernet(supernet: torch.nn.Module, device: torch.device, memory_format: str) -> None:
    """Moves the supernet to ``device``; ``memory_format="channels_last"`` also lays its 4-D weights out
    channels-last, so that with channels-last batches every conv, batch norm and fused op runs NHWC."""
    if memory_format == "channels_last":
        supernet.to(device, memory_format=torch.channels_last)
    else:
        supernet.to(device)


def seed_everything(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
