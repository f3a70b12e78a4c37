"""The ImageNet recipes (pynas/configs/recipes/*.yaml) and their pages (docs/recipes/*.md).

Checks that every recipe parses, uses only configuration keys pynas knows
(top level, ``data``, ``algorithm`` and its ``sampler_options``, ``evaluation``,
``search``, and the retraining keys), that each search recipe builds its
algorithm and search strategy, and that the numbers in each page's settings
table are the ones in its YAML files.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import re
from pathlib import Path

import pytest
import yaml

from pynas.algorithms import ALGORITHMS, create_algorithm
from pynas.config import CONFIG_DIR, load_yaml
from pynas.data.options import DataOptions, data_options
from pynas.search import SAMPLERS, STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
RECIPES = CONFIG_DIR / "recipes"
DOCS = ROOT / "docs" / "recipes"
METHODS = ("spos", "fairnas", "greedynas", "dsnas", "pc-darts")

#: sub-keys of the ``data:`` mapping
DATA_KEYS = {f.name for f in dataclasses.fields(DataOptions)}
#: keys of a retraining configuration (``pynas train --config``)
TRAIN_KEYS = {"dataset", "data", "epochs", "batch_size", "lr", "lr_min", "momentum", "nesterov", "weight_decay",
              "no_wd_bn_bias", "label_smoothing", "lr_schedule", "warmup_epochs", "grad_clip", "auxiliary_weight",
              "drop_path_prob", "amp", "memory_format", "compile", "sync_bn"}
#: ImageNet's training images
IMAGENET_TRAIN = 1_281_167
NPROC = 8  # the recipes' torchrun --nproc_per_node

ROW_KEY = re.compile(r"`(search|train): ([A-Za-z0-9_.]+)`")


def search_file(method: str) -> Path:
    return RECIPES / f"{method}-imagenet-search.yaml"


def train_file(method: str) -> Path:
    return RECIPES / f"{method}-imagenet-train.yaml"


def doc_file(method: str) -> Path:
    return DOCS / f"{method}-imagenet.md"


def all_yaml() -> list[Path]:
    return [f(m) for m in METHODS for f in (search_file, train_file)]


def lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def doc_rows(text: str) -> list[tuple[str, str, str]]:
    """(file kind, dotted key, YAML value cell) of every settings-table row that names a pynas key."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5:
            continue
        match = ROW_KEY.fullmatch(cells[-2])
        if match:
            rows.append((match.group(1), match.group(2), cells[-1]))
    return rows


def init_parameters(cls) -> tuple[set, bool]:
    """Named keyword parameters of every ``__init__`` in ``cls``'s hierarchy, and whether one of them
    forwards arbitrary keywords to the supernet builder (DARTS's ``**supernet_options``)."""
    names, forwards = set(), False
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind is param.VAR_KEYWORD:
                forwards = forwards or param.name == "supernet_options"
            elif param.name != "self":
                names.add(param.name)
    return names, forwards


def accepted_algorithm_keys(algo: str) -> set:
    cls = ALGORITHMS.get(algo)
    names, forwards = init_parameters(cls)
    names |= set(getattr(cls, "defaults", {}) or {})
    if forwards:
        from pynas.supernets.darts_supernet import DartsSupernet

        names |= {p for p in inspect.signature(DartsSupernet.__init__).parameters if p != "self"}
    return names


# -- files ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_recipe_files_exist(method):
    for path in (search_file(method), train_file(method), doc_file(method)):
        assert path.is_file(), f"missing {path.relative_to(ROOT)}"


def test_index_lists_every_recipe():
    text = (DOCS / "README.md").read_text()
    for method in METHODS:
        for path in (search_file(method), train_file(method)):
            assert str(path.relative_to(ROOT)) in text, f"docs/recipes/README.md does not name {path.name}"
        assert f"({doc_file(method).name})" in text, f"docs/recipes/README.md does not link {doc_file(method).name}"


@pytest.mark.parametrize("path", all_yaml(), ids=lambda p: p.name)
def test_recipe_parses(path):
    config = load_yaml(path)
    assert config, f"{path.name} is empty"
    assert config["dataset"] == "imagenet"


# -- search recipes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_search_recipe_keys(method):
    config = load_yaml(search_file(method))
    known = set(load_yaml(CONFIG_DIR / "search.yaml"))
    unknown = set(config) - known
    assert not unknown, f"{method}: top-level keys unknown to search.yaml: {sorted(unknown)}"
    assert config["algo"] == method
    assert isinstance(config["data"], dict), "data must be a mapping"
    assert set(config["data"]) <= DATA_KEYS, f"{method}: unknown data keys {sorted(set(config['data']) - DATA_KEYS)}"
    data_options(config["data"])  # the values pass the run's own checks


@pytest.mark.parametrize("method", METHODS)
def test_search_recipe_algorithm_keys(method):
    config = load_yaml(search_file(method))
    algorithm = config.get("algorithm") or {}
    unknown = set(algorithm) - accepted_algorithm_keys(method)
    assert not unknown, f"{method}: algorithm keys its constructor does not take: {sorted(unknown)}"
    sampler_options = algorithm.get("sampler_options")
    if sampler_options:
        sampler = SAMPLERS.get(ALGORITHMS.get(method).sampler_name)
        names, _ = init_parameters(sampler)
        assert set(sampler_options) <= names, f"{method}: unknown sampler_options {set(sampler_options) - names}"


@pytest.mark.parametrize("method", METHODS)
def test_search_recipe_sections(method):
    from pynas.commands.path_search import EVALUATION_KEYS

    config = load_yaml(search_file(method))
    assert set(config.get("evaluation") or {}) <= set(EVALUATION_KEYS)
    search = config.get("search") or {}
    if search:
        strategy = STRATEGIES.get(ALGORITHMS.get(method).strategy)
        names, _ = init_parameters(strategy)
        assert set(search) <= names, f"{method}: unknown search options {sorted(set(search) - names)}"
    from pynas.spaces.path_space import Constraint

    Constraint(**(config.get("constraint") or {}))  # raises on unknown keys or bad values


@pytest.mark.parametrize("method", METHODS)
def test_search_recipe_sets_the_global_batch_rate(method):
    """lr: null would scale the paper's rate by the per-process batch, 1/8 of the global one."""
    algorithm = load_yaml(search_file(method))["algorithm"]
    rate = algorithm.get("w_lr", algorithm.get("lr"))
    assert isinstance(rate, float) and rate > 0, f"{method}: set the learning rate explicitly"
    assert load_yaml(search_file(method))["batch_size"] * NPROC == 1024


@pytest.mark.parametrize("method", METHODS)
def test_search_recipe_builds(method):
    """The resolved configuration builds the algorithm and its search strategy (no data needed)."""
    from pynas.commands.path_search import create_path_space, evaluation_options
    from pynas.commands.search import resolve
    from pynas.search import create_strategy
    from pynas.spaces import create_space
    from pynas.spaces.path_space import Constraint

    config = load_yaml(search_file(method))
    config["data"] = None  # the data section is not this test's business
    cfg = resolve(config)
    kwargs = dict(cfg["algorithm"])
    kwargs.setdefault("epochs", cfg["epochs"])
    if method == "pc-darts":
        algorithm = create_algorithm(method, space=create_space(cfg["space"]), num_classes=1000, in_channels=3,
                                     amp=cfg["amp"], seed=0, **kwargs)
        assert algorithm.supernet.stem_kind == "imagenet"
        return
    space = create_path_space(cfg["space"], num_classes=1000, in_channels=3, input_size=224,
                              options=cfg.get("space_options") or {})
    kwargs.setdefault("batch_size", cfg["batch_size"])
    kwargs.setdefault("steps_per_epoch", 1202)
    algorithm = create_algorithm(method, space=space, amp=cfg["amp"], seed=0,
                                 constraint=Constraint(**(cfg.get("constraint") or {})),
                                 supernet_options=cfg.get("supernet") or {}, **kwargs)
    assert algorithm.lr == kwargs["lr"]
    evaluation_options(cfg)
    if method != "dsnas":  # DSNAS derives its path from alpha and takes no search options
        options = dict(algorithm.strategy_defaults())
        options.update(cfg.get("search") or {})
        create_strategy(algorithm.strategy, space=space, score_fn=lambda p: p.sum(1).float(),
                        constraint=algorithm.constraint, seed=0, **options)


def test_fairnas_a_is_a_path_of_the_recipe_space():
    """The FairNAS recipe's stage widths make FairNAS-A (models/FairNAS_A.py) a path; its FLOPs are the cap."""
    from pynas.spaces import create_space

    config = load_yaml(search_file("fairnas"))
    space = create_space(config["space"], **config["space_options"])
    fairnas_a = [4, 0, 6, 6, 4, 1, 5, 0, 0, 5, 5, 2, 1, 2, 2, 1, 1, 5, 1, 5, 3]
    assert space.flops(fairnas_a) == config["constraint"]["max_flops"] == 388_122_848


def test_dsnas_threshold_is_290_mflops_of_blocks():
    from pynas.spaces import create_space

    space = create_space("spos-shufflenetv2")
    fixed, _ = space._cost_tables()
    assert load_yaml(search_file("dsnas"))["constraint"]["max_flops"] == 290_000_000 + fixed.macs


@pytest.mark.parametrize("path, iterations, train_images, batch", [
    (search_file("spos"), 150_000, IMAGENET_TRAIN - 50_000, 1024),       # Supernet/train.py:68
    (train_file("spos"), 300_000, IMAGENET_TRAIN, 1024),                 # Evaluation/template/train.py:70
    (search_file("greedynas"), 150_000, IMAGENET_TRAIN - 50_000, 1024),  # mmrazor PR: max_iters
], ids=["spos-search", "spos-train", "greedynas-search"])
def test_epochs_cover_the_authors_iterations(path, iterations, train_images, batch):
    config = load_yaml(path)
    assert config["batch_size"] * NPROC == batch
    steps = train_images // batch
    assert abs(config["epochs"] * steps - iterations) <= steps / 2, \
        f"{path.name}: {config['epochs']} epochs x {steps} steps is not the authors' {iterations} iterations"


# -- retraining recipes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_train_recipe_keys(method):
    from pynas.commands.train import TRAIN_DEFAULTS

    config = load_yaml(train_file(method))
    known = TRAIN_KEYS | set(TRAIN_DEFAULTS)
    unknown = set(config) - known
    assert not unknown, f"{method}: unknown retraining keys {sorted(unknown)}"
    assert set(config.get("data") or {}) <= DATA_KEYS


# -- pages ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_doc_names_its_files_and_sections(method):
    text = doc_file(method).read_text()
    for path in (search_file(method), train_file(method)):
        assert str(path.relative_to(ROOT)) in text, f"{doc_file(method).name} does not name {path.name}"
    for heading in ("## What it reproduces", "## Commands", "## Settings", "## Expected time", "## Deviations"):
        assert heading in text, f"{doc_file(method).name} lacks {heading!r}"
    assert "--nproc_per_node=8" in text


@pytest.mark.parametrize("method", METHODS)
def test_doc_table_matches_yaml(method):
    configs = {"search": load_yaml(search_file(method)), "train": load_yaml(train_file(method))}
    rows = doc_rows(doc_file(method).read_text())
    assert len(rows) >= 12, f"{doc_file(method).name}: only {len(rows)} table rows name a pynas key"
    assert {kind for kind, _, _ in rows} == {"search", "train"}
    for kind, key, cell in rows:
        try:
            actual = lookup(configs[kind], key)
        except KeyError:
            pytest.fail(f"{doc_file(method).name}: {kind} key {key!r} is not in the {kind} YAML")
        stated = yaml.safe_load(cell)
        assert same(stated, actual), f"{doc_file(method).name}: {kind} {key} is {cell} in the table, {actual!r} in YAML"


def test_doc_rows_parser_reads_a_row():
    row = "| learning rate | 0.5 | `src/Supernet/train.py:69` | `search: algorithm.lr` | 0.5 |"
    assert doc_rows(row) == [("search", "algorithm.lr", "0.5")]
    assert doc_rows("| setting | value | source | — | — |") == []
