"""``pynas demo`` (CPU, a few minutes): FTSO on Fashion-MNIST and a short training of the found cell,
then SPOS on the NAS-Bench-Macro space with a FLOPs-constrained evolutionary search."""
from __future__ import annotations

from pathlib import Path

from pynas.config import CONFIG_DIR, load_yaml

from .search import run_search
from .train import run_train

DEMO_TRAIN = dict(dataset="fashion-mnist", subset=10000, test_subset=2000, epochs=3, batch_size=96, C=8, layers=5,
                  device="cpu", drop_path_prob=0.0, cutout=0)


def run_demo(out: Path) -> dict:
    out = Path(out)
    config = load_yaml(CONFIG_DIR / "demo-ftso-fashion-mnist.yaml")
    search = run_search(config, out_dir=out / "search")
    train = run_train(DEMO_TRAIN, genotype_path=out / "search" / "genotype.json", out_dir=out / "train")
    print()
    print(f"genotype:      {search['genotype']}")
    print(f"search time:   {search['search_seconds']:.2f} s on {search['device']} "
          f"(FTSO topology stage, {config['subset']} Fashion-MNIST images)")
    print(f"test accuracy: {train['test_accuracy']:.2f}% after {len(train['epochs'])} epochs of training "
          f"({train['params'] / 1e6:.2f}M params, {DEMO_TRAIN['subset']} training images)")
    for picture in search.get("pictures", []):
        print(f"picture:       {picture}")
    spos_config = load_yaml(CONFIG_DIR / "demo-spos-macro-fashion-mnist.yaml")
    spos = run_search(spos_config, out_dir=out / "spos")
    print()
    print(f"SPOS path:     {spos['path']} ({', '.join(spos['ops'])})")
    print(f"               {spos['flops'] / 1e6:.2f}M FLOPs (limit {spos_config['constraint']['max_flops'] / 1e6:.1f}M), "
          f"{spos['params'] / 1e6:.3f}M params, supernet accuracy {spos['supernet_accuracy']:.2f}% "
          f"on {spos_config['evaluation']['eval_batches'] * spos_config['batch_size']} validation images")
    print(f"               supernet training {spos['train_seconds']:.1f} s, search {spos['search_phase_seconds']:.1f} s "
          f"({spos['evaluations']} paths scored, each with its own BN recalibration, shared prefixes once)")
    return {"search": search, "train": train, "spos": spos}
