"""Single-path algorithms (SPOS, RandomNAS, FairNAS, GreedyNAS, EPS, ...) through the API and the CLI."""
import copy
import json
from pathlib import Path

import pytest
import torch

from pynas.algorithms import ALGORITHMS, create_algorithm
from pynas.algorithms.single_path import SinglePathSearch
from pynas.commands.search import run_search
from pynas.spaces import create_space
from pynas.spaces.path_space import Constraint
from pynas.training.checkpoint import load_checkpoint, save_checkpoint

from conftest import DATA_DIR
from test_search import _image_folder

PATH_ALGORITHMS = [n for n in ALGORITHMS.names()
                   if isinstance(ALGORITHMS.get(n), type) and issubclass(ALGORITHMS.get(n), SinglePathSearch)]
TINY_MACRO = dict(init_channels=4, head_channels=16)
SAMPLER_OPTIONS = {"greedynas": dict(num_samples=4, top_k=2, pool_size=8),
                   "eps": dict(population_size=8, sample_size=4, num_parents=2, interval=2)}


def tiny_space():
    return create_space("nasbench-macro", **TINY_MACRO)


def make(name, **kw):
    options = dict(space=tiny_space(), epochs=2, batch_size=8, steps_per_epoch=3, seed=0)
    if name in SAMPLER_OPTIONS:
        options["sampler_options"] = SAMPLER_OPTIONS[name]
    options.update(kw)
    return create_algorithm(name, **options)


def batch(seed, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_registry_lists_the_single_path_methods():
    assert {"spos", "fairnas", "greedynas", "randomnas", "eps"} <= set(PATH_ALGORITHMS)


@pytest.mark.parametrize("name", PATH_ALGORITHMS)
def test_steps_train_the_supernet_and_resume_exactly(name, tmp_path):
    algo = make(name)
    before = copy.deepcopy(algo.supernet.state_dict())
    for s in range(2):
        metrics = algo.step(batch(s), batch(100 + s))
        assert torch.isfinite(torch.as_tensor(metrics["loss"]))
    after = algo.supernet.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    # Resume: a fresh algorithm loaded from the state continues exactly like the original. Through a
    # checkpoint file, so the state also has to load under weights_only=True.
    save_checkpoint(tmp_path / "checkpoint.pt", {"algorithm": algo.state_dict()})
    state = load_checkpoint(tmp_path / "checkpoint.pt")["algorithm"]
    twin = make(name)
    twin.load_state_dict(state)
    for s in range(2, 4):
        a = algo.step(batch(s), batch(100 + s))
        b = twin.step(batch(s), batch(100 + s))
        assert float(a["loss"]) == float(b["loss"])
    for (k, v), w in zip(algo.supernet.state_dict().items(), twin.supernet.state_dict().values()):
        assert torch.equal(v, w), k


def test_fairnas_trains_every_op_of_every_layer_each_step():
    algo = make("fairnas")
    paths = algo.training_paths(batch(0))
    for layer, k in enumerate(algo.space.num_choices):
        assert sorted(paths[:, layer].tolist()) == list(range(k))


def test_greedynas_trains_its_queue_one_path_per_sgd_step():
    algo = make("greedynas", sampler_options=dict(num_samples=4, top_k=2, pool_size=8, warmup_steps=0))
    assert algo.sampler.higher_is_better  # ranks by accuracy
    algo.step(batch(0), batch(1))  # draws m = 4, scores them, trains the best
    sampler = algo.sampler
    candidates, scores = sampler.last_candidates, sampler.last_scores
    assert scores.shape == (candidates.shape[0], 2)  # (top-1 accuracy, -loss) on the validation batch
    order = sorted(range(candidates.shape[0]), key=lambda i: (-scores[i, 0].item(), -scores[i, 1].item()))
    assert sampler.queue == [tuple(candidates[order[1]].tolist())]  # the 2nd best waits for the next step
    assert {tuple(p) for p in candidates.tolist()} <= {tuple(p) for p in sampler.pool()[0].tolist()}
    before = [p.detach().clone() for p in algo.supernet.weight_parameters()]
    record = algo.step(batch(2), batch(3))
    assert record["paths"] == 1 and sampler.queue == [] and sampler.refills == 1  # one path, one SGD step
    assert any(not torch.equal(p, q) for p, q in zip(before, algo.supernet.weight_parameters()))


def test_greedynas_recipe_defaults():
    algo = make("greedynas", batch_size=256, sampler_options=dict(num_samples=4, top_k=2, pool_size=8))
    assert algo.lr == pytest.approx(0.12 * 256 / 1024)  # mmrazor's 0.12 at batch 1024, scaled linearly
    assert algo.schedule == "cosine" and algo.min_lr == pytest.approx(1e-5)
    assert len(algo.optimizer.param_groups) == 1  # weight decay on every parameter
    assert algo.sampler.warmup_steps == round(2 * 3 * 10_000 / 150_000)  # epochs x steps_per_epoch scaled


def test_spos_exempts_one_dimensional_parameters_from_weight_decay():
    algo = make("spos")
    decay, no_decay = algo.optimizer.param_groups
    assert decay["weight_decay"] == pytest.approx(4e-5) and no_decay["weight_decay"] == 0.0
    assert no_decay["params"] and all(p.dim() == 1 for p in no_decay["params"])  # BN affines, biases
    assert all(p.dim() > 1 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(algo.supernet.weight_parameters())
    # FairNAS keeps its recipe (one group): only SPOS's optimizer changed.
    assert len(make("fairnas").optimizer.param_groups) == 1


def test_spos_trains_inside_the_search_constraint_or_a_separate_range():
    space = tiny_space()
    flops = sorted(space.flops(p) for p in space.sample(200, generator=torch.Generator().manual_seed(0)))
    limit = flops[40]
    algo = make("spos", constraint=Constraint(max_flops=limit))
    paths = torch.cat([algo.training_paths(None) for _ in range(100)])
    assert all(space.flops(p) <= limit for p in paths.tolist())
    low, high = flops[100], flops[160]
    ranged = make("spos", constraint=Constraint(max_flops=limit),
                  sampler_options=dict(constraint=dict(min_flops=low, max_flops=high), flops_bins=3))
    paths = torch.cat([ranged.training_paths(None) for _ in range(60)])
    assert all(low <= space.flops(p) <= high for p in paths.tolist())  # the training range, not the search's
    free = make("spos")  # no constraint: plain uniform paths
    assert free.sampler.constraint is None


def test_spos_evaluation_defaults_and_their_scaling_rule():
    from pynas.commands.path_search import capped_batches, evaluation_options

    evaluation = evaluation_options({"algo": "spos"})
    assert (evaluation["recalibrate_batches"], evaluation["recalibrate_batch_size"]) == (200, 128)
    assert (evaluation["eval_batches"], evaluation["eval_batch_size"]) == (40, 200)
    mine = evaluation_options({"algo": "spos", "evaluation": {"recalibrate_batches": 5}})
    assert mine["recalibrate_batches"] == 5 and "recalibrate_batch_size" not in mine  # the run's batch size
    assert mine["eval_batch_size"] == 200
    assert evaluation_options({"algo": "fairnas"}) == {"bn": "recalibrate", "recalibrate_batches": 10,
                                                       "eval_batches": 5, "rerank": "off"}
    assert capped_batches(100_000, 128, 200) == (128, 200)  # enough images: SPOS's protocol whole
    assert capped_batches(1000, 128, 200) == (128, 7)  # whole batches the split holds
    assert capped_batches(50, 200, 40) == (50, 1)  # fewer than one batch: one batch of all
    assert capped_batches(10, 4, None) == (4, None)


def test_search_respects_the_constraint():
    algo = make("spos")
    space = algo.space
    limit = sorted(space.flops(p) for p in space.sample(50, generator=torch.Generator().manual_seed(0)))[10]
    algo.constraint = Constraint(max_flops=limit)
    scores = {}

    def score(paths):
        out = torch.tensor([float(space.params(p)) for p in paths])  # prefers big paths: the limit binds
        for p in paths.tolist():
            scores[tuple(p)] = True
        return out

    result = algo.search(score, population_size=10, top_k=3, generations=3, mutation_num=3, crossover_num=3)
    assert space.flops(result.best_path) <= limit
    assert all(space.flops(p) <= limit for p in scores)


def test_bad_arguments():
    with pytest.raises(TypeError, match="space"):
        create_algorithm("spos", space=create_space("darts"), epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="epochs"):
        make("spos", epochs=0)
    with pytest.raises(ValueError, match="lr"):
        make("spos", lr=-1.0)
    with pytest.raises(ValueError, match="schedule"):
        make("spos", schedule="step")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        create_algorithm("greedynas", space=tiny_space(), epochs=1, batch_size=8)


def _path_config(tmp_path, algo, **over):
    cfg = dict(space="nasbench-macro", algo=algo, dataset="imagefolder", data=str(_image_folder(tmp_path)),
               batch_size=8, epochs=2, device="cpu", space_options=TINY_MACRO,
               evaluation=dict(recalibrate_batches=1, eval_batches=1),
               search=dict(population_size=6, top_k=2, generations=2, mutation_num=2, crossover_num=2))
    if algo in SAMPLER_OPTIONS:
        cfg["algorithm"] = {"sampler_options": SAMPLER_OPTIONS[algo]}
    if algo == "randomnas":
        cfg["search"] = dict(num_samples=6, rerank_top=2)
    if algo == "fairnas":  # NSGA-II: a population and generations, no top-k/mutation/crossover counts
        cfg["search"] = dict(population_size=6, generations=2)
    if algo == "dsnas":  # its path is the argmax of its architecture weights: no search options
        cfg["search"] = {}
    cfg.update(over)
    return cfg


@pytest.mark.parametrize("algo", PATH_ALGORITHMS)
def test_cli_run_writes_the_found_path(tmp_path, algo):
    result = run_search(_path_config(tmp_path, algo), out_dir=tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "path.json").read_text())
    space = create_space("nasbench-macro", num_classes=3, input_size=16, **TINY_MACRO)  # 3 classes, 16x16 images
    assert record["path"] == result["path"]
    assert record["params"] == space.params(record["path"]) and record["flops"] == space.flops(record["path"])
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert result["evaluations"] > 0


def test_search_phase_resumes_after_kill(tmp_path):
    cfg = _path_config(tmp_path, "spos", epochs=1)
    full = run_search(cfg, out_dir=tmp_path / "full", progress=False)
    import pynas.commands.path_search as path_search

    class Stop(Exception):
        pass

    original = path_search.save_checkpoint
    calls = {"n": 0}

    def save_then_die(path, payload):  # the search state is saved, then the run is killed
        original(path, payload)
        calls["n"] += 1
        if calls["n"] == 1:
            raise Stop

    path_search.save_checkpoint = save_then_die
    try:
        with pytest.raises(Stop):
            run_search(cfg, out_dir=tmp_path / "killed", progress=False)
    finally:
        path_search.save_checkpoint = original
    state = load_checkpoint(tmp_path / "killed" / "search_state.pt")["strategy"]
    assert state["generation"] >= 1
    resumed = run_search(cfg, out_dir=tmp_path / "killed", progress=False)
    assert resumed["path"] == full["path"]
    assert resumed["supernet_accuracy"] == full["supernet_accuracy"]


@pytest.mark.skipif(not (DATA_DIR / "cifar10" / "train").is_dir(), reason="real CIFAR-10 JPEGs not in ../shared/data")
def test_spos_on_real_cifar10_macro(tmp_path):
    cfg = _path_config(tmp_path, "spos", dataset="cifar10", data=str(DATA_DIR / "cifar10"), subset=256, epochs=1,
                       max_steps_per_epoch=4, constraint=dict(max_flops=4_000_000))
    result = run_search(cfg, out_dir=tmp_path / "run", progress=False)
    assert result["flops"] <= 4_000_000


SPACE_OPTIONS = {"nasbench-macro": TINY_MACRO, "spos-shufflenetv2": dict(width_multiplier=0.25),
                 "greedynas-mobilenetv2": dict(width_multiplier=0.1), "nas-bench-201-path": dict(C=4, N=1)}


@pytest.mark.parametrize("space", sorted(SPACE_OPTIONS))
def test_every_single_path_space_searches_from_the_cli(tmp_path, space):
    cfg = _path_config(tmp_path, "spos", space=space, space_options=SPACE_OPTIONS[space], epochs=1)
    result = run_search(cfg, out_dir=tmp_path / "run", progress=False)
    built = create_space(space, num_classes=3, input_size=16, **SPACE_OPTIONS[space])
    assert result["params"] == built.params(result["choices"]) and result["flops"] == built.flops(result["choices"])


@pytest.mark.parametrize("space,algo", [("darts", "spos"), ("nasbench-macro", "darts")])
def test_method_and_space_must_match(tmp_path, space, algo):
    with pytest.raises(ValueError, match="cannot search space"):
        run_search(dict(space=space, algo=algo, dataset="imagefolder", data=str(tmp_path)), out_dir=tmp_path / "run",
                   progress=False)
