"""Scoring the paths of a chain supernet by walking the trie of their prefixes.

In a chain supernet (stem, then one module per layer, then the head) the
activations after layer l depend only on the path's first l + 1 choices, and
so do the batch-norm statistics that recalibration gives the modules of those
layers. The one-path loop (:func:`~pynas.evaluation.evaluate_paths_sequential`)
recomputes every prefix that several paths share; here each distinct prefix
is computed once, depth first:

* a trie node is one stage (the stem, a fixed block, one candidate of a
  choice layer, the head) reached by one prefix;
* the node resets its module's batch norms, runs the R recalibration batches
  through it in training mode (the module accumulates their statistics exactly
  as the one-path loop does), then the E evaluation batches in eval mode;
* its children receive those R + E outputs as their inputs; a leaf (the head)
  scores its evaluation outputs for every path that ends there.

Each batch norm sees the same inputs, in the same order, with the same
batches as in the one-path loop, so run batch by batch (``rows_per_call=1``)
in the same memory format the scores are bit-identical to it; with batches
packed into one tensor per stage (see :func:`score_chain_paths`) the
convolutions may round differently. Memory is the activations of one
root-to-leaf chain (R + E batches per stage); compute is one stage per trie
node instead of one per path and layer (the 128 random NAS-Bench-Macro
paths of ``bench.paths``: 570 layer evaluations instead of 1,024, and the
stem once instead of 128 times; SPOS's ShuffleNetV2 space: 2,221 instead of 2,560).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pynas.supernets.path_batch import PathBatchNorm2d, batch_slices, current_slices

__all__ = ["chain_parts", "score_chain_paths", "TrieMemoryError"]

Stage = Tuple[nn.Module, int]  # (module, path entry it is chosen by; -1 for a fixed stage)


def chain_parts(supernet: nn.Module, paths: Tensor) -> Optional[List[Tuple[List[Stage], Tensor]]]:
    """``[(stages, path indices)]`` covering ``paths``, or None when the supernet is not a chain.

    A chain supernet has ``prefix_stages()``; a supernet made of several
    chains (few-shot) has ``partition_paths(paths)`` giving ``(sub-supernet,
    indices)`` pairs.
    """
    if hasattr(supernet, "partition_paths"):
        parts = []
        for sub, index in supernet.partition_paths(paths):
            inner = chain_parts(sub, paths[index])
            if inner is None:
                return None
            parts += [(stages, index[i]) for stages, i in inner]
        return parts
    stages = supernet.prefix_stages() if hasattr(supernet, "prefix_stages") else None
    if stages is None:
        return None
    return [(list(stages), torch.arange(paths.shape[0]))]


def _dropout_by_slice(module: nn.Module, inputs: tuple, output: Tensor):
    """Forward hook of a dropout in a packed stage (run in eval mode): drop in the batches that the
    one-path loop runs in training mode, as it would; leave the others."""
    slices = current_slices()
    if slices is None or not any(slices[1]):
        return None
    parts = []
    module.train()
    try:
        for part, train in zip(inputs[0].split(list(slices[0])), slices[1]):
            parts.append(module.forward(part) if train else part)
    finally:
        module.eval()
    return torch.cat(parts)


class TrieMemoryError(MemoryError):
    """The activations of one root-to-leaf chain would exceed the memory budget."""


class _Chunk:
    """Consecutive batches in one tensor: row counts and whether each is normalised in training mode."""

    __slots__ = ("rows", "sizes", "training", "num_recal")

    def __init__(self, rows: Tensor, sizes: Tuple[int, ...], training: Tuple[bool, ...], num_recal: int):
        self.rows, self.sizes, self.training = rows, sizes, training
        self.num_recal = num_recal  # its first num_recal batches are recalibration batches


def _pack(batches: List[Tuple[Tensor, bool, bool]], rows_per_call: int, pack_bytes: Optional[int]) -> List[_Chunk]:
    """``(rows, training, is_recalibration)`` batches, in order, packed into tensors of at most
    ``rows_per_call`` rows and (when given) ``pack_bytes`` bytes; a batch over the limits goes alone."""
    groups: List[list] = []
    rows = size = 0
    for batch in batches:
        n, nbytes = int(batch[0].shape[0]), batch[0].numel() * batch[0].element_size()
        fits = rows + n <= rows_per_call and (pack_bytes is None or size + nbytes <= pack_bytes)
        if groups and fits:
            groups[-1].append(batch)
            rows, size = rows + n, size + nbytes
        else:
            groups.append([batch])
            rows, size = n, nbytes
    out = []
    for group in groups:
        tensor = group[0][0] if len(group) == 1 else torch.cat([b[0] for b in group])
        out.append(_Chunk(tensor, tuple(int(b[0].shape[0]) for b in group), tuple(b[1] for b in group),
                          sum(b[2] for b in group)))
    return out


def _unpack(chunks: List[_Chunk]) -> List[Tuple[Tensor, bool, bool]]:
    out = []
    for chunk in chunks:
        for i, (part, train) in enumerate(zip(chunk.rows.split(list(chunk.sizes)), chunk.training)):
            out.append((part, train, i < chunk.num_recal))
    return out


def score_chain_paths(
    stages: Sequence[Stage],
    paths: Tensor,
    recal_inputs: List[Tensor],
    eval_batches: List[Tuple[Tensor, Tensor]],
    *,
    bn: str,
    momentum: Optional[float],
    rows_per_call: int,
    pack_bytes: Optional[int] = None,
    memory_budget: Optional[int] = None,
    autocast: Callable[[], object] = nullcontext,
) -> Tuple[List[float], List[float], int]:
    """Correct counts and summed cross-entropy of each row of ``paths`` (``[P, L]``), and the sample count.

    ``recal_inputs`` are the recalibration batches (used when ``bn ==
    'recalibrate'``), ``eval_batches`` the (inputs, labels) to score on; all
    on the supernet's device in the memory format to run in.

    Batches are packed into tensors of up to ``rows_per_call`` rows (a batch
    larger than that alone) and, when ``pack_bytes`` is given, whose first
    stage's output stays within that many bytes (the stem runs batch by batch,
    then its outputs are packed): the first stage's output stands for the
    activations a stage works on, and packing past the caches costs more than
    the fewer calls save. Each stage runs once per tensor: its
    :class:`~pynas.supernets.path_batch.PathBatchNorm2d` layers normalise every
    batch of it separately (``batch_slices``). A stage with another kind of
    batch norm runs batch by batch instead. Dropout in a packed stage drops
    in the batches the loop runs in training mode only (a forward hook); any
    other module must compute the same in both modes (true of the spaces'
    modules; ``rows_per_call=1`` turns packing off for one that does not).

    The walk holds one stage output (all R + E batches) per stage of the
    current chain. ``memory_budget`` (bytes, None: unchecked): after the first
    stage, its output size times the number of stages estimates that; above the
    budget :class:`TrieMemoryError` is raised before any further work.

    The stages' batch-norm buffers and modes are left changed: the caller restores them.
    """
    recal_inputs = list(recal_inputs) if bn == "recalibrate" else []
    rows = paths.tolist()
    correct = [0.0] * len(rows)
    loss_sum = [0.0] * len(rows)
    samples = sum(int(y.shape[0]) for _, y in eval_batches)
    last = len(stages) - 1
    facts: Dict[int, Tuple[list, bool, list]] = {}

    def stage_facts(module: nn.Module) -> Tuple[list, bool, list]:
        """(its batch norms, whether packed batches can run through it in one call, its dropouts)."""
        key = id(module)
        if key not in facts:
            subs = list(module.modules())
            norms = [m for m in subs if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            dropouts = [m for m in subs if isinstance(m, nn.modules.dropout._DropoutNd)]
            facts[key] = (norms, all(isinstance(m, PathBatchNorm2d) for m in norms), dropouts)
        return facts[key]

    def run(module: nn.Module, chunks: List[_Chunk], is_last: bool) -> List[_Chunk]:
        norms, packable, dropouts = stage_facts(module)
        if bn == "recalibrate":
            for m in norms:
                m.reset_running_stats()
                m.momentum = momentum
        out = []
        # Training batches the stage's batch norms have counted since their reset (None: not reset).
        counted = 0 if bn == "recalibrate" else None
        for chunk in chunks:
            sizes, training, h, num_recal = chunk.sizes, chunk.training, chunk.rows, chunk.num_recal
            if is_last and not norms and num_recal:
                # The last stage's recalibration outputs feed nothing: without batch norms, skip them.
                if num_recal == len(sizes):
                    continue
                h = h[sum(sizes[:num_recal]):]
                sizes, training, num_recal = sizes[num_recal:], training[num_recal:], 0
            if packable:
                module.eval()
                hooks = [d.register_forward_hook(_dropout_by_slice) for d in dropouts]
                try:
                    with batch_slices(sizes, training, counted), autocast():
                        y = module(h)
                finally:
                    for hook in hooks:
                        hook.remove()
            else:
                parts = []
                for part, train in zip(h.split(list(sizes)), training):
                    module.train(train)
                    with autocast():
                        parts.append(module(part))
                y = parts[0] if len(parts) == 1 else torch.cat(parts)
            if counted is not None:
                counted += sum(training)
            out.append(_Chunk(y, sizes, training, num_recal))
        return out

    def score(chunks: List[_Chunk], members: List[int]) -> None:
        logits = []
        for chunk in chunks:
            logits += list(chunk.rows.split(list(chunk.sizes)))[chunk.num_recal:]
        c, s = 0.0, 0.0
        for out, (_, y) in zip(logits, eval_batches):
            out = out.float()
            # Accumulated per batch in Python floats, as the one-path loop does.
            s += float(F.cross_entropy(out, y, reduction="sum"))
            c += float((out.argmax(1) == y).sum())
        for i in members:
            correct[i], loss_sum[i] = c, s

    def visit(depth: int, members: List[int], chunks: List[_Chunk]) -> None:
        module, layer = stages[depth]
        if layer < 0:
            children = [(module, members)]
        else:
            by_choice: Dict[int, List[int]] = {}
            for i in members:
                by_choice.setdefault(rows[i][layer], []).append(i)
            children = [(module.candidates[choice], group) for choice, group in sorted(by_choice.items())]
        for child, group in children:
            out = run(child, chunks, depth == last)
            if depth == 0 and pack_bytes is not None:
                out = _pack(_unpack(out), rows_per_call, pack_bytes)
            if depth == 0 and memory_budget is not None:
                need = len(stages) * sum(c.rows.numel() * c.rows.element_size() for c in out)
                if need > memory_budget:
                    raise TrieMemoryError(
                        f"the prefix trie would hold about {need / 2**30:.1f} GiB of activations ({len(stages)} "
                        f"stages x {sum(sum(c.sizes) for c in out)} rows), over the budget of "
                        f"{memory_budget / 2**30:.1f} GiB: use fewer or smaller batches, or strategy='passes'")
            if depth == last:
                score(out, group)
            else:
                visit(depth + 1, group, out)

    if rows:
        batches = [(x, True, True) for x in recal_inputs] + [(x, bn == "batch", False) for x, _ in eval_batches]
        chunks = _pack(batches, 1 if pack_bytes is not None else rows_per_call, None)
        visit(0, list(range(len(rows))), chunks)
    return correct, loss_sum, samples
