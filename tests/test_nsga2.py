"""NSGA-II (pynas.search.nsga2): its sorting primitives against brute force, its search on NAS-Bench-Macro's
ground truth against the true Pareto front, constraints, resume, arguments, and FairNAS's CLI run."""
import io
import json

import pytest
import torch

from pynas.search import NSGA2Search, TabularScore, create_strategy, list_strategies
from pynas.search.nsga2 import crowding_distance, non_dominated_fronts, violation
from pynas.spaces import create_space
from pynas.spaces.path_space import Constraint

from conftest import DATA_DIR
from test_search_strategies import SPACE, TIGHT, Recorder, accuracy_like

MACRO_JSON = DATA_DIR / "nasbench-macro" / "nas-bench-macro_cifar10.json"
needs_macro = pytest.mark.skipif(not MACRO_JSON.is_file(), reason=f"NAS-Bench-Macro table not found at {MACRO_JSON}")


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# -- brute-force references ----------------------------------------------------------------------------
def dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def brute_fronts(points):
    """Front 0: the rows no row dominates; then the same on what is left (the definition)."""
    left = list(range(len(points)))
    fronts = []
    while left:
        front = [i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)]
        fronts.append(front)
        left = [i for i in left if i not in front]
    return fronts


def brute_crowding(points):
    """Per objective: infinity at the extremes, else the gap between the nearest values either side over the span."""
    n, m = len(points), len(points[0])
    out = [0.0] * n
    for k in range(m):
        values = [p[k] for p in points]
        low, high = min(values), max(values)
        for i, v in enumerate(values):
            if v in (low, high):
                out[i] = float("inf")
                continue
            above = min(w for w in values if w > v)
            below = max(w for w in values if w < v)
            out[i] += (above - below) / (high - low)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_non_dominated_sort_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    m = 2 + seed % 3
    # Rounded values: ties and duplicate points happen, as they do for paths of equal cost.
    points = torch.round(torch.rand(60, m, generator=g, dtype=torch.float64) * 6)
    assert non_dominated_fronts(points) == brute_fronts(points.tolist())


@pytest.mark.parametrize("seed", range(6))
def test_crowding_distance_matches_brute_force(seed):
    g = torch.Generator().manual_seed(100 + seed)
    points = torch.rand(25, 2 + seed % 2, generator=g, dtype=torch.float64)  # continuous: no ties
    assert crowding_distance(points).tolist() == pytest.approx(brute_crowding(points.tolist()))


def test_crowding_distance_small_and_flat_fronts():
    assert crowding_distance(torch.tensor([[1.0, 2.0], [2.0, 1.0]])).tolist() == [float("inf")] * 2
    flat = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])  # the second objective adds nothing
    assert crowding_distance(flat).tolist() == [float("inf"), 1.0, float("inf")]
    assert non_dominated_fronts(torch.empty(0, 2, dtype=torch.float64)) == []


def test_violation_is_the_relative_excess_and_zero_inside():
    limit = Constraint(max_flops=200, min_params=10)
    inside = (2, 3, 1, 0, 2, 4)  # 18 params, 180 FLOPs
    assert violation(SPACE, limit, inside) == 0.0
    big = (2, 3, 4, 2, 3, 4)  # 24 params, 240 FLOPs
    assert violation(SPACE, limit, big) == pytest.approx(40 / 200)
    small = (0, 0, 0, 0, 0, 0)  # 6 params
    assert violation(SPACE, limit, small) == pytest.approx(4 / 10)
    assert violation(SPACE, None, big) == 0.0


# -- the true front of NAS-Bench-Macro -------------------------------------------------------------------
def true_front(accuracy, cost):
    """Indices non-dominated in (accuracy up, cost down): a sweep by cost, independent of the module."""
    order = sorted(range(len(accuracy)), key=lambda i: (cost[i], -accuracy[i]))
    front, best = [], -float("inf")
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front


def hypervolume(points, reference):
    """Area dominated by (accuracy, cost) points, up to ``reference`` = (lowest accuracy, highest cost)."""
    area, best = 0.0, reference[0]
    for acc, cost in sorted(points, key=lambda p: (p[1], -p[0])):
        if acc > best and cost < reference[1]:
            area += (acc - best) * (reference[1] - cost)
            best = acc
    return area


@pytest.fixture(scope="module")
def macro():
    from pynas.benchmarks import create_benchmark
    from pynas.ranking.ground_truth import ground_truth

    space = create_space("nasbench-macro")
    truth = ground_truth(space, create_benchmark("nasbench-macro", path=MACRO_JSON))
    accuracy = torch.tensor(truth.values, dtype=torch.float64)
    paths = space.all_paths()
    flops = [float(space.flops(p)) for p in paths.tolist()]
    return space, accuracy, paths, flops


@needs_macro
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_front_approaches_the_true_pareto_front_of_nas_bench_macro(macro, seed):
    """With the defaults (population 50, 20 generations: ~800 of the 6,561 architectures scored), the front
    NSGA-II reports covers the true (accuracy, FLOPs) front's hypervolume to within 0.1% (measured 0.9996 to
    0.9999 for seeds 0-4) and contains most of its 35 points exactly (measured 25-31); random search with the
    same number of evaluations finds at most 5 of them, and 5 generations find fewer than 20."""
    space, accuracy, paths, flops = macro
    acc = accuracy.tolist()
    front = true_front(acc, flops)
    truth = {tuple(paths[i].tolist()) for i in front}
    assert len(truth) == 35
    # Reference: the cheapest front point's accuracy and the costliest path: the hypervolume then measures
    # the trade-off region only, not the large area below every sensible architecture.
    reference = (min(acc[i] for i in front), max(flops))
    best_volume = hypervolume([(acc[i], flops[i]) for i in front], reference)

    def found(result):
        entries = result.extra["pareto_front"]
        volume = hypervolume([(e["score"], e["flops"]) for e in entries], reference)
        return volume / best_volume, len({tuple(e["choices"]) for e in entries} & truth)

    oracle = TabularScore(space, accuracy)
    result = create_strategy("nsga2", space=space, score_fn=oracle, seed=seed).run()
    ratio, hits = found(result)
    assert ratio >= 0.999 and hits >= 20, (ratio, hits)
    assert result.evaluations <= 50 * 21 and oracle.queries == result.evaluations
    assert result.best_score >= sorted(acc)[-10]  # among the 10 most accurate of the 6,561 (measured: top 2)
    short_ratio, short_hits = found(create_strategy("nsga2", space=space, score_fn=oracle, seed=seed,
                                                    generations=5).run())
    assert short_hits < hits and short_ratio <= ratio
    # Random search with the same evaluations, for scale.
    g = torch.Generator().manual_seed(seed)
    sample = torch.randperm(space.size, generator=g)[: result.evaluations].tolist()
    random_hits = len({tuple(paths[sample[i]].tolist()) for i in true_front([acc[j] for j in sample],
                                                                              [flops[j] for j in sample])} & truth)
    assert random_hits < hits // 2


@needs_macro
def test_reported_front_is_the_non_dominated_set_of_everything_scored(macro):
    space, accuracy, _, _ = macro
    result = NSGA2Search(space=space, score_fn=TabularScore(space, accuracy), seed=7, generations=4,
                         objectives=["flops", "params"]).run()
    scored = [(p, s) for p, s in result.history]
    points = [(-s, float(space.flops(p)), float(space.params(p))) for p, s in scored]
    expected = {scored[i][0] for i in brute_fronts(points)[0]}
    front = result.extra["pareto_front"]
    assert {tuple(e["choices"]) for e in front} == expected
    assert [e["score"] for e in front] == sorted((e["score"] for e in front), reverse=True)
    assert result.best_path == tuple(front[0]["choices"]) and result.best_score == front[0]["score"]
    assert result.extra["objectives"] == ["score", "flops", "params"]
    assert all(e["flops"] == space.flops(e["choices"]) and e["params"] == space.params(e["choices"]) for e in front)


# -- constraints, resume, arguments ---------------------------------------------------------------------
def test_constrained_domination_never_scores_a_rejected_path_and_reaches_feasibility():
    recorder = Recorder(constraint=TIGHT)  # asserts every scored path is admitted, and none twice
    heavy = [[2, 3, 4, 2, 3, 4], [2, 3, 4, 2, 2, 4], [1, 3, 4, 2, 3, 4], [2, 2, 4, 2, 3, 4]]  # all rejected
    records = []
    search = NSGA2Search(space=SPACE, score_fn=recorder, constraint=TIGHT, seed=3, population_size=12,
                         generations=10, initial_population=heavy)
    result = search.run(on_generation=records.append)
    assert records[0]["feasible"] < 12 and records[-1]["feasible"] == 12  # rejected paths are bred out
    assert TIGHT.admits(SPACE, result.best_path)
    assert all(TIGHT.admits(SPACE, e["choices"]) for e in result.extra["pareto_front"])
    assert result.evaluations == len(recorder.seen)


def test_population_keeps_the_best_fronts_and_the_first_front_is_non_dominated():
    search = NSGA2Search(space=SPACE, score_fn=accuracy_like, seed=2, population_size=16, generations=3)
    search.run()
    points = [(-search._scores[p], float(SPACE.flops(p))) for p in search.population]
    first = {search.population[i] for i in brute_fronts(points)[0]}
    assert {p for p, r in zip(search.population, search._rank) if r == 0} == first
    assert len(set(search.population)) == 16  # distinct members


def test_nsga2_resumes_exactly_after_a_kill():
    def make():
        return NSGA2Search(space=SPACE, score_fn=accuracy_like, constraint=TIGHT, seed=5, population_size=14,
                           generations=8, objectives=("flops", "params"))

    whole = make().run()
    saved = []

    def kill_at_generation_4(record):
        if record["generation"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make().run(on_generation=kill_at_generation_4, on_state=lambda s: saved.append(roundtrip(s)))
    assert len(saved) == 4
    resumed = make()
    resumed.load_state_dict(saved[-1])
    records = []
    result = resumed.run(on_generation=records.append)
    assert records[0]["generation"] == 4
    assert result.history == whole.history and result.best_path == whole.best_path
    assert result.extra == whole.extra
    other = NSGA2Search(space=SPACE, score_fn=accuracy_like, seed=5, population_size=14, generations=8)
    with pytest.raises(ValueError, match="objectives"):
        other.load_state_dict(saved[-1])


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(population_size=1), ValueError, "population_size"),
    (dict(population_size=4.0), TypeError, "population_size"),
    (dict(generations=-1), ValueError, "generations"),
    (dict(objectives=("latency",)), ValueError, "objectives"),
    (dict(objectives=()), ValueError, "objectives"),
    (dict(objectives=("flops", "flops")), ValueError, "objectives"),
    (dict(objectives=7), TypeError, "objectives"),
    (dict(crossover_prob=1.5), ValueError, "crossover_prob"),
    (dict(mutation_prob="high"), TypeError, "mutation_prob"),
    (dict(initial_population=[[9, 9, 9, 9, 9, 9]]), ValueError, "initial_population"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(constraint={"max_flops": 3}), TypeError, "constraint"),
])
def test_nsga2_bad_arguments_name_the_argument(kwargs, error, name):
    with pytest.raises(error, match=name):
        NSGA2Search(space=SPACE, score_fn=accuracy_like, **kwargs)


def test_nsga2_is_registered_with_documented_defaults():
    assert "nsga2" in list_strategies()
    search = create_strategy("nsga2", space=SPACE, score_fn=accuracy_like)
    assert isinstance(search, NSGA2Search)
    assert (search.population_size, search.generations, search.objectives, search.crossover_prob) == \
        (50, 20, ("flops",), 0.9)
    assert search.mutation_prob == pytest.approx(1 / SPACE.num_layers)


# -- FairNAS: the default strategy, from the CLI -----------------------------------------------------------
def test_fairnas_searches_with_nsga2_and_writes_the_pareto_front(tmp_path):
    from pynas.algorithms import ALGORITHMS
    from pynas.commands.search import run_search
    from test_path_algorithms import TINY_MACRO, _path_config

    assert ALGORITHMS.get("fairnas").strategy == "nsga2"
    cfg = _path_config(tmp_path, "fairnas", epochs=1, search=dict(population_size=6, generations=2))
    result = run_search(cfg, out_dir=tmp_path / "run", progress=False)
    pareto = json.loads((tmp_path / "run" / "pareto.json").read_text())
    path = json.loads((tmp_path / "run" / "path.json").read_text())
    space = create_space("nasbench-macro", num_classes=3, input_size=16, **TINY_MACRO)
    assert pareto["chosen"] == path["path"] == pareto["front"][0]["path"]
    assert pareto["objectives"] == ["score", "flops"] and result["pareto_front_size"] == len(pareto["front"])
    assert all(e["flops"] == space.flops(e["choices"]) for e in pareto["front"])
    # Any registered strategy through search.strategy (SPOS's evolution here): no pareto.json then.
    cfg = _path_config(tmp_path, "fairnas", epochs=1, search=dict(strategy="evolution", population_size=6, top_k=2,
                                                                  generations=2, mutation_num=2, crossover_num=2))
    run_search(cfg, out_dir=tmp_path / "evo", progress=False)
    assert (tmp_path / "evo" / "path.json").is_file() and not (tmp_path / "evo" / "pareto.json").exists()
    cfg["search"] = dict(strategy="annealing")
    with pytest.raises(ValueError, match="search.strategy must be one of"):
        run_search(cfg, out_dir=tmp_path / "bad", progress=False)
