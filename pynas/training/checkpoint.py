"""Atomic, checksummed checkpoints that carry every random state, so a killed run resumes exactly.

File format (version 2): one header line, then the bytes of ``torch.save(payload)``::

    PYNAS-CHECKPOINT 2 sha256=<64 hex digits of the SHA-256 of the bytes after this line>\\n
    <torch.save zip archive>

The checksum lives in the same file as what it covers, so the temporary file + fsync + ``os.replace``
sequence keeps its guarantee (a kill leaves the old or the new checkpoint, never a torn one) and there is
no window in which a payload and a separate checksum file disagree; copying a checkpoint copies its
checksum. The checksum detects corruption (a torn copy, a flipped bit, a truncated transfer), not
tampering: anyone who can write the file can write a matching header.

Tampering is handled by how the payload is read: always ``torch.load(..., weights_only=True)``, whose
unpickler builds tensors and plain Python values only, so a pickled ``__reduce__`` that would run a command
is refused instead of run. Everything the runners save is of that kind; the one exception used to be the
numpy random state, a tuple holding a numpy array, which :func:`rng_state` now stores as a tensor and ints
(rebuilt by :func:`set_rng_state`) instead of allow-listing numpy's array reconstruction for every load.

Older checkpoints (a bare ``torch.save`` file, version 1, no checksum) are still read, with a warning that
their integrity cannot be checked, and still with ``weights_only=True``; their numpy random state is a
numpy array, so for them alone the few numpy globals an array of numbers needs are allowed, inside a
``torch.serialization.safe_globals`` context (not process-wide).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 2
MAGIC = b"PYNAS-CHECKPOINT"
_HEADER = re.compile(rb"PYNAS-CHECKPOINT (\d+) sha256=([0-9a-f]{64})\n")
_HEADER_MAX = 128  # the header line is 91 bytes; read no further looking for its end
_ZIP = b"PK\x03\x04"  # torch.save's archive format: how a version-1 (headerless) checkpoint starts


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint without a checksum (written before version 2, or by plain ``torch.save``) was loaded."""


# -- random states -----------------------------------------------------------------------------------------
def _numpy_state() -> dict:
    # np.random.get_state(): ('MT19937', uint32 key[624], pos, has_gauss, cached_gaussian). The key goes
    # into an int64 tensor (every uint32 fits), the rest are plain numbers: all weights_only-loadable.
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: Any) -> None:
    if isinstance(state, dict):
        key = state["key"].numpy() if isinstance(state["key"], torch.Tensor) else np.asarray(state["key"])
        np.random.set_state((state["bit_generator"], key.astype(np.uint32), int(state["pos"]),
                             int(state["has_gauss"]), float(state["cached_gaussian"])))
    else:  # a version-1 checkpoint: np.random.get_state()'s tuple as it was
        np.random.set_state(state)


def rng_state() -> dict:
    # random.getstate() is (version, tuple of ints, gauss_next): plain values, loadable as they are.
    state = {"python": random.getstate(), "numpy": _numpy_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    python = state["python"]
    # Through torch.load the inner tuple may come back as a list; random.setstate wants tuples.
    random.setstate((python[0], tuple(python[1]), python[2]))
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- files -------------------------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX: a directory entry is data of the directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write header + payload to a temporary file in the same folder, fsync, then rename over ``path``.

    A kill at any moment leaves either the old or the new checkpoint, never a torn one; the checksum is in
    the same file, so it always matches the payload it came with.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getbuffer()
    header = b"%s %d sha256=%s\n" % (MAGIC, FORMAT_VERSION, hashlib.sha256(body).hexdigest().encode())
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _legacy_numpy_globals() -> list:
    """What unpickling np.random.get_state()'s uint32 array needs (numpy 1.x and 2.x module paths)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _unpickle(path: Path, data, *, legacy: bool) -> Any:
    # Version 1 stored np.random.get_state()'s array: allow exactly what rebuilding it needs, for this load only.
    allowed = torch.serialization.safe_globals(_legacy_numpy_globals()) if legacy else contextlib.nullcontext()
    try:
        with allowed:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure to read is the file's fault, reported with its name
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            raise ValueError(
                f"{path}: refusing to load this checkpoint: it holds Python objects other than tensors and plain "
                f"values, which unpickling could use to run code ({text.splitlines()[0][:200]}); pynas never "
                f"writes such checkpoints, so it is foreign or tampered with: delete it to restart the run, or "
                f"restore it from a copy you trust") from None
        reason = text.splitlines()[0][:200] if text else type(err).__name__
        raise ValueError(f"{path}: not a readable pynas checkpoint ({reason}); delete it to restart the run, or "
                         f"restore it from a copy") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of a checkpoint written by :func:`save_checkpoint` (or an older headerless one).

    Raises FileNotFoundError when there is no file, ValueError naming the file when it is corrupt (checksum
    mismatch, truncated), foreign (not a pynas checkpoint, not a dict) or holds anything but tensors and
    plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    raw = path.read_bytes()
    if raw.startswith(MAGIC):
        end = raw.find(b"\n", 0, _HEADER_MAX)
        match = _HEADER.fullmatch(raw[:end + 1]) if end >= 0 else None
        if match is None:
            raise ValueError(f"{path}: damaged pynas checkpoint header; delete the file to restart the run, or "
                             f"restore it from a copy")
        version = int(match.group(1))
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: pynas checkpoint format {version}, this pynas reads format {FORMAT_VERSION} "
                             f"(and headerless format-1 files); use the pynas version that wrote it")
        body = memoryview(raw)[end + 1:]
        if hashlib.sha256(body).hexdigest() != match.group(2).decode():
            raise ValueError(f"{path}: checksum mismatch, the checkpoint is corrupt (a torn copy or a damaged "
                             f"disk); delete it to restart the run, or restore it from a copy")
        payload = _unpickle(path, body, legacy=False)
    elif raw.startswith(_ZIP):
        warnings.warn(f"{path}: checkpoint without a checksum (written by an older pynas or by torch.save); "
                      f"its integrity cannot be checked", UnverifiedCheckpointWarning, stacklevel=2)
        payload = _unpickle(path, raw, legacy=True)
    else:
        raise ValueError(f"{path}: not a pynas checkpoint (neither a pynas checkpoint header nor a torch.save "
                         f"archive); delete it to restart the run, or restore the right file")
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a pynas checkpoint (holds a {type(payload).__name__}, expected a dict); "
                         f"delete it to restart the run, or restore the right file")
    return payload
