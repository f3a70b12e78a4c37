"""Few-shot supernets (Zhao et al., "Few-shot Neural Architecture Search", ICML 2021).

One-shot NAS shares one set of weights among all paths; few-shot NAS splits
the search space on one compound edge (Sec. 3: here the K candidate ops of
one searchable layer) into K regions and gives each region its own supernet, a
*sub-supernet*, that keeps only that layer's k-th op. Each sub-supernet starts
as a copy of the trained one-shot supernet (Sec. 3, "transfer learning":
the paper initialises the sub-supernets from the one-shot supernet's weights
instead of training them from scratch).

:class:`FewShotSupernet` holds the K sub-supernets behind the
:class:`SinglePathSupernet` interface, so everything that drives a single-path
supernet (training steps, :func:`pynas.evaluation.evaluate_paths`, the
search strategies) works on it unchanged:

* ``forward(x, path)`` runs the sub-supernet ``path[split_layer]`` selects
  (per-row paths are grouped by that choice; DSNAS-style gates pass through);
* ``forward_paths(x, paths)`` groups the P paths by their split choice, runs
  each group's sub-supernet once (with its prefix sharing) and puts the
  logits back in the order of ``paths``.

Implementation note: each sub-supernet is a full copy, so it also holds the
split layer's other K - 1 candidates. Those never run (no path routed to
sub-supernet k picks another op at the split layer), so they get no gradient
and an optimizer skips them; they cost memory only. Keeping the copies whole
keeps every sub-supernet a drop-in supernet of the space (the space's
``extract_network(subnet, path)`` works on it).
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .choice_layer import GatedChoice
from .path_batch import routed_groups
from .single_path import Column, SinglePathSupernet, _num_groups

__all__ = ["FewShotSupernet"]


class FewShotSupernet(SinglePathSupernet):
    """K sub-supernets, one per choice of searchable layer ``split_layer``, each a copy of ``supernet``.

    ``supernet`` must be built from a space (its ``space`` attribute gives the
    layers and their choices). It is copied, not kept: the copies start equal
    to it and are trained separately from then on.
    """

    def __init__(self, supernet: SinglePathSupernet, *, split_layer: int):
        super().__init__()
        if not isinstance(supernet, SinglePathSupernet):
            raise TypeError(f"supernet must be a SinglePathSupernet, got {type(supernet).__name__}")
        if isinstance(supernet, FewShotSupernet):
            raise TypeError("supernet is already split: give the one-shot supernet")
        space = supernet.space
        if space is None:
            raise TypeError("supernet has no space: few-shot splitting needs the space's layers and choices")
        num_layers = len(space.layer_choices)
        if isinstance(split_layer, bool) or not isinstance(split_layer, int):
            raise TypeError(f"split_layer must be an int, got {type(split_layer).__name__}")
        if not 0 <= split_layer < num_layers:
            raise ValueError(f"split_layer must be in [0, {num_layers}) (a searchable layer of {space.name}), "
                             f"got {split_layer}")
        self.space = space
        self.split_layer = split_layer
        # The memo shares the space object: it is configuration, not state to duplicate.
        copies = [copy.deepcopy(supernet, {id(space): space}) for _ in range(space.num_choices[split_layer])]
        for sub in copies:
            for p in sub.parameters():
                p.grad = None  # a copied .grad would be stale and memory for nothing
        self.subnets = nn.ModuleList(copies)

    @property
    def num_subnets(self) -> int:
        return len(self.subnets)

    def subnet_index(self, path: Union[Sequence[int], Tensor, str]) -> int:
        """Which sub-supernet evaluates ``path`` (its choice at the split layer)."""
        return self.space.check_path(path)[self.split_layer]

    def subnet_for(self, path: Union[Sequence[int], Tensor, str]) -> SinglePathSupernet:
        """The sub-supernet of ``path``: ``space.extract_network(fs.subnet_for(p), p)`` deploys it."""
        return self.subnets[self.subnet_index(path)]

    # -- forward ------------------------------------------------------------------------
    def forward_columns(self, x: Tensor, columns: List[Column]) -> Tensor:
        column = columns[self.split_layer]
        if isinstance(column, GatedChoice):
            return self.subnets[column.index].forward_columns(x, columns)
        if not isinstance(column, Tensor) or column.dim() == 0:
            return self.subnets[int(column)].forward_columns(x, columns)
        return self._forward_rows(x, columns, column.cpu().long())

    def _forward_rows(self, x: Tensor, columns: List[Column], split: Tensor) -> Tensor:
        """Per-row paths: each sub-supernet runs on the rows whose path selects it."""
        present = torch.unique(split).tolist()
        if len(present) == 1:
            return self.subnets[present[0]].forward_columns(x, columns)
        outputs, order = [], []
        for k in present:
            mask = split == k
            rows = mask.nonzero().flatten()
            sub_columns = [c[rows] if isinstance(c, Tensor) else c for c in columns]
            # Inside a path_batch context the rows' batch-norm groups must follow the rows.
            with routed_groups(mask):
                outputs.append(self.subnets[k].forward_columns(x.index_select(0, rows.to(x.device)), sub_columns))
            order.append(rows)
        return _unpermute(torch.cat(outputs), torch.cat(order))

    def partition_paths(self, paths: Tensor) -> List[Tuple[SinglePathSupernet, Tensor]]:
        """``[(sub-supernet, indices of the rows of paths it evaluates)]``, sub-supernets in order."""
        paths = self.space.check_paths(paths)
        split = paths[:, self.split_layer]
        return [(self.subnets[k], (split == k).nonzero().flatten()) for k in torch.unique(split).tolist()]

    def forward_paths(self, x: Tensor, paths: Tensor, *, num_groups: Optional[int] = None) -> Tensor:
        """Logits ``[P, N, classes]``: each sub-supernet runs its paths, results back in ``paths`` order.

        Batch-norm groups: sub-supernet k numbers its own paths' groups below
        its path count (stable for a given ``paths``); its batch norms are its
        own, so groups of different sub-supernets never mix. ``num_groups``
        (default P) is passed on, since per-path statistics were set up for P.
        """
        paths = self.space.check_paths(paths)
        num_groups = _num_groups(num_groups, paths.shape[0])
        split = paths[:, self.split_layer]
        present = torch.unique(split).tolist()
        if len(present) == 1:
            return self.subnets[present[0]].forward_paths(x, paths, num_groups=num_groups)
        outputs, order = [], []
        for k in present:
            index = (split == k).nonzero().flatten()
            outputs.append(self.subnets[k].forward_paths(x, paths[index], num_groups=num_groups))
            order.append(index)
        return _unpermute(torch.cat(outputs), torch.cat(order))

    def extra_repr(self) -> str:
        return f"split_layer={self.split_layer}, subnets={self.num_subnets}"


def _unpermute(values: Tensor, order: Tensor) -> Tensor:
    """Rows of ``values`` are for positions ``order``; put them back in position order (autograd-safe)."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return values.index_select(0, inverse.to(values.device))

