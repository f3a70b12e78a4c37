"""Loads a pynas op library built by CMake (make check-cuda) and checks that every op has a CUDA kernel.

    python tools/check_op_library.py build/cmake-cuda/libpynas_ops.so
"""
import sys

import torch

OPS = ("weighted_sum", "_weighted_sum_backward", "partial_channel_mix", "_partial_channel_mix_backward",
       "path_dispatch", "path_combine", "grouped_batch_norm", "_grouped_batch_norm_backward")


def main(path: str) -> int:
    torch.ops.load_library(path)
    missing = [op for key in ("CPU", "CUDA") for op in OPS
               if not torch._C._dispatch_has_kernel_for_dispatch_key(f"pynas::{op}", key)]
    if missing:
        print(f"check_op_library: FAILED: {path} registers no kernel for {missing}", file=sys.stderr)
        return 1
    print(f"check_op_library: {path} loads under torch {torch.__version__} with CPU and CUDA kernels "
          f"for all {len(OPS)} ops")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/check_op_library.py LIBRARY")
    sys.exit(main(sys.argv[1]))
