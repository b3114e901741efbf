"""The run directory (docs/DESIGN.md, "Run directory"): where a run lives, how it resumes, what it leaves.

    ${paths.log_dir}/runs/${run_id}/
        config.yaml              resolved config of the run
        checkpoints/last.ckpt    written every `callbacks.last_checkpoint.every_n_train_steps` steps and each epoch
        checkpoints/best.ckpt    best by the task's monitored metric (val/acc for classification)
        csv/metrics.csv          CSVLogger
        wandb/, wandb_id.txt     with logger=wandb: the wandb run id, reused on resume
        metrics.json             written when the run finishes
        .lock                    held (flock) by the process training this run; a second one stops at once

`run_id` is a plain name (letters, digits and `._+=,@-`, no path separators, no `..`), so a run directory is
always a direct child of `${paths.log_dir}/runs`.

`run_id` is `${experiment_name}-s${seed}` (plus a short hash of the overrides inside a multirun sweep, so the jobs
of a sweep do not share a directory): the same command finds the same directory and resumes from `last.ckpt`.
Importing this module registers the OmegaConf resolvers the configs use.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def _sweep_suffix() -> str:
    """'' for a single run (or outside Hydra); '-<8 hex>' of the job's overrides inside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return ""
    overrides = hc.job.override_dirname
    return "-" + hashlib.sha1(str(overrides).encode()).hexdigest()[:8] if overrides else ""


def _slug(value: Any) -> str:
    """'lion-d-ms' -> 'lion_d_ms': names for run ids and files."""
    return str(value).replace("-", "_").replace("/", "_").replace(" ", "_")


RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,@-]{0,199}")


def check_run_id(run_id: Any) -> str:
    """`run_id` as a directory name: a plain name, never a path (raises ConfigError naming what is allowed)."""
    from lion.run.checks import ConfigError

    name = str(run_id)
    if not RUN_ID_RE.fullmatch(name) or ".." in name:
        raise ConfigError(f"run_id={name!r} is not a plain name; use letters, digits and . _ + = , @ - only (no '/', "
                          f"no '..', at most 200 characters), e.g. run_id=my_run-s0")
    return name


def _eval_dir(ckpt_path: Any, log_dir: Any) -> str:
    """Where eval.py runs and writes: `<run>/eval/` of the checkpoint's run directory (`<run>/checkpoints/x.ckpt`),
    else `<log_dir>/eval` (a checkpoint from elsewhere)."""
    if ckpt_path:
        run_dir = Path(str(ckpt_path)).expanduser().parent.parent
        if (run_dir / "config.yaml").is_file():
            return str(run_dir / "eval")
    return str(Path(str(log_dir)) / "eval")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("lion.eval_dir"):
        OmegaConf.register_new_resolver("lion.eval_dir", _eval_dir)
    if not OmegaConf.has_resolver("lion.run_name"):
        OmegaConf.register_new_resolver("lion.run_name", check_run_id)
    if not OmegaConf.has_resolver("lion.sweep_suffix"):
        OmegaConf.register_new_resolver("lion.sweep_suffix", _sweep_suffix)
    if not OmegaConf.has_resolver("lion.slug"):
        OmegaConf.register_new_resolver("lion.slug", _slug)


register_resolvers()


def atomic_write_text(path: Path, text: str) -> None:
    """Write text via a temporary name and rename (lion.data.common.atomic_write_bytes)."""
    from lion.data.common import atomic_write_bytes

    atomic_write_bytes(Path(path), text.encode())


def load_run_config(path: Path) -> DictConfig:
    """A run directory's `config.yaml`; a damaged one stops with one line naming it (never a parser traceback)."""
    from lion.run.checks import RunError

    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - YAML or encoding errors of a damaged file
        raise RunError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                       f"restore it, or start the run over with resume=false") from None
    if not isinstance(cfg, DictConfig):
        raise RunError(f"{path} holds no config mapping; restore it, or start the run over with resume=false")
    return cfg


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config as `config.yaml` (the Hydra run-time node `hydra` is not part of it)."""
    atomic_write_text(Path(run_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint to start from: `ckpt_path` if given (it must load), else (when `resume` is true) the newest
    loadable one of the run's `checkpoints/last.ckpt`, the `hpc_ckpt_*.ckpt` Lightning writes when SLURM signals a
    pre-emption, and `best.ckpt`. A damaged one is set aside as `<name>.corrupt-<time>` with one log line."""
    from lion.run.checkpoint import checkpoint_problem, pick_resume_checkpoint
    from lion.run.checks import RunError

    given = cfg.get("ckpt_path")
    if given:
        problem = checkpoint_problem(given) if Path(given).is_file() else "no such file"
        if problem is not None:
            raise RunError(f"ckpt_path={str(given)!r} cannot be loaded ({problem}); give another checkpoint, or drop "
                           f"ckpt_path to resume from the run's own checkpoints")
        return str(given)
    if not cfg.get("resume", True):
        return None
    return pick_resume_checkpoint(Path(run_dir))


class RunLock:
    """An exclusive lock on a run directory (`<run_dir>/.lock`, `fcntl.flock`): one process trains a run at a time.
    The kernel drops the lock when its process dies, however it dies, so a stale lock is simply taken over."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        from lion.run.checks import RunError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunError(f"{self.path.parent} is in use by {holder}; wait for it to finish or stop it, or give this "
                           f"run its own name (run_id=...)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            except OSError:
                pass
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def wandb_id(run_dir: Path) -> str:
    """The wandb run id of this run directory: read from `wandb_id.txt`, or created and stored there."""
    path = Path(run_dir) / "wandb_id.txt"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    new = uuid.uuid4().hex[:12]
    atomic_write_text(path, new + "\n")
    return new


def trim_csv(path: Path, max_step: int) -> None:
    """Drop the rows a killed run logged after the checkpoint it resumes from (step > max_step), and the lines a
    crash or a stray write left damaged (not UTF-8, wrong number of fields, unreadable step), with one log line."""
    import logging

    path = Path(path)
    if not path.is_file():
        return
    rows, bad = [], 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
                row = next(csv.reader([line]), [])
            except (UnicodeDecodeError, csv.Error):
                bad += 1
                continue
            if row:
                rows.append(row)
    if not rows or "step" not in rows[0]:
        return
    header, i = rows[0], rows[0].index("step")
    kept = [header]
    for r in rows[1:]:
        if len(r) != len(header) or (r[i] and not _is_number(r[i])):
            bad += 1
        elif not (r[i] and float(r[i]) > max_step):
            kept.append(r)
    if bad:
        logging.getLogger(__name__).warning(f"{path}: dropped {bad} damaged line(s)")
    if len(kept) != len(rows) or bad:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(kept)
        os.replace(tmp, path)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_metrics(run_dir: Path, payload: dict) -> Path:
    path = Path(run_dir) / "metrics.json"
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def to_float_dict(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out
