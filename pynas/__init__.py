"""pynas: one-shot neural architecture search on fused supernet kernels."""
from __future__ import annotations

from pynas._extension import build_info
from pynas import ops

__version__ = "0.1.0"
__all__ = ["build_info", "ops", "__version__"]
