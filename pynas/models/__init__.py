"""Stand-alone networks built from a searched genotype, for final training.

    from pynas.models import DartsNetworkCIFAR, NB201Network
    from pynas.spaces import DARTS_V2
    model = DartsNetworkCIFAR(DARTS_V2, C=36, layers=20, auxiliary=True)
    logits, aux_logits = model(images)
"""
from __future__ import annotations

from pynas.models.darts_network import DartsCell, DartsNetworkCIFAR, DartsNetworkImageNet, drop_path
from pynas.models.nb201_network import NB201Cell, NB201Network

__all__ = ["DartsCell", "DartsNetworkCIFAR", "DartsNetworkImageNet", "drop_path", "NB201Cell", "NB201Network"]
