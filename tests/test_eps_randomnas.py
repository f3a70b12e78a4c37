"""EPS and RandomNAS as their authors' code, and the evaluation protocols (issue 13).

Every reference here is computed independently: one path at a time, with plain
PyTorch batch-norm modes on a deep copy of the supernet.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pynas.algorithms import create_algorithm
from pynas.commands.path_search import evaluation_options
from pynas.evaluation import evaluate_paths, path_losses_own_batches
from pynas.spaces import create_space

TINY = dict(init_channels=4, stages=(1, 1), head_channels=8, input_size=8)
EPS_SAMPLER = dict(population_size=8, sample_size=4, num_parents=2, interval=2)


def space():
    return create_space("nasbench-macro", **TINY)


def batch(seed, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def eps(**kw):
    options = dict(space=space(), epochs=2, batch_size=8, steps_per_epoch=3, seed=0, sampler_options=EPS_SAMPLER)
    options.update(kw)
    return create_algorithm("eps", **options)


# -- EPS -------------------------------------------------------------------------------------------
def test_eps_recipe_is_its_searchers():
    algo = eps(epochs=None, steps_per_epoch=7, batch_size=64)
    assert algo.epochs == math.ceil(80_000 / 7)  # the searcher's 80,000 iterations, in the run's epochs
    assert algo.lr == pytest.approx(0.1 * 64 / 128)  # 0.1 at batch 128, scaled linearly
    assert algo.label_smoothing == 0.1 and algo.schedule == "cosine" and algo.lr_unit == "iteration"
    decay, no_decay = algo.optimizer.param_groups
    assert decay["weight_decay"] == pytest.approx(4e-5) and no_decay["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert evaluation_options({"algo": "eps"})["bn"] == "batch"  # members are scored with batch statistics
    # The cosine moves every iteration, over epochs x steps_per_epoch iterations.
    short = eps(lr=0.1)
    short.step(batch(0), batch(1))
    assert short.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi / 6)))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        create_algorithm("eps", space=space(), epochs=None, batch_size=8)


def test_eps_scores_each_member_on_its_own_slice_of_the_validation_images():
    algo = eps(score_batch_size=3)
    calls = []
    scorer = algo._score

    def spy(paths):
        calls.append((paths.clone(), copy.deepcopy(algo.supernet)))
        return scorer(paths)

    algo._score = spy
    valid = [batch(100 + s) for s in range(3)]
    for s in range(3):  # the third step scores the trained group (interval 2) before training
        algo.step(batch(s), valid[s])
    assert len(calls) == 1
    paths, net = calls[0]
    assert paths.shape[0] == 4
    # 4 members x 3 images = 12: the buffer keeps the newest batches that hold them (steps 2 and 3).
    x = torch.cat([valid[1][0], valid[2][0]])[:12].view(4, 3, 3, 8, 8)
    y = torch.cat([valid[1][1], valid[2][1]])[:12].view(4, 3)
    want = []
    for p in range(4):
        ref = copy.deepcopy(net).train()  # the searcher's validate(): train mode, batch statistics
        with torch.no_grad():
            want.append(F.cross_entropy(ref(x[p], paths[p].tolist()), y[p], label_smoothing=0.1))
    got = path_losses_own_batches(net, paths, x, y, label_smoothing=0.1)
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-5, atol=1e-6)
    # ... and those are the scores the sampler received (the best is what it recorded).
    best_path, best_loss = algo.sampler.scored_best
    assert best_loss == pytest.approx(float(torch.stack(want).min()), rel=1e-5)
    assert algo.valid_buffer == []  # every image scores once


def test_eps_chooses_over_the_window_s_snapshots_by_loss_and_size():
    algo = eps(snapshot_fraction=0.5)
    scored = []
    evaluate = algo.sampler._evaluate

    def record(fn):
        evaluate(fn)
        scored.append((algo.sampler.scored_at, algo.sampler.scored_best))

    algo.sampler._evaluate = record
    for s in range(6):  # 2 epochs x 3 steps: scorings after steps 2 and 4, and the final one after step 6
        algo.step(batch(s), batch(100 + s))
    assert [at for at, _ in scored] == [2, 4, 6]
    want = {}
    for at, (path, loss) in scored:
        if at > 3:  # the last half of the 6 iterations
            want[tuple(path)] = loss
    assert algo.snapshots == want
    # The objective: loss + 1.4 exp(-5.2 params / max params of the space), lowest wins.
    sp = algo.space
    largest = max(sp.params(p) for p in sp.all_paths().tolist())
    assert algo.largest_params() == pytest.approx(largest)
    algo.snapshots = {(0, 0): 1.0, (2, 2): 1.1, (1, 1): 0.95}
    objective = {p: l + 1.4 * math.exp(-5.2 * sp.params(p) / largest) for p, l in algo.snapshots.items()}
    chosen = min(objective, key=objective.get)
    assert algo.chosen_path() == chosen
    assert algo.search(lambda paths: torch.zeros(paths.shape[0])).best_path == chosen
    # No snapshot in the window: the final population's best.
    empty = eps()
    assert empty.snapshots == {} and empty.chosen_path() is None


# -- RandomNAS ---------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_randomnas_recipe_and_evaluation_protocol():
    algo = create_algorithm("randomnas", space=space(), epochs=4, batch_size=64, seed=0)
    assert (algo.lr, algo.min_lr, algo.optimizer.defaults["weight_decay"]) == (0.025, 0.001, 3e-4)
    for _ in range(4):
        algo.end_epoch()
    assert algo.optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # cosine down to 0.001
    evaluation = evaluation_options({"algo": "randomnas"})
    assert evaluation["bn"] == "running"  # eval mode, the shared running statistics
    assert (evaluation["eval_batches"], evaluation["eval_batch_size"]) == (10, 64)
    assert evaluation["rerank"] == "all"  # the best 10 re-scored on the whole validation split


def test_randomnas_rescores_its_top_ten_with_the_full_scorer():
    algo = create_algorithm("randomnas", space=space(), epochs=1, batch_size=8, seed=0)
    proxy_calls, full_calls = [], []

    def proxy(paths):
        proxy_calls.append(paths)
        return -paths.sum(1).double()  # the proxy prefers small indices

    def full(paths):
        full_calls.append(paths)
        return paths[:, 0].double()  # the full split prefers a large first index

    result = algo.search(proxy, num_samples=40, batch_size=20, rerank_fn=full)
    seen = torch.cat(proxy_calls)
    top = sorted(seen.tolist(), key=lambda p: sum(p))[:10]
    assert len(full_calls) == 1 and sorted(full_calls[0].tolist()) == sorted(top)
    assert result.best_path[0] == max(p[0] for p in top)


# -- evaluation protocols ------------------------------------------------------------------------------
def _reference(net, paths, recal, valid, protocol):
    """One path at a time, plain batch-norm modes."""
    accuracy, loss = [], []
    for path in paths.tolist():
        m = copy.deepcopy(net)
        if protocol == "recalibrate":
            for bn in m.modules():
                if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                    bn.reset_running_stats()
                    bn.momentum = None  # cumulative average over the recalibration batches
            m.train()
            with torch.no_grad():
                for x, _ in recal:
                    m(x, path)
        m.train(protocol == "batch")
        correct = total = 0
        loss_sum = 0.0
        with torch.no_grad():
            for x, y in valid:
                logits = m(x, path)
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                total += y.shape[0]
        accuracy.append(100.0 * correct / total)
        loss.append(loss_sum / total)
    return torch.tensor(accuracy, dtype=torch.float64), torch.tensor(loss, dtype=torch.float64)


@pytest.mark.parametrize("protocol", ["recalibrate", "running", "batch"])
@pytest.mark.parametrize("strategy", ["passes", "trie"])
def test_each_protocol_equals_a_per_path_reference(protocol, strategy):
    torch.manual_seed(0)
    sp = space()
    net = sp.build_supernet()
    net.train()
    with torch.no_grad():  # shared running statistics that differ from any one batch's
        for s in range(4):
            net(batch(200 + s, 16)[0] * (1 + s), sp.sample(1, generator=torch.Generator().manual_seed(s))[0].tolist())
    paths = sp.sample(6, generator=torch.Generator().manual_seed(7))
    recal = [batch(300 + s, 16) for s in range(2)]
    valid = [batch(400 + s, 16) for s in range(2)]
    before = copy.deepcopy(net.state_dict())
    got = evaluate_paths(net, paths, valid, recalibrate_data=recal, recalibrate_batches=2, bn=protocol,
                         strategy=strategy, memory_format="preserve")
    accuracy, loss = _reference(net, paths, recal, valid, protocol)
    torch.testing.assert_close(got.loss, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.accuracy, accuracy)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # nothing left behind


def test_protocol_key_overrides_the_method_s_own():
    assert evaluation_options({"algo": "randomnas"})["bn"] == "running"
    assert evaluation_options({"algo": "randomnas", "evaluation": {"protocol": "recalibrate"}})["bn"] == "recalibrate"
    assert evaluation_options({"algo": "spos", "evaluation": {"protocol": "batch"}})["bn"] == "batch"
    assert evaluation_options({"algo": "eps", "evaluation": {"bn": "running"}})["bn"] == "running"
    with pytest.raises(ValueError, match="protocol"):
        evaluation_options({"algo": "spos", "evaluation": {"protocol": "eval"}})
    with pytest.raises(ValueError, match="disagree"):
        evaluation_options({"algo": "spos", "evaluation": {"protocol": "batch", "bn": "running"}})
    with pytest.raises(ValueError, match="rerank"):
        evaluation_options({"algo": "spos", "evaluation": {"rerank": "top"}})


def test_bad_eps_arguments():
    for kwargs, match in [(dict(score_batch_size=0), "score_batch_size"), (dict(snapshot_fraction=1.5), "snapshot"),
                          (dict(snapshot_alpha=-1.0), "snapshot_alpha"), (dict(max_params=0.0), "max_params")]:
        with pytest.raises(ValueError, match=match):
            eps(**kwargs)
    sp = space()
    net = sp.build_supernet()
    with pytest.raises(ValueError, match="inputs"):
        path_losses_own_batches(net, sp.sample(2), torch.randn(3, 4, 3, 8, 8), torch.zeros(3, 4, dtype=torch.long))


def test_randomnas_cli_rescores_its_best_on_the_whole_validation_split(tmp_path, monkeypatch):
    import pynas.commands.path_search as path_search
    from pynas.commands.search import run_search
    from test_path_algorithms import _path_config

    calls = []
    original = path_search.evaluate_paths

    def spy(supernet, paths, data, **kwargs):
        calls.append((int(torch.as_tensor(paths).shape[0]), sum(int(b[1].shape[0]) for b in data), kwargs))
        return original(supernet, paths, data, **kwargs)

    monkeypatch.setattr(path_search, "evaluate_paths", spy)
    cfg = _path_config(tmp_path, "randomnas")
    result = run_search(cfg, out_dir=tmp_path / "run", progress=False)
    assert result["evaluation"]["bn"] == "running" and result["evaluation"]["rerank"] == "all"
    proxy = [c for c in calls if c[2].get("eval_batches") is not None]
    full = [c for c in calls if c[2].get("eval_batches") is None]
    assert proxy and all(c[2]["bn"] == "running" for c in calls)
    assert len(full) == 1 and full[0][0] == cfg["search"]["rerank_top"]
    assert full[0][1] > max(c[1] for c in proxy)  # every validation image, not the proxy's batches
