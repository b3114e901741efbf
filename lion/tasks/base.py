"""What every task module shares: the optimizer with its parameter groups, the learning-rate schedule, the
attention-form switch and checkpoint bookkeeping.

Hyper-parameters are plain dicts (saved with `save_hyperparameters`), so a checkpoint rebuilds its module alone:
`lion.pipeline.load_task(path)` (used by eval.py) reads it with `torch.load(weights_only=True)` and builds the
class it names from the allow-list `lion.tasks.TASKS`.

    optimizer: {name: adamw | decoupled_adamw | adam | sgd (lion.optim), lr: 5e-4, weight_decay: 0.05,
                betas: [0.9, 0.999], eps: 1e-8,
                lr_scale_batch: 512,        # lr = lr x global_batch / 512 (DeiT); null: lr as given
                param_groups: no_decay_norm_bias | all,           # all: weight decay on every parameter
                no_weight_decay: [pos_embed, cls_token, decay],   # extra name fragments kept out of weight decay
                lr_mult: {decay: 10}}             # optional: lr x factor for parameters whose names contain a fragment
    scheduler: {name: cosine | linear | constant, warmup_epochs: 5 | warmup_steps: N | warmup_fraction: 0.06,
                warmup_lr: 1e-6, min_lr: 1e-5 (cosine floor) | final_lr_ratio: 0.02 (linear end)}
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from lion.optim import OPTIMIZERS, PARAM_GROUPS, build_optimizer, param_groups  # noqa: F401  (re-exported)

DEFAULT_OPTIMIZER = dict(name="adamw", lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8,
                         lr_scale_batch=None, param_groups="no_decay_norm_bias",
                         no_weight_decay=("pos_embed", "cls_token", "decay"), lr_mult=None)
DEFAULT_SCHEDULER = dict(name="cosine", warmup_steps=0, warmup_epochs=None, warmup_fraction=None, warmup_lr=0.0,
                         min_lr=0.0, final_lr_ratio=0.0)
SCHEDULERS = ("cosine", "linear", "constant")


class WarmupSchedule:
    """Multiplier of the peak lr at optimizer step t: linear warm-up from `start` (a fraction of the peak) over
    `warmup` steps, then cosine to `floor`, linear to `floor`, or constant, over the remaining steps.
    A callable object (not a lambda) so LambdaLR's state_dict keeps it as plain numbers."""

    def __init__(self, kind: str, total: int, warmup: int, start: float, floor: float):
        self.kind, self.total, self.warmup, self.start, self.floor = kind, int(total), int(warmup), start, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1.0 - self.start) * step / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "cosine":
            return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 + (self.floor - 1.0) * progress


class LionTask(L.LightningModule):
    """Base of the task modules. Subclasses build `self.net`, define the steps and call `save_hyperparameters()`.

    Class attribute `data_keys`: {hyper-parameter path: data-module attribute}, filled by the pipeline from the data
    module when the config leaves them null (e.g. {"net.num_classes": "num_classes"}).
    """

    data_keys: dict[str, str] = {}
    monitor = ("val/acc", "max")  # metric and mode that pick the best checkpoint

    def __init__(self):
        super().__init__()
        self.global_batch_size: int | None = None  # set by the pipeline; used for the lr scaling rule

    # ---------------------------------------------------------------- attention form
    def set_form(self, form: str, chunk_size: int | None = None, backend: str | None = None):
        """Switch every LION mixer to `form` (parallel, chunk, recurrent, auto): same weights, same outputs."""
        set_form = getattr(self.net, "set_form", None)
        if set_form is None:
            from lion.models.registry import set_form as registry_set_form
            registry_set_form(self.net, form, chunk_size, backend)
        else:
            set_form(form, chunk_size, backend) if backend is not None else set_form(form, chunk_size)
        return self

    # ---------------------------------------------------------------- optimisation
    def _global_batch(self) -> int | None:
        if self.global_batch_size:
            return int(self.global_batch_size)
        dm = getattr(self.trainer, "datamodule", None)
        bs = getattr(dm, "batch_size", None)
        if bs is None:
            return None
        return int(bs) * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def peak_lr(self) -> float:
        o = {**DEFAULT_OPTIMIZER, **(self.hparams.get("optimizer") or {})}
        lr = float(o["lr"])
        if o.get("lr_scale_batch"):
            gb = self._global_batch()
            if gb is not None:
                lr = lr * gb / float(o["lr_scale_batch"])
        return lr

    def configure_optimizers(self):
        o = {**DEFAULT_OPTIMIZER, **(self.hparams.get("optimizer") or {})}
        s = {**DEFAULT_SCHEDULER, **(self.hparams.get("scheduler") or {})}
        if o["name"] not in OPTIMIZERS:
            raise ValueError(f"model.optimizer.name={o['name']!r} is unknown; use one of {OPTIMIZERS}")
        if s["name"] not in SCHEDULERS:
            raise ValueError(f"model.scheduler.name={s['name']!r} is unknown; use one of {SCHEDULERS}")
        lr = self.peak_lr()
        fused = True if self.device.type == "cuda" else None  # one kernel for all parameters on GPUs
        opt = build_optimizer(self, o, lr, fused=fused)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if s.get("warmup_fraction") is not None:
            warmup = int(round(float(s["warmup_fraction"]) * total))
        elif s.get("warmup_epochs") is not None and self.trainer.max_epochs and self.trainer.max_epochs > 0:
            warmup = int(round(float(s["warmup_epochs"]) * total / self.trainer.max_epochs))
        else:
            warmup = int(s.get("warmup_steps") or 0)
        floor = float(s["min_lr"]) / lr if s["name"] == "cosine" else float(s.get("final_lr_ratio") or 0.0)
        sched = WarmupSchedule(s["name"], total, min(warmup, total), float(s["warmup_lr"]) / lr, floor)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, sched)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lion_task"] = f"{type(self).__module__}.{type(self).__qualname__}"

    def num_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())
