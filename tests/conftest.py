import os
import pathlib

import pytest
import torch

DATA_DIR = pathlib.Path(os.environ.get("PYNAS_DATA", pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def cuda_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    import pynas

    return bool(pynas.build_info()["cuda"])


def pytest_collection_modifyitems(config, items):
    if cuda_ready():
        return
    why = "no CUDA device" if not torch.cuda.is_available() else "pynas was built without CUDA kernels"
    skip = pytest.mark.skip(reason=f"CUDA test: {why}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
