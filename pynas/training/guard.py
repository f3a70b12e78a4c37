"""Stopping a long run cleanly: on preemption (SIGTERM, SIGINT) and on non-finite values.

Preemption
----------
:class:`StopSignals` is a context manager. While it is active, SIGTERM and
SIGINT only *record* the signal; the training loop asks
:meth:`StopSignals.should_stop` at each step boundary, writes its usual
exact-resume checkpoint and raises :class:`Preempted`, which the CLI turns
into one line on stderr and the conventional exit status ``128 + signal``
(143 for SIGTERM, 130 for SIGINT). A step is never interrupted half-way, and
further signals while the checkpoint is written are recorded, not raised
(no ``KeyboardInterrupt`` inside ``torch.save``). The previous handlers come
back when the context exits, so library callers keep their own. Only the
main thread may install signal handlers: entered from another thread the
context installs nothing (a debug note says so) and :meth:`StopSignals.request`
is the way to stop. A signal the process inherited as ignored (``nohup``,
background jobs of a non-interactive shell) stays ignored.

Under ``torchrun`` every rank must stop at the same step: :meth:`should_stop`
all-reduces (max) the recorded signal over the ranks when there are several,
so it is a collective: call it at the same step boundaries on every rank.

Non-finite values
-----------------
:meth:`FiniteCheck.step` after every optimiser step, and
:meth:`FiniteCheck.state` before every checkpoint (or the one-off
:func:`check_step`, :func:`check_state`), raise :class:`NonFiniteError` (a
``FloatingPointError``) naming where and what: the training loss, a
gradient, a weight, an architecture parameter (alphas, betas) or a
batch-norm running statistic. The fast path is one fused
``torch._foreach_norm`` (max-norm, which overflows for no finite value) per
(device, dtype) over tensors collected once per model, and one
device-to-host copy per step; only when something is wrong are the tensors
scanned one by one to name them. A loop that raises before its save never overwrites the
last good checkpoint with non-finite weights.

fp16 loss scaling: a step whose loss or gradients are non-finite while a
``GradScaler`` is enabled is the scaler's business (it skipped the update
and lowered its scale), not an error; weights, architecture parameters and
statistics are still checked, as a skipped update leaves them finite and
anything else would be a real divergence (:func:`classify` is the rule).
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
import weakref
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from . import distributed

__all__ = ["StopSignals", "Preempted", "NonFiniteError", "FiniteCheck", "check_step", "check_state", "classify",
           "exit_code", "signal_name"]

log = logging.getLogger(__name__)

#: the signals a run stops on by default
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int) -> int:
    """The shell's convention for a process stopped by ``signum``: 128 + its number."""
    return 128 + int(signum)


# -- preemption ------------------------------------------------------------------------------------
class Preempted(Exception):
    """The run stopped on a signal after writing its checkpoint; rerunning the same command resumes it.

    ``exit_code`` is ``128 + signum``; ``checkpoint`` the file that resumes
    it (None when nothing had been saved yet).
    """

    def __init__(self, signum: int, *, checkpoint: Optional[Path], where: str, written: bool = True):
        self.signum = int(signum)
        self.exit_code = exit_code(signum)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.where = where
        self.written = written
        name = signal_name(signum)
        if written:
            what = f"checkpoint written to {self.checkpoint} {where}"
        elif self.checkpoint is not None:
            what = f"stopped {where}, nothing new to save (the last checkpoint, {self.checkpoint}, is current)"
        else:
            what = f"stopped {where}, nothing saved yet"
        super().__init__(f"{name} received: {what}; rerun the same command to resume")


class StopSignals:
    """Records SIGTERM/SIGINT while active instead of letting them kill the process (see the module docs).

    Re-entrant: a nested ``with`` on the same object is a no-op, so a
    command can hold one for its whole run and hand it to the loops it
    calls.
    """

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS):
        self.signals = tuple(int(s) for s in signals)
        self.received: Optional[int] = None  # the first signal
        self.count = 0  # how many arrived
        self.installed: Tuple[int, ...] = ()
        self._previous: Dict[int, object] = {}
        self._depth = 0

    # context ---------------------------------------------------------------------------------------
    def __enter__(self) -> "StopSignals":
        self._depth += 1
        if self._depth == 1:
            self._install()
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._restore()

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.debug("pynas: not in the main thread, so no SIGTERM/SIGINT handlers (Python allows them in the "
                      "main thread only); the run stops on StopSignals.request() only")
            return
        installed = []
        for signum in self.signals:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue  # inherited as ignored (nohup, a background job): keep it that way
            signal.signal(signum, self._handle)
            self._previous[signum] = previous
            installed.append(signum)
        self.installed = tuple(installed)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            # getsignal() gives None for a handler not set from Python; the default is the closest we can restore.
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        self.installed = ()

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum
            return
        # A repeated signal (a second Ctrl-C, a relayed SIGTERM): say we are on it. os.write, not print:
        # a handler that writes to sys.stderr while the interrupted code is writing there raises.
        try:
            os.write(2, f"pynas: {signal_name(signum)} received again: still finishing the current step and its "
                        f"checkpoint\n".encode())
        except OSError:
            pass

    # queries ---------------------------------------------------------------------------------------
    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask the run to stop as if ``signum`` had arrived (from any thread, or a test)."""
        self.count += 1
        if self.received is None:
            self.received = int(signum)

    def should_stop(self) -> int:
        """0 to go on, else the signal number to stop for.

        With several ranks (torchrun) this is a collective (an all-reduce max of
        the recorded signal numbers): every rank must call it at the same step
        boundary, and every rank gets the same answer, so they all stop
        together (a rank that got no signal stops for its peers' one).
        """
        local = int(self.received or 0)
        if distributed.world()[1] == 1:
            return local
        import torch.distributed as dist

        flag = torch.tensor([local], dtype=torch.int64, device=distributed._comm_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        agreed = int(flag.item())
        if agreed and self.received is None:
            self.received = agreed  # this rank stops for another's signal
        return agreed


# -- non-finite values -----------------------------------------------------------------------------
class NonFiniteError(FloatingPointError):
    """A NaN or Inf in the loss, a gradient, a weight, an architecture parameter or a statistic.

    ``where`` says when (epoch and step), ``what`` lists the first offenders.
    """

    def __init__(self, what: Sequence[str], *, where: str, note: str = ""):
        self.what = list(what)
        self.where = where
        shown = ", ".join(self.what[:3]) + (f" and {len(self.what) - 3} more" if len(self.what) > 3 else "")
        super().__init__(f"non-finite values {where}: {shown}" + (f"; {note}" if note else ""))


OK, AMP_SKIP, NONFINITE = "ok", "amp-skip", "non-finite"


def classify(*, loss_finite: bool, grads_finite: bool, state_finite: bool, scaler_enabled: bool) -> str:
    """The rule of the guard: ``"ok"``, ``"amp-skip"`` (tolerated) or ``"non-finite"`` (stop).

    The state (weights, architecture parameters, statistics) must always be
    finite. A non-finite loss or gradient stops the run, unless an enabled
    GradScaler saw it: the scaler inspects these gradients and skips the
    update when any is non-finite (then lowers its scale), so the step did
    not happen; a non-finite loss with finite gradients was not skipped,
    hence is an error either way.
    """
    if not state_finite:
        return NONFINITE
    if loss_finite and grads_finite:
        return OK
    if scaler_enabled and not grads_finite:
        return AMP_SKIP
    return NONFINITE


def _scaler_enabled(scaler) -> bool:
    if scaler is None:
        return False
    scalers = scaler if isinstance(scaler, (list, tuple)) else [scaler]
    return any(s is not None and s.is_enabled() for s in scalers)


def _maxima(*lists: List[Tensor]) -> List[float]:
    """max |x| over each list of tensors (NaN if one holds a NaN, inf if one an inf; 0 for an empty list).

    One fused max-norm per (device, dtype) and one device-to-host copy per device for all the lists.
    """
    per_device: Dict[torch.device, List[List[Tensor]]] = {}
    for index, tensors in enumerate(lists):
        groups: Dict[Tuple[torch.device, torch.dtype], List[Tensor]] = {}
        for t in tensors:
            groups.setdefault((t.device, t.dtype), []).append(t)
        for (device, _), group in groups.items():
            try:
                norms = torch._foreach_norm(group, math.inf)
            except (RuntimeError, TypeError, NotImplementedError):  # a layout _foreach_norm does not take
                norms = [torch.linalg.vector_norm(t, math.inf) for t in group]
            slots = per_device.setdefault(device, [[] for _ in lists])
            slots[index].append(torch.stack([n.float() for n in norms]).max())
    out = torch.zeros(len(lists), dtype=torch.float32)
    for device, slots in per_device.items():
        values = torch.stack([torch.stack(v).max() if v else torch.zeros((), device=device) for v in slots]).cpu()
        out = torch.maximum(out, values)  # NaN wins
    return out.tolist()


def _arch_ids(model: Optional[nn.Module], arch: Optional[Iterable[Tensor]]) -> set:
    if arch is None:
        arch = model.arch_parameters() if model is not None and hasattr(model, "arch_parameters") else ()
    return {id(t) for t in arch}


def _named_state(model: Optional[nn.Module], extra: Optional[Mapping[str, Tensor]],
                 arch: Optional[Iterable[Tensor]]):
    """``(label, name, tensor, parameter-or-None)`` of every floating parameter, buffer and extra tensor."""
    arch_ids = _arch_ids(model, arch)
    seen = set()
    out = []
    if model is not None:
        for name, p in model.named_parameters():
            if id(p) in seen or not p.is_floating_point():
                continue
            seen.add(id(p))
            kind = "architecture parameter" if id(p) in arch_ids else "weight"
            out.append((f"{kind} {name}", name, p.detach(), p))
        for name, b in model.named_buffers():
            if id(b) in seen or not b.is_floating_point():
                continue
            seen.add(id(b))
            kind = "batch-norm statistic" if "running_" in name else "buffer"
            out.append((f"{kind} {name}", name, b, None))
    for name, t in (extra or {}).items():
        if id(t) in seen or not t.is_floating_point():
            continue
        seen.add(id(t))
        out.append((f"architecture parameter {name}", name, t.detach(), t if t.requires_grad else None))
    return out


def _gradients(items) -> List[Tuple[str, Tensor]]:
    return [(f"gradient of {name}", p.grad.detach()) for _, name, _, p in items
            if p is not None and p.grad is not None and p.grad.is_floating_point() and not p.grad.is_sparse]


def _offenders(pairs) -> List[str]:
    return [label for label, t in pairs if not bool(torch.isfinite(t).all())]


def _agree(bad: bool) -> Tuple[bool, bool]:
    """(bad anywhere, bad here): with several ranks the verdict is all-reduced (a collective)."""
    if distributed.world()[1] == 1:
        return bad, bad
    import torch.distributed as dist

    flag = torch.tensor([int(bad)], dtype=torch.int64, device=distributed._comm_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item()), bad


def _across_ranks(what: List[str]) -> List[str]:
    """This rank's offenders; with several ranks (all of them on this error path) every rank's, so that
    rank 0, the one that reports, names what another rank found."""
    if distributed.world()[1] == 1:
        return what
    gathered = distributed.all_gather_object(what)
    if all(g == gathered[0] for g in gathered):
        return what
    return [f"{item} (rank {rank})" for rank, items in enumerate(gathered) for item in items]


def _loss_value(loss: Union[Tensor, float, None]) -> float:
    if loss is None:
        return 0.0
    if isinstance(loss, Tensor):
        return float(loss.detach().float().abs().max()) if loss.numel() else 0.0
    return float(loss)


class FiniteCheck:
    """The non-finite checks of one training loop, with the model's tensors collected once.

    Walking a supernet's module tree is the expensive part (about 20 ms for
    DARTS's 4,600 modules, more than the check itself), so the parameters
    and floating buffers of ``model`` are collected on first use and again
    only when a different model object is passed (FTSO's stages, few-shot
    NAS's split replace the supernet) or after :meth:`reset` (call it if
    a module was changed in place: new submodules, buffers re-assigned by
    ``.to()`` to another device). ``extra`` tensors are taken afresh on every
    call.
    """

    def __init__(self):
        self._model_ref = None
        self._arch_key = None
        self._items: list = []

    def reset(self) -> None:
        self._model_ref = None
        self._items = []

    def _collect(self, model: Optional[nn.Module], extra: Optional[Mapping[str, Tensor]],
                 arch: Optional[Iterable[Tensor]]) -> list:
        if model is None:
            base = []
        else:
            arch = list(arch) if arch is not None else None
            key = None if arch is None else tuple(id(t) for t in arch)
            if self._model_ref is None or self._model_ref() is not model or key != self._arch_key:
                self._items = _named_state(model, None, arch)
                self._model_ref = weakref.ref(model)
                self._arch_key = key
            base = self._items
        if not extra:
            return base
        known = {id(t) for _, _, t, _ in base} | {id(p) for _, _, _, p in base if p is not None}
        return base + [item for item in _named_state(None, extra, ()) if id(item[2]) not in known
                       and id(item[3]) not in known]

    def step(self, loss: Union[Tensor, float, None], model: Optional[nn.Module], *,
             extra: Optional[Mapping[str, Tensor]] = None, arch: Optional[Iterable[Tensor]] = None,
             scaler=None, where: str = "") -> str:
        """Check one finished optimiser step; raise :class:`NonFiniteError` if it left anything non-finite.

        ``loss``: the step's training loss (pass the Python float the loop
        reads anyway, to add no sync; a tensor works too). ``model``: its
        parameters, their gradients and its floating buffers (batch-norm
        running statistics) are checked. ``extra``: more named tensors
        (architecture parameters kept outside the model, e.g. DSNAS's
        alphas). ``arch``: which of the model's parameters to call
        architecture parameters in messages (default:
        ``model.arch_parameters()`` when it has one). ``scaler``: the run's
        ``GradScaler`` (or a list); when enabled, a non-finite loss or
        gradient is an fp16 skipped step (:func:`classify`). ``where``: e.g.
        ``"at epoch 2/5, step 17/100"``.

        Returns ``"ok"`` or ``"amp-skip"``. Under torchrun this is a
        collective (the verdict is agreed), so call it on every rank after
        every step.
        """
        loss_value = _loss_value(loss)
        items = self._collect(model, extra, arch)
        grads = _gradients(items)
        grad_max, state_max = _maxima([g for _, g in grads], [t for _, _, t, _ in items])
        loss_finite, grads_finite, state_finite = map(math.isfinite, (loss_value, grad_max, state_max))
        verdict = classify(loss_finite=loss_finite, grads_finite=grads_finite, state_finite=state_finite,
                           scaler_enabled=_scaler_enabled(scaler))
        anywhere, here = _agree(verdict == NONFINITE)
        if not anywhere:
            return verdict
        what = []
        if here:
            what = [] if loss_finite else [f"training loss ({loss_value})"]
            what += _offenders(grads) if not grads_finite else []
            what += _offenders([(label, t) for label, _, t, _ in items]) if not state_finite else []
        raise NonFiniteError(_across_ranks(what), where=where)

    def state(self, model: Optional[nn.Module], *, extra: Optional[Mapping[str, Tensor]] = None,
              arch: Optional[Iterable[Tensor]] = None, where: str = "") -> None:
        """Raise :class:`NonFiniteError` if a parameter, floating buffer or ``extra`` tensor is non-finite.

        Call it before writing a checkpoint, so a non-finite state never
        replaces the last good one. A collective under torchrun, as
        :meth:`step`.
        """
        items = self._collect(model, extra, arch)
        bad = not math.isfinite(_maxima([t for _, _, t, _ in items])[0])
        anywhere, here = _agree(bad)
        if not anywhere:
            return
        what = _offenders([(label, t) for label, _, t, _ in items]) if here else []
        raise NonFiniteError(_across_ranks(what), where=where)


def check_step(loss: Union[Tensor, float, None], model: Optional[nn.Module], **kwargs) -> str:
    """:meth:`FiniteCheck.step` without the cache (one-off checks; loops should keep a :class:`FiniteCheck`)."""
    return FiniteCheck().step(loss, model, **kwargs)


def check_state(model: Optional[nn.Module], **kwargs) -> None:
    """:meth:`FiniteCheck.state` without the cache."""
    FiniteCheck().state(model, **kwargs)
