"""Stand-alone training of a found cell, with the evaluation protocol of its space.

DARTS space (Liu et al., ICLR 2019, Sec. A.1.2): SGD lr 0.025 cosine to 0,
momentum 0.9, weight decay 3e-4, batch 96, 600 epochs, auxiliary head weight
0.4, drop path 0.2 (raised linearly over the epochs), cutout 16, gradient
clipping 5. NAS-Bench-201 (Dong & Yang, ICLR 2020, Sec. 2.3): SGD lr 0.1
cosine, Nesterov momentum 0.9, weight decay 5e-4, batch 256, 200 epochs.
Checkpoints are atomic and carry loaders and random states for exact resume.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .metrics_log import MetricsLog
from .progress import Progress

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

DARTS_TRAIN_DEFAULTS = dict(epochs=600, batch_size=96, lr=0.025, lr_min=0.0, momentum=0.9, nesterov=False,
                            weight_decay=3e-4, grad_clip=5.0, auxiliary_weight=0.4, drop_path_prob=0.2, cutout=16)
NB201_TRAIN_DEFAULTS = dict(epochs=200, batch_size=256, lr=0.1, lr_min=0.0, momentum=0.9, nesterov=True,
                            weight_decay=5e-4, grad_clip=0.0, auxiliary_weight=0.0, drop_path_prob=0.0, cutout=0)


@torch.no_grad()
def evaluate(network: nn.Module, loader: Any, *, amp: str = "none") -> dict:
    network.eval()
    correct = count = 0
    loss_sum = 0.0
    criterion = nn.CrossEntropyLoss(reduction="sum")
    for x, y in loader:
        with _autocast(x.device, amp):
            out = network(x)
            logits = out[0] if isinstance(out, tuple) else out
        loss_sum += float(criterion(logits.float(), y))
        correct += int((logits.argmax(1) == y).sum())
        count += y.shape[0]
    return {"loss": loss_sum / max(count, 1), "accuracy": 100.0 * correct / max(count, 1)}


def _autocast(device: torch.device, amp: str):
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


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
    grad_clip: float = 0.0,
    auxiliary_weight: float = 0.0,
    drop_path_prob: float = 0.0,
    amp: str = "none",
    max_steps_per_epoch: Optional[int] = None,
    progress: bool = True,
) -> dict:
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {list(AMP_DTYPES)}, got {amp!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    out_dir = Path(out_dir)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum, nesterov=nesterov,
                                weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=lr_min)
    scaler = torch.amp.GradScaler(enabled=amp == "fp16")
    criterion = nn.CrossEntropyLoss()
    log = MetricsLog(out_dir / "train_metrics.jsonl")
    ckpt = out_dir / "train_checkpoint.pt"
    epoch, step, seconds, history = 0, 0, 0.0, []
    if ckpt.is_file():
        state = load_checkpoint(ckpt)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        train_loader.load_state_dict(state["train_loader"])
        set_rng_state(state["rng"])
        epoch, step, seconds, history = state["epoch"], state["step"], state["seconds"], state["history"]
    steps = len(train_loader) if max_steps_per_epoch is None else min(len(train_loader), max_steps_per_epoch)
    while epoch < epochs:
        network.train()
        if hasattr(network, "drop_path_prob"):
            network.drop_path_prob = drop_path_prob * epoch / epochs  # DARTS's linear schedule
        bar = Progress(steps, prefix=f"train {epoch + 1}/{epochs}", enabled=progress)
        start = time.perf_counter()
        done = correct = count = 0
        loss_sum = 0.0
        for x, y in train_loader:
            optimizer.zero_grad(set_to_none=True)
            with _autocast(x.device, amp):
                out = network(x)
                logits, aux = out if isinstance(out, tuple) else (out, None)
                loss = criterion(logits, y)
                if aux is not None and auxiliary_weight > 0:
                    loss = loss + auxiliary_weight * criterion(aux, y)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            done += 1
            loss_sum += float(loss.detach()) * y.shape[0]
            correct += int((logits.detach().argmax(1) == y).sum())
            count += y.shape[0]
            bar.update(done, samples=count, loss=loss_sum / count, acc=100.0 * correct / count)
            if done >= steps:
                break
        if train_loader.position:
            train_loader.set_epoch(train_loader.epoch + 1)
        scheduler.step()
        seconds += time.perf_counter() - start
        test = evaluate(network, test_loader, amp=amp)
        epoch += 1
        record = {"epoch": epoch, "train_loss": loss_sum / max(count, 1),
                  "train_accuracy": 100.0 * correct / max(count, 1), "test_loss": test["loss"],
                  "test_accuracy": test["accuracy"], "seconds": seconds}
        history.append(record)
        log.write("epoch", step, **record)
        save_checkpoint(ckpt, {"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                               "train_loader": train_loader.state_dict(), "rng": rng_state(), "epoch": epoch,
                               "step": step, "seconds": seconds, "history": history})
    log.close()
    return {"history": history, "test_accuracy": history[-1]["test_accuracy"], "train_seconds": seconds}
