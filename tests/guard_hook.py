"""Test hook: ``python tests/guard_hook.py <pynas CLI arguments>`` runs the CLI with one event injected.

Used by tests/test_preemption.py and tests/test_nonfinite.py only; the
library has no test hooks. ``PYNAS_TEST_HOOK`` (JSON) says what and when:

* ``{"signal": "SIGTERM", "step": N}``: the process sends itself the signal
  at the start of global training step N (before its update; the step must
  still run to its end, and the run stop right after it);
* ``{"signal": ..., "generation": G}``: the same at the start of search
  generation G (single-path runs' search phase);
* ``"again_in_save": true`` with either: one more of the same signal in the
  middle of every checkpoint write that follows (between ``torch.save`` and
  ``fsync``), as an impatient second Ctrl-C would;
* ``{"nan": "weight", "step": N}``: after global step N, one weight of the
  supernet becomes NaN (a divergence, without an absurd configuration).

Without ``PYNAS_TEST_HOOK`` this is exactly ``python -m pynas.cli``.
"""
from __future__ import annotations

import json
import os
import signal
import sys


def _install(hook: dict) -> None:
    import pynas.commands.path_search as path_search
    import pynas.commands.search as search
    import pynas.search as strategies

    sig = getattr(signal, hook["signal"]) if "signal" in hook else None
    sent = {"n": 0}

    def send() -> None:
        sent["n"] += 1
        os.kill(os.getpid(), sig)

    def with_step_hook(create):
        def create_hooked(*args, **kwargs):
            algo = create(*args, **kwargs)
            step = algo.step

            def hooked(*a):
                if sig is not None and "step" in hook and algo.global_step + 1 == hook["step"]:
                    send()
                out = step(*a)
                if hook.get("nan") == "weight" and algo.global_step == hook["step"]:
                    with __import__("torch").no_grad():
                        next(iter(algo.supernet.weight_parameters())).view(-1)[0] = float("nan")
                return out

            algo.step = hooked
            return algo
        return create_hooked

    search.create_algorithm = with_step_hook(search.create_algorithm)
    path_search.create_algorithm = with_step_hook(path_search.create_algorithm)

    if sig is not None and "generation" in hook:
        create_strategy = strategies.create_strategy

        def create_strategy_hooked(*args, **kwargs):
            strategy = create_strategy(*args, **kwargs)
            step = strategy.step

            def hooked():
                if strategy.generation == hook["generation"]:  # the generation this step() runs
                    send()
                return step()

            strategy.step = hooked
            return strategy

        strategies.create_strategy = create_strategy_hooked

    if hook.get("again_in_save"):
        fsync = os.fsync

        def fsync_hooked(fd):
            if sent["n"]:  # only once the first signal is in: a second one during the stop's checkpoint write
                send()
            return fsync(fd)

        os.fsync = fsync_hooked


if __name__ == "__main__":
    raw = os.environ.get("PYNAS_TEST_HOOK")
    if raw:
        _install(json.loads(raw))
    from pynas.cli import main

    sys.exit(main(sys.argv[1:]))
