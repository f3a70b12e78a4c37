"""Run metrics as JSON lines (always) and TensorBoard scalars (when installed)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: Path, *, tensorboard_dir: Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._tb = None
            else:
                self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, event: str, step: int, **values: Any) -> None:
        record = {"event": event, "step": step, "time": time.time(), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_plain) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{event}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
