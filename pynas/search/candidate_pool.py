"""GreedyNAS's candidate pool (You et al., CVPR 2020, Sec. 3): the best ``capacity`` paths seen so far.

Keyed by path, each with its latest score (a float, or a tuple of floats
ranked lexicographically); inserting past capacity drops
the worst (ties: the oldest entry). Entries keep their insertion order, so
sampling from the pool by index is reproducible after a resume.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._checks import check_bool, check_int
from ._random import Path

Score = Union[float, Tuple[float, ...]]


class CandidatePool:
    def __init__(self, capacity: int, *, higher_is_better: bool):
        self.capacity = check_int(capacity, "pool_size", minimum=1)
        self.higher_is_better = check_bool(higher_is_better, "higher_is_better")
        self._scores: Dict[Path, Score] = {}

    def __len__(self) -> int:
        return len(self._scores)

    def __contains__(self, path: object) -> bool:
        return path in self._scores

    @property
    def full(self) -> bool:
        return len(self._scores) >= self.capacity

    def paths(self) -> List[Path]:
        """Entries in insertion order (the order sampling indexes)."""
        return list(self._scores)

    def score(self, path: Path) -> Score:
        return self._scores[path]

    def _badness(self, value: Score):
        if isinstance(value, tuple):
            return tuple(-v for v in value) if self.higher_is_better else value
        return -value if self.higher_is_better else value

    def update(self, paths: Sequence[Path], scores: Sequence[Score]) -> None:
        """Insert or refresh ``paths`` with ``scores``, then drop the worst entries past capacity."""
        for path, value in zip(paths, scores):
            self._scores[path] = tuple(float(v) for v in value) if isinstance(value, tuple) else float(value)
        excess = len(self._scores) - self.capacity
        if excess > 0:
            entries = list(self._scores.items())
            # Worst first; among equally bad entries the oldest goes first.
            order = sorted(range(len(entries)), key=lambda i: (self._badness(entries[i][1]), -i), reverse=True)
            for i in order[:excess]:
                del self._scores[entries[i][0]]

    def ranked(self) -> List[Tuple[Path, Score]]:
        """Entries best first (ties: older first)."""
        return sorted(self._scores.items(), key=lambda item: self._badness(item[1]))

    def state_dict(self, num_layers: int) -> dict:
        paths = self.paths()
        return {"paths": torch.tensor(paths, dtype=torch.long).reshape(len(paths), num_layers),
                "scores": torch.tensor([self._scores[p] for p in paths], dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        paths = [tuple(int(v) for v in row) for row in state["paths"].tolist()]
        scores: Tensor = state["scores"]
        self._scores = dict(zip(paths, (tuple(s) if isinstance(s, list) else float(s) for s in scores.tolist())))
