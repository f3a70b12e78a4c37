"""Few-shot NAS: FewShotSupernet routing and batching, the split during training, exact resume, errors."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from pynas.algorithms import create_algorithm
from pynas.algorithms.few_shot import FewShotNAS
from pynas.evaluation import evaluate_paths, evaluate_paths_sequential
from pynas.spaces import create_space
from pynas.supernets.few_shot import FewShotSupernet


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_macro():
    """NAS-Bench-Macro's skeleton at toy width: 2 searchable layers x 3 choices = 9 paths."""
    return create_space("nasbench-macro", init_channels=4, stages=(1, 1), head_channels=8, input_size=8)


def batch(seed, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def diverged(split_layer=1):
    """A FewShotSupernet whose sub-supernets hold different weights and BN statistics."""
    one_shot = tiny_macro().build_supernet()
    fs = FewShotSupernet(one_shot, split_layer=split_layer)
    with torch.no_grad():
        for k, sub in enumerate(fs.subnets):
            for p in sub.parameters():
                p.add_(0.1 * (k + 1) * torch.randn_like(p))
    fs.train()
    for k in range(fs.num_subnets):  # different running statistics too
        with torch.no_grad():
            fs(batch(10 + k)[0] * (k + 1), [0, k] if split_layer == 1 else [k, 0])
    return fs


def test_every_sub_supernet_starts_equal_to_the_one_shot_supernet():
    one_shot = tiny_macro().build_supernet()
    with torch.no_grad():  # non-trivial BN statistics to copy
        one_shot(batch(1)[0], [1, 2])
    fs = FewShotSupernet(one_shot, split_layer=1)
    assert fs.num_subnets == 3 and fs.space is one_shot.space and fs.num_layers == 2
    x, _ = batch(0)
    for train in (False, True):
        one_shot.train(train)
        fs.train(train)
        for path in fs.space.all_paths().tolist():
            with torch.no_grad():
                want = one_shot(x, path)
                torch.testing.assert_close(fs(x, path), want, rtol=0, atol=0)
                for sub in fs.subnets:
                    torch.testing.assert_close(sub(x, path), want, rtol=0, atol=0)
    # Copies, not shared: changing one sub-supernet leaves the others and the original alone.
    with torch.no_grad():
        next(fs.subnets[0].parameters()).add_(1.0)
    assert not torch.equal(next(fs.subnets[0].parameters()), next(one_shot.parameters()))
    assert torch.equal(next(fs.subnets[1].parameters()), next(one_shot.parameters()))


@pytest.mark.parametrize("train", [False, True])
def test_forward_paths_equals_per_path_forward(train):
    fs = diverged()
    fs.train(train)
    x, _ = batch(0)
    paths = torch.tensor([[2, 1], [0, 0], [1, 2], [2, 0], [0, 2], [1, 1]])
    with torch.no_grad():
        batched = fs.forward_paths(x, paths)
        for p, path in enumerate(paths.tolist()):
            torch.testing.assert_close(batched[p], fs(x, path), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(batched[p], fs.subnet_for(path)(x, path), rtol=1e-5, atol=1e-5)
    assert batched.shape == (6, 8, 10)


def test_per_row_paths_route_each_row_to_its_sub_supernet():
    fs = diverged(split_layer=0).eval()
    x, _ = batch(0, n=6)
    rows = torch.tensor([[0, 1], [2, 2], [1, 0], [0, 0], [2, 1], [1, 2]])
    with torch.no_grad():
        out = fs(x, rows)
        for i, path in enumerate(rows.tolist()):
            torch.testing.assert_close(out[i], fs(x[i:i + 1], path)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", ["passes", "trie"])
def test_evaluate_paths_on_few_shot_equals_the_sequential_loop(strategy):
    fs = diverged()
    paths = fs.space.all_paths()[torch.tensor([8, 0, 4, 5, 1, 3, 7, 2, 6])]
    data = [batch(20 + i) for i in range(3)]
    batched = evaluate_paths(fs, paths, data, recalibrate_batches=2, paths_per_pass=4, strategy=strategy)
    sequential = evaluate_paths_sequential(fs, paths, data, recalibrate_batches=2)
    assert batched.settings["strategy"] == strategy
    torch.testing.assert_close(batched.loss, sequential.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched.accuracy, sequential.accuracy)
    for bn in ("batch", "running"):
        a = evaluate_paths(fs, paths, data, bn=bn, recalibrate_batches=0, paths_per_pass=5, strategy=strategy)
        b = evaluate_paths_sequential(fs, paths, data, bn=bn, recalibrate_batches=0)
        torch.testing.assert_close(a.loss, b.loss, rtol=1e-5, atol=1e-5)


def make_algo(seed=0, **kwargs):
    torch.manual_seed(seed)  # initial weights come from the global RNG (as every supernet's)
    options = dict(space=tiny_macro(), epochs=3, split_epoch=1, split_layer=1, lr=0.05, min_lr=0.0, seed=7)
    options.update(kwargs)
    return create_algorithm("few-shot", **options)


def test_split_happens_after_split_epoch_and_rebuilds_the_optimizer():
    algo = make_algo(schedule="cosine")
    assert isinstance(algo, FewShotNAS) and not algo.split
    algo.step(batch(0), None)
    one_shot = algo.supernet
    algo.end_epoch()
    assert algo.split and isinstance(algo.supernet, FewShotSupernet) and algo.supernet is not one_shot
    assert {id(p) for g in algo.optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in algo.supernet.parameters()}
    continued = 0.05 * 0.5 * (1 + math.cos(math.pi / 3))  # cosine over 3 epochs, after 1
    assert algo.optimizer.param_groups[0]["lr"] == 0.05  # the schedule restarts (authors' code)
    x, _ = batch(3)
    one_shot.eval()
    algo.supernet.eval()
    with torch.no_grad():
        torch.testing.assert_close(algo.supernet(x, [2, 1]), one_shot(x, [2, 1]), rtol=0, atol=0)
    kept = make_algo(schedule="cosine", restart_schedule=False)
    kept.step(batch(0), None)
    kept.end_epoch()
    assert kept.optimizer.param_groups[0]["lr"] == pytest.approx(continued)


def test_a_step_only_touches_the_sub_supernet_of_its_path():
    algo = make_algo()
    algo.step(batch(0), None)
    algo.end_epoch()
    for i in range(4):
        before = {k: v.clone() for k, v in algo.supernet.state_dict().items()}
        counts = list(algo.subnet_steps)
        algo.step(batch(1 + i), None)
        (k,) = [j for j in range(3) if algo.subnet_steps[j] != counts[j]]
        after = algo.supernet.state_dict()
        for name, value in after.items():
            changed = not torch.equal(value, before[name])
            index = int(name.split(".")[1])
            if index != k:
                assert not changed, (k, name)
        assert any(not torch.equal(after[n], before[n]) for n in after if n.startswith(f"subnets.{k}."))
    assert algo.arch_snapshot()["subnet_steps"] == algo.subnet_steps and sum(algo.subnet_steps) == 4


def _run(algo, plan, out):
    for item in plan:
        if item == "end":
            algo.end_epoch()
        else:
            out.append(float(algo.step(batch(item), None)["loss"]))


def _save(algo):
    buffer = io.BytesIO()
    torch.save(algo.state_dict(), buffer)
    buffer.seek(0)
    return buffer


def _same(a, b):
    assert a.split == b.split and a.epoch == b.epoch and a.subnet_steps == b.subnet_steps
    sa, sb = a.supernet.state_dict(), b.supernet.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("where", ["before", "after"])
def test_resume_across_the_split_is_exact(where):
    algo = make_algo()
    plan = [0, 1, "end", 2, 3, "end", 4, 5]
    cut = 1 if where == "before" else 4  # the state is saved mid-epoch, before / after the split
    _run(algo, plan[:cut], [])
    buffer = _save(algo)
    first = []
    _run(algo, plan[cut:], first)
    resumed = make_algo(seed=1)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))  # what a checkpoint load allows
    assert resumed.split == (where == "after")
    second = []
    _run(resumed, plan[cut:], second)
    assert first == second
    _same(algo, resumed)


def test_search_and_deploy_after_the_split():
    algo = make_algo()
    _run(algo, [0, "end", 1, 2], [])
    data = [batch(30)]

    def score(paths):
        return evaluate_paths(algo.supernet, paths, data, recalibrate_batches=1).accuracy

    result = algo.search(score, population_size=6, top_k=2, generations=1, mutation_num=2, crossover_num=2)
    assert len(result.best_path) == 2 and algo.best_path == tuple(result.best_path)
    path = (2, 1)
    net = algo.derive_network(path)
    sub = algo.supernet.subnet_for(path).eval()
    net.eval()
    x, _ = batch(4)
    with torch.no_grad():
        torch.testing.assert_close(net(x), sub(x, list(path)))


def test_lr_scaling_and_bad_input():
    assert make_algo(lr=None, batch_size=128).lr == pytest.approx(0.025 * 128 / 48)  # the authors' 0.025 at 48
    with pytest.raises(TypeError, match="search_options"):
        make_algo(search_options=[("generations", 2)])
    supernet = tiny_macro().build_supernet()
    with pytest.raises(ValueError, match="split_layer"):
        FewShotSupernet(supernet, split_layer=2)
    with pytest.raises(ValueError, match="split_layer"):
        FewShotSupernet(supernet, split_layer=-1)
    with pytest.raises(TypeError, match="split_layer"):
        FewShotSupernet(supernet, split_layer="1")
    with pytest.raises(TypeError, match="SinglePathSupernet"):
        FewShotSupernet(nn.Linear(2, 2), split_layer=0)
    with pytest.raises(TypeError, match="already split"):
        FewShotSupernet(FewShotSupernet(supernet, split_layer=0), split_layer=1)
    fs = FewShotSupernet(supernet, split_layer=0)
    with pytest.raises(ValueError, match="out of range"):
        fs.forward_paths(batch(0)[0], torch.tensor([[3, 0]]))
    with pytest.raises(ValueError, match="num_groups"):
        fs.forward_paths(batch(0)[0], torch.tensor([[1, 0], [2, 0]]), num_groups=1)
    with pytest.raises(ValueError, match="split_layer"):
        make_algo(split_layer=5)
    with pytest.raises(ValueError, match="split_epoch"):
        make_algo(split_epoch=3)
    with pytest.raises(ValueError, match="split_epoch"):
        make_algo(split_epoch=0)
    algo = make_algo()
    early = algo.state_dict()
    with pytest.raises(ValueError, match="split_layer"):
        make_algo(split_layer=0).load_state_dict(early)
    algo.step(batch(0), None)
    algo.end_epoch()
    with pytest.raises(ValueError, match="before the split"):
        algo.load_state_dict(early)
    with pytest.raises(RuntimeError, match="already split"):
        algo.split_supernet()


def test_authors_recipe_and_schedule_by_default():
    """configs/nas-benchmark/algos/{ONE,FEW}-SHOT-SUPERNET.config: SGD nesterov 0.025 -> 0.001 cosine, decay
    1e-4, momentum 0.9, plain cross-entropy; 600 one-shot epochs, then 300 per sub-supernet."""
    algo = create_algorithm("few-shot", space=tiny_macro(), split_layer=1, seed=0)
    assert (algo.split_epoch, algo.sub_epochs, algo.epochs) == (600, 300, 600 + 3 * 300)
    assert algo.lr == 0.025 and algo.min_lr == 0.001 and algo.schedule == "cosine"
    defaults = algo.optimizer.defaults
    assert defaults["nesterov"] and defaults["momentum"] == 0.9 and defaults["weight_decay"] == 1e-4
    assert algo.label_smoothing == 0.0


def _sequential(**kwargs):
    return make_algo(epochs=None, split_epoch=1, sub_epochs=2, steps_per_epoch=2, **kwargs)


def test_sequential_schedule_trains_each_sub_supernet_in_turn_with_its_own_cosine():
    algo = _sequential()
    assert algo.epochs == 1 + 3 * 2 and algo.lr_unit == "iteration"
    lrs, trained, fresh = [], [], []
    for epoch in range(algo.epochs):
        for s in range(2):
            counts = list(algo.subnet_steps)
            algo.step(batch(10 * epoch + s), None)
            lrs.append(algo.optimizer.param_groups[0]["lr"])
            trained.append([j for j in range(3) if algo.subnet_steps[j] != counts[j]])
        before = algo.optimizer
        algo.end_epoch()
        if algo.optimizer is not before:  # a new sub-supernet starts: a fresh optimiser, no momentum yet
            assert len(algo.optimizer.state) == 0
            fresh.append(epoch + 1)
    # One-shot epoch 0 (no sub-supernet), then sub-supernets 0, 1, 2 for 2 epochs each, paths inside their region.
    assert trained == [[]] * 2 + [[0]] * 4 + [[1]] * 4 + [[2]] * 4
    assert algo.subnet_steps == [4, 4, 4] and fresh == [1, 3, 5]
    # Per-iteration cosine from 0.05 to 0: over 2 iterations for the one-shot run, over 4 for each sub-supernet.
    cos = lambda t, total: 0.05 * 0.5 * (1 + math.cos(math.pi * t / total))  # noqa: E731
    assert lrs[:2] == pytest.approx([cos(1, 2), cos(2, 2)])
    for k in range(3):
        assert lrs[2 + 4 * k: 6 + 4 * k] == pytest.approx([cos(t, 4) for t in range(1, 5)]), k


def test_sequential_schedule_resumes_exactly_inside_a_sub_supernet():
    algo = _sequential()
    _run(algo, [0, 1, "end", 2, 3, "end", 4, 5, "end", 6], [])  # saved mid-epoch in sub-supernet 1's first epoch
    assert algo.active_subnet == 1
    buffer = _save(algo)
    rest = [7, "end", 8, 9, "end", 10, 11]  # into sub-supernet 2
    first = []
    _run(algo, rest, first)
    resumed = _sequential(seed=1)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    second = []
    _run(resumed, rest, second)
    assert first == second and resumed.active_subnet == algo.active_subnet == 2
    _same(algo, resumed)
    assert resumed.optimizer.param_groups[0]["lr"] == algo.optimizer.param_groups[0]["lr"]


def test_sequential_schedule_bad_input():
    with pytest.raises(ValueError, match="epochs"):
        make_algo(epochs=5, split_epoch=1, sub_epochs=2)  # 1 + 3 x 2 = 7
    with pytest.raises(ValueError, match="split_epoch"):
        make_algo(epochs=None, split_epoch=None, sub_epochs=2)
    with pytest.raises(ValueError, match="sub_epochs"):
        make_algo(epochs=None, sub_epochs=0)
    with pytest.raises(ValueError, match="sub_epochs"):
        _sequential().load_state_dict(make_algo(epochs=7).state_dict())
