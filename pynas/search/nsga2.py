"""NSGA-II over single paths: accuracy against cost, the search FairNAS runs after supernet training.

FairNAS (Chu et al., ICCV 2021) searches its trained supernet with a
multi-objective evolution over accuracy and cost (multiply-adds, parameters),
NSGA-II (Deb et al., IEEE TEVC 2002) with a reinforced mutation borrowed from
MoreMNAS. The authors' repository (xiaomi-automl/FairNAS, checked at its
newest snapshot) releases only the searched models (``models/FairNAS_{A,B,C}.py``)
and their verification scripts (``verify.py``, ``verify_se.py``,
``transfer_verify.py``): **no search code is released**, and the paper's
search section was not readable here past its abstract. This module is
therefore NSGA-II as Deb et al. publish it, run on paths:

* objectives (all minimised internally): ``-score`` (the batched
  ``score_fn``, higher is better: the supernet's validation accuracy) and the
  space's exact cost of each path, ``objectives`` of ``("flops",)``,
  ``("params",)`` or both;
* fast non-dominated sorting and crowding distance (Deb et al. 2002,
  Sec. III-A and III-B; :func:`non_dominated_fronts`, :func:`crowding_distance`);
* binary tournament on the crowded-comparison order (lower front first, then
  larger crowding distance; a coin flip on a full tie), uniform crossover of the
  two parents into two complementary children with probability
  ``crossover_prob`` (default 0.9, Deb et al. 2002, Sec. VI), then each layer of
  each child re-drawn uniformly with probability ``mutation_prob`` (default
  ``1 / L``, their ``1/n``): the path operators of :mod:`pynas.search._random`;
* elitism: parents and children together (``2N``) are sorted and the best
  ``N`` by front, the last front cut by crowding distance, survive;
* constraints by **constrained domination** (Deb et al. 2002, Sec. V): a
  path the :class:`~pynas.spaces.path_space.Constraint` admits dominates any
  path it rejects; of two rejected paths the smaller violation (the summed
  relative excess over each limit, see :func:`violation`) dominates. A
  rejected path only ever competes on its violation, so it is never scored
  (the contract of :class:`~pynas.search.base.SearchStrategy`); its crowding
  distance is taken over the cost objectives alone.

Generation 0 scores the initial population (``initial_population`` topped up
with uniform random paths, all distinct); generations 1..``generations`` each
breed ``population_size`` distinct children not in the current population
(``10 x`` that many tries, then uniform random paths fill up; a generation
that finds no new path ends the search). A child scored in an earlier
generation costs no evaluation (scores are memoised).

Result. :attr:`SearchResult.extra` ``["pareto_front"]`` is the non-dominated
set of **every admissible path scored** during the search (an archive; the
final population's first front is a subset of it except for paths that
crowding dropped earlier), each with its path, score and costs, sorted by
decreasing score. The chosen path (``best_path``) is the **most accurate
admissible path** (ties: cheaper in the cost objectives, in order; then the
earlier scored), which is always on that front.

Deviations from FairNAS, named: no reinforced (RL-controlled) mutation, plain
uniform mutation instead; no latency objective (the spaces count FLOPs and
parameters, not latency); population and generation counts are not the
paper's (which could not be read here): 50 and 20 by default, SPOS's
evolution budget (1,050 candidates), so the two searches spend alike.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from pynas.spaces.path_space import Constraint, PathSpace

from . import register_strategy
from ._checks import check_float, check_int
from ._random import Path, mutate, rand, randint, uniform_path
from .base import ScoreFn, SearchResult, SearchStrategy

__all__ = ["NSGA2Search", "non_dominated_fronts", "crowding_distance", "violation", "COST_OBJECTIVES"]

COST_OBJECTIVES = ("flops", "params")
BREED_TRIES_PER_CHILD = 10
RANDOM_TRIES_PER_SLOT = 100


# -- the two sorting primitives (minimisation) -------------------------------------------------------
def _check_points(points: Tensor, name: str = "points") -> Tensor:
    if not isinstance(points, Tensor):
        raise TypeError(f"{name} must be a [P, M] tensor of objective values, got {type(points).__name__}")
    if points.dim() != 2 or not points.is_floating_point():
        raise ValueError(f"{name} must be a floating [P, M] tensor, got {points.dtype} of shape {list(points.shape)}")
    if torch.isnan(points).any():
        raise ValueError(f"{name} holds NaN, which cannot be ranked")
    return points


def non_dominated_fronts(points: Tensor) -> List[List[int]]:
    """Pareto fronts of ``points`` ``[P, M]`` (every objective minimised): front 0 is the non-dominated
    rows, front k the rows dominated only by rows of fronts < k; indices ascending within a front.

    Deb et al.'s fast non-dominated sort (2002, Sec. III-A): count how many rows dominate each row,
    peel the rows whose count is zero, decrement the counts of the rows they dominate. The dominance
    matrix is built in one vectorised comparison (O(M P^2) memory; populations here are small).
    """
    points = _check_points(points)
    if points.shape[0] == 0:
        return []
    less_equal = (points[:, None, :] <= points[None, :, :]).all(2)
    less = (points[:, None, :] < points[None, :, :]).any(2)
    dominates = less_equal & less  # [i, j]: row i dominates row j
    count = dominates.sum(0)
    fronts: List[List[int]] = []
    remaining = torch.ones(points.shape[0], dtype=torch.bool)
    while bool(remaining.any()):
        current = (remaining & (count == 0)).nonzero().flatten()
        fronts.append(current.tolist())
        remaining[current] = False
        count = count - dominates[current].sum(0)
    return fronts


def crowding_distance(points: Tensor) -> Tensor:
    """Deb et al.'s crowding distance (2002, Sec. III-B) of each row of one front ``[P, M]``.

    Per objective, rows sorted ascending (stable: ties keep index order); both extremes get infinity,
    an interior row adds ``(next - previous) / (max - min)``. An objective on which all rows agree adds
    nothing. Fronts of one or two rows are all extremes.
    """
    points = _check_points(points)
    count, objectives = points.shape
    distance = torch.zeros(count, dtype=torch.float64)
    if count <= 2:
        return torch.full((count,), float("inf"), dtype=torch.float64)
    values = points.to(torch.float64)
    for m in range(objectives):
        order = torch.sort(values[:, m], stable=True).indices
        column = values[order, m]
        span = float(column[-1] - column[0])
        distance[order[0]] = float("inf")
        distance[order[-1]] = float("inf")
        if span > 0:
            distance[order[1:-1]] += (column[2:] - column[:-2]) / span
    return distance


def violation(space: PathSpace, constraint: Optional[Constraint], path: Path) -> float:
    """How far ``path`` lies outside ``constraint``: the sum, over each limit it breaks, of the excess
    relative to the limit (absolute for a limit of 0). 0 exactly for an admitted path."""
    if constraint is None or not constraint.active:
        return 0.0
    total = 0.0
    for cost_name, low, high in (("flops", constraint.min_flops, constraint.max_flops),
                                 ("params", constraint.min_params, constraint.max_params)):
        if low is None and high is None:
            continue
        value = float(getattr(space, cost_name)(path))
        if high is not None and value > high:
            total += (value - high) / high if high > 0 else value - high
        if low is not None and value < low:
            total += (low - value) / low
    return total


# -- the strategy --------------------------------------------------------------------------------------
@register_strategy("nsga2")
class NSGA2Search(SearchStrategy):
    """NSGA-II over accuracy (``score_fn``, higher is better) and the space's costs; see the module docstring."""

    name = "nsga2"

    def __init__(self, *, space, score_fn: ScoreFn, constraint=None, seed: int = 0, population_size: int = 50,
                 generations: int = 20, objectives: Sequence[str] = ("flops",), crossover_prob: float = 0.9,
                 mutation_prob: Optional[float] = None, initial_population: Optional[Sequence] = None):
        super().__init__(space=space, score_fn=score_fn, constraint=constraint, seed=seed)
        self.population_size = check_int(population_size, "population_size", minimum=2)
        self.generations = check_int(generations, "generations", minimum=0)
        self.objectives = self._check_objectives(objectives)
        self.crossover_prob = check_float(crossover_prob, "crossover_prob", minimum=0.0, maximum=1.0)
        if mutation_prob is None:
            mutation_prob = 1.0 / self.space.num_layers
        self.mutation_prob = check_float(mutation_prob, "mutation_prob", minimum=0.0, maximum=1.0)
        self.initial_population = self._check_initial(initial_population)
        self.population: List[Path] = []
        self._costs: Dict[Path, Tuple[float, ...]] = {}
        self._violations: Dict[Path, float] = {}
        self._rank: List[int] = []
        self._crowding: List[float] = []

    @staticmethod
    def _check_objectives(objectives) -> Tuple[str, ...]:
        if isinstance(objectives, str):
            objectives = (objectives,)
        if not isinstance(objectives, (list, tuple)):
            raise TypeError(f"objectives must be a list of cost names from {list(COST_OBJECTIVES)}, "
                            f"got {type(objectives).__name__}")
        out = tuple(objectives)
        if not out or any(not isinstance(o, str) or o not in COST_OBJECTIVES for o in out) or len(set(out)) < len(out):
            raise ValueError(f"objectives must be distinct cost names from {list(COST_OBJECTIVES)} (accuracy is "
                             f"always the first objective), got {list(out)}")
        return out

    def _check_initial(self, initial) -> List[Path]:
        if initial is None:
            return []
        out: List[Path] = []
        for path in self.paths_from(self.space.check_paths(initial, "initial_population")):
            if path not in out:  # rejected paths stay: constrained domination ranks them by violation
                out.append(path)
        return out[: self.population_size]

    def config(self) -> dict:
        return {**super().config(), "population_size": self.population_size, "generations": self.generations,
                "objectives": list(self.objectives), "crossover_prob": self.crossover_prob,
                "mutation_prob": self.mutation_prob}

    @property
    def done(self) -> bool:
        return self.exhausted or self.generation > self.generations

    # -- objectives ----------------------------------------------------------------------------------
    def costs(self, path: Path) -> Tuple[float, ...]:
        cached = self._costs.get(path)
        if cached is None:
            cached = self._costs[path] = tuple(float(getattr(self.space, name)(path)) for name in self.objectives)
        return cached

    def violation(self, path: Path) -> float:
        cached = self._violations.get(path)
        if cached is None:
            cached = 0.0
            if not self.admits(path):
                # A rejected path must rank below every admitted one, even if its measured excess rounds to 0.
                cached = violation(self.space, self.constraint, path) or float("inf")
            self._violations[path] = cached
        return cached

    def _rank_and_crowd(self, paths: List[Path]) -> Tuple[List[List[int]], List[float]]:
        """Fronts of ``paths`` under constrained domination, and each path's crowding distance in its front."""
        feasible = [i for i, p in enumerate(paths) if self.violation(p) == 0.0]
        fronts: List[List[int]] = []
        if feasible:
            points = torch.tensor([(-self._scores[paths[i]],) + self.costs(paths[i]) for i in feasible],
                                  dtype=torch.float64)
            fronts = [[feasible[j] for j in front] for front in non_dominated_fronts(points)]
        # Rejected paths: one front per violation level, smallest first (a smaller violation dominates).
        by_level: Dict[float, List[int]] = {}
        for i, p in enumerate(paths):
            v = self.violation(p)
            if v > 0.0:
                by_level.setdefault(v, []).append(i)
        fronts += [by_level[v] for v in sorted(by_level)]
        crowding = [0.0] * len(paths)
        for front in fronts:
            if self.violation(paths[front[0]]) == 0.0:
                points = torch.tensor([(-self._scores[paths[i]],) + self.costs(paths[i]) for i in front],
                                      dtype=torch.float64)
            else:
                points = torch.tensor([self.costs(paths[i]) for i in front], dtype=torch.float64)
            for i, d in zip(front, crowding_distance(points).tolist()):
                crowding[i] = d
        return fronts, crowding

    def _set_population(self, population: List[Path]) -> None:
        self.population = population
        fronts, self._crowding = self._rank_and_crowd(population)
        self._rank = [0] * len(population)
        for k, front in enumerate(fronts):
            for i in front:
                self._rank[i] = k

    # -- one generation ------------------------------------------------------------------------------
    def _tournament(self) -> Path:
        """Binary tournament on the crowded-comparison order (Deb et al. 2002, Sec. III-C)."""
        size = len(self.population)
        if size == 1:
            return self.population[0]
        a = randint(self.generator, size)
        b = randint(self.generator, size - 1)
        b = b + 1 if b >= a else b  # two different members
        key_a = (self._rank[a], -self._crowding[a])
        key_b = (self._rank[b], -self._crowding[b])
        if key_a == key_b:
            return self.population[a if rand(self.generator) < 0.5 else b]
        return self.population[a if key_a < key_b else b]

    def _children(self, first: Path, second: Path) -> Tuple[Path, Path]:
        if rand(self.generator) < self.crossover_prob:
            pick = (torch.rand(len(first), generator=self.generator, dtype=torch.float64) < 0.5).tolist()
            one = tuple(a if p else b for a, b, p in zip(first, second, pick))
            two = tuple(b if p else a for a, b, p in zip(first, second, pick))
        else:
            one, two = first, second
        return (mutate(one, self.space, self.generator, self.mutation_prob),
                mutate(two, self.space, self.generator, self.mutation_prob))

    def _offspring(self) -> List[Path]:
        members = set(self.population)
        batch: List[Path] = []
        seen = set()
        for _ in range(BREED_TRIES_PER_CHILD * self.population_size):
            if len(batch) >= self.population_size:
                break
            for child in self._children(self._tournament(), self._tournament()):
                if len(batch) < self.population_size and child not in members and child not in seen:
                    batch.append(child)
                    seen.add(child)
        self._fill_random(batch, members | seen)
        return batch

    def _fill_random(self, batch: List[Path], taken: set) -> None:
        tries = RANDOM_TRIES_PER_SLOT * self.population_size
        while len(batch) < self.population_size and tries > 0:
            tries -= 1
            path = uniform_path(self.space, self.generator)
            if path not in taken:
                batch.append(path)
                taken.add(path)

    def _score_admitted(self, paths: List[Path]) -> None:
        admitted = [p for p in paths if self.admits(p)]
        if admitted:
            self.score(admitted)

    def step(self) -> dict:
        if self.generation == 0:
            batch = list(self.initial_population)
            self._fill_random(batch, set(batch))
            self._score_admitted(batch)
            self._set_population(batch)
        else:
            children = self._offspring()
            if not children:
                self.exhausted = True
                return self.record(new=0)
            self._score_admitted(children)
            union = self.population + children
            fronts, crowding = self._rank_and_crowd(union)
            survivors: List[int] = []
            for front in fronts:
                if len(survivors) + len(front) <= self.population_size:
                    survivors += front
                    continue
                # The last front that fits only partly: the least crowded first (stable: earlier on ties).
                room = self.population_size - len(survivors)
                survivors += sorted(front, key=lambda i: -crowding[i])[:room]
                break
            self._set_population([union[i] for i in survivors])
            batch = children
        feasible = sum(1 for p in self.population if self.violation(p) == 0.0)
        record = self.record(new=len(batch), feasible=feasible, front_size=len(self.pareto_front()),
                             population_front=sum(1 for r in self._rank if r == 0))
        self.generation += 1
        return record

    # -- the answer ----------------------------------------------------------------------------------
    def pareto_front(self) -> List[dict]:
        """Non-dominated admissible paths among everything scored, most accurate first (ties: cheaper)."""
        paths = list(self._scores)
        if not paths:
            return []
        points = torch.tensor([(-self._scores[p],) + self.costs(p) for p in paths], dtype=torch.float64)
        front = non_dominated_fronts(points)[0]
        entries = [paths[i] for i in front]
        entries.sort(key=lambda p: (-self._scores[p],) + self.costs(p))
        return [{"path": self.space.format(p), "choices": list(p), "score": self._scores[p],
                 **{name: value for name, value in zip(self.objectives, self.costs(p))},
                 **{name: float(getattr(self.space, name)(p)) for name in COST_OBJECTIVES
                    if name not in self.objectives}} for p in entries]

    def best(self) -> Optional[Tuple[Path, float]]:
        """The most accurate scored path; ties: cheaper in the objectives in order, then the earlier scored."""
        best = None
        for path, value in self._scores.items():
            key = (-value,) + self.costs(path)
            if best is None or key < best[0]:
                best = (key, path, value)
        return None if best is None else (best[1], best[2])

    def result(self) -> SearchResult:
        out = super().result()
        out.extra["pareto_front"] = self.pareto_front()
        out.extra["objectives"] = ["score"] + list(self.objectives)
        return out

    # -- resume --------------------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {"population": self.paths_tensor(self.population)}

    def _load_extra_state(self, state: dict) -> None:
        population = self.paths_from(state["population"])
        if population:
            self._set_population(population)
        else:
            self.population, self._rank, self._crowding = [], [], []
