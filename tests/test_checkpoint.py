"""Checkpoints: SHA-256 header, weights_only loads (a pickled command is refused, not run), foreign and
corrupt files named in a ValueError, older headerless checkpoints still read; resuming with another config
refused in one line, safe changes recorded in config_history.yaml."""
from __future__ import annotations

import io
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pynas.cli import main
from pynas.commands.search import run_search
from pynas.training.checkpoint import (
    MAGIC,
    UnverifiedCheckpointWarning,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pynas.training.run_config import HISTORY, SAFE_RESUME_KEYS, compare_configs, effective_config
from pynas.training.train import MACRO_TRAIN_DEFAULTS, lr_at

from test_rank import CIFAR10, MACRO_JSON, needs_cifar, needs_macro
from test_search import CELL_ALGORITHMS, _algo, _batch, _tiny_config


class _Evil:
    """Unpickling this runs a shell command that creates ``marker`` (what a tampered checkpoint could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_checkpoint(path: Path, marker: Path, *, with_header: bool = False) -> None:
    payload = {"algorithm": _Evil(marker), "rng": rng_state()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if not with_header:
        torch.save(payload, path)
        return
    # A tamperer can write a matching checksum: the header is integrity, weights_only is the safety.
    import hashlib

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    path.write_bytes(MAGIC + b" 2 sha256=" + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(np.random.randn()), float(torch.rand(()))


# -- the file format --------------------------------------------------------------------------------------
def test_round_trip_restores_every_random_state(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    np.random.randn()  # leave numpy holding a cached Gaussian, part of its state
    payload = {"rng": rng_state(), "steps": [1, 2], "nested": {"t": torch.arange(4), "f": 0.5, "s": "x"}}
    expected = _draws()
    save_checkpoint(tmp_path / "c.pt", payload)
    assert (tmp_path / "c.pt").read_bytes().startswith(MAGIC + b" 2 sha256=")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["steps"] == [1, 2] and torch.equal(state["nested"]["t"], torch.arange(4))
    _draws()  # move every stream on
    set_rng_state(state["rng"])
    assert _draws() == expected


def test_malicious_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    for name, header in (("plain.pt", False), ("headed.pt", True)):
        _evil_checkpoint(tmp_path / name, marker, with_header=header)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnverifiedCheckpointWarning)
            with pytest.raises(ValueError, match=rf"{name}: refusing to load this checkpoint.*delete it"):
                load_checkpoint(tmp_path / name)
        assert not marker.exists()
    # The payload is live: unpickling it without weights_only would have run the command.
    torch.load(tmp_path / "plain.pt", weights_only=False)
    assert marker.exists()


def test_flipped_bytes_are_detected(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.randn(64), "rng": rng_state()})
    good = path.read_bytes()
    header = good.index(b"\n") + 1
    for offset in (header + 10, len(good) // 2, len(good) - 5):
        bad = bytearray(good)
        bad[offset] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match=rf"{path}: checksum mismatch.*delete it to restart"):
            load_checkpoint(path)
    path.write_bytes(good[:header - 5] + b"z" + good[header - 4:])  # a hex digit of the checksum itself
    with pytest.raises(ValueError, match=rf"{path}: (checksum mismatch|damaged pynas checkpoint header)"):
        load_checkpoint(path)
    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match=rf"{path}: checksum mismatch"):
        load_checkpoint(path)


def test_foreign_files_are_value_errors_naming_the_file(tmp_path):
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.warns(UnverifiedCheckpointWarning):
        with pytest.raises(ValueError, match=rf"{tensor}: not a pynas checkpoint \(holds a Tensor"):
            load_checkpoint(tensor)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=rf"{noise}: not a pynas checkpoint"):
        load_checkpoint(noise)
    broken_zip = tmp_path / "broken.pt"
    broken_zip.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.warns(UnverifiedCheckpointWarning):
        with pytest.raises(ValueError, match=rf"{broken_zip}: not a readable pynas checkpoint"):
            load_checkpoint(broken_zip)
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        load_checkpoint(tmp_path / "missing.pt")


def test_headerless_checkpoint_of_an_older_pynas_loads_with_a_warning(tmp_path):
    np.random.seed(5)
    random.seed(5)
    old_rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = _draws()
    torch.save({"rng": old_rng, "step": 7}, tmp_path / "old.pt")  # how checkpoints were written before
    with pytest.warns(UnverifiedCheckpointWarning, match="without a checksum"):
        state = load_checkpoint(tmp_path / "old.pt")
    assert state["step"] == 7
    set_rng_state(state["rng"])
    assert _draws() == expected


@pytest.mark.parametrize("name", CELL_ALGORITHMS)
def test_cell_algorithm_states_load_under_weights_only(name, tmp_path):
    """Supernet, optimisers, schedulers, scaler, stage and step counters: all tensors and plain values."""
    algo = _algo(name, "nas-bench-201", seed=1)
    algo.step(_batch(seed=1), _batch(seed=2))
    save_checkpoint(tmp_path / "checkpoint.pt", {"algorithm": algo.state_dict(), "rng": rng_state()})
    twin = _algo(name, "nas-bench-201", seed=1)
    twin.load_state_dict(load_checkpoint(tmp_path / "checkpoint.pt")["algorithm"])
    torch.manual_seed(0)
    a = algo.step(_batch(seed=3), _batch(seed=4))
    torch.manual_seed(0)
    b = twin.step(_batch(seed=3), _batch(seed=4))
    assert float(a["loss"]) == float(b["loss"])


# -- resume through the real code paths -----------------------------------------------------------------
@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> tuple[dict, Path]:
    """A finished tiny DARTS search (1 epoch of 2 steps) with its checkpoint."""
    tmp = tmp_path_factory.mktemp("ckpt-search")
    cfg = _tiny_config(tmp, epochs=1, max_steps_per_epoch=2, seed=0, algorithm=dict(C=4, layers=3))
    run_search(cfg, out_dir=tmp / "run", progress=False)
    return cfg, tmp / "run"


def test_search_resume_refuses_a_malicious_checkpoint(tmp_path, search_run):
    cfg, _ = search_run
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    _evil_checkpoint(run / "checkpoint.pt", marker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedCheckpointWarning)
        with pytest.raises(ValueError, match=r"checkpoint\.pt: refusing to load"):
            run_search(cfg, out_dir=run, progress=False)
    assert not marker.exists()


def test_search_resume_of_a_corrupt_checkpoint_is_a_one_line_cli_error(tmp_path, search_run, capsys):
    cfg, good = search_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "checkpoint.pt"):
        (run / name).write_bytes((good / name).read_bytes())
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / "checkpoint.pt").write_bytes(bytes(data))
    assert main(_cli(cfg, run)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "checksum mismatch" in err and str(run / "checkpoint.pt") in err


def _cli(cfg: dict, out: Path, *sets: str) -> list:
    return ["search", "--space", cfg["space"], "--algo", cfg["algo"], "--dataset", cfg["dataset"], "--data",
            cfg["data"], "--batch-size", str(cfg["batch_size"]), "--epochs", str(cfg["epochs"]), "--device", "cpu",
            "--seed", str(cfg["seed"]), "--no-progress", "--set", "pictures=false",
            "--set", f"max_steps_per_epoch={cfg['max_steps_per_epoch']}",
            "--set", f"algorithm.C={cfg['algorithm']['C']}", "--set", f"algorithm.layers={cfg['algorithm']['layers']}",
            *[a for s in sets for a in ("--set", s)], "--out", str(out)]


@pytest.mark.parametrize("change, key, old, new", [
    (["algorithm.w_lr=0.05"], "algorithm.w_lr", "<absent>", "0.05"),
    (["algorithm.C=8"], "algorithm.C", "4", "8"),
    (["algo=pc-darts"], "algo", "darts", "pc-darts"),
    (["dataset=fashion-mnist"], "dataset", "imagefolder", "fashion-mnist"),
    (["seed=1"], "seed", "0", "1"),
    (["epochs=3"], "epochs", "1", "3"),
])
def test_resume_with_a_changed_setting_exits_2_naming_it(tmp_path, search_run, capsys, change, key, old, new):
    cfg, good = search_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "checkpoint.pt"):
        (run / name).write_bytes((good / name).read_bytes())
    before = (run / "config.yaml").read_text()
    assert main(_cli(cfg, run, *change)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert f"{key}: {old} -> {new}" in err, err
    assert (run / "config.yaml").read_text() == before and not (run / HISTORY).exists()


def test_resume_with_a_safe_change_runs_and_is_recorded(tmp_path, search_run, capsys):
    cfg, good = search_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "checkpoint.pt"):
        (run / name).write_bytes((good / name).read_bytes())
    before = (run / "config.yaml").read_text()
    assert main(_cli(cfg, run, "checkpoint_every=1")) == 0
    capsys.readouterr()
    history = yaml.safe_load((run / HISTORY).read_text())
    assert len(history) == 1 and history[0]["changes"] == {"checkpoint_every": {"old": 0, "new": 1}}
    assert (run / "config.yaml").read_text() == before  # the values the run started with
    assert effective_config(run)["checkpoint_every"] == 1
    assert json.loads((run / "result.json").read_text())["resumed"]
    # The same command again changes nothing more: no second record.
    assert main(_cli(cfg, run, "checkpoint_every=1")) == 0
    assert len(yaml.safe_load((run / HISTORY).read_text())) == 1
    assert "checkpoint_every" in SAFE_RESUME_KEYS


def test_compare_configs_rules():
    old = {"epochs": 2, "lr": 0.1, "data": {"root": "a", "workers": 2}, "pictures": True}
    assert compare_configs(old, dict(old, pictures=False, data={"root": "a", "workers": 4})) == {
        "pictures": {"old": True, "new": False}, "data.workers": {"old": 2, "new": 4}}
    assert compare_configs(old, dict(old, epochs=5), extendable=("epochs",)) == {"epochs": {"old": 2, "new": 5}}
    with pytest.raises(ValueError, match=r"epochs: 2 -> 1 \(epochs may only be raised\)"):
        compare_configs(old, dict(old, epochs=1), extendable=("epochs",))
    with pytest.raises(ValueError, match=r"lr: 0.1 -> 0.2; data.root: a -> b"):
        compare_configs(old, dict(old, lr=0.2, data={"root": "b", "workers": 2}))


# -- pynas train: epochs may be raised; the schedule is laid over the new total ------------------------
def test_train_resume_with_more_epochs_follows_the_new_schedule(tmp_path, capsys):
    from test_train_path import _image_folder, _macro_record, _write_path

    file = _write_path(tmp_path, _macro_record(_image_folder(tmp_path / "images")))
    out = tmp_path / "train"

    def train(epochs: int, *extra: str) -> int:
        return main(["train", "--path", str(file), "--out", str(out), "--epochs", str(epochs), "--batch-size", "8",
                     "--device", "cpu", "--no-progress", "--set", "max_steps_per_epoch=2", *extra])

    assert train(1) == 0
    assert train(3) == 0
    result = json.loads((out / "train_result.json").read_text())
    assert result["resumed"] and [e["epoch"] for e in result["epochs"]] == [1, 2, 3]
    schedule = dict(lr=MACRO_TRAIN_DEFAULTS["lr"], lr_min=0.0, steps_per_epoch=2)
    assert result["epochs"][0]["lr"] == pytest.approx(lr_at(1, epochs=1, **schedule))  # the first run's plan
    for e in result["epochs"][1:]:  # then the plan of a 3-epoch run
        assert e["lr"] == pytest.approx(lr_at(2 * e["epoch"] - 1, epochs=3, **schedule))
    history = yaml.safe_load((out / HISTORY).read_text())
    assert history[0]["changes"] == {"epochs": {"old": 1, "new": 3}}
    capsys.readouterr()
    assert train(2) == 2  # fewer epochs than the run has: refused
    assert "epochs: 3 -> 2" in capsys.readouterr().err
    assert train(3, "--set", "lr=0.5") == 2
    assert "lr: " in capsys.readouterr().err


def test_train_resume_refuses_a_malicious_checkpoint(tmp_path):
    from test_train_path import _image_folder, _macro_record, _write_path

    file = _write_path(tmp_path, _macro_record(_image_folder(tmp_path / "images")))
    marker = tmp_path / "marker"
    _evil_checkpoint(tmp_path / "train" / "train_checkpoint.pt", marker, with_header=True)
    assert main(["train", "--path", str(file), "--out", str(tmp_path / "train"), "--epochs", "1", "--batch-size",
                 "8", "--device", "cpu", "--no-progress", "--set", "max_steps_per_epoch=2"]) == 2
    assert not marker.exists()


@needs_cifar
@needs_macro
def test_rank_checkpoint_option_refuses_a_malicious_file(tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = tmp_path / "supernet.pt"
    _evil_checkpoint(evil, marker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedCheckpointWarning)
        code = main(["rank", "--space", "nasbench-macro", "--benchmark", str(MACRO_JSON), "--dataset", "cifar10",
                     "--data", str(CIFAR10), "--subset", "64", "--archs", "4", "--batch-size", "16", "--device", "cpu",
                     "--checkpoint", str(evil), "--set", "space_options.init_channels=4",
                     "--set", "space_options.head_channels=16", "--set", "evaluation.recalibrate_batches=1",
                     "--set", "evaluation.eval_batches=1", "--no-progress", "--out", str(tmp_path / "rank")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{evil}: refusing to load" in err, err
    assert not marker.exists()
