"""How many CPU threads a run uses, on an idle machine and on a busy one.

PyTorch's CPU ops run on an OpenMP pool with one thread per core, and GNU OpenMP's threads *spin* while they wait
for work. When other processes share the cores, spinning threads steal time from the ones doing work: a default
run measured 3.3x slower on a loaded 2-core machine with 2 threads than with 1. Two things fix it:

- `OMP_WAIT_POLICY=PASSIVE` (unless the user set it), set *before torch is imported*, makes waiting threads sleep
  instead of spinning (train.py and eval.py set it on their first line; `passive_openmp()` does the same for other
  entry points that import nothing else first);
- `cpu_threads: auto` (the default) sizes the pool to the cores that are free when the run starts, measured from
  `/proc/stat` over a fifth of a second: all of them on an idle machine, fewer on a busy one, at least 1.
"""
from __future__ import annotations

import os
import time


def passive_openmp() -> None:
    """Waiting OpenMP threads sleep instead of spinning; only effective before torch (libgomp) is loaded."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]), idle


def busy_cores(interval: float = 0.2) -> float | None:
    """How many cores other processes keep busy right now (None where /proc/stat is unavailable)."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(interval)
    b = _cpu_times()
    if b is None or b[0] == a[0]:
        return None
    busy_fraction = 1.0 - (b[1] - a[1]) / (b[0] - a[0])
    return busy_fraction * (os.cpu_count() or 1)


def auto_threads() -> tuple[int, str]:
    """(threads, why): the free cores of this process's CPU set, at least 1."""
    cores = available_cores()
    busy = busy_cores()
    if busy is None:
        return cores, f"{cores} cores"
    free = max(1, min(cores, int(cores - busy + 0.5)))
    return free, f"{cores} cores, {busy:.1f} busy with other work"


def set_cpu_threads(setting) -> str | None:
    """Apply the `cpu_threads` config value (None: torch's default; 'auto'; or a positive integer); returns a line
    for the log, or None when nothing was changed."""
    import torch

    if setting is None:
        return None
    if str(setting) == "auto":
        n, why = auto_threads()
        torch.set_num_threads(n)
        return f"CPU threads: {n} ({why}; set cpu_threads=N to choose)"
    torch.set_num_threads(int(setting))
    return f"CPU threads: {int(setting)}"
