"""Builds pynas and its extension pynas._C.

CPU kernels are always built. CUDA kernels are built when torch has CUDA and
nvcc is found; environment switches:

  PYNAS_CPU_ONLY=1        skip the CUDA kernels
  FORCE_CUDA=1            make a missing CUDA toolchain an error
  TORCH_CUDA_ARCH_LIST    archs to compile for (e.g. "8.0;9.0"), as torch reads it
  PYNAS_DEBUG=1           -O0 -g
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.abspath(__file__))


def _fail(message: str) -> None:
    sys.stderr.write(f"\npynas build error: {message}\n\n")
    raise SystemExit(1)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    _fail(
        "PyTorch is not installed in this environment. Install it first "
        "(on a CPU machine: pip install torch==2.13.0) and build with "
        "`pip install --no-build-isolation .` so the build uses that torch."
    )

if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
    _fail("no C++ compiler found (looked for $CXX, c++ and g++); on Debian: apt-get install g++")


def _want_cuda() -> bool:
    if _flag("PYNAS_CPU_ONLY"):
        return False
    has_nvcc = cpp_extension.CUDA_HOME is not None and os.path.exists(
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")
    )
    if torch.version.cuda is not None and has_nvcc:
        return True
    if _flag("FORCE_CUDA"):
        why = []
        if torch.version.cuda is None:
            why.append(f"the installed torch {torch.__version__} has no CUDA support")
        if not has_nvcc:
            why.append("nvcc was not found (set CUDA_HOME to the CUDA toolkit)")
        _fail("FORCE_CUDA=1 but " + " and ".join(why))
    return False


def _cuda_archs() -> str:
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if arch_list:
        return ";".join(a.strip() for a in arch_list.replace(" ", ";").split(";") if a.strip())
    if torch.cuda.is_available():
        return ";".join(
            sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        )
    return "8.0;9.0"


def _extension():
    with_cuda = _want_cuda()
    sources = sorted(
        glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/cpu/*.cpp")
    )
    debug = _flag("PYNAS_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    torch_version = torch.__version__.split("+")[0]
    define = [("PYNAS_VERSION", f'"{VERSION}"'), ("PYNAS_TORCH_VERSION", f'"{torch_version}"')]
    cxx = opt + ["-std=c++17", "-fopenmp"] if sys.platform != "darwin" else opt + ["-std=c++17"]
    extra = {"cxx": cxx}
    libs = ["-fopenmp"] if sys.platform != "darwin" else []
    if not with_cuda:
        return cpp_extension.CppExtension(
            "pynas._C", sources, define_macros=define, extra_compile_args=extra, extra_link_args=libs
        )
    archs = _cuda_archs()
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    sources += sorted(glob.glob("csrc/cuda/*.cpp") + glob.glob("csrc/cuda/*.cu"))
    define += [("PYNAS_WITH_CUDA", None), ("PYNAS_CUDA_ARCHS", f'"{archs}"')]
    extra["nvcc"] = opt + ["-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
    return cpp_extension.CUDAExtension(
        "pynas._C", sources, define_macros=define, extra_compile_args=extra, extra_link_args=libs
    )


setup(
    name="pynas",
    version=VERSION,
    packages=find_packages(include=["pynas", "pynas.*"]),
    package_data={"pynas": ["configs/*.yaml"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)},
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml", "pillow", "matplotlib"],
    entry_points={"console_scripts": ["pynas=pynas.cli:main"]},
    zip_safe=False,
)
