"""Stand-alone training of a found cell or path, with the evaluation protocol of its space.

Protocols (every key is a :func:`train_network` option or a loader setting of
``pynas train``; ``--set key=value`` overrides any of them):

DARTS space (Liu et al., ICLR 2019, Sec. A.1.2): SGD lr 0.025 cosine to 0,
momentum 0.9, weight decay 3e-4, batch 96, 600 epochs, auxiliary head weight
0.4, drop path 0.2 (raised linearly over the epochs), cutout 16, gradient
clipping 5. NAS-Bench-201 (Dong & Yang, ICLR 2020, Sec. 2.3): SGD lr 0.1
cosine, Nesterov momentum 0.9, weight decay 5e-4, batch 256, 200 epochs.

Single paths (:data:`PATH_PROTOCOLS` picks one per space):

* SPOS (Guo et al., ECCV 2020), read from megvii-model/SinglePathOneShot
  ``src/Evaluation/template/train.py``: SGD lr 0.5 for batch 1024, momentum
  0.9 (no Nesterov), weight decay 4e-5, label smoothing 0.1, lr decayed
  linearly to 0 every iteration over 300,000 iterations (= 240 epochs of
  ImageNet's 1,281,167 images at batch 1024). Its optimizer takes
  ``utils.get_parameters(model)``, which puts every parameter that is not a
  conv/linear weight (BN weights and biases, all biases) in a group without
  weight decay (``no_wd_bn_bias``); that helper's file was not readable here,
  the split is the one its widely copied versions make. Not reproduced: its
  augmentation (RandomResizedCrop, colour jitter, flip; here the dataset's own
  recipe) and the final pass that re-estimates BN statistics at lr 0.
  Used for spos-shufflenetv2 and, unverified for that space (GreedyNAS's
  retraining code was not available), greedynas-mobilenetv2.
* NAS-Bench-Macro (Su et al., CVPR 2021), read from xiusu/NAS-Bench-Macro
  ``train/train.py`` (run with its defaults by ``train_benchmark.py``): SGD lr
  0.1, momentum 0.9, weight decay 5e-4 on every parameter, batch 256, 50
  epochs, cosine to 0 stepped per epoch, crop (padding 4) + flip.
* nas-bench-201-path: the NAS-Bench-201 protocol (its network is that benchmark's).

Learning-rate schedules (:func:`lr_at`): ``cosine`` is stepped once per epoch
(as DARTS, NAS-Bench-201 and NAS-Bench-Macro step ``CosineAnnealingLR``),
``linear`` every iteration (as SPOS steps its ``LambdaLR``; iteration i of T
uses ``lr * (1 - i / T)``, so the last one runs at ``lr_min``).
``warmup_epochs`` ramps the lr linearly per iteration from ``lr / W`` to
``lr`` over the first W iterations; the schedule then runs over the rest.

Data parallel (under ``torchrun``, see :mod:`pynas.training.distributed`):
the network, fixed here, is wrapped in ``DistributedDataParallel``; each rank
trains on its shard (``batch_size`` is per process: a step sees ``world_size x
batch_size`` images), BN running statistics are averaged over ranks after
every step (as the search does) so every rank holds the same network,
evaluation sums correct/count over ranks, rank 0 alone writes files, and a
checkpoint restores every rank (it refuses another world size).

Checkpoints are atomic and checksummed (:mod:`pynas.training.checkpoint`) and carry loaders and random
states (each rank's) for exact resume, at every epoch end and every ``checkpoint_every`` steps. A resume
may raise ``epochs`` (:mod:`pynas.training.run_config`): :func:`lr_at` is a function of the step and the
epoch count, so the remaining steps follow the schedule laid over the new total.
"""
from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .guard import FiniteCheck, Preempted, StopSignals
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .metrics_log import MetricsLog
from .progress import Progress

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LR_SCHEDULES = ("cosine", "linear")
CHECKPOINT = "train_checkpoint.pt"

#: options every protocol sets (the general defaults; each protocol below overrides some)
_GENERAL = dict(lr_min=0.0, momentum=0.9, nesterov=False, grad_clip=0.0, auxiliary_weight=0.0, drop_path_prob=0.0,
                cutout=0, label_smoothing=0.0, no_wd_bn_bias=False, lr_schedule="cosine", warmup_epochs=0)
DARTS_TRAIN_DEFAULTS = dict(_GENERAL, epochs=600, batch_size=96, lr=0.025, weight_decay=3e-4, grad_clip=5.0,
                            auxiliary_weight=0.4, drop_path_prob=0.2, cutout=16)
NB201_TRAIN_DEFAULTS = dict(_GENERAL, epochs=200, batch_size=256, lr=0.1, nesterov=True, weight_decay=5e-4)
SPOS_TRAIN_DEFAULTS = dict(_GENERAL, epochs=240, batch_size=1024, lr=0.5, weight_decay=4e-5, label_smoothing=0.1,
                           no_wd_bn_bias=True, lr_schedule="linear")
MACRO_TRAIN_DEFAULTS = dict(_GENERAL, epochs=50, batch_size=256, lr=0.1, weight_decay=5e-4)
#: the protocol of each single-path space (others: SPOS's)
PATH_PROTOCOLS = {"spos-shufflenetv2": ("spos", SPOS_TRAIN_DEFAULTS),
                  "greedynas-mobilenetv2": ("spos", SPOS_TRAIN_DEFAULTS),
                  "nasbench-macro": ("nasbench-macro", MACRO_TRAIN_DEFAULTS),
                  "nas-bench-201-path": ("nas-bench-201", NB201_TRAIN_DEFAULTS)}


def path_protocol(space_name: str) -> tuple[str, dict]:
    """``(name, defaults)`` of the retraining protocol for a single-path space."""
    return PATH_PROTOCOLS.get(space_name, ("spos", SPOS_TRAIN_DEFAULTS))


# -- pieces ------------------------------------------------------------------------------------------------
def lr_at(step: int, *, lr: float, lr_min: float, epochs: int, steps_per_epoch: int, schedule: str = "cosine",
          warmup_epochs: int = 0) -> float:
    """The learning rate of (0-based) iteration ``step`` of a run of ``epochs x steps_per_epoch`` iterations."""
    warmup = warmup_epochs * steps_per_epoch
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "cosine":
        epoch = step // steps_per_epoch - warmup_epochs
        span = epochs - warmup_epochs
        return lr_min + (lr - lr_min) * (1.0 + math.cos(math.pi * epoch / span)) / 2.0
    if schedule == "linear":
        span = (epochs - warmup_epochs) * steps_per_epoch
        return lr_min + (lr - lr_min) * max(0.0, 1.0 - (step - warmup + 1) / span)
    raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {schedule!r}")


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def parameter_groups(network: nn.Module, *, weight_decay: float, no_wd_bn_bias: bool = False) -> List[dict]:
    """Optimizer groups: all trainable parameters with ``weight_decay``, or, with ``no_wd_bn_bias``, those of
    normalisation layers (BN, GN, LN weights and biases) and every bias in a second group with weight decay 0."""
    params = [(name, p) for name, p in network.named_parameters() if p.requires_grad]
    if not no_wd_bn_bias:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    exempt = {id(p) for m in network.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    decay = [p for name, p in params if id(p) not in exempt and not name.endswith("bias")]
    no_decay = [p for name, p in params if id(p) in exempt or name.endswith("bias")]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _autocast(device: torch.device, amp: str):
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def evaluate(network: nn.Module, loader: Any, *, amp: str = "none") -> dict:
    """Loss and accuracy (%) on ``loader``; under torchrun the sums are over every rank's shard."""
    network.eval()
    correct = count = 0
    loss_sum = 0.0
    for x, y in loader:
        with _autocast(x.device, amp):
            out = network(x)
            logits = out[0] if isinstance(out, tuple) else out
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        count += y.shape[0]
    loss_sum, correct, count = _sum_over_ranks(loss_sum, correct, count)
    return {"loss": loss_sum / max(count, 1), "accuracy": 100.0 * correct / max(count, 1), "count": count}


def _sum_over_ranks(loss_sum: float, correct: int, count: int) -> tuple[float, int, int]:
    if distributed.world()[1] == 1:
        return loss_sum, correct, count
    total = distributed.all_reduce_sum(torch.tensor([loss_sum, correct, count], dtype=torch.float64)).tolist()
    return total[0], int(round(total[1])), int(round(total[2]))


def _mix(base: int, rank: int) -> int:
    """A per-rank seed from a seed every rank shares (splitmix64-style)."""
    z = (base + 0x9E3779B97F4A7C15 * (rank + 1)) & (2 ** 64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2 ** 64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2 ** 64 - 1)
    return (z ^ (z >> 31)) & (2 ** 63 - 1)


def _check(epochs, amp, lr_schedule, warmup_epochs, label_smoothing, max_steps_per_epoch, checkpoint_every):
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {list(AMP_DTYPES)}, got {amp!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {lr_schedule!r}")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or not 0 <= warmup_epochs < epochs:
        raise ValueError(f"warmup_epochs must be an int in [0, epochs={epochs}), got {warmup_epochs!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
    if max_steps_per_epoch is not None and (isinstance(max_steps_per_epoch, bool)
                                            or not isinstance(max_steps_per_epoch, int) or max_steps_per_epoch < 1):
        raise ValueError(f"max_steps_per_epoch must be a positive int or None, got {max_steps_per_epoch!r}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be a non-negative int (steps; 0 = epoch ends only), "
                         f"got {checkpoint_every!r}")


def _compile(model: nn.Module, option: Union[bool, str]) -> nn.Module:
    if option is False or option is None:
        return model
    if option is True:
        return torch.compile(model)
    if isinstance(option, str):
        return torch.compile(model, backend=option)
    raise ValueError(f"compile must be true, false or a torch.compile backend name, got {option!r}")


# -- the loop -------------------------------------------------------------------------------------------------
def train_network(
    network: nn.Module,
    *,
    train_loader: Any,
    test_loader: Any,
    out_dir: Path,
    epochs: int,
    lr: float,
    lr_min: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float,
    no_wd_bn_bias: bool = False,
    label_smoothing: float = 0.0,
    lr_schedule: str = "cosine",
    warmup_epochs: int = 0,
    grad_clip: float = 0.0,
    auxiliary_weight: float = 0.0,
    drop_path_prob: float = 0.0,
    amp: str = "none",
    max_steps_per_epoch: Optional[int] = None,
    checkpoint_every: int = 0,
    sync_bn: bool = False,
    compile: Union[bool, str] = False,
    progress: bool = True,
) -> dict:
    """Train ``network`` (on its device) for ``epochs``, evaluating on ``test_loader`` after each; resumes from
    ``out_dir/train_checkpoint.pt`` when it exists. Returns ``history``, ``test_accuracy``, ``train_seconds``
    and the trained ``network`` (the same module, with SyncBatchNorm layers if ``sync_bn`` converted it).

    Under torchrun (an initialised process group of more than one rank) the network is wrapped in
    ``DistributedDataParallel``; ``sync_bn`` converts its batch norms to ``nn.SyncBatchNorm`` first (CUDA
    only: torch's SyncBatchNorm does not run on CPU tensors). ``compile`` (true, or a backend name)
    ``torch.compile``s the training model (the DDP wrapper, so DDP's graph splitting applies); evaluation
    runs the plain module.
    """
    _check(epochs, amp, lr_schedule, warmup_epochs, label_smoothing, max_steps_per_epoch, checkpoint_every)
    out_dir = Path(out_dir)
    rank, world = distributed.world()
    main = rank == 0
    device = next(network.parameters()).device
    if sync_bn and world > 1:
        if device.type == "cpu":
            raise ValueError("sync_bn needs CUDA: torch's SyncBatchNorm does not run on CPU tensors (gloo); "
                             "leave sync_bn off (BN statistics are then per rank and averaged after each step)")
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    optimizer = torch.optim.SGD(parameter_groups(network, weight_decay=weight_decay, no_wd_bn_bias=no_wd_bn_bias),
                                lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(enabled=amp == "fp16")
    steps = len(train_loader) if max_steps_per_epoch is None else min(len(train_loader), max_steps_per_epoch)
    if steps < 1:
        raise ValueError("the training loader yields no batch (fewer images than one global batch?)")
    schedule = dict(lr=lr, lr_min=lr_min, epochs=epochs, steps_per_epoch=steps, schedule=lr_schedule,
                    warmup_epochs=warmup_epochs)
    ckpt = out_dir / CHECKPOINT
    log = MetricsLog(out_dir / "train_metrics.jsonl") if main else None

    epoch, step, seconds, history, partial = 0, 0, 0.0, [], None
    resumed = _resume_exists(ckpt)
    if resumed:
        state = load_checkpoint(ckpt)
        saved_world = int(state.get("world_size", 1))
        if saved_world != world:
            raise ValueError(f"{ckpt} was written by a run of {saved_world} process(es), this one has {world}: "
                             f"the global batch and the per-rank random streams would differ, so resuming would "
                             f"not reproduce the run; relaunch with --nproc_per_node={saved_world}")
        try:
            network.load_state_dict(state["network"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"{ckpt} holds another network or optimizer than this run's (train it in another "
                             f"output dir): {str(err).splitlines()[0]}") from None
        scaler.load_state_dict(state["scaler"])
        train_loader.load_state_dict(state["train_loader"])
        set_rng_state(state["rng_per_rank"][rank] if "rng_per_rank" in state else state["rng"])
        epoch, step, seconds, history = state["epoch"], state["step"], state["seconds"], list(state["history"])
        partial = state.get("partial")
    elif world > 1:
        # Every rank draws alike up to here (same seed); from now on each draws its own dropout/drop-path noise.
        seed = _mix(int(torch.randint(0, 2 ** 62, (1,))), rank)
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)

    model: nn.Module = network
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = None
        if device.type == "cuda":
            device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
        # DDP broadcasts rank 0's parameters and buffers here; buffers are then averaged after each step.
        model = DistributedDataParallel(network, device_ids=device_ids, broadcast_buffers=False)
    model = _compile(model, compile)

    def save(record_partial: Optional[dict]) -> None:
        rng = rng_state()
        per_rank = distributed.all_gather_object(rng) if world > 1 else None
        if main:
            payload = {"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                       "scaler": scaler.state_dict(), "train_loader": train_loader.state_dict(), "rng": rng,
                       "epoch": epoch, "step": step, "seconds": seconds, "history": history,
                       "partial": record_partial, "world_size": world}
            if per_rank is not None:
                payload["rng_per_rank"] = per_rank
            save_checkpoint(ckpt, payload)
        distributed.barrier()

    stop = StopSignals()
    finite = FiniteCheck()
    with stop:
        while epoch < epochs:
            model.train()
            if hasattr(network, "drop_path_prob"):
                network.drop_path_prob = drop_path_prob * epoch / epochs  # DARTS's linear schedule
            done, loss_sum, correct, count = (0, 0.0, 0, 0) if partial is None else \
                (partial["done"], partial["loss_sum"], partial["correct"], partial["count"])
            partial = None
            bar = Progress(steps, prefix=f"train {epoch + 1}/{epochs}", enabled=progress and main)
            start = time.perf_counter()
            if done < steps:
                for x, y in train_loader:
                    current = lr_at(step, **schedule)
                    for group in optimizer.param_groups:
                        group["lr"] = current
                    optimizer.zero_grad(set_to_none=True)
                    with _autocast(x.device, amp):
                        out = model(x)
                        logits, aux = out if isinstance(out, tuple) else (out, None)
                        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
                        if aux is not None and auxiliary_weight > 0:
                            loss = loss + auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=label_smoothing)
                    scaler.scale(loss).backward()  # DDP averages the gradients over ranks here
                    scaler.unscale_(optimizer)
                    if grad_clip > 0:
                        nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    if world > 1 and not sync_bn:
                        distributed.sync_buffers(network)
                    step += 1
                    done += 1
                    loss_value = float(loss.detach())
                    where = f"at epoch {epoch + 1}/{epochs}, step {done}/{steps} (global step {step})"
                    # NaN/Inf in the loss, a gradient, a weight or a BN statistic: stop before anything is saved
                    # (fp16 steps the GradScaler skipped are not errors).
                    finite.step(loss_value, network, scaler=scaler, where=where)
                    loss_sum += loss_value * y.shape[0]
                    correct += int((logits.detach().argmax(1) == y).sum())
                    count += y.shape[0]
                    bar.update(done, samples=count * world, loss=loss_sum / count, acc=100.0 * correct / count)
                    if done >= steps:
                        break
                    sums = {"done": done, "loss_sum": loss_sum, "correct": correct, "count": count}
                    saved = False
                    if checkpoint_every and step % checkpoint_every == 0:
                        seconds += time.perf_counter() - start
                        start = time.perf_counter()
                        save(sums)
                        saved = True
                    signum = stop.should_stop()  # every rank at the same step (a collective under torchrun)
                    if signum:
                        if not saved:
                            seconds += time.perf_counter() - start
                            save(sums)
                        raise Preempted(signum, checkpoint=ckpt, where=where)
            if train_loader.position:
                train_loader.set_epoch(train_loader.epoch + 1)
            seconds += time.perf_counter() - start
            test = evaluate(network, test_loader, amp=amp)
            train_sums = _sum_over_ranks(loss_sum, correct, count)
            epoch += 1
            record = {"epoch": epoch, "lr": lr_at(step - 1, **schedule),
                      "train_loss": train_sums[0] / max(train_sums[2], 1),
                      "train_accuracy": 100.0 * train_sums[1] / max(train_sums[2], 1), "test_loss": test["loss"],
                      "test_accuracy": test["accuracy"], "seconds": seconds}
            finite.state(network, where=f"before writing the checkpoint of epoch {epoch}/{epochs}")
            history.append(record)
            if log is not None:
                log.write("epoch", step, **record)
            save(None)
            signum = stop.should_stop()
            if signum and epoch < epochs:
                raise Preempted(signum, checkpoint=ckpt, where=f"after epoch {epoch}/{epochs} (global step {step})")
    if log is not None:
        log.close()
    return {"history": history, "test_accuracy": history[-1]["test_accuracy"], "train_seconds": seconds,
            "network": network, "resumed": resumed, "world_size": world}


def _resume_exists(ckpt: Path) -> bool:
    """Whether to resume: rank 0 decides; every rank must then see the file."""
    found = distributed.broadcast_object(ckpt.is_file())
    if not found:
        return False
    missing = distributed.all_reduce_sum(float(not ckpt.is_file()))
    if float(missing) > 0:
        raise RuntimeError(f"{ckpt}: rank 0 resumes from this checkpoint but {int(missing)} rank(s) cannot see it; "
                           f"put the output dir on a file system shared by every rank")
    return True
