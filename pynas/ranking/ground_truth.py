"""Ground truth of a single-path space: a benchmark table's accuracy for every path, in the space's order.

Two single-path spaces have a ground-truth table:

* ``nasbench-macro`` -> NAS-Bench-Macro (Su et al., CVPR 2021): all 3^8 chains
  trained on CIFAR-10; the value is ``mean_acc``, the test accuracy averaged
  over the benchmark's three seeds. CIFAR-10 only.
* ``nas-bench-201-path`` -> NAS-Bench-201 (Dong & Yang, ICLR 2020; NATS-Bench
  topology space, Dong et al., TPAMI 2021): the 200-epoch test accuracy
  column of ``nats_bench.csv`` for ``cifar10``, ``cifar100`` or
  ``ImageNet16-120``. A *validation* column exists only for CIFAR-10, in the
  EPS repository's ``eps_all_structure_valid_accuracy.json`` (the
  ``cifar10-valid`` split's validation accuracy after 200 epochs; its best
  value, 91.61%, is NAS-Bench-201's "optimal" validation figure): it is read
  when a search needs an oracle other than the reported test column
  (:func:`validation_values`).

Values are returned in :meth:`PathSpace.index_of` order (mixed radix, first
layer most significant), the order of ``space.all_paths()`` and of
:class:`pynas.search.TabularScore`. For NAS-Bench-201 the path order is not
the benchmark's own index order; every path is mapped through
:meth:`NB201PathSpace.benchmark_index`.

A space whose options change which architectures it holds (e.g.
``nasbench-macro`` with other ``stages``) does not match its table and is
refused; options that only change widths or the number of cell repeats
(``init_channels``, ``head_channels``; ``C``, ``N``) keep the architecture
set, so the table still ranks them (the "supernet width/depth" factor of
ranking studies).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from pynas.benchmarks import MacroBenchmark, NB201Benchmark, create_benchmark
from pynas.benchmarks.nb201 import NB201_DATASETS
from pynas.data.registry import data_dir
from pynas.spaces.macro_space import MACRO_OPS, MacroSpace
from pynas.spaces.nb201_path_space import NB201PathSpace
from pynas.spaces.path_space import PathSpace

__all__ = ["GROUND_TRUTH", "GroundTruth", "check_table_space", "ground_truth", "load_table", "validation_values",
           "NB201_VALID_JSON"]

#: space name -> benchmark name (:func:`pynas.benchmarks.create_benchmark`) and what the table holds
GROUND_TRUTH: Dict[str, dict] = {
    "nasbench-macro": {"benchmark": "nasbench-macro", "file": "nasbench-macro/nas-bench-macro_cifar10.json",
                       "datasets": ("cifar10",),
                       "column": "mean_acc: test accuracy (%), mean of the benchmark's 3 seeds"},
    "nas-bench-201-path": {"benchmark": "nas-bench-201", "file": "nasbench201/nats_bench.csv",
                           "datasets": NB201_DATASETS,
                           "column": "test accuracy (%) after 200 epochs, mean over seeds (nats_bench.csv)"},
}
#: the EPS repository's CIFAR-10 validation accuracies of NAS-Bench-201 (same layout as its test list)
NB201_VALID_JSON = "nasbench201/eps_all_structure_valid_accuracy.json"
_MACRO_STAGES = (2, 3, 3)


@dataclass(frozen=True)
class GroundTruth:
    """``values[i]``: the table's accuracy (%) of path ``space.path_at(i)``."""

    space: PathSpace
    values: np.ndarray
    benchmark: str
    dataset: str
    column: str
    source: str
    info: Dict[str, str] = field(default_factory=dict)

    def of(self, indices) -> np.ndarray:
        """Values of the paths with these ``space.index_of`` indices."""
        return self.values[np.asarray(indices, dtype=np.int64)]

    def describe(self) -> dict:
        return {"benchmark": self.benchmark, "dataset": self.dataset, "column": self.column, "source": self.source,
                **self.info}


def _supported(space_name: str) -> dict:
    if not isinstance(space_name, str):
        raise TypeError(f"space must be a space name (str), got {type(space_name).__name__}")
    entry = GROUND_TRUTH.get(space_name)
    if entry is None:
        raise ValueError(f"space {space_name!r} has no ground-truth table; ranking against a benchmark works for "
                         + ", ".join(f"{s} ({e['benchmark']})" for s, e in GROUND_TRUTH.items()))
    return entry


def load_table(space_name: str, path: Optional[os.PathLike] = None):
    """The benchmark table that ranks ``space_name``'s paths, read from ``path`` (file or folder) or the
    default data location. A missing file is a FileNotFoundError; a file of another benchmark (or not a
    table at all) a ValueError that names the space and the table it needs."""
    entry = _supported(space_name)
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"benchmark must be a path (str or os.PathLike) or None, got {type(path).__name__}")
    try:
        return create_benchmark(entry["benchmark"], path=path)
    except ValueError as err:
        raise ValueError(f"benchmark: space {space_name!r} is ranked against the {entry['benchmark']} table "
                         f"({Path(entry['file']).name}), but {err}") from None


def check_table_space(space: PathSpace, table) -> None:
    """Refuse a space whose architectures are not the ones ``table`` holds (a clear ValueError)."""
    if isinstance(table, MacroBenchmark):
        if not isinstance(space, MacroSpace):
            raise ValueError(f"benchmark: the NAS-Bench-Macro table ranks nasbench-macro paths, not {space.name!r}")
        if space.stages != _MACRO_STAGES or any(choices != MACRO_OPS for choices in space.layer_choices):
            raise ValueError(f"space nasbench-macro with stages={list(space.stages)} does not match NAS-Bench-Macro, "
                             f"which trained stages {list(_MACRO_STAGES)} ({table.num_layers} layers of "
                             f"{table.num_choices} ops); only widths (init_channels, head_channels) may change")
    elif isinstance(table, NB201Benchmark):
        if not isinstance(space, NB201PathSpace):
            raise ValueError(f"benchmark: the NAS-Bench-201 table ranks nas-bench-201-path paths, not {space.name!r}")
        if not space.shared:
            raise ValueError(f"benchmark: NAS-Bench-201's ground truth holds networks whose cells share one topology; "
                             f"space nas-bench-201-path with cell_topology={space.cell_topology!r} has networks "
                             f"outside it (use cell_topology='shared' to rank against the table)")
    else:
        raise TypeError(f"table must be a MacroBenchmark or NB201Benchmark, got {type(table).__name__}")


def _check_dataset(space_name: str, dataset: str) -> str:
    entry = _supported(space_name)
    if not isinstance(dataset, str):
        raise TypeError(f"gt_dataset must be a str, got {type(dataset).__name__}")
    for name in entry["datasets"]:
        if dataset.lower() == name.lower():
            return name
    raise ValueError(f"gt_dataset {dataset!r}: the {entry['benchmark']} table has {', '.join(entry['datasets'])}")


def _nb201_order(space: NB201PathSpace) -> np.ndarray:
    """Benchmark index of every path, in path-index order."""
    return np.array([space.benchmark_index(space.path_at(i)) for i in range(space.size)], dtype=np.int64)


def ground_truth(space: PathSpace, table, *, dataset: str = "cifar10") -> GroundTruth:
    """The table's test accuracy of every path of ``space`` (see the module docstring)."""
    if not isinstance(space, PathSpace):
        raise TypeError(f"space must be a single-path space (a PathSpace), got {type(space).__name__}")
    check_table_space(space, table)
    entry = GROUND_TRUTH[space.name]
    dataset = _check_dataset(space.name, dataset)
    if isinstance(table, MacroBenchmark):
        values = np.array(table.accuracies(), dtype=np.float64)  # mixed-radix order == space.index_of
    else:
        values = np.array(table.accuracies(dataset), dtype=np.float64)[_nb201_order(space)]
    values.setflags(write=False)
    return GroundTruth(space=space, values=values, benchmark=entry["benchmark"], dataset=dataset,
                       column=entry["column"], source=str(getattr(table, "source", "")))


def _nb201_valid_file(table: NB201Benchmark, path: Optional[os.PathLike]) -> Optional[Path]:
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"valid_table must be a path (str or os.PathLike) or None, got {type(path).__name__}")
        candidate = Path(path).expanduser()
        if candidate.is_dir():
            candidate = candidate / Path(NB201_VALID_JSON).name
        if not candidate.is_file():
            raise FileNotFoundError(f"valid_table: {candidate} does not exist (the EPS repository's "
                                    f"{Path(NB201_VALID_JSON).name})")
        return candidate
    candidates = []
    if table.source:
        candidates.append(Path(table.source).parent / Path(NB201_VALID_JSON).name)
    base = data_dir()
    if base is not None:
        candidates.append(base / NB201_VALID_JSON)
    return next((c for c in candidates if c.is_file()), None)


def validation_values(space: PathSpace, table, *, dataset: str = "cifar10",
                      path: Optional[os.PathLike] = None) -> Optional[GroundTruth]:
    """The validation accuracy of every path when the benchmark publishes one for ``dataset``, else None.

    Only NAS-Bench-201 on CIFAR-10 has one here (EPS's ``eps_all_structure_valid_accuracy.json``,
    searched for beside the csv and in the data folder unless ``path`` names it; a ``path`` that does not
    exist is a FileNotFoundError). It comes from the benchmark's first release, as EPS copied it; its
    test list from the same release equals the csv on 59% of cells (see :mod:`pynas.benchmarks.nb201`),
    which does not matter for a search that only ranks by it.
    """
    check_table_space(space, table)
    dataset = _check_dataset(space.name, dataset)
    if not isinstance(table, NB201Benchmark) or dataset != "cifar10":
        if path is not None:
            raise ValueError(f"valid_table: only NAS-Bench-201 on cifar10 has a validation column; "
                             f"this is {GROUND_TRUTH[space.name]['benchmark']} on {dataset}")
        return None
    file = _nb201_valid_file(table, path)
    if file is None:
        return None
    valid = NB201Benchmark.from_eps_json(file)  # same [cell, value] layout as EPS's test list
    values = np.array(valid.accuracies("cifar10"), dtype=np.float64)[_nb201_order(space)]
    values.setflags(write=False)
    return GroundTruth(space=space, values=values, benchmark="nas-bench-201", dataset="cifar10",
                       column="validation accuracy (%) after 200 epochs on the cifar10-valid split "
                              "(benchmark v1.0, as copied by EPS)", source=str(file))
