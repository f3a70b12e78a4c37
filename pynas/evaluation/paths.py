"""Evaluate many paths of a single-path supernet, each with its own batch-norm statistics.

SPOS (Guo et al., ECCV 2020, Sec. 3.3) scores a candidate path by resetting
the supernet's batch-norm statistics, recomputing them on training batches
with the path's weights ("BN recalibration"), then measuring accuracy on
validation data. Its code does this one path at a time.
:func:`evaluate_paths` does it for P paths in one pass per batch: the batch
is replicated P times (shared prefixes computed once, see
``ChainSupernet.forward_paths``), every choice layer routes rows to their op
with the fused ``path_dispatch``/``path_combine`` kernels, and each path's
batch norms keep their own statistics through ``grouped_batch_norm``. The
result equals :func:`evaluate_paths_sequential`, which is the one-path loop.

Two strategies (``strategy``):

* ``"passes"``: the above, ``paths_per_pass`` paths per pass (one launch per
  op for all of them: what a GPU needs);
* ``"trie"``: chain supernets only (stem, layers, head, see
  :mod:`pynas.evaluation.prefix_trie`): each distinct path prefix runs once,
  depth first over the trie of the paths, with plain batch norms; no
  replication, no routing. On a CPU, where a batch of 32 already keeps the
  cores busy, saving work beats batching it.

``"auto"`` (default) takes the trie on a CPU when the supernet is a chain (or
a few-shot split of one), passes otherwise.

``memory_format="auto"`` runs image batches channels-last on a CPU: oneDNN's
convolutions and batch norms are faster in that layout there (2-core AMD
EPYC, batch 32: the one-path loop itself runs 1.3x to 1.6x faster on SPOS's
ShuffleNetV2 supernet, 1.4x to 1.5x on NAS-Bench-Macro's). Scores then equal
the one-path loop's to float rounding instead of bit for bit.
``"preserve"`` keeps the inputs as given.

Batch-norm policies (``bn``):

* ``"recalibrate"`` (default): reset, then accumulate over
  ``recalibrate_batches`` training batches; ``momentum=None`` is the
  cumulative average, a float an exponential one;
* ``"batch"``: no recalibration; evaluate with each batch's own statistics;
* ``"running"``: no recalibration; use the supernet's shared running statistics.

These are the methods' protocols (``evaluation_defaults`` of each algorithm):
recalibration for SPOS, FairNAS, GreedyNAS and few-shot NAS, running
statistics in eval mode for RandomNAS, batch statistics for EPS (whose
training-time scoring, one validation batch per path, is
:func:`path_losses_own_batches`).
"""
from __future__ import annotations

import itertools
import os
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pynas.supernets.path_batch import begin_path_statistics, end_path_statistics, path_batch

from .prefix_trie import TrieMemoryError, chain_parts, score_chain_paths

__all__ = ["PathEvaluation", "evaluate_paths", "evaluate_paths_sequential", "path_losses", "path_losses_own_batches", "BN_POLICIES",
           "STRATEGIES", "MEMORY_FORMATS", "auto_memory_format"]

BN_POLICIES = ("recalibrate", "batch", "running")
STRATEGIES = ("auto", "trie", "passes")
MEMORY_FORMATS = ("auto", "preserve", "channels_last")
DEFAULT_PATHS_PER_PASS = {"cpu": 8, "cuda": 32}
DEFAULT_ROWS_PER_CALL = {"cpu": 256, "cuda": 1024}
# On a CPU, rows_per_call=None also caps a packed tensor by its stem output: 6 MiB (see evaluate_paths).
CPU_PACK_BYTES = 6 << 20
_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

Batch = Tuple[Tensor, Tensor]


@dataclass
class PathEvaluation:
    """Per-path results: ``accuracy`` (top-1, %) and mean cross-entropy ``loss``, both ``[P]``."""

    paths: Tensor
    accuracy: Tensor
    loss: Tensor
    samples: int
    seconds: float
    settings: dict = field(default_factory=dict)

    def best(self) -> Tuple[Tuple[int, ...], float]:
        i = int(torch.argmax(self.accuracy))
        return tuple(self.paths[i].tolist()), float(self.accuracy[i])

    def as_dict(self) -> dict:
        return {"paths": self.paths.tolist(), "accuracy": self.accuracy.tolist(), "loss": self.loss.tolist(),
                "samples": self.samples, "seconds": self.seconds, **self.settings}


# -- argument handling ---------------------------------------------------------------
def _check_supernet(supernet: Any) -> None:
    if not isinstance(supernet, nn.Module) or not hasattr(supernet, "forward_paths"):
        raise TypeError(f"supernet must be a single-path supernet (pynas.supernets.SinglePathSupernet), "
                        f"got {type(supernet).__name__}")


def _check_paths(supernet: Any, paths: Any) -> Tensor:
    space = getattr(supernet, "space", None)
    if space is not None:
        return space.check_paths(paths)
    t = torch.as_tensor(paths)
    if t.dim() != 2 or t.is_floating_point():
        raise TypeError(f"paths must be a [P, L] integer tensor, got shape {list(t.shape)} {t.dtype}")
    return t.cpu().long()


def _count(value: Any, name: str, *, allow_none: bool = False, minimum: int = 0) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{' or None' if allow_none else ''}, got {value!r}")
    return value


def _take(data: Iterable[Batch], count: Optional[int], name: str) -> List[Batch]:
    """The first ``count`` batches (all when None), read once so every path sees the same ones."""
    if isinstance(data, Tensor) or not hasattr(data, "__iter__"):
        raise TypeError(f"{name} must be an iterable of (inputs, labels) batches, got {type(data).__name__}")
    batches = list(itertools.islice(iter(data), count)) if count is not None else list(data)
    for i, batch in enumerate(batches):
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], Tensor)):
            raise TypeError(f"{name}: batch {i} must be (inputs, labels) tensors, got {type(batch).__name__}")
    if count is not None and len(batches) < count:
        raise ValueError(f"{name} has only {len(batches)} batches, {count} were asked for")
    return [(b[0], b[1]) for b in batches]


def _settings(bn, recalibrate_batches, momentum, paths_per_pass, amp, device, memory_format) -> dict:
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    if bn not in BN_POLICIES:
        raise ValueError(f"bn must be one of {BN_POLICIES}, got {bn!r}")
    if momentum is not None and (isinstance(momentum, bool) or not 0.0 < float(momentum) <= 1.0):
        raise ValueError(f"momentum must be in (0, 1] or None (cumulative average), got {momentum!r}")
    if amp not in _AMP:
        raise ValueError(f"amp must be one of {tuple(_AMP)}, got {amp!r}")
    _count(recalibrate_batches, "recalibrate_batches")
    if bn == "recalibrate" and recalibrate_batches == 0:
        raise ValueError("bn='recalibrate' needs recalibrate_batches >= 1")
    _count(paths_per_pass, "paths_per_pass", minimum=1)
    if memory_format == "auto":
        memory_format = auto_memory_format(device)
    return {"bn": bn, "recalibrate_batches": recalibrate_batches if bn == "recalibrate" else 0,
            "momentum": momentum, "paths_per_pass": paths_per_pass, "amp": amp, "device": str(device),
            "memory_format": memory_format}


def _autocast(amp: str, device: torch.device):
    dtype = _AMP[amp]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def auto_memory_format(device: torch.device) -> str:
    """What ``memory_format="auto"`` means on ``device``: channels-last on a CPU, the inputs' own elsewhere."""
    return "channels_last" if torch.device(device).type == "cpu" else "preserve"


def _to_device(x: Tensor, device: torch.device, memory_format: str) -> Tensor:
    x = x.to(device, non_blocking=True)
    if memory_format == "channels_last" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _device_of(supernet: nn.Module) -> torch.device:
    for p in supernet.parameters():
        return p.device
    return torch.device("cpu")


def _prepare(supernet: nn.Module, paths: Any, data: Iterable[Batch], recalibrate_data: Optional[Iterable[Batch]], *,
             recalibrate_batches: int, eval_batches: Optional[int], bn: str, momentum: Optional[float],
             paths_per_pass: Optional[int], amp: str, memory_format: str):
    """The checked arguments of both evaluations: ``(device, settings, paths [P, L], eval batches,
    recalibration batches)``, batches on the device in the memory format to run in;
    ``paths_per_pass=None`` is the device's default."""
    _check_supernet(supernet)
    device = _device_of(supernet)
    if paths_per_pass is None:
        paths_per_pass = DEFAULT_PATHS_PER_PASS.get(device.type, 32)
    settings = _settings(bn, recalibrate_batches, momentum, paths_per_pass, amp, device, memory_format)
    paths = _check_paths(supernet, paths)
    eval_data = _take(data, _count(eval_batches, "eval_batches", allow_none=True, minimum=1), "data")
    recal_data = _take(recalibrate_data if recalibrate_data is not None else data, recalibrate_batches,
                       "recalibrate_data") if bn == "recalibrate" else []
    fmt = settings["memory_format"]
    eval_data = [(_to_device(x, device, fmt), y.to(device, non_blocking=True)) for x, y in eval_data]
    recal_data = [(_to_device(x, device, fmt), y) for x, y in recal_data]
    return device, settings, paths, eval_data, recal_data


@contextmanager
def _batch_norms_restored(supernet: nn.Module):
    """Run the body, then put back every batch norm's buffers and momentum and the training mode."""
    norms = [m for m in supernet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    backup = [({k: v.clone() for k, v in m.state_dict().items()}, m.momentum) for m in norms]
    was_training = supernet.training
    try:
        yield norms
    finally:
        for m, (state, mom) in zip(norms, backup):
            m.load_state_dict(state)
            m.momentum = mom
        supernet.train(was_training)


def _strategy(strategy: str, supernet: nn.Module, paths: Tensor, device: torch.device):
    """``("trie", parts)`` or ``("passes", None)`` for ``strategy`` (validated)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "passes" or (strategy == "auto" and device.type != "cpu"):
        return "passes", None
    parts = chain_parts(supernet, paths)
    if parts is None:
        if strategy == "trie":
            raise ValueError(f"strategy='trie' needs a chain supernet (stem, layers, head: one with "
                             f"prefix_stages()), got {type(supernet).__name__}; use strategy='passes'")
        return "passes", None
    return "trie", parts


# -- batched ----------------------------------------------------------------------------
def _lexicographic_order(paths: Tensor) -> Tensor:
    """Indices sorting the rows of ``paths`` lexicographically (first layer most significant)."""
    order = torch.arange(paths.shape[0])
    for layer in reversed(range(paths.shape[1])):  # stable sorts, least significant key first
        order = order[torch.sort(paths[order, layer], stable=True).indices]
    return order


@torch.no_grad()
def evaluate_paths(
    supernet: nn.Module,
    paths: Any,
    data: Iterable[Batch],
    *,
    recalibrate_batches: int = 20,
    recalibrate_data: Optional[Iterable[Batch]] = None,
    eval_batches: Optional[int] = None,
    bn: str = "recalibrate",
    momentum: Optional[float] = None,
    strategy: str = "auto",
    paths_per_pass: Optional[int] = None,
    rows_per_call: Optional[int] = None,
    memory_format: str = "auto",
    amp: str = "none",
) -> PathEvaluation:
    """Accuracy and loss of every path of ``paths`` (``[P, L]``) on ``data``, paths batched together.

    Args:
        data: (inputs, labels) batches to evaluate on; the first ``eval_batches`` (all when None).
        recalibrate_batches: training batches used to recompute each path's
            batch-norm statistics (from ``recalibrate_data``, default ``data``).
        strategy: ``"trie"``, ``"passes"`` or ``"auto"`` (see the module docstring).
        paths_per_pass: paths sharing one pass of the ``"passes"`` strategy; memory grows with it
            (rows = paths x batch). None: 8 on a CPU, 32 on a GPU. Measured on 2 CPU cores
            (NAS-Bench-Macro, 128 paths, batch 32): 8 per pass ran 1.8x the one-path loop, 32 per pass
            only 1.3x, because large passes leave the caches while small ones still share most
            prefixes (paths are sorted).
        rows_per_call: the ``"trie"`` strategy packs consecutive recalibration and evaluation batches
            into tensors of up to this many rows, each run through a stage in one call. None: 1024 on a
            GPU; on a CPU 256, and a packed tensor's stem output at most 6 MiB, since packing only pays
            while a stage's activations stay in the caches. That bound is a heuristic set from two
            measurements on a 2-core AMD EPYC: three batches of 32 packed ran SPOS ShuffleNetV2 at
            64x64 (64 KiB of stem output per image: 6 MiB packed) 1.12x faster than batch by batch,
            and NAS-Bench-Macro (128 KiB per image, 12 MiB packed) 1.3x slower per image.
        memory_format: ``"auto"``, ``"preserve"`` or ``"channels_last"`` (image batches).

    The ``"trie"`` strategy holds R + E batches of activations for every stage of one root-to-leaf
    chain; when the first stage's output shows that this would pass a quarter of the device's memory,
    ``"auto"`` falls back to ``"passes"`` and ``"trie"`` raises a MemoryError saying so.
    """
    device, settings, paths, eval_data, recal_data = _prepare(
        supernet, paths, data, recalibrate_data, recalibrate_batches=recalibrate_batches, eval_batches=eval_batches,
        bn=bn, momentum=momentum, paths_per_pass=paths_per_pass, amp=amp, memory_format=memory_format)
    asked = strategy
    strategy, parts = _strategy(strategy, supernet, paths, device)
    rows_per_call = _count(rows_per_call, "rows_per_call", allow_none=True, minimum=1)
    pack_bytes = CPU_PACK_BYTES if rows_per_call is None and device.type == "cpu" else None
    if rows_per_call is None:
        rows_per_call = DEFAULT_ROWS_PER_CALL.get(device.type, 1024)
    start = time.perf_counter()
    if strategy == "trie":
        try:
            correct, loss_sum, samples = _score_trie(parts, paths, eval_data, recal_data, supernet=supernet, bn=bn,
                                                     momentum=momentum, amp=amp, device=device,
                                                     rows_per_call=rows_per_call, pack_bytes=pack_bytes)
            settings.update(strategy="trie", paths_per_pass=None, rows_per_call=rows_per_call,
                            pack_bytes=pack_bytes)
        except TrieMemoryError as err:
            if asked == "trie":
                raise
            warnings.warn(f"evaluate_paths: {err}; using strategy='passes'", RuntimeWarning, stacklevel=2)
            strategy = "passes"
    if strategy == "passes":
        settings["strategy"] = "passes"
        correct, loss_sum, samples = _score_passes(supernet, paths, eval_data, recal_data,
                                                   paths_per_pass=settings["paths_per_pass"], bn=bn,
                                                   momentum=momentum, amp=amp, device=device)
    denominator = max(samples, 1)
    return PathEvaluation(paths=paths, accuracy=100.0 * correct / denominator, loss=loss_sum / denominator,
                          samples=samples, seconds=time.perf_counter() - start, settings=settings)


def _memory_budget(device: torch.device) -> Optional[int]:
    """A quarter of the device's memory (free memory on a GPU), or None when unknown."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0] // 4
        if device.type == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, RuntimeError):
        pass
    return None


def _score_trie(parts, paths: Tensor, eval_data: List[Batch], recal_data: List[Batch], *, supernet: nn.Module,
                bn: str, momentum: Optional[float], amp: str, device: torch.device, rows_per_call: int,
                pack_bytes: Optional[int]):
    correct = torch.zeros(paths.shape[0], dtype=torch.float64)
    loss_sum = torch.zeros(paths.shape[0], dtype=torch.float64)
    samples = 0
    with _batch_norms_restored(supernet):
        for stages, index in parts:
            c, s, samples = score_chain_paths(stages, paths[index], [x for x, _ in recal_data], eval_data, bn=bn,
                                              momentum=momentum, rows_per_call=rows_per_call, pack_bytes=pack_bytes,
                                              memory_budget=_memory_budget(device),
                                              autocast=lambda: _autocast(amp, device))
            correct[index] = torch.tensor(c, dtype=torch.float64)
            loss_sum[index] = torch.tensor(s, dtype=torch.float64)
    return correct, loss_sum, samples


def _score_passes(supernet: nn.Module, paths: Tensor, eval_data: List[Batch], recal_data: List[Batch], *,
                  paths_per_pass: int, bn: str, momentum: Optional[float], amp: str, device: torch.device):
    was_training = supernet.training
    correct = torch.zeros(paths.shape[0], dtype=torch.float64)
    loss_sum = torch.zeros(paths.shape[0], dtype=torch.float64)
    samples = 0
    # Lexicographic order puts paths with long common prefixes in the same pass, where
    # ChainSupernet.forward_paths computes each shared prefix once; results go back in input order.
    order = _lexicographic_order(paths)
    try:
        for lo in range(0, paths.shape[0], paths_per_pass):
            index = order[lo:lo + paths_per_pass]
            chunk = paths[index]
            if bn == "recalibrate":
                begin_path_statistics(supernet, chunk.shape[0], momentum=momentum, device=device)
                supernet.train()
                for x, _ in recal_data:
                    with _autocast(amp, device):
                        supernet.forward_paths(x, chunk)
            supernet.train(bn == "batch")
            samples = 0
            for x, y in eval_data:
                with _autocast(amp, device):
                    logits = supernet.forward_paths(x, chunk).float()  # [p, n, classes]
                p, n = logits.shape[:2]
                target = y.unsqueeze(0).expand(p, n)
                losses = F.cross_entropy(logits.reshape(p * n, -1), target.reshape(-1), reduction="none")
                loss_sum[index] += losses.view(p, n).sum(1).double().cpu()
                correct[index] += (logits.argmax(-1) == target).sum(1).double().cpu()
                samples += n
            end_path_statistics(supernet)
    finally:
        end_path_statistics(supernet)
        supernet.train(was_training)
    return correct, loss_sum, samples


# -- one path at a time (SPOS's loop) --------------------------------------------------------
@torch.no_grad()
def evaluate_paths_sequential(
    supernet: nn.Module,
    paths: Any,
    data: Iterable[Batch],
    *,
    recalibrate_batches: int = 20,
    recalibrate_data: Optional[Iterable[Batch]] = None,
    eval_batches: Optional[int] = None,
    bn: str = "recalibrate",
    momentum: Optional[float] = None,
    memory_format: str = "preserve",
    amp: str = "none",
) -> PathEvaluation:
    """The reference loop: for each path, reset the batch norms, recalibrate, evaluate.

    This is how SPOS's evaluation code scores candidates (inputs as given:
    ``memory_format="preserve"``); it is the baseline of ``bench.paths`` and
    the oracle of the batched version. The supernet's own batch-norm buffers
    are restored afterwards.
    """
    device, settings, paths, eval_data, recal_data = _prepare(
        supernet, paths, data, recalibrate_data, recalibrate_batches=recalibrate_batches, eval_batches=eval_batches,
        bn=bn, momentum=momentum, paths_per_pass=1, amp=amp, memory_format=memory_format)
    settings.pop("paths_per_pass")
    start = time.perf_counter()
    accuracy, loss = [], []
    samples = 0
    with _batch_norms_restored(supernet) as norms:
        for path in paths.tolist():
            if bn == "recalibrate":
                for m in norms:
                    m.reset_running_stats()
                    m.momentum = momentum
                supernet.train()
                for x, _ in recal_data:
                    with _autocast(amp, device):
                        supernet(x, path)
            supernet.train(bn == "batch")
            correct, loss_sum, samples = 0.0, 0.0, 0
            for x, y in eval_data:
                with _autocast(amp, device):
                    logits = supernet(x, path).float()
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += float((logits.argmax(1) == y).sum())
                samples += y.shape[0]
            accuracy.append(100.0 * correct / max(samples, 1))
            loss.append(loss_sum / max(samples, 1))
    return PathEvaluation(paths=paths, accuracy=torch.tensor(accuracy, dtype=torch.float64),
                          loss=torch.tensor(loss, dtype=torch.float64), samples=samples,
                          seconds=time.perf_counter() - start, settings=settings)


@torch.no_grad()
def _train_mode_logits(supernet: nn.Module, paths: Any, batch: Batch, amp: str) -> tuple[Tensor, Tensor]:
    """Float logits ``[P, n, classes]`` of every path on ``batch`` in one pass with batch statistics
    (train-mode BN, the supernet's mode restored), and the labels on the supernet's device."""
    _check_supernet(supernet)
    paths = _check_paths(supernet, paths)
    device = _device_of(supernet)
    x, y = batch[0].to(device), batch[1].to(device)
    was_training = supernet.training
    supernet.train()
    try:
        with _autocast(amp, device):
            logits = supernet.forward_paths(x, paths).float()
    finally:
        supernet.train(was_training)
    return logits, y


@torch.no_grad()
def path_losses(supernet: nn.Module, paths: Any, batch: Batch, *, amp: str = "none") -> Tensor:
    """Mean cross-entropy ``[P]`` of each path on one batch, with batch statistics (train-mode BN).

    GreedyNAS's rejection step (You et al., CVPR 2020, Sec. 3.2) ranks m
    sampled paths by their loss on a small validation batch; all m run in one pass.
    """
    logits, y = _train_mode_logits(supernet, paths, batch, amp)
    p, n = logits.shape[:2]
    losses = F.cross_entropy(logits.reshape(p * n, -1), y.unsqueeze(0).expand(p, n).reshape(-1), reduction="none")
    return losses.view(p, n).mean(1).cpu()


def path_accuracy_and_loss(supernet: nn.Module, paths: Any, batch: Batch, *, amp: str = "none") -> Tensor:
    """``[P, 2]``: each path's top-1 accuracy and mean cross-entropy on one batch, train-mode BN.

    GreedyNAS ranks its sampled paths by top-1 accuracy on validation data
    (mmrazor ``subnet_sampler_loop.py`` ``score_key='accuracy/top1'``); the
    loss breaks the ties a small batch makes frequent. All P paths run in one
    pass without gradients. Deviation: mmrazor scores in eval mode with the
    supernet's running BN statistics; here each path normalises with its own
    batch statistics, as :func:`path_losses` does (shared running statistics
    mix every path's, and per-path recalibration per step is unaffordable).
    """
    logits, y = _train_mode_logits(supernet, paths, batch, amp)
    p, n = logits.shape[:2]
    targets = y.unsqueeze(0).expand(p, n)
    losses = F.cross_entropy(logits.reshape(p * n, -1), targets.reshape(-1), reduction="none").view(p, n).mean(1)
    accuracy = (logits.argmax(-1) == targets).float().mean(1)
    return torch.stack([accuracy, losses], 1).cpu()


@torch.no_grad()
def path_losses_own_batches(supernet: nn.Module, paths: Any, inputs: Tensor, targets: Tensor, *,
                            label_smoothing: float = 0.0, amp: str = "none") -> Tensor:
    """Mean cross-entropy ``[P]`` of path p on its OWN batch ``inputs[p]`` (``[P, n, ...]``, labels
    ``targets`` ``[P, n]``), batch statistics (train-mode BN), all P paths in one pass.

    EPS's searcher scores each member of its trained group on the next 250-image validation batch,
    one member after another, with the model in train mode (``search_cnn_nasbench/searcher.py`` lines
    403-436: ``validate`` never calls ``model.eval()``, and its batch norms track no running statistics)
    and its training criterion, label-smoothed cross-entropy (lines 253, 424). Here the P batches are
    stacked into one ``[P * n]`` batch whose rows carry their own path (per-row paths) and whose batch
    norms normalise each path's rows with that path's statistics, which is what P separate train-mode
    passes compute. The supernet's running statistics and training mode are left as they were.
    """
    _check_supernet(supernet)
    paths = _check_paths(supernet, paths)
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("inputs and targets must be tensors")
    num_paths = paths.shape[0]
    if inputs.dim() < 2 or inputs.shape[0] != num_paths or tuple(targets.shape) != tuple(inputs.shape[:2]):
        raise ValueError(f"inputs must be [P, n, ...] and targets [P, n] with P = {num_paths} paths, got "
                         f"{list(inputs.shape)} and {list(targets.shape)}")
    if isinstance(label_smoothing, bool) or not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if amp not in _AMP:
        raise ValueError(f"amp must be one of {tuple(_AMP)}, got {amp!r}")
    device = _device_of(supernet)
    n = inputs.shape[1]
    x = inputs.reshape(num_paths * n, *inputs.shape[2:]).to(device)
    y = targets.reshape(-1).to(device)
    row_paths = torch.arange(num_paths).repeat_interleave(n)
    with _batch_norms_restored(supernet):
        supernet.train()
        with path_batch(row_paths, num_paths), _autocast(amp, device):
            logits = supernet(x, paths[row_paths]).float()
    losses = F.cross_entropy(logits, y, reduction="none", label_smoothing=float(label_smoothing))
    return losses.view(num_paths, n).mean(1).cpu()
