"""``path.json``: a found single path, with everything needed to rebuild its network alone.

``pynas search`` on a single-path space writes it (:func:`path_record`);
``pynas train --path`` reads it back (:func:`load_path_spec`) and trains
``space.build_network(choices)`` from scratch. Format version 2 (the
``format``/``version`` keys) adds to the keys of the first files (``space``,
``path``, ``choices``, ``ops``, ``params``, ``flops``, ``supernet_accuracy``,
``constraint``):

``format``         ``"pynas-path"``
``version``        2
``space_options``  the space's resolved configuration (every keyword of its
                   constructor that shapes the network: ``num_classes``,
                   ``in_channels``, ``input_size`` and the space's own, e.g.
                   ``init_channels``), so ``create_space(space, **space_options)``
                   is the searched space whatever the defaults become
``dataset``        the dataset the search ran on (``data``: its root, if given)

``params`` and ``flops`` are the stand-alone network's (FLOPs: multiply-
accumulates of one ``input_size`` image). Loading checks that the file's
``path``, ``ops``, ``params`` and ``flops`` agree with the space it names, so a
hand-edited or stale file is refused rather than silently trained.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

__all__ = ["PATH_FORMAT", "PATH_VERSION", "PathSpec", "space_options", "path_record", "load_path_spec"]

PATH_FORMAT = "pynas-path"
PATH_VERSION = 2


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def space_options(space: Any) -> Dict[str, Any]:
    """The keyword arguments that rebuild ``space`` (``create_space(space.name, **space_options(space))``),
    JSON-ready (tuples as lists)."""
    config = space.config
    config = config() if callable(config) else config  # a method on ConfiguredPathSpace, a property on chains
    return _json_ready(dict(config))


def path_record(space: Any, path: Any, *, dataset: Optional[str] = None, data: Optional[str] = None,
                **extra: Any) -> Dict[str, Any]:
    """The ``path.json`` record of ``path`` in ``space`` (``extra``: further keys, e.g. ``supernet_accuracy``)."""
    choices = space.check_path(path)
    record: Dict[str, Any] = {
        "format": PATH_FORMAT, "version": PATH_VERSION,
        "space": space.name, "space_options": space_options(space),
        "path": space.format(choices), "choices": list(choices), "ops": space.describe(choices),
        "params": int(space.params(choices)), "flops": int(space.flops(choices)),
        "dataset": dataset,
    }
    if data is not None:
        record["data"] = str(data)
    record.update(extra)
    return record


@dataclass(frozen=True)
class PathSpec:
    """A validated ``path.json``: :meth:`build_space` and :meth:`build_network` rebuild what the search found."""

    space_name: str
    space_options: Dict[str, Any]
    choices: Tuple[int, ...]
    ops: Tuple[str, ...]
    params: int
    flops: int
    dataset: Optional[str] = None
    data: Optional[str] = None
    file: Optional[Path] = None
    record: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> str:
        return self.build_space().format(self.choices)

    def build_space(self, **overrides: Any):
        """The space of the file, with ``overrides`` of its options (e.g. ``num_classes=100``)."""
        from pynas.spaces import create_space

        return create_space(self.space_name, **{**self.space_options, **overrides})

    def build_network(self, *, space_overrides: Optional[Dict[str, Any]] = None, **options: Any):
        """The stand-alone network of the path, freshly initialised from torch's global RNG (``options``: the
        space's build options, e.g. ``dropout`` for the chain spaces)."""
        return self.build_space(**(space_overrides or {})).build_network(self.choices, **options)


def _bad(file: Path, key: str, why: str) -> ValueError:
    return ValueError(f"{file}: key {key!r} {why}")


def load_path_spec(file: Union[str, Path]) -> PathSpec:
    """Read and validate a ``path.json`` (format version 2, see the module docstring).

    Raises FileNotFoundError for a missing file and ValueError, naming the file
    and the key, for anything else: not JSON, another format, a missing key, a
    space that is unknown or not single-path, options the space rejects,
    choices out of range, or ``path``/``ops``/``params``/``flops`` that disagree
    with the space.
    """
    from pynas.spaces import SPACES
    from pynas.spaces.path_space import PathSpace

    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such path file (pynas search writes RUN_DIR/path.json)")
    try:
        record = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not a JSON file ({err})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(record).__name__}")
    if "genotype" in record and "choices" not in record:
        raise ValueError(f"{file}: this is a cell genotype, not a single path; use pynas train --genotype")
    fmt = record.get("format")
    if fmt is not None and fmt != PATH_FORMAT:
        raise _bad(file, "format", f"is {fmt!r}, expected {PATH_FORMAT!r}")
    version = record.get("version")
    if fmt is not None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _bad(file, "version", f"must be a positive int, got {version!r}")
        if version > PATH_VERSION:
            raise _bad(file, "version", f"is {version}: written by a newer pynas (this one reads up to "
                                        f"{PATH_VERSION})")
    for key in ("space", "choices"):
        if key not in record:
            raise _bad(file, key, "is missing")
    if "space_options" not in record:
        raise _bad(file, "space_options", "is missing: the file predates path format version 2, which records "
                                          "the space's options; rerun the search (its checkpoint is reused) or add "
                                          "them by hand")
    name = record["space"]
    if not isinstance(name, str) or name not in SPACES:
        raise _bad(file, "space", f"must name a registered space, got {name!r}")
    options = record["space_options"]
    if not isinstance(options, dict):
        raise _bad(file, "space_options", f"must be an object, got {type(options).__name__}")
    try:
        space = SPACES.create(name, **options)
    except (TypeError, ValueError) as err:
        raise _bad(file, "space_options", f"is rejected by space {name!r}: {err}") from None
    if not isinstance(space, PathSpace):
        raise _bad(file, "space", f"is {name!r}, a cell space; pynas train --path needs a single-path space "
                                  f"(cells: --genotype)")
    raw = record["choices"]
    if not isinstance(raw, list):
        raise _bad(file, "choices", f"must be a list of ints, got {type(raw).__name__}")
    try:
        choices = space.check_path(raw, "choices")
    except (TypeError, ValueError) as err:
        raise _bad(file, "choices", f"is not a path of {name}: {err}") from None
    ops = tuple(space.describe(choices))
    expected = {"path": space.format(choices), "ops": list(ops), "params": int(space.params(choices)),
                "flops": int(space.flops(choices))}
    for key, value in expected.items():
        if key in record and record[key] != value:
            raise _bad(file, key, f"is {record[key]!r} but the choices {list(choices)} in {name} with these "
                                  f"space_options give {value!r} (edited by hand, or written by another version "
                                  f"of the space)")
    for key in ("dataset", "data"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise _bad(file, key, f"must be a string, got {record[key]!r}")
    return PathSpec(space_name=name, space_options=space_options(space), choices=choices, ops=ops,
                    params=expected["params"], flops=expected["flops"], dataset=record.get("dataset"),
                    data=record.get("data"), file=file, record=record)
