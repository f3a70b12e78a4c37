"""Loads the compiled extension, refusing a torch other than the one it was built against.

A C++ extension is tied to the torch release whose headers and libraries it was compiled with: under
another one it fails to load with an undefined symbol, or loads and misbehaves. So the installed
distribution requires ``torch==<release>`` (setup.py writes it into the metadata) and this module
checks it, before loading ``pynas._C`` and again against what ``_C`` says it was built with.
"""
from __future__ import annotations

import importlib.util
import re
from importlib import metadata

import torch


def _release(version: str) -> str:
    """'2.13.0+cu130' -> '2.13.0' (the local label is the build flavour, not the release)."""
    return version.split("+", 1)[0]


def _required_torch() -> str | None:
    """The torch release the installed pynas distribution requires, or None when unknown."""
    try:
        requires = metadata.requires("pynas") or []
    except metadata.PackageNotFoundError:  # a source tree built in place, never installed
        return None
    for req in requires:
        m = re.fullmatch(r"\s*torch\s*==\s*([^\s;,]+)\s*(;.*)?", req)
        if m:
            return m.group(1)
    return None


def _mismatch(built_with: str, running: str) -> ImportError:
    return ImportError(
        f"pynas was built against torch {built_with} but torch {running} is installed. "
        f"Install torch=={_release(built_with)} again, or rebuild pynas against this torch: "
        "pip install --no-build-isolation --force-reinstall --no-deps ."
    )


def check_torch_version(built_with: str | None, running: str | None = None) -> None:
    """Raises ImportError naming both versions when ``built_with`` and ``running`` are different releases."""
    running = torch.__version__ if running is None else running
    if built_with and _release(built_with) != _release(running):
        raise _mismatch(built_with, running)


check_torch_version(_required_torch())

try:
    from pynas import _C
except ImportError as err:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        f"pynas's compiled extension pynas._C could not be loaded under torch {torch.__version__} "
        f"({err}). A pynas built with CUDA needs a CUDA build of torch. Rebuild it with "
        "`pip install --no-build-isolation -e .` using the torch you import."
    ) from err

check_torch_version(_C.build_info().get("torch_built_with"))


def build_info() -> dict:
    """Version, whether CUDA kernels were compiled, compiled archs, OpenMP threads, both torch versions, and
    whether the region JPEG decoder (pynas._jpeg) was built."""
    info = dict(_C.build_info())
    info["torch"] = torch.__version__
    # The streaming loader's region JPEG decoder, a separate module built where libjpeg-turbo was found.
    info["jpeg_region_decoder"] = importlib.util.find_spec("pynas._jpeg") is not None
    return info
