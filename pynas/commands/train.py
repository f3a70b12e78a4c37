"""``pynas train``: train a found genotype stand-alone with its space's protocol."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from pynas.config import merge, save_yaml
from pynas.data import DeviceLoader, create_dataset
from pynas.models import DartsNetworkCIFAR, NB201Network
from pynas.spaces.genotypes import DartsGenotype, NB201Genotype, load_genotype
from pynas.training.search import write_json
from pynas.training.train import DARTS_TRAIN_DEFAULTS, NB201_TRAIN_DEFAULTS, train_network

from .common import resolve_device, seed_everything

TRAIN_DEFAULTS = dict(dataset="cifar10", data=None, subset=None, test_subset=None, device="auto", seed=0, amp="none",
                      C=None, layers=None, max_steps_per_epoch=None)


def run_train(config: dict, *, genotype_path: Path, out_dir: Path, progress: bool = True) -> dict:
    genotype = load_genotype(genotype_path)
    protocol = DARTS_TRAIN_DEFAULTS if isinstance(genotype, DartsGenotype) else NB201_TRAIN_DEFAULTS
    cfg = merge(merge(TRAIN_DEFAULTS, protocol), {k: v for k, v in config.items() if v is not None})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg["genotype"] = str(genotype)
    save_yaml(out_dir / "train_config.yaml", cfg)
    seed_everything(cfg["seed"])
    device = resolve_device(cfg["device"])
    train = create_dataset(cfg["dataset"], root=cfg["data"], split="train", subset=cfg["subset"], seed=cfg["seed"],
                           device=device)
    test = create_dataset(cfg["dataset"], root=cfg["data"], split="test", subset=cfg["test_subset"],
                          seed=cfg["seed"], device=device)
    augmentation = train.augmentation
    if cfg["cutout"]:
        augmentation = dataclasses.replace(augmentation, cutout=cfg["cutout"])
    train_loader = DeviceLoader(train, batch_size=cfg["batch_size"], augment=augmentation, drop_last=True,
                                seed=cfg["seed"])
    test_loader = DeviceLoader(test, batch_size=max(cfg["batch_size"], 256), shuffle=False)
    channels = train.image_shape[0]
    if isinstance(genotype, DartsGenotype):
        network = DartsNetworkCIFAR(genotype, C=cfg["C"] or 36, layers=cfg["layers"] or 20,
                                    num_classes=train.num_classes, in_channels=channels,
                                    auxiliary=cfg["auxiliary_weight"] > 0, drop_path_prob=cfg["drop_path_prob"])
    elif isinstance(genotype, NB201Genotype):
        network = NB201Network(genotype, C=cfg["C"] or 16, N=cfg["layers"] or 5, num_classes=train.num_classes,
                               in_channels=channels)
    else:  # load_genotype only returns the two kinds
        raise TypeError(f"unsupported genotype {type(genotype).__name__}")
    network.to(device)
    outcome = train_network(
        network, train_loader=train_loader, test_loader=test_loader, out_dir=out_dir, epochs=cfg["epochs"],
        lr=cfg["lr"], lr_min=cfg["lr_min"], momentum=cfg["momentum"], nesterov=cfg["nesterov"],
        weight_decay=cfg["weight_decay"], grad_clip=cfg["grad_clip"], auxiliary_weight=cfg["auxiliary_weight"],
        drop_path_prob=cfg["drop_path_prob"], amp=cfg["amp"], max_steps_per_epoch=cfg["max_steps_per_epoch"],
        progress=progress)
    result = {"genotype": str(genotype), "test_accuracy": outcome["test_accuracy"],
              "train_seconds": outcome["train_seconds"], "epochs": outcome["history"],
              "params": sum(p.numel() for p in network.parameters())}
    write_json(out_dir / "train_result.json", result)
    return result
