"""Space-agnostic search over single-path spaces (:class:`~pynas.spaces.path_space.PathSpace`).

Two kinds, each found by name through a registry:

* training-time **samplers** (which paths to train each supernet step):
  ``uniform`` (SPOS, RandomNAS), ``fair`` (FairNAS), ``greedy`` (GreedyNAS),
  ``eps`` (EPS) -- :mod:`pynas.search.samplers`;
* post-training **search strategies** (which path is best under a scorer and a
  constraint): ``evolution`` (SPOS), ``random`` (RandomNAS),
  ``regularized-evolution`` (Real et al.; NAS-Bench-201's REA), ``nsga2`` (multi-objective:
  accuracy against FLOPs/params, FairNAS).

    from pynas.search import create_strategy
    result = create_strategy("evolution", space=space, score_fn=score, constraint=Constraint(max_flops=330e6),
                             seed=0).run()
    result.best_path, result.best_score, result.evaluations
"""
from __future__ import annotations

from typing import Any, Callable, List

from pynas.registry import Registry

STRATEGIES = Registry("search strategy")
SAMPLERS = Registry("path sampler")


def register_strategy(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return STRATEGIES.register(name)


def create_strategy(name: str, **kwargs: Any) -> Any:
    return STRATEGIES.create(name, **kwargs)


def list_strategies() -> List[str]:
    return STRATEGIES.names()


def register_sampler(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return SAMPLERS.register(name)


def create_sampler(name: str, **kwargs: Any) -> Any:
    return SAMPLERS.create(name, **kwargs)


def list_samplers() -> List[str]:
    return SAMPLERS.names()


# Imported after the registries exist: these modules register themselves on import.
from .base import SearchResult, SearchStrategy  # noqa: E402
from .candidate_pool import CandidatePool  # noqa: E402
from .evolution import EvolutionSearch  # noqa: E402
from .nsga2 import NSGA2Search  # noqa: E402
from .random_search import RandomSearch  # noqa: E402
from .regularized_evolution import RegularizedEvolution  # noqa: E402
from .samplers import EPSSampler, FairSampler, GreedySampler, PathSampler, UniformSampler  # noqa: E402
from .tabular import TabularScore  # noqa: E402

__all__ = [
    "STRATEGIES", "SAMPLERS", "register_strategy", "create_strategy", "list_strategies", "register_sampler",
    "create_sampler", "list_samplers", "SearchResult", "SearchStrategy", "EvolutionSearch", "RandomSearch",
    "RegularizedEvolution", "NSGA2Search", "PathSampler", "UniformSampler", "FairSampler", "GreedySampler",
    "EPSSampler",
    "CandidatePool", "TabularScore",
]
