"""End to end through ``--dataset imagenet``: a generated ImageNet-like folder of variable-size JPEGs (real
CIFAR-10 photographs upscaled), streamed by worker processes, cut as PC-DARTS cuts ImageNet, searched with
SPOS in one process and in two gloo processes, the found path retrained (in one and in two); runs stopped by SIGTERM (sent to
the whole process group, workers included, as a scheduler does) or killed with SIGKILL resume bit for bit.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pynas.training.checkpoint import load_checkpoint

from test_preemption import assert_same, assert_same_run

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
pytestmark = pytest.mark.skipif(not (CIFAR / "train").is_dir(),
                                reason=f"needs the CIFAR-10 JPEGs at {CIFAR} to make ImageNet-like images")

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 16, 4


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    from pynas.data.synthetic import generate_imagenet_like

    out = tmp_path_factory.mktemp("imagenet-like") / "data"
    generate_imagenet_like(out, classes=CLASSES, train_per_class=TRAIN_PER_CLASS, val_per_class=VAL_PER_CLASS,
                           seed=0, source=CIFAR)
    return out


def search_args(data: Path, out: Path) -> list[str]:
    return ["search", "--space", "nasbench-macro", "--algo", "spos", "--dataset", "imagenet", "--data", str(data),
            "--batch-size", "4", "--epochs", "2", "--device", "cpu", "--seed", "0", "--no-progress",
            "--set", "data.train_fraction=0.5", "--set", "data.val_fraction=0.25", "--set", "data.workers=2",
            "--set", "data.image_size=32", "--set", "data.colour_jitter=0.4",
            "--set", "space_options.init_channels=4", "--set", "space_options.head_channels=16",
            "--set", "evaluation.recalibrate_batches=1", "--set", "evaluation.eval_batches=1",
            "--set", "search.population_size=4", "--set", "search.top_k=2", "--set", "search.generations=2",
            "--set", "search.mutation_num=2", "--set", "search.crossover_num=2",
            "--set", "checkpoint_every=2", "--out", str(out)]


def train_args(run: Path, out: Path) -> list[str]:
    return ["train", "--path", str(run / "path.json"), "--epochs", "2", "--batch-size", "4", "--device", "cpu",
            "--seed", "0", "--no-progress", "--set", "data.image_size=32", "--set", "data.workers=2",
            "--set", "checkpoint_every=2", "--set", "eval_batch_size=4", "--out", str(out)]


def run_cli(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pynas.cli"] + args, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def stop_group_once_saved(args: list[str], checkpoint: Path, signum: int) -> subprocess.CompletedProcess:
    """Run the CLI in its own process group and send ``signum`` to the whole group (the main process and its
    decoding workers) as soon as the run has written its first checkpoint."""
    child = subprocess.Popen([sys.executable, "-m", "pynas.cli"] + args, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the run never wrote its first checkpoint"
            time.sleep(0.005)
        os.killpg(child.pid, signum)
        stdout, stderr = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def search_reference(imagenet, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("search-ref") / "run"
    _ok(run_cli(search_args(imagenet, out)))
    return out


def test_search_streams_the_pc_darts_cut_and_records_it(imagenet, search_reference):
    record = json.loads((search_reference / "data_split.json").read_text())
    assert record["loader"] == "stream" and record["images"] == CLASSES * TRAIN_PER_CLASS
    train, valid = record["train"], record["valid"]
    assert set(train["per_class"].values()) == {TRAIN_PER_CLASS // 2}
    assert set(valid["per_class"].values()) == {TRAIN_PER_CLASS // 4}
    assert not set(train["files"]) & set(valid["files"]), "the weight and architecture parts overlap"
    assert all((imagenet / f).is_file() for f in train["files"] + valid["files"])
    path = json.loads((search_reference / "path.json").read_text())
    assert path["dataset"] == "imagenet" and path["space_options"]["input_size"] == 32
    assert path["space_options"]["num_classes"] == CLASSES


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)])
def test_search_stopped_and_rerun_is_bit_identical(imagenet, search_reference, tmp_path, signum, code):
    run = tmp_path / "run"
    proc = stop_group_once_saved(search_args(imagenet, run), run / "checkpoint.pt", signum)
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    if signum == signal.SIGTERM:
        assert "SIGTERM received: checkpoint written" in proc.stderr, proc.stderr
    assert not (run / "path.json").exists()
    _ok(run_cli(search_args(imagenet, run)))
    assert_same_run(search_reference, run, outputs=("path.json",))


def test_search_in_two_gloo_processes(imagenet, tmp_path):
    run = tmp_path / "run"
    args = search_args(imagenet, run)
    args[args.index("--batch-size") + 1] = "2"  # the same global batch of 4
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "pynas.cli"] + args, env=_env(), capture_output=True, text=True, timeout=400)
    _ok(proc)
    path = json.loads((run / "path.json").read_text())
    assert path["space_options"]["num_classes"] == CLASSES
    assert json.loads((run / "data_split.json").read_text())["train"]["images"] == CLASSES * TRAIN_PER_CLASS // 2


@pytest.fixture(scope="module")
def train_reference(search_reference, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train-ref") / "train"
    _ok(run_cli(train_args(search_reference, out)))
    return out


def test_retraining_the_found_path_stopped_by_sigterm_is_bit_identical(search_reference, train_reference,
                                                                       tmp_path):
    result = json.loads((train_reference / "train_result.json").read_text())
    assert result["dataset"] == "imagenet" and len(result["epochs"]) == 2
    out = tmp_path / "train"
    proc = stop_group_once_saved(train_args(search_reference, out), out / "train_checkpoint.pt", signal.SIGTERM)
    assert proc.returncode == 143, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert not (out / "train_result.json").exists()
    _ok(run_cli(train_args(search_reference, out)))
    a = load_checkpoint(train_reference / "train_checkpoint.pt")
    b = load_checkpoint(out / "train_checkpoint.pt")
    for key in ("network", "optimizer", "train_loader", "rng", "step", "epoch"):
        assert_same(a[key], b[key], f"train_checkpoint.{key}")
    ref = json.loads((train_reference / "train_result.json").read_text())
    got = json.loads((out / "train_result.json").read_text())
    assert [e["test_accuracy"] for e in got["epochs"]] == [e["test_accuracy"] for e in ref["epochs"]]
    assert [e["train_loss"] for e in got["epochs"]] == [e["train_loss"] for e in ref["epochs"]]


def test_retraining_in_two_gloo_processes(search_reference, train_reference, tmp_path):
    out = tmp_path / "train"
    args = train_args(search_reference, out)
    args[args.index("--batch-size") + 1] = "2"  # the same global batch of 4
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "pynas.cli"] + args, env=_env(), capture_output=True, text=True, timeout=400)
    _ok(proc)
    result = json.loads((out / "train_result.json").read_text())
    assert result["world_size"] == 2 and result["global_batch_size"] == 4 and result["dataset"] == "imagenet"
    ref = json.loads((train_reference / "train_result.json").read_text())
    assert len(result["epochs"]) == len(ref["epochs"]) == 2
