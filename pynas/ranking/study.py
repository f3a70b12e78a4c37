"""A ranking-correlation study: how well does a trained single-path supernet rank architectures?

One-shot NAS assumes that a path's accuracy with the supernet's shared weights ranks architectures
as their stand-alone training does. Yu et al. ("Evaluating the Search Phase of Neural Architecture
Search", ICLR 2020) measured that with Kendall's tau against fully trained networks; the
single-path ranking study ("Exploring Single-Path Architecture Search Ranking Correlations", ICLR
2021 submission) did so on NAS-Bench-201 and NAS-Bench-Macro (Su et al., CVPR 2021), varying the
path sampling strategy, supernet width and depth, regularisation and augmentation, and how batch
norm is handled at evaluation; EPS (Li et al., ICLR 2021 submission) and few-shot NAS (Zhao et al.,
ICML 2021) report such correlations for their fixes. :func:`run_rank_study` runs one such
measurement:

1. train the supernet with any single-path algorithm (:class:`~pynas.training.search.SearchRunner`:
   ``checkpoint.pt``, resumable), or load one (``checkpoint``);
2. evaluate the chosen architectures (``archs``: all, or a seeded uniform sample of N) with
   :func:`pynas.evaluation.evaluate_paths` (batched, BN recalibrated per path unless
   ``evaluation.bn`` says otherwise) on fixed validation batches, after training and, with
   ``eval_every``, every few epochs during it; each evaluation is cached in
   ``evaluations/epoch_NNNN.json``, so a resumed run re-evaluates nothing;
3. compare with the ground-truth table (:mod:`pynas.ranking.ground_truth`): every metric of
   :mod:`pynas.metrics` with its bootstrap interval (:func:`pynas.ranking.report.ranking_metrics`).

Outputs in the run dir: ``config.yaml`` (resolved), ``ranking.json`` (per architecture its supernet
accuracy and ground truth; the metrics; the settings and the factors studied), ``scatter.png``,
``correlation_over_epochs.json`` and ``.png`` (with matplotlib; otherwise a note in ranking.json),
and the runner's ``checkpoint.pt`` / ``metrics.jsonl``.

Factors (config keys): path sampling = ``algo`` (spos, fairnas, greedynas, randomnas, eps, dsnas,
few-shot); few-shot split = ``algo: few-shot`` with ``algorithm.split_layer`` /
``algorithm.split_epoch``; supernet width/depth = ``space_options`` (``init_channels``,
``head_channels`` for nasbench-macro; ``C``, ``N`` for nas-bench-201-path); regularisation and
augmentation = ``augment`` and ``algorithm.weight_decay``; BN policy = ``evaluation.bn`` (or its synonym
``evaluation.protocol``: recalibrate | running | batch; default the method's own) and
``evaluation.recalibrate_batches``; cell topology shared or not = ``cell_topology`` (nas-bench-201-path
ranks ``shared`` only: NAS-Bench-201's ground truth covers networks whose cells share one topology; the
space's ``cell_topology: independent`` can be searched, not ranked against the table).
"""
from __future__ import annotations

import json
import math
import os
from numbers import Real
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from pynas.algorithms import ALGORITHMS
from pynas.algorithms.single_path import SinglePathSearch
from pynas.commands.common import resolve_device, seed_everything
from pynas.commands.path_search import (
    build_path_algorithm,
    create_path_space,
    evaluation_batches,
    evaluation_options,
    evaluate_kwargs,
    load_path_data,
)
from pynas.evaluation import evaluate_paths
from pynas.metrics.bootstrap import check_options
from pynas.training.checkpoint import load_checkpoint
from pynas.training.run_config import record_run_config
from pynas.training.search import CHECKPOINT, SearchRunner, write_json

from .ground_truth import GROUND_TRUTH, ground_truth, load_table
from .plots import draw_study_plots
from .report import METRIC_NAMES, check_fractions, ranking_metrics

__all__ = ["run_rank_study", "select_archs", "check_study_config", "CELL_TOPOLOGIES", "GT_DATASET_OF"]

CELL_TOPOLOGIES = ("shared", "independent")
#: training dataset -> the ground-truth column it corresponds to
GT_DATASET_OF = {"cifar10": "cifar10", "nb201-cifar10": "cifar10"}
EVALUATIONS = "evaluations"


# -- configuration ------------------------------------------------------------------------------
def select_archs(size: int, archs: Any, *, seed: int, space_name: str = "the space") -> np.ndarray:
    """Indices (sorted) of the architectures to evaluate: ``"all"``, or a seeded uniform sample of
    ``archs`` distinct ones."""
    if isinstance(archs, str):
        if archs != "all":
            raise ValueError(f"archs must be 'all' or a positive int, got {archs!r}")
        return np.arange(size, dtype=np.int64)
    if isinstance(archs, bool) or not isinstance(archs, int):
        raise TypeError(f"archs must be 'all' or a positive int, got {type(archs).__name__} {archs!r}")
    if archs < 2:
        raise ValueError(f"archs must be at least 2 (a correlation needs two architectures), got {archs}")
    if archs > size:
        raise ValueError(f"archs={archs} is larger than {space_name}, which has {size} architectures; "
                         f"use archs=all or at most {size}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(size, size=archs, replace=False)).astype(np.int64)


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < float(value) <= 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")
    return float(value)


def check_study_config(cfg: dict) -> dict:
    """Check the study's own keys (the data, algorithm and evaluation keys are checked where they are
    used); returns the ground-truth dataset, the arch seed and the cell topology it resolves to."""
    space = cfg.get("space")
    if space not in GROUND_TRUTH:
        raise ValueError(f"space {space!r} has no ground-truth table; pynas rank works on "
                         + ", ".join(f"{s} ({e['benchmark']})" for s, e in GROUND_TRUTH.items()))
    algo = cfg.get("algo")
    factory = ALGORITHMS.get(algo) if isinstance(algo, str) else None
    if factory is None:
        raise TypeError(f"algo must be an algorithm name, got {algo!r}")
    if not (isinstance(factory, type) and issubclass(factory, SinglePathSearch)):
        singles = [n for n in ALGORITHMS.names() if isinstance(ALGORITHMS.get(n), type)
                   and issubclass(ALGORITHMS.get(n), SinglePathSearch)]
        raise ValueError(f"algo {algo!r} is not a single-path algorithm; ranking studies train one of "
                         f"{', '.join(singles)}")
    gt_dataset = cfg.get("gt_dataset")
    if gt_dataset is None:
        gt_dataset = GT_DATASET_OF.get(cfg.get("dataset"))
        if gt_dataset is None:
            raise ValueError(f"gt_dataset: the training dataset {cfg.get('dataset')!r} has no column in the "
                             f"{GROUND_TRUTH[space]['benchmark']} table; name the column to rank against "
                             f"(one of {', '.join(GROUND_TRUTH[space]['datasets'])})")
    topology = cfg.get("cell_topology")
    if space == "nas-bench-201-path":
        topology = "shared" if topology is None else topology
        if topology not in CELL_TOPOLOGIES:
            raise ValueError(f"cell_topology must be one of {', '.join(CELL_TOPOLOGIES)}, got {topology!r}")
        if topology != "shared":
            raise ValueError(f"cell_topology={topology!r}: NAS-Bench-201's ground truth holds only networks whose "
                             f"cells share one topology, so a study ranks shared cells only (independent cells "
                             f"can be searched: pynas search --space nas-bench-201-path "
                             f"--set space_options.cell_topology=independent)")
        options_topology = (cfg.get("space_options") or {}).get("cell_topology", "shared")
        if options_topology != "shared":
            raise ValueError(f"space_options.cell_topology={options_topology!r}: NAS-Bench-201's ground truth holds "
                             f"only networks whose cells share one topology; a ranking study needs 'shared'")
    elif topology is not None:
        raise ValueError(f"cell_topology applies to nas-bench-201-path only (cells repeated in a skeleton); "
                         f"{space} has none, leave it null")
    arch_seed = cfg.get("arch_seed")
    arch_seed = cfg["seed"] if arch_seed is None else _nonneg_int(arch_seed, "arch_seed")
    _nonneg_int(cfg.get("eval_every", 0), "eval_every")
    _fraction(cfg.get("scatter_top", 0.1), "scatter_top")
    check_fractions(cfg.get("top_fractions"))
    check_options(cfg.get("n_resamples"), cfg.get("confidence"), cfg["seed"])  # the bootstrap's, before training
    checkpoint = cfg.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path or null, got {type(checkpoint).__name__}")
    return {"gt_dataset": gt_dataset, "arch_seed": arch_seed, "cell_topology": topology}


# -- evaluations, cached per epoch ------------------------------------------------------------------
class _Evaluator:
    """Scores the chosen paths with the algorithm's current supernet; one JSON file per evaluation."""

    def __init__(self, out_dir: Path, *, algorithm, indices: np.ndarray, paths: torch.Tensor, batches, evaluation,
                 amp: str, progress: bool):
        self.folder = Path(out_dir) / EVALUATIONS
        self.algorithm, self.indices, self.paths = algorithm, indices, paths
        self.recal, self.valid = batches
        self.evaluation, self.amp, self.progress = evaluation, amp, progress

    def file(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def cached(self, key: str, *, source: Optional[dict] = None) -> Optional[dict]:
        file = self.file(key)
        if not file.is_file():
            return None
        try:
            record = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{file}: unreadable cached evaluation ({err}); delete it to re-evaluate") from None
        if record.get("indices") != self.indices.tolist() or record.get("evaluation") != self.evaluation:
            raise ValueError(f"{file} was evaluated on other architectures or with other evaluation settings "
                             f"than this config asks for; use a fresh run dir (--out) or delete {self.folder}")
        if source is not None and record.get("source") != source:
            return None  # another checkpoint file: evaluate again
        return record

    def run(self, key: str, *, epoch: Optional[int], source: Optional[dict] = None) -> dict:
        found = self.cached(key, source=source)
        if found is not None:
            return found
        result = evaluate_paths(self.algorithm.supernet, self.paths, self.valid, recalibrate_data=self.recal,
                                amp=self.amp, **evaluate_kwargs(self.evaluation))
        record = {"epoch": epoch, "indices": self.indices.tolist(), "evaluation": self.evaluation,
                  "accuracy": result.accuracy.tolist(), "loss": result.loss.tolist(), "samples": result.samples,
                  "seconds": result.seconds, "source": source}
        write_json(self.file(key), record)
        if self.progress:
            print(f"evaluated {len(self.indices)} architectures at epoch {epoch} in {result.seconds:.1f} s",
                  flush=True)
        return record

    def epochs(self) -> List[dict]:
        """Every cached per-epoch evaluation, by epoch."""
        records = []
        for file in sorted(self.folder.glob("epoch_*.json")):
            record = self.cached(file.stem)
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: r["epoch"])


def _epoch_key(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


def _load_supernet(algorithm, path) -> Optional[int]:
    """Load a run's ``checkpoint.pt`` (the algorithm's whole state) or a bare supernet state dict;
    returns the epoch the checkpoint was saved at (None when it does not say)."""
    state = load_checkpoint(Path(path))  # FileNotFoundError / ValueError with the file named
    try:
        if isinstance(state, dict) and isinstance(state.get("algorithm"), dict):
            algorithm.load_state_dict(state["algorithm"])
            return int(algorithm.epoch)
        if isinstance(state, dict) and isinstance(state.get("supernet"), dict):
            algorithm.supernet.load_state_dict(state["supernet"])
            return int(state["epoch"]) if isinstance(state.get("epoch"), int) else None
        if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            algorithm.supernet.load_state_dict(state)
            return None
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {path} does not fit this space and algorithm (build the study with the "
                         f"space, space_options, supernet options and algo of the run that saved it): {err}") from None
    raise ValueError(f"checkpoint {path}: expected a pynas run checkpoint (with 'algorithm'), a dict with "
                     f"'supernet', or a supernet state dict")


# -- the study --------------------------------------------------------------------------------------------
def _metrics_over(records: List[dict], truth: np.ndarray, cfg: dict) -> dict:
    options = dict(fractions=cfg["top_fractions"], n_resamples=cfg["n_resamples"], confidence=cfg["confidence"],
                   seed=cfg["seed"])
    per_epoch = [ranking_metrics(r["accuracy"], truth, **options) for r in records]
    series: Dict[str, Any] = {}
    for name in METRIC_NAMES:
        if isinstance(per_epoch[0][name], dict) and "value" not in per_epoch[0][name]:
            series[name] = {k: [m[name][k] for m in per_epoch] for k in per_epoch[0][name]}
        else:
            series[name] = [m[name] for m in per_epoch]
    return {"epochs": [r["epoch"] for r in records],
            "supernet_accuracy_mean": [float(np.mean(r["accuracy"])) for r in records],
            "metrics": series}


def run_rank_study(cfg: dict, *, out_dir, progress: bool = True) -> dict:
    """Train (or load) the supernet, evaluate the chosen architectures, compare with the table.

    ``cfg`` is a resolved configuration (:func:`pynas.commands.rank.resolve`; keys in
    ``pynas/configs/rank.yaml``). Returns the content of ``ranking.json``.
    """
    if not isinstance(cfg, dict):
        raise TypeError(f"cfg must be a dict (a resolved rank config), got {type(cfg).__name__}")
    out_dir = Path(out_dir)
    resolved = check_study_config(cfg)
    # The table first: a missing or wrong file fails before any data is loaded.
    table = load_table(cfg["space"], cfg.get("benchmark"))
    probe = create_path_space(cfg["space"], num_classes=10, in_channels=3, input_size=32,
                              options=cfg.get("space_options") or {})
    truth_all = ground_truth(probe, table, dataset=resolved["gt_dataset"])
    indices = select_archs(probe.size, cfg["archs"], seed=resolved["arch_seed"], space_name=cfg["space"])
    evaluation = evaluation_options(cfg)

    out_dir.mkdir(parents=True, exist_ok=True)
    # A run dir holding the runner's checkpoint is resumed: with the settings it was started with.
    record_run_config(out_dir, cfg, resuming=cfg.get("checkpoint") is None and (out_dir / CHECKPOINT).is_file())
    seed_everything(cfg["seed"])
    device = resolve_device(cfg["device"])
    data = load_path_data(cfg, device=device)
    space, _, algorithm = build_path_algorithm(cfg, data, device=device)
    if space.num_choices != probe.num_choices:  # a space option that depends on the data changed the paths
        raise ValueError(f"space {cfg['space']} built for this dataset has choices {list(space.num_choices)}, "
                         f"not the table's {list(probe.num_choices)}")
    paths = torch.stack([torch.tensor(space.path_at(int(i)), dtype=torch.long) for i in indices])
    evaluator = _Evaluator(out_dir, algorithm=algorithm, indices=indices, paths=paths,
                           batches=evaluation_batches(cfg, data, evaluation), evaluation=evaluation, amp=cfg["amp"],
                           progress=progress)
    every = cfg.get("eval_every", 0)

    train_seconds, resumed, history = 0.0, False, []
    if cfg.get("checkpoint") is not None:
        checkpoint = Path(cfg["checkpoint"]).expanduser()
        epoch = _load_supernet(algorithm, checkpoint)
        stat = checkpoint.stat()
        source = {"checkpoint": str(checkpoint.resolve()), "bytes": stat.st_size, "mtime": stat.st_mtime}
        final = evaluator.run("checkpoint", epoch=epoch, source=source)
        records = []
    else:
        def due(epoch: int) -> bool:
            return (every > 0 and epoch % every == 0) or epoch >= algorithm.epochs

        def on_epoch_end(record: dict) -> None:
            if due(record["epoch"]):
                evaluator.run(_epoch_key(record["epoch"]), epoch=record["epoch"])

        runner = SearchRunner(algorithm=algorithm, train_loader=data.train_loader, valid_loader=data.valid_loader,
                              out_dir=out_dir, checkpoint_every=cfg["checkpoint_every"],
                              max_steps_per_epoch=cfg.get("max_steps_per_epoch"), progress=progress,
                              on_epoch_end=on_epoch_end)
        resumed = runner.resume()
        # Killed between an epoch-end checkpoint and its evaluation: the weights are that epoch's; score them now.
        if resumed and runner.sums["steps"] == 0 and algorithm.epoch > 0 and due(algorithm.epoch):
            evaluator.run(_epoch_key(algorithm.epoch), epoch=algorithm.epoch)
        outcome = runner.run()
        train_seconds, history = outcome["search_seconds"], outcome["history"]
        final = evaluator.run(_epoch_key(algorithm.epoch), epoch=algorithm.epoch)
        records = [r for r in evaluator.epochs() if r["epoch"] <= algorithm.epoch]

    truth = truth_all.of(indices)
    supernet = np.asarray(final["accuracy"], dtype=np.float64)
    metrics = ranking_metrics(supernet, truth, fractions=cfg["top_fractions"], n_resamples=cfg["n_resamples"],
                              confidence=cfg["confidence"], seed=cfg["seed"])
    over = None
    if records:
        over = _metrics_over(records, truth, cfg)
        write_json(out_dir / "correlation_over_epochs.json", {"space": cfg["space"], "algo": cfg["algo"], **over})
    title = (f"{cfg['algo']} on {cfg['space']} ({len(indices)} archs, epoch {final['epoch']}): "
             f"tau={_fmt(metrics['kendall_tau']['value'])}")
    series = None
    if over is not None:
        series = {"kendall_tau": over["metrics"]["kendall_tau"], "spearman": over["metrics"]["spearman"]}
    pictures = draw_study_plots(out_dir, supernet=supernet, truth=truth, top_fraction=cfg["scatter_top"],
                                title=title, epochs_title=f"{cfg['algo']} on {cfg['space']} ({len(indices)} archs)",
                                epochs=over["epochs"] if over else None, series=series)

    weight_decay = algorithm.optimizer.defaults.get("weight_decay")
    report = {
        "space": cfg["space"], "algo": cfg["algo"], "dataset": cfg["dataset"],
        "ground_truth": truth_all.describe(),
        "epoch": final["epoch"],
        "selection": {"archs": cfg["archs"], "count": int(len(indices)), "seed": resolved["arch_seed"],
                      "of": int(probe.size)},
        "archs": [{"index": int(i), "path": space.format(space.path_at(int(i))), "supernet_accuracy": float(a),
                   "supernet_loss": float(loss), "ground_truth": float(g)}
                  for i, a, loss, g in zip(indices, supernet, final["loss"], truth)],
        "metrics": metrics,
        "factors": {
            "path_sampling": cfg["algo"],
            "few_shot": ({"split_layer": algorithm.split_layer, "split_epoch": algorithm.split_epoch}
                         if cfg["algo"] == "few-shot" else None),
            "space_options": dict(cfg.get("space_options") or {}),
            "augment": bool(cfg["augment"]), "weight_decay": weight_decay,
            "bn": evaluation.get("bn", "recalibrate"), "recalibrate_batches": evaluation["recalibrate_batches"],
            "cell_topology": resolved["cell_topology"],
        },
        "settings": {"evaluation": evaluation, "eval_samples": final["samples"], "batch_size": cfg["batch_size"],
                     "epochs": int(algorithm.epochs), "eval_every": every, "seed": cfg["seed"],
                     "top_fractions": list(cfg["top_fractions"]), "n_resamples": cfg["n_resamples"],
                     "confidence": cfg["confidence"], "checkpoint": cfg.get("checkpoint"), "device": str(device)},
        "train_seconds": train_seconds, "eval_seconds": final["seconds"], "data_seconds": data.seconds,
        "resumed": resumed, "history": history, "pictures": pictures,
        "correlation_over_epochs": "correlation_over_epochs.json" if over else None,
    }
    write_json(out_dir / "ranking.json", report)
    return report


def _fmt(value: Optional[float]) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
