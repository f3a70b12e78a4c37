"""The path benchmark runs end to end, its implementations agree, and its records are complete and sane."""
from __future__ import annotations

import datetime
import json
import math

import pytest
import torch
import torch.nn.functional as F

from pynas.cli import main as cli_main
from pynas.perf import paths as bench
from pynas.perf.reference_paths import ReferencePathSupernet
from pynas.supernets.path_batch import PathBatchNorm2d

CPU = torch.device("cpu")
QUICK = bench.PRESETS["quick"]


pytestmark = pytest.mark.usefixtures("single_thread")


def _available():
    return [s for s in bench.SPACES if bench.space_missing(QUICK.configs[s].space) is None]


def _load(directory):
    files = list(directory.glob("*.json"))
    assert len(files) == 1 and not list(directory.glob("*.tmp")), files
    return json.loads(files[0].read_text())


@pytest.mark.parametrize("space", list(bench.SPACES))
def test_reference_computes_what_ours_computes(space):
    if space not in _available():
        pytest.skip(bench.space_missing(QUICK.configs[space].space))
    ours = bench.build_supernet(QUICK.configs[space], CPU).double()
    for m in ours.modules():  # dropout draws differ between the two; everything else must not
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    ref = ReferencePathSupernet(ours)
    assert not any(isinstance(m, PathBatchNorm2d) for m in ref.modules())
    assert all(p is not q and torch.equal(p, q) for p, q in zip(ours.parameters(), ref.parameters()))
    x = torch.randn(3, 3, QUICK.configs[space].image, QUICK.configs[space].image, dtype=torch.float64)
    y = torch.randint(0, 10, (3,))
    path = ours.space.sample(1)[0].tolist()
    out_ours, out_ref = ours(x, path), ref(x, path)
    torch.testing.assert_close(out_ref, out_ours, rtol=1e-12, atol=1e-12)
    F.cross_entropy(out_ours, y).backward()
    F.cross_entropy(out_ref, y).backward()
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12)
    for a, b in zip(ours.buffers(), ref.buffers()):  # training-mode batch norms updated the same statistics
        torch.testing.assert_close(b, a)


def test_fair_paths_use_every_choice_once_per_layer():
    space = bench.build_supernet(QUICK.configs["macro"], CPU).space
    paths = bench.fair_paths(space, torch.Generator().manual_seed(0))
    assert paths.shape == (max(space.num_choices), space.num_layers)
    for layer, k in enumerate(space.num_choices):
        assert sorted(paths[:, layer].tolist()) == list(range(k))
    space.check_paths(paths)


REQUIRED = ("bench", "case", "kind", "impl", "baseline", "paths", "config", "setup", "ms", "paths_per_s", "speedup",
            "max_diff", "others_cpu_share", "device", "torch", "commit", "date", "preset", "threads")


def _check_record(r):
    missing = [f for f in REQUIRED if f not in r]
    assert not missing, f"missing {missing} in {r}"
    base, ours = bench.IMPLS[r["kind"]]
    assert r["bench"] == "paths" and r["case"] in bench.CASES and r["case"].endswith(r["kind"])
    extra = (bench.SAME_FORMAT,) if r["kind"] == "eval" else ()
    assert r["impl"] in (base, ours, *extra) and r["baseline"] == base
    assert r["torch"] == torch.__version__ and r["device"] and r["commit"] and r["preset"] == "quick"
    cfg = r["config"]
    assert cfg["reduced"] is True and cfg["space"] == bench.SPACES[r["case"].split("-")[0]]
    assert ("recal_batches" in cfg) == (r["kind"] == "eval")
    assert math.isfinite(r["ms"]) and r["ms"] > 0
    assert r["paths_per_s"] == pytest.approx(r["paths"] * 1e3 / r["ms"])
    if r["kind"] == "eval":
        assert r["paths"] in QUICK.paths
    else:
        assert r["paths"] == (1 if r["kind"] == "step" else 3 if r["case"].startswith("macro") else 4)
    if r["impl"] == ours:
        assert r["speedup"] > 0
        if r["kind"] == "eval":  # on a CPU the batched evaluation runs channels-last: the loop was timed so too
            assert r["settings"]["memory_format"] == "channels_last" and r["settings"]["strategy"] == "trie"
            assert r["speedup_same_format"] > 0
    else:
        assert r["speedup"] is None
    d = r["max_diff"]
    # Both implementations compute the same thing: float32 rounding apart.
    if r["kind"] == "eval":
        assert d["loss"] <= bench.tolerance(CPU) and d["accuracy"] <= 100.0 / d["samples"], d
    else:
        assert d["loss"] <= bench.tolerance(CPU) and d["update"] <= bench.UPDATE_TOLERANCE, d
    assert datetime.datetime.fromisoformat(r["date"]).tzinfo is not None


def test_quick_preset_writes_complete_records(tmp_path, capsys):
    assert bench.main(["--preset", "quick", "--device", "cpu", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "REDUCED CONFIGURATION" in out and "ours ms" in out and "ERROR" not in out, out
    records = _load(tmp_path)
    for r in records:
        _check_record(r)
    spaces = _available()
    eval_impls = (*bench.IMPLS["eval"], bench.SAME_FORMAT)
    expected = {(f"{s}-eval", impl, p) for s in spaces for impl in eval_impls for p in QUICK.paths}
    expected |= {(f"{s}-{k}", impl, None) for s in spaces for k in ("step", "fair") for impl in bench.IMPLS[k]}
    assert {(r["case"], r["impl"], r["paths"] if r["kind"] == "eval" else None) for r in records} == expected
    for s in spaces:
        assert f"TARGET cpu {s} evaluation of {max(QUICK.paths)} paths" in out
        assert f"TARGET cpu {s} single-path step" in out and f"INFO {s} FairNAS" in out
    agree = [line for line in out.splitlines() if line.startswith("AGREE")]
    compared = len(spaces) * (len(QUICK.paths) + 2)  # each eval P, the step and the FairNAS step
    assert len(agree) == compared and all(line.endswith("PASS") for line in agree), agree
    assert sum("same memory format (channels_last)" in line for line in out.splitlines()) == len(spaces) * len(
        QUICK.paths)
    for s in set(bench.SPACES) - set(spaces):  # a space still being written: skipped, and said so
        assert f"note: {s}-eval: skipped" in out


def test_cli_runs_the_benchmark(tmp_path, capsys):
    argv = ["bench", "paths", "--preset", "quick", "--device", "cpu", "--cases", "macro-step",
            "--results-dir", str(tmp_path)]
    assert cli_main(argv) == 0
    assert "AGREE macro-step P=1 ours vs eager" in capsys.readouterr().out
    assert {r["impl"] for r in _load(tmp_path)} == {"ours", "eager"}


def test_missing_space_is_skipped_with_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(bench.PRESETS["quick"].configs, "macro",
                        bench.Config("no-such-space", 16, 10, 4, 2, 1, 4, reduced=True))
    assert bench.main(["--preset", "quick", "--device", "cpu", "--cases", "macro-step",
                       "--results-dir", str(tmp_path), "--check-targets"]) == 0
    assert "note: macro-step: skipped, no space 'no-such-space' is registered" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def _row(case, impl, speedup, paths=128, reduced=False, **diff):
    kind = case.split("-")[1]
    return dict(case=case, kind=kind, impl=impl, baseline=bench.IMPLS[kind][0], paths=paths, speedup=speedup,
                config=dict(reduced=reduced), max_diff=diff or None)


def test_targets():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    rows = [_row("macro-eval", "batched", 1.5, paths=8), _row("macro-eval", "batched", 2.5, reduced=True),
            _row("macro-step", "ours", 0.9), _row("spos-step", "ours", 0.97)]
    lines = bench.evaluate_targets(rows, cpu)
    assert [ok for _, ok in lines] == [True, False, True]
    assert lines[0][0] == ("TARGET cpu macro evaluation of 128 paths, batched vs sequential (reduced config): "
                           "2.50x (need >= 2x) PASS")
    assert [ok for _, ok in bench.evaluate_targets(rows[:2], cuda)] == [False]
    agree = bench.evaluate_targets([_row("macro-eval", "batched", None, accuracy=1.0, loss=1e-5, samples=100),
                                    _row("spos-eval", "batched", None, accuracy=2.0, loss=1e-5, samples=100),
                                    _row("macro-fair", "batched", None, paths=3, loss=1e-6, update=0.5)], cpu)
    assert [ok for _, ok in agree] == [True, False, False]
    assert agree[0][0].startswith("AGREE macro-eval P=128 batched vs sequential")
    info = bench.info_lines([_row("macro-eval", "batched", 1.2, paths=8), _row("macro-eval", "batched", 3.0),
                             _row("macro-fair", "batched", 2.0, paths=3)])
    assert info == ["INFO macro evaluation of 8 paths, batched vs sequential: 1.20x",
                    "INFO macro FairNAS 3-path step, batched vs sequential: 2.00x (no target)"]


@pytest.mark.parametrize("argv, expected", [
    (["--cases", "macro-eval,nope"], "unknown 'nope'"),
    (["--paths", "8,0"], "positive integers"),
    (["--paths", ","], "positive integers"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--repeats", "0"], "must be a positive integer"),
])
def test_bad_argument_is_a_clear_error(argv, expected, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv + ["--results-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_interleaved_timing_alternates_the_implementations():
    from pynas.perf import timing

    calls = []
    fns = {name: (lambda arg, name=name: calls.append((name, arg))) for name in ("a", "b")}
    ms = timing.interleaved_median_ms(fns, ["x", "y"], CPU, warmup=1, repeats=3)
    assert set(ms) == {"a", "b"} and all(v >= 0 for v in ms.values())
    # Warm-up visits both sets with each; then the order flips every round, sets in turn.
    assert calls == [("a", "x"), ("b", "x"), ("a", "y"), ("b", "y"),
                     ("a", "x"), ("b", "x"), ("b", "y"), ("a", "y"), ("a", "x"), ("b", "x")]
    with pytest.raises(ValueError, match="repeats"):
        timing.interleaved_median_ms(fns, ["x"], CPU, repeats=0)
