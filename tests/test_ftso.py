"""FTSO's topology stage follows dL/dbeta, not an initialisation draw (issue 13), on real Fashion-MNIST."""
import copy
import itertools
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pynas.algorithms import create_algorithm
from pynas.algorithms.ftso import node_groups
from pynas.spaces import create_space
from pynas.spaces.darts_ops import FactorizedReduce, Identity

pytestmark = pytest.mark.usefixtures("single_thread")

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not (FASHION / "train-labels-idx1-ubyte.gz").is_file(),
                                   reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
NET = dict(in_channels=1, C=8, layers=5)  # the demo's search network: reductions at cells 1 and 3


@pytest.fixture(scope="module")
def fashion():
    """6,000 shuffled, normalised Fashion-MNIST training images and labels."""
    from pynas.data.registry import FASHION_MNIST_MEAN, FASHION_MNIST_STD, create_dataset

    ds = create_dataset("fashion-mnist", split="train", subset=6000, seed=0)
    x = (ds.images.float() / 255 - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm], ds.labels[perm]


def _ftso(seed=0, **kw):
    return create_algorithm("ftso", space=create_space("darts"), num_classes=10, seed=seed, **NET, **kw)


def _batch(data, i, n=64):
    x, y = data
    return x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]


def _picks(topology, space):
    """{(cell type, node): kept pair} for the nodes with more than two inputs (the others are forced)."""
    return {(kind, n): frozenset(e for e in topology[kind] if e in edges)
            for kind in ("normal", "reduce") for n, edges in enumerate(node_groups(space)) if len(edges) > 2}


def _agreement(topologies, space):
    """Share of (seed, non-forced node) whose kept pair is that node's most common pair over the seeds."""
    per_node = [_picks(t, space) for t in topologies]
    hits = sum(Counter(p[k] for p in per_node).most_common(1)[0][1] for k in per_node[0])
    return hits / (len(per_node) * len(per_node[0]))


@needs_fashion
@pytest.mark.parametrize("update,reduction_skip", [("gradient", "factorized"), ("sgd", "factorized"),
                                                   ("gradient", "pool")])
def test_one_iteration_keeps_the_edges_with_the_largest_negative_gradient(fashion, update, reduction_skip):
    algo = _ftso(topology_update=update, reduction_skip=reduction_skip, topology_steps=1)
    # The gradient at the start, computed here with autograd on a copy of the topology supernet at beta = 0.
    net = copy.deepcopy(algo.supernet).train()
    with torch.no_grad():
        net.beta.zero_()
    train, valid = _batch(fashion, 0), _batch(fashion, 1)
    (grad,) = torch.autograd.grad(F.cross_entropy(net(valid[0]), valid[1]), [net.beta])
    score = -grad.double()

    algo.step(train, valid)
    assert algo.stage_done()
    algo.end_epoch()
    assert algo.stage == "done"
    space = algo.space
    informative = 0
    for k, kind in enumerate(("normal", "reduce")):
        kept = set(algo.topology[kind])
        for edges in node_groups(space):
            if len(edges) <= 2:
                assert set(edges) <= kept  # forced
                continue
            s = score[k, edges]
            tol = 1e-4 * float(s.abs().max())
            kept_s = [float(score[k, e]) for e in edges if e in kept]
            dropped_s = [float(score[k, e]) for e in edges if e not in kept]
            assert len(kept_s) == 2
            # No dropped edge beats a kept one (beyond the tie tolerance the algorithm documents).
            assert min(kept_s) >= max(dropped_s) - tol, (kind, edges, s.tolist(), sorted(kept))
            # ...and where the gradient separates the best edge from the rest, it is kept.
            best = edges[int(s.argmax())]
            if float(s.max()) > sorted(s.tolist())[-2] + tol:
                assert best in kept
                informative += 1
    assert informative >= 4, "the gradient should separate edges at several nodes"


@needs_fashion
def test_adam_recipe_keeps_its_random_draw_and_the_default_starts_equal(fashion):
    """The old recipe (beta ~ 1e-3 N(0, 1), Adam lr 3e-4) returns the draw's ranking after one iteration; the
    default starts every seed at beta = 0, so only the gradient orders the edges."""
    from pynas.algorithms.ftso import _kept_edges

    train, valid = _batch(fashion, 0), _batch(fashion, 1)
    same = total = 0
    for seed in range(4):
        algo = _ftso(seed=seed, topology_update="adam", topology_steps=1)
        draw = algo.supernet.beta.detach().clone()
        assert draw.abs().max() > 0
        algo.step(train, valid)
        algo.end_epoch()
        for k, kind in enumerate(("normal", "reduce")):
            same += len(set(algo.topology[kind]) & set(_kept_edges(algo.space, draw[k], 2)))
            total += len(algo.topology[kind])
        assert torch.equal(_ftso(seed=seed).supernet.beta.detach(), torch.zeros_like(draw))
    assert same / total >= 0.85, f"{same}/{total} kept edges are the draw's"


@pytest.mark.parametrize("reduction_skip,edge_type", [("factorized", FactorizedReduce), ("pool", torch.nn.AvgPool2d)])
def test_reduction_cell_edges(reduction_skip, edge_type):
    """Edges from the two cell inputs reduce (FactorizedReduce with trained 1x1 convs, or a weight-free pool);
    edges from intermediate nodes are identities; normal cells are identities throughout."""
    algo = _ftso(reduction_skip=reduction_skip)
    net = algo.supernet
    weights = {id(p) for p in net.weight_parameters()}
    for cell in net.cells:
        for e, (_, j) in enumerate(cell.edges):
            (op,) = cell.edge_ops[str(e)]
            if cell.reduction and j < 2:
                assert isinstance(op, edge_type)
                params = list(op.parameters())
                assert (len(params) > 0) == (reduction_skip == "factorized")
                assert all(id(p) in weights for p in params)  # the weight optimiser trains them
            else:
                assert isinstance(op, Identity)
    x = torch.randn(4, 1, 28, 28)
    assert net(x).shape == (4, 10)


def test_bad_topology_options():
    with pytest.raises(ValueError, match="topology_update must be one of"):
        _ftso(topology_update="momentum")
    with pytest.raises(ValueError, match="reduction_skip must be one of"):
        _ftso(reduction_skip="conv")
    with pytest.raises(ValueError, match="topology_lr"):
        _ftso(topology_update="sgd", topology_lr=0.0)
    with pytest.raises(ValueError, match="reduction_skip='pool' applies to the darts space only"):
        create_algorithm("ftso", space=create_space("nas-bench-201"), num_classes=10, C=8, layers=1,
                         reduction_skip="pool")


def test_gradient_mode_resumes_its_running_mean():
    algo = _ftso(topology_steps=3)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(4)]
    algo.step(batches[0], batches[1])
    state = copy.deepcopy(algo.state_dict())
    algo.step(batches[2], batches[3])
    resumed = _ftso(topology_steps=3, seed=5)
    resumed.load_state_dict(state)
    resumed.step(batches[2], batches[3])
    torch.testing.assert_close(resumed.search.scores(), algo.search.scores())
    assert algo.search.grad_steps == resumed.search.grad_steps == 2


@needs_fashion
@pytest.mark.slow
def test_seeds_agree_after_a_demo_length_stage(fashion):
    """8 network seeds, the same real batches. At one iteration the picks follow each seed's random weights
    (the gradient at initialisation is the network's, not the data's); after the demo's 46 steps the mean
    gradient agrees across seeds on >= 90% of the normal cells' non-forced picks. Reduction cells agree
    less (their input edges carry freshly initialised 1x1 convs): reported, not asserted, see ftso.py."""
    space = create_space("darts")
    steps = 46
    first, final = [], []
    for seed in range(8):
        algo = _ftso(seed=seed, topology_steps=steps)
        for i in range(steps):
            algo.step(_batch(fashion, i), _batch(fashion, steps + i))  # the demo's batch of 64
            if i == 0:
                first.append(algo._current_topology())
        algo.end_epoch()
        final.append(algo.topology)
    normal = [{"normal": t["normal"], "reduce": t["normal"]} for t in final]
    normal_agreement = _agreement(normal, space)
    print(f"agreement: 1 step {_agreement(first, space):.3f}, {steps} steps {_agreement(final, space):.3f} "
          f"(normal cells {normal_agreement:.3f})")
    assert normal_agreement >= 0.9


def test_snapshot_draws_the_scores_where_beta_stays_uniform():
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g))
    algo = _ftso(topology_steps=2)
    algo.step(batch, batch)
    snap = algo.arch_snapshot()
    assert snap["edge_score"] == algo.search.scores().tolist()
    assert torch.tensor(snap["edge_score"]).shape == torch.tensor(snap["beta"]).shape
    sgd = _ftso(topology_steps=2, topology_update="sgd")
    sgd.step(batch, batch)
    assert "edge_score" not in sgd.arch_snapshot()  # beta itself moves and ranks the edges
