"""Where benchmark results go: one JSON list per device under bench/results/."""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch

# The checkout pynas is imported from (pynas/perf/results.py -> repository root).
_ROOT = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device) -> str:
    """Human-readable name: the GPU's, or the CPU model and its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_model()} ({cores} cores)"


def safe_filename(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"NVIDIA-H100-80GB-HBM3"``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "device"


def git_commit() -> str:
    """Short commit of the checkout pynas runs from, ``+dirty`` when its code differs from that
    commit (results files aside), or ``"unknown"``."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_ROOT, capture_output=True,
                             text=True, timeout=10)
        if out.returncode != 0 or not out.stdout.strip():
            return "unknown"
        changed = subprocess.run(["git", "status", "--porcelain", "--", "pynas", "csrc", "bench", "setup.py",
                                  ":(exclude)bench/results"], cwd=_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("+dirty" if changed.returncode == 0 and changed.stdout.strip() else "")


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def append_records(results_dir: str | os.PathLike, device: str, records: list[dict]) -> Path:
    """Append ``records`` to ``<results_dir>/<device>.json`` (a JSON list); returns the path.

    Written to a temporary file and renamed over the old one, so an
    interrupted run never leaves a truncated file behind.
    """
    directory = Path(results_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{safe_filename(device)}.json"
    existing = []
    if path.exists():
        existing = json.loads(path.read_text() or "[]")
        if not isinstance(existing, list):
            raise ValueError(f"{path} does not hold a JSON list; move it away and run again")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=path.name, suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would follow the file into the checkout
        with os.fdopen(fd, "w") as f:
            json.dump(existing + records, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def report(table: str, notes: list[str], results_dir: str | os.PathLike, device: str, records: list[dict]) -> None:
    """Print a benchmark's table and notes, then append its records (the tail every benchmark shares)."""
    print()
    print(table)
    for note in notes:
        print(f"note: {note}")
    if records:
        path = append_records(results_dir, device, records)
        print(f"appended {len(records)} records to {path}")


def verdict(targets: list, notes: list[str], *, check_targets: bool, info: list[str] = ()) -> int:
    """Print each target line (then any info lines) and the count of failed measurements (the ERROR
    notes); return the exit code: 1 when ``check_targets`` and a target or a measurement failed."""
    for line, _ in targets:
        print(line)
    for line in info:
        print(line)
    errors = sum(note.startswith("ERROR") for note in notes)
    if errors:
        print(f"{errors} measurement(s) failed, see the ERROR notes above")
    return 1 if check_targets and (errors or not all(ok for _, ok in targets)) else 0
