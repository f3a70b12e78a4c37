"""Batched path evaluation and multi-path steps on a small chain supernet (no dataset needed)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pynas.evaluation import evaluate_paths, evaluate_paths_sequential, path_losses
from pynas.spaces.path_space import Constraint, PathSpace
from pynas.supernets.choice_layer import ChoiceLayer
from pynas.supernets.path_batch import PathBatchNorm2d, path_batch
from pynas.supernets.single_path import ChainSupernet

C = 6


def conv_op(k):
    return nn.Sequential(nn.Conv2d(C, C, k, padding=k // 2, bias=False), nn.BatchNorm2d(C), nn.ReLU())


class ToySpace(PathSpace):
    name = "toy"
    layer_choices = (("c1", "c3", "id"), ("c1", "c3", "id"), ("c1", "c3"), ("c1", "c3", "id"), ("c1", "c3", "id"))

    def params(self, path):
        return sum(9 if op == "c3" else (1 if op == "c1" else 0) for op in self.describe(path))

    def flops(self, path):
        return 10 * self.params(path)

    def build_supernet(self, **kwargs):
        torch.manual_seed(0)
        blocks = []
        for layer, names in enumerate(self.layer_choices):
            ops = [conv_op(1) if n == "c1" else conv_op(3) if n == "c3" else nn.Identity() for n in names]
            blocks.append(ChoiceLayer(ops, names))
            if layer == 2:  # a fixed downsampling block between choice layers, with its own batch norm
                blocks.append(nn.Sequential(nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C)))
        stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C), nn.ReLU())
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, 4))
        return ChainSupernet(stem, blocks, head, space=self)


@pytest.fixture
def supernet():
    return ToySpace().build_supernet()


def batches(count, n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)) for _ in range(count)]


def test_batch_norms_are_path_aware(supernet):
    norms = [m for m in supernet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, PathBatchNorm2d) for m in norms)


def test_forward_paths_equals_each_path_alone(supernet):
    x = batches(1)[0][0]
    paths = torch.tensor([[0, 1, 0, 2, 1], [0, 1, 1, 0, 0], [2, 2, 1, 1, 2], [0, 1, 0, 2, 1]])
    supernet.train()
    together = supernet.forward_paths(x, paths)
    for p, path in enumerate(paths.tolist()):
        torch.testing.assert_close(together[p], supernet(x, path), rtol=1e-5, atol=1e-5)


def test_per_row_paths_equal_each_path_alone(supernet):
    x = batches(1)[0][0]
    paths = ToySpace().sample(3, generator=torch.Generator().manual_seed(3))
    rows = torch.arange(3).repeat_interleave(x.shape[0])
    with path_batch(rows, 3):
        out = supernet(x.repeat(3, 1, 1, 1), paths[rows])
    ref = torch.cat([supernet(x, p.tolist()) for p in paths])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", ["passes", "trie"])
@pytest.mark.parametrize("bn", ["recalibrate", "batch", "running"])
@pytest.mark.parametrize("momentum", [None, 0.3])
def test_batched_evaluation_equals_sequential(supernet, strategy, bn, momentum):
    data = batches(3)
    recal = batches(4, seed=1)
    # Duplicated paths included: they share a whole trie branch.
    paths = torch.cat([ToySpace().sample(11, generator=torch.Generator().manual_seed(0))] * 2)[:13]
    kwargs = dict(recalibrate_batches=4 if bn == "recalibrate" else 0, recalibrate_data=recal, bn=bn,
                  momentum=momentum)
    batched = evaluate_paths(supernet, paths, data, paths_per_pass=4, strategy=strategy, **kwargs)
    one_by_one = evaluate_paths_sequential(supernet, paths, data, **kwargs)
    assert batched.settings["strategy"] == strategy
    torch.testing.assert_close(batched.loss, one_by_one.loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(batched.accuracy, one_by_one.accuracy)
    assert batched.samples == one_by_one.samples == 30


@pytest.mark.parametrize("bn", ["recalibrate", "batch", "running"])
def test_trie_batch_by_batch_is_bit_identical_to_the_one_path_loop(supernet, bn):
    # Same modules, same batches, same order, same layout: not a single bit may differ.
    data, recal = batches(2), batches(3, seed=1)
    paths = ToySpace().sample(9, generator=torch.Generator().manual_seed(4))
    kwargs = dict(recalibrate_batches=3 if bn == "recalibrate" else 0, recalibrate_data=recal, bn=bn)
    trie = evaluate_paths(supernet, paths, data, strategy="trie", memory_format="preserve", rows_per_call=1, **kwargs)
    loop = evaluate_paths_sequential(supernet, paths, data, **kwargs)
    assert torch.equal(trie.loss, loop.loss) and torch.equal(trie.accuracy, loop.accuracy)


@pytest.mark.parametrize("memory_format", ["preserve", "channels_last"])
def test_trie_packed_batches_equal_the_loop(supernet, memory_format):
    data, recal = batches(2, n=7), batches(3, n=9, seed=1)  # unequal batch sizes in one packed tensor
    paths = ToySpace().sample(9, generator=torch.Generator().manual_seed(5))
    kwargs = dict(recalibrate_batches=3, recalibrate_data=recal)
    trie = evaluate_paths(supernet, paths, data, strategy="trie", memory_format=memory_format, rows_per_call=1000,
                          **kwargs)
    loop = evaluate_paths_sequential(supernet, paths, data, **kwargs)
    assert trie.settings["memory_format"] == memory_format and trie.settings["rows_per_call"] == 1000
    torch.testing.assert_close(trie.loss, loop.loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(trie.accuracy, loop.accuracy)


class HalveWhileTraining(nn.modules.dropout._DropoutNd):
    """A dropout-like module (its output depends on the mode) that is deterministic: x / 2 in training."""

    def forward(self, x):
        return x * 0.5 if self.training else x


def test_trie_runs_dropout_stages_batch_by_batch():
    # A dropout before a batch norm is live while recalibrating and off while evaluating: a stage holding
    # both kinds of rows in one call cannot give each its mode, so such stages run batch by batch.
    space = ToySpace()
    net = space.build_supernet()
    net.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), HalveWhileTraining(), PathBatchNorm2d(C),
                             nn.ReLU())
    data, recal = batches(2), batches(2, seed=1)
    paths = space.sample(6, generator=torch.Generator().manual_seed(6))
    kwargs = dict(recalibrate_batches=2, recalibrate_data=recal)
    trie = evaluate_paths(net, paths, data, strategy="trie", **kwargs)
    loop = evaluate_paths_sequential(net, paths, data, **kwargs)
    torch.testing.assert_close(trie.loss, loop.loss, rtol=1e-5, atol=1e-6)


def test_trie_under_bf16_autocast_is_close_to_the_loop(supernet):
    data, recal = batches(2), batches(2, seed=1)
    paths = ToySpace().sample(5, generator=torch.Generator().manual_seed(7))
    kwargs = dict(recalibrate_batches=2, recalibrate_data=recal, amp="bf16")
    trie = evaluate_paths(supernet, paths, data, strategy="trie", **kwargs)
    loop = evaluate_paths_sequential(supernet, paths, data, **kwargs)
    torch.testing.assert_close(trie.loss, loop.loss, rtol=0, atol=5e-2)


def test_trie_memory_guard(supernet, monkeypatch):
    import pynas.evaluation.paths as paths_module

    monkeypatch.setattr(paths_module, "_memory_budget", lambda device: 1)
    data = batches(1)
    paths = [[0, 1, 0, 1, 0], [1, 1, 1, 1, 1]]
    with pytest.raises(MemoryError, match="budget"):
        evaluate_paths(supernet, paths, data, recalibrate_batches=1, strategy="trie")
    with pytest.warns(RuntimeWarning, match="strategy='passes'"):
        result = evaluate_paths(supernet, paths, data, recalibrate_batches=1)
    assert result.settings["strategy"] == "passes"
    loop = evaluate_paths_sequential(supernet, paths, data, recalibrate_batches=1)
    torch.testing.assert_close(result.loss, loop.loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("momentum", [None, 0.25])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_slices_normalise_each_batch_like_batch_norm_alone(momentum, affine):
    from pynas.supernets.path_batch import batch_slices

    torch.manual_seed(0)
    ours = PathBatchNorm2d(5, momentum=momentum, affine=affine)
    if affine:
        nn.init.normal_(ours.weight), nn.init.normal_(ours.bias)
    ref = copy.deepcopy(ours)
    parts = [torch.randn(n, 5, 3, 3) * 2 + 1 for n in (4, 6, 3, 2)]
    training = (True, True, False, False)
    with torch.no_grad(), batch_slices([p.shape[0] for p in parts], training):
        out = ours(torch.cat(parts).contiguous(memory_format=torch.channels_last))
    expected = []
    with torch.no_grad():
        for part, train in zip(parts, training):
            ref.train(train)
            expected.append(ref(part))
    torch.testing.assert_close(out, torch.cat(expected), rtol=1e-5, atol=1e-6)
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(getattr(ours, name), buf, rtol=1e-6, atol=1e-7, msg=name)
    with pytest.raises(RuntimeError, match="cover 3 rows"), batch_slices([3], [True]):
        ours(torch.randn(4, 5, 3, 3))
    with pytest.raises(ValueError, match="more than 1 value"), batch_slices([1, 2], [True, False]):
        ours(torch.randn(3, 5, 1, 1))


def test_evaluation_settings_are_checked(supernet):
    data = batches(1)
    with pytest.raises(ValueError, match="strategy must be one of"):
        evaluate_paths(supernet, [[0] * 5], data, recalibrate_batches=1, strategy="fast")
    with pytest.raises(ValueError, match="memory_format must be one of"):
        evaluate_paths(supernet, [[0] * 5], data, recalibrate_batches=1, memory_format="nhwc")
    with pytest.raises(ValueError, match="rows_per_call"):
        evaluate_paths(supernet, [[0] * 5], data, recalibrate_batches=1, rows_per_call=0)
    with pytest.raises(ValueError, match="memory_format must be one of"):
        evaluate_paths_sequential(supernet, [[0] * 5], data, recalibrate_batches=1, memory_format=None)


@pytest.mark.parametrize("strategy", ["passes", "trie"])
def test_evaluation_leaves_supernet_untouched(supernet, strategy):
    before = copy.deepcopy(supernet.state_dict())
    supernet.train()
    evaluate_paths(supernet, [[0, 0, 0, 0, 0], [1, 0, 1, 2, 0]], batches(1), recalibrate_batches=1,
                   strategy=strategy)
    evaluate_paths_sequential(supernet, [[0, 0, 0, 0, 0]], batches(1), recalibrate_batches=1)
    after = supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert supernet.training and all(m.training for m in supernet.modules())
    assert all(m.momentum == 0.1 for m in supernet.modules() if isinstance(m, PathBatchNorm2d))
    assert all(m.path_stats is None for m in supernet.modules() if isinstance(m, PathBatchNorm2d))


def test_recalibration_changes_the_result(supernet):
    # Recalibrated statistics differ from the supernet's (fresh) running ones: the policy matters.
    data = batches(2)
    paths = [[1, 1, 1, 1, 1]]
    a = evaluate_paths(supernet, paths, data, recalibrate_batches=2)
    b = evaluate_paths(supernet, paths, data, bn="running", recalibrate_batches=0)
    assert not torch.allclose(a.loss, b.loss)


def test_path_losses_match_single_paths(supernet):
    x, y = batches(1)[0]
    paths = torch.tensor([[0, 0, 0, 0, 0], [1, 2, 1, 0, 2]])
    losses = path_losses(supernet, paths, (x, y))
    supernet.train()
    with torch.no_grad():
        ref = torch.stack([F.cross_entropy(supernet(x, p.tolist()), y) for p in paths])
    torch.testing.assert_close(losses, ref, rtol=1e-5, atol=1e-6)


def test_multi_path_gradients_equal_accumulated_single_paths(supernet):
    x, y = batches(1)[0]
    paths = torch.tensor([[0, 1, 0, 2, 1], [1, 0, 1, 1, 0], [2, 2, 0, 0, 2]])
    twin = copy.deepcopy(supernet)
    supernet.train(), twin.train()
    logits = supernet.forward_paths(x, paths)
    loss = sum(F.cross_entropy(logits[p], y) for p in range(3))
    loss.backward()
    for p in paths.tolist():
        F.cross_entropy(twin(x, p), y).backward()
    for (name, a), b in zip(supernet.named_parameters(), twin.parameters()):
        if a.grad is None:
            assert b.grad is None or torch.count_nonzero(b.grad) == 0, name
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_gates_scale_the_chosen_ops(supernet):
    x = batches(1)[0][0]
    path = [0, 1, 1, 0, 1]
    gates = torch.ones(5, requires_grad=True)
    out = supernet(x, path, gates=gates)
    torch.testing.assert_close(out, supernet(x, path))
    out.sum().backward()
    assert gates.grad is not None and gates.grad.shape == (5,)
    with pytest.raises(ValueError, match="gates"):
        supernet(x, path, gates=torch.ones(4))


def test_bad_paths_give_clear_errors(supernet):
    x = batches(1)[0][0]
    with pytest.raises(ValueError, match="5 entries"):
        supernet(x, [0, 0, 0])
    with pytest.raises(ValueError, match=r"path\[2\] = 2 is out of range"):
        supernet(x, [0, 0, 2, 0, 0])
    with pytest.raises(ValueError, match=r"paths\[0, 2\]"):
        evaluate_paths(supernet, torch.tensor([[0, 0, 5, 0, 0]]), batches(1))
    with pytest.raises(ValueError, match="bn must be"):
        evaluate_paths(supernet, [[0] * 5], batches(1), bn="off")
    with pytest.raises(ValueError, match="recalibrate_batches"):
        evaluate_paths(supernet, [[0] * 5], batches(1), recalibrate_batches=0)
    with pytest.raises(ValueError, match="only 1 batches"):
        evaluate_paths(supernet, [[0] * 5], batches(1), recalibrate_batches=3)
    with pytest.raises(TypeError, match="supernet"):
        evaluate_paths(nn.Linear(2, 2), [[0] * 5], batches(1))


def test_space_sampling_and_constraints():
    space = ToySpace()
    g = torch.Generator().manual_seed(0)
    paths = space.sample(3000, generator=g)
    for layer, k in enumerate(space.num_choices):
        counts = torch.bincount(paths[:, layer], minlength=k).double() / 3000
        assert torch.all((counts - 1 / k).abs() < 0.04)
    limited = Constraint(max_params=20)
    admitted = space.sample(200, generator=g, constraint=limited)
    assert all(space.params(p) <= 20 for p in admitted)
    assert space.path_at(space.index_of([2, 1, 0, 2, 1])) == (2, 1, 0, 2, 1)
    assert space.parse(space.format([2, 1, 0, 2, 1])) == (2, 1, 0, 2, 1)
    with pytest.raises(RuntimeError, match="admits too few"):
        space.sample(1, generator=g, constraint=Constraint(max_params=0, min_params=0), max_tries=50)
    with pytest.raises(ValueError, match="min_flops"):
        Constraint(min_flops=5, max_flops=1)
