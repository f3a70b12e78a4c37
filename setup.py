"""Builds pynas and its extension pynas._C.

CPU kernels are always built. CUDA kernels are built when torch has CUDA and
nvcc is found; environment switches:

  PYNAS_CPU_ONLY=1        skip the CUDA kernels
  FORCE_CUDA=1            make a missing CUDA toolchain an error
  TORCH_CUDA_ARCH_LIST    archs to compile for (e.g. "8.0;9.0"), as torch reads it
  PYNAS_DEBUG=1           -O0 -g
  PYNAS_JPEG=auto|1|0     pynas._jpeg, the streaming loader's region JPEG decoder on libjpeg-turbo:
                          built when its headers are found (auto), required (1) or skipped (0)
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, find_packages, setup

VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.abspath(__file__))


def _fail(message: str) -> None:
    sys.stderr.write(f"\npynas build error: {message}\n\n")
    raise SystemExit(1)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _toolkit(home) -> bool:
    """Whether `home` holds a CUDA toolkit: nvcc and the runtime headers."""
    return bool(home) and os.path.isfile(os.path.join(home, "bin", "nvcc")) and os.path.isfile(
        os.path.join(home, "include", "cuda_runtime.h"))


def _locate_cuda_home() -> None:
    """Sets CUDA_HOME to a real toolkit when it is unset, before torch.utils.cpp_extension reads it.

    torch guesses the toolkit as the parent of the nvcc on PATH; an nvcc that is a wrapper script or
    link outside the toolkit (/usr/local/bin/nvcc here) makes that /usr/local, where the CUDA headers
    are not, and the glue then fails with "cuda_runtime.h: No such file or directory".
    """
    if os.environ.get("CUDA_HOME"):
        return
    candidates = [os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for home in candidates:
        if _toolkit(home):
            os.environ["CUDA_HOME"] = home
            return


_locate_cuda_home()

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
    has_nvcc = _toolkit(cpp_extension.CUDA_HOME)
    if torch.version.cuda is not None and has_nvcc:
        return True
    if _flag("FORCE_CUDA"):
        why = []
        if torch.version.cuda is None:
            why.append(f"the installed torch {torch.__version__} has no CUDA support")
        if not has_nvcc:
            why.append(f"no CUDA toolkit (nvcc and include/cuda_runtime.h) was found at CUDA_HOME="
                       f"{cpp_extension.CUDA_HOME} (set CUDA_HOME to the toolkit's root)")
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


def _extension(with_cuda: bool):
    sources = sorted(
        glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/cpu/*.cpp")
    )
    debug = _flag("PYNAS_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    define = [("PYNAS_VERSION", f'"{VERSION}"'), ("PYNAS_TORCH_VERSION", f'"{torch.__version__}"')]
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


# The probe calls what the decoder needs beyond libjpeg 6b: region decoding (libjpeg-turbo >= 1.5).
_JPEG_PROBE = """
#include <stdio.h>
#include <jpeglib.h>
int main(void) {
  struct jpeg_decompress_struct cinfo;
  JDIMENSION x = 0, w = 1;
  jpeg_crop_scanline(&cinfo, &x, &w);
  return (int)jpeg_skip_scanlines(&cinfo, 1);
}
"""


def _libjpeg_turbo_usable() -> tuple[bool, str]:
    """Whether a C program using libjpeg-turbo's region decoding compiles and links here."""
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(_JPEG_PROBE)
        try:
            result = subprocess.run(compiler + [source, "-o", os.path.join(tmp, "probe"), "-ljpeg"],
                                    capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as err:
            return False, str(err)
    lines = (result.stderr or result.stdout).strip().splitlines()
    return result.returncode == 0, lines[-1] if lines else f"the compiler exited with {result.returncode}"


def _jpeg_extension():
    """pynas._jpeg (csrc/jpeg/region_decode.cpp), or None when libjpeg-turbo cannot be built against."""
    mode = os.environ.get("PYNAS_JPEG", "auto").strip().lower()
    if mode in {"0", "false", "no", "off"}:
        return None
    usable, why = _libjpeg_turbo_usable()
    if not usable:
        message = ("libjpeg-turbo >= 1.5 (jpeglib.h and -ljpeg; on Debian/Ubuntu: apt-get install "
                   f"libjpeg-turbo8-dev or libjpeg62-turbo-dev) was not usable: {why}")
        if mode in {"1", "true", "yes", "on"}:
            _fail(f"PYNAS_JPEG=1 but {message}")
        sys.stderr.write(f"pynas: building without pynas._jpeg; the streaming loader will decode with Pillow "
                         f"({message})\n")
        return None
    opt = ["-O0", "-g"] if _flag("PYNAS_DEBUG") else ["-O3"]
    return Extension("pynas._jpeg", ["csrc/jpeg/region_decode.cpp"], libraries=["jpeg"], extra_compile_args=opt)


WITH_CUDA = _want_cuda()
JPEG_EXTENSION = _jpeg_extension()
# The torch this build links against, by release (a local label such as +cu130 or +cpu is the build's
# flavour, which the extension's libraries already tie it to). A wheel built here requires it, and
# pynas refuses to import under another torch (pynas/_extension.py).
TORCH_RELEASE = torch.__version__.split("+")[0]

setup(
    name="pynas",
    version=VERSION,
    packages=find_packages(include=["pynas", "pynas.*"]),
    package_data={"pynas": ["configs/*.yaml", "configs/recipes/*.yaml"]},
    ext_modules=[_extension(WITH_CUDA)] + ([JPEG_EXTENSION] if JPEG_EXTENSION is not None else []),
    # One build tree per flavour, so a CPU and a CUDA build of one checkout (make check-cuda-build)
    # do not overwrite each other's objects.
    options={"build": {"build_base": os.path.join("build", "cuda" if WITH_CUDA else "cpu")}},
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)},
    python_requires=">=3.10",
    install_requires=[f"torch=={TORCH_RELEASE}", "numpy", "pyyaml", "pillow", "matplotlib"],
    entry_points={"console_scripts": ["pynas=pynas.cli:main"]},
    zip_safe=False,
)
