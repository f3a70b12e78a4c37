"""The build: one object per source, the torch pin in the metadata, the import-time torch check."""
import os
import pathlib
from collections import Counter
from importlib import metadata

import pytest
import torch

import pynas
from pynas._extension import check_torch_version

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_no_two_sources_make_one_object_file():
    """setuptools names objects by directory and stem: weighted_sum.cpp and weighted_sum.cu in one
    folder both became weighted_sum.o, and ninja refused the CUDA build."""
    stems = Counter((p.parent, p.stem) for p in (ROOT / "csrc").rglob("*") if p.suffix in {".cpp", ".cu", ".cc"})
    assert {k: n for k, n in stems.items() if n > 1} == {}


def test_import_check_names_both_torch_versions():
    with pytest.raises(ImportError, match=r"built against torch 2\.12\.1\+cu130 but torch 2\.13\.0\+cpu"):
        check_torch_version("2.12.1+cu130", running="2.13.0+cpu")
    check_torch_version("2.13.0+cu130", running="2.13.0+cpu")  # one release, another flavour: the same ABI
    check_torch_version(None, running="2.13.0")  # unknown (a source tree built in place): nothing to check


def test_metadata_requires_the_torch_it_was_built_against():
    try:
        requires = metadata.requires("pynas") or []
    except metadata.PackageNotFoundError:
        pytest.skip("pynas is not installed as a distribution (built in place)")
    pins = [r.replace(" ", "") for r in requires if r.replace(" ", "").startswith("torch")]
    assert pins == [f"torch=={torch.__version__.split('+')[0]}"]
    assert pynas.build_info()["torch_built_with"].split("+")[0] == torch.__version__.split("+")[0]


@pytest.mark.skipif(os.environ.get("PYNAS_EXPECT_CUDA_BUILD") != "1",
                    reason="only under make check-cuda-build (PYNAS_EXPECT_CUDA_BUILD=1)")
def test_cuda_build_has_cuda_kernels():
    info = pynas.build_info()
    assert info["cuda"] and info["cuda_archs"]
    for op in ("weighted_sum", "partial_channel_mix", "path_dispatch", "path_combine", "grouped_batch_norm"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pynas::{op}", "CUDA"), op
