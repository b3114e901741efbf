"""Lightning callbacks of the training framework.

    Throughput   samples/s and tokens/s of training (global, all ranks), logged and kept for metrics.json
    ExactResume  saves the RNG states and the training loader's position in checkpoints and restores them on
                 resume, so a run killed mid-epoch continues exactly as if it had not been stopped
    LastCheckpoint  `last.ckpt` every n optimizer steps, every n minutes and at each epoch end (atomic writes), the
                 file the same command resumes from
    ProgressBar  Lightning's tqdm bar, correct after a mid-epoch resume (epoch, total, batches done)
    RunCheckpoint  Lightning's ModelCheckpoint (`best.ckpt`) storing its paths relative to its directory, so a copied
                 or moved run directory uses its own files
    EMA          exponential moving average of the weights (Lightning's EMAWeightAveraging), evaluated in
                 validation and stored as the checkpoint's `state_dict`; test and eval runs use those weights
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf
from lightning.pytorch.trainer.states import TrainerFn


def batch_size_and_tokens(batch: Any, tokens_per_sample: int | None = None) -> tuple[int, Any]:
    """(samples, tokens) in a dict batch (docs/DESIGN.md section 3). Tokens: real tokens from `attention_mask*`
    if present (a 0-d tensor, not synchronised here), else the length of `input_ids*`, else `tokens_per_sample`
    (e.g. patches per image) per sample."""
    if not isinstance(batch, dict):
        t = batch[0] if isinstance(batch, (list, tuple)) else batch
        n = len(t)
        return n, n * (tokens_per_sample or 1)
    first = next(v for v in batch.values() if torch.is_tensor(v))
    n = int(first.shape[0])
    masks = [v for k, v in batch.items() if k.startswith("attention_mask") and torch.is_tensor(v)]
    if masks:
        return n, sum(m.sum() for m in masks)
    ids = [v for k, v in batch.items() if k.startswith("input_ids") and torch.is_tensor(v)]
    if ids:
        return n, int(sum(v.numel() for v in ids))
    return n, n * (tokens_per_sample or 1)


class Throughput(L.Callback):
    """Training throughput over all ranks, measured per optimizer step (data loading included, validation not),
    after the first `warmup_steps` steps of each fit (of a resumed one too).

    Logs `throughput/samples_per_s`, `throughput/tokens_per_s` and `throughput/step_time_s` every
    `log_every_n_steps` optimizer steps; `summary()` gives the means over the run (for metrics.json) and
    `fit_seconds()` the wall time of fitting. Both are kept in checkpoints: a run resumed after a crash reports the
    whole run (the steps before the checkpoint and after the resume), and a finished run started again keeps its
    numbers instead of reporting an empty measurement.
    Tokens per image sample come from the module's `tokens_per_sample` attribute when it has one.
    """

    def __init__(self, warmup_steps: int = 5, log_every_n_steps: int = 50):
        self.warmup_steps, self.log_every_n_steps = warmup_steps, log_every_n_steps
        self.total = [0, 0, 0.0, 0]   # samples, tokens, seconds, optimizer steps (all logged windows)
        self._window = [0, 0, 0.0, 0]
        self._pending = [0, 0]        # samples and tokens of the micro-batches of the current step
        self._t0: float | None = None
        self._last_step = -1
        self._start_step = 0
        self._fit_prior = 0.0         # fit seconds of the run before the checkpoint this fit resumed from
        self._fit_t0: float | None = None

    def on_fit_start(self, trainer, pl_module):
        self._fit_t0 = time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        self._start_step = trainer.global_step  # warm-up again after a resume (caches, compilation)

    def on_fit_end(self, trainer, pl_module):
        self._fit_prior, self._fit_t0 = self.fit_seconds(), None

    def fit_seconds(self) -> float:
        return self._fit_prior + (time.perf_counter() - self._fit_t0 if self._fit_t0 is not None else 0.0)

    def state_dict(self) -> dict:
        return {"total": [a + b for a, b in zip(self.total, self._window)], "fit_seconds": self.fit_seconds()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.total = [int(x) if i != 2 else float(x) for i, x in enumerate(state_dict["total"])]
        self._window = [0, 0, 0.0, 0]
        self._fit_prior = float(state_dict.get("fit_seconds", 0.0))

    @staticmethod
    def _now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = self._now(pl_module)
            self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        n, tok = batch_size_and_tokens(batch, getattr(pl_module, "tokens_per_sample", None))
        self._pending[0] += n * trainer.world_size
        self._pending[1] += tok * trainer.world_size
        if trainer.global_step == self._last_step:
            return  # still accumulating gradients
        self._last_step = trainer.global_step
        now = self._now(pl_module)
        self._pending[1] = int(self._pending[1])  # one device sync per optimizer step, after the clock
        if trainer.global_step - self._start_step > self.warmup_steps and self._t0 is not None:
            w = self._window
            w[0], w[1], w[2], w[3] = w[0] + self._pending[0], w[1] + self._pending[1], w[2] + now - self._t0, w[3] + 1
        self._pending = [0, 0]
        self._t0 = now
        if self._window[3] >= self.log_every_n_steps:
            self._log(pl_module)

    def _log(self, pl_module):
        s, t, sec, steps = self._window
        if steps and sec > 0:
            pl_module.log_dict({"throughput/samples_per_s": s / sec, "throughput/tokens_per_s": t / sec,
                                "throughput/step_time_s": sec / steps}, rank_zero_only=True)
        self.total = [a + b for a, b in zip(self.total, self._window)]
        self._window = [0, 0, 0.0, 0]

    def on_validation_start(self, trainer, pl_module):
        self.total = [a + b for a, b in zip(self.total, self._window)]
        self._window = [0, 0, 0.0, 0]
        self._t0 = None  # validation time is not training time

    def on_train_end(self, trainer, pl_module):
        self.total = [a + b for a, b in zip(self.total, self._window)]
        self._window = [0, 0, 0.0, 0]

    def summary(self) -> dict:
        s, t, sec, steps = self.total
        if sec <= 0 or steps == 0:
            return {"train_samples_per_s": None, "train_tokens_per_s": None, "step_time_s": None}
        return {"train_samples_per_s": s / sec, "train_tokens_per_s": t / sec, "step_time_s": sec / steps}


class ExactResume(L.Callback):
    """Keep what a checkpoint needs beyond weights and optimizer so that a resumed run repeats the uninterrupted
    one: the torch / CUDA / numpy / python RNG states and the position of the resumable training loader
    (lion.run.resumable) inside its epoch.

    Both are captured when a checkpoint is written and applied at `on_train_start` of the resumed run (after the
    sanity check and the loader set-up, before the first batch is fetched), the point the uninterrupted run was at.
    (Lightning's own loader-state restore is skipped when `estimated_stepping_batches` built the loader before the
    checkpoint was read, as every task here does for its schedule.) Stored as tensors and lists only, so
    `torch.load(weights_only=True)` reads them.
    """

    def __init__(self):
        self._pending: dict | None = None
        self._trainer = None

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer

    def state_dict(self) -> dict:
        np_state = np.random.get_state()
        state = {"torch": torch.get_rng_state(),
                 "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                           int(np_state[3]), float(np_state[4])],
                 "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        loader = getattr(self._trainer, "train_dataloader", None) if self._trainer is not None else None
        if loader is not None and hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict"):
            state["train_loader"] = loader.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self._pending = state

    def on_train_start(self, trainer, pl_module):
        if self._pending is None:
            return
        s, self._pending = self._pending, None
        loader = trainer.train_dataloader
        if "train_loader" in s and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(s["train_loader"])
        torch.set_rng_state(s["torch"])
        name, keys, pos, has_gauss, cached = s["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        py = s["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        if "cuda" in s and torch.cuda.is_available():
            try:
                torch.cuda.set_rng_state_all(s["cuda"])
            except (RuntimeError, IndexError):  # a different number of GPUs: keep the seeded states
                pass


class EMA(EMAWeightAveraging):
    """EMA of the weights (`decay` per optimizer step), evaluated in validation and saved as `state_dict`.

    Lightning's callback restores the raw weights whenever a checkpoint is loaded; here that happens only when
    resuming a fit, so `trainer.test(ckpt_path="best")` and `eval.py` evaluate the averaged weights, as DeiT does.

    Args:
        decay: per optimizer step (DeiT: 0.99996 at batch 1024). update_starting_at_step: first step to average;
        update_every_n_steps: average every n steps. device: where to keep the copy ("cpu" saves GPU memory).
    """

    def __init__(self, decay: float = 0.9999, update_starting_at_step: int | None = None,
                 update_every_n_steps: int = 1, device: str | None = None, use_buffers: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA: decay must be in (0, 1), got {decay}")
        super().__init__(device=device, use_buffers=use_buffers, decay=decay,
                         update_every_n_steps=update_every_n_steps, update_starting_at_step=update_starting_at_step)

    @staticmethod
    def _fitting(trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if self._fitting(trainer):
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_validation_epoch_start(self, trainer, pl_module):
        if self._fitting(trainer):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module):
        if self._fitting(trainer):
            super().on_validation_epoch_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self._average_model is not None and self._fitting(trainer):
            super().on_save_checkpoint(trainer, pl_module, checkpoint)


class LastCheckpoint(L.Callback):
    """Write the full training state to `dirpath/last.ckpt` every `every_n_train_steps` optimizer steps, every
    `every_n_minutes` minutes and at the end of each training epoch (after its validation).

    The pipeline's `lion.run.checkpoint.AtomicCheckpointIO` writes a temporary file in the same directory, fsyncs
    it and renames it into place, so a run killed (or out of disk) while saving keeps the previous `last.ckpt`. With `ExactResume` and the resumable training loader a run resumed from a
    mid-epoch checkpoint reproduces the uninterrupted run.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int | None = 50, every_n_minutes: float | None = None,
                 filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename
        self.every_n_train_steps = every_n_train_steps or 0
        self.every_n_seconds = 60.0 * every_n_minutes if every_n_minutes else None
        self._saved_step = -1
        self._seen_step = 0
        self._last_time = time.monotonic()

    @property
    def state_key(self) -> str:
        return f"LastCheckpoint[{self.path.name}]"

    def _save(self, trainer) -> None:
        if trainer.global_step == self._saved_step or trainer.sanity_checking or trainer.fast_dev_run:
            return  # (a fast_dev_run checkpoint must not become the start of the next real run)
        trainer.save_checkpoint(str(self.path), weights_only=False)
        self._saved_step = trainer.global_step
        self._last_time = time.monotonic()

    def on_train_start(self, trainer, pl_module):
        self._seen_step = trainer.global_step
        self._last_time = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self._seen_step:
            return  # inside a gradient-accumulation cycle: nothing consistent to save yet
        self._seen_step = step
        due_steps = self.every_n_train_steps and step > 0 and step % self.every_n_train_steps == 0
        due_time = self.every_n_seconds is not None and time.monotonic() - self._last_time >= self.every_n_seconds
        if due_steps or due_time:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._save(trainer)


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose saved state names its files relative to its own directory.

    Lightning stores absolute paths (`best_model_path`, ...) in every checkpoint and reloads `best_model_path` even
    when the directory changed, so a copied run directory would validate and test the original's `best.ckpt`. Here
    the state holds names relative to `dirpath` and is resolved against the directory of the run that loads it
    (absolute paths written by earlier versions are re-based the same way). The state key is ModelCheckpoint's, so
    checkpoints written before keep their callback state.
    """

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    _PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        base = Path(self.dirpath) if self.dirpath else None

        def rel(p):
            if not p or base is None:
                return p
            p = Path(p)
            return p.name if p.parent == base else os.path.relpath(p, base)

        for k in self._PATHS:
            state[k] = rel(state.get(k))
        state["best_k_models"] = {rel(k): v for k, v in (state.get("best_k_models") or {}).items()}
        state["dirpath"] = "."
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        base = Path(self.dirpath) if self.dirpath else None
        old = state.get("dirpath")
        if base is not None:
            def here(p):
                if not p:
                    return p
                p = Path(p)
                if p.is_absolute():  # written by an earlier version: keep only its place inside the old dirpath
                    try:
                        p = p.relative_to(old) if old and old != "." else Path(p.name)
                    except ValueError:
                        p = Path(p.name)
                return str(base / p)

            for k in self._PATHS:
                if k in state:
                    state[k] = here(state[k])
            if "best_k_models" in state:
                state["best_k_models"] = {here(k): v for k, v in (state["best_k_models"] or {}).items()}
            state["dirpath"] = self.dirpath
        super().load_state_dict(state)


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar that also knows where a resumed epoch stands: after a mid-epoch resume it starts at
    `Epoch k` with the epoch's total and the batches already done (Lightning's shows `Training: n/?`, since it
    sets the total only when an epoch starts)."""

    def init_train_tqdm(self):
        import sys

        from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

        trainer = self._trainer
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed if trainer is not None else 0
        resumed = done > 0 and not trainer.sanity_checking
        return Tqdm(desc=f"Epoch {trainer.current_epoch}" if resumed else self.train_description,
                    total=convert_inf(self.total_train_batches) if resumed else None, initial=done if resumed else 0,
                    position=(2 * self.process_position), disable=self.is_disabled, leave=True, dynamic_ncols=True,
                    file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT)
