"""Differentiable cell searches: every algorithm on every cell space, derivation, resume, CLI."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from pynas.algorithms import ALGORITHMS, create_algorithm, list_algorithms
from pynas.algorithms.single_path import SinglePathSearch
from pynas.commands.search import run_search
from pynas.spaces import create_space
from pynas.spaces.genotypes import DartsGenotype, NB201Genotype, load_genotype
from pynas.training.checkpoint import load_checkpoint
from conftest import DATA_DIR

SPACES = ["darts", "nas-bench-201"]
# The cell (differentiable) methods; single-path ones are tested in test_path_algorithms.py.
CELL_ALGORITHMS = [n for n in list_algorithms()
                   if not (isinstance(ALGORITHMS.get(n), type) and issubclass(ALGORITHMS.get(n), SinglePathSearch))]
TINY = {"darts": dict(C=8, layers=3), "nas-bench-201": dict(C=8, layers=1)}


def _algo(name, space_name, **kw):
    space = create_space(space_name)
    extra = dict(TINY[space_name])
    if name == "pc-darts":
        extra["warmup_epochs"] = 0
    if name != "ftso":
        extra["epochs"] = 2
    extra.update(kw)
    return create_algorithm(name, space=space, num_classes=10, **extra)


def _batch(n=8, hw=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, hw, hw, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("space_name", SPACES)
@pytest.mark.parametrize("name", CELL_ALGORITHMS)
def test_step_moves_architecture_and_gives_valid_genotype(name, space_name):
    # A skip-only NAS-Bench-201 cell is degenerate at uniform edge weights (every node equals the cell
    # input, so dL/dbeta is exactly 0: see pynas/algorithms/ftso.py); a conv topology op carries a signal.
    extra = dict(topology_op="nor_conv_3x3") if (name, space_name) == ("ftso", "nas-bench-201") else {}
    algo = _algo(name, space_name, **extra)
    # FTSO's default topology update keeps beta at zero and moves the edges' scores (-mean dL/dbeta).
    arch = (lambda: [algo.search.scores()]) if name == "ftso" else algo.supernet.arch_parameters
    before = [p.detach().clone() for p in arch()]
    metrics = algo.step(_batch(seed=1), _batch(seed=2))
    assert torch.isfinite(metrics["loss"])
    after = arch()
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "architecture parameters did not move"
    genotype = algo.genotype()
    assert isinstance(genotype, DartsGenotype if space_name == "darts" else NB201Genotype)
    assert type(genotype).parse(str(genotype)) == genotype if space_name == "darts" else \
        NB201Genotype.from_arch_str(str(genotype)) == genotype


@pytest.mark.parametrize("space_name", SPACES)
def test_second_order_differs_from_first_order(space_name):
    torch.manual_seed(0)
    first = _algo("darts", space_name, order=1, seed=3)
    second = _algo("darts", space_name, order=2, seed=3)
    second.supernet.load_state_dict(first.supernet.state_dict())
    for algo in (first, second):
        algo.step(_batch(seed=1), _batch(seed=2))
    a1, a2 = first.supernet.alpha, second.supernet.alpha
    assert not torch.allclose(a1, a2)


def test_second_order_hessian_vector_product_matches_autograd():
    # The finite difference of DARTS Eq. 8 against the exact mixed second derivative.
    # A small radius: BN on a 4-sample batch is strongly curved at DARTS's R = 0.01.
    algo = _algo("darts", "nas-bench-201", order=2, hvp_radius=1e-5)
    net = algo.supernet.double()
    x, y = _batch(4)
    x = x.double()
    arch = net.arch_parameters()
    weights = [p for p in net.weight_parameters() if p.requires_grad]
    v = [torch.randn_like(w) * 1e-2 for w in weights]
    approx = algo._hessian_vector_product(v, x, y, arch, weights)
    loss = algo.criterion(net(x), y)
    gw = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    dot = sum((g * d).sum() for g, d in zip(gw, v) if g is not None)
    exact = torch.autograd.grad(dot, arch)
    torch.testing.assert_close(approx[0], exact[0], rtol=1e-3, atol=1e-5)


def test_pc_darts_warmup_freezes_architecture():
    algo = _algo("pc-darts", "darts", warmup_epochs=1)
    before = algo.supernet.alpha.detach().clone()
    algo.step(_batch(), _batch(seed=2))
    assert torch.equal(before, algo.supernet.alpha)
    algo.end_epoch()
    algo.step(_batch(), _batch(seed=2))
    assert not torch.equal(before, algo.supernet.alpha)


def test_pc_darts_rejects_second_order():
    with pytest.raises(ValueError, match="first-order only"):
        _algo("pc-darts", "darts", order=2)


def test_ftso_stages():
    algo = _algo("ftso", "darts", operator="search", operator_epochs=1)
    assert algo.stage == "topology" and algo.supernet.primitives == ("skip_connect",)
    algo.step(_batch(), _batch(seed=2))
    algo.end_epoch()
    assert algo.stage == "operator"
    kept = algo.topology["normal"]
    assert len(kept) == 8  # two edges per node
    algo.step(_batch(), _batch(seed=2))
    genotype = algo.genotype()
    space = create_space("darts")
    assert [j for _, j in genotype.normal] == [space.edges[e][1] for e in kept]


def test_ftso_fixed_operator_uses_paper_default():
    algo = _algo("ftso", "darts")
    algo.step(_batch(), _batch(seed=2))
    algo.end_epoch()
    assert algo.stage == "done"
    assert {op for op, _ in algo.genotype().normal} == {"sep_conv_3x3"}


def test_ftso_topology_follows_edge_weights():
    algo = _algo("ftso", "nas-bench-201", edges_per_node=1, topology_update="sgd")  # ranks by beta
    with torch.no_grad():
        algo.supernet.beta.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0, 0.0, 5.0]))
    assert str(algo.genotype()) == "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|nor_conv_3x3~2|"


def test_bad_algorithm_arguments():
    with pytest.raises(ValueError, match="order must be one of"):
        _algo("darts", "darts", order=3)
    with pytest.raises(ValueError, match="unknown search algorithm"):
        create_algorithm("nope", space=create_space("darts"), num_classes=10)
    with pytest.raises(ValueError, match="operator must be one of"):
        _algo("ftso", "darts", operator="guess")
    with pytest.raises(ValueError, match="stem must be one of"):
        _algo("darts", "darts", stem="mnist")
    # NAS-Bench-201's cells per stage are `layers`, as for DARTS; N is named in the message.
    with pytest.raises(ValueError, match=r"N \(cells per stage\).*layers"):
        _algo("darts", "nas-bench-201", N=1)


def _tiny_config(tmp_path, **over):
    cfg = dict(space="darts", algo="darts", dataset="imagefolder", data=str(_image_folder(tmp_path)), batch_size=8,
               epochs=2, device="cpu", pictures=False, algorithm=dict(C=4, layers=3))
    cfg.update(over)
    return cfg


def _image_folder(tmp_path: Path) -> Path:
    from PIL import Image

    root = tmp_path / "images" / "train"
    g = torch.Generator().manual_seed(0)
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(16):
            pixels = (torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return tmp_path / "images"


def test_resume_after_kill_is_exact(tmp_path):
    cfg = _tiny_config(tmp_path, checkpoint_every=2)
    full = run_search(cfg, out_dir=tmp_path / "full", progress=False)
    # Same run, "killed" after the first mid-epoch checkpoint: keep that checkpoint, rerun.
    killed = tmp_path / "killed"
    cfg_one = dict(cfg, max_steps_per_epoch=None)
    import pynas.training.search as search_mod

    class Stop(Exception):
        pass

    original = search_mod.SearchRunner._save
    calls = {"n": 0}

    def save_then_die(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == 1:
            raise Stop

    search_mod.SearchRunner._save = save_then_die
    try:
        with pytest.raises(Stop):
            run_search(cfg_one, out_dir=killed, progress=False)
    finally:
        search_mod.SearchRunner._save = original
    resumed = run_search(cfg_one, out_dir=killed, progress=False)
    assert resumed["resumed"]
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["algorithm"]["supernet"]["alpha"]
    b = load_checkpoint(killed / "checkpoint.pt")["algorithm"]["supernet"]["alpha"]
    assert torch.equal(a, b)
    assert [e["loss"] for e in full["epochs"]] == [e["loss"] for e in resumed["epochs"]]
    assert resumed["genotype"] == full["genotype"]


def test_run_dir_contents(tmp_path):
    pytest.importorskip("matplotlib")
    cfg = _tiny_config(tmp_path, epochs=1, pictures=True)
    result = run_search(cfg, out_dir=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "genotype.json", "result.json", "cell.png",
                 "arch_weights.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert str(load_genotype(run / "genotype.json")) == result["genotype"]
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(e["event"] == "epoch" and "arch" in e for e in epochs)


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        run_search(_tiny_config(tmp_path, data=str(tmp_path / "nowhere")), out_dir=tmp_path / "run", progress=False)


@pytest.mark.skipif(not (DATA_DIR / "cifar10" / "train").is_dir(), reason="real CIFAR-10 JPEGs not in ../shared/data")
@pytest.mark.parametrize("algo,space", [("pc-darts", "darts"), ("darts", "nas-bench-201"), ("ftso", "darts")])
def test_few_steps_on_real_cifar10(tmp_path, algo, space):
    algorithm = dict(C=4, layers=3 if space == "darts" else 1)
    if algo == "pc-darts":
        algorithm["warmup_epochs"] = 0
    cfg = dict(space=space, algo=algo, dataset="cifar10", data=str(DATA_DIR / "cifar10"), subset=256,
               batch_size=16, device="cpu", pictures=False, max_steps_per_epoch=4, algorithm=algorithm)
    if algo != "ftso":
        cfg["epochs"] = 1
    result = run_search(cfg, out_dir=tmp_path / "run", progress=False)
    history = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    arch = [e["arch"] for e in history if e["event"] == "epoch"][-1]
    key = "beta" if algo == "ftso" else "alpha"
    weights = torch.tensor(arch[key])
    uniform = torch.full_like(weights, 1.0 / weights.shape[-1]) if key == "alpha" else None
    if uniform is not None:
        assert not torch.allclose(weights, uniform, atol=1e-6), "architecture weights never moved"
    genotype = load_genotype(tmp_path / "run" / "genotype.json")
    assert str(genotype) == result["genotype"]


def test_imagenet_stem_supernet_downsamples_8x_before_the_cells():
    from pynas.spaces.darts_ops import FactorizedReduce

    algo = _algo("pc-darts", "darts", stem="imagenet")
    net = algo.supernet
    s0, s1 = net.stem_states(torch.randn(2, 3, 64, 64))
    assert s0.shape[-1] == 16 and s1.shape[-1] == 8
    assert isinstance(net.cells[0].preprocess0, FactorizedReduce)  # s0 is twice s1's size
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    before = net.alpha.detach().clone()
    algo.step((x, y), (x, y))
    assert not torch.equal(before, net.alpha.detach())


def test_channels_last_search_matches_the_nchw_run(tmp_path):
    """memory_format=channels_last: same losses and architecture (to rounding) as the NCHW run."""
    base = run_search(_tiny_config(tmp_path, epochs=1, max_steps_per_epoch=3), out_dir=tmp_path / "nchw",
                      progress=False)
    nhwc = run_search(_tiny_config(tmp_path, epochs=1, max_steps_per_epoch=3, memory_format="channels_last"),
                      out_dir=tmp_path / "nhwc", progress=False)
    assert nhwc["epochs"][0]["loss"] == pytest.approx(base["epochs"][0]["loss"], rel=1e-4)
    a = load_checkpoint(tmp_path / "nchw" / "checkpoint.pt")["algorithm"]["supernet"]["alpha"]
    b = load_checkpoint(tmp_path / "nhwc" / "checkpoint.pt")["algorithm"]["supernet"]["alpha"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bad_memory_format_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="memory_format must be one of preserve, channels_last"):
        run_search(_tiny_config(tmp_path, memory_format="nhwc"), out_dir=tmp_path / "run", progress=False)
