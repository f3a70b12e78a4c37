"""The resolved config of a run dir, and what a resume may change in it.

A fresh run writes its resolved config (``config.yaml``, ``train_config.yaml`` for ``pynas train``). A
run dir that holds a checkpoint is resumed, and the config of the resuming command is compared with the
run's: a checkpoint is only the state of *that* run, so a different space, algorithm or option, width, data
setting, seed, batch size or learning rate would either fail deep inside ``load_state_dict`` or, worse,
silently continue a different experiment. Any difference is an error listing every differing key with
its old and new value, except in :data:`SAFE_RESUME_KEYS`:

``checkpoint_every``  how often checkpoints are written: no effect on the numbers
``pictures``          output only
``data.workers``      decoding processes: samples do not depend on it (each is drawn from seed, epoch
                      and position)
``epochs``            ``pynas train`` only, and only increased: its learning rate (and DARTS's drop-path
                      ramp) is a function of the step and the epoch count, so the remaining steps follow
                      the schedule laid over the new total, as if the run had been planned that long (the
                      lr jumps at the resume step from the old schedule's value to the new one's). A
                      search cannot be extended: its schedules (the weights' cosine ``T_max``, SPOS's
                      linear decay, warm-up and split epochs, FTSO's stages) are built for its epochs and
                      their state is in the checkpoint.

Accepted changes are appended to ``config_history.yaml`` (one entry per resume that changed something:
the time and each key's old and new value); the config file keeps the values the run started with, and
:func:`effective_config` applies the history to it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from pynas.config import _plain, load_yaml, save_yaml

#: keys a resume may change (dotted paths); see the module docstring
SAFE_RESUME_KEYS = ("checkpoint_every", "pictures", "data.workers")
#: keys ``pynas train`` may increase on resume (its lr schedule is re-laid over the new total)
EXTENDABLE_KEYS = ("epochs",)
HISTORY = "config_history.yaml"
_ABSENT = "<absent>"


def _normal(cfg: dict) -> dict:
    """The config as YAML gives it back (tuples as lists, paths as strings), so a saved and a live config compare."""
    return yaml.safe_load(yaml.safe_dump(_plain(cfg), sort_keys=False)) or {}


def _flat(value: Any, prefix: str = "") -> dict:
    if isinstance(value, dict) and (value or not prefix):
        out: dict = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _unflat_set(cfg: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = cfg
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value == _ABSENT:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def read_history(out_dir: Path) -> list:
    path = Path(out_dir) / HISTORY
    if not path.is_file():
        return []
    try:
        entries = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err}); restore it or delete the run dir to restart") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of resume records; restore it or delete the run dir to restart")
    return entries


def effective_config(out_dir: Path, name: str = "config.yaml") -> dict:
    """The run's config with every accepted resume change applied: the values its last resume ran with."""
    cfg = load_yaml(Path(out_dir) / name)
    for entry in read_history(out_dir):
        for key, change in (entry.get("changes") or {}).items():
            _unflat_set(cfg, key, change["new"])
    return cfg


def _show(value: Any) -> str:
    return _ABSENT if value == _ABSENT else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")


def compare_configs(old: dict, new: dict, *, extendable: Iterable[str] = (), ignore: Iterable[str] = (),
                    where: str = "the run") -> dict:
    """The accepted changes ``{key: {"old", "new"}}`` from ``old`` to ``new``; ValueError on any other change."""
    extendable, ignore = set(extendable), set(ignore)
    a, b = _flat(_normal(old)), _flat(_normal(new))
    accepted, refused = {}, []
    for key in list(b) + [k for k in a if k not in b]:  # the config's own order, then keys it dropped
        before, after = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if before == after or key in ignore:
            continue
        if key in SAFE_RESUME_KEYS:
            accepted[key] = {"old": before, "new": after}
        elif key in extendable and isinstance(before, int) and isinstance(after, int) and after > before:
            accepted[key] = {"old": before, "new": after}
        else:
            why = ""
            if key == "epochs":
                why = (" (only `pynas train` may raise epochs; a search's schedules are laid over its epochs)"
                       if not extendable else " (epochs may only be raised)")
            refused.append(f"{key}: {_show(before)} -> {_show(after)}{why}")
    if refused:
        raise ValueError(f"{where} was started with other settings, so its checkpoint cannot continue this "
                         f"config; differing: {'; '.join(refused)}. Rerun with the run's settings (see its "
                         f"config), or use another --out to start a new run (safe to change: "
                         f"{', '.join(SAFE_RESUME_KEYS)}" + (f"; may be raised: {', '.join(sorted(extendable))}"
                                                             if extendable else "") + ")")
    return accepted


def record_run_config(out_dir: Path, cfg: dict, *, resuming: bool, name: str = "config.yaml", main: bool = True,
                      extendable: Iterable[str] = (), ignore: Iterable[str] = ()) -> dict:
    """Write a fresh run's config, or check a resuming run's against it; returns the accepted changes.

    Fresh (``resuming`` false): ``name`` is (over)written and a stale history removed, since nothing of an
    earlier run that never checkpointed survives. Resuming: see :func:`compare_configs`; accepted changes
    go to ``config_history.yaml``. Only ``main`` (rank 0) writes; every rank compares, so all raise alike.
    """
    out_dir = Path(out_dir)
    path = out_dir / name
    if not resuming or not path.is_file():
        # A run dir with a checkpoint but no config (written by an older pynas, or the config deleted):
        # nothing to compare with, so record this config as the run's.
        if main:
            save_yaml(path, cfg)
            if not resuming:
                (out_dir / HISTORY).unlink(missing_ok=True)
        return {}
    changes = compare_configs(effective_config(out_dir, name), cfg, extendable=extendable, ignore=ignore,
                              where=f"run dir {out_dir}")
    if changes and main:
        _append_history(out_dir, {"resumed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": changes})
    return changes


def _append_history(out_dir: Path, entry: dict) -> None:
    entries = read_history(out_dir) + [entry]
    path = out_dir / HISTORY
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(_plain(entries), sort_keys=False))
    tmp.replace(path)

