"""Pictures of searched cells and of architecture weights during a search.

``draw_cell`` draws a genotype (DARTS or NAS-Bench-201) with graphviz's ``dot``
when it is installed, otherwise with matplotlib. ``plot_arch_weights`` draws
the softmaxed architecture weights logged per epoch as heat maps and curves;
``read_history`` reads them back from a trainer's ``metrics.jsonl``.

matplotlib is an optional dependency (``pip install matplotlib``), imported
only when a picture is drawn with it; importing this package needs neither it
nor graphviz. Nothing here touches pyplot's global state: figures are built
with ``matplotlib.figure.Figure`` and saved through the Agg canvas, so no
display is needed and an interactive session's backend is left alone.
"""
from __future__ import annotations

from pynas.viz.arch_weights import plot_arch_weights, read_history
from pynas.viz.cells import draw_cell

__all__ = ["draw_cell", "plot_arch_weights", "read_history"]
