"""Checkpoint files that survive a kill or a full disk, and the choice of the checkpoint a run resumes from.

`AtomicCheckpointIO` (a Lightning `CheckpointIO` plugin, installed by the pipeline) writes every checkpoint to a
temporary file in the *target directory*, flushes and fsyncs it, renames it over the old file and fsyncs the
directory. A rename within one directory is atomic, so at every moment the path holds either the previous complete
file or the new complete file: a SIGKILL, a power cut or ENOSPC during a save never leaves a truncated `last.ckpt`
or `best.ckpt`, and nothing is written outside the run directory (Lightning's default goes through a temporary
file under `$TMPDIR`, which on another filesystem becomes copy-then-delete).

`resume_candidates` / `pick_resume_checkpoint`: a damaged checkpoint found on resume is set aside as
`<name>.corrupt-<time>` with one log line naming it, and the run resumes from the newest checkpoint that loads.
"""
from __future__ import annotations

import io
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj, path)` that leaves either the old file or the complete new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        buf = io.BytesIO()
        torch.save(obj, buf)  # serialise first: a pickling error touches no file
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == 28:  # ENOSPC
            raise OSError(e.errno, f"no space left on the device to write the checkpoint {path} (the previous file "
                                   f"is intact); free some space and run the same command again to resume") from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with crash-safe writes (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """None if `path` is a checkpoint that `torch.load(weights_only=True)` reads with a `state_dict`; else why not."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "the file is empty (a save was cut short)"
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means the file cannot be resumed from
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        return "it holds no 'state_dict' (not a Lightning checkpoint)"
    return None


def set_aside(path: Path, reason: str) -> Path:
    """Rename a damaged checkpoint to `<name>.corrupt-<time>` (kept for inspection, never resumed from)."""
    new = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, new)
    log.warning(f"checkpoint {path} is damaged ({reason}); set aside as {new.name}")
    return new


def resume_candidates(run_dir: Path) -> list[Path]:
    """The run's checkpoints a run may resume from: last.ckpt, SLURM's hpc_ckpt_*.ckpt and best.ckpt."""
    ck = Path(run_dir) / "checkpoints"
    paths = [ck / "last.ckpt", *Path(run_dir).glob("hpc_ckpt_*.ckpt"), *ck.glob("hpc_ckpt_*.ckpt"), ck / "best.ckpt"]
    return [p for p in paths if p.is_file()]


def _step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))
    except Exception:  # noqa: BLE001
        return -1


def pick_resume_checkpoint(run_dir: Path) -> str | None:
    """The newest loadable checkpoint of the run (by training step, then time); damaged ones are set aside."""
    good = []
    for p in resume_candidates(run_dir):
        problem = checkpoint_problem(p)
        if problem is not None:
            set_aside(p, problem)
            continue
        good.append(p)
    if not good:
        return None
    return str(max(good, key=lambda p: (_step(p), p.stat().st_mtime)))


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes a kill interrupted (`.<name>.tmp-<pid>-<id>` next to their
    target); the targets themselves are intact. Call only while holding the run's lock."""
    found = [p for d in (Path(run_dir), Path(run_dir) / "checkpoints") if d.is_dir() for p in d.glob(".*.tmp-*")]
    for p in found:
        p.unlink(missing_ok=True)
    if found:
        log.warning(f"removed {len(found)} partial checkpoint write(s) left by an interrupted run in {run_dir}")
    return found
