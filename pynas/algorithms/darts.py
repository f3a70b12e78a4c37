"""DARTS: Differentiable Architecture Search (Liu, Simonyan & Yang, ICLR 2019).

Continuous relaxation of the cell (Sec. 2.2), bilevel optimisation with a
first-order (DARTS-V1) or second-order (DARTS-V2, Eq. 7-8) architecture
gradient (Sec. 2.3), and discretisation keeping the two strongest non-zero
incoming edges per node (Sec. 2.4).

Defaults are the CIFAR-10 search settings of Sec. 3.1.1 / A.1.1 and the
authors' train_search.py: 50 epochs, batch 64, C=16, 8 cells; weights: SGD
lr 0.025 cosine-annealed to 0.001, momentum 0.9, weight decay 3e-4, gradient
clipping 5; architecture: Adam lr 3e-4, betas (0.5, 0.999), weight decay 1e-3.
On NAS-Bench-201 the same optimiser settings are used with its skeleton
(C=16, N=5), as in Dong & Yang (ICLR 2020, Sec. 5).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from pynas.spaces.darts_space import DartsCellSpace, NB201CellSpace
from pynas.supernets.factory import build_supernet

from . import register_algorithm
from ._validate import check_positive_int
from .differentiable import DifferentiableSearch

DARTS_DEFAULTS = dict(
    epochs=50, batch_size=64, C=16, layers=8, w_lr=0.025, w_lr_min=0.001, w_momentum=0.9, w_weight_decay=3e-4,
    grad_clip=5.0, arch_lr=3e-4, arch_betas=(0.5, 0.999), arch_weight_decay=1e-3,
)
NB201_LAYERS = 5  # cells per stage in NAS-Bench-201's skeleton


def derive_genotype(space: Any, supernet) -> Any:
    """The discrete cell of a supernet's current architecture weights."""
    alpha = supernet.alpha.detach().float().cpu()
    edge_w = supernet.edge_weights()
    edge_w = None if edge_w is None else edge_w.detach().float().cpu()
    if isinstance(space, DartsCellSpace):
        return space.derive(alpha[0], alpha[1], edge_weights=edge_w)
    if edge_w is not None:
        alpha = alpha.softmax(-1) * edge_w.unsqueeze(-1)
    return space.derive(alpha)


@register_algorithm("darts")
class DARTS(DifferentiableSearch):
    """DARTS search on a cell space (``darts`` or ``nas-bench-201``); ``order`` 1 or 2."""

    defaults = DARTS_DEFAULTS

    def __init__(
        self,
        *,
        space: Any,
        num_classes: int,
        in_channels: int = 3,
        C: int = 16,
        layers: Optional[int] = None,
        epochs: int = 50,
        order: int = 1,
        w_lr: float = 0.025,
        w_lr_min: float = 0.001,
        w_momentum: float = 0.9,
        w_weight_decay: float = 3e-4,
        grad_clip: float = 5.0,
        arch_lr: float = 3e-4,
        arch_betas: tuple = (0.5, 0.999),
        arch_weight_decay: float = 1e-3,
        warmup_epochs: int = 0,
        amp: str = "none",
        hvp_radius: float = 0.01,
        seed: int = 0,
        **supernet_options: Any,
    ):
        self.space = space
        generator = torch.Generator().manual_seed(seed)
        if layers is None:
            layers = 8 if isinstance(space, DartsCellSpace) else NB201_LAYERS
        supernet = build_supernet(space, num_classes=check_positive_int(num_classes, "num_classes"),
                                  in_channels=in_channels, C=C, layers=layers, generator=generator,
                                  **supernet_options)
        super().__init__(supernet, epochs=epochs, w_lr=w_lr, w_lr_min=w_lr_min, w_momentum=w_momentum,
                         w_weight_decay=w_weight_decay, grad_clip=grad_clip, arch_lr=arch_lr, arch_betas=arch_betas,
                         arch_weight_decay=arch_weight_decay, order=order, amp=amp, warmup_epochs=warmup_epochs,
                         hvp_radius=hvp_radius)

    def genotype(self):
        return derive_genotype(self.space, self.supernet)
