"""Preemption: SIGTERM/SIGINT stop ``pynas search`` at a step boundary with its checkpoint written, exit
128 + N, and rerunning the same command ends bit-identical to a run that was never stopped.

Real runs in subprocesses on tiny supernets and a generated image folder (no
data needed). Signals come three ways: from the process itself at a chosen
step or search generation (``tests/guard_hook.py``, a test-only wrapper of the
CLI), from this process with ``os.kill`` while the child trains, and, under
two gloo ranks, to rank 0 only (both ranks must stop at the same step).
:class:`pynas.training.guard.StopSignals` itself (install, restore, threads,
ignored signals) is tested in-process.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from pynas.training.checkpoint import load_checkpoint
from pynas.training.guard import Preempted, StopSignals, exit_code

REPO = Path(__file__).resolve().parents[1]
HOOK = Path(__file__).resolve().parent / "guard_hook.py"
PER_CLASS = 48  # 3 classes x 48 images, half for weights: 72 training images, 9 steps of 8 per epoch
STEPS = 9


def _env(hook: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"  # every run alike (and light on shared cores)
    env.pop("PYNAS_TEST_HOOK", None)
    if hook is not None:
        env["PYNAS_TEST_HOOK"] = json.dumps(hook)
    return env


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("guard-images")
    g = torch.Generator().manual_seed(0)
    for c in range(3):
        folder = root / "train" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = (torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def cell_args(images: Path, out: Path) -> list[str]:
    return ["search", "--space", "nas-bench-201", "--algo", "darts", "--dataset", "imagefolder", "--data",
            str(images), "--batch-size", "8", "--epochs", "2", "--device", "cpu", "--seed", "0", "--no-progress",
            "--set", "pictures=false", "--set", "algorithm.C=4", "--set", "algorithm.layers=1",
            "--set", "checkpoint_every=4", "--out", str(out)]


def path_args(images: Path, out: Path) -> list[str]:
    return ["search", "--space", "nasbench-macro", "--algo", "spos", "--dataset", "imagefolder", "--data",
            str(images), "--batch-size", "8", "--epochs", "1", "--device", "cpu", "--seed", "0", "--no-progress",
            "--set", "space_options.init_channels=4", "--set", "space_options.head_channels=16",
            "--set", "evaluation.recalibrate_batches=1", "--set", "evaluation.eval_batches=1",
            "--set", "search.population_size=4", "--set", "search.top_k=2", "--set", "search.generations=3",
            "--set", "search.mutation_num=2", "--set", "search.crossover_num=2",
            "--set", "checkpoint_every=4", "--out", str(out)]


def run_cli(args: list[str], hook: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, str(HOOK)] + args  # without a hook: exactly python -m pynas.cli
    return subprocess.run(command, env=_env(hook), capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def _stopped(proc: subprocess.CompletedProcess, signum: int) -> str:
    """The one stop line; checks the exit status and that nothing else was said on stderr."""
    assert proc.returncode == exit_code(signum) == 128 + signum, \
        f"exit {proc.returncode}, expected {128 + signum}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("pynas: ")
             and "received again" not in line]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- comparing runs -------------------------------------------------------------------------------------
TIMING = {"search_seconds", "time", "seconds_per_epoch", "data_seconds", "train_seconds", "search_phase_seconds",
          "resumed"}


def assert_same(a, b, where="") -> None:
    """Nested states equal: tensors with torch.equal (bit-identical), timings left out."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        keys = set(a) - TIMING
        assert keys == set(b) - TIMING, f"{where}: keys {sorted(keys ^ (set(b) - TIMING))}"
        for key in keys:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif hasattr(a, "__array__") and not isinstance(a, (str, bytes)):
        import numpy as np

        assert np.array_equal(np.asarray(a), np.asarray(b)), f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _epochs_logged(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "epoch"]


def assert_same_run(ref: Path, run: Path, *, outputs: tuple[str, ...]) -> None:
    for name in outputs:  # genotype.json / path.json: byte for byte
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    assert_same(json.loads((ref / "result.json").read_text()), json.loads((run / "result.json").read_text()),
                "result.json")
    assert_same(_epochs_logged(ref), _epochs_logged(run), "metrics.jsonl epochs")
    a = load_checkpoint(ref / "checkpoint.pt")
    b = load_checkpoint(run / "checkpoint.pt")
    assert_same(a["algorithm"], b["algorithm"], "checkpoint.algorithm")  # supernet, optimisers, scaler, steps
    for key in ("train_loader", "valid_loader", "rng", "sums", "history"):
        assert_same(a[key], b[key], f"checkpoint.{key}")


@pytest.fixture(scope="module")
def cell_reference(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cell-ref") / "run"
    _ok(run_cli(cell_args(images, out)))
    return out


@pytest.fixture(scope="module")
def path_reference(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("path-ref") / "run"
    _ok(run_cli(path_args(images, out)))
    return out


# -- cell search ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [5, STEPS])
def test_sigterm_during_a_step_saves_after_it_and_the_rerun_is_bit_identical(images, cell_reference, tmp_path,
                                                                             step):
    run = tmp_path / "run"
    line = _stopped(run_cli(cell_args(images, run), {"signal": "SIGTERM", "step": step}), signal.SIGTERM)
    if step < STEPS:  # mid-epoch (not a checkpoint_every step): the stop writes the checkpoint itself
        where = rf"at epoch 1/2, step {step}/{STEPS} \(global step {step}\)"
    else:  # the epoch's last step: the epoch ends (and saves) first
        where = rf"after epoch 1/2 \(global step {step}\)"
    assert re.fullmatch(rf"pynas: SIGTERM received: checkpoint written to {re.escape(str(run / 'checkpoint.pt'))} "
                        rf"{where}; rerun the same command to resume", line), line
    # The step the signal arrived in ran to its end, and no further one started.
    assert load_checkpoint(run / "checkpoint.pt")["algorithm"]["global_step"] == step
    assert not (run / "genotype.json").exists() and not (run / "result.json").exists()
    _ok(run_cli(cell_args(images, run)))
    assert_same_run(cell_reference, run, outputs=("genotype.json",))


def test_sigint_and_a_second_sigint_while_saving(images, cell_reference, tmp_path):
    run = tmp_path / "run"
    proc = run_cli(cell_args(images, run), {"signal": "SIGINT", "step": 7, "again_in_save": True})
    line = _stopped(proc, signal.SIGINT)
    assert "pynas: SIGINT received again: still finishing the current step and its checkpoint" in proc.stderr
    assert line.startswith("pynas: SIGINT received: checkpoint written to ") and "global step 7)" in line, line
    assert load_checkpoint(run / "checkpoint.pt")["algorithm"]["global_step"] == 7
    assert not list(run.glob(".checkpoint.pt.tmp*")), "a temporary checkpoint was left behind"
    _ok(run_cli(cell_args(images, run)))
    assert_same_run(cell_reference, run, outputs=("genotype.json",))


def test_external_sigterm_while_training(images, cell_reference, tmp_path):
    """A real SIGTERM from outside, whenever it lands after the first checkpoint (step 4)."""
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "pynas.cli"] + cell_args(images, run), env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoint.pt").exists():  # stepping, with the handlers installed
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the run never wrote its first checkpoint"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=240)
    finally:
        if child.poll() is None:
            child.kill()
    proc = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    line = _stopped(proc, signal.SIGTERM)
    step = int(re.search(r"global step (\d+)\)", line).group(1))
    assert 4 <= step < 2 * STEPS, line
    assert load_checkpoint(run / "checkpoint.pt")["algorithm"]["global_step"] == step
    _ok(run_cli(cell_args(images, run)))
    assert_same_run(cell_reference, run, outputs=("genotype.json",))


# -- single-path search: supernet training, then the path search -----------------------------------------
def test_single_path_run_stopped_in_both_phases(images, path_reference, tmp_path):
    run = tmp_path / "run"
    line = _stopped(run_cli(path_args(images, run), {"signal": "SIGTERM", "step": 3}), signal.SIGTERM)
    assert "checkpoint.pt at epoch 1/1, step 3/9 (global step 3)" in line, line
    assert not (run / "search_state.pt").exists() and not (run / "path.json").exists()
    # Resumed, then stopped by SIGINT during the second generation of the path search.
    proc = run_cli(path_args(images, run), {"signal": "SIGINT", "generation": 1})
    line = _stopped(proc, signal.SIGINT)
    assert re.fullmatch(rf"pynas: SIGINT received: checkpoint written to "
                        rf"{re.escape(str(run / 'search_state.pt'))} after 2 generation\(s\) of the path search; "
                        rf"rerun the same command to resume", line), line
    assert load_checkpoint(run / "search_state.pt")["strategy"]["generation"] == 2
    assert not (run / "path.json").exists() and not (run / "result.json").exists()
    _ok(run_cli(path_args(images, run)))
    assert_same_run(path_reference, run, outputs=("path.json",))
    assert_same(load_checkpoint(path_reference / "search_state.pt"),
                load_checkpoint(run / "search_state.pt"), "search_state")


# -- StopSignals in-process --------------------------------------------------------------------------------
def test_handlers_are_installed_for_the_run_only_and_record_signals():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = StopSignals()
    with stop:
        assert set(stop.installed) == {signal.SIGTERM, signal.SIGINT}
        with stop:  # re-entrant: the command holds it, the runner enters it again
            pass
        assert signal.getsignal(signal.SIGTERM) == stop._handle  # still installed after the inner exit
        assert stop.should_stop() == 0
        os.kill(os.getpid(), signal.SIGTERM)  # would end pytest without the handler
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt
        time.sleep(0.01)
        assert stop.should_stop() == signal.SIGTERM and stop.count == 2
    assert {s: signal.getsignal(s) for s in before} == before


def test_off_the_main_thread_nothing_is_installed_and_request_still_stops():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    seen = {}

    def body():
        stop = StopSignals()
        with stop:
            seen["installed"] = stop.installed
            seen["handlers"] = {s: signal.getsignal(s) for s in before}
            stop.request(signal.SIGINT)
            seen["stop"] = stop.should_stop()

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == {"installed": (), "handlers": before, "stop": signal.SIGINT}


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as nohup / a background job of a script
    try:
        with StopSignals() as stop:
            assert stop.installed == (signal.SIGTERM,)
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_preempted_exit_codes_and_messages(tmp_path):
    term = Preempted(signal.SIGTERM, checkpoint=tmp_path / "checkpoint.pt", where="after epoch 2/3")
    assert term.exit_code == 143 and str(term) == (f"SIGTERM received: checkpoint written to "
                                                  f"{tmp_path / 'checkpoint.pt'} after epoch 2/3; rerun the same "
                                                  f"command to resume")
    assert Preempted(signal.SIGINT, checkpoint=None, where="before the first step", written=False).exit_code == 130


# -- two ranks (torchrun's setting, over gloo) --------------------------------------------------------------
STOP_AT = 6  # rank 0 alone gets SIGTERM during this global step


def _ddp_worker(rank: int, tmp: str, world: int) -> None:
    import torch.distributed as dist

    from test_distributed import _final, _runner

    from pynas.training import distributed
    from pynas.training.guard import NonFiniteError

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init_from_env(device="cpu", init_method=f"file://{tmp}/store", timeout_s=120)
    out: dict = {}
    try:
        algo, train, valid, runner = _runner(Path(tmp) / "full")
        runner.run()
        out["full"] = _final(algo, train, valid, runner)

        algo, train, valid, runner = _runner(Path(tmp) / "stopped")
        step = algo.step

        def step_with_signal(*args):
            if rank == 0 and algo.global_step + 1 == STOP_AT:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(*args)

        algo.step = step_with_signal
        try:
            runner.run()
        except Preempted as stopped:
            out["stopped"] = {"signum": stopped.signum, "step": algo.global_step, "where": stopped.where}
        algo, train, valid, runner = _runner(Path(tmp) / "stopped")  # the rerun, in the same processes
        out["resumed"] = runner.resume()
        runner.run()
        out["after_resume"] = _final(algo, train, valid, runner)

        algo, train, valid, runner = _runner(Path(tmp) / "nan")
        step = algo.step

        def step_with_nan(*args):
            metrics = step(*args)
            if rank == 1 and algo.global_step == 3:  # a gradient no collective touches after the step
                next(p for p in algo.supernet.parameters() if p.grad is not None).grad.view(-1)[0] = float("nan")
            return metrics

        algo.step = step_with_nan
        try:
            runner.run()
        except NonFiniteError as err:
            out["nan"] = {"step": algo.global_step, "message": str(err)}
        torch.save(out, Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="needs torch.distributed with the gloo backend")
def test_every_rank_stops_at_the_same_step_when_one_is_signalled(tmp_path):
    world = 2
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tmp_path), world), nprocs=world, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(world))
    for r in (r0, r1):
        # Both ranks stop after the signalled step, for rank 0's SIGTERM, and resume to rank's own full run.
        assert r["stopped"]["signum"] == signal.SIGTERM and r["stopped"]["step"] == STOP_AT, r["stopped"]
        assert r["resumed"]
        assert_same(r["full"], r["after_resume"], "rank state")
        # A NaN on rank 1 only stops both ranks at that step.
        assert r["nan"]["step"] == 3, r["nan"]
    # Rank 0 (the one the CLI lets speak) names what rank 1 found.
    assert r0["nan"]["message"] == r1["nan"]["message"]
    assert re.search(r"at epoch 1/2, step 3/\d+ \(global step 3\): gradient of \S+ \(rank 1\)", r0["nan"]["message"]), \
        r0["nan"]["message"]


def test_a_signal_before_the_first_step_stops_without_writing(tmp_path):
    """Stop requested while the run was starting (data loading, resume): nothing trained, nothing written."""
    from test_distributed import _runner

    algo, train, valid, runner = _runner(tmp_path / "run")
    runner.stop.request(signal.SIGTERM)
    with pytest.raises(Preempted) as info:
        runner.run()
    assert info.value.exit_code == 143 and not info.value.written and algo.global_step == 0
    assert str(info.value) == ("SIGTERM received: stopped before the first step (epoch 1/2, global step 0), nothing "
                               "saved yet; rerun the same command to resume")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
