"""Reader and writer for the IDX format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then
the values in row-major order. The magic is two zero bytes, a type code and the
number of dimensions: images are 0x00000803 (uint8, 3 dims), labels 0x00000801.
Files may be gzipped (as the Debian package and the original downloads ship
them); gzip is detected from the content, not the file name.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = ["read_idx", "write_idx", "idx_magic"]

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_DTYPE = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def idx_magic(type_code: int, ndim: int) -> int:
    """The magic number of an IDX file with values of `type_code` and `ndim` dims."""
    return (type_code << 8) | ndim


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: corrupt gzip stream ({err})") from err


def read_idx(path: str | os.PathLike, *, expected_magic: int | None = None) -> torch.Tensor:
    """Read an IDX file (raw or gzipped) into a tensor of its own shape and dtype.

    `expected_magic` (e.g. 0x00000803 for an image file) turns a file of the
    wrong kind into a ValueError instead of a tensor of surprising shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: IDX file not found")
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: expected an IDX header of at least 4 bytes, got {len(data)} bytes")
    (magic,) = struct.unpack(">I", data[:4])
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"{path}: expected IDX magic 0x{expected_magic:08X}, got 0x{magic:08X}")
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: expected an IDX magic 0x0000TTDD (TT a type code in "
            f"{sorted(hex(c) for c in _IDX_DTYPES)}, DD >= 1 dims), got 0x{magic:08X}"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{path}: expected {header_size} header bytes for {ndim} dims, got {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - header_size
    if payload != expected:
        raise ValueError(
            f"{path}: expected {expected} data bytes for shape {tuple(shape)} of {dtype.name}, got {payload}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    # Native byte order (a copy) so torch can take it; uint8 needs no swap.
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | os.PathLike, values: torch.Tensor | np.ndarray) -> None:
    """Write `values` as an IDX file, gzipped when `path` ends in .gz."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    native = array.dtype.newbyteorder("=")
    if native not in _CODE_OF_DTYPE:
        raise ValueError(
            f"write_idx: dtype {array.dtype} has no IDX type code (use uint8, int8, int16, int32, float32, float64)"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx: expected 1 to 255 dims, got {array.ndim}")
    code = _CODE_OF_DTYPE[native]
    header = struct.pack(">I", idx_magic(code, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + body)
