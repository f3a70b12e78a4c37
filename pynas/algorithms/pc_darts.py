"""PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search
(Xu et al., ICLR 2020).

Each edge mixes its candidate ops on 1/K of the channels and passes the rest
through, followed by a channel shuffle (Sec. 3.2); edge normalisation weights
every edge of a node by a softmax over that node's incoming edges (Sec. 3.3),
and derivation ranks edges by op weight times edge weight. First-order only.

Defaults are the CIFAR-10 settings of Sec. 4.2 and the authors'
train_search.py: K=4, batch 256, 50 epochs, weights SGD lr 0.1 cosine to 0,
momentum 0.9, weight decay 3e-4, gradient clipping 5; architecture Adam lr
6e-4, betas (0.5, 0.999), weight decay 1e-3; architecture updates start after
15 warm-up epochs. (ImageNet: K=2, see the paper.)
"""
from __future__ import annotations

from typing import Any

from . import register_algorithm
from .darts import DARTS

PC_DARTS_DEFAULTS = dict(
    epochs=50, batch_size=256, C=16, layers=8, w_lr=0.1, w_lr_min=0.0, w_momentum=0.9, w_weight_decay=3e-4,
    grad_clip=5.0, arch_lr=6e-4, arch_betas=(0.5, 0.999), arch_weight_decay=1e-3, partial_channels=4,
    warmup_epochs=15,
)


@register_algorithm("pc-darts")
class PCDARTS(DARTS):
    """PC-DARTS on a cell space. ``partial_channels`` is the paper's K."""

    defaults = PC_DARTS_DEFAULTS

    def __init__(self, *, space: Any, num_classes: int, partial_channels: int = 4, w_lr: float = 0.1,
                 w_lr_min: float = 0.0, arch_lr: float = 6e-4, warmup_epochs: int = 15, order: int = 1,
                 **kwargs: Any):
        if order != 1:
            raise ValueError(f"PC-DARTS is first-order only (its paper, Sec. 4.2); got order={order!r}")
        super().__init__(space=space, num_classes=num_classes, partial_channels=partial_channels,
                         edge_normalization=True, w_lr=w_lr, w_lr_min=w_lr_min, arch_lr=arch_lr,
                         warmup_epochs=warmup_epochs, order=1, **kwargs)
