"""`train(cfg)` and `evaluate(cfg)`: what train.py and eval.py run, one straight line each.

train, in steps a reader can follow:
    check    `train`: the config values and run_id are checked, the run directory is locked
    prepare  `_prepare`: the checkpoint to resume from (damaged ones set aside), the same-run check, threads, seed
    build    `_build`: data module (missing data stops here), task module (sizes from the data), callbacks,
             loggers, trainer (gradient accumulation from `global_batch_size`)
    start    `_start`: start over if asked (only now), write config.yaml, trim the CSV log to the checkpoint
    fit      `trainer.fit`, resuming mid-epoch from the checkpoint
    evaluate `_evaluate_best`: validate and test the best checkpoint (or the last)
    record   `_record`: metrics.json, the exported model, curves.png and the end-of-run summary

evaluate: checkpoint (tasks from an allow-list) -> task module rebuilt from its own hyper-parameters -> form / chunk
size from the command line -> validate or test on the run's data (data modules from an allow-list) -> metrics JSON
in <run>/eval/.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf, open_dict

from lion.callbacks import Throughput
from lion.data.common import BaseDataModule, DataNotFoundError
from lion.run.checks import (ConfigError, RunError, check_accumulation, check_config, check_image_size,
                               check_model, check_same_run)
from lion.run.instantiate import build_task, instantiate_callbacks, instantiate_loggers
from lion.run import quiet
from lion.run.checkpoint import remove_partial_writes
from lion.run.resumable import resumable
from lion.run.summary import plot_curves, summary_text
from lion.run.threads import set_cpu_threads
from lion.run.rundir import (RunLock, atomic_write_text, check_run_id, load_run_config, resume_checkpoint,
                            save_config, to_float_dict, trim_csv, write_metrics)

log = logging.getLogger(__name__)


def device_name(trainer: L.Trainer) -> str:
    dev = trainer.strategy.root_device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    return f"{trainer.world_size}x {name}" if trainer.world_size > 1 else name


def _make_train_loader_resumable(datamodule: L.LightningDataModule, seed: int, repeats: int) -> None:
    """Mid-epoch resume is exact (see lion.run.resumable): lion's data modules make their own training loader
    resumable; a data module from elsewhere gets its train_dataloader wrapped."""
    if isinstance(datamodule, BaseDataModule):
        datamodule.resume_exactly(seed, repeats)
        return
    original = datamodule.train_dataloader

    def train_dataloader():
        return resumable(original(), seed=seed, repeats=repeats)

    datamodule.train_dataloader = train_dataloader


def _checkpoint_step(path: str) -> int | None:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt.get("global_step", 0))
    except Exception:  # noqa: BLE001 - Lightning reports a bad checkpoint itself
        return None


def is_global_zero() -> bool:
    """Rank 0 of a launch (before the trainer exists: from the launcher's environment)."""
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"))


def _start_over(run_dir: Path) -> None:
    """resume=false on an existing run directory: remove its checkpoints, logs and metrics (the config stays).
    Only names inside `run_dir` are removed, and only after the whole config has been validated and built."""
    import shutil

    for name in ("checkpoints", "csv", "tensorboard", "eval"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for path in [run_dir / "metrics.json", run_dir / "wandb_id.txt", *run_dir.glob("hpc_ckpt_*.ckpt")]:
        path.unlink(missing_ok=True)


def _forget_if_unused(run_dir: Path, lock: RunLock) -> None:
    """A command that stopped before training (a rejected value, missing data) leaves no run directory behind:
    if `run_dir` holds nothing but what Hydra and the lock wrote, remove those and the directory (never while
    another process holds the run)."""
    import shutil

    if not run_dir.is_dir():
        return
    held = lock.fd is not None
    if not held:
        try:
            lock.acquire()
        except RunError:
            return
    try:
        names = {p.name for p in run_dir.iterdir()}
        if names <= {".hydra", ".lock", "train.log", "eval.log"}:
            shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
            for name in names - {".hydra"}:
                (run_dir / name).unlink(missing_ok=True)
            try:
                run_dir.rmdir()
            except OSError:
                pass
    finally:
        if not held:
            lock.release()


def _on_cpu(cfg: DictConfig) -> bool:
    accel = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    return accel == "cpu" or (accel == "auto" and not torch.cuda.is_available())


def _atomic_checkpoints(trainer: L.Trainer) -> None:
    """Route the trainer's checkpoint writes through AtomicCheckpointIO (unless a custom plugin is configured)."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from lion.run.checkpoint import AtomicCheckpointIO

    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def train(cfg: DictConfig) -> dict:
    """Train the configured task; returns the metrics.json payload.

    Nothing is created, deleted or locked before the config values are checked; the run directory is locked for
    the whole run (a second process on it stops at once); a run that fails before training leaves nothing behind."""
    check_run_id(cfg.run_id)
    run_dir = Path(cfg.paths.run_dir)
    lock = RunLock(run_dir) if is_global_zero() else None
    try:
        check_config(cfg)
    except ConfigError:
        if lock is not None:  # Hydra created the directory for this command: leave nothing behind
            _forget_if_unused(run_dir, lock)
        raise
    if lock is not None:
        lock.acquire()
    try:
        return _train(cfg, run_dir)
    except BaseException:
        if lock is not None:
            _forget_if_unused(run_dir, lock)
        raise
    finally:
        if lock is not None:
            lock.release()


@dataclass
class _Run:
    """What the steps of `train` hand each other."""
    cfg: DictConfig
    run_dir: Path
    ckpt_path: str | None = None
    resuming_own: bool = False
    datamodule: L.LightningDataModule | None = None
    model: L.LightningModule | None = None
    callbacks: list = field(default_factory=list)
    loggers: list = field(default_factory=list)
    trainer: L.Trainer | None = None
    micro_batch: int = 1
    t0: float = field(default_factory=time.time)


def _train(cfg: DictConfig, run_dir: Path) -> dict:
    """The steps of a run, in order (the run directory is locked and the config checked by `train`)."""
    run = _prepare(cfg, run_dir)
    _build(run)
    _start(run)
    run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True)
    metrics, best = _evaluate_best(run)
    return _record(run, metrics, best)


def _prepare(cfg: DictConfig, run_dir: Path) -> _Run:
    """The checkpoint to resume from (damaged ones set aside), the same-run check, threads, precision, seed."""
    run = _Run(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_global_zero():
        remove_partial_writes(run_dir)
    run.ckpt_path = resume_checkpoint(cfg, run_dir)
    run.resuming_own = run.ckpt_path is not None and Path(run.ckpt_path).resolve().parent in (
        run_dir.resolve(), (run_dir / "checkpoints").resolve())
    if run.resuming_own and (run_dir / "config.yaml").is_file():
        check_same_run(load_run_config(run_dir / "config.yaml"), cfg, run_dir)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    if _on_cpu(cfg):
        line = set_cpu_threads(cfg.get("cpu_threads"))
        if line:
            rank_zero_info(line)
    quiet.install()
    L.seed_everything(cfg.seed, workers=True)
    return run


def _build(run: _Run) -> None:
    """Data module (its data prepared: missing data stops here), task module, callbacks, loggers, trainer."""
    cfg, run_dir = run.cfg, run.run_dir
    run.datamodule = datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    if is_global_zero() and int(os.environ.get("SLURM_NTASKS", "1")) == 1:
        try:
            datamodule.prepare_data()  # missing or corrupt data stops here, before a model is built
        except DataNotFoundError as e:
            if not cfg.get("data_command"):
                raise
            what = str(e).split("To get it:")[0].rstrip()
            raise DataNotFoundError(f"{what}\nTo get it for this experiment: {cfg.data_command}") from None
    run.model = model = build_task(cfg.model, datamodule)
    check_image_size(model.net, getattr(datamodule, "image_size", None))

    callbacks = instantiate_callbacks(cfg.get("callbacks"), run_dir)
    if cfg.trainer.get("enable_progress_bar") is False:
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    run.callbacks = callbacks
    run.loggers = instantiate_loggers(cfg.get("logger"), run_dir)
    run.trainer = trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=run.loggers or False,
                                                    default_root_dir=str(run_dir))
    _atomic_checkpoints(trainer)
    run.micro_batch = micro = int(getattr(datamodule, "batch_size", 1) or 1)
    trainer.accumulate_grad_batches = check_accumulation(cfg.get("global_batch_size"), micro, trainer.world_size)
    model.global_batch_size = micro * trainer.world_size * trainer.accumulate_grad_batches
    if cfg.get("resumable_loader", True):
        _make_train_loader_resumable(datamodule, cfg.seed, int(cfg.get("repeated_aug", 1) or 1))


def _start(run: _Run) -> None:
    """Everything is validated and built: start over if asked, write the config, trim the log to the checkpoint."""
    cfg, run_dir, trainer, model = run.cfg, run.run_dir, run.trainer, run.model
    if not cfg.get("resume", True) and is_global_zero():
        _start_over(run_dir)
    if trainer.is_global_zero:
        save_config(cfg, run_dir)
        for lg in run.loggers:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if run.resuming_own:
            step = _checkpoint_step(run.ckpt_path)
            if step is not None:
                trim_csv(run_dir / "csv" / "metrics.csv", step)
    rank_zero_info(f"run directory: {run_dir}" + (f" (resuming from {run.ckpt_path})" if run.ckpt_path else ""))
    size = model.hparams.get("size") or ""
    rank_zero_info(f"model: {type(model).__name__}, {model.hparams.get('attention')} {size}, "
                   f"{model.num_params() / 1e6:.2f}M parameters; global batch {model.global_batch_size} = "
                   f"{run.micro_batch} x {trainer.world_size} devices x {trainer.accumulate_grad_batches} "
                   f"accumulation")


def _evaluate_best(run: _Run) -> tuple[dict, str]:
    """Validate and test the best checkpoint by the monitored metric (or the last one); returns (metrics, path)."""
    cfg, trainer, model, datamodule = run.cfg, run.trainer, run.model, run.datamodule
    monitor = cfg.get("optimized_metric") or model.monitor[0]
    best = ""
    for cb in trainer.checkpoint_callbacks:
        if cb.monitor == monitor and cb.best_model_path:
            best = cb.best_model_path
    if not best and (run.run_dir / "checkpoints" / "last.ckpt").is_file():  # no monitored checkpoint: the last
        best = str(run.run_dir / "checkpoints" / "last.ckpt")
    metrics = {}
    if cfg.get("validate_best", True) and best:
        loggers_during_fit, trainer.loggers = trainer.loggers, []  # the log has these values at their epoch
        for m in trainer.validate(model, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False):
            metrics.update(to_float_dict(m))
        trainer.loggers = loggers_during_fit
    elif not best:
        metrics.update(to_float_dict({k: v for k, v in trainer.callback_metrics.items() if k.startswith("val")}))
    if cfg.get("test", True) and is_overridden("test_dataloader", datamodule) and best:
        for m in trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True):
            metrics.update(to_float_dict(m))
    return metrics, best


def _record(run: _Run, metrics: dict, best: str) -> dict:
    """metrics.json, best.txt, the exported model, the curves and the summary; returns the metrics.json payload."""
    cfg, run_dir, trainer, model = run.cfg, run.run_dir, run.trainer, run.model
    meter = next((cb for cb in run.callbacks if isinstance(cb, Throughput)), None)
    throughput = (meter or Throughput()).summary()  # none configured: the empty summary
    # the whole run's fitting time, across resumes (kept in the checkpoints)
    fit_seconds = meter.fit_seconds() if meter is not None else time.time() - run.t0
    table = cfg.get("table")
    payload = {
        "status": "finished",
        "experiment": cfg.get("experiment_name"),
        "table": OmegaConf.to_container(table, resolve=True) if table is not None else None,
        "model": {"attention": model.hparams.get("attention"), "size": model.hparams.get("size"),
                  "params": int(model.num_params())},
        "metrics": metrics,
        "throughput": throughput,
        "device": device_name(trainer),
        "seed": int(cfg.seed),
        "run_id": cfg.get("run_id"),
        "best_ckpt": _relative(best, run_dir) if best else None,  # relative to the run directory
        "epochs": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "fit_seconds": round(fit_seconds, 1),
    }
    if trainer.is_global_zero:
        write_metrics(run_dir, payload)
        if best:
            atomic_write_text(run_dir / "checkpoints" / "best.txt", Path(best).name + "\n")
        export = getattr(model, "export_pretrained", None)
        if callable(export) and cfg.get("export", True):
            export(run_dir / "hf")
        try:
            curves = plot_curves(run_dir)
        except Exception as e:  # noqa: BLE001 - a plot must never fail a finished run
            log.warning(f"could not plot the curves: {e}")
            curves = None
        rank_zero_info(f"metrics: {json.dumps(metrics, sort_keys=True)}\nwritten: {run_dir / 'metrics.json'}")
        rank_zero_info(summary_text(payload, run_dir, time.time() - run.t0, curves))
    _close_loggers(run.loggers)
    return payload


def _relative(path: str | Path, run_dir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)


def _close_loggers(loggers) -> None:
    """Finish the wandb run, so the next job of an in-process sweep starts its own."""
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb
        wandb.finish()


# ---------------------------------------------------------------------------------------------- evaluation


def load_task(ckpt_path: str | Path, form: str | None = None, chunk_size: int | None = None,
              backend: str | None = None, map_location: str = "cpu") -> L.LightningModule:
    """Rebuild the task module of a checkpoint from its own hyper-parameters and load its weights
    (`torch.load(weights_only=True)`); then switch its attention form if asked."""
    from lion.tasks import task_class
    from lion.run.checkpoint import checkpoint_problem

    problem = checkpoint_problem(ckpt_path)
    if problem is not None:
        raise RunError(f"ckpt_path={str(ckpt_path)!r} cannot be loaded ({problem}); give an intact checkpoint, e.g. "
                       f"the run's checkpoints/best.ckpt or last.ckpt")
    ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    target = ckpt.get("lion_task")
    if target is None:
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} was not written by lion's train.py (no 'lion_task' key)")
    try:
        cls = task_class(target)  # an allow-list by name: a checkpoint never chooses code to import
    except ValueError as e:
        raise RunError(f"ckpt_path={str(ckpt_path)!r}: {e}") from None
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if hparams.get("attention") == "softmax" and form not in (None, "parallel", "auto"):
        raise ConfigError(f"model.form={form!r}: this checkpoint has softmax attention, which has only the parallel "
                          f"form; use model.form=parallel")
    if hparams.get("pretrained"):
        hparams["pretrained"] = None  # the checkpoint holds the fine-tuned weights
    model = cls(**hparams)
    model.load_state_dict(ckpt["state_dict"])
    if form is not None or chunk_size is not None or backend is not None:
        model.set_form(form or hparams.get("form") or "auto",
                       chunk_size if chunk_size is not None else hparams.get("chunk_size"), backend)
    return model


def data_module_classes() -> dict[str, type]:
    """The data modules a run directory's config may name: lion.data's, by their config path and class path."""
    import lion.data as data

    out = {}
    for name in data.__all__:
        cls = getattr(data, name)
        if isinstance(cls, type) and issubclass(cls, L.LightningDataModule):
            out[f"lion.data.{name}"] = cls
            out[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return out


def check_data_targets(data_cfg: DictConfig, source: Path) -> None:
    """Every `_target_` in a data config read from a run directory must be one of lion's data modules (a run
    directory is data: it may not choose code to run)."""
    allowed = data_module_classes()

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "_target_" and v not in allowed:
                    raise RunError(f"{source}: {where}{k}={v!r} is not one of lion's data modules; evaluate with a "
                                   f"data config of this project (data._target_=lion.data.<Module>)")
                walk(v, f"{where}{k}.")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}{i}.")

    walk(OmegaConf.to_container(data_cfg, resolve=False), "data.")


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate `cfg.ckpt_path` on `cfg.split` with the requested form; returns and writes the metrics JSON."""
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path or not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r} is not a file; give a checkpoint, e.g. "
                          f"ckpt_path=logs/runs/<run_id>/checkpoints/best.ckpt")
    if cfg.split not in ("val", "test"):
        raise ConfigError(f"split={cfg.split!r} is not allowed; use one of: val, test")
    check_model(cfg)
    quiet.install()
    ckpt_path = Path(ckpt_path)
    run_dir = ckpt_path.parent.parent
    run_cfg = load_run_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    data_cfg = run_cfg.data if run_cfg is not None and "data" in run_cfg else None
    overrides = {k: v for k, v in (cfg.get("data") or {}).items() if v is not None}
    if data_cfg is None and "_target_" not in overrides:
        raise ConfigError(f"no data config: {run_dir / 'config.yaml'} is missing; give the data, e.g. data=mnist")
    data_cfg = OmegaConf.merge(data_cfg or {}, overrides)
    check_data_targets(data_cfg, run_dir / "config.yaml")
    L.seed_everything(int(cfg.get("seed") or 0), workers=True)
    datamodule = hydra.utils.instantiate(data_cfg, _convert_="all")

    m = cfg.get("model") or {}
    model = load_task(ckpt_path, m.get("form"), m.get("chunk_size"), m.get("backend"))
    check_image_size(model.net, getattr(datamodule, "image_size", None))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[],
                                                 default_root_dir=str(run_dir))
    run = trainer.validate if cfg.split == "val" else trainer.test
    t0 = time.time()
    results = run(model, datamodule=datamodule, verbose=True)
    seconds = time.time() - t0
    metrics = {}
    for r in results:
        metrics.update(to_float_dict(r))
    form = m.get("form") or model.hparams.get("form")
    chunk = m.get("chunk_size") or model.hparams.get("chunk_size")
    payload = {"ckpt_path": str(ckpt_path), "split": cfg.split, "attention": model.hparams.get("attention"),
               "form": form, "chunk_size": chunk, "metrics": metrics, "seconds": round(seconds, 2),
               "device": device_name(trainer)}
    out = Path(cfg.output) if cfg.get("output") else run_dir / "eval" / f"{cfg.split}-{form}-c{chunk}.json"
    if trainer.is_global_zero:
        atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
        rank_zero_info(f"written: {out}")
    return payload
