"""Non-finite guard: a NaN or Inf in the loss, a gradient, a weight, an architecture parameter or a batch-norm
statistic stops a search with an error naming the epoch, the step and the tensor; the last good checkpoint
stays byte for byte what it was and no genotype/path/result file is written. fp16 loss scaling's skipped
steps are not errors.

Runs are tiny searches on a generated image folder (no data needed), in-process
with the NaN injected by wrapping the algorithm's ``step`` (after step N, one
tensor is spoiled), and once through the CLI in a subprocess (exit status 1,
one line). The fp16 case: this torch has no CUDA here, and CPU autocast to
fp16 is not what the algorithms' scaler is built for, so a real
``torch.amp.GradScaler("cpu")`` replaces the (disabled) one of an fp32 run and
an infinite gradient is injected in the backward pass: the scaler skips the
update, as it would after an fp16 overflow; :func:`classify` is unit-tested
for the rest of the rule.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pynas.commands.path_search as path_search_cmd
import pynas.commands.search as search_cmd
from pynas.commands.search import run_search
from pynas.training.checkpoint import load_checkpoint
from pynas.training.guard import NonFiniteError, check_state, check_step, classify

from test_preemption import HOOK, _env, cell_args

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny ops: one thread, as the subprocess runs

# 3 classes x 16 images, half for weights: 24 images, 3 steps of 8 per epoch, 2 epochs; checkpoints at steps
# 2 (checkpoint_every), 3 (the epoch's end), 4 and 6.


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("nan-images")
    g = torch.Generator().manual_seed(0)
    for c in range(3):
        folder = root / "train" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(16):
            Image.fromarray((torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()).save(
                folder / f"{i}.png")
    return root


def cell_config(images: Path, **over) -> dict:
    cfg = dict(space="nas-bench-201", algo="darts", dataset="imagefolder", data=str(images), batch_size=8, epochs=2,
               device="cpu", pictures=False, checkpoint_every=2, algorithm=dict(C=4, layers=1))
    cfg.update(over)
    return cfg


def _spoil(algo, what: str) -> None:
    """Make one tensor of the algorithm non-finite, as a diverging step would."""
    net = algo.supernet
    with torch.no_grad():
        if what == "gradient":
            next(p for p in net.weight_parameters() if p.grad is not None).grad.view(-1)[0] = float("nan")
        elif what == "weight":
            next(iter(net.weight_parameters())).view(-1)[0] = float("inf")
        elif what == "alpha":
            net.alpha.view(-1)[0] = float("nan")
        elif what == "bn":
            dict(net.named_buffers())["stem.1.running_var"][0] = float("nan")
        elif what == "dsnas-alpha":
            algo.alpha[0][0] = float("nan")
        else:
            raise ValueError(what)


def _hooked(monkeypatch, at_step: int, what: str, *, module=search_cmd, snapshot: dict):
    """Wrap create_algorithm so that step ``at_step`` leaves ``what`` non-finite; before that step the
    checkpoint's bytes are kept in ``snapshot`` (the last good checkpoint the failure must not touch)."""
    create = module.create_algorithm

    def create_hooked(*args, **kwargs):
        algo = create(*args, **kwargs)
        step = algo.step

        def hooked(*a):
            if algo.global_step + 1 == at_step:
                snapshot["bytes"] = (snapshot["run"] / "checkpoint.pt").read_bytes()
                snapshot["step"] = load_checkpoint(snapshot["run"] / "checkpoint.pt")["algorithm"][
                    "global_step"]
            metrics = step(*a)
            if algo.global_step == at_step:
                if what == "loss":
                    metrics["loss"] = torch.tensor(float("nan"))
                else:
                    _spoil(algo, what)
            return metrics

        algo.step = hooked
        return algo

    monkeypatch.setattr(module, "create_algorithm", create_hooked)


def _assert_nothing_written(run: Path, snapshot: dict) -> None:
    assert (run / "checkpoint.pt").read_bytes() == snapshot["bytes"], "the last good checkpoint was overwritten"
    for name in ("genotype.json", "path.json", "result.json", "search_state.pt"):
        assert not (run / name).exists(), name
    assert not list(run.glob(".checkpoint.pt.tmp*"))


@pytest.mark.parametrize("what,named", [
    ("loss", "training loss (nan)"),
    ("gradient", "gradient of stem.0.weight"),
    ("weight", "weight stem.0.weight"),
    ("alpha", "architecture parameter alpha"),
    ("bn", "batch-norm statistic stem.1.running_var"),
])
def test_nonfinite_value_stops_the_search_and_keeps_the_last_checkpoint(images, tmp_path, monkeypatch, what,
                                                                        named):
    run = tmp_path / "run"
    snapshot = {"run": run}
    _hooked(monkeypatch, 5, what, snapshot=snapshot)  # checkpoints at steps 2 and 4; step 5 goes wrong
    with pytest.raises(NonFiniteError) as info:
        run_search(cell_config(images), out_dir=run, progress=False)
    message = str(info.value)
    assert message.startswith("non-finite values at epoch 2/2, step 2/3 (global step 5): "), message
    assert named in message, message
    assert message.endswith(f"; {run / 'checkpoint.pt'} (the last good checkpoint) was left as it was"), message
    assert snapshot["step"] == 4
    _assert_nothing_written(run, snapshot)


def test_checked_again_before_every_save(images, tmp_path, monkeypatch):
    """A state spoiled between the last step's check and the epoch-end save is still never written."""
    run = tmp_path / "run"
    create = search_cmd.create_algorithm
    good = {}

    def create_hooked(*args, **kwargs):
        algo = create(*args, **kwargs)
        end_epoch = algo.end_epoch

        def spoiled_end_epoch():
            end_epoch()
            if algo.epoch == 2:
                good["bytes"] = (run / "checkpoint.pt").read_bytes()
                _spoil(algo, "bn")

        algo.end_epoch = spoiled_end_epoch
        return algo

    monkeypatch.setattr(search_cmd, "create_algorithm", create_hooked)
    with pytest.raises(NonFiniteError, match=r"before writing the checkpoint of global step 6: batch-norm statistic "
                                             r"stem\.1\.running_var"):
        run_search(cell_config(images), out_dir=run, progress=False)
    _assert_nothing_written(run, good)


def test_dsnas_architecture_parameters_outside_the_supernet(images, tmp_path, monkeypatch):
    run = tmp_path / "run"
    snapshot = {"run": run}
    _hooked(monkeypatch, 3, "dsnas-alpha", module=path_search_cmd, snapshot=snapshot)
    cfg = dict(space="nasbench-macro", algo="dsnas", dataset="imagefolder", data=str(images), batch_size=8,
               epochs=2, device="cpu", checkpoint_every=2, space_options=dict(init_channels=4, head_channels=16),
               evaluation=dict(recalibrate_batches=1, eval_batches=1), algorithm=dict(warmup_epochs=0))
    with pytest.raises(NonFiniteError, match=r"at epoch 1/2, step 3/3 \(global step 3\): architecture parameter "
                                             r"alpha\[0\]"):
        run_search(cfg, out_dir=run, progress=False)
    _assert_nothing_written(run, snapshot)


def test_cli_exits_1_with_one_line(images, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(HOOK)] + cell_args(images, run),
                          env=_env({"nan": "weight", "step": 3}), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stderr.strip().splitlines() == [
        "pynas search: error: non-finite values at epoch 1/2, step 3/3 (global step 3): weight stem.0.weight; "
        "no checkpoint had been written yet"], proc.stderr
    assert not (run / "genotype.json").exists() and not (run / "result.json").exists()


# -- fp16 loss scaling ---------------------------------------------------------------------------------------
def _scaled_run(images, run: Path, monkeypatch, *, scaler_enabled: bool):
    """A run whose step 3 gets an infinite gradient in its backward pass; its GradScaler is a real, enabled
    CPU one (or disabled): what an fp16 overflow does, and what the scaler does about it."""
    create = search_cmd.create_algorithm
    seen = {}

    def create_hooked(*args, **kwargs):
        algo = create(*args, **kwargs)
        algo.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, enabled=scaler_enabled)
        weight = next(iter(algo.supernet.weight_parameters()))
        weight.register_hook(lambda g: g * float("inf") if algo.global_step == 2 else g)  # during step 3
        seen["algo"] = algo
        return algo

    monkeypatch.setattr(search_cmd, "create_algorithm", create_hooked)
    result = run_search(cell_config(images), out_dir=run, progress=False)
    return result, seen["algo"]


def test_fp16_skipped_step_is_not_an_error(images, tmp_path, monkeypatch):
    result, algo = _scaled_run(images, tmp_path / "run", monkeypatch, scaler_enabled=True)
    # The scaler found the inf, skipped that update and halved its scale (2^10 -> 2^9; no growth in 6 steps).
    assert algo.scaler.get_scale() == 2.0 ** 9
    assert all(torch.isfinite(p).all() for p in algo.supernet.parameters())
    assert (tmp_path / "run" / "genotype.json").is_file() and len(result["epochs"]) == 2


def test_the_same_inf_without_loss_scaling_is_an_error(images, tmp_path, monkeypatch):
    with pytest.raises(NonFiniteError, match=r"at epoch 1/2, step 3/3 \(global step 3\): gradient of stem\.0\.weight"):
        _scaled_run(images, tmp_path / "run", monkeypatch, scaler_enabled=False)


@pytest.mark.parametrize("loss,grads,state,scaler,verdict", [
    (True, True, True, False, "ok"),
    (True, True, True, True, "ok"),
    (False, False, True, True, "amp-skip"),  # an fp16 overflow: the scaler skipped the update
    (True, False, True, True, "amp-skip"),
    (False, True, True, True, "non-finite"),  # finite gradients: the scaler applied the step, the loss is wrong
    (False, False, False, True, "non-finite"),  # a skipped update cannot spoil the weights
    (True, True, False, True, "non-finite"),
    (False, True, True, False, "non-finite"),
    (True, False, True, False, "non-finite"),
    (True, True, False, False, "non-finite"),
])
def test_classify(loss, grads, state, scaler, verdict):
    assert classify(loss_finite=loss, grads_finite=grads, state_finite=state, scaler_enabled=scaler) == verdict


def test_check_functions_on_a_plain_module():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    net(torch.randn(5, 3)).sum().backward()
    assert check_step(0.5, net, where="at step 1") == "ok"
    check_state(net)
    net[1].running_mean[2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"^non-finite values at step 1: batch-norm statistic 1\.running_mean$"):
        check_step(torch.tensor(0.5), net, where="at step 1")
    with pytest.raises(NonFiniteError, match="batch-norm statistic 1.running_mean"):
        check_state(net, where="before saving")
    net[1].running_mean[2] = 0.0
    extra = {"beta": torch.tensor([1.0, float("nan")])}
    with pytest.raises(NonFiniteError, match="architecture parameter beta"):
        check_state(net, extra=extra)
    net[0].weight.grad[0, 0] = float("inf")
    scaler = torch.amp.GradScaler("cpu")
    assert check_step(float("inf"), net, scaler=scaler) == "amp-skip"
    with pytest.raises(NonFiniteError, match=r"training loss \(inf\), gradient of 0\.weight"):
        check_step(float("inf"), net)


def test_finite_check_collects_a_model_once_and_a_new_one_afresh():
    from pynas.training.guard import FiniteCheck

    check = FiniteCheck()
    a = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    b = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    assert check.step(0.0, a) == "ok"
    a[1].running_var[0] = float("nan")  # the same tensor objects: seen through the cache
    with pytest.raises(NonFiniteError, match="batch-norm statistic 1.running_var"):
        check.step(0.0, a)
    b[0].bias.data[1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"weight 0\.bias$"):  # another model: collected afresh
        check.state(b)
    a[1].running_var.fill_(1.0)
    check.state(a)  # collected again (a differs from b)
    a[1].running_var = torch.full((4,), float("nan"))  # a re-assigned buffer is a new tensor: the cache
    check.state(a)  # still holds the old one (documented: call reset() after changing a module in place)
    check.reset()
    with pytest.raises(NonFiniteError, match="batch-norm statistic 1.running_var"):
        check.state(a)
