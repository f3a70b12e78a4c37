"""A dependency-free progress line: position, loss, accuracy and throughput."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    def __init__(self, total: int, *, prefix: str = "", stream: Optional[TextIO] = None, enabled: bool = True,
                 min_interval: float = 0.5):
        self.total = max(int(total), 1)
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.min_interval = min_interval
        self.start = time.perf_counter()
        self._last = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, done: int, *, samples: int, **fields: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self._last < self.min_interval:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        width = 20
        filled = int(width * min(done, self.total) / self.total)
        bar = "#" * filled + "." * (width - filled)
        parts = " ".join(f"{k} {v:.4g}" for k, v in fields.items())
        line = f"{self.prefix} [{bar}] {done}/{self.total} {parts} {samples / elapsed:.1f} img/s"
        end = "\n" if done >= self.total or not self._tty else ""
        self.stream.write(("\r" if self._tty else "") + line + end)
        self.stream.flush()
