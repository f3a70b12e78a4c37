"""``pynas train``: train a found cell (``--genotype``) or single path (``--path``) stand-alone with its
space's protocol (:mod:`pynas.training.train`), in one process or data-parallel under ``torchrun``.

A path is rebuilt from its ``path.json`` (:func:`pynas.spaces.path_spec.load_path_spec`): the space's
recorded options, overridden by ``space_options`` of the config, and the network's build options from
``network_options`` (e.g. ``dropout`` of the chain spaces). The dataset defaults to the one the search ran
on (and its recorded root). Config keys beyond the protocol's:

``memory_format``  ``preserve`` or ``channels_last`` (weights and batches NHWC)
``compile``        false, true (``torch.compile``, inductor) or a backend name (e.g. ``aot_eager``)
``sync_bn``        convert batch norms to ``nn.SyncBatchNorm`` under torchrun (CUDA only)
``checkpoint_every`` also checkpoint every N steps (0: epoch ends only)
``max_steps_per_epoch`` cap the steps of an epoch (quick runs)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from pynas.config import merge
from pynas.data import DeviceLoader, create_dataset
from pynas.data.options import data_options, with_root
from pynas.data.stream import FileDataset, make_loader
from pynas.models import DartsNetworkCIFAR, NB201Network
from pynas.spaces.genotypes import DartsGenotype, NB201Genotype, load_genotype
from pynas.spaces.path_spec import load_path_spec
from pynas.training import distributed
from pynas.training.run_config import EXTENDABLE_KEYS, record_run_config
from pynas.training.search import write_json
from pynas.training.train import (
    CHECKPOINT as TRAIN_CHECKPOINT,
    DARTS_TRAIN_DEFAULTS,
    NB201_TRAIN_DEFAULTS,
    path_protocol,
    train_network,
)

from .common import place_supernet, resolve_device, seed_everything

TRAIN_DEFAULTS = dict(dataset="cifar10", data=None, subset=None, test_subset=None, device="auto", seed=0, amp="none",
                      C=None, layers=None, max_steps_per_epoch=None, checkpoint_every=0, memory_format="preserve",
                      compile=False, sync_bn=False, eval_batch_size=None, space_options={}, network_options={})
MEMORY_FORMATS = ("preserve", "channels_last")
#: train_network keywords read from the config
_NETWORK_KEYS = ("epochs", "lr", "lr_min", "momentum", "nesterov", "weight_decay", "no_wd_bn_bias", "label_smoothing",
                 "lr_schedule", "warmup_epochs", "grad_clip", "auxiliary_weight", "drop_path_prob", "amp",
                 "max_steps_per_epoch", "checkpoint_every", "sync_bn", "compile")


def _resolve(config: dict, protocol: dict, *, what: str) -> dict:
    given = {k: v for k, v in config.items() if v is not None}
    known = set(TRAIN_DEFAULTS) | set(protocol)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"unknown train setting(s) {unknown} for {what}; known: {sorted(known)}")
    return merge(merge(TRAIN_DEFAULTS, protocol), given)


def _eval_batch(size: int, wanted: int, world: int) -> int:
    """The largest batch <= wanted whose last global batch still gives every rank a sample (DeviceLoader's rule)."""
    batch = max(1, min(wanted, size // world if size >= world else 1))
    while batch > 1 and 0 < size % (batch * world) < world:
        batch -= 1
    return batch


def run_train(config: dict, *, genotype_path: Optional[Path] = None, path_file: Optional[Path] = None,
              out_dir: Path, progress: bool = True) -> dict:
    """Train the network of a genotype (``genotype_path``) or of a single path (``path_file``); exactly one."""
    if (genotype_path is None) == (path_file is None):
        raise ValueError("give exactly one of genotype_path (a cell) and path_file (a single path's path.json)")
    if genotype_path is not None:
        genotype = load_genotype(genotype_path)
        spec = None
        protocol_name = "darts" if isinstance(genotype, DartsGenotype) else "nas-bench-201"
        protocol = DARTS_TRAIN_DEFAULTS if isinstance(genotype, DartsGenotype) else NB201_TRAIN_DEFAULTS
        cfg = _resolve(config, protocol, what=f"a {protocol_name} cell")
        cfg["genotype"] = str(genotype)
    else:
        spec = load_path_spec(path_file)
        genotype = None
        protocol_name, protocol = path_protocol(spec.space_name)
        cfg = _resolve(config, protocol, what=f"a path of {spec.space_name}")
        if "dataset" not in config or config.get("dataset") is None:
            if spec.dataset is None:
                raise ValueError(f"{path_file} records no dataset; pass --dataset")
            cfg["dataset"] = spec.dataset
            if data_options(cfg.get("data")).root is None and spec.data is not None:
                cfg["data"] = with_root(cfg.get("data"), spec.data)
        cfg["path"] = str(path_file)
    cfg["protocol"] = protocol_name
    cfg["data"] = data_options(cfg.get("data")).as_dict()  # checked here, before any work
    for key in ("space_options", "network_options"):
        if not isinstance(cfg[key], dict):
            raise ValueError(f"{key} must be a mapping, got {cfg[key]!r}")
    if cfg["memory_format"] not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {cfg['memory_format']!r}")

    device = resolve_device(cfg["device"])
    distributed.init_from_env(device=device.type)
    rank, world = distributed.world()
    main = rank == 0
    device = resolve_device(cfg["device"])  # under torchrun on GPUs: this rank's (init_from_env set it)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Before anything is built. epochs may be raised (the lr schedule is re-laid over the new total, see
    # pynas.training.run_config); world_size is left to the checkpoint's own check, which says how to relaunch.
    record_run_config(out_dir, dict(cfg, world_size=world), name="train_config.yaml", main=main,
                      resuming=(out_dir / TRAIN_CHECKPOINT).is_file(), extendable=EXTENDABLE_KEYS,
                      ignore=("world_size",))
    seed_everything(cfg["seed"])
    fmt = cfg["memory_format"]
    options = data_options(cfg["data"])
    if options.train_fraction is not None or options.val_fraction is not None or options.valid_per_class is not None:
        raise ValueError("data.train_fraction, data.val_fraction and data.valid_per_class cut a search's training "
                         "set; retraining uses the whole training split (use subset to train on fewer images)")
    train = create_dataset(cfg["dataset"], root=options.root, split="train", subset=cfg["subset"], seed=cfg["seed"],
                           device=device, loader=options.loader, image_size=options.image_size,
                           resize_size=options.resize_size)
    test = create_dataset(cfg["dataset"], root=options.root, split="test", subset=cfg["test_subset"],
                          seed=cfg["seed"], device=device, loader=options.loader, image_size=options.image_size,
                          resize_size=options.resize_size)
    channels = train.image_shape[0]
    if spec is not None:
        space = spec.build_space(**cfg["space_options"])
        for key, have in (("num_classes", train.num_classes), ("in_channels", channels),
                          ("input_size", train.image_shape[1])):
            want = getattr(space, key)
            if want != have:
                raise ValueError(f"the path's space has {key}={want} but dataset {cfg['dataset']!r} gives {have}; "
                                 f"use a matching dataset or --set space_options.{key}={have}")
    eval_batch = _eval_batch(len(test), cfg["eval_batch_size"] or max(cfg["batch_size"], 256), world)
    # Created inside the process group: each rank reads its shard of every global batch.
    if isinstance(train, FileDataset):
        if cfg["cutout"]:
            raise ValueError("cutout applies to device-resident datasets (CIFAR-style); set cutout=0 for "
                             f"{cfg['dataset']!r}, which is streamed from files")
        stream = dict(device=device, workers=options.workers, strict=options.strict, decoder=options.decoder,
                      memory_format=fmt)
        train_loader = make_loader(train, batch_size=cfg["batch_size"], augment=True, drop_last=True,
                                   seed=cfg["seed"], colour_jitter=options.colour_jitter, **stream)
        test_loader = make_loader(test, batch_size=eval_batch, shuffle=False, augment=False, **stream)
    else:
        if options.colour_jitter is not None or options.workers is not None or options.strict \
                or options.decoder != "auto":
            raise ValueError(f"data.colour_jitter, data.workers, data.strict and data.decoder concern streamed "
                             "datasets; "
                             f"{cfg['dataset']!r} was decoded onto the device (set data.loader=stream to stream it)")
        augmentation = train.augmentation
        if cfg["cutout"]:
            augmentation = dataclasses.replace(augmentation, cutout=cfg["cutout"])
        train_loader = DeviceLoader(train, batch_size=cfg["batch_size"], augment=augmentation, drop_last=True,
                                    seed=cfg["seed"], memory_format=fmt)
        test_loader = DeviceLoader(test, batch_size=eval_batch, shuffle=False, memory_format=fmt)

    if spec is not None:
        network = space.build_network(spec.choices, **cfg["network_options"])
    elif isinstance(genotype, DartsGenotype):
        network = DartsNetworkCIFAR(genotype, C=cfg["C"] or 36, layers=cfg["layers"] or 20,
                                    num_classes=train.num_classes, in_channels=channels,
                                    auxiliary=cfg["auxiliary_weight"] > 0, drop_path_prob=cfg["drop_path_prob"])
    elif isinstance(genotype, NB201Genotype):
        network = NB201Network(genotype, C=cfg["C"] or 16, N=cfg["layers"] or 5, num_classes=train.num_classes,
                               in_channels=channels)
    else:  # load_genotype only returns the two kinds
        raise TypeError(f"unsupported genotype {type(genotype).__name__}")
    place_supernet(network, device, fmt)
    params = sum(p.numel() for p in network.parameters())
    if main and progress and world > 1:
        print(f"data parallel: {world} processes x batch {cfg['batch_size']} = global batch "
              f"{world * cfg['batch_size']} (the {protocol_name} protocol's lr {protocol['lr']} is for a global "
              f"batch of {protocol['batch_size']})", flush=True)
    try:
        outcome = train_network(network, train_loader=train_loader, test_loader=test_loader, out_dir=out_dir,
                                progress=progress, **{k: cfg[k] for k in _NETWORK_KEYS})
    finally:
        for loader in (train_loader, test_loader):
            if hasattr(loader, "close"):  # a StreamLoader's decoding processes
                loader.close()
    result = {"protocol": protocol_name, "test_accuracy": outcome["test_accuracy"],
              "train_seconds": outcome["train_seconds"], "epochs": outcome["history"], "params": params,
              "dataset": cfg["dataset"], "world_size": world, "global_batch_size": world * cfg["batch_size"],
              "resumed": outcome["resumed"]}
    if spec is not None:
        choices = spec.choices
        result = {"space": space.name, "path": space.format(choices), "choices": list(choices),
                  "ops": space.describe(choices), "flops": int(space.flops(choices)), **result}
    else:
        result = {"genotype": str(genotype), **result}
    if main:
        write_json(out_dir / "train_result.json", result)
    distributed.barrier()
    return result
