"""The ImageNet loader benchmark runs end to end and writes complete, sane records (nothing is timed here).

Until pynas.data.stream is merged, 'ours' runs on a stand-in with StreamLoader's interface; the last test
runs the real module when it is there.
"""
from __future__ import annotations

import datetime
import importlib
import json
import math
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from pynas.perf import imagenet as bench

Image = pytest.importorskip("PIL.Image")


# ------------------------------------------------------------------ a stand-in for pynas.data.stream
class _FileDataset:
    def __init__(self, *, paths, labels, classes, mean, std, name, image_size):
        assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and len(labels) == len(paths)
        self.paths, self.labels, self.classes = list(paths), labels, tuple(classes)
        self.mean, self.std, self.name, self.image_size = mean, std, name, image_size


class _StreamLoader:
    """Decodes in this process with the baseline's per-sample code: StreamLoader's interface, not its speed."""

    calls: list = []

    def __init__(self, dataset, *, batch_size, shuffle, train, colour_jitter, drop_last, seed, device, workers,
                 prefetch, decoder):
        _StreamLoader.calls.append(dict(batch_size=batch_size, shuffle=shuffle, train=train, seed=seed,
                                        device=device, workers=workers, decoder=decoder, files=len(dataset.paths),
                                        image_size=dataset.image_size, mean=dataset.mean))
        self.data = bench.BaselineImageSet(dataset.paths, dataset.labels.tolist(), dataset.mean, dataset.std,
                                           dataset.image_size)
        self.batch_size, self.seed = batch_size, seed

    def __iter__(self):
        order = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(self.seed)).tolist()
        for i in range(0, len(order), self.batch_size):
            samples = [self.data[j] for j in order[i:i + self.batch_size]]
            yield torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples], dtype=torch.int64)


@pytest.fixture
def stand_in(monkeypatch):
    module = types.ModuleType("pynas.data.stream")
    module.FileDataset, module.StreamLoader = _FileDataset, _StreamLoader
    _StreamLoader.calls = []
    monkeypatch.setitem(sys.modules, "pynas.data.stream", module)
    return _StreamLoader


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Photographs for the generator without CIFAR-10: smooth random pictures, two classes, train and test."""
    root = tmp_path_factory.mktemp("source")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
                Image.fromarray(small).resize((32, 32), Image.Resampling.BICUBIC).save(root / split / cls / f"{i}.jpg")
    return root


REQUIRED = ("kind", "impl", "workers", "rate", "rate_per_worker", "rate_with_startup", "startup_s", "rounds", "images",
            "others_cpu_share", "load", "batch_size", "vs_baseline", "cpu_ms_per_image", "cpu_vs_baseline", "device", "torch", "commit", "date", "preset",
            "cores", "pillow", "data", "image")


def _records(directory):
    files = list(directory.glob("*.json"))
    assert len(files) == 1, files
    assert not list(directory.glob("*.tmp")), "temporary file left behind"
    return json.loads(files[0].read_text())


def _check_loader_record(r):
    missing = [f for f in REQUIRED if f not in r]
    assert not missing, f"missing {missing} in {r}"
    assert r["kind"] == "loader" and r["impl"] in bench.IMPLS and r["workers"] == 1 and r["preset"] == "quick"
    for field in ("rate", "rate_per_worker", "rate_with_startup", "startup_s"):
        assert math.isfinite(r[field]) and r[field] > 0, (field, r)
    assert r["rate_per_worker"] == r["rate"] / r["workers"] and r["images"] == 16 and r["batch_size"] == 4
    assert r["rounds"] == [r["rate"]] and not r["bad_batch"]
    assert r["others_cpu_share"] is None or 0 <= r["others_cpu_share"] <= 1
    assert r["load"] is None or (len(r["load"]) == 2 and r["load"][0] >= 0)
    assert r["data"]["files"] == 16 and r["data"]["classes"] == 4 and r["data"]["origin"] == "generated"
    assert 80 <= r["data"]["mean_width"] <= 2600 and 0 < r["data"]["bytes_per_pixel"] < 5
    assert r["torch"] == torch.__version__ and r["image"] == 224 and r["cores"] >= 1
    assert isinstance(r["device"], str) and r["device"] and isinstance(r["commit"], str) and r["commit"]
    assert datetime.datetime.fromisoformat(r["date"]).tzinfo is not None
    assert r["cpu_ms_per_image"] is None or r["cpu_ms_per_image"] > 0
    if r["impl"] == "ours":
        assert r["vs_baseline"] > 0
        assert r["cpu_vs_baseline"] is None or r["cpu_vs_baseline"] > 0
    else:
        assert r["vs_baseline"] is None and r["cpu_vs_baseline"] is None


def _argv(tmp_path, source, *extra):
    return ["--preset", "quick", "--device", "cpu", "--results-dir", str(tmp_path / "results"), "--source",
            str(source), *extra]


def test_quick_run_writes_complete_records(tmp_path, source, stand_in, capsys):
    assert bench.main(_argv(tmp_path, source)) == 0
    out = capsys.readouterr().out
    assert "ERROR" not in out, out
    records = _records(tmp_path / "results")
    assert sorted(r["impl"] for r in records) == ["baseline", "ours"]
    for r in records:
        _check_loader_record(r)
    # Ours was built as the StreamLoader API asks, on the same 16 files.
    assert stand_in.calls == [dict(batch_size=4, shuffle=True, train=True, seed=0, device="cpu", workers=1,
                                   decoder="auto", files=16, image_size=224, mean=bench.IMAGENET_MEAN)]
    lines = [line for line in out.splitlines() if line.startswith("TARGET")]
    assert [line.split(":")[0] for line in lines] == [
        "TARGET cpu loader per core vs baseline (images/s with one worker)",
        "TARGET cpu loader per core vs baseline (CPU time per image)"]
    assert all(line.endswith(("PASS", "FAIL")) and "(need >= 2x)" in line for line in lines)
    # A second run appends; --check-targets answers 0 or 1 with the verdict.
    rc = bench.main(_argv(tmp_path, source, "--impls", "baseline", "--check-targets"))
    assert rc == 1 and len(_records(tmp_path / "results")) == 3
    assert "not measured" in capsys.readouterr().out


def test_reuses_a_given_folder(tmp_path, source, stand_in, capsys):
    from pynas.data.synthetic import generate_imagenet_like

    data = tmp_path / "data"
    generate_imagenet_like(data, classes=3, train_per_class=4, val_per_class=0, source=source, grain=0)
    assert bench.main(_argv(tmp_path, source, "--data", str(data), "--images", "6", "--impls", "ours")) == 0
    (r,) = _records(tmp_path / "results")
    assert r["data"]["origin"] == "given" and r["data"]["files"] == 6 and r["images"] == 6
    assert r["data"]["root"] == str(data) and stand_in.calls[0]["files"] == 6


def test_ours_pillow_is_the_same_loader_decoding_with_pillow(tmp_path, source, stand_in, capsys):
    assert bench.main(_argv(tmp_path, source, "--impls", "baseline,ours-pillow")) == 0
    records = _records(tmp_path / "results")
    assert sorted(r["impl"] for r in records) == ["baseline", "ours-pillow"]
    assert [c["decoder"] for c in stand_in.calls] == ["pillow"]
    assert next(r for r in records if r["impl"] == "ours-pillow")["vs_baseline"] > 0


def test_missing_stream_module_is_reported(tmp_path, source, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynas.data.stream", None)  # import raises ImportError
    assert bench.main(_argv(tmp_path, source, "--check-targets")) == 1
    out = capsys.readouterr().out
    assert "ours: skipped, pynas.data.stream is not available" in out
    assert "TARGET cpu loader per core vs baseline (images/s with one worker): not measured" in out
    assert out.rstrip().endswith("FAIL")
    assert [r["impl"] for r in _records(tmp_path / "results")] == ["baseline"]


@pytest.mark.slow
def test_training_steps_fed_by_each_loader(tmp_path, source, stand_in, capsys):
    assert bench.main(_argv(tmp_path, source, "--step")) == 0
    steps = [r for r in _records(tmp_path / "results") if r["kind"] == "step"]
    assert sorted(r["impl"] for r in steps) == ["baseline", "ours"]
    for r in steps:
        assert r["space"] == "spos-shufflenetv2" and r["batch_size"] == 2 and r["steps"] == 2
        assert r["fed_ms"] > 0 and r["held_ms"] > 0 and r["fed_over_held"] == r["fed_ms"] / r["held_ms"]
        assert r["data_bound"] == (r["fed_over_held"] > bench.DATA_BOUND)


# ------------------------------------------------------------------ pieces
def test_baseline_sample_is_a_normalized_random_resized_crop(tmp_path):
    path = tmp_path / "x.JPEG"
    Image.fromarray(np.full((375, 500, 3), (124, 116, 104), dtype=np.uint8)).save(path, quality=95)
    data = bench.BaselineImageSet([str(path)], [3])
    x, y = data[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 3
    # ImageNet's mean colour normalizes to about zero.
    assert x.abs().max() < 0.05


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (50, 2000), (2000, 50), (10, 10)])
def test_random_resized_crop_params_stay_inside(size):
    width, height = size
    torch.manual_seed(0)
    for _ in range(200):
        top, left, h, w = bench.random_resized_crop_params(width, height)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
        if width / height > 10 or height / width > 10:  # only the fallback fits: the centred crop within 3/4..4/3
            assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_check_batch_catches_bad_batches():
    good = torch.randn(4, 3, 224, 224), torch.tensor([0, 1, 2, 3])
    assert bench.check_batch(*good, 4, 4) is None
    assert "float32" in bench.check_batch(good[0][:, :, :112], good[1], 4, 4)
    assert "int64" in bench.check_batch(good[0], good[1].int(), 4, 4)
    assert "0..2" in bench.check_batch(*good, 4, 3)
    assert "normalized" in bench.check_batch(torch.full((4, 3, 224, 224), 255.0), good[1], 4, 4)


def test_tree_ticks_count_child_processes():
    before = bench.tree_ticks()
    if before is None:
        pytest.skip("no /proc: CPU accounting is Linux-only")
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    after = bench.tree_ticks()
    assert after[1] - before[1] >= 20  # 0.3 s of the child's CPU time at 100 ticks a second, less rounding
    share = bench.others_share(before, after)
    assert share is None or 0 <= share <= 1


def test_registered_as_a_bench_suite():
    from pynas.cli import _BENCHES

    assert importlib.import_module(_BENCHES["imagenet"]).main is bench.main


def test_with_the_real_stream_loader(tmp_path, source, capsys):
    pytest.importorskip("pynas.data.stream", reason="pynas.data.stream is not merged into this checkout yet")
    assert bench.main(_argv(tmp_path, source)) == 0
    assert "ERROR" not in capsys.readouterr().out
    for r in _records(tmp_path / "results"):
        _check_loader_record(r)
