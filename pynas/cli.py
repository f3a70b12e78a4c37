"""The ``pynas`` command: thin subcommands over the library.

    pynas search --space darts --algo pc-darts --dataset cifar10 --data DIR --out RUN_DIR [--set key=value ...]
    pynas train --genotype RUN_DIR/genotype.json --dataset cifar10 --out TRAIN_DIR [--epochs N ...]
    pynas train --path RUN_DIR/path.json --out TRAIN_DIR [--set key=value ...]
    torchrun --nproc_per_node=N -m pynas.cli train --path RUN_DIR/path.json --out TRAIN_DIR
    pynas rank --space nasbench-macro --algo spos --dataset cifar10 --data DIR --archs 100 --out RUN_DIR [...]
    pynas rank --tabular --space nas-bench-201-path --strategy regularized-evolution --budget 100 --seeds 100 --out DIR
    pynas demo [--out runs/demo]
    pynas bench ops|supernet|paths|imagenet [...]
    pynas data imagenet-like --out DIR --classes 10 --train-per-class N --val-per-class M [...]
    pynas data pack DIR --size 64 --out OUT [--splits train,val] [--workers N] [--strict]
    pynas info

Exit status: 0 done; 1 a failure (a NaN or Inf in training stops a search with one line naming the epoch, step
and tensors, writing nothing); 2 a usage or configuration error; 128 + N stopped by signal N with the checkpoint
written (143 SIGTERM, 130 SIGINT): rerun the same command to resume.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_PLANNED: dict = {}
# ``pynas bench <suite> [...]``: the module whose main(argv) runs it (also ``python -m bench.<suite>``).
_BENCHES = {"ops": "pynas.perf.ops", "supernet": "pynas.perf.supernet", "paths": "pynas.perf.paths",
            "imagenet": "pynas.perf.imagenet"}


def _search_parser(sub) -> None:
    p = sub.add_parser("search", help="search a cell (DARTS, PC-DARTS, FTSO) or a path (SPOS, FairNAS, GreedyNAS, ...)")
    p.add_argument("--config", type=Path, help="YAML config (defaults: pynas/configs/search.yaml)")
    p.add_argument("--space", help="search space: darts, nas-bench-201 (cells); nasbench-macro, spos-shufflenetv2, "
                                   "greedynas-mobilenetv2, nas-bench-201-path (single path)")
    p.add_argument("--algo", help="algorithm: darts, pc-darts, ftso (cells); spos, fairnas, greedynas, randomnas, eps, "
                                  "dsnas, few-shot (single path)")
    p.add_argument("--dataset", help="fashion-mnist, cifar10, imagefolder, nb201-cifar10")
    p.add_argument("--data", help="dataset root")
    p.add_argument("--subset", type=int, help="use a seeded stratified subset of N training images")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--device")
    p.add_argument("--seed", type=int)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set algorithm.order=2")
    p.add_argument("--out", type=Path, required=True,
                   help="run dir (resumes if it holds a checkpoint, with the settings it was started with)")
    p.add_argument("--no-progress", action="store_true")


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a found cell (--genotype) or single path (--path) stand-alone; "
                                     "data-parallel under torchrun")
    p.add_argument("--genotype", type=Path, help="genotype.json from a cell search run")
    p.add_argument("--path", type=Path, dest="path_file",
                   help="path.json from a single-path search run (exactly one of --genotype, --path)")
    p.add_argument("--config", type=Path, help="YAML of train settings (e.g. pynas/configs/recipes/*-train.yaml); "
                                               "flags and --set override it")
    p.add_argument("--dataset", help="default: cifar10 for a genotype, the search's dataset for a path")
    p.add_argument("--data", help="dataset root (sets data.root)")
    p.add_argument("--subset", type=int)
    p.add_argument("--test-subset", type=int, dest="test_subset")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--device")
    p.add_argument("--seed", type=int)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a protocol setting, e.g. --set C=16 --set layers=8, --set label_smoothing=0.1, "
                        "--set lr_schedule=linear, --set memory_format=channels_last, --set compile=true")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-progress", action="store_true")


def _rank_parser(sub) -> None:
    p = sub.add_parser("rank", help="ranking correlation of a supernet against a ground-truth table, or search "
                                    "strategies run on the table (--tabular)")
    p.add_argument("--config", type=Path, help="YAML config (defaults: pynas/configs/rank.yaml)")
    p.add_argument("--tabular", action="store_true", default=None,
                   help="run search strategies with the table as oracle instead of training a supernet")
    p.add_argument("--space", help="nasbench-macro (NAS-Bench-Macro) or nas-bench-201-path (NAS-Bench-201)")
    p.add_argument("--benchmark", help="the ground-truth table file or its folder (default: the data folder)")
    p.add_argument("--gt-dataset", dest="gt_dataset",
                   help="ground-truth column: cifar10 (default), cifar100, ImageNet16-120 (NAS-Bench-201)")
    study = p.add_argument_group("study (train or load a supernet, evaluate architectures)")
    study.add_argument("--algo", help="single-path algorithm: spos, fairnas, greedynas, randomnas, eps, dsnas, few-shot")
    study.add_argument("--dataset", help="training dataset: cifar10, nb201-cifar10, fashion-mnist, imagefolder")
    study.add_argument("--data", help="dataset root")
    study.add_argument("--subset", type=int, help="use a seeded stratified subset of N training images")
    study.add_argument("--archs", help="'all' or N: a seeded uniform sample of N architectures")
    study.add_argument("--eval-every", type=int, dest="eval_every",
                       help="also evaluate every N training epochs (correlation over epochs)")
    study.add_argument("--checkpoint", help="evaluate this supernet checkpoint (a run's checkpoint.pt), no training")
    study.add_argument("--epochs", type=int)
    study.add_argument("--batch-size", type=int, dest="batch_size")
    study.add_argument("--max-steps-per-epoch", type=int, dest="max_steps_per_epoch")
    study.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="training augmentation on/off")
    study.add_argument("--weight-decay", type=float, dest="weight_decay", help="the supernet's weight decay")
    study.add_argument("--bn", choices=["recalibrate", "batch", "running"], help="batch-norm policy at evaluation")
    study.add_argument("--recalibrate-batches", type=int, dest="recalibrate_batches")
    study.add_argument("--cell-topology", dest="cell_topology", choices=["shared", "independent"],
                       help="nas-bench-201-path: one cell topology for all cells (only 'shared' has ground truth)")
    study.add_argument("--device")
    study.add_argument("--amp", choices=["none", "bf16", "fp16"])
    tab = p.add_argument_group("tabular (--tabular)")
    tab.add_argument("--strategy", action="append", dest="strategies",
                     help="random, regularized-evolution, greedy, eps (repeat for several)")
    tab.add_argument("--budget", type=int, help="distinct architectures queried per run")
    tab.add_argument("--seeds", type=int, help="runs per strategy (seeds seed .. seed + N - 1)")
    tab.add_argument("--oracle", choices=["auto", "test", "valid"],
                     help="what the search sees: auto = the validation column when the table has one")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set space_options.init_channels=8")
    p.add_argument("--out", type=Path, required=True, help="run dir (resumes a study that holds a checkpoint)")
    p.add_argument("--no-progress", action="store_true")


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Usage errors of this parser as one line (``prog: error: message``) and exit status 2."""
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message}\n")  # type: ignore[method-assign]
    return parser


def _data_parser(sub) -> None:
    data = _one_line_errors(sub.add_parser("data", help="make and pack image folders (ImageNet-like data)"))
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{imagenet-like,pack}")
    gen = _one_line_errors(data_sub.add_parser(
        "imagenet-like", help="write an ImageNet-like JPEG folder made from real photographs (CIFAR-10 upscaled)"))
    gen.add_argument("--out", type=Path, required=True, help="folder to write train/ and val/ into")
    gen.add_argument("--classes", type=int, default=10)
    gen.add_argument("--train-per-class", type=int, default=100, dest="train_per_class")
    gen.add_argument("--val-per-class", type=int, default=20, dest="val_per_class")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--source", type=Path, help="ImageFolder of photographs with train/ and val/ or test/ "
                                                  "(default: cifar10 in the data folder)")
    gen.add_argument("--grain", type=float, help="std of the Gaussian grain in levels (default 20; 0: none)")
    gen.add_argument("--grayscale", type=int, default=0, help="grayscale JPEGs per split")
    gen.add_argument("--cmyk", type=int, default=0, help="CMYK JPEGs per split")
    gen.add_argument("--corrupt", type=int, default=0, help="undecodable .JPEG files added to train/")
    gen.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    pk = _one_line_errors(data_sub.add_parser(
        "pack", help="decode an image folder into fixed-size uint8 arrays (create_dataset('packed', root=OUT))"))
    pk.add_argument("dir", type=Path, help="folder of <split>/<class>/<image>")
    pk.add_argument("--size", required=True, help="side of the packed square images (>= 8), e.g. 64")
    pk.add_argument("--out", type=Path, required=True)
    pk.add_argument("--splits", help="comma-separated split folders (default: train,val where present)")
    pk.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    pk.add_argument("--strict", action="store_true", help="an undecodable file is an error, not skipped")


def _run_data(args) -> int:
    if args.data_command == "imagenet-like":
        from pynas.data.synthetic import DEFAULT_GRAIN, generate_imagenet_like

        manifest = generate_imagenet_like(
            args.out, classes=args.classes, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
            seed=args.seed, source=args.source, grain=DEFAULT_GRAIN if args.grain is None else args.grain,
            grayscale=args.grayscale, cmyk=args.cmyk, corrupt=args.corrupt, workers=args.workers, progress=True)
        for split, info in manifest["splits"].items():
            print(f"{split}: {info['images']} images, mean {info['mean_width']:.0f}x{info['mean_height']:.0f} px, "
                  f"{info['mean_bytes'] / 1e3:.1f} KB ({info['bytes_per_pixel']:.2f} bytes/pixel)")
        if manifest["corrupt"]:
            print(f"corrupt: {len(manifest['corrupt'])} files in train/")
        print(f"wrote {args.out}")
        return 0
    from pynas.data.pack import pack, parse_size

    metas = pack(args.dir, size=parse_size(args.size), out=args.out, splits=args.splits, workers=args.workers,
                 strict=args.strict, progress=True)
    for split, meta in metas.items():
        skipped = f", {len(meta['skipped'])} undecodable files skipped (listed in meta.json)" if meta["skipped"] else ""
        print(f"{split}: {meta['count']} images of {meta['size']}x{meta['size']}, {len(meta['classes'])} classes"
              + skipped)
    print(f"wrote {args.out}")
    return 0


def _rank_config(args: argparse.Namespace) -> dict:
    from pynas.config import apply_sets, load_yaml

    config = load_yaml(args.config) if args.config else {}
    config.update(_flags(args, ["tabular", "space", "benchmark", "gt_dataset", "algo", "dataset", "subset",
                                "eval_every", "checkpoint", "epochs", "batch_size", "max_steps_per_epoch",
                                "augment", "cell_topology", "device", "amp", "seed"]))
    from pynas.data.options import with_root

    config["data"] = with_root(config.get("data"), args.data)
    if args.archs is not None:
        archs = args.archs.strip()
        if archs != "all" and not archs.isdigit():
            raise ValueError(f"--archs must be 'all' or a positive integer, got {args.archs!r}")
        config["archs"] = archs if archs == "all" else int(archs)
    if args.weight_decay is not None:
        config.setdefault("algorithm", {})["weight_decay"] = args.weight_decay
    for key in ("bn", "recalibrate_batches"):
        if getattr(args, key) is not None:
            config.setdefault("evaluation", {})[key] = getattr(args, key)
    table = {k: getattr(args, k) for k in ("strategies", "budget", "seeds", "oracle") if getattr(args, k) is not None}
    if table:
        config["search_table"] = {**(config.get("search_table") or {}), **table}
    return apply_sets(config, args.set)


def _print_rank(result: dict, out: Path) -> None:
    if "strategies" in result:  # tabular
        oracle = result["oracle"]
        print(f"{result['benchmark']} {result['dataset']}: {len(result['seeds'])} seeds, budget {result['budget']} "
              f"{result['budget_unit']}; oracle: {oracle['kind']} ({oracle['column']})")
        for name, s in result["strategies"].items():
            t = s["truth"]
            print(f"  {name:22s} test {t['mean']:.2f} +- {t['std']:.2f} (min {t['min']:.2f}, max {t['max']:.2f}); "
                  f"oracle {s['oracle']['mean']:.2f} +- {s['oracle']['std']:.2f}; queries {s['queries']['mean']:.1f}; "
                  f"optimum found {s['found_optimum']}x")
        print(f"  optimum of the table: {result['optimum']['truth']:.2f}")
    else:
        m = result["metrics"]

        def fmt(e):
            return "n/a" if e.get("value") is None else (
                f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]" if e.get("low") is not None else f"{e['value']:.3f}")

        print(f"{result['algo']} on {result['space']}: {result['selection']['count']} architectures at epoch "
              f"{result['epoch']} against {result['ground_truth']['benchmark']} ({result['ground_truth']['dataset']})")
        for name in ("kendall_tau", "spearman", "pearson"):
            print(f"  {name:16s} {fmt(m[name])}")
        for name in ("precision_at_k", "kendall_tau_top"):
            for fraction, e in m[name].items():
                print(f"  {name + '@' + fraction:16s} {fmt(e)}")
        for note in result["pictures"]:
            if note.startswith("skipped"):
                print(f"  {note}")
    print(f"run dir: {out}")


def _flags(args: argparse.Namespace, keys: list[str]) -> dict:
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="pynas", description="One-shot NAS on fused supernet kernels.")
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    _train_parser(sub)
    _rank_parser(sub)
    demo = sub.add_parser("demo", help="FTSO on Fashion-MNIST, then a short training of the found cell (CPU)")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    bench = sub.add_parser("bench", help="microbenchmarks", add_help=False)
    bench.add_argument("suite", choices=list(_BENCHES), help="which benchmark suite")
    sub.add_parser("info", help="print the build information")
    _data_parser(sub)
    for name, what in _PLANNED.items():
        sub.add_parser(name, help=f"{what} (not implemented yet)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command != "bench" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from pynas.training.guard import NonFiniteError, Preempted

    try:
        return _dispatch(args, rest, parser)
    except Preempted as stop:  # SIGTERM/SIGINT: checkpoint written; 128 + the signal's number (143, 130)
        _say_once(f"pynas: {stop}")
        return stop.exit_code
    except NonFiniteError as err:  # NaN/Inf in training: nothing written, the last checkpoint kept; a failure
        _say_once(f"pynas {args.command}: error: {err}")
        return 1
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"pynas {args.command}: error: {err}", file=sys.stderr)
        return 2


def _say_once(line: str) -> None:
    """``line`` on stderr, from rank 0 only under torchrun (every rank stops alike)."""
    from pynas.training import distributed

    if distributed.is_main():
        # On a terminal the progress line (or ^C) may be unfinished: start a fresh one.
        print(("\n" if sys.stderr.isatty() else "") + line, file=sys.stderr, flush=True)


def _dispatch(args, rest, parser) -> int:
    from pynas.config import apply_sets, load_yaml

    if args.command == "search":
        from pynas.commands.search import run_search

        from pynas.data.options import with_root

        config = load_yaml(args.config) if args.config else {}
        config.update(_flags(args, ["space", "algo", "dataset", "subset", "epochs", "batch_size", "device",
                                    "seed", "amp"]))
        config["data"] = with_root(config.get("data"), args.data)  # --data DIR keeps the file's other data keys
        config = apply_sets(config, args.set)
        result = run_search(config, out_dir=args.out, progress=not args.no_progress)
        if "path" in result:  # single-path space
            print(f"path: {result['path']} ({', '.join(result['ops'])})")
            print(f"params: {result['params']:,}  FLOPs: {result['flops']:,}  "
                  f"supernet accuracy: {result['supernet_accuracy']:.2f}%")
            print(f"supernet training: {result['train_seconds']:.2f} s, search: {result['search_phase_seconds']:.2f} s "
                  f"({result['evaluations']} paths scored)")
            print(f"run dir: {args.out}")
            return 0
        print(f"genotype: {result['genotype']}")
        print(f"search time: {result['search_seconds']:.2f} s ({result['seconds_per_epoch']:.2f} s/epoch)")
        print(f"run dir: {args.out}")
        return 0
    if args.command == "train":
        if (args.genotype is None) == (args.path_file is None):
            raise ValueError("give exactly one of --genotype (a cell's genotype.json) and --path (a single "
                             "path's path.json)" + (", not both" if args.genotype is not None else ""))
        from pynas.commands.train import run_train
        from pynas.training import distributed

        from pynas.data.options import with_root

        config = load_yaml(args.config) if args.config else {}
        config.update(_flags(args, ["dataset", "subset", "test_subset", "epochs", "batch_size", "device", "seed",
                                    "amp"]))
        if config.get("data") is not None or args.data is not None:
            config["data"] = with_root(config.get("data"), args.data)
        config = apply_sets(config, args.set)
        result = run_train(config, genotype_path=args.genotype, path_file=args.path_file, out_dir=args.out,
                           progress=not args.no_progress)
        if distributed.is_main():
            if "path" in result:
                print(f"path: {result['path']} ({', '.join(result['ops'])}) of {result['space']}")
            print(f"test accuracy: {result['test_accuracy']:.2f}% after {len(result['epochs'])} epochs "
                  f"({result['params'] / 1e6:.2f}M params, {result['train_seconds']:.1f} s"
                  + (f", {result['world_size']} processes" if result["world_size"] > 1 else "") + ")")
        return 0
    if args.command == "rank":
        from pynas.commands.rank import run_rank

        result = run_rank(_rank_config(args), out_dir=args.out, progress=not args.no_progress)
        _print_rank(result, args.out)
        return 0
    if args.command == "demo":
        from pynas.commands.demo import run_demo

        run_demo(args.out)
        return 0
    if args.command == "bench":
        import importlib

        return importlib.import_module(_BENCHES[args.suite]).main(rest)
    if args.command == "data":
        return _run_data(args)
    if args.command == "info":
        import pynas

        print(json.dumps(pynas.build_info(), indent=2))
        return 0
    parser.exit(2, f"pynas {args.command}: {_PLANNED[args.command]} is not implemented yet; "
                   "see the README's list of missing pieces.\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
