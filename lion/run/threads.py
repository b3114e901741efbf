"""How many CPU threads a run uses (`cpu_threads`).

PyTorch's CPU ops run on an OpenMP pool with one thread per core, and its threads *spin* while they wait for work.
On a machine whose cores are shared, spinning threads steal time from the ones doing work. Measured on the 2-core
x86_64 build machine with the default `python train.py` (tiny LION-S ViT, MNIST-5k, 15 epochs), wall time each:

| setting | one run alone (idle machine) | two runs at once |
|---|---|---|
| 2 threads (torch's default) | 64 s | 287 s |
| 2 threads, OMP_WAIT_POLICY=PASSIVE | 141 s | 102 s |
| 2 threads, GOMP_SPINCOUNT=10000 | 66 s | 648 s |
| 1 thread (the default, `cpu_threads: 1`) | 82 s | 81 s |

So the default is one thread per run: about a quarter slower than two spinning threads on an idle machine, and
unaffected by other work (the 2-thread default took 3.5x longer with a second run beside it). One thread is also
deterministic: a run resumed on another day computes the same reductions. `cpu_threads=auto` takes the cores that
are free when the run starts (all of them on an idle machine: the fastest single run); an integer fixes the count;
null leaves torch's default.
"""
from __future__ import annotations

import os
import time


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
