"""``pynas train --path``: path.json (format 2) and its validation, the stand-alone network of a path, the
training protocol options (label smoothing, no weight decay on BN/bias, lr schedules), exact resume, and
data-parallel training (DDP over gloo, 2 CPU processes, as torchrun runs it)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import pynas.training.train as train_mod
from pynas.cli import main
from pynas.commands.search import run_search
from pynas.data import DeviceDataset, DeviceLoader
from pynas.data.augment import Augmentation
from pynas.spaces import create_space
from pynas.spaces.path_spec import PATH_FORMAT, PATH_VERSION, load_path_spec, path_record
from pynas.training import distributed
from pynas.training.checkpoint import load_checkpoint
from pynas.training.train import (
    MACRO_TRAIN_DEFAULTS,
    SPOS_TRAIN_DEFAULTS,
    lr_at,
    parameter_groups,
    path_protocol,
    train_network,
)

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
TINY_MACRO = dict(init_channels=4, head_channels=16)
PATH = [1, 0, 2, 0, 1, 2, 0, 1]
#: small configurations of every single-path space (fast to build)
SPACES = {"nasbench-macro": dict(TINY_MACRO, num_classes=3, input_size=16),
          "nas-bench-201-path": dict(C=4, N=1, num_classes=3, input_size=16),
          "spos-shufflenetv2": dict(width_multiplier=0.25, num_classes=3, input_size=32),
          "greedynas-mobilenetv2": dict(width_multiplier=0.35, num_classes=3, input_size=32)}
HAS_GLOO = dist.is_available() and dist.is_gloo_available()
needs_gloo = pytest.mark.skipif(not HAS_GLOO, reason="needs torch.distributed with the gloo backend (CPU collectives)")


# --- helpers ---------------------------------------------------------------------------------------------
def _image_folder(root: Path, *, classes: int = 3, train: int = 16, test: int = 8, size: int = 16) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _write_path(tmp_path: Path, record: dict, name: str = "path.json") -> Path:
    file = tmp_path / name
    file.write_text(json.dumps(record))
    return file


def _macro_record(data: Path | None = None) -> dict:
    space = create_space("nasbench-macro", **SPACES["nasbench-macro"])
    return path_record(space, PATH, dataset="imagefolder", data=None if data is None else str(data),
                       supernet_accuracy=50.0, constraint={})


def _dataset(n: int, hw: int, seed: int, *, classes: int = 3) -> DeviceDataset:
    g = torch.Generator().manual_seed(seed)
    return DeviceDataset(images=torch.randint(0, 256, (n, 3, hw, hw), dtype=torch.uint8, generator=g),
                         labels=torch.randint(0, classes, (n,), generator=g), classes=[str(i) for i in range(classes)],
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                         augmentation=Augmentation(crop_padding=2, flip=True))


def _loaders(batch: int, **shard):
    train = DeviceLoader(_dataset(48, 16, 1), batch_size=batch, augment=True, drop_last=True, seed=1, **shard)
    test = DeviceLoader(_dataset(20, 16, 2), batch_size=10 // (shard.get("world_size") or 1), shuffle=False,
                        **shard)
    return train, test


class _Plain(nn.Module):
    """No batch norm: one process with batch 2B and two with B each compute the same gradients."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


class _WithBN(nn.Module):
    """Conv (with bias) + BN + dropout + linear: every kind of parameter group, and global random draws."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        return self.fc(self.drop(F.relu(self.bn(self.conv(x))).mean((2, 3))))


TRAIN = dict(epochs=2, lr=0.1, weight_decay=1e-3, no_wd_bn_bias=True, label_smoothing=0.1, lr_schedule="linear",
             warmup_epochs=1, grad_clip=1.0, progress=False)


# --- path.json ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPACES))
def test_path_record_round_trips_and_rebuilds_the_network(tmp_path, name):
    space = create_space(name, **SPACES[name])
    path = space.sample(1, generator=torch.Generator().manual_seed(4))[0].tolist()
    record = path_record(space, path, dataset="imagefolder", supernet_accuracy=12.5)
    for key in ("space", "path", "choices", "ops", "params", "flops", "supernet_accuracy",  # the first files' keys
                "format", "version", "space_options", "dataset"):
        assert key in record, key
    assert record["format"] == PATH_FORMAT and record["version"] == PATH_VERSION
    for key in ("num_classes", "in_channels", "input_size"):
        assert record["space_options"][key] == getattr(space, key)
    spec = load_path_spec(_write_path(tmp_path, record))
    assert spec.build_space() == space and spec.choices == tuple(path) and spec.dataset == "imagefolder"
    assert spec.path == record["path"] and list(spec.ops) == record["ops"]
    network = spec.build_network()
    assert sum(p.numel() for p in network.parameters()) == spec.params == space.params(path)


@pytest.mark.parametrize("name", list(SPACES))
def test_standalone_network_computes_the_supernet_path(tmp_path, name):
    """The network rebuilt from path.json, given the supernet's weights of the path, equals supernet(x, path)."""
    space = create_space(name, **SPACES[name])
    path = space.sample(1, generator=torch.Generator().manual_seed(5))[0].tolist()
    spec = load_path_spec(_write_path(tmp_path, path_record(space, path)))
    supernet = space.build_supernet().double()
    size = space.input_size
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    with torch.no_grad():  # move the running statistics off their initial values
        supernet.train()
        for _ in range(2):
            supernet(x, path)
    network = spec.build_network().double()
    network.load_state_dict(space.extract_network(supernet, path).state_dict())
    supernet.eval()
    network.eval()
    with torch.no_grad():
        expected = supernet(x, path)
        torch.testing.assert_close(network(x), expected, rtol=1e-10, atol=1e-10)
        # and a freshly initialised network does not (the comparison can fail)
        assert not torch.allclose(spec.build_network().double().eval()(x), expected)


def _mutations():
    def drop(key):
        return lambda r: {k: v for k, v in r.items() if k != key}

    def put(key, value):
        return lambda r: {**r, key: value}

    return {
        "no space_options": (drop("space_options"), "'space_options' is missing"),
        "no choices": (drop("choices"), "'choices' is missing"),
        "no space": (drop("space"), "'space' is missing"),
        "unknown space": (put("space", "nope"), "'space' must name a registered space"),
        "cell space": (lambda r: {**r, "space": "darts", "space_options": {}}, "'space' is 'darts', a cell space"),
        "bad options": (lambda r: {**r, "space_options": {**r["space_options"], "colour": 1}},
                        "'space_options' is rejected"),
        "options not a dict": (put("space_options", [1]), "'space_options' must be an object"),
        "choice out of range": (put("choices", [3] + PATH[1:]), "'choices' is not a path"),
        "too few choices": (put("choices", PATH[:3]), "'choices' is not a path"),
        "choices not a list": (put("choices", "10201201"), "'choices' must be a list"),
        "ops disagree": (lambda r: {**r, "ops": list(reversed(r["ops"]))}, "'ops' is"),
        "params disagree": (lambda r: {**r, "params": r["params"] + 1}, "'params' is"),
        "flops disagree": (lambda r: {**r, "flops": 1}, "'flops' is"),
        "path disagrees": (put("path", "00000000"), "'path' is"),
        "other format": (put("format", "something-else"), "'format' is 'something-else'"),
        "newer version": (put("version", PATH_VERSION + 1), "'version' is 3: written by a newer pynas"),
        "dataset not a string": (put("dataset", 3), "'dataset' must be a string"),
    }


@pytest.mark.parametrize("case", list(_mutations()))
def test_path_spec_errors_name_the_file_and_key(tmp_path, case):
    mutate, message = _mutations()[case]
    file = _write_path(tmp_path, mutate(_macro_record()))
    with pytest.raises(ValueError) as info:
        load_path_spec(file)
    assert str(file) in str(info.value) and message in str(info.value), str(info.value)


def test_path_spec_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such path file"):
        load_path_spec(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not a JSON file"):
        load_path_spec(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"list\.json: expected a JSON object, got list"):
        load_path_spec(tmp_path / "list.json")
    (tmp_path / "genotype.json").write_text(json.dumps({"genotype": "x"}))
    with pytest.raises(ValueError, match="use pynas train --genotype"):
        load_path_spec(tmp_path / "genotype.json")


# --- the CLI ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [[], ["--genotype", "g.json", "--path", "p.json"]])
def test_cli_needs_exactly_one_of_genotype_and_path(tmp_path, capsys, flags):
    assert main(["train", *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pynas train: error: give exactly one of --genotype"), err
    assert ("not both" in err) == bool(flags)
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_bad_path_file_in_one_line(tmp_path, capsys):
    record = _macro_record()
    del record["space_options"]
    file = _write_path(tmp_path, record)
    assert main(["train", "--path", str(file), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'space_options' is missing" in err and str(file) in err


def test_cli_rejects_unknown_settings_and_mismatched_data(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")
    file = _write_path(tmp_path, _macro_record(data))
    assert main(["train", "--path", str(file), "--out", str(tmp_path / "a"), "--set", "label_smothing=0.1"]) == 2
    assert "unknown train setting(s) ['label_smothing']" in capsys.readouterr().err
    assert main(["train", "--path", str(file), "--out", str(tmp_path / "b"), "--device", "cpu",
                 "--set", "space_options.num_classes=5"]) == 2
    err = capsys.readouterr().err
    assert "num_classes=5 but dataset 'imagefolder' gives 3" in err and "--set space_options.num_classes=3" in err


def test_search_then_train_the_found_path(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")
    cfg = dict(space="nasbench-macro", algo="spos", dataset="imagefolder", data=str(data), batch_size=8, epochs=1,
               device="cpu", space_options=TINY_MACRO, max_steps_per_epoch=2,
               evaluation=dict(recalibrate_batches=1, eval_batches=1),
               search=dict(population_size=4, top_k=2, generations=1, mutation_num=2, crossover_num=2))
    found = run_search(cfg, out_dir=tmp_path / "search", progress=False)
    record = json.loads((tmp_path / "search" / "path.json").read_text())
    assert record["space_options"] == {"num_classes": 3, "in_channels": 3, "init_channels": 4, "stages": [2, 3, 3],
                                       "head_channels": 16, "input_size": 16}
    assert record["dataset"] == "imagefolder" and record["data"] == str(data)
    code = main(["train", "--path", str(tmp_path / "search" / "path.json"), "--out", str(tmp_path / "train"),
                 "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-progress",
                 "--set", "max_steps_per_epoch=2", "--set", "checkpoint_every=1"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"path: {found['path']}" in out and "after 2 epochs" in out
    result = json.loads((tmp_path / "train" / "train_result.json").read_text())
    assert result["path"] == found["path"] and result["choices"] == record["choices"]
    assert result["params"] == record["params"] and result["flops"] == record["flops"]
    assert result["protocol"] == "nasbench-macro" and result["world_size"] == 1 and len(result["epochs"]) == 2
    config = (tmp_path / "train" / "train_config.yaml").read_text()
    assert "lr: 0.1" in config and "weight_decay: 0.0005" in config  # NAS-Bench-Macro's protocol
    # Run again: it resumes from the finished checkpoint and trains nothing more.
    assert main(["train", "--path", str(tmp_path / "search" / "path.json"), "--out", str(tmp_path / "train"),
                 "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-progress",
                 "--set", "max_steps_per_epoch=2"]) == 0
    again = json.loads((tmp_path / "train" / "train_result.json").read_text())
    assert again["resumed"] and again["epochs"] == result["epochs"]


def test_cell_training_takes_the_new_options_too(tmp_path):
    from pynas.spaces.genotypes import NB201Genotype

    data = _image_folder(tmp_path / "images")
    NB201Genotype.from_arch_str("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|"
                                "nor_conv_3x3~2|").save(tmp_path / "genotype.json")
    args = ["train", "--genotype", str(tmp_path / "genotype.json"), "--dataset", "imagefolder", "--data", str(data),
            "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-progress", "--set", "C=4",
            "--set", "layers=1", "--set", "max_steps_per_epoch=2"]
    assert main([*args, "--out", str(tmp_path / "a"), "--set", "label_smoothing=0.1", "--set", "no_wd_bn_bias=true",
                 "--set", "lr_schedule=linear", "--set", "warmup_epochs=1"]) == 0
    result = json.loads((tmp_path / "a" / "train_result.json").read_text())
    assert result["protocol"] == "nas-bench-201" and len(result["epochs"]) == 2
    assert [e["lr"] for e in result["epochs"]] == pytest.approx([0.1, 0.0])  # warmup to 0.1, then linear to 0
    groups = load_checkpoint(tmp_path / "a" / "train_checkpoint.pt")["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # the NB201 protocol as it was: cosine, one group
    plain = json.loads((tmp_path / "b" / "train_result.json").read_text())
    assert [e["lr"] for e in plain["epochs"]] == pytest.approx([0.1, 0.05])
    assert len(load_checkpoint(tmp_path / "b" / "train_checkpoint.pt")["optimizer"]["param_groups"]) == 1


def test_channels_last_training_matches_nchw(tmp_path):
    data = _image_folder(tmp_path / "images")
    file = _write_path(tmp_path, _macro_record(data))
    losses = []
    for fmt in ("preserve", "channels_last"):
        assert main(["train", "--path", str(file), "--out", str(tmp_path / fmt), "--epochs", "1", "--batch-size", "8",
                     "--device", "cpu", "--no-progress", "--set", "max_steps_per_epoch=3",
                     "--set", f"memory_format={fmt}"]) == 0
        losses.append(json.loads((tmp_path / fmt / "train_result.json").read_text())["epochs"][0])
    assert losses[1]["train_loss"] == pytest.approx(losses[0]["train_loss"], rel=1e-4)
    assert losses[1]["test_loss"] == pytest.approx(losses[0]["test_loss"], rel=1e-4)


# --- protocol options ------------------------------------------------------------------------------------
def test_protocols():
    assert path_protocol("spos-shufflenetv2") == ("spos", SPOS_TRAIN_DEFAULTS)
    assert path_protocol("nasbench-macro") == ("nasbench-macro", MACRO_TRAIN_DEFAULTS)
    assert path_protocol("nas-bench-201-path")[0] == "nas-bench-201"
    spos = SPOS_TRAIN_DEFAULTS
    assert (spos["lr"], spos["batch_size"], spos["momentum"], spos["weight_decay"], spos["label_smoothing"],
            spos["epochs"], spos["lr_schedule"], spos["no_wd_bn_bias"], spos["nesterov"]) == \
        (0.5, 1024, 0.9, 4e-5, 0.1, 240, "linear", True, False)


def test_no_wd_bn_bias_puts_norm_and_bias_parameters_in_a_zero_decay_group(tmp_path):
    net = _WithBN()
    decay, no_decay = parameter_groups(net, weight_decay=4e-5, no_wd_bn_bias=True)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([net.conv.weight, net.fc.weight]) and decay["weight_decay"] == 4e-5
    assert ids(no_decay["params"]) == ids([net.conv.bias, net.bn.weight, net.bn.bias, net.fc.bias])
    assert no_decay["weight_decay"] == 0.0
    (single,) = parameter_groups(net, weight_decay=4e-5)
    assert len(single["params"]) == 6 and single["weight_decay"] == 4e-5
    # train_network builds its optimizer from these groups.
    train, test = _loaders(8)
    train_network(net, train_loader=train, test_loader=test, out_dir=tmp_path, epochs=1, lr=0.1, weight_decay=4e-5,
                  no_wd_bn_bias=True, max_steps_per_epoch=1, progress=False)
    groups = load_checkpoint(tmp_path / "train_checkpoint.pt")["optimizer"]["param_groups"]
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(2, 4e-5), (4, 0.0)]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothing_is_cross_entropys(tmp_path, smoothing):
    torch.manual_seed(0)
    net = _Plain()
    reference = copy.deepcopy(net)
    train, test = _loaders(8)
    x, y = next(iter(_loaders(8)[0]))  # the first batch train_network will see
    out = train_network(net, train_loader=train, test_loader=test, out_dir=tmp_path, epochs=1, lr=0.1,
                        weight_decay=0.0, label_smoothing=smoothing, max_steps_per_epoch=1, progress=False)
    with torch.no_grad():
        logits = reference(x)
    expected = float(F.cross_entropy(logits, y, label_smoothing=smoothing))
    assert out["history"][0]["train_loss"] == pytest.approx(expected, rel=1e-6)
    plain, smooth = float(F.cross_entropy(logits, y)), float(F.cross_entropy(logits, y, label_smoothing=0.1))
    assert abs(plain - smooth) > 1e-3  # the two cases tell the options apart


def test_lr_schedules():
    T, S = 5, 4  # epochs, steps per epoch
    linear = [lr_at(s, lr=0.5, lr_min=0.0, epochs=T, steps_per_epoch=S, schedule="linear") for s in range(T * S)]
    assert linear[0] == pytest.approx(0.5 * (1 - 1 / 20)) and linear[-1] == 0.0  # SPOS: iteration i: lr (1 - i/T)
    assert all(a > b for a, b in zip(linear, linear[1:]))
    cosine = [lr_at(s, lr=0.1, lr_min=0.001, epochs=T, steps_per_epoch=S) for s in range(T * S)]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T, eta_min=0.001)
    for epoch in range(T):  # stepped per epoch, as torch's CosineAnnealingLR in DARTS/NB201
        assert cosine[epoch * S:(epoch + 1) * S] == pytest.approx([opt.param_groups[0]["lr"]] * S)
        opt.step()
        sched.step()
    warm = [lr_at(s, lr=0.4, lr_min=0.0, epochs=T, steps_per_epoch=S, schedule="linear", warmup_epochs=1)
            for s in range(T * S)]
    assert warm[:S] == pytest.approx([0.1, 0.2, 0.3, 0.4]) and warm[S] == pytest.approx(0.4 * (1 - 1 / 16))
    assert warm[-1] == 0.0
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        train_network(_Plain(), train_loader=None, test_loader=None, out_dir=Path("."), epochs=1, lr=0.1,
                      weight_decay=0.0, lr_schedule="step")
    with pytest.raises(ValueError, match=r"warmup_epochs must be an int in \[0, epochs=2\)"):
        train_network(_Plain(), train_loader=None, test_loader=None, out_dir=Path("."), epochs=2, lr=0.1,
                      weight_decay=0.0, warmup_epochs=2)


def test_train_network_follows_the_schedule(tmp_path):
    train, test = _loaders(8)
    out = train_network(_Plain(), train_loader=train, test_loader=test, out_dir=tmp_path, epochs=3, lr=0.5,
                        weight_decay=0.0, lr_schedule="linear", max_steps_per_epoch=2, progress=False)
    # The last step of each epoch: iteration 2e of 6 (1-based).
    assert [h["lr"] for h in out["history"]] == pytest.approx([0.5 * (1 - 2 / 6), 0.5 * (1 - 4 / 6), 0.0])
    groups = load_checkpoint(tmp_path / "train_checkpoint.pt")["optimizer"]["param_groups"]
    assert groups[0]["lr"] == 0.0


# --- exact resume -----------------------------------------------------------------------------------------
class _Killed(Exception):
    pass


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _final_state(net, out_dir):
    ckpt = load_checkpoint(out_dir / "train_checkpoint.pt")
    return {"network": {k: v.clone() for k, v in net.state_dict().items()}, "ckpt": ckpt, "next": torch.rand(3)}


def test_resume_after_kill_is_bit_identical(tmp_path, monkeypatch):
    def run(out_dir, *, seed=0):
        torch.manual_seed(seed)
        net = _WithBN()
        train, test = _loaders(8)
        out = train_network(net, train_loader=train, test_loader=test, out_dir=out_dir, checkpoint_every=2,
                            max_steps_per_epoch=5, **TRAIN)
        return net, out

    full_net, full = run(tmp_path / "full")
    a = _final_state(full_net, tmp_path / "full")

    saves = {"n": 0}
    real = train_mod.save_checkpoint

    def save_then_die(path, payload):
        real(path, payload)
        saves["n"] += 1
        if saves["n"] == 4:  # steps 2, 4, end of epoch 1 (step 5), step 6: mid-epoch 2
            raise _Killed

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        run(tmp_path / "killed")
    monkeypatch.setattr(train_mod, "save_checkpoint", real)
    assert load_checkpoint(tmp_path / "killed" / "train_checkpoint.pt")["step"] == 6
    resumed_net, resumed = run(tmp_path / "killed", seed=1)  # other initial weights: the checkpoint must win
    b = _final_state(resumed_net, tmp_path / "killed")
    assert resumed["resumed"] and not full["resumed"]
    for key, value in a["network"].items():
        assert torch.equal(value, b["network"][key]), key
    assert _strip(full["history"]) == _strip(resumed["history"])
    momentum = lambda c: [s["momentum_buffer"] for s in c["optimizer"]["state"].values()]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(momentum(a["ckpt"]), momentum(b["ckpt"])))
    assert {k: v for k, v in a["ckpt"]["train_loader"].items() if k != "generator"} == \
        {k: v for k, v in b["ckpt"]["train_loader"].items() if k != "generator"}
    assert torch.equal(a["ckpt"]["train_loader"]["generator"], b["ckpt"]["train_loader"]["generator"])
    assert torch.equal(a["next"], b["next"])  # the global random stream (dropout) continues alike
    lines = (tmp_path / "killed" / "train_metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


# --- data parallel ----------------------------------------------------------------------------------------
WORLD = 2
B = 4  # per-rank batch


def _ddp_scenario(rank: int, tmp: Path) -> dict:
    out = {}
    torch.manual_seed(0)
    net = _Plain()
    train, test = _loaders(B)
    res = train_network(net, train_loader=train, test_loader=test, out_dir=tmp / "plain", max_steps_per_epoch=4,
                        **TRAIN)
    out["plain"] = {"state": {k: v.clone() for k, v in net.state_dict().items()}, "history": res["history"]}

    torch.manual_seed(0)  # as seed_everything: every rank builds the same network
    space = create_space("nasbench-macro", **SPACES["nasbench-macro"])
    macro = space.build_network(PATH)
    train, test = _loaders(B)
    res = train_network(macro, train_loader=train, test_loader=test, out_dir=tmp / "macro", checkpoint_every=3,
                        max_steps_per_epoch=4, compile="aot_eager", **TRAIN)
    out["macro"] = {"state": {k: v.clone() for k, v in macro.state_dict().items()}, "history": res["history"]}

    try:
        train_network(_WithBN(), train_loader=train, test_loader=test, out_dir=tmp / "syncbn", sync_bn=True, **TRAIN)
    except ValueError as err:
        out["sync_bn_error"] = str(err)
    return out


def _worker(rank: int, tmp: str, world: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init_from_env(device="cpu", init_method=f"file://{tmp}/store", timeout_s=120)
    try:
        torch.save(_ddp_scenario(rank, Path(tmp)), Path(tmp) / f"rank-{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    if not HAS_GLOO:
        pytest.skip("needs torch.distributed with the gloo backend (CPU collectives)")
    tmp = tmp_path_factory.mktemp("train-ddp")
    torch.multiprocessing.spawn(_worker, args=(str(tmp), WORLD), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank-{r}.pt", weights_only=False) for r in range(WORLD)], tmp


@needs_gloo
def test_two_processes_equal_one_with_the_doubled_batch(ddp_runs):
    runs, tmp = ddp_runs
    torch.manual_seed(0)
    net = _Plain()
    train, test = _loaders(WORLD * B, rank=0, world_size=1)
    ref = train_network(net, train_loader=train, test_loader=test, out_dir=tmp / "plain-one", max_steps_per_epoch=4,
                        **TRAIN)
    for rank in range(WORLD):
        got = runs[rank]["plain"]
        for key, value in net.state_dict().items():
            torch.testing.assert_close(got["state"][key], value, rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
        for a, b in zip(got["history"], ref["history"]):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
            assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)  # summed over both ranks' shards
            assert a["test_accuracy"] == b["test_accuracy"] and a["lr"] == b["lr"]
    assert not torch.equal(runs[0]["plain"]["state"]["fc.weight"], _Plain().state_dict()["fc.weight"])
    # Only rank 0 writes: one line per epoch.
    assert len((tmp / "plain" / "train_metrics.jsonl").read_text().splitlines()) == 2


@needs_gloo
def test_ranks_hold_the_same_network_with_batch_norm_and_compile(ddp_runs):
    runs, tmp = ddp_runs
    a, b = runs[0]["macro"], runs[1]["macro"]
    for key, value in a["state"].items():  # parameters and BN running statistics (averaged over ranks)
        assert torch.equal(value, b["state"][key]), key
    assert _strip(a["history"]) == _strip(b["history"]) and len(a["history"]) == 2
    ckpt = load_checkpoint(tmp / "macro" / "train_checkpoint.pt")
    assert ckpt["world_size"] == WORLD and len(ckpt["rng_per_rank"]) == WORLD
    for key, value in ckpt["network"].items():
        assert torch.equal(value, a["state"][key]), key


@needs_gloo
def test_sync_bn_on_cpu_is_refused_clearly(ddp_runs):
    runs, _ = ddp_runs
    for rank in range(WORLD):
        assert "sync_bn needs CUDA" in runs[rank]["sync_bn_error"]


@needs_gloo
def test_resume_with_another_world_size_is_refused(ddp_runs):
    _, tmp = ddp_runs
    train, test = _loaders(B)
    with pytest.raises(ValueError, match=r"written by a run of 2 process\(es\), this one has 1.*--nproc_per_node=2"):
        train_network(_Plain(), train_loader=train, test_loader=test, out_dir=tmp / "plain", **TRAIN)


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    train, test = _loaders(8)
    train_network(_Plain(), train_loader=train, test_loader=test, out_dir=tmp_path, epochs=1, lr=0.1,
                  weight_decay=0.0, max_steps_per_epoch=1, progress=False)
    with pytest.raises(ValueError, match="holds another network or optimizer than this run's"):
        train_network(_WithBN(), train_loader=train, test_loader=test, out_dir=tmp_path, epochs=2, lr=0.1,
                      weight_decay=0.0, max_steps_per_epoch=1, progress=False)


@needs_gloo
def test_torchrun_cli_trains_a_path_on_two_processes(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")
    file = _write_path(tmp_path, _macro_record(data))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    args = ["train", "--path", str(file), "--out", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "4",
            "--device", "cpu", "--no-progress", "--set", "max_steps_per_epoch=3"]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "pynas.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("test accuracy:") == 1  # rank 0 prints
    result = json.loads((tmp_path / "out" / "train_result.json").read_text())
    assert result["world_size"] == 2 and result["global_batch_size"] == 8
    assert len((tmp_path / "out" / "train_metrics.jsonl").read_text().splitlines()) == 1
    # One process cannot resume what two wrote.
    capsys.readouterr()
    assert main([*args[:5], "--epochs", "2", *args[7:]]) == 2
    err = capsys.readouterr().err
    assert "written by a run of 2 process(es), this one has 1" in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_compile_with_inductor_trains_like_eager(tmp_path):
    """torch.compile (inductor: a C++ compiler, about a minute on a small shared CPU) gives eager's losses."""
    histories = []
    for option in (False, True):
        torch.manual_seed(0)
        net = create_space("nasbench-macro", **SPACES["nasbench-macro"]).build_network(PATH)
        train, test = _loaders(8)
        histories.append(train_network(net, train_loader=train, test_loader=test, out_dir=tmp_path / str(option),
                                       epochs=1, lr=0.1, weight_decay=0.0, max_steps_per_epoch=2, compile=option,
                                       progress=False)["history"])
    assert histories[1][0]["train_loss"] == pytest.approx(histories[0][0]["train_loss"], rel=1e-4)
