"""Build the supernet of a cell search space."""
from __future__ import annotations

from typing import Any, Optional

import torch

from pynas.spaces.darts_space import DartsCellSpace, NB201CellSpace

from .darts_supernet import DartsSupernet
from .nb201_supernet import NB201Supernet


def build_supernet(space: Any, *, num_classes: int, in_channels: int, C: int, layers: int,
                   generator: Optional[torch.Generator] = None, **options: Any):
    """``layers`` is the number of cells for the DARTS space and N (cells per stage) for NAS-Bench-201."""
    if isinstance(space, DartsCellSpace):
        options.setdefault("primitives", space.primitives)
        return DartsSupernet(C=C, layers=layers, num_classes=num_classes, in_channels=in_channels,
                             steps=space.steps, multiplier=space.multiplier, generator=generator, **options)
    if isinstance(space, NB201CellSpace):
        if "N" in options:
            raise ValueError("N (cells per stage) of the NAS-Bench-201 supernet is given as layers "
                             "(algorithm.layers), not N")
        options.setdefault("primitives", space.primitives)
        return NB201Supernet(C=C, N=layers, num_classes=num_classes, in_channels=in_channels, generator=generator,
                             **options)
    raise TypeError(f"space must be a DARTS or NAS-Bench-201 cell space, got {type(space).__name__}")
