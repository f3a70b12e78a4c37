"""The eager reference supernets compute what ours computes, and the supernet benchmark writes sane records."""
from __future__ import annotations

import copy
import datetime
import json
import math

import pytest
import torch

from pynas.perf import supernet as bench
from pynas.perf.reference_supernets import ReferenceDartsSupernet
from pynas.spaces.darts_ops import Zero
from pynas.supernets.darts_supernet import DartsSupernet

CONFIGS = {
    "darts": dict(),
    "pc-darts": dict(partial_channels=4, edge_normalization=True),
    "pc-darts-k2": dict(partial_channels=2, edge_normalization=True),
    "pc-darts-imagenet-stem": dict(partial_channels=4, edge_normalization=True, stem="imagenet"),
}


def _pair(options, C=8, layers=3):
    """Ours in float64 with spread-out architecture weights, and the reference around a copy of it."""
    ours = DartsSupernet(C=C, layers=layers, generator=torch.Generator().manual_seed(0), **options).double()
    with torch.no_grad():
        # Far from uniform so that a wrongly weighted op or edge shows.
        ours.alpha.normal_()
        if ours.beta is not None:
            ours.beta.normal_()
    return ours, ReferenceDartsSupernet(copy.deepcopy(ours))


def _grads(net):
    return {name: p.grad for name, p in net.named_parameters()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_reference_matches_ours(name):
    ours, ref = _pair(CONFIGS[name])
    size = 64 if CONFIGS[name].get("stem") == "imagenet" else 16
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    out_ours, out_ref = ours(x), ref(x)
    torch.testing.assert_close(out_ref, out_ours, rtol=1e-10, atol=1e-10)
    torch.nn.functional.cross_entropy(out_ours, y).backward()
    torch.nn.functional.cross_entropy(out_ref, y).backward()
    g_ours = _grads(ours)
    g_ref = {k.removeprefix("supernet."): g for k, g in _grads(ref).items()}
    assert g_ours.keys() == g_ref.keys()
    for k, g in g_ours.items():
        assert g is not None and g_ref[k] is not None, k
        torch.testing.assert_close(g_ref[k], g, rtol=1e-10, atol=1e-10, msg=k)
    # Training-mode batch norms updated the same running statistics.
    for (k, a), b in zip(ours.named_buffers(), ref.supernet.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10, msg=k)


def test_reference_shares_the_wrapped_modules_and_computes_none():
    ours, ref = _pair({})
    assert [id(p) for p in ref.parameters()] == [id(p) for p in ref.supernet.parameters()]
    assert ref.arch_parameters() == [ref.supernet.alpha]
    cell = ref._cells[0]
    # Every primitive has an op on every edge, 'none' as DARTS's Zero (strided on reduction edges).
    assert all(len(edge.ops) == len(ours.primitives) for edge in cell.edges)
    reduce = ref._cells[1]
    assert reduce.cell.reduction and isinstance(reduce.edges[0].ops[0], Zero) and reduce.edges[0].ops[0].stride == 2
    assert cell.edges[0].ops[1] is ref.supernet.cells[0].edge_ops["0"][0]


def test_reference_rejects_what_the_papers_do_not_cover():
    with pytest.raises(ValueError, match="every edge"):
        ReferenceDartsSupernet(DartsSupernet(C=8, layers=3, active_edges={"normal": [0, 2, 5, 9]}))
    with pytest.raises(ValueError, match="PC-DARTS"):
        ReferenceDartsSupernet(DartsSupernet(C=8, layers=3, partial_channels=4))
    with pytest.raises(TypeError):
        ReferenceDartsSupernet(torch.nn.Linear(2, 2))


def test_impls_start_from_the_same_weights():
    cfg = bench.PRESETS["quick"].configs["pc-darts"]
    ours = bench.build_ours(cfg, torch.device("cpu"))
    nets = {impl: bench.build_impl(impl, ours) for impl in ("ours", "eager")}
    x = bench.make_batches(cfg, torch.device("cpu"), 1)[0][0][0]
    assert x.abs().sum() > 0
    with torch.no_grad():
        outs = {impl: net.eval()(x) for impl, net in nets.items()}
    torch.testing.assert_close(outs["eager"], outs["ours"], rtol=1e-4, atol=1e-5)
    # Separate copies: training one leaves the others alone.
    assert all(p is not q for p, q in zip(nets["ours"].parameters(), ours.parameters()))


REQUIRED = ("bench", "case", "impl", "device", "config", "ms_per_step", "peak_mem_bytes", "speedup_vs_eager",
            "speedup_vs_compile", "mem_ratio_vs_eager", "torch", "commit", "date")


def _check_record(r):
    missing = [f for f in REQUIRED if f not in r]
    assert not missing, f"missing {missing} in {r}"
    assert r["bench"] == "supernet" and r["case"] in bench.CASES and r["impl"] in ("ours", "eager")
    assert r["torch"] == torch.__version__ and r["device"] and r["commit"] and r["preset"] == "quick"
    cfg = r["config"]
    assert cfg["reduced"] is True and cfg["order"] == (2 if r["case"] == "darts-2nd" else 1)
    assert (cfg["partial_channels"] > 1) == (r["case"] == "pc-darts")
    assert math.isfinite(r["ms_per_step"]) and r["ms_per_step"] > 0
    # Weights alone are ~0.2 MB; activations of a 3-cell step are more, but not gigabytes.
    assert isinstance(r["peak_mem_bytes"], int) and 1 << 20 < r["peak_mem_bytes"] < 4 << 30, r
    if r["impl"] == "ours":
        assert r["speedup_vs_eager"] > 0 and 0.5 < r["mem_ratio_vs_eager"] < 1.5
    else:
        assert r["speedup_vs_eager"] is None and r["mem_ratio_vs_eager"] is None
    assert r["speedup_vs_compile"] is None  # not compiled in this run
    assert datetime.datetime.fromisoformat(r["date"]).tzinfo is not None


def test_quick_preset_writes_complete_records(tmp_path, capsys):
    argv = ["--preset", "quick", "--device", "cpu", "--results-dir", str(tmp_path), "--no-compile"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "REDUCED CONFIGURATION" in out and "ours ms" in out and "ERROR" not in out, out
    assert "TARGET cpu DARTS step" in out and "TARGET cpu PC-DARTS step" in out and "INFO DARTS second order" in out
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    records = json.loads(files[0].read_text())
    for r in records:
        _check_record(r)
    assert {(r["case"], r["impl"]) for r in records} == {(c, i) for c in bench.CASES for i in ("ours", "eager")}


def _row(case, speedup, mem=0.7, reduced=False):
    return dict(case=case, impl="ours", speedup_vs_eager=speedup, mem_ratio_vs_eager=mem,
                config=dict(reduced=reduced))


def test_targets():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    lines = bench.evaluate_targets([_row("darts-1st", 1.25, reduced=True), _row("pc-darts", 1.1, reduced=True),
                                    _row("darts-2nd", 0.5)], cpu)
    assert [ok for _, ok in lines] == [True, False]
    assert lines[0][0] == "TARGET cpu DARTS step vs eager (reduced config): 1.25x (need >= 1.2x) PASS"
    lines = dict(bench.evaluate_targets([_row("darts-1st", 1.6, mem=0.85), _row("pc-darts", 1.3)], cuda))
    assert list(lines.values()) == [True, False, True]
    assert "TARGET gpu DARTS peak memory vs eager: 0.85x (need <= 0.8x) FAIL" in lines


@pytest.mark.parametrize("argv, expected", [
    (["--cases", "darts-1st,nope"], "unknown 'nope'"),
    (["--cases", ","], "empty list"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--repeats", "0"], "must be a positive integer"),
    (["--compile", "--no-compile"], "not allowed with"),
])
def test_bad_argument_is_a_clear_error(argv, expected, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv + ["--results-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
