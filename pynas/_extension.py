"""Loads the compiled extension and says clearly what to do when it is missing."""
from __future__ import annotations

import torch  # noqa: F401  (the extension links against torch's libraries)

try:
    from pynas import _C
except ImportError as err:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "pynas's compiled extension pynas._C could not be loaded "
        f"({err}). Build it with `pip install --no-build-isolation -e .` "
        "using the same torch you import."
    ) from err


def build_info() -> dict:
    """Version, whether CUDA kernels were compiled, compiled archs and OpenMP threads."""
    info = dict(_C.build_info())
    info["torch"] = torch.__version__
    return info
