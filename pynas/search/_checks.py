"""Argument checks for samplers and search strategies: every error names the argument.

Wrong types raise ``TypeError``, values out of range ``ValueError``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional

import torch
from torch import Tensor

from pynas.spaces.path_space import Constraint, PathSpace


def check_space(space: Any) -> PathSpace:
    if not isinstance(space, PathSpace):
        raise TypeError(f"space must be a single-path space (a PathSpace), got {type(space).__name__}")
    if space.num_layers == 0:
        raise ValueError(f"space {space.name!r} has no searchable layers")
    if min(space.num_choices) < 1:
        raise ValueError(f"space {space.name!r} has a layer without candidate ops: {list(space.num_choices)}")
    return space


def check_int(value: Any, name: str, *, minimum: int = 0, maximum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bound}, got {value}")
    return value


def check_optional_int(value: Any, name: str, *, minimum: int = 0) -> Optional[int]:
    return None if value is None else check_int(value, name, minimum=minimum)


def check_float(value: Any, name: str, *, minimum: float = -math.inf, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], got {value}")
    return float(value)


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_seed(seed: Any) -> int:
    return check_int(seed, "seed", minimum=0)


def check_constraint(constraint: Any) -> Optional[Constraint]:
    """``None`` (no limits) or a :class:`Constraint`; an inactive one is normalised to ``None``."""
    if constraint is None:
        return None
    if not isinstance(constraint, Constraint):
        raise TypeError(f"constraint must be a pynas Constraint or None, got {type(constraint).__name__}")
    return constraint if constraint.active else None


def check_callable(fn: Any, name: str, *, allow_none: bool = False) -> Optional[Callable]:
    if fn is None and allow_none:
        return None
    if not callable(fn):
        raise TypeError(f"{name} must be callable{' or None' if allow_none else ''}, got {type(fn).__name__}")
    return fn


def call_score_fn(fn: Callable[[Tensor], Any], paths: Tensor, name: str = "score_fn", *,
                  allow_columns: bool = False) -> List[Any]:
    """``fn(paths [P, L])`` checked to be ``P`` numbers (a tensor or a sequence), returned as floats.

    With ``allow_columns``, ``[P, K]`` is accepted too and each row comes back as
    a tuple of K floats (lexicographic scores: GreedyNAS's accuracy, then loss).
    NaN is refused (it cannot be ranked); infinities are kept.
    """
    count = paths.shape[0]
    out = fn(paths)
    if not isinstance(out, Tensor):
        try:
            out = torch.as_tensor(out, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must return a tensor of {count} scores (one per path), "
                            f"got {type(out).__name__}") from None
    if out.dtype == torch.bool or out.is_complex():
        raise TypeError(f"{name} must return real scores, got a {out.dtype} tensor")
    rows = allow_columns and out.dim() == 2 and out.shape[0] == count and out.shape[1] >= 1
    if tuple(out.shape) != (count,) and not rows:
        wanted = f"[{count}] or [{count}, K]" if allow_columns else f"[{count}]"
        raise ValueError(f"{name} must return a tensor of shape {wanted} (one score per path), "
                         f"got shape {list(out.shape)}")
    values = out.detach().to("cpu", torch.float64)
    nan = torch.isnan(values).reshape(count, -1).any(1).nonzero()
    if nan.numel():
        i = int(nan[0])
        raise ValueError(f"{name} returned NaN for path {paths[i].tolist()}")
    return [tuple(row) for row in values.tolist()] if rows else values.tolist()


def check_saved_state(state: Any, *, kind: str, name: str, config: dict, owner: str) -> None:
    """A state dict saved by the same ``kind`` (``state[kind] == name``) with an equal ``config``."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from {owner}.state_dict(), got {type(state).__name__}")
    if state.get(kind) != name:
        raise ValueError(f"state was saved by {kind} {state.get(kind)!r}, not {name!r}")
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"state has no 'config' dict; was it made by {owner}.state_dict()?")
    if saved != config:
        keys = sorted(k for k in set(config) | set(saved) if saved.get(k) != config.get(k))
        detail = ", ".join(f"{k}: saved {saved.get(k)!r}, now {config.get(k)!r}" for k in keys)
        raise ValueError(f"state does not match this {owner}'s arguments ({detail})")
