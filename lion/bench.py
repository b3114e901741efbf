"""Timing and peak-memory measurement shared by the benchmark scripts (CPU and CUDA).

Peak memory is the *extra* memory a call allocates beyond what existed before it:
- CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`.
- CPU: PyTorch's own allocations, replayed in order from the profiler's memory events (`profile_memory=True`):
  the highest running total during the call. This is the same quantity as on CUDA (tensor memory the call adds),
  free of the C library's heap caching. `peak_rss_mib` gives the process-level view (peak resident set after
  `malloc_trim`, reset through /proc/self/clear_refs), which also counts allocator slack; Linux only.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import statistics
import tempfile
import time
from typing import Callable

import torch


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device, warmup: int = 2, reps: int = 5) -> float:
    """Median wall time of fn() in milliseconds, after warm-up, synchronising the device around each call."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the duration (what native libraries print there, not Python)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory_mib(fn: Callable[[], object], device) -> float | None:
    """Extra peak tensor memory of one call of fn(), in MiB (None where it cannot be measured)."""
    device = torch.device(device)
    if device.type == "cuda":
        _sync(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return peak / 2**20
    from torch.profiler import ProfilerActivity, profile
    gc.collect()
    with _native_stderr_silenced():  # the profiler's C++ side prints start/stop lines and a GPU probe error there
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
            del out
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        with _native_stderr_silenced():
            prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    mem = sorted((e["ts"], e["args"]["Bytes"]) for e in events
                 if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0)
    current = peak = 0
    for _, nbytes in mem:
        current += nbytes
        peak = max(peak, current)
    return peak / 2**20


def peak_rss_mib(fn: Callable[[], object]) -> float | None:
    """Extra peak resident set of the process during one call of fn(), in MiB (Linux; None elsewhere)."""
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    base = _status_kib("VmRSS")
    out = fn()
    peak = _status_kib("VmHWM")
    del out
    if base is None or peak is None:
        return None
    return max(peak - base, 0) / 1024


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A markdown table; floats with 3 significant digits, None as 'unmeasured'."""
    def fmt(x):
        if x is None:
            return "unmeasured"
        if isinstance(x, float):
            return f"{x:.3g}"
        return str(x)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)
