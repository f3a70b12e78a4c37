"""pynas.viz: cell diagrams (matplotlib and graphviz backends), architecture-weight plots, history reading."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest
import torch

from pynas.spaces import DARTS_V2, DartsCellSpace, NB201CellSpace, NB201Genotype
from pynas.viz import cells as viz_cells
from pynas.viz import draw_cell, plot_arch_weights, read_history

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
HAS_DOT = shutil.which("dot") is not None
needs_mpl = pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed (pip install matplotlib)")
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="graphviz 'dot' is not on PATH (apt-get install graphviz)")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
DARTS = DartsCellSpace()
NB201 = NB201CellSpace()


def assert_png(path):
    assert path.is_file()
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC


def no_dot(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(viz_cells.shutil, "which", lambda name, *a, **k: None if name == "dot" else real_which(name))


def darts_history(epochs=3, beta=True):
    gen = torch.Generator().manual_seed(0)
    history = []
    for t in range(epochs):
        entry = {"epoch": t, "alpha": torch.randn(2, DARTS.num_edges, len(DARTS.primitives), generator=gen)
                 .mul(t + 1).softmax(-1).tolist()}
        if beta:
            entry["beta"] = DARTS.edge_softmax(torch.randn(2, DARTS.num_edges, generator=gen)).tolist()
        history.append(entry)
    return history


def nb201_history(epochs=3):
    gen = torch.Generator().manual_seed(1)
    return [{"epoch": t, "alpha": torch.randn(NB201.num_edges, len(NB201.primitives), generator=gen).softmax(-1)
             .tolist()} for t in range(epochs)]


# ---------------------------------------------------------------------------
# draw_cell
# ---------------------------------------------------------------------------
@needs_mpl
def test_darts_cells_matplotlib(tmp_path):
    both = draw_cell(DARTS_V2, tmp_path / "sub" / "dir" / "darts_v2.png", backend="matplotlib")
    assert both == tmp_path / "sub" / "dir" / "darts_v2.png"
    assert_png(both)
    reduce = draw_cell(DARTS_V2, tmp_path / "reduce", cell="reduce", backend="matplotlib")
    assert reduce.name == "reduce.png"  # no suffix: .png appended
    assert_png(reduce)
    assert not list(tmp_path.rglob("*.dot"))


@needs_mpl
def test_nb201_cell_matplotlib(tmp_path):
    out = draw_cell(NB201Genotype.from_arch_str(NB201_ARCH), tmp_path / "nb201.png", backend="matplotlib")
    assert_png(out)


@needs_mpl
def test_matplotlib_pdf_and_svg(tmp_path):
    pdf = draw_cell(DARTS_V2, tmp_path / "cell.pdf", cell="normal", backend="matplotlib")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    svg = draw_cell(DARTS_V2, tmp_path / "cell", fmt="svg", cell="normal", backend="matplotlib")
    assert svg.suffix == ".svg" and "<svg" in svg.read_text()


@needs_dot
def test_graphviz_backend(tmp_path):
    out = draw_cell(DARTS_V2, tmp_path / "darts_v2.png", backend="graphviz")
    assert_png(out)
    source = (tmp_path / "darts_v2.dot").read_text()
    assert "cluster_normal" in source and "cluster_reduce" in source
    nb = draw_cell(NB201Genotype.from_arch_str(NB201_ARCH), tmp_path / "nb201.svg")  # auto picks graphviz
    assert "<svg" in nb.read_text()
    nb_source = (tmp_path / "nb201.dot").read_text()
    assert nb_source.count("->") == 5 and "none" not in nb_source  # the 'none' edge is left out


def test_dot_source_needs_no_executable(tmp_path, monkeypatch):
    no_dot(monkeypatch)
    out = draw_cell(DARTS_V2, tmp_path / "cells.dot")
    text = out.read_text()
    assert text.startswith("digraph")
    assert text.count("->") == 2 * (8 + 4)  # 8 op edges + 4 concat edges per cell
    assert text.count("sep_conv_3x3") == 5 and text.count("max_pool_3x3") == 5


def test_graphviz_missing_or_failing(tmp_path, monkeypatch):
    no_dot(monkeypatch)
    with pytest.raises(RuntimeError, match="'dot' executable"):
        draw_cell(DARTS_V2, tmp_path / "a.png", backend="graphviz")
    if HAS_MPL:  # auto falls back to matplotlib
        assert_png(draw_cell(DARTS_V2, tmp_path / "b.png", cell="normal"))
        assert not (tmp_path / "b.dot").exists()
    false = shutil.which("false")
    if false is None:
        pytest.skip("no 'false' executable to stand in for a failing dot")
    monkeypatch.setattr(viz_cells.shutil, "which", lambda name, *a, **k: false)
    with pytest.raises(RuntimeError, match="failed"):
        draw_cell(DARTS_V2, tmp_path / "c.png", backend="graphviz")


@pytest.mark.parametrize("kwargs, match", [
    (dict(genotype="|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"), "genotype must be"),
    (dict(genotype={"space": "darts"}), "genotype must be"),
    (dict(cell="reduction"), "cell must be"),
    (dict(genotype=NB201Genotype.from_arch_str(NB201_ARCH), cell="normal"), "cell must be None"),
    (dict(backend="plotly"), "backend must be"),
    (dict(fmt="jpg"), "fmt must be"),
    (dict(path="x.pdf", fmt="png"), "does not match"),
    (dict(path="x.jpg"), "suffix"),
    (dict(path="x.dot", backend="matplotlib"), "fmt='dot'"),
    (dict(path=""), "path must be"),
])
def test_draw_cell_bad_inputs(tmp_path, kwargs, match):
    args = dict(genotype=DARTS_V2, path=tmp_path / "x.png")
    args.update(kwargs)
    if isinstance(args["path"], str) and args["path"]:
        args["path"] = tmp_path / args["path"]
    with pytest.raises(ValueError, match=match):
        draw_cell(args.pop("genotype"), args.pop("path"), **args)


def test_missing_matplotlib_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        draw_cell(DARTS_V2, tmp_path / "x.png", backend="matplotlib")
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_arch_weights(nb201_history(1), tmp_path / "w.png", primitives=NB201.primitives, edges=NB201.edges)


# ---------------------------------------------------------------------------
# plot_arch_weights / read_history
# ---------------------------------------------------------------------------
@needs_mpl
@pytest.mark.parametrize("beta", [True, False])
def test_darts_weights(tmp_path, beta):
    out = plot_arch_weights(darts_history(3, beta), tmp_path / "plots" / "alpha.png",
                            primitives=DARTS.primitives, edges=DARTS.edges, title="DARTS search")
    assert out == tmp_path / "plots" / "alpha.png"
    assert_png(out)


@needs_mpl
def test_edge_scores_are_drawn_in_place_of_beta(tmp_path):
    from pynas.viz.arch_weights import _parse_history

    history = darts_history(3, True)
    for k, entry in enumerate(history):  # FTSO's -dL/dbeta: any sign, beta left uniform
        entry["edge_score"] = (torch.linspace(-1.0, 0.5, DARTS.num_edges).repeat(2, 1) * (k + 1)).tolist()
    _, shown, _, _, scores = _parse_history(history, DARTS.num_edges, len(DARTS.primitives))
    assert scores and np.allclose(shown[-1], history[-1]["edge_score"])
    assert_png(plot_arch_weights(history, tmp_path / "scores.png", primitives=DARTS.primitives, edges=DARTS.edges))


@needs_mpl
def test_nb201_weights_one_and_many_epochs(tmp_path):
    one = plot_arch_weights(nb201_history(1), tmp_path / "one", primitives=NB201.primitives, edges=NB201.edges)
    assert one.suffix == ".png"
    assert_png(one)
    many = nb201_history(40)
    many[0]["alpha"] = torch.tensor(many[0]["alpha"])  # tensors are accepted too
    assert_png(plot_arch_weights(many, tmp_path / "many.png", primitives=NB201.primitives, edges=NB201.edges))
    labels = [f"e{k}" for k in range(NB201.num_edges)]  # ready-made edge labels
    svg = plot_arch_weights(many, tmp_path / "many.svg", primitives=NB201.primitives, edges=labels)
    assert "<svg" in svg.read_text()


def test_read_history(tmp_path):
    history = darts_history(2)
    lines = [
        {"event": "start", "config": {}},
        {"event": "epoch", "epoch": 0, "train_loss": 2.3},  # no arch: skipped
        {"event": "epoch", "epoch": 0, "arch": {"alpha": history[0]["alpha"], "beta": history[0]["beta"]}},
        {"event": "step", "arch": {"alpha": [[0.5, 0.5]]}},  # not an epoch line: skipped
        {"event": "epoch", "epoch": 9, "arch": history[1]},  # the arch's own epoch wins
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    got = read_history(path)
    assert [h["epoch"] for h in got] == [0, 1]
    assert got[0]["alpha"] == history[0]["alpha"] and got[1]["beta"] == history[1]["beta"]
    if HAS_MPL:
        assert_png(plot_arch_weights(got, tmp_path / "w.png", primitives=DARTS.primitives, edges=DARTS.edges))

    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"event": "epoch", "epoch": 0}) + "\n")
    assert read_history(empty) == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(lines[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        read_history(bad)


def _bad_histories():
    good = darts_history(2)
    wrong_edges = [{"alpha": torch.rand(2, 13, 8).tolist()}]
    wrong_ops = [{"alpha": torch.rand(2, 14, 7).tolist()}]
    ragged = [{"alpha": [[[0.1] * 8] * 14, [[0.1] * 8] * 13]}]
    changing = [good[0], {"alpha": good[1]["alpha"][0]}]
    bad_beta = [{**good[0], "beta": torch.rand(2, 13).tolist()}]
    some_beta = [good[0], {"epoch": 1, "alpha": good[1]["alpha"]}]
    return [
        ([], "history is empty"),
        ({"alpha": good[0]["alpha"]}, "history must be a list"),
        ([{"epoch": 0}], r"history\[0\] must be a dict with an 'alpha'"),
        (wrong_edges, r"history\[0\]\['alpha'\] has shape \[2, 13, 8\]"),
        (wrong_ops, r"len\(primitives\)=8"),
        (ragged, "regular shape"),
        ([{"alpha": torch.rand(3, 14, 8).tolist()}], r"\[2\]\[E\]\[P\]"),
        (changing, r"history\[1\]\['alpha'\] has shape"),
        (bad_beta, r"history\[0\]\['beta'\] has shape"),
        (some_beta, r"history\[1\] lacks 'beta'"),
        ([{**good[0], "epoch": "3"}], r"history\[0\]\['epoch'\] must be an int"),
        ([{"alpha": [[[float("nan")] * 8] * 14] * 2}], "non-finite"),
    ]


@pytest.mark.parametrize("history, match", _bad_histories())
def test_plot_arch_weights_bad_history(tmp_path, history, match):
    with pytest.raises(ValueError, match=match):
        plot_arch_weights(history, tmp_path / "w.png", primitives=DARTS.primitives, edges=DARTS.edges)
    assert not (tmp_path / "w.png").exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(primitives="none"), "primitives must be"),
    (dict(primitives=["none", "none"] + list(DARTS.primitives[2:])), "distinct"),
    (dict(edges=[(0, 0)] * 13 + [(0, "x")]), r"edges\[13\]"),
    (dict(edges=[]), "edges must be"),
    (dict(path="w.dot"), "suffix"),
    (dict(title=3), "title must be"),
])
def test_plot_arch_weights_bad_arguments(tmp_path, kwargs, match):
    args = dict(primitives=DARTS.primitives, edges=DARTS.edges, path=tmp_path / "w.png")
    args.update(kwargs)
    if isinstance(args["path"], str):
        args["path"] = tmp_path / args["path"]
    with pytest.raises(ValueError, match=match):
        plot_arch_weights(darts_history(1), args.pop("path"), **args)
