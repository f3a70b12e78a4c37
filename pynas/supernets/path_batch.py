"""Many paths in one batch: which rows belong to which path, and batch norm per path.

A single-path supernet normally runs one path on a batch. To evaluate (or
train) P paths at once, the batch is replicated P times and row ``i`` follows
path ``row_paths[i]``. Each choice layer routes its rows to the op their path
picks (``path_dispatch`` / ``path_combine``); every batch norm inside an op
must then normalise each path's rows with that path's own statistics, or the
paths would leak into each other. :class:`PathBatchNorm2d` does that with
``grouped_batch_norm`` whenever a :func:`path_batch` context is active, and
behaves exactly like ``nn.BatchNorm2d`` otherwise.

Per-path running statistics (for batch-norm recalibration, as SPOS evaluates
each path) live in :class:`PathStatistics` buffers that
:func:`begin_path_statistics` attaches and :func:`end_path_statistics` removes.

:func:`batch_slices` is the other way to put several batches in one tensor:
consecutive row ranges that are separate batches of one path, each
normalised as ``nn.BatchNorm2d`` would normalise it alone, in training mode
(its own statistics, folded into the running ones) or eval mode (the running
statistics as the earlier slices left them). Recalibration batches followed
by evaluation batches then run through a module in one call
(:mod:`pynas.evaluation.prefix_trie`).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pynas.ops import grouped_batch_norm

__all__ = [
    "PathBatchNorm2d",
    "path_batch",
    "batch_slices",
    "current_groups",
    "routed_groups",
    "convert_to_path_batch_norm",
    "begin_path_statistics",
    "end_path_statistics",
]

_local = threading.local()


def _stack() -> List[tuple[Tensor, int]]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


@contextmanager
def path_batch(row_paths: Tensor, num_paths: int) -> Iterator[None]:
    """Rows of the tensors flowing through the supernet belong to paths ``row_paths`` ([N], CPU ints)."""
    if not isinstance(row_paths, Tensor) or row_paths.dim() != 1 or row_paths.is_floating_point():
        raise TypeError("row_paths must be a 1-D integer tensor (the path of each row)")
    if isinstance(num_paths, bool) or not isinstance(num_paths, int) or num_paths < 1:
        raise ValueError(f"num_paths must be a positive int, got {num_paths!r}")
    stack = _stack()
    stack.append((row_paths.cpu().long(), num_paths))
    try:
        yield
    finally:
        stack.pop()


@contextmanager
def batch_slices(sizes: Sequence[int], training: Sequence[bool], counted: Optional[int] = None) -> Iterator[None]:
    """Rows of the tensors flowing through are consecutive batches of ``sizes`` rows; batch i is
    normalised in training mode when ``training[i]``, else in eval mode (see the module docstring).

    ``counted``: how many training batches every batch norm has counted since its statistics were
    reset (the cumulative average needs it); None reads ``num_batches_tracked``, a host sync on a GPU.
    """
    sizes, training = tuple(int(n) for n in sizes), tuple(bool(t) for t in training)
    if len(sizes) != len(training) or not sizes or min(sizes) < 1:
        raise ValueError(f"sizes must be positive batch sizes with one training flag each, got {sizes} {training}")
    if counted is not None and (isinstance(counted, bool) or not isinstance(counted, int) or counted < 0):
        raise ValueError(f"counted must be a non-negative int or None, got {counted!r}")
    previous = getattr(_local, "slices", None)
    _local.slices = (sizes, training, counted)
    try:
        yield
    finally:
        _local.slices = previous


def current_slices() -> Optional[Tuple[Tuple[int, ...], Tuple[bool, ...], Optional[int]]]:
    return getattr(_local, "slices", None)


def current_groups() -> Optional[tuple[Tensor, int]]:
    """(path of each current row, number of paths), or None outside :func:`path_batch`."""
    stack = _stack()
    return stack[-1] if stack else None


@contextmanager
def routed_groups(mask: Tensor) -> Iterator[None]:
    """Inside a choice layer: the op now sees only the rows selected by ``mask`` (in order)."""
    top = current_groups()
    if top is None:
        yield
        return
    rows, num_paths = top
    stack = _stack()
    stack.append((rows[mask], num_paths))
    try:
        yield
    finally:
        stack.pop()


class PathStatistics:
    """Running mean/var ``[P, C]`` and batch counts ``[P]`` for P paths of one batch norm.

    A plain object, not a submodule: it never enters the supernet's state_dict.
    """

    def __init__(self, num_paths: int, num_features: int, device, *, momentum: Optional[float],
                 dtype: torch.dtype = torch.float32):
        self.momentum = momentum
        self.running_mean = torch.zeros(num_paths, num_features, device=device, dtype=dtype)
        self.running_var = torch.ones(num_paths, num_features, device=device, dtype=dtype)
        self.num_batches_tracked = torch.zeros(num_paths, dtype=torch.long, device=device)


class PathBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that normalises each path's rows separately inside :func:`path_batch`.

    Outside a path batch it is ``nn.BatchNorm2d`` (same buffers, same results).
    Inside one:

    * with per-path statistics attached (evaluation): training mode normalises
      with each path's batch statistics and accumulates them into that path's
      running statistics; eval mode normalises with them;
    * without them (a multi-path training step): each path's rows are
      normalised with their own batch statistics, and the shared running
      statistics are left alone (they are recalibrated before any evaluation).
    """

    path_stats: Optional[PathStatistics]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "path_stats", None)

    def forward(self, x: Tensor) -> Tensor:
        slices = current_slices()
        if slices is not None:
            return self._forward_slices(x, *slices)
        groups = current_groups()
        if groups is None:
            return super().forward(x)
        rows, num_paths = groups
        if rows.shape[0] != x.shape[0]:
            raise RuntimeError(f"path batch has {rows.shape[0]} rows but the batch norm input has {x.shape[0]}; "
                               f"route rows through ChoiceLayer so the path of each row follows it")
        stats = self.path_stats
        if stats is not None:
            if stats.running_mean.shape[0] != num_paths:
                raise RuntimeError(f"per-path statistics were set up for {stats.running_mean.shape[0]} paths, "
                                   f"the batch has {num_paths}")
            return grouped_batch_norm(x, rows, num_paths, self.weight, self.bias, stats.running_mean,
                                      stats.running_var, stats.num_batches_tracked, momentum=stats.momentum,
                                      eps=self.eps, training=self.training)
        if self.training or not self.track_running_stats:
            return grouped_batch_norm(x, rows, num_paths, self.weight, self.bias, eps=self.eps, training=True)
        # Eval mode with the shared running statistics: the same for every path.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


    def _forward_slices(self, x: Tensor, sizes: Tuple[int, ...], training: Tuple[bool, ...],
                        counted: Optional[int]) -> Tensor:
        """Each slice as ``nn.BatchNorm2d.forward`` would treat it alone, in its mode, in order."""
        if sum(sizes) != x.shape[0]:
            raise RuntimeError(f"batch slices cover {sum(sizes)} rows but the batch norm input has {x.shape[0]}")
        if x.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled(x.device.type):
            # Mixed precision: nn.BatchNorm2d per slice (autocast decides the dtypes), then one concatenation.
            was_training, parts = self.training, []
            try:
                for part, train in zip(x.split(list(sizes)), training):
                    self.train(train)
                    parts.append(super().forward(part))
            finally:
                self.train(was_training)
            return torch.cat(parts)
        if not (x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))):
            x = x.contiguous()
        self._check_input_dim(x)
        out = torch.empty_like(x)  # same layout: a batch of rows is a contiguous block of both
        stat_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        saved = x.new_empty((2, x.shape[1]), dtype=stat_dtype)
        per_channel = x[0].numel() // x.shape[1]
        track = self.track_running_stats
        running_mean, running_var = (self.running_mean, self.running_var) if track else (None, None)
        count = 0 if not track else counted if counted is not None else int(self.num_batches_tracked)
        start, i = 0, 0
        while i < len(sizes):
            train = training[i] or not track
            stop, j = start + sizes[i], i + 1
            if not train:  # consecutive eval-mode slices read the same statistics: one call
                while j < len(sizes) and not training[j]:
                    stop, j = stop + sizes[j], j + 1
            factor = 0.0
            if train:
                if (stop - start) * per_channel <= 1:
                    raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                                     f"{[stop - start, *x.shape[1:]]}")
                if track:
                    # nn.BatchNorm2d's update: count the batch, cumulative average when momentum is None.
                    count += 1
                    factor = 1.0 / count if self.momentum is None else self.momentum
            # The out= overload writes the slice in place (no concatenation afterwards); called through
            # torch.native_batch_norm, whose binding costs less per call than torch.ops.aten's.
            torch.native_batch_norm(x[start:stop], self.weight, self.bias, running_mean, running_var, train, factor,
                                    self.eps, out=(out[start:stop], saved[0], saved[1]))
            start, i = stop, j
        if track:
            self.num_batches_tracked.fill_(count)
        return out


def convert_to_path_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by a :class:`PathBatchNorm2d` with the same state."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, PathBatchNorm2d):
        new = PathBatchNorm2d(module.num_features, eps=module.eps, momentum=module.momentum, affine=module.affine,
                              track_running_stats=module.track_running_stats,
                              device=(module.weight.device if module.weight is not None else None))
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = convert_to_path_batch_norm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def path_batch_norms(module: nn.Module) -> List[PathBatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, PathBatchNorm2d)]


def begin_path_statistics(module: nn.Module, num_paths: int, *, momentum: Optional[float] = None,
                          device: Optional[torch.device] = None) -> int:
    """Attach fresh per-path running statistics (mean 0, var 1, count 0) to every path batch norm.

    ``momentum=None`` accumulates a cumulative average over the recalibration
    batches (SPOS's reset-then-recalibrate); a float gives an exponential one.
    Returns how many batch norms got them.
    """
    norms = path_batch_norms(module)
    for bn in norms:
        where = device if device is not None else (bn.weight.device if bn.weight is not None else (
            bn.running_mean.device if bn.running_mean is not None else None))
        # Statistics in the batch norm's own precision (float64 supernets stay float64).
        dtype = bn.running_mean.dtype if bn.running_mean is not None else (
            bn.weight.dtype if bn.weight is not None else torch.float32)
        object.__setattr__(bn, "path_stats", PathStatistics(num_paths, bn.num_features, where, momentum=momentum,
                                                            dtype=dtype))
    return len(norms)


def end_path_statistics(module: nn.Module) -> None:
    for bn in path_batch_norms(module):
        object.__setattr__(bn, "path_stats", None)
