"""Weight-sharing supernets whose mixed ops run on pynas's fused kernels."""
from .darts_supernet import DartsSupernet, MixedCell
from .nb201_supernet import NB201Supernet

__all__ = ["DartsSupernet", "MixedCell", "NB201Supernet"]
