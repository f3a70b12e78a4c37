"""Architecture weights over a search, as heat maps and curves.

A history is a list with one dict per logged epoch::

    {"epoch": 3,                      # optional; the list position otherwise
     "alpha": [2][E][P] or [E][P],    # softmaxed op weights: DARTS (normal, reduce) or one cell
     "beta":  [2][E] or [E],          # optional normalised edge weights (PC-DARTS)
     "edge_score": [2][E] or [E]}     # optional: what ranks the edges when beta does not move
                                      # (FTSO's -dL/dbeta); drawn in beta's place

Rows of ``alpha`` follow the space's ``edges`` and columns its ``primitives``
(``DartsCellSpace.edges``/``.primitives``, ``NB201CellSpace.edges``/...).
The trainer logs these dicts as the ``"arch"`` field of the ``"event": "epoch"``
lines of its ``metrics.jsonl``; ``read_history`` collects them.

``plot_arch_weights`` draws one row of panels per cell type:

1. the op weights of the last epoch (edges x ops, values written in);
2. with ``beta``: the last epoch's edge weights, one column;
3. the strongest op of every edge at every epoch (edges x epochs, coloured by
   op), i.e. how the derived choice settles; 'none' is left out for DARTS
   histories, as DARTS's discretisation does;
4. with ``beta``: the edge weights over the epochs (edges x epochs);
5. each op's weight averaged over the edges, per epoch (one curve per op,
   same colours as panel 3), which shows e.g. skip connections taking over.
"""
from __future__ import annotations

import json
import math
from numbers import Integral
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from pynas.viz.cells import _matplotlib, _output_path, _save_figure

__all__ = ["plot_arch_weights", "read_history"]

PathLike = Union[str, Path]
_IMAGE_FORMATS = ("png", "pdf", "svg")
_DARTS_STATES = {0: "$c_{k-2}$", 1: "$c_{k-1}$"}


def read_history(metrics_jsonl_path: PathLike) -> List[Dict[str, Any]]:
    """The ``"arch"`` dicts of the ``"event": "epoch"`` lines of a JSONL file, in file order.

    Blank lines, other events and epoch lines without ``"arch"`` are skipped;
    an ``"arch"`` without ``"epoch"`` takes the line's ``"epoch"`` when it has
    one. Returns an empty list when no line carries architecture weights.
    """
    path = Path(metrics_jsonl_path)
    history = []
    with path.open() as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"metrics_jsonl_path: {path}:{lineno} is not valid JSON: {exc.msg}") from exc
            if not isinstance(record, dict) or record.get("event") != "epoch" or "arch" not in record:
                continue
            arch = record["arch"]
            if not isinstance(arch, dict):
                raise ValueError(f"metrics_jsonl_path: {path}:{lineno}: 'arch' must be an object, "
                                 f"got {type(arch).__name__}")
            if "epoch" not in arch and "epoch" in record:
                arch = {"epoch": record["epoch"], **arch}
            history.append(arch)
    return history


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------
def _array(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a (nested) list of numbers with a regular shape: {exc}") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds non-finite values")
    return arr


def _check_primitives(primitives: Any) -> Tuple[str, ...]:
    if isinstance(primitives, (str, bytes)) or not isinstance(primitives, Sequence) or len(primitives) == 0:
        raise ValueError(f"primitives must be a non-empty sequence of op names, got {primitives!r}")
    if not all(isinstance(p, str) for p in primitives) or len(set(primitives)) != len(primitives):
        raise ValueError(f"primitives must be distinct op names, got {list(primitives)!r}")
    return tuple(primitives)


def _check_edges(edges: Any) -> List[Union[str, Tuple[int, int]]]:
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence) or len(edges) == 0:
        raise ValueError(f"edges must be a non-empty sequence of (node, input) pairs or labels, got {edges!r}")
    out = []
    for k, e in enumerate(edges):
        if isinstance(e, str):
            out.append(e)
            continue
        ok = (isinstance(e, Sequence) and len(e) == 2
              and all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 0 for v in e))
        if not ok:
            raise ValueError(f"edges[{k}] must be a pair of non-negative ints or a str label, got {e!r}")
        out.append((int(e[0]), int(e[1])))
    return out


def _edge_labels(edges: Sequence[Union[str, Tuple[int, int]]], darts: bool) -> List[str]:
    """DARTS edges are (node, input state); NAS-Bench-201 edges are (to, from) with from < to."""
    if not darts:
        pairs = [e for e in edges if not isinstance(e, str)]
        darts = any(frm >= to for to, frm in pairs)  # impossible for (to, from) edges
    labels = []
    for e in edges:
        if isinstance(e, str):
            labels.append(e)
        elif darts:
            node, j = e
            labels.append(f"node {node} ← " + _DARTS_STATES.get(j, f"node {j - 2}"))
        else:
            labels.append(f"node {e[0]} ← node {e[1]}")
    return labels


def _parse_history(history: Any, num_edges: int, num_ops: int):
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise ValueError(f"history must be a list of per-epoch dicts, got {type(history).__name__}")
    if len(history) == 0:
        raise ValueError("history is empty: no epoch carries architecture weights")
    alphas, betas, epochs = [], [], []
    shape = has_beta = None
    scores = False
    for i, entry in enumerate(history):
        if not isinstance(entry, Mapping) or "alpha" not in entry:
            raise ValueError(f"history[{i}] must be a dict with an 'alpha' entry, got {entry!r:.80}")
        alpha = _array(f"history[{i}]['alpha']", entry["alpha"])
        if shape is None:
            if alpha.ndim == 3 and alpha.shape[0] == 2:
                shape = (2, num_edges, num_ops)
            elif alpha.ndim == 2:
                shape = (num_edges, num_ops)
            else:
                raise ValueError(f"history[{i}]['alpha'] must be [2][E][P] (DARTS normal, reduce) or [E][P], "
                                 f"got shape {list(alpha.shape)}")
            has_beta = "beta" in entry and entry["beta"] is not None
        if alpha.shape != shape:
            raise ValueError(f"history[{i}]['alpha'] has shape {list(alpha.shape)}; expected {list(shape)} "
                             f"(len(edges)={num_edges}, len(primitives)={num_ops})")
        alphas.append(alpha)
        entry_has_beta = "beta" in entry and entry["beta"] is not None
        if entry_has_beta != has_beta:
            raise ValueError(f"history[{i}] {'has' if entry_has_beta else 'lacks'} 'beta' but history[0] "
                             f"{'has' if has_beta else 'lacks'} it; give it for all epochs or none")
        if "edge_score" in entry and entry["edge_score"] is not None:
            entry = {**entry, "beta": entry["edge_score"]}
            scores = True
        if has_beta:
            beta = _array(f"history[{i}]['beta']", entry["beta"])
            if beta.shape != shape[:-1]:
                raise ValueError(f"history[{i}]['beta'] has shape {list(beta.shape)}; expected {list(shape[:-1])}")
            betas.append(beta)
        epoch = entry.get("epoch", i)
        if isinstance(epoch, bool) or not isinstance(epoch, Integral):
            raise ValueError(f"history[{i}]['epoch'] must be an int, got {epoch!r}")
        epochs.append(int(epoch))
    alpha = np.stack(alphas)  # [T, (2,) E, P]
    beta = np.stack(betas) if has_beta else None
    if alpha.ndim == 3:  # one cell type: add the cell axis
        alpha = alpha[:, None]
        beta = beta[:, None] if beta is not None else None
    return alpha, beta, epochs, len(shape) == 3, scores


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------
def _op_colors(matplotlib, n: int) -> np.ndarray:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return np.array([cmap(k % cmap.N)[:3] for k in range(n)])


def _epoch_ticks(ax, epochs: Sequence[int]) -> None:
    step = max(1, math.ceil(len(epochs) / 8))
    ticks = list(range(0, len(epochs), step))
    ax.set_xticks(ticks, [str(epochs[t]) for t in ticks], fontsize=7)
    ax.set_xlabel("epoch", fontsize=8)


def _annotate(ax, values: np.ndarray, norm, cmap, fmt: str = ".2f") -> None:
    if values.size > 240:
        return
    fontsize = 6.5 if values.shape[1] > 4 else 7.5
    for (r, c), v in np.ndenumerate(values):
        red, green, blue, _ = cmap(norm(v))
        color = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
        ax.text(c, r, format(v, fmt), ha="center", va="center", fontsize=fontsize, color=color)


def _heat(fig, ax, values: np.ndarray, matplotlib, cmap_name: str, label: Optional[str], vmax: float,
          vmin: float = 0.0):
    """Heat map from vmin to vmax; a colour bar when label is given."""
    cmap = matplotlib.colormaps[cmap_name]
    norm = matplotlib.colors.Normalize(vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0)
    image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm)
    if label is not None:
        colorbar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.02, aspect=30)
        colorbar.ax.tick_params(labelsize=6.5)
        colorbar.set_label(label, fontsize=7)
    return norm, cmap


def plot_arch_weights(history: Sequence[Mapping[str, Any]], path: PathLike, *, primitives: Sequence[str],
                      edges: Sequence[Union[Tuple[int, int], str]], title: Optional[str] = None) -> Path:
    """Draw the architecture weights of ``history`` (see the module doc) to ``path``; return the path.

    primitives: op names, one per alpha column (the space's ``primitives``).
    edges: one per alpha row: the space's ``edges`` ((node, input) pairs for
        DARTS, (to, from) for NAS-Bench-201) or ready-made str labels.
    The format comes from the suffix: .png (default, appended when there is
    none), .pdf or .svg.
    """
    primitives = _check_primitives(primitives)
    edges = _check_edges(edges)
    if title is not None and not isinstance(title, str):
        raise ValueError(f"title must be a str or None, got {title!r}")
    alpha, beta, epochs, darts, scores = _parse_history(history, len(edges), len(primitives))
    # Edge scores may be negative and are not weights: their own range and names.
    beta_low = lambda values: min(0.0, float(values.min())) if scores else 0.0  # noqa: E731
    beta_name, beta_label = ("edge score", "edge score (-dL/dβ)") if scores else ("β", "edge weight")
    path, fmt = _output_path(path, None, allowed=_IMAGE_FORMATS)
    matplotlib, Figure, _ = _matplotlib()
    import matplotlib.colors  # noqa: F401  (submodules used below)
    import matplotlib.ticker  # noqa: F401

    num_t, num_cells, num_e, num_p = alpha.shape
    labels = _edge_labels(edges, darts)
    cell_names = ["normal cell", "reduction cell"] if num_cells == 2 else [None]
    colors = _op_colors(matplotlib, num_p)
    candidates = [k for k, p in enumerate(primitives) if not (darts and p == "none")] or list(range(num_p))
    skip_none = len(candidates) < num_p

    time_w = max(2.0, min(0.12 * num_t + 1.4, 4.5))
    if num_t <= 3:  # the strongest-op panel writes the op names in: room for them
        time_w = max(time_w, 0.9 * num_t + 0.3)
    widths = [0.55 * num_p + 1.0] + ([1.1] if beta is not None else []) + [time_w]
    widths += ([time_w + 0.6] if beta is not None else []) + [3.6]
    row_h = max(3.0, 0.3 * num_e + 1.5)
    label_w = 0.075 * max(len(s) for s in labels) + 0.4
    fig = Figure(figsize=(sum(widths) + label_w + 1.6, row_h * num_cells + 0.5), layout="constrained")
    grid = fig.add_gridspec(num_cells, len(widths), width_ratios=widths)
    last = epochs[-1]

    for c in range(num_cells):
        col = 0
        prefix = f"{cell_names[c]}: " if cell_names[c] else ""

        ax = fig.add_subplot(grid[c, col])
        norm, cmap = _heat(fig, ax, alpha[-1, c], matplotlib, "viridis", "op weight", alpha[-1, c].max())
        _annotate(ax, alpha[-1, c], norm, cmap)
        ax.set_xticks(range(num_p), primitives, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(num_e), labels, fontsize=7)
        ax.set_title(f"{prefix}op weights α, epoch {last}", fontsize=9)
        col += 1

        if beta is not None:
            ax = fig.add_subplot(grid[c, col])
            values = beta[-1, c][:, None]
            # same colours as the β-over-epochs panel, whose colour bar serves both
            norm, cmap = _heat(fig, ax, values, matplotlib, "magma", None, beta[:, c].max(), beta_low(beta[:, c]))
            _annotate(ax, values, norm, cmap, ".1e" if scores else ".2f")  # scores are small and signed
            ax.set_xticks([])
            ax.set_yticks(range(num_e), [])
            ax.set_title(f"{beta_name}, epoch {last}", fontsize=9)
            col += 1

        ax = fig.add_subplot(grid[c, col])
        sub = alpha[:, c][:, :, candidates]  # [T, E, K]
        strongest = np.asarray(candidates)[sub.argmax(-1)]  # [T, E], first on ties as derive does
        ax.imshow(colors[strongest.T], aspect="auto", interpolation="nearest")
        if num_t <= 3:  # few columns: room for the names
            for (t, e), k in np.ndenumerate(strongest):
                ax.text(t, e, primitives[k], ha="center", va="center", fontsize=6, color="white")
        ax.set_yticks(range(num_e), [])
        _epoch_ticks(ax, epochs)
        ax.set_title("strongest op" + (" (without 'none')" if skip_none else ""), fontsize=9)
        col += 1

        if beta is not None:
            ax = fig.add_subplot(grid[c, col])
            _heat(fig, ax, beta[:, c].T, matplotlib, "magma", beta_label, beta[:, c].max(), beta_low(beta[:, c]))
            ax.set_yticks(range(num_e), [])
            _epoch_ticks(ax, epochs)
            ax.set_title("edge scores" if scores else "edge weights β", fontsize=9)
            col += 1

        ax = fig.add_subplot(grid[c, col])
        mean = alpha[:, c].mean(axis=1)  # [T, P]
        marker = "o" if num_t <= 30 else None
        for k, name in enumerate(primitives):
            ax.plot(epochs, mean[:, k], color=colors[k], marker=marker, markersize=3, lw=1.4, label=name)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("mean op weight over edges", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if num_t == 1:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=6))
        ax.set_title("mean op weight", fontsize=9)
        if c == 0:
            ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                      title="op (colours of 'strongest op')", title_fontsize=6.5)

    if title is None:
        span = f"epoch {epochs[0]}" if num_t == 1 else f"epochs {epochs[0]}–{last}"
        title = f"architecture weights, {span}"
    fig.suptitle(title, fontsize=11)
    _save_figure(fig, path, fmt)
    return path
