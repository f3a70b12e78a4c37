"""``pynas search``: a cell search from a resolved configuration into a run dir.

The run dir receives the resolved ``config.yaml``, ``metrics.jsonl`` (and
TensorBoard events when installed), ``checkpoint.pt`` (resumable),
``genotype.json``, ``result.json`` and pictures of the cell and of the
architecture weights over the epochs.

Under ``torchrun --nproc_per_node=N -m pynas.cli search ...`` the N processes
join one process group here (:func:`pynas.training.distributed.init_from_env`,
before the dispatch, so single-path searches get it too), each trains on its
shard of every global batch of N x ``batch_size`` samples, and only rank 0
writes the run dir.

SIGTERM and SIGINT (preemption, Ctrl-C) stop the run at the next step
boundary with its checkpoint written (:mod:`pynas.training.guard`): the
function raises :class:`~pynas.training.guard.Preempted`, the CLI exits
with 128 + the signal's number, and the same command resumes. A NaN or Inf
in training raises :class:`~pynas.training.guard.NonFiniteError` before
anything (checkpoint, ``genotype.json``, ``result.json``) is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pynas.algorithms import ALGORITHMS, create_algorithm
from pynas.data.loader import MEMORY_FORMATS
from pynas.data.options import data_options
from pynas.data.run import load_run_data, write_split_record
from pynas.config import CONFIG_DIR, load_yaml, merge
from pynas.spaces import create_space
from pynas.training import distributed
from pynas.training.guard import StopSignals
from pynas.training.run_config import record_run_config
from pynas.training.search import CHECKPOINT, SearchRunner, write_json

from .common import place_supernet, resolve_device, seed_everything


def default_config() -> dict:
    return load_yaml(CONFIG_DIR / "search.yaml")


def resolve(config: dict) -> dict:
    """Fill the algorithm's paper defaults for what the config leaves open."""
    cfg = merge(default_config(), config)
    check_pairing(cfg["space"], cfg["algo"])
    cfg["data"] = data_options(cfg.get("data")).as_dict()  # checked here, before any work
    if cfg.get("memory_format") not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {cfg.get('memory_format')!r}")
    defaults = getattr(ALGORITHMS.get(cfg["algo"]), "defaults", {})
    if cfg.get("batch_size") is None:
        cfg["batch_size"] = defaults.get("batch_size", 64)
    if cfg.get("epochs") is None and "epochs" in defaults and cfg["algo"] != "ftso":
        cfg["epochs"] = defaults["epochs"]
    return cfg


def check_pairing(space: str, algo: str) -> None:
    """Cell methods search cell spaces and single-path methods single-path spaces; say so early."""
    from pynas.algorithms.single_path import SinglePathSearch

    factory = ALGORITHMS.get(algo)
    path_algo = isinstance(factory, type) and issubclass(factory, SinglePathSearch)
    if path_algo != is_path_space(space):
        kind = "a single-path" if path_algo else "a cell"
        raise ValueError(f"algo {algo!r} is {kind} method and cannot search space {space!r}; "
                         f"use {'nasbench-macro, spos-shufflenetv2, greedynas-mobilenetv2 or nas-bench-201-path' if path_algo else 'darts or nas-bench-201'}")


def is_path_space(name: str) -> bool:
    from pynas.spaces import SPACES
    from pynas.spaces.path_space import PathSpace

    factory = SPACES.get(name)
    return isinstance(factory, type) and issubclass(factory, PathSpace)


def run_search(config: dict, *, out_dir: Path, progress: bool = True) -> dict:
    # Stop signals are recorded, not fatal, from here to the end of the run (both phases of a path search).
    with StopSignals() as stop:
        return _run_search(config, out_dir=out_dir, progress=progress, stop=stop)


def _run_search(config: dict, *, out_dir: Path, progress: bool, stop: StopSignals) -> dict:
    cfg = resolve(config)
    # torchrun: join the process group (no-op in a single process), on the run's kind of device.
    rank_device = resolve_device(cfg["device"])
    distributed.init_from_env(device=rank_device.type)
    if distributed.world()[1] > 1 and rank_device.type == "cuda" and rank_device.index is not None \
            and rank_device.index != torch.cuda.current_device():
        raise ValueError(f"device {cfg['device']!r} pins every rank to one GPU; under torchrun use 'auto' or "
                         f"'cuda' (each rank then uses cuda:LOCAL_RANK)")
    if is_path_space(cfg["space"]):
        from .path_search import run_path_search

        return run_path_search(cfg, out_dir=out_dir, progress=progress, stop=stop)
    main = distributed.is_main()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Before anything is built: a resume with other settings stops here, naming them, not in load_state_dict.
    record_run_config(out_dir, cfg, resuming=(out_dir / CHECKPOINT).is_file(), main=main)
    seed_everything(cfg["seed"])
    device = resolve_device(cfg["device"])

    options = data_options(cfg.get("data"))
    loaded = load_run_data(cfg["dataset"], options, device=device, seed=cfg["seed"], batch_size=cfg["batch_size"],
                           valid_fraction=cfg["valid_fraction"], subset=cfg.get("subset"),
                           augment=bool(cfg["augment"]), augment_valid=True, memory_format=cfg["memory_format"])
    if main:
        write_split_record(out_dir, loaded, options, dataset=cfg["dataset"], seed=cfg["seed"])
    data, train_loader, valid_loader = loaded.data, loaded.train_loader, loaded.valid_loader
    load_seconds = loaded.seconds

    space = create_space(cfg["space"])
    kwargs: dict[str, Any] = dict(cfg.get("algorithm") or {})
    if cfg.get("epochs") is not None:
        kwargs.setdefault("epochs", cfg["epochs"])
    algorithm = create_algorithm(cfg["algo"], space=space, num_classes=data.num_classes,
                                 in_channels=data.image_shape[0], amp=cfg["amp"], seed=cfg["seed"], **kwargs)
    place_supernet(algorithm.supernet, device, cfg["memory_format"])
    runner = SearchRunner(algorithm=algorithm, train_loader=train_loader, valid_loader=valid_loader, out_dir=out_dir,
                          checkpoint_every=cfg["checkpoint_every"], max_steps_per_epoch=cfg.get("max_steps_per_epoch"),
                          progress=progress, stop=stop)
    resumed = runner.resume()
    outcome = runner.run()
    loaded.close()
    genotype = algorithm.genotype()
    if main:
        genotype.save(out_dir / "genotype.json")
    result = {
        "space": cfg["space"], "algo": cfg["algo"], "dataset": cfg["dataset"], "genotype": str(genotype),
        "search_seconds": outcome["search_seconds"], "data_seconds": load_seconds,
        "seconds_per_epoch": outcome["search_seconds"] / max(len(outcome["history"]), 1),
        "epochs": outcome["history"], "resumed": resumed, "device": str(device),
        "world_size": distributed.world()[1],
    }
    if main:
        write_json(out_dir / "result.json", result)
        if cfg.get("pictures", True):
            result["pictures"] = _draw(out_dir, genotype, space)
            write_json(out_dir / "result.json", result)
    distributed.barrier()  # no rank returns (and exits) before rank 0 has written the results
    return result


def _draw(out_dir: Path, genotype, space) -> list[str]:
    """The found cell and the architecture weights over the epochs (needs matplotlib)."""
    try:
        from pynas.viz import draw_cell, plot_arch_weights, read_history
    except ImportError as err:  # pictures are optional output
        return [f"skipped: {err}"]
    paths = [str(draw_cell(genotype, out_dir / "cell.png"))]
    history = read_history(out_dir / "metrics.jsonl")
    if history:
        # FTSO's stages search different op sets: plot the epochs of the last stage.
        primitives = history[-1].get("primitives", list(space.primitives))
        history = [h for h in history if h.get("primitives", list(space.primitives)) == primitives]
        paths.append(str(plot_arch_weights(history, out_dir / "arch_weights.png", primitives=primitives,
                                           edges=space.edges)))
    return paths
