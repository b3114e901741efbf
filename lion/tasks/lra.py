"""Long Range Arena: classification of one sequence (ListOps, Text, Image, Pathfinder, Path-X) and retrieval of
document pairs, on the models of lion.models.lra.

Batches (docs/DESIGN.md section 3):
    single sequence: input_ids [B, L] long, attention_mask [B, L], labels [B]
    retrieval:       input_ids_1, attention_mask_1, input_ids_2, attention_mask_2, labels [B]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics

from lion.tasks.base import LionTask
from lion.run.checks import ConfigError

LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")


def build_lra(lra_task: str, attention: str, form: str, chunk_size: int, backend: str, net: dict | None):
    from lion.models.lra import create_lra_model

    key = str(lra_task).lower().replace("-", "").replace("_", "")
    if key.startswith("pathfinder") and key != "pathfinder":
        key = "pathx" if key.endswith("128") else "pathfinder"
    if key not in LRA_TASKS:
        raise ConfigError(f"model.lra_task={lra_task!r} is not allowed; use one of: {', '.join(LRA_TASKS)}")
    kwargs = {k: v for k, v in (net or {}).items() if v is not None}
    if kwargs.get("grid_size") is not None:
        kwargs["grid_size"] = tuple(kwargs["grid_size"])
    return create_lra_model(key, attention=attention, form=form, chunk_size=chunk_size, backend=backend, **kwargs)


class LRAClassification(LionTask):
    """LRA classifier (single sequence or, with lra_task=retrieval, the two-tower document matcher).

    Args:
        lra_task: listops | text | retrieval | image | pathfinder | pathx (fixes input type and grid).
        attention, form, chunk_size, backend: the mixer. net: create_lra_model overrides (dim, depth, num_heads,
            mlp_ratio, pool, pos_embed, dropout, drop_path_rate, seq_len, ...); vocab_size, num_classes, seq_len and
            pad_token_id come from the data module.
        optimizer, scheduler: see lion.tasks.base.

    Logs train/loss, val/loss, val/acc (and test/...).
    """

    data_keys = {"net.vocab_size": "vocab_size", "net.num_classes": "num_classes", "net.seq_len": "seq_len",
                 "net.pad_token_id": "pad_token_id"}
    monitor = ("val/acc", "max")

    def __init__(self, lra_task: str = "listops", attention: str = "lion-s", form: str = "auto",
                 chunk_size: int = 64, backend: str = "auto", net: dict | None = None, family: str = "lra",
                 size: str | None = None, optimizer: dict | None = None, scheduler: dict | None = None,
                 compile: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_lra(lra_task, attention, form, chunk_size, backend, net)
        if compile:
            self.net.compile()
        self.retrieval = hasattr(self.net, "tower")
        k = int(self.net.num_classes)
        self.metrics = torch.nn.ModuleDict({f"{s}_acc": torchmetrics.Accuracy(task="multiclass", num_classes=k)
                                            for s in ("val", "test")})

    def forward(self, batch: dict) -> torch.Tensor:
        """logits [B, num_classes]."""
        if self.retrieval:
            return self.net(batch["input_ids_1"], batch.get("attention_mask_1"), batch["input_ids_2"],
                            batch.get("attention_mask_2"))
        return self.net(batch["input_ids"], batch.get("attention_mask"))

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch).float(), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["labels"].shape[0],
                 sync_dist=True)
        return loss

    def _eval_step(self, batch, stage):
        logits, y = self(batch), batch["labels"]
        self.log(f"{stage}/loss", F.cross_entropy(logits.float(), y), batch_size=y.shape[0], sync_dist=True,
                 prog_bar=stage == "val")
        self.metrics[f"{stage}_acc"](logits, y)
        self.log(f"{stage}/acc", self.metrics[f"{stage}_acc"], batch_size=y.shape[0], prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")
