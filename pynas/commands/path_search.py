"""``pynas search`` on a single-path space: train the supernet, then search its paths.

Two phases in one run dir, both resumable after a kill:

1. supernet training (``SearchRunner``: ``checkpoint.pt``, ``metrics.jsonl``);
2. the method's search strategy (evolution, random search, NSGA-II; ``search.strategy``
   picks another), every
   candidate scored by :func:`pynas.evaluation.evaluate_paths` (batched) on
   validation batches with the method's evaluation protocol (its
   ``evaluation_defaults``: BN recalibrated per path, shared running
   statistics, or batch statistics; ``evaluation.protocol`` overrides it);
   RandomNAS's best 10 are re-scored on the whole validation split
   (``evaluation.rerank: all``); the strategy's state goes to
   ``search_state.pt`` after every generation.

Outputs: the resolved ``config.yaml``, ``pareto.json`` for a multi-objective strategy (FairNAS's
``nsga2``: the Pareto front of accuracy and cost), ``path.json`` (the found path, its op
names, params and FLOPs, and the space's resolved options: ``pynas train
--path`` rebuilds the network from it, see :mod:`pynas.spaces.path_spec`) and
``result.json``.

SIGTERM/SIGINT stop either phase at its next boundary (a training step, a
search generation) with its checkpoint written, raising
:class:`~pynas.training.guard.Preempted`; rerunning resumes exactly.
"""
from __future__ import annotations

import inspect
import itertools
import time
from pathlib import Path
from typing import Any, Optional, Tuple

from pynas.algorithms import ALGORITHMS, create_algorithm
from pynas.data.options import data_options
from pynas.data.run import RunData, load_run_data, write_split_record
from pynas.data.stream import FileDataset, make_loader
from pynas.evaluation import evaluate_paths
from pynas.evaluation.paths import BN_POLICIES
from pynas.spaces import SPACES, create_space
from pynas.spaces.path_space import Constraint, PathSpace
from pynas.spaces.path_spec import path_record as make_path_record
from pynas.training.checkpoint import load_checkpoint, save_checkpoint
from pynas.training import distributed
from pynas.training.guard import Preempted, StopSignals
from pynas.training.run_config import record_run_config
from pynas.training.search import CHECKPOINT, SearchRunner, write_json

from .common import place_supernet, resolve_device, seed_everything

SEARCH_STATE = "search_state.pt"
PARETO = "pareto.json"
EVALUATION_KEYS = ("recalibrate_batches", "eval_batches", "bn", "protocol", "momentum", "strategy", "paths_per_pass",
                   "rows_per_call", "memory_format", "recalibrate_batch_size", "eval_batch_size", "rerank")
#: how the evaluation batches are cut, not arguments of evaluate_paths
BATCH_SIZE_KEYS = ("recalibrate_batch_size", "eval_batch_size")
#: keys of the ``evaluation`` section that are not arguments of evaluate_paths
NON_EVALUATE_KEYS = BATCH_SIZE_KEYS + ("rerank",)
#: ``evaluation.rerank``: "off", or "all" (the search's best ``rerank_top`` re-scored on the whole validation split)
RERANK_CHOICES = ("off", "all")


def create_path_space(name: str, *, num_classes: int, in_channels: int, input_size: int, options: dict) -> PathSpace:
    """The space, told the dataset's classes, channels and image size (its FLOPs are counted at that size)."""
    kwargs = dict(options)
    params = inspect.signature(SPACES.get(name)).parameters
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size)):
        if key in params:
            kwargs.setdefault(key, value)
    return create_space(name, **kwargs)


def _first_batches(loader, count):
    if count is None:
        return list(loader)
    batches = list(itertools.islice(iter(loader), count))
    if len(batches) < count:
        raise ValueError(f"evaluation needs {count} batches but the split only has {len(batches)} "
                         f"(lower evaluation.* counts or the batch size, or use more data)")
    return batches


# The single-path runs and the ranking study use the same data as the cell searches.
PathData = RunData


def load_path_data(cfg: dict, *, device, augment_valid: bool = False) -> RunData:
    """The run's training images cut in two and their loaders (:func:`pynas.data.run.load_run_data`),
    from a resolved config."""
    return load_run_data(cfg["dataset"], data_options(cfg.get("data")), device=device, seed=cfg["seed"],
                         batch_size=cfg["batch_size"], valid_fraction=cfg["valid_fraction"],
                         subset=cfg.get("subset"), augment=bool(cfg["augment"]), augment_valid=augment_valid,
                         memory_format=cfg.get("memory_format", "preserve"))


def build_path_algorithm(cfg: dict, data: PathData, *, device) -> Tuple[PathSpace, Constraint, Any]:
    """The space (told the data's classes, channels and image size), the constraint, and the
    algorithm with its supernet on ``device``."""
    space = create_path_space(cfg["space"], num_classes=data.data.num_classes, in_channels=data.data.image_shape[0],
                              input_size=data.data.image_shape[1], options=cfg.get("space_options") or {})
    constraint = Constraint(**(cfg.get("constraint") or {}))
    kwargs: dict[str, Any] = dict(cfg.get("algorithm") or {})
    if cfg.get("epochs") is not None:
        kwargs.setdefault("epochs", cfg["epochs"])
    train_steps = len(data.train_loader)
    steps = train_steps if cfg.get("max_steps_per_epoch") is None else min(train_steps, cfg["max_steps_per_epoch"])
    kwargs.setdefault("batch_size", cfg["batch_size"])
    kwargs.setdefault("steps_per_epoch", steps)
    algorithm = create_algorithm(cfg["algo"], space=space, amp=cfg["amp"], seed=cfg["seed"], constraint=constraint,
                                 supernet_options=cfg.get("supernet") or {}, **kwargs)
    place_supernet(algorithm.supernet, device, cfg.get("memory_format", "preserve"))
    return space, constraint, algorithm


def algorithm_evaluation_defaults(algo: Optional[str]) -> dict:
    """The method's own evaluation protocol (e.g. SPOS's 200 x 128 recalibration, 40 x 200 scoring), or {}."""
    if not algo or algo not in ALGORITHMS.names():
        return {}
    return dict(getattr(ALGORITHMS.get(algo), "evaluation_defaults", None) or {})


def evaluation_options(cfg: dict) -> dict:
    """``cfg['evaluation']`` checked against the keywords of :func:`evaluate_paths` used here (plus the
    batch sizes ``recalibrate_batch_size``/``eval_batch_size``, default the run's ``batch_size``), over the
    method's own defaults (``evaluation_defaults`` of the algorithm: SPOS's 200 x 128 and 40 x 200), over
    the run defaults (10 recalibration batches, 5 evaluation batches)."""
    evaluation = {k: v for k, v in (cfg.get("evaluation") or {}).items() if k in EVALUATION_KEYS}
    unknown = set(cfg.get("evaluation") or {}) - set(EVALUATION_KEYS)
    if unknown:
        raise ValueError(f"evaluation: unknown keys {sorted(unknown)}; known: {list(EVALUATION_KEYS)}")
    # ``protocol`` names the batch-norm mode of scoring (recalibrate | running | batch): the evaluator's ``bn``.
    # Every method has its own (``evaluation_defaults``); a config (``pynas rank`` included) overrides it with
    # either key, so protocols can be compared on one trained supernet.
    if "protocol" in evaluation:
        protocol = evaluation.pop("protocol")
        if protocol not in BN_POLICIES:
            raise ValueError(f"evaluation.protocol must be one of {BN_POLICIES}, got {protocol!r}")
        if "bn" in evaluation and evaluation["bn"] != protocol:
            raise ValueError(f"evaluation.protocol ({protocol!r}) and evaluation.bn ({evaluation['bn']!r}) disagree; "
                             f"give one of them")
        evaluation["bn"] = protocol
    method = algorithm_evaluation_defaults(cfg.get("algo"))
    for count_key, size_key in (("recalibrate_batches", "recalibrate_batch_size"), ("eval_batches", "eval_batch_size")):
        if count_key in evaluation:  # a count the config gives keeps the run's batch size unless it gives one too
            method.pop(size_key, None)
    for key, value in method.items():
        evaluation.setdefault(key, value)
    evaluation.setdefault("recalibrate_batches", 10)
    evaluation.setdefault("eval_batches", 5)
    evaluation.setdefault("rerank", "off")
    if evaluation["rerank"] not in RERANK_CHOICES:
        raise ValueError(f"evaluation.rerank must be one of {RERANK_CHOICES}, got {evaluation['rerank']!r}")
    for key in BATCH_SIZE_KEYS:
        value = evaluation.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"evaluation.{key} must be an int >= 1 or null (the run's batch_size), got {value!r}")
    return evaluation


def evaluate_kwargs(evaluation: dict) -> dict:
    """The options of :func:`evaluate_paths` in ``evaluation`` (without the batch sizes and ``rerank``)."""
    return {k: v for k, v in evaluation.items() if k not in NON_EVALUATE_KEYS}


def capped_batches(images: int, batch: int, count: Optional[int]) -> Tuple[int, Optional[int]]:
    """The scaling rule for splits smaller than a protocol asks: ``(batch, count)`` that fit ``images``.

    A protocol (SPOS: 200 batches of 128 training images, 40 of 200 validation
    images) is kept whole when the split holds ``batch x count`` images.
    Otherwise the batch size is kept and the count drops to the whole batches
    the split holds (``images // batch``: every image used at most once); a
    split smaller than one batch gives one batch of all its images.
    ``count=None`` (every batch) is left as is.
    """
    if count is None:
        return batch, None
    if images < batch:
        return max(images, 1), min(count, 1)
    return batch, min(count, images // batch)


def evaluation_batches(cfg: dict, data: PathData, evaluation: dict) -> Tuple[list, list]:
    """Fixed batches, read once: every candidate (and a resumed run) is scored on the same
    recalibration (training part, not augmented) and validation images.

    Batch sizes: ``evaluation.recalibrate_batch_size``/``eval_batch_size``, else the
    run's ``batch_size``. When a method's own protocol (``evaluation_defaults``) asks
    for more images than a split holds, :func:`capped_batches` scales it down and
    ``evaluation`` records the counts used; counts the config gave explicitly are
    never capped (too few images is then an error).
    """
    options = data_options(cfg.get("data"))
    given = cfg.get("evaluation") or {}
    out = []
    for part, seed, size_key, count_key in ((data.train_part, cfg["seed"] + 2, "recalibrate_batch_size",
                                             "recalibrate_batches"),
                                            (data.valid_part, cfg["seed"] + 3, "eval_batch_size", "eval_batches")):
        batch = evaluation.get(size_key) or cfg["batch_size"]
        count = evaluation[count_key]
        if count_key not in given and count:
            batch, count = capped_batches(len(part), batch, count)
            evaluation[size_key], evaluation[count_key] = batch, count
        streamed = isinstance(part, FileDataset)
        loader = make_loader(part, batch_size=batch, augment=False, drop_last=True, seed=seed,
                             device=data.train_loader.device if streamed else None,
                             **(dict(workers=options.workers, strict=options.strict, decoder=options.decoder)
                                if streamed else {}))
        try:
            out.append(_first_batches(loader, count) if count else [])
        finally:
            if streamed:
                loader.close()
    return out[0], out[1]


def validation_split_batches(cfg: dict, data: PathData, evaluation: dict) -> list:
    """Every image of the validation split, in batches of ``evaluation.eval_batch_size`` (the last one
    partial), not augmented: RandomNAS's re-scoring set (``evaluate(arch, split='valid')`` runs
    ``len(self.valid_queue)`` batches, randomNAS_release ``benchmarks/cnn/darts/darts_wrapper_discrete.py``
    lines 192-195)."""
    options = data_options(cfg.get("data"))
    part = data.valid_part
    streamed = isinstance(part, FileDataset)
    loader = make_loader(part, batch_size=evaluation.get("eval_batch_size") or cfg["batch_size"], augment=False,
                         shuffle=False, drop_last=False, seed=cfg["seed"] + 4,
                         device=data.train_loader.device if streamed else None,
                         **(dict(workers=options.workers, strict=options.strict) if streamed else {}))
    try:
        return list(loader)
    finally:
        if streamed:
            loader.close()


def rerank_option(cfg: dict, data: PathData, evaluation: dict, algorithm, recal_batches: list) -> dict:
    """``{"rerank_fn": ...}`` when ``evaluation.rerank`` is "all" (RandomNAS's default), else {}.

    The re-scoring uses the same protocol as the search's scores, on the whole validation split.
    """
    if evaluation.get("rerank", "off") == "off" or "rerank_fn" in (cfg.get("search") or {}):
        return {}
    if algorithm.strategy != "random":
        raise ValueError(f"evaluation.rerank='all' re-scores a random search's best paths; {cfg['algo']} searches "
                         f"with {algorithm.strategy!r}")
    full = validation_split_batches(cfg, data, evaluation)
    options = {**evaluate_kwargs(evaluation), "eval_batches": None}

    def rerank(paths):
        return evaluate_paths(algorithm.supernet, paths, full, recalibrate_data=recal_batches, amp=cfg["amp"],
                              **options).accuracy

    return {"rerank_fn": rerank}


def run_path_search(cfg: dict, *, out_dir: Path, progress: bool = True, stop: Optional[StopSignals] = None) -> dict:
    stop = stop if stop is not None else StopSignals()
    with stop:  # a no-op when run_search already holds it
        return _run_path_search(cfg, out_dir=out_dir, progress=progress, stop=stop)


def _run_path_search(cfg: dict, *, out_dir: Path, progress: bool, stop: StopSignals) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    distributed.init_from_env(device=resolve_device(cfg["device"]).type)
    main = distributed.is_main()  # under torchrun only rank 0 writes the run dir
    # Before anything is built: a resume with other settings stops here, naming them, not in load_state_dict.
    record_run_config(out_dir, cfg, main=main,
                      resuming=(out_dir / CHECKPOINT).is_file() or (out_dir / SEARCH_STATE).is_file())
    seed_everything(cfg["seed"])
    device = resolve_device(cfg["device"])

    data = load_path_data(cfg, device=device)
    if main:
        write_split_record(out_dir, data, data_options(cfg.get("data")), dataset=cfg["dataset"], seed=cfg["seed"])
    space, constraint, algorithm = build_path_algorithm(cfg, data, device=device)
    runner = SearchRunner(algorithm=algorithm, train_loader=data.train_loader, valid_loader=data.valid_loader,
                          out_dir=out_dir, checkpoint_every=cfg["checkpoint_every"],
                          max_steps_per_epoch=cfg.get("max_steps_per_epoch"), progress=progress, stop=stop)
    resumed = runner.resume()
    outcome = runner.run()

    data.close()  # the training loaders' decoding processes are done
    evaluation = evaluation_options(cfg)
    recal_batches, eval_batches = evaluation_batches(cfg, data, evaluation)

    def score(paths):
        return evaluate_paths(algorithm.supernet, paths, eval_batches, recalibrate_data=recal_batches,
                              amp=cfg["amp"], **evaluate_kwargs(evaluation)).accuracy

    state_path = out_dir / SEARCH_STATE
    state = load_checkpoint(state_path)["strategy"] if state_path.is_file() else None
    def on_generation(record: dict) -> None:
        if progress:
            print("search " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in record.items()), flush=True)

    def on_state(strategy_state: dict) -> None:
        # After every generation: save, then (every rank, at the same generation) stop if a signal came.
        if main:
            save_checkpoint(state_path, {"strategy": strategy_state})
        signum = stop.should_stop()
        if signum:
            raise Preempted(signum, checkpoint=state_path,
                            where=f"after {strategy_state.get('generation', '?')} generation(s) of the path search")

    signum = stop.should_stop()  # a signal while the evaluation batches were read: training is saved
    if signum:
        raise Preempted(signum, checkpoint=runner.checkpoint_path, written=False, where="after supernet training")
    t1 = time.perf_counter()
    found = algorithm.search(score, state=state, on_generation=on_generation, on_state=on_state,
                             **rerank_option(cfg, data, evaluation, algorithm, recal_batches), **(cfg.get("search") or {}))
    search_phase_seconds = time.perf_counter() - t1
    best = tuple(int(v) for v in found.best_path)
    # path.json (format 2): the path and the space's resolved options, enough for ``pynas train --path``.
    path_record = make_path_record(space, best, dataset=cfg["dataset"],
                                   data=data_options(cfg.get("data")).root,
                                   supernet_accuracy=float(found.best_score), constraint=constraint.as_dict())
    front = getattr(found, "extra", {}).get("pareto_front")
    if main:
        write_json(out_dir / "path.json", path_record)
        if front is not None:
            # A multi-objective strategy (nsga2): every non-dominated path it scored; path.json holds the one
            # its rule chose (the most accurate admissible path).
            write_json(out_dir / PARETO, {"objectives": found.extra.get("objectives"),
                                          "constraint": constraint.as_dict(), "chosen": space.format(best),
                                          "rule": "most accurate admissible path", "front": front})
    result = {
        **path_record, "space": cfg["space"], "algo": cfg["algo"], "dataset": cfg["dataset"],
        "train_seconds": outcome["search_seconds"], "search_phase_seconds": search_phase_seconds,
        "data_seconds": data.seconds, "evaluations": int(getattr(found, "evaluations", 0)),
        "epochs": outcome["history"], "resumed": resumed, "device": str(device), "evaluation": evaluation,
        **({"pareto_front_size": len(front)} if front is not None else {}),
    }
    if main:
        write_json(out_dir / "result.json", result)
    return result
