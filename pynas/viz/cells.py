"""Diagrams of searched cells.

``draw_cell(genotype, path)`` writes one image. A DARTS genotype with
``cell=None`` gives one image holding both cells, the normal cell above the
reduction cell; ``cell="normal"`` or ``"reduce"`` draws one of them. A
NAS-Bench-201 genotype gives its 4-node DAG without the 'none' edges.

Backends:

* ``"graphviz"``: writes the graph in dot syntax next to the image
  (``cell.png`` -> ``cell.dot``) and renders it with the ``dot`` executable
  (``apt-get install graphviz``); no Python graphviz package is used.
* ``"matplotlib"``: an arc diagram drawn with matplotlib's Agg canvas: the
  nodes in order on a line, left to right (DARTS: c_{k-2}, c_{k-1}, nodes
  0..n-1, c_{k}; NAS-Bench-201: nodes 0..3), each op edge an arc above the
  line labelled with its op, the concatenation into c_{k} dashed grey arcs
  below it. Arcs of different span rise to different heights, so labels do
  not collide and no arc crosses a node.
* ``"auto"`` (default): graphviz when ``dot`` is on ``PATH``, else matplotlib.

The format comes from ``fmt`` or from the path's suffix: ``png`` (default when
the path has none, then appended), ``pdf``, ``svg``, or ``dot`` (only the dot
source, which needs no executable).
"""
from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from pynas.spaces.genotypes import NB201_EDGES, DartsGenotype, NB201Genotype

__all__ = ["draw_cell"]

PathLike = Union[str, Path]
FORMATS = ("png", "pdf", "svg", "dot")
BACKENDS = ("auto", "graphviz", "matplotlib")
CELLS = ("normal", "reduce")
DOT_TIMEOUT_S = 60

_FILL = {"input": "#c1e1c1", "node": "#add8e6", "output": "#eee8aa"}  # darkseagreen2, lightblue, palegoldenrod
_CELL_TITLES = {"normal": "normal cell", "reduce": "reduction cell", "nb201": "NAS-Bench-201 cell"}


def _matplotlib():
    """Import matplotlib lazily, with an actionable message when it is missing."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("pynas.viz draws with matplotlib, which is not installed: "
                          "pip install matplotlib") from exc
    return matplotlib, Figure, FigureCanvasAgg


def _save_figure(fig, path: Path, fmt: str, dpi: int = 150) -> None:
    _, _, FigureCanvasAgg = _matplotlib()
    FigureCanvasAgg(fig)  # attach an Agg canvas: no pyplot, no display
    fig.savefig(path, format=fmt, dpi=dpi)


def _output_path(path: PathLike, fmt: Optional[str], allowed: Sequence[str] = FORMATS) -> Tuple[Path, str]:
    """Resolve (path, format) and create the parent folder."""
    if not isinstance(path, (str, Path)) or str(path) == "":
        raise ValueError(f"path must be a non-empty str or Path, got {path!r}")
    path = Path(path)
    suffix = path.suffix[1:].lower()
    if fmt is not None:
        if not isinstance(fmt, str) or fmt.lower() not in allowed:
            raise ValueError(f"fmt must be one of {', '.join(allowed)}, got {fmt!r}")
        fmt = fmt.lower()
        if suffix in FORMATS and suffix != fmt:
            raise ValueError(f"fmt={fmt!r} does not match the path's suffix {path.suffix!r}")
        if not suffix:
            path = path.with_name(path.name + "." + fmt)
    elif suffix in allowed:
        fmt = suffix
    elif not suffix:
        fmt = "png"
        path = path.with_name(path.name + ".png")
    else:
        raise ValueError(f"path: cannot tell the format from the suffix {path.suffix!r}; "
                         f"use one of {', '.join('.' + f for f in allowed)} or pass fmt=")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, fmt


# ---------------------------------------------------------------------------
# Backend-neutral graph of a cell
# ---------------------------------------------------------------------------
@dataclass
class _Node:
    key: str
    kind: str  # "input", "node" or "output"
    math: str  # matplotlib mathtext
    html: str  # graphviz HTML-like label body
    pos: Tuple[float, float] = (0.0, 0.0)


@dataclass
class _Edge:
    src: str
    dst: str
    label: Optional[str]  # op name; None for the concatenation into the output
    rad: float = 0.0  # curvature for matplotlib (arc3)


@dataclass
class _Graph:
    name: str  # "normal", "reduce" or "nb201"
    nodes: List[_Node]
    edges: List[_Edge] = field(default_factory=list)

    @property
    def title(self) -> str:
        return _CELL_TITLES[self.name]

    def node(self, key: str) -> _Node:
        return next(n for n in self.nodes if n.key == key)


def _darts_graph(name: str, gene: Sequence[Tuple[str, int]], concat: Sequence[int]) -> _Graph:
    steps = len(gene) // 2
    nodes = [
        _Node("in0", "input", r"$c_{k-2}$", "c<SUB>k-2</SUB>"),
        _Node("in1", "input", r"$c_{k-1}$", "c<SUB>k-1</SUB>"),
    ]
    nodes += [_Node(f"n{i}", "node", str(i), str(i)) for i in range(steps)]
    nodes.append(_Node("out", "output", r"$c_{k}$", "c<SUB>k</SUB>"))

    def state(s: int) -> str:
        return f"in{s}" if s < 2 else f"n{s - 2}"

    graph = _Graph(name, nodes)
    graph.edges = [_Edge(state(j), f"n{k // 2}", op) for k, (op, j) in enumerate(gene)]
    graph.edges += [_Edge(state(s), "out", None) for s in concat]
    _layout_line(graph)
    return graph


def _nb201_graph(genotype: NB201Genotype) -> _Graph:
    kinds = {0: "input", 3: "output"}
    nodes = [_Node(str(i), kinds.get(i, "node"), str(i), str(i)) for i in range(4)]
    graph = _Graph("nb201", nodes)
    graph.edges = [_Edge(str(frm), str(to), op) for (to, frm), op in zip(NB201_EDGES, genotype.edges) if op != "none"]
    _layout_line(graph)
    return graph


_SPACING = 1.9  # matplotlib layout: units between neighbouring nodes on the line
_OP_RAD, _CONCAT_RAD = -0.85, 0.5  # arc3 curvature of a span-1 arc: op edges above the line, concat below


def _layout_line(graph: _Graph) -> None:
    """Arc diagram: the nodes in order on a horizontal line, every edge an arc.

    An arc over s places gets curvature rad / s**0.4: its middle rises
    |rad| * s**0.6 * _SPACING / 2, higher for longer arcs, so arcs into or out
    of one node never share a label position and every arc clears the nodes
    it passes over; and it leaves its node at a steeper angle the shorter it
    is, so the arcs fan out instead of overlapping at their ends.
    """
    index = {}
    for i, n in enumerate(graph.nodes):
        n.pos = (i * _SPACING, 0.0)
        index[n.key] = i
    seen: Dict[Tuple[str, str], int] = {}
    for e in graph.edges:
        span = abs(index[e.dst] - index[e.src])
        repeat = seen.get((e.src, e.dst), 0)  # the same input twice: nest the second arc
        seen[(e.src, e.dst)] = repeat + 1
        base = _CONCAT_RAD if e.label is None else _OP_RAD
        e.rad = base / span ** 0.4 * (1 + 0.45 * repeat)


# ---------------------------------------------------------------------------
# graphviz
# ---------------------------------------------------------------------------
def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_source(graphs: Sequence[_Graph]) -> str:
    lines = [
        "digraph cell {",
        "  rankdir=LR;",
        '  graph [fontname="Helvetica", fontsize=18, labelloc=t, nodesep=0.25, ranksep=0.6];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=16, '
        "height=0.45, width=0.45, penwidth=1.5];",
        '  edge [fontname="Helvetica", fontsize=12];',
    ]
    single = len(graphs) == 1
    # With rankdir=LR, dot stacks separate clusters bottom-up in the order given:
    # list them reversed so that the first (the normal cell) ends up on top.
    for g in reversed(graphs):
        indent = "  " if single else "    "
        if single:
            lines.append(f"  label={_dot_quote(g.title)};")
        else:
            lines += [f"  subgraph cluster_{g.name} {{", f"    label={_dot_quote(g.title)};", "    color=gray70;"]
        prefix = f"{g.name}_"
        for n in g.nodes:
            shape = ", shape=circle" if n.kind == "node" else ""
            lines.append(f"{indent}{_dot_quote(prefix + n.key)} [label=<{n.html}>, "
                         f"fillcolor={_dot_quote(_FILL[n.kind])}{shape}];")
        for e in g.edges:
            attrs = (f"label={_dot_quote(e.label)}" if e.label is not None
                     else 'color=gray50, style=dashed, arrowsize=0.7')
            lines.append(f"{indent}{_dot_quote(prefix + e.src)} -> {_dot_quote(prefix + e.dst)} [{attrs}];")
        if not single:
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render_graphviz(graphs: Sequence[_Graph], path: Path, fmt: str) -> None:
    source = _dot_source(graphs)
    dot_path = path if fmt == "dot" else path.with_suffix(".dot")
    dot_path.write_text(source)
    if fmt == "dot":
        return
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError("backend='graphviz' needs the graphviz 'dot' executable on PATH "
                           "(e.g. apt-get install graphviz); or use backend='matplotlib'")
    cmd = [exe, f"-T{fmt}", "-o", str(path), str(dot_path)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=DOT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"graphviz 'dot' did not finish within {DOT_TIMEOUT_S} s rendering {dot_path}") from exc
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"graphviz 'dot' failed (exit {exc.returncode}) rendering {dot_path}: "
                           f"{(exc.stderr or '').strip()}") from exc
    except OSError as exc:
        raise RuntimeError(f"could not run graphviz 'dot' ({exe}): {exc}") from exc
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"graphviz 'dot' wrote no image to {path}")


# ---------------------------------------------------------------------------
# matplotlib
# ---------------------------------------------------------------------------
_RADIUS = 0.36
_UNIT_IN = 0.85  # inches per layout unit


def _extent(g: _Graph) -> Tuple[float, float, float, float]:
    xs = [n.pos[0] for n in g.nodes]
    ys = [n.pos[1] for n in g.nodes]
    for e in g.edges:  # the middle of each arc
        (ax_, ay), (bx, by) = g.node(e.src).pos, g.node(e.dst).pos
        ys.append((ay + by) / 2 - e.rad * (bx - ax_) / 2)
    pad_x, pad_y = 0.6, 0.55
    return min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y


def _unit(vx: float, vy: float) -> Tuple[float, float]:
    norm = math.hypot(vx, vy) or 1.0
    return vx / norm, vy / norm


def _draw_graph(ax, g: _Graph) -> None:
    from matplotlib.patches import Circle, FancyArrowPatch

    x0, x1, y0, y1 = _extent(g)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(g.title, fontsize=12)
    for e in g.edges:
        (ax_, ay), (bx, by) = g.node(e.src).pos, g.node(e.dst).pos
        dx, dy = bx - ax_, by - ay
        # arc3's control point; the curve leaves/enters the nodes towards it
        cx, cy = ax_ + dx / 2 + e.rad * dy, ay + dy / 2 - e.rad * dx
        ux, uy = _unit(cx - ax_, cy - ay)
        vx, vy = _unit(cx - bx, cy - by)
        start = (ax_ + _RADIUS * ux, ay + _RADIUS * uy)
        end = (bx + _RADIUS * vx, by + _RADIUS * vy)
        concat = e.label is None
        ax.add_patch(FancyArrowPatch(
            start, end, connectionstyle=f"arc3,rad={e.rad}", arrowstyle="-|>", mutation_scale=11,
            shrinkA=0, shrinkB=0, lw=1.0 if concat else 1.3, color="0.55" if concat else "0.15",
            linestyle="--" if concat else "-", zorder=1))
        if not concat:
            # the middle of the quadratic Bezier start -> control -> end
            lx = (start[0] + 2 * cx + end[0]) / 4
            ly = (start[1] + 2 * cy + end[1]) / 4
            ax.text(lx, ly, e.label, fontsize=7.5, ha="center", va="center", zorder=3,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    for n in g.nodes:
        ax.add_patch(Circle(n.pos, _RADIUS, fc=_FILL[n.kind], ec="0.2", lw=1.3, zorder=4))
        ax.text(n.pos[0], n.pos[1], n.math, fontsize=11, ha="center", va="center", zorder=5)


def _render_matplotlib(graphs: Sequence[_Graph], path: Path, fmt: str) -> None:
    _, Figure, _ = _matplotlib()
    extents = [_extent(g) for g in graphs]
    width = max(x1 - x0 for x0, x1, _, _ in extents) * _UNIT_IN
    heights = [(y1 - y0) * _UNIT_IN + 0.4 for _, _, y0, y1 in extents]  # + room for the title
    fig = Figure(figsize=(width, sum(heights)))
    axes = fig.subplots(len(graphs), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.3 / sum(heights), hspace=0.1)
    for ax, g in zip(axes, graphs):
        _draw_graph(ax, g)
    _save_figure(fig, path, fmt)


# ---------------------------------------------------------------------------
def draw_cell(genotype: Union[DartsGenotype, NB201Genotype], path: PathLike, *,
              cell: Optional[str] = None, fmt: Optional[str] = None, backend: str = "auto") -> Path:
    """Draw a genotype's cell(s) to ``path`` and return the image's path.

    genotype: a ``DartsGenotype`` or ``NB201Genotype``.
    cell: for DARTS, ``"normal"``, ``"reduce"`` or ``None`` (both, normal above
        reduce, in one image); must be ``None`` for NAS-Bench-201.
    fmt: ``"png"``, ``"pdf"``, ``"svg"`` or ``"dot"``; default from the path's
        suffix (``png`` when it has none; the suffix is then appended).
    backend: ``"auto"`` (graphviz when ``dot`` is on PATH, else matplotlib),
        ``"graphviz"`` or ``"matplotlib"``. The graphviz backend also leaves the
        dot source next to the image (same stem, ``.dot``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if isinstance(genotype, DartsGenotype):
        if cell is None:
            which = list(CELLS)
        elif cell in CELLS:
            which = [cell]
        else:
            raise ValueError(f"cell must be 'normal', 'reduce' or None for a DARTS genotype, got {cell!r}")
        graphs = [_darts_graph(c, getattr(genotype, c), getattr(genotype, c + "_concat")) for c in which]
    elif isinstance(genotype, NB201Genotype):
        if cell is not None:
            raise ValueError(f"cell must be None for a NAS-Bench-201 genotype (it has one cell type), got {cell!r}")
        graphs = [_nb201_graph(genotype)]
    else:
        raise ValueError(f"genotype must be a DartsGenotype or NB201Genotype, got {type(genotype).__name__}")

    path, fmt = _output_path(path, fmt)
    if backend == "auto":
        backend = "graphviz" if fmt == "dot" or shutil.which("dot") else "matplotlib"
    if fmt == "dot" and backend == "matplotlib":
        raise ValueError("fmt='dot' writes graphviz source; it needs backend='graphviz' or 'auto'")
    if backend == "graphviz":
        _render_graphviz(graphs, path, fmt)
    else:
        _render_matplotlib(graphs, path, fmt)
    return path
