"""DSNAS (pynas.algorithms.dsnas): its architecture-gradient estimator, training, resume and errors.

The estimator tests use a 3-layer residual toy supernet with scalar ops,
``h <- h + Z_l w_{l,s} h``, whose 12 paths can be enumerated: the exact
objective E_Z[L] and its gradient, and the exact expectation of the
estimator, are sums over paths.
"""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from pynas.algorithms import create_algorithm
from pynas.algorithms.dsnas import DSNAS, layer_cost_tables
from pynas.spaces import create_space
from pynas.spaces.path_space import Constraint, PathSpace
from pynas.supernets.choice_layer import ChoiceLayer
from pynas.supernets.single_path import SinglePathSupernet

SCALES = ((0.5, -0.8), (1.2, 0.3, -0.5), (0.7, -1.1))
ALPHA = ((0.4, -0.3), (0.2, -0.5, 0.6), (-0.2, 0.3))


pytestmark = pytest.mark.usefixtures("single_thread")


class ToySpace(PathSpace):
    name = "toy"
    layer_choices = (("a0", "a1"), ("b0", "b1", "b2"), ("c0", "c1"))

    def __init__(self, additive: bool = True):
        self.additive = additive

    def flops(self, path) -> int:
        p = self.check_path(path)
        per_layer = [(0, 10e6), (0, 5e6, 20e6), (0, 40e6)]
        total = 100e6 + sum(per_layer[layer][v] for layer, v in enumerate(p))
        return int(total if self.additive else total * (1 + p[0]))

    def params(self, path) -> int:
        return 1000 + 10 * sum(self.check_path(path))

    def build_supernet(self, **kwargs):
        return ToySupernet(self)


class Scale(nn.Module):
    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x):
        return self.w * x


class ToySupernet(SinglePathSupernet):
    """Residual scalar chain: the output x * prod_l (1 + Z_l w_l) is multilinear in the gates."""

    def __init__(self, space):
        super().__init__()
        self.space = space
        self.layers = nn.ModuleList(ChoiceLayer([Scale(w) for w in row]) for row in SCALES)

    def forward_columns(self, x, columns):
        h = x
        for layer, column in zip(self.layers, columns):
            h = h + layer(h, column)
        return h


X = torch.tensor([[1.0], [2.0], [-0.5]], dtype=torch.float64)
Y = torch.tensor([[0.3], [1.5], [0.2]], dtype=torch.float64)
def LINEAR(out, y):  # affine in every gate
    return (out * y).mean()


def QUADRATIC(out, y):  # quadratic in every gate
    return ((out - y) ** 2).mean()


def toy_dsnas(criterion, **kwargs):
    space = ToySpace()
    options = dict(space=space, supernet=ToySupernet(space), epochs=2, lr=0.1, resource_coef=0.0, seed=0)
    options.update(kwargs)
    algo = DSNAS(**options)
    algo.criterion = criterion
    with torch.no_grad():
        for a, values in zip(algo.alpha, ALPHA):
            a.copy_(torch.tensor(values))
    return algo


def exact_objective_gradient(algo):
    """d/d alpha of J = sum_Z p(Z) L(Z), by enumeration."""
    alpha = [a.detach().double().clone().requires_grad_() for a in algo.alpha]
    total = 0.0
    for path in algo.space.all_paths().tolist():
        with torch.no_grad():
            loss = algo.criterion(algo.supernet(X, path), Y).double()
        log_p = sum(torch.log_softmax(a, 0)[v] for a, v in zip(alpha, path))
        total = total + log_p.exp() * loss
    return torch.autograd.grad(total, alpha)


def estimator_by_path(algo):
    """The estimator (*) for every path (it is deterministic given the path) and p(path)."""
    out = {}
    probs = [torch.softmax(a.detach().double(), 0) for a in algo.alpha]
    for path in algo.space.all_paths().tolist():
        _, _, grads = algo.arch_gradient(X, Y, path)
        out[tuple(path)] = (torch.cat([g.double() for g in grads]),
                            math.prod(float(p[v]) for p, v in zip(probs, path)))
    return out


def monte_carlo(algo, table, n):
    """Mean and standard error of the estimator over n paths drawn by the algorithm's own sampler."""
    counts = {}
    for _ in range(n):
        path = algo.sample_path()
        counts[path] = counts.get(path, 0) + 1
    values = torch.stack([table[p][0] for p in counts])
    weights = torch.tensor([counts[p] for p in counts], dtype=torch.float64).unsqueeze(1) / n
    mean = (weights * values).sum(0)
    var = (weights * (values - mean) ** 2).sum(0) * n / (n - 1)
    return mean, var.sqrt() / math.sqrt(n), counts


def test_sampler_follows_softmax_alpha():
    algo = toy_dsnas(LINEAR)
    n = 6000
    draws = torch.tensor([algo.sample_path() for _ in range(n)])
    for layer, p in enumerate(algo.probabilities()):
        freq = torch.bincount(draws[:, layer], minlength=p.numel()).double() / n
        se = (p.double() * (1 - p.double()) / n).sqrt()
        assert ((freq - p.double()).abs() <= 4 * se).all(), (layer, freq, p)


def test_estimator_is_unbiased_when_the_loss_is_affine_in_each_gate():
    """Residual multilinear net + linear loss: E[g] = dJ/dalpha exactly (REINFORCE with baseline L^0)."""
    algo = toy_dsnas(LINEAR)
    exact = torch.cat(exact_objective_gradient(algo))
    table = estimator_by_path(algo)
    expectation = sum(p * g for g, p in table.values())
    torch.testing.assert_close(expectation, exact, rtol=1e-6, atol=1e-8)  # alpha and g are float32
    mean, se, _ = monte_carlo(algo, table, 20000)
    assert ((mean - exact).abs() <= 4 * se + 1e-12).all(), (mean, exact, se)
    assert exact.abs().max() > 20 * se.max()  # the check has power: the gradient is well resolved
    # With this net dL/dZ differs from L (baseline L^0 != 0): not plain REINFORCE.
    path = (1, 2, 0)
    _, _, grads = algo.arch_gradient(X, Y, path)
    with torch.no_grad():
        loss = algo.criterion(algo.supernet(X, list(path)), Y)
    reinforce = algo.score_gradient(path, torch.full((3,), float(loss), dtype=torch.float64))
    assert not torch.allclose(torch.cat(grads), torch.cat(reinforce))


def test_estimator_is_low_biased_for_a_nonlinear_loss():
    """Quadratic loss: the MC mean converges to E[g], which differs from dJ/dalpha by the Taylor remainder."""
    algo = toy_dsnas(QUADRATIC)
    exact = torch.cat(exact_objective_gradient(algo))
    table = estimator_by_path(algo)
    expectation = sum(p * g for g, p in table.values())
    mean, se, _ = monte_carlo(algo, table, 20000)
    assert ((mean - expectation).abs() <= 4 * se + 1e-12).all(), (mean, expectation, se)
    bias = expectation - exact
    assert bias.abs().max() > 10 * se.max()  # biased, and measurably so
    # The bias is E[r_l (Z_l - p_l)], r_l = dL/dZ_l - (L - L with gate l at 0): check it term by term.
    predicted = torch.zeros_like(bias)
    for path, (_, p) in table.items():
        gates = torch.ones(3, dtype=torch.float64, requires_grad=True)
        loss = algo.criterion(algo.supernet(X, list(path), gates=gates), Y)
        (credit,) = torch.autograd.grad(loss, gates)
        with torch.no_grad():
            drop = [float(loss - algo.criterion(algo.supernet(X, list(path), gates=1.0 - torch.eye(3)[layer]
                                                              .double()), Y)) for layer in range(3)]
        remainder = credit - torch.tensor(drop, dtype=torch.float64)
        predicted += p * torch.cat(algo.score_gradient(path, remainder)).double()
    torch.testing.assert_close(bias, predicted, rtol=1e-5, atol=1e-7)


def test_penalty_gradient_forms_and_target():
    algo = toy_dsnas(LINEAR, resource_coef=1e-3)
    assert algo.resource == "flops" and algo.cost_base == 100e6
    path = (1, 2, 1)
    alpha = [a.detach().double().clone().requires_grad_() for a in algo.alpha]
    tables = [t / 1e6 for t in algo.cost_tables]
    expected = sum((torch.softmax(a, 0) * t).sum() for a, t in zip(alpha, tables))
    want = torch.autograd.grad(1e-3 * expected, alpha)
    got = algo.penalty_gradient(path)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=1e-6, atol=1e-12)
    algo.penalty = "sampled"
    sampled = sum(torch.softmax(a, 0)[v] * t[v] for a, t, v in zip(alpha, tables, path))
    want = torch.autograd.grad(1e-3 * sampled, alpha)
    for g, w in zip(algo.penalty_gradient(path), want):
        torch.testing.assert_close(g.double(), w, rtol=1e-6, atol=1e-12)
    # A target (the constraint's max_flops): no penalty on paths within it.
    capped = toy_dsnas(LINEAR, resource_coef=1e-3, constraint=Constraint(max_flops=130e6))
    assert capped.penalty_gradient((0, 1, 0)) is None  # 105M
    assert capped.penalty_gradient((1, 2, 1)) is not None  # 170M
    assert toy_dsnas(LINEAR, resource_coef=1e-3, constraint=Constraint(max_params=2000)).resource == "params"


def test_non_additive_cost_is_refused():
    space = ToySpace(additive=False)
    with pytest.raises(ValueError, match="additive"):
        layer_cost_tables(space, "flops")
    with pytest.raises(ValueError, match="additive"):
        DSNAS(space=space, supernet=ToySupernet(space), resource_coef=1e-6, epochs=2, lr=0.1)


# -- the real space ----------------------------------------------------------------------------
def tiny_macro():
    return create_space("nasbench-macro", init_channels=4, stages=(1, 1), head_channels=8, input_size=8)


def batch(seed, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def mean_path_loss(algo, x, y):
    with torch.no_grad():
        return sum(float(algo.criterion(algo.supernet(x, p), y)) for p in algo.space.all_paths().tolist()) / 9


def test_steps_reduce_the_loss_and_move_alpha():
    space = tiny_macro()
    algo = create_algorithm("dsnas", space=space, lr=0.05, label_smoothing=0.0, arch_lr=0.05, epochs=2)
    x, y = batch(0)
    before_loss, before_alpha = mean_path_loss(algo, x, y), [a.detach().clone() for a in algo.alpha]
    for _ in range(25):
        metrics = algo.step((x, y), None)
    assert set(metrics) >= {"loss", "correct", "count"} and metrics["count"] == 16
    assert mean_path_loss(algo, x, y) < before_loss - 0.1
    assert any(not torch.equal(a, b) for a, b in zip(algo.alpha, before_alpha))
    assert algo.global_step == 25 and isinstance(algo.genotype(), str) and len(algo.genotype()) == 2


def test_warmup_trains_weights_only():
    algo = create_algorithm("dsnas", space=tiny_macro(), lr=0.05, epochs=3, warmup_epochs=1)
    before = [a.detach().clone() for a in algo.alpha]
    weights = [p.detach().clone() for p in algo.supernet.parameters()]
    for _ in range(3):
        algo.step(batch(1), None)
    assert not algo.searching or algo.epoch > 0
    assert all(torch.equal(a, b) for a, b in zip(algo.alpha, before))
    assert any(not torch.equal(p, q) for p, q in zip(algo.supernet.parameters(), weights))
    algo.end_epoch()
    assert algo.searching
    algo.step(batch(1), None)
    assert any(not torch.equal(a, b) for a, b in zip(algo.alpha, before))


def _run(algo, plan, out):
    for item in plan:
        if item == "end":
            algo.end_epoch()
        else:
            out.append(float(algo.step(batch(item), None)["loss"]))


def test_resume_gives_identical_next_steps():
    def make(seed):
        torch.manual_seed(seed)  # different initial weights: the state must overwrite them
        return create_algorithm("dsnas", space=tiny_macro(), lr=0.05, epochs=4, warmup_epochs=1,
                                fix_threshold=0.02, arch_lr=0.05, seed=3)

    algo = make(0)
    _run(algo, [0, 1, "end", 2, 3], [])
    buffer = io.BytesIO()
    torch.save(algo.state_dict(), buffer)
    tail = [4, 5, "end", 6, 7]
    first = []
    _run(algo, tail, first)
    assert algo.fixed  # the early fixing ran and is part of the state
    buffer.seek(0)
    resumed = make(1)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))  # what a checkpoint load allows
    second = []
    _run(resumed, tail, second)
    assert first == second
    assert resumed.fixed == algo.fixed and resumed.epoch == algo.epoch
    for a, b in zip(algo.alpha, resumed.alpha):
        assert torch.equal(a, b)
    for (k, v), (k2, v2) in zip(algo.supernet.state_dict().items(), resumed.supernet.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_search_derives_the_argmax_path_and_deploys_it():
    space = tiny_macro()
    algo = create_algorithm("dsnas", space=space, epochs=2, batch_size=64)
    with torch.no_grad():
        algo.alpha[0].copy_(torch.tensor([0.0, 0.0, 3.0]))
        algo.alpha[1].copy_(torch.tensor([0.0, 2.0, 1.0]))
    seen = []
    result = algo.search(lambda paths: (seen.append(paths.tolist()), torch.tensor([42.0]))[1])
    assert result.best_path == (2, 1) and result.best_score == 42.0 and seen == [[[2, 1]]]
    assert algo.genotype() == "21"
    # A constraint that rejects the argmax: the most probable admitted path.
    limit = space.flops((2, 0))
    constrained = create_algorithm("dsnas", space=space, epochs=2, lr=0.1, constraint=Constraint(max_flops=limit))
    with torch.no_grad():
        for a, b in zip(constrained.alpha, algo.alpha):
            a.copy_(b)
    admitted = [tuple(p) for p in space.all_paths().tolist() if space.flops(p) <= limit]
    log_p = [torch.log_softmax(a.detach(), 0) for a in algo.alpha]
    want = max(admitted, key=lambda p: float(log_p[0][p[0]] + log_p[1][p[1]]))
    assert constrained.search(lambda paths: torch.zeros(1)).best_path == want != (2, 1)
    # No retraining: the deployed child computes what the supernet computes on that path.
    net = algo.derive_network()
    algo.supernet.eval()
    net.eval()
    x, _ = batch(2)
    torch.testing.assert_close(net(x), algo.supernet(x, [2, 1]))


def test_registered_and_bad_input():
    space = tiny_macro()
    algo = create_algorithm("dsnas", space=space, epochs=2, batch_size=256)
    assert isinstance(algo, DSNAS) and algo.lr == pytest.approx(0.5 * 256 / 1024)  # the authors' 0.5 at 1024
    with pytest.raises(ValueError, match="batch_size"):
        DSNAS(space=space, epochs=2)
    for kwargs, match in [
        (dict(arch_lr=0.0), "arch_lr"),
        (dict(warmup_epochs=2), "warmup_epochs"),
        (dict(fix_threshold=1.5), "fix_threshold"),
        (dict(penalty="reinforce"), "penalty"),
        (dict(resource="latency"), "resource"),
        (dict(arch_betas=(0.5,)), "arch_betas"),
        (dict(alpha_init_std=-1.0), "alpha_init_std"),
        (dict(supernet=tiny_macro().build_supernet(), supernet_options={"x": 1}), "supernet"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            DSNAS(space=space, epochs=2, lr=0.1, **kwargs)
    with pytest.raises(TypeError, match="space"):
        DSNAS(space="nasbench-macro", epochs=2, lr=0.1)
    other = create_space("nasbench-macro", init_channels=8, stages=(1, 1), head_channels=8, input_size=8)
    with pytest.raises(ValueError, match="built from"):
        DSNAS(space=space, supernet=other.build_supernet(), epochs=2, lr=0.1)
    algo = DSNAS(space=space, epochs=2, lr=0.1)
    with pytest.raises(TypeError, match="search options"):
        algo.search(lambda p: torch.zeros(1), generations=3)
    with pytest.raises(ValueError, match="out of range"):
        algo.arch_gradient(*batch(0), (0, 3))
    with pytest.raises(ValueError, match="alpha"):
        algo.load_state_dict({**algo.state_dict(), "alpha": [torch.zeros(2), torch.zeros(3)]})


def test_penalty_gating_as_the_authors_code_at_the_target_and_in_the_alpha_update():
    """network.py line 145 backpropagates the FLOPs loss iff the sampled path's FLOPs >= the target."""
    algo = toy_dsnas(LINEAR, resource_coef=1e-3, constraint=Constraint(max_flops=115e6))
    zero = [torch.zeros_like(a) for a in algo.alpha]
    grads = {}
    for path in ((0, 1, 0), (1, 1, 0), (1, 2, 1)):  # 105M (under), 115M (at), 170M (over)
        algo._arch_step(path, [z.clone() for z in zero])
        grads[path] = [a.grad.clone() for a in algo.alpha]
    assert all(float(g.abs().sum()) == 0.0 for g in grads[(0, 1, 0)])  # task gradient 0, no penalty
    for path in ((1, 1, 0), (1, 2, 1)):
        want = algo.penalty_gradient(path)
        assert want is not None and sum(float(w.abs().sum()) for w in want) > 0
        for g, w in zip(grads[path], want):
            torch.testing.assert_close(g, w)


def test_batch_norm_parameters_get_no_weight_decay():
    """train_imagenet.py lines 105-131: BN weights and biases in a weight-decay-0 group."""
    algo = create_algorithm("dsnas", space=tiny_macro(), epochs=2, lr=0.1, weight_decay=4e-5)
    norms = {id(p) for m in algo.supernet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for p in m.parameters(recurse=False)}
    assert norms
    decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in algo.optimizer.param_groups}
    assert norms <= decay[0.0] and not norms & decay[4e-5]
    convs = [m.weight for m in algo.supernet.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(id(w) in decay[4e-5] for w in convs)
    assert not create_algorithm("dsnas", space=tiny_macro(), epochs=2, lr=0.1,
                                no_wd_bn_bias=False).optimizer.param_groups[0]["weight_decay"] == 0.0


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_lr_warms_up_linearly_then_decays_by_cosine_every_iteration():
    """devkit/core/lr_scheduler.py lines 66-88 with the config's warm-up (5 epochs from 1e-4), per iteration."""
    epochs, per_epoch, base, start = 40, 3, 0.2, 1e-4
    algo = create_algorithm("dsnas", space=tiny_macro(), epochs=epochs, lr=base, steps_per_epoch=per_epoch)
    assert algo.lr_unit == "iteration" and algo.lr_warmup_epochs == 5 and algo.lr_warmup_start == 1e-4
    warm, total = 5 * per_epoch, epochs * per_epoch

    def authors(T):  # the authors' formula, written out independently
        if T < warm:
            return start + (base - start) * T / warm
        return 0.0 + (base - 0.0) * (1 + math.cos(math.pi * (T - warm) / (total - warm))) / 2

    seen = []
    for _ in range(total):
        seen.append(algo.optimizer.param_groups[0]["lr"])
        algo.scheduler.step()
    for T in (0, 1, warm - 1, warm, warm + 7, total - 1):
        assert seen[T] == pytest.approx(authors(T), rel=1e-9, abs=1e-12), T
    assert seen[0] == pytest.approx(1e-4) and max(seen) == pytest.approx(base)
    # A training step moves the schedule by one iteration.
    stepped = create_algorithm("dsnas", space=tiny_macro(), epochs=epochs, lr=base, steps_per_epoch=per_epoch,
                               warmup_epochs=1)
    stepped.step(batch(0), None)
    assert stepped.optimizer.param_groups[0]["lr"] == pytest.approx(authors(1))
    assert stepped.global_step == 1
    # Short runs: the warm-up is capped at a quarter of the epochs; none at all for 2 epochs.
    assert create_algorithm("dsnas", space=tiny_macro(), epochs=8, lr=0.1).lr_warmup_epochs == 2
    assert create_algorithm("dsnas", space=tiny_macro(), epochs=2, lr=0.1).lr_warmup_epochs == 0
