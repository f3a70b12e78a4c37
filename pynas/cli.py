"""The ``pynas`` command: thin subcommands over the library."""
from __future__ import annotations

import argparse
import sys

_PLANNED = {
    "search": "architecture search (DARTS, PC-DARTS, FTSO, single-path methods)",
    "train": "stand-alone training of a found genotype",
    "rank": "ranking-correlation studies against ground-truth tables",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="pynas", description="One-shot NAS on fused supernet kernels.")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="microbenchmarks", add_help=False)
    bench.add_argument("suite", choices=["ops"], help="which benchmark suite")
    sub.add_parser("info", help="print the build information")
    for name, what in _PLANNED.items():
        sub.add_parser(name, help=f"{what} (not implemented yet)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from pynas.perf.ops import main as bench_ops

        return bench_ops(rest)
    if args.command == "info":
        import pynas

        for key, value in pynas.build_info().items():
            print(f"{key}: {value}")
        return 0
    parser.exit(2, f"pynas {args.command}: {_PLANNED[args.command]} is not implemented yet; "
                   "see the README's list of missing pieces.\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
