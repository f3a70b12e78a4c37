"""Single-path supernets: every searchable layer is a :class:`ChoiceLayer`.

``supernet(x, path)`` runs a path: ``path`` is L ints (the whole batch follows
it) or a ``[N, L]`` integer tensor (row i follows ``path[i]``; rows are routed
per layer, see :mod:`pynas.supernets.choice_layer`). Subclasses implement
``forward_columns(x, columns)`` where ``columns[l]`` is layer l's choice, an
int or a ``[N]`` tensor; :class:`ChainSupernet` is the stem -> layers -> head
chain of the SPOS, GreedyNAS and NAS-Bench-Macro spaces.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .choice_layer import ChoiceLayer, GatedChoice
from .path_batch import convert_to_path_batch_norm, path_batch

__all__ = ["SinglePathSupernet", "ChainSupernet"]

Column = Union[int, Tensor]


def _num_groups(num_groups: Optional[int], num_paths: int) -> int:
    if num_groups is None:
        return num_paths
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < num_paths:
        raise ValueError(f"num_groups must be an int >= the number of paths ({num_paths}), got {num_groups!r}")
    return num_groups


class SinglePathSupernet(nn.Module):
    #: the space this supernet was built from (set by the space's build_supernet)
    space: Any = None

    def choice_layers(self) -> List[ChoiceLayer]:
        """Searchable layers in path order (one per path entry, unless a subclass shares them)."""
        return [m for m in self.modules() if isinstance(m, ChoiceLayer)]

    @property
    def num_layers(self) -> int:
        return len(self.space.layer_choices) if self.space is not None else len(self.choice_layers())

    def weight_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def columns(self, x: Tensor, path: Union[Sequence[int], Tensor]) -> List[Column]:
        num_layers = self.num_layers
        if isinstance(path, Tensor) and path.dim() == 2:
            if path.shape != (x.shape[0], num_layers):
                raise ValueError(f"a per-row path must have shape [N, L] = [{x.shape[0]}, {num_layers}], "
                                 f"got {list(path.shape)}")
            if path.is_floating_point():
                raise TypeError(f"path must be an integer tensor, got {path.dtype}")
            rows = path.cpu()
            return [rows[:, layer] for layer in range(num_layers)]
        if self.space is not None:
            return list(self.space.check_path(path))
        values = path.tolist() if isinstance(path, Tensor) else list(path)
        if len(values) != num_layers:
            raise ValueError(f"path must have {num_layers} entries, got {len(values)}")
        return values

    def forward(self, x: Tensor, path: Union[Sequence[int], Tensor], *, gates: Optional[Tensor] = None) -> Tensor:
        """Run ``path``; ``gates`` (``[L]``, optional) multiplies each chosen op's output (DSNAS)."""
        columns = self.columns(x, path)
        if gates is not None:
            if not isinstance(gates, Tensor) or tuple(gates.shape) != (len(columns),):
                raise ValueError(f"gates must be a tensor of shape [L] = [{len(columns)}], "
                                 f"got {getattr(gates, 'shape', type(gates).__name__)}")
            if any(isinstance(c, Tensor) for c in columns):
                raise ValueError("gates apply to one path for the whole batch, not to per-row paths")
            columns = [GatedChoice(int(c), gates[layer]) for layer, c in enumerate(columns)]
        return self.forward_columns(x, columns)

    def forward_columns(self, x: Tensor, columns: List[Column]) -> Tensor:
        raise NotImplementedError

    def forward_paths(self, x: Tensor, paths: Tensor, *, num_groups: Optional[int] = None) -> Tensor:
        """Logits ``[P, N, classes]`` of P paths (``[P, L]``) on one batch ``x`` ``[N, ...]``, in one pass.

        Row ``p * N + i`` of the replicated batch follows path p; batch norms
        keep per-path statistics (group p). Subclasses may share work between
        paths (see :meth:`ChainSupernet.forward_paths`) but must give the same
        groups semantics: group ids below P, stable for a given ``paths``.

        ``num_groups`` (default P) is the number of batch-norm groups the
        per-path statistics were set up for; a wrapper that hands this supernet
        only some of its paths (``FewShotSupernet``) passes its own total.
        """
        num_paths, n = paths.shape[0], x.shape[0]
        num_groups = _num_groups(num_groups, num_paths)
        row_paths = torch.arange(num_paths).repeat_interleave(n)
        rows = paths.cpu().long()[row_paths]
        with path_batch(row_paths, num_groups):
            out = self.forward_columns(x.repeat((num_paths,) + (1,) * (x.dim() - 1)),
                                       [rows[:, layer] for layer in range(rows.shape[1])])
        return out.view(num_paths, n, *out.shape[1:])


def _select_blocks(h: Tensor, blocks: Tensor, n: int) -> Tensor:
    """Rows ``[b * n, (b + 1) * n)`` of h for each b in ``blocks``, concatenated, in h's layout: a
    channels-last h is gathered as NHWC (gathering its 5-D [P, n, C, H, W] view would return NCHW)."""
    if h.dim() == 4 and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last):
        nhwc = h.permute(0, 2, 3, 1)
        picked = nhwc.view(-1, n, *nhwc.shape[1:]).index_select(0, blocks).flatten(0, 1)
        return picked.permute(0, 3, 1, 2)
    return h.view(-1, n, *h.shape[1:]).index_select(0, blocks).flatten(0, 1)


class ChainSupernet(SinglePathSupernet):
    """``head(blocks(stem(x)))`` where ``blocks`` mixes fixed modules and ChoiceLayers (in path order).

    Every ``nn.BatchNorm2d`` becomes a :class:`PathBatchNorm2d`, so many paths
    can share one batch.
    """

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], head: nn.Module, *, space: Any = None):
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.space = space
        self._choice_index = []
        count = 0
        for block in self.blocks:
            if isinstance(block, ChoiceLayer):
                self._choice_index.append(count)
                count += 1
            else:
                self._choice_index.append(-1)
        if space is not None and count != len(space.layer_choices):
            raise ValueError(f"{count} choice layers for a space of {len(space.layer_choices)} layers")
        convert_to_path_batch_norm(self)

    def prefix_stages(self) -> List[Tuple[nn.Module, int]]:
        """The chain as ``(module, layer)`` stages: the stem, each block, the head.

        ``layer`` is the path entry that picks one of a ChoiceLayer's candidates,
        -1 for a fixed stage. :func:`pynas.evaluation.evaluate_paths` walks the
        trie of the paths' prefixes over these stages.
        """
        return [(self.stem, -1), *zip(self.blocks, self._choice_index), (self.head, -1)]

    def forward_columns(self, x: Tensor, columns: List[Column]) -> Tensor:
        x = self.stem(x)
        for block, index in zip(self.blocks, self._choice_index):
            x = block(x) if index < 0 else block(x, columns[index])
        return self.head(x)

    def forward_paths(self, x: Tensor, paths: Tensor, *, num_groups: Optional[int] = None) -> Tensor:
        """Logits ``[P, N, classes]`` of P paths, computing each distinct path prefix once.

        Paths that agree on their first l choices compute the same activations
        up to layer l (their batch norms see the same rows, so even per-path
        statistics agree). Rows are therefore (sample, prefix) pairs: the stem
        runs once on the batch, and each choice layer expands only the
        prefixes that split there. For 128 random paths of NAS-Bench-Macro
        (3 choices a layer) the first four layers run 3 + 9 + 27 + ~60 prefixes
        instead of 4 x 128. Batch-norm group ids are prefix ids, stable for a
        given ``paths`` (so recalibration and evaluation batches agree) and
        below P. ``num_groups``: see :meth:`SinglePathSupernet.forward_paths`.
        """
        paths = paths.cpu().long()
        num_paths, n = paths.shape[0], x.shape[0]
        num_groups = _num_groups(num_groups, num_paths)
        group_of_path = torch.zeros(num_paths, dtype=torch.long)
        num_prefixes = 1
        with path_batch(torch.zeros(n, dtype=torch.long), num_groups):
            h = self.stem(x)
        for block, index in zip(self.blocks, self._choice_index):
            if index < 0:
                with path_batch(torch.arange(num_prefixes).repeat_interleave(n), num_groups):
                    h = block(h)
                continue
            k = len(block)
            key = group_of_path * k + paths[:, index]
            prefixes, group_of_path = torch.unique(key, sorted=True, return_inverse=True)
            parent, choice = prefixes // k, prefixes % k
            if prefixes.numel() != num_prefixes or not torch.equal(parent, torch.arange(num_prefixes)):
                h = _select_blocks(h, parent.to(h.device), n)
            num_prefixes = prefixes.numel()
            with path_batch(torch.arange(num_prefixes).repeat_interleave(n), num_groups):
                h = block(h, choice.repeat_interleave(n))
        with path_batch(torch.arange(num_prefixes).repeat_interleave(n), num_groups):
            out = self.head(h)
        out = out.view(num_prefixes, n, *out.shape[1:])
        return out.index_select(0, group_of_path.to(out.device))
