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
batches as in the one-path loop, so the scores are bit-identical to it when
both use the same memory format. Memory is the activations of one
root-to-leaf chain (R + E batches per stage); compute is one stage per trie
node instead of one per path and layer (NAS-Bench-Macro, 128 random paths:
621 layer evaluations instead of 1,024, and the stem once instead of 128 times).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd,)


class TrieMemoryError(MemoryError):
    """The activations of one root-to-leaf chain would exceed the memory budget."""


class _Chunk:
    """Consecutive batches in one tensor: row counts and whether each is normalised in training mode."""

    __slots__ = ("rows", "sizes", "training", "num_recal")

    def __init__(self, rows: Tensor, sizes: Tuple[int, ...], training: Tuple[bool, ...], num_recal: int):
        self.rows, self.sizes, self.training = rows, sizes, training
        self.num_recal = num_recal  # its first num_recal batches are recalibration batches


def _chunks(recal_inputs: List[Tensor], eval_inputs: List[Tensor], rows_per_call: int, recal_training: bool,
            eval_training: bool) -> List[_Chunk]:
    """The batches in order (recalibration first), packed into tensors of at most ``rows_per_call`` rows."""
    batches = [(x, recal_training, True) for x in recal_inputs] + [(x, eval_training, False) for x in eval_inputs]
    groups: List[list] = []
    for batch in batches:
        if groups and sum(int(b[0].shape[0]) for b in groups[-1]) + int(batch[0].shape[0]) <= rows_per_call:
            groups[-1].append(batch)
        else:
            groups.append([batch])
    out = []
    for group in groups:
        rows = group[0][0] if len(group) == 1 else torch.cat([b[0] for b in group])
        out.append(_Chunk(rows, tuple(int(b[0].shape[0]) for b in group), tuple(b[1] for b in group),
                          sum(b[2] for b in group)))
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
    memory_budget: Optional[int] = None,
    autocast: Callable[[], object] = nullcontext,
) -> Tuple[List[float], List[float], int]:
    """Correct counts and summed cross-entropy of each row of ``paths`` (``[P, L]``), and the sample count.

    ``recal_inputs`` are the recalibration batches (used when ``bn ==
    'recalibrate'``), ``eval_batches`` the (inputs, labels) to score on; all
    on the supernet's device in the memory format to run in.

    Batches are packed into tensors of up to ``rows_per_call`` rows (a batch
    larger than that alone) and each stage runs once per tensor: its
    :class:`~pynas.supernets.path_batch.PathBatchNorm2d` layers normalise every
    batch of it separately (``batch_slices``). A stage with another kind of
    batch norm, or with dropout (whose mode differs between recalibration and
    evaluation rows), runs batch by batch instead.

    The walk holds one stage output (all R + E batches) per stage of the
    current chain. ``memory_budget`` (bytes, None: unchecked): after the first
    stage, its output size times the number of stages estimates that; above the
    budget :class:`TrieMemoryError` is raised before any further work.

    The stages' batch-norm buffers and modes are left changed: the caller restores them.
    """
    from pynas.supernets.path_batch import PathBatchNorm2d, batch_slices

    recal_inputs = list(recal_inputs) if bn == "recalibrate" else []
    rows = paths.tolist()
    correct = [0.0] * len(rows)
    loss_sum = [0.0] * len(rows)
    samples = sum(int(y.shape[0]) for _, y in eval_batches)
    last = len(stages) - 1
    facts: Dict[int, Tuple[list, bool]] = {}

    def stage_facts(module: nn.Module) -> Tuple[list, bool]:
        """(its batch norms, whether packed batches can run through it in one call)."""
        key = id(module)
        if key not in facts:
            subs = list(module.modules())
            norms = [m for m in subs if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            packable = (all(isinstance(m, PathBatchNorm2d) for m in norms)
                        and not any(isinstance(m, _MODE_DEPENDENT) for m in subs))
            facts[key] = (norms, packable)
        return facts[key]

    def run(module: nn.Module, chunks: List[_Chunk], is_last: bool) -> List[_Chunk]:
        norms, packable = stage_facts(module)
        if bn == "recalibrate":
            for m in norms:
                m.reset_running_stats()
                m.momentum = momentum
        out = []
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
                with batch_slices(sizes, training), autocast():
                    y = module(h)
            else:
                parts = []
                for part, train in zip(h.split(list(sizes)), training):
                    module.train(train)
                    with autocast():
                        parts.append(module(part))
                y = parts[0] if len(parts) == 1 else torch.cat(parts)
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
        chunks = _chunks(recal_inputs, [x for x, _ in eval_batches], rows_per_call, True, bn == "batch")
        visit(0, list(range(len(rows))), chunks)
    return correct, loss_sum, samples
