"""Path samplers and search strategies on a toy PathSpace with synthetic scores (no network)."""
import copy
import io
import itertools
import math
import time

import pytest
import torch

from pynas.search import (
    EPSSampler,
    EvolutionSearch,
    FairSampler,
    GreedySampler,
    RandomSearch,
    RegularizedEvolution,
    TabularScore,
    UniformSampler,
    create_sampler,
    create_strategy,
    list_samplers,
    list_strategies,
)
from pynas.spaces.path_space import Constraint, PathSpace


class ToySpace(PathSpace):
    """6 layers with 3-5 ops; op c of any layer costs c + 1 params and 10 (c + 1) FLOPs."""

    name = "toy"
    layer_choices = tuple(tuple("abcde"[:k]) for k in (3, 4, 5, 3, 4, 5))

    def params(self, path):
        return sum(v + 1 for v in self.check_path(path))

    def flops(self, path):
        return 10 * self.params(path)


class SquareSpace(ToySpace):
    name = "square"
    layer_choices = tuple(tuple("abcd") for _ in range(5))


class SmallSpace(ToySpace):
    name = "small"
    layer_choices = tuple(tuple("abc") for _ in range(4))


SPACE = ToySpace()
TARGET = torch.tensor([2, 3, 1, 0, 2, 4])  # 180 FLOPs: admitted by TIGHT
SMALL_TARGET = torch.tensor([2, 1, 0, 2])  # for SmallSpace
TIGHT = Constraint(max_flops=200)  # rejects every path whose op indices sum to 15 or more


def wobble(paths):
    """Deterministic per-path noise in [-0.01, 0.01]: ties broken, resume-safe."""
    index = torch.zeros(paths.shape[0], dtype=torch.float64)
    for column in range(paths.shape[1]):
        index = index * 7 + paths[:, column].double()
    return 0.01 * torch.sin(index * 1.7)


def accuracy_like(paths, target=TARGET):
    """Higher is better; the unique optimum is ``target``."""
    return -((paths - target[: paths.shape[1]]) ** 2).sum(1).double() + wobble(paths)


def loss_like(paths, target=TARGET):
    """Lower is better (a validation loss); the unique optimum is ``target``."""
    return -accuracy_like(paths, target)


class Recorder:
    """A score_fn that checks every call: valid int64 [P, L] paths, never scored twice, all admitted."""

    def __init__(self, fn=accuracy_like, space=SPACE, constraint=None, unique=True):
        self.fn, self.space, self.constraint, self.unique = fn, space, constraint, unique
        self.seen = []

    def __call__(self, paths):
        assert paths.dtype == torch.long and paths.dim() == 2 and paths.shape[1] == self.space.num_layers
        for row in paths.tolist():
            if self.constraint is not None:
                assert self.constraint.admits(self.space, row), f"inadmissible path scored: {row}"
            if self.unique:
                assert tuple(row) not in self.seen, f"path scored twice: {row}"
            self.seen.append(tuple(row))
        return self.fn(paths)


def roundtrip(state):
    """Through torch.save/torch.load, as a checkpoint on disk."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # plain tensors and Python values only


# ---------------------------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------------------------
def test_uniform_sampler_covers_every_op_of_every_layer_uniformly():
    sampler = UniformSampler(space=SPACE, seed=1)
    draws = torch.cat([sampler.next_paths() for _ in range(6000)])
    assert draws.shape == (6000, SPACE.num_layers) and draws.dtype == torch.long
    for layer, k in enumerate(SPACE.num_choices):
        counts = torch.bincount(draws[:, layer], minlength=k).double()
        assert counts.numel() == k
        expected, sd = 6000 / k, math.sqrt(6000 * (1 / k) * (1 - 1 / k))
        assert ((counts - expected).abs() < 5 * sd).all(), (layer, counts)


def test_uniform_sampler_constraint_is_optional_and_respected():
    free_sampler = UniformSampler(space=SPACE, seed=2)
    free = torch.cat([free_sampler.next_paths() for _ in range(300)])
    assert any(not TIGHT.admits(SPACE, p) for p in free.tolist())  # SPOS default: unconstrained
    sampler = UniformSampler(space=SPACE, seed=2, constraint=TIGHT)
    assert all(TIGHT.admits(SPACE, sampler.next_paths()[0]) for _ in range(300))


def test_fair_sampler_uses_every_op_exactly_once_per_layer_per_step():
    space = SquareSpace()
    sampler = FairSampler(space=space, seed=3)
    for _ in range(200):
        paths = sampler.next_paths()
        assert paths.shape == (4, space.num_layers)
        for layer in range(space.num_layers):
            assert sorted(paths[:, layer].tolist()) == [0, 1, 2, 3]


def test_fair_sampler_with_unequal_layers_uses_each_op_floor_or_ceil_times():
    sampler = FairSampler(space=SPACE, seed=4)
    m = max(SPACE.num_choices)
    totals = [torch.zeros(k) for k in SPACE.num_choices]
    for _ in range(300):
        paths = sampler.next_paths()
        assert paths.shape == (m, SPACE.num_layers)
        for layer, k in enumerate(SPACE.num_choices):
            counts = torch.bincount(paths[:, layer], minlength=k)
            assert counts.min() >= m // k and counts.max() <= -(-m // k) and counts.sum() == m
            totals[layer] += counts
    for layer, k in enumerate(SPACE.num_choices):  # the extra uses spread evenly over the ops
        share = totals[layer] / totals[layer].sum()
        assert (share - 1 / k).abs().max() < 0.03


def test_greedy_sampler_trains_the_best_k_of_m_one_per_iteration():
    calls = []

    def scored(paths):
        calls.append(paths.clone())
        return loss_like(paths)

    sampler = GreedySampler(space=SPACE, total_steps=100, score_fn=scored, warmup_steps=0, seed=5)
    for refill in range(12):
        queue = []
        for i in range(5):  # k = 5 iterations per draw of m = 10, one path each
            path = sampler.next_paths()
            assert path.shape == (1, SPACE.num_layers) and path.dtype == torch.long
            queue.append(path[0])
            assert len(calls) == refill + 1  # scored once per k iterations, not per iteration
        candidates, scores = sampler.last_candidates, sampler.last_scores
        assert candidates.shape == (10, SPACE.num_layers)  # no constraint: all m kept
        assert torch.allclose(scores, loss_like(candidates))
        order = torch.argsort(scores, stable=True)[:5]  # lower loss is better (higher_is_better=False)
        assert torch.equal(torch.stack(queue), candidates[order])  # best first, in queue order
    assert sampler.refills == 12 and sampler.steps == 60


def test_greedy_sampler_ranks_by_accuracy_and_breaks_ties_by_loss():
    # Column 0 (accuracy, coarse: many ties) decides; column 1 (-loss) orders the tied ones.
    def acc_and_neg_loss(paths):
        accuracy = (paths[:, 0] == TARGET[0]).double()  # 1 for a third of the paths, else 0
        return torch.stack([accuracy, -loss_like(paths)], 1)

    sampler = GreedySampler(space=SPACE, total_steps=10, score_fn=acc_and_neg_loss, higher_is_better=True,
                            warmup_steps=0, num_samples=10, top_k=5, seed=5)
    for _ in range(20):
        queue = torch.cat([sampler.next_paths() for _ in range(5)])
        candidates = sampler.last_candidates
        accuracy, neg_loss = acc_and_neg_loss(candidates).unbind(1)
        expected = sorted(range(10), key=lambda i: (-accuracy[i].item(), -neg_loss[i].item()))[:5]
        assert torch.equal(queue, candidates[expected])
        # The best accuracy wins even over a lower loss: no kept path has lower accuracy than a dropped one.
        kept = set(expected)
        assert min(accuracy[i] for i in kept) >= max([accuracy[i] for i in range(10) if i not in kept] + [0])


def test_greedy_sampler_does_not_filter_during_warm_up():
    scored = Recorder(loss_like, unique=False)
    sampler = GreedySampler(space=SPACE, total_steps=300, score_fn=scored, seed=5)
    assert sampler.warmup_steps == 20  # round(300 * 10,000 / 150,000): the paper's 10K of 150K iterations
    assert sampler.pool_start_step == 20  # the pool schedule starts after warm-up
    warm = torch.cat([sampler.next_paths() for _ in range(20)])
    assert not scored.seen and len(sampler.candidate_pool) == 0 and sampler.refills == 0
    assert len(set(map(tuple, warm.tolist()))) == 20  # uniform draws, not a queue of repeats
    assert not sampler.warming_up
    sampler.next_paths()  # iteration 20: the first draw of m
    assert len(scored.seen) == 10 and sampler.refills == 1
    assert GreedySampler(space=SPACE, total_steps=300, warmup_steps=0).pool_start_step == 0


def test_greedy_pool_admits_every_sampled_path_and_keeps_the_best_n():
    sampler = GreedySampler(space=SPACE, total_steps=10_000, score_fn=loss_like, pool_size=15, warmup_steps=0,
                            seed=6)
    ever_scored = {}
    for _ in range(24):
        for _ in range(5):
            sampler.next_paths()
        for path, score in zip(sampler.last_candidates.tolist(), sampler.last_scores.tolist()):
            ever_scored[tuple(path)] = score
        if len(ever_scored) <= 15:  # not full yet: every sampled path is in, the m - k untrained ones too
            assert set(ever_scored) == set(map(tuple, sampler.pool()[0].tolist()))
    paths, scores = sampler.pool()
    assert paths.shape == (15, SPACE.num_layers) and scores.shape == (15,)
    assert torch.all(scores[1:] >= scores[:-1])  # best (lowest loss) first
    best = sorted(ever_scored.items(), key=lambda item: item[1])[:15]
    assert [tuple(p) for p in paths.tolist()] == [p for p, _ in best]
    assert torch.allclose(scores, torch.tensor([s for _, s in best], dtype=torch.float64))


def test_greedy_pool_keeps_paths_it_never_trained():
    # top_k=1 of m=10: nine of every ten scored paths are never trained, yet all enter the pool.
    sampler = GreedySampler(space=SPACE, total_steps=100, score_fn=loss_like, pool_size=1000, top_k=1,
                            warmup_steps=0, seed=3)
    trained = {tuple(sampler.next_paths()[0].tolist()) for _ in range(3)}
    pool = set(map(tuple, sampler.pool()[0].tolist()))
    assert len(trained) <= 3 and len(pool) >= 25 and trained < pool


def test_greedy_pool_probability_follows_the_linear_schedule():
    sampler = GreedySampler(space=SPACE, total_steps=1000, score_fn=loss_like, warmup_steps=0)
    assert [sampler.pool_probability(s) for s in (0, 250, 500, 1000, 5000)] == pytest.approx([0, .2, .4, .8, .8])
    delayed = GreedySampler(space=SPACE, total_steps=1000, pool_start_step=200, max_pool_prob=0.5,
                            score_fn=loss_like)
    assert [delayed.pool_probability(s) for s in (0, 199, 200, 600, 1000)] == pytest.approx([0, 0, 0, .25, .5])
    # Empirically: once q = 0.8 (total_steps=1), each candidate comes from the pool 80% of the time.
    sampler = GreedySampler(space=SPACE, total_steps=1, score_fn=loss_like, pool_size=200, warmup_steps=0, seed=7)
    sampler.next_paths()
    assert not sampler.last_from_pool.any() and sampler.last_candidates.shape[0] == 10  # q = 0 on step 0
    pooled = []
    for _ in range(300):
        for _ in range(5):
            sampler.next_paths()
        pooled.append(sampler.last_from_pool)
    share = torch.cat(pooled).double().mean().item()
    assert abs(share - 0.8) < 0.03, share


def test_greedy_drops_inadmissible_draws_instead_of_redrawing():
    sampler = GreedySampler(space=SPACE, total_steps=100, score_fn=loss_like, constraint=TIGHT, warmup_steps=0,
                            seed=4)
    sizes = []
    for _ in range(40):
        for _ in range(5):
            sampler.next_paths()
        sizes.append(sampler.last_candidates.shape[0])
        assert all(TIGHT.admits(SPACE, p) for p in sampler.last_candidates.tolist())
    assert min(sizes) < 10 and max(sizes) <= 10  # fewer than m scored when draws fail the constraint
    impossible = GreedySampler(space=SPACE, total_steps=10, score_fn=loss_like, warmup_steps=0,
                               constraint=Constraint(max_flops=1))
    with pytest.raises(RuntimeError, match="no admissible path"):
        impossible.next_paths()


def test_uniform_sampler_is_uniform_over_the_admitted_set():
    space = SmallSpace()  # 81 paths, 3 ops per layer; FLOPs = 10 * (4 + sum of op indices)
    limit = Constraint(min_flops=70, max_flops=80)  # op sums 3 or 4: 16 + 19 = 35 paths
    admitted = [p for p in itertools.product(range(3), repeat=4) if limit.admits(space, p)]
    assert len(admitted) == 35
    sampler = UniformSampler(space=space, constraint=limit, seed=3)
    n = 35 * 200
    counts = {p: 0 for p in admitted}
    for _ in range(n):
        path = tuple(sampler.next_paths()[0].tolist())
        counts[path] += 1  # a KeyError would be an inadmissible path
    chi2 = sum((c - 200) ** 2 / 200 for c in counts.values())
    assert chi2 < 65.2, chi2  # 34 degrees of freedom: the 99.9% quantile is 65.2


def test_uniform_sampler_flops_bins_are_uniform_over_bins_then_paths():
    space = SmallSpace()
    limit = Constraint(min_flops=60, max_flops=100)
    sampler = UniformSampler(space=space, constraint=limit, flops_bins=2, seed=4)
    assert sampler.bin_edges() == [(60.0, 80.0), (80.0, 100.0)]
    # Bin [60, 80]: op sums 2-4 (10 + 16 + 19 = 45 paths); bin [80, 100]: sums 4-6 (19 + 16 + 10 = 45).
    # Sum-4 paths (FLOPs 80) lie on the shared edge and fit both bins, as in SPOS's closed bins.
    n = 9000
    sums = torch.tensor([int(sampler.next_paths()[0].sum()) for _ in range(n)])
    share = {k: (sums == k).double().mean().item() for k in range(2, 7)}
    # P(sum=k) = 1/2 * [k in bin 1] / 45 * count(k) + 1/2 * [k in bin 2] / 45 * count(k)
    count = {k: sum(1 for p in itertools.product(range(3), repeat=4) if sum(p) == k) for k in range(2, 7)}
    expected = {2: 0.5 * count[2] / 45, 3: 0.5 * count[3] / 45, 4: count[4] / 45, 5: 0.5 * count[5] / 45,
                6: 0.5 * count[6] / 45}
    assert sum(expected.values()) == pytest.approx(1.0)
    for k in expected:
        sd = math.sqrt(expected[k] * (1 - expected[k]) / n)
        assert abs(share[k] - expected[k]) < 5 * sd, (k, share[k], expected[k])


def test_uniform_sampler_caps_its_tries():
    impossible = Constraint(max_flops=1)
    with pytest.raises(RuntimeError, match="admits \\(almost\\) no path"):
        UniformSampler(space=SPACE, constraint=impossible, max_tries=50).next_paths()
    fallback = UniformSampler(space=SPACE, constraint=impossible, max_tries=50, exhausted="unconstrained", seed=1)
    assert fallback.next_paths().shape == (1, SPACE.num_layers) and fallback.fallbacks == 1  # SPOS's fallback
    with pytest.raises(ValueError, match="flops_bins"):
        UniformSampler(space=SPACE, constraint=TIGHT, flops_bins=7)  # no min_flops to cut from
    with pytest.raises(ValueError, match="exhausted"):
        UniformSampler(space=SPACE, exhausted="retry")


def test_greedy_stopping_rule_fires_once_the_pool_settles():
    space = SmallSpace()
    sampler = GreedySampler(space=space, total_steps=20, pool_size=10, stop_interval=10, num_samples=6,
                            top_k=3, warmup_steps=0, score_fn=lambda p: loss_like(p, SMALL_TARGET), seed=8)
    changes = []
    for step in range(1, 400):
        sampler.next_paths()
        if step % 10 == 0:
            changes.append(sampler.last_pool_change)
        if sampler.should_stop:
            break
    assert sampler.should_stop and sampler.candidate_pool.full
    assert changes[0] == 1.0 and changes[-1] < 0.08  # the first check sees a new pool; the last, a settled one
    never = GreedySampler(space=space, total_steps=20, pool_size=10, num_samples=6, top_k=3,
                          score_fn=lambda p: loss_like(p, SMALL_TARGET), seed=8)
    for _ in range(100):
        never.next_paths()
    assert not never.should_stop  # stop_interval=None: the rule is off


def test_eps_evolution_adds_children_of_the_best_and_drops_the_oldest():
    sampler = EPSSampler(space=SPACE, score_fn=loss_like, population_size=20, sample_size=8, num_parents=3,
                         mutation_prob=0.0, interval=5, seed=9)
    for _ in range(5):  # trains from the trained group only
        group = set(map(tuple, sampler.trained_group().tolist()))
        assert tuple(sampler.next_paths()[0].tolist()) in group
    before, _ = sampler.population()
    group = sampler.trained_group()
    sampler.next_paths()  # step 5: score the trained group, evolve
    after, scores = sampler.population()
    assert after.shape == (20, SPACE.num_layers)  # the size holds
    assert torch.equal(after[:17], before[3:])  # the 3 oldest went
    best3 = group[torch.argsort(loss_like(group), stable=True)[:3]]
    assert torch.equal(after[17:], best3)  # mutation_prob=0: the children are copies of the 3 best
    assert torch.isnan(scores[17:]).all() and sampler.evolutions == 1
    assert sampler.best()[1] == pytest.approx(loss_like(group).min().item())


def test_eps_sampler_moves_its_population_towards_better_paths():
    sampler = EPSSampler(space=SPACE, score_fn=loss_like, population_size=40, sample_size=16, num_parents=4,
                         mutation_prob=0.3, interval=2, seed=10)
    start = loss_like(sampler.population()[0]).mean()
    for _ in range(400):
        sampler.next_paths()
    paths, _ = sampler.population()
    assert paths.shape[0] == 40 and loss_like(paths).mean() < start - 3


def test_eps_warmup_scores_without_evolving():
    sampler = EPSSampler(space=SPACE, score_fn=loss_like, population_size=10, sample_size=4, num_parents=2,
                         interval=3, warmup_steps=7, seed=11)
    for _ in range(7):
        sampler.next_paths()
    assert sampler.evolutions == 0 and (torch.tensor(sampler.counts) > 0).any()
    sampler.next_paths()  # nothing at step 7 (not a multiple of 3)
    sampler.next_paths()  # step 8
    sampler.next_paths()  # step 9 >= warm-up: evolve
    assert sampler.evolutions == 1


def _make_sampler(kind, **extra):
    common = dict(space=SPACE, seed=12)
    if kind == "uniform":
        return UniformSampler(constraint=TIGHT, **common)
    if kind == "uniform-bins":
        return UniformSampler(constraint=Constraint(min_flops=120, max_flops=200), flops_bins=4, max_tries=20,
                              exhausted="unconstrained", **common)
    if kind == "fair":
        return FairSampler(**common)
    if kind == "greedy":
        # 50 steps: 3 of warm-up, then a queue of k=5 per draw; 37 stops mid-queue, so the queue is resumed too.
        return GreedySampler(total_steps=50, pool_size=12, stop_interval=7, score_fn=loss_like, **common)
    return EPSSampler(population_size=16, sample_size=6, num_parents=2, interval=4, score_fn=loss_like, **common)


@pytest.mark.parametrize("kind", ["uniform", "uniform-bins", "fair", "greedy", "eps"])
def test_sampler_resumes_exactly_from_its_state_dict(kind):
    sampler = _make_sampler(kind)
    for _ in range(37):
        sampler.next_paths()
    state = roundtrip(copy.deepcopy(sampler.state_dict()))
    expected = [sampler.next_paths() for _ in range(40)]
    resumed = _make_sampler(kind)
    resumed.load_state_dict(state)
    got = [resumed.next_paths() for _ in range(40)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert resumed.steps == sampler.steps == 77
    if kind == "greedy":
        assert all(torch.equal(a, b) for a, b in zip(sampler.pool(), resumed.pool()))
        assert sampler.should_stop == resumed.should_stop
        assert sampler.queue == resumed.queue and sampler.refills == resumed.refills
    if kind == "eps":
        assert torch.equal(sampler.population()[0], resumed.population()[0])


def test_greedy_and_eps_never_score_an_inadmissible_path():
    greedy = GreedySampler(space=SPACE, total_steps=30, constraint=TIGHT, seed=13, warmup_steps=0,
                           score_fn=Recorder(loss_like, constraint=TIGHT, unique=False))
    eps = EPSSampler(space=SPACE, constraint=TIGHT, population_size=20, sample_size=8, num_parents=3,
                     interval=3, seed=13, score_fn=Recorder(loss_like, constraint=TIGHT, unique=False))
    for _ in range(60):
        assert all(TIGHT.admits(SPACE, p) for p in greedy.next_paths().tolist())
        assert TIGHT.admits(SPACE, eps.next_paths()[0])
    assert greedy.score_fn.seen and eps.score_fn.seen


def test_score_fn_can_be_given_per_call_and_is_required():
    sampler = GreedySampler(space=SPACE, total_steps=10, warmup_steps=0)
    with pytest.raises(ValueError, match="score_fn"):
        sampler.next_paths()
    assert sampler.next_paths(score_fn=loss_like).shape == (1, SPACE.num_layers)
    eps = EPSSampler(space=SPACE, population_size=8, sample_size=4, num_parents=2, interval=2)
    eps.next_paths()
    eps.next_paths()  # no scoring before step 2
    with pytest.raises(ValueError, match="score_fn"):
        eps.next_paths()


def test_sampler_registry():
    assert list_samplers() == ["eps", "fair", "greedy", "uniform"]
    assert isinstance(create_sampler("fair", space=SPACE), FairSampler)
    with pytest.raises(ValueError, match="unknown path sampler"):
        create_sampler("nope", space=SPACE)


@pytest.mark.parametrize("cls, kwargs, name", [
    (UniformSampler, dict(space="toy"), "space"),
    (UniformSampler, dict(space=SPACE, seed=-1), "seed"),
    (UniformSampler, dict(space=SPACE, seed=1.5), "seed"),
    (UniformSampler, dict(space=SPACE, constraint={"max_flops": 1}), "constraint"),
    (FairSampler, dict(space=SPACE, seed="0"), "seed"),
    (GreedySampler, dict(space=SPACE, total_steps=0), "total_steps"),
    (GreedySampler, dict(space=SPACE, total_steps=10, top_k=11), "top_k"),
    (GreedySampler, dict(space=SPACE, total_steps=10, num_samples=0), "num_samples"),
    (GreedySampler, dict(space=SPACE, total_steps=10, pool_size=0), "pool_size"),
    (GreedySampler, dict(space=SPACE, total_steps=10, max_pool_prob=1.5), "max_pool_prob"),
    (GreedySampler, dict(space=SPACE, total_steps=10, pool_start_step=11), "pool_start_step"),
    (GreedySampler, dict(space=SPACE, total_steps=10, warmup_steps=11), "warmup_steps"),
    (GreedySampler, dict(space=SPACE, total_steps=10, warmup_steps=-1), "warmup_steps"),
    (UniformSampler, dict(space=SPACE, flops_bins=0), "flops_bins"),
    (UniformSampler, dict(space=SPACE, max_tries=0), "max_tries"),
    (GreedySampler, dict(space=SPACE, total_steps=10, stop_interval=0), "stop_interval"),
    (GreedySampler, dict(space=SPACE, total_steps=10, higher_is_better=1), "higher_is_better"),
    (GreedySampler, dict(space=SPACE, total_steps=10, score_fn="loss"), "score_fn"),
    (EPSSampler, dict(space=SPACE, population_size=4, sample_size=5), "sample_size"),
    (EPSSampler, dict(space=SPACE, num_parents=65), "num_parents"),
    (EPSSampler, dict(space=SPACE, mutation_prob=-0.1), "mutation_prob"),
    (EPSSampler, dict(space=SPACE, interval=0), "interval"),
    (EPSSampler, dict(space=SPACE, score_momentum=2), "score_momentum"),
])
def test_sampler_bad_arguments_name_the_argument(cls, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        cls(**kwargs)


def test_sampler_refuses_a_state_from_other_arguments():
    sampler = _make_sampler("greedy")
    sampler.next_paths()
    other = GreedySampler(space=SPACE, total_steps=50, pool_size=13, stop_interval=7, score_fn=loss_like, seed=12)
    with pytest.raises(ValueError, match="pool_size"):
        other.load_state_dict(sampler.state_dict())
    with pytest.raises(ValueError, match="sampler 'greedy', not 'eps'"):
        _make_sampler("eps").load_state_dict(sampler.state_dict())


def test_bad_score_fn_output_is_a_clear_error():
    sampler = GreedySampler(space=SPACE, total_steps=10, warmup_steps=0,
                            score_fn=lambda p: torch.zeros(p.shape[0] + 1))
    with pytest.raises(ValueError, match=r"score_fn must return a tensor of shape \[\d+\] or \[\d+, K\]"):
        sampler.next_paths()
    nan = GreedySampler(space=SPACE, total_steps=10, warmup_steps=0,
                        score_fn=lambda p: torch.full((p.shape[0],), math.nan))
    with pytest.raises(ValueError, match="score_fn returned NaN"):
        nan.next_paths()


# ---------------------------------------------------------------------------------------------
# search strategies
# ---------------------------------------------------------------------------------------------
def _make_strategy(name, score_fn, *, constraint=None, seed=0, space=SPACE):
    options = {
        "evolution": dict(population_size=20, top_k=5, generations=15, mutation_num=8, crossover_num=8),
        "random": dict(num_samples=300, batch_size=40),
        "regularized-evolution": dict(budget=250),
    }[name]
    return create_strategy(name, space=space, score_fn=score_fn, constraint=constraint, seed=seed, **options)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evolution_with_spos_defaults_finds_the_optimum(seed):
    recorder = Recorder(constraint=TIGHT)
    result = EvolutionSearch(space=SPACE, score_fn=recorder, constraint=TIGHT, seed=seed).run()
    assert result.best_path == tuple(TARGET.tolist())
    assert result.best_score == pytest.approx(accuracy_like(TARGET[None])[0].item())
    assert result.evaluations == len(recorder.seen) == len(result.history) <= 50 * 21
    assert [p for p, _ in result.history] == recorder.seen  # history in evaluation order


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_regularized_evolution_finds_the_optimum_within_budget(seed):
    recorder = Recorder(constraint=TIGHT)
    search = RegularizedEvolution(space=SPACE, score_fn=recorder, constraint=TIGHT, seed=seed, budget=400)
    result = search.run()
    assert result.best_path == tuple(TARGET.tolist())
    assert result.evaluations == len(recorder.seen) <= 400
    assert len(search.population) == 10


def test_random_search_covering_a_small_space_finds_its_optimum():
    space = SmallSpace()
    target = SMALL_TARGET
    recorder = Recorder(lambda p: accuracy_like(p, target), space=space)
    result = RandomSearch(space=space, score_fn=recorder, num_samples=space.size, batch_size=20, seed=3).run()
    assert result.evaluations == space.size == len(set(recorder.seen))
    assert result.best_path == tuple(target.tolist())
    short = RandomSearch(space=space, score_fn=lambda p: accuracy_like(p, target), num_samples=30).run()
    assert short.evaluations == 30 and short.best_score == max(s for _, s in short.history)


def test_random_search_reranks_its_top_paths_li_and_talwalkar_style():
    proxy = Recorder()
    full_calls = []

    def full(paths):  # a different, "full validation" score: prefers the paths closest to all-zeros
        full_calls.append(paths.clone())
        return -paths.sum(1).double()

    result = RandomSearch(space=SPACE, score_fn=proxy, num_samples=200, rerank_fn=full, rerank_top=10, seed=4).run()
    assert len(full_calls) == 1 and full_calls[0].shape == (10, SPACE.num_layers)
    top10 = [p for p, _ in sorted(zip(proxy.seen, accuracy_like(torch.tensor(proxy.seen)).tolist()),
                                  key=lambda item: -item[1])[:10]]
    assert [tuple(p) for p in full_calls[0].tolist()] == top10
    assert result.best_path == min(top10, key=sum) and result.best_score == -min(sum(p) for p in top10)
    assert len(result.extra["rerank"]) == 10 and result.evaluations == 200


@pytest.mark.parametrize("name", ["evolution", "random", "regularized-evolution"])
def test_strategies_respect_the_constraint_and_score_each_path_once(name):
    recorder = Recorder(constraint=TIGHT)  # asserts: admitted, never twice
    result = _make_strategy(name, recorder, constraint=TIGHT).run()
    assert recorder.seen and TIGHT.admits(SPACE, result.best_path)
    assert result.evaluations == len(recorder.seen)
    assert any(not TIGHT.admits(SPACE, p) for p in SPACE.all_paths().tolist())  # the constraint binds


@pytest.mark.parametrize("name", ["evolution", "random", "regularized-evolution"])
def test_strategies_resume_exactly_after_a_kill(name):
    whole = _make_strategy(name, accuracy_like, constraint=TIGHT, seed=5).run()

    saved = []

    def kill_at_generation_4(record):
        if record["generation"] == 4:
            raise KeyboardInterrupt  # the process dies mid-search: generation 4 is never checkpointed

    first = _make_strategy(name, accuracy_like, constraint=TIGHT, seed=5)
    with pytest.raises(KeyboardInterrupt):
        first.run(on_generation=kill_at_generation_4, on_state=lambda s: saved.append(roundtrip(s)))
    assert len(saved) == 4
    records = []
    resumed = _make_strategy(name, accuracy_like, constraint=TIGHT, seed=5)
    resumed.load_state_dict(saved[-1])
    result = resumed.run(on_generation=records.append)
    assert records[0]["generation"] == 4
    assert result.best_path == whole.best_path and result.best_score == whole.best_score
    assert result.history == whole.history and result.evaluations == whole.evaluations


def test_evolution_starts_from_a_given_population_greedynas_style():
    sampler = GreedySampler(space=SPACE, total_steps=30, pool_size=40, score_fn=loss_like, warmup_steps=0, seed=14)
    for _ in range(30):
        sampler.next_paths()
    pool_paths, _ = sampler.pool()
    bad = torch.tensor([[2, 3, 4, 2, 3, 4]])  # inadmissible under TIGHT: must never be scored
    initial = torch.cat([bad, pool_paths, pool_paths[:5]])
    recorder = Recorder(constraint=TIGHT)
    search = EvolutionSearch(space=SPACE, score_fn=recorder, constraint=TIGHT, initial_population=initial,
                             population_size=50, generations=3)
    search.step()
    admitted = [tuple(p) for p in pool_paths.tolist() if TIGHT.admits(SPACE, p)]
    assert recorder.seen[: len(admitted)] == admitted and len(recorder.seen) == 50
    assert search.run().best_score >= max(s for _, s in zip(admitted, accuracy_like(torch.tensor(admitted))))


def test_evolution_generations_follow_spos_counts():
    recorder = Recorder(fn=lambda p: torch.rand(p.shape[0], dtype=torch.float64), unique=True)
    records = []
    result = EvolutionSearch(space=SPACE, score_fn=recorder, seed=6).run(on_generation=records.append)
    assert [r["generation"] for r in records] == list(range(21))  # initial population + 20 generations
    assert result.evaluations == 1050 and all(r["new"] == 50 for r in records)
    assert set(records[-1]) >= {"generation", "evaluations", "best_score", "best_path", "new"}


def test_regularized_evolution_in_tabular_mode_is_cheap():
    table = TabularScore(SPACE, accuracy_like(SPACE.all_paths()))
    path = torch.tensor([[1, 2, 3, 0, 1, 2]])
    assert table(path).item() == accuracy_like(path).item() and table.queries == 1
    table.queries = 0
    start = time.perf_counter()
    results = [RegularizedEvolution(space=SPACE, score_fn=table, seed=seed).run() for seed in range(50)]
    seconds = time.perf_counter() - start
    assert all(r.evaluations == 100 for r in results) and table.queries == 50 * 100
    assert seconds < 10, seconds  # about 0.1 s on one core; loose for a shared machine
    assert sum(r.best_path == tuple(TARGET.tolist()) for r in results) >= 10


def test_a_search_with_no_admissible_path_says_so():
    impossible = Constraint(max_flops=10)  # every path costs at least 60
    with pytest.raises(RuntimeError, match="scored no path"):
        RandomSearch(space=SPACE, score_fn=accuracy_like, constraint=impossible, num_samples=5).run()


def test_strategy_registry():
    assert list_strategies() == ["evolution", "nsga2", "random", "regularized-evolution"]
    assert isinstance(_make_strategy("regularized-evolution", accuracy_like), RegularizedEvolution)
    with pytest.raises(ValueError, match="unknown search strategy"):
        create_strategy("bayesian", space=SPACE, score_fn=accuracy_like)


@pytest.mark.parametrize("cls, kwargs, name", [
    (EvolutionSearch, dict(space=None), "space"),
    (EvolutionSearch, dict(score_fn=None), "score_fn"),
    (EvolutionSearch, dict(constraint="flops<200"), "constraint"),
    (EvolutionSearch, dict(seed=-3), "seed"),
    (EvolutionSearch, dict(population_size=0), "population_size"),
    (EvolutionSearch, dict(top_k=0), "top_k"),
    (EvolutionSearch, dict(generations=-1), "generations"),
    (EvolutionSearch, dict(mutation_num=30, crossover_num=30), "mutation_num"),
    (EvolutionSearch, dict(mutation_prob=1.1), "mutation_prob"),
    (EvolutionSearch, dict(initial_population=[[0, 0, 0]]), "initial_population"),
    (EvolutionSearch, dict(initial_population=[[0, 0, 9, 0, 0, 0]]), "initial_population"),
    (RandomSearch, dict(num_samples=0), "num_samples"),
    (RandomSearch, dict(batch_size=2.0), "batch_size"),
    (RandomSearch, dict(rerank_fn=3), "rerank_fn"),
    (RandomSearch, dict(rerank_top=0), "rerank_top"),
    (RegularizedEvolution, dict(population_size=0), "population_size"),
    (RegularizedEvolution, dict(sample_size=True), "sample_size"),
    (RegularizedEvolution, dict(budget=0), "budget"),
    (RegularizedEvolution, dict(max_cycles=0), "max_cycles"),
])
def test_strategy_bad_arguments_name_the_argument(cls, kwargs, name):
    arguments = dict(space=SPACE, score_fn=accuracy_like)
    arguments.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=name):
        cls(**arguments)


def test_strategy_run_and_state_errors_are_clear():
    search = _make_strategy("evolution", accuracy_like)
    with pytest.raises(TypeError, match="on_generation"):
        search.run(on_generation="print")
    other = create_strategy("evolution", space=SPACE, score_fn=accuracy_like, population_size=21, top_k=5,
                            generations=15, mutation_num=8, crossover_num=8)
    with pytest.raises(ValueError, match="population_size: saved 20, now 21"):
        other.load_state_dict(search.state_dict())
    with pytest.raises(ValueError, match="strategy 'evolution', not 'random'"):
        _make_strategy("random", accuracy_like).load_state_dict(search.state_dict())
    with pytest.raises(TypeError, match="state must be a dict"):
        search.load_state_dict([1, 2])
    broken = RandomSearch(space=SPACE, score_fn=lambda p: p.sum(1).float()[:, None], num_samples=5)
    with pytest.raises(ValueError, match=r"score_fn must return a tensor of shape \[5\]"):
        broken.run()
