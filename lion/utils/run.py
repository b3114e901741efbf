"""The run directory (docs/DESIGN.md, "Run directory"): where a run lives, how it resumes, what it leaves.

    ${paths.log_dir}/runs/${run_id}/
        config.yaml              resolved config of the run
        checkpoints/last.ckpt    written every `callbacks.last_checkpoint.every_n_train_steps` steps and each epoch
        checkpoints/best.ckpt    best by the task's monitored metric (val/acc for classification)
        csv/metrics.csv          CSVLogger
        wandb/, wandb_id.txt     with logger=wandb: the wandb run id, reused on resume
        metrics.json             written when the run finishes

`run_id` is `${experiment_name}-s${seed}` (plus a short hash of the overrides inside a multirun sweep, so the jobs
of a sweep do not share a directory): the same command finds the same directory and resumes from `last.ckpt`.
Importing this module registers the OmegaConf resolvers the configs use.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("lion.sweep_suffix"):
        OmegaConf.register_new_resolver("lion.sweep_suffix", _sweep_suffix)
    if not OmegaConf.has_resolver("lion.slug"):
        OmegaConf.register_new_resolver("lion.slug", _slug)


register_resolvers()


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config as `config.yaml` (the Hydra run-time node `hydra` is not part of it)."""
    atomic_write_text(Path(run_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint to start from: `ckpt_path` if given, else (when `resume` is true) the newest of the run's
    `checkpoints/last.ckpt` and the `hpc_ckpt_*.ckpt` Lightning writes when SLURM signals a pre-emption."""
    given = cfg.get("ckpt_path")
    if given:
        return str(given)
    if not cfg.get("resume", True):
        return None
    candidates = [p for p in [Path(run_dir) / "checkpoints" / "last.ckpt", *Path(run_dir).glob("hpc_ckpt_*.ckpt")]
                  if p.is_file()]
    return str(max(candidates, key=lambda p: p.stat().st_mtime)) if candidates else None


def wandb_id(run_dir: Path) -> str:
    """The wandb run id of this run directory: read from `wandb_id.txt`, or created and stored there."""
    path = Path(run_dir) / "wandb_id.txt"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    new = uuid.uuid4().hex[:12]
    atomic_write_text(path, new + "\n")
    return new


def trim_csv(path: Path, max_step: int) -> None:
    """Drop the rows a killed run logged after the checkpoint it resumes from (step > max_step)."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "step" not in rows[0]:
        return
    i = rows[0].index("step")
    kept = [rows[0]] + [r for r in rows[1:] if not (len(r) > i and r[i] and float(r[i]) > max_step)]
    if len(kept) != len(rows):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(kept)
        os.replace(tmp, path)


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
