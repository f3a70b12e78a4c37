"""``pynas demo``: FTSO on Fashion-MNIST (CPU, a few minutes), then a short training of the found cell."""
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
    return {"search": search, "train": train}
