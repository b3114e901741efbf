"""Image classification with the DeiT recipe, on any ViT registered in timm (LION or softmax).

Batch (docs/DESIGN.md section 3): `pixel_values [B, C, H, W] float`, `labels [B] long`.

The model side of DeiT lives here: mixup / cutmix (timm `Mixup`, soft targets with label smoothing folded in,
`SoftTargetCrossEntropy`), label smoothing without mixup, stochastic depth (`net.drop_path_rate`), and, through the
base class, AdamW with lr x global_batch/512, warm-up + cosine, no weight decay for norms, biases, tokens and decay
parameters. The data side (RandAugment, colour jitter, random erasing, bicubic crops) is the data module's; repeated
augmentation is the training sampler's (`repeated_aug` in train.yaml); the weight EMA is a callback (`callbacks=ema`
or `callbacks.ema`).
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
import torchmetrics
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

from lion.attentions import ATTENTIONS, vit_model_name
from lion.tasks.base import LionTask

def vit_name(attention: str, size: str, patch: int = 16, res: int = 224) -> str:
    """timm name of the registered ViT: vit_name("lion-d-ms", "small") -> "lion_d_ms_small_patch16_224"."""
    try:
        return vit_model_name(attention, size, patch, res)
    except ValueError:
        raise ValueError(f"model.attention={attention!r} is not allowed; use one of: {', '.join(ATTENTIONS)}") \
            from None


def build_vit(attention: str, size: str, form: str, chunk_size: int, backend: str, net: dict,
              timm_name: str | None = None) -> torch.nn.Module:
    """The LION ViT of `attention` and `size` (lion.models.vit.create_vit), or `timm_name` (any timm model), with
    the `net` keyword overrides. Keys left null in `net` are dropped (the model's defaults apply)."""
    kwargs = {k: v for k, v in (net or {}).items() if v is not None}
    if timm_name is not None:
        import lion.models  # noqa: F401  (registers the LION ViTs with timm, should timm_name be one of them)

        return timm.create_model(timm_name, pretrained=False, **kwargs)
    from lion.models.vit import create_vit

    vit_name(attention, size)  # one clear error for an unknown attention
    return create_vit(attention, size, form=form, chunk_size=chunk_size, backend=backend, **kwargs)


class ImageClassification(LionTask):
    """ViT image classifier.

    Args:
        attention: lion-lit | lion-d | lion-s | lion-d-ms | lion-s-ms | softmax. size: tiny | small | base.
        form, chunk_size, backend: how the LION mixers compute (all forms give the same outputs).
        net: keyword overrides for timm.create_model (img_size, patch_size, in_chans, num_classes, embed_dim,
            depth, num_heads, drop_path_rate, global_pool, class_token, pos_embed, ...).
        timm_name: build this timm model instead (e.g. "deit_tiny_patch16_224" for a reference run).
        label_smoothing: used without mixup (with mixup, `mixup.label_smoothing` applies).
        mixup: timm Mixup arguments {mixup_alpha, cutmix_alpha, prob, switch_prob, mode, label_smoothing};
            null or both alphas 0 disables it.
        optimizer, scheduler: see lion.tasks.base.
        compile: torch.compile the network (in place, checkpoints unchanged).
    """

    data_keys = {"net.num_classes": "num_classes", "net.img_size": "image_size", "net.in_chans": "in_chans"}
    monitor = ("val/acc", "max")

    def __init__(self, attention: str = "lion-s", size: str = "tiny", form: str = "parallel", chunk_size: int = 64,
                 backend: str = "auto", net: dict | None = None, timm_name: str | None = None, family: str = "vit",
                 label_smoothing: float = 0.0, mixup: dict | None = None, optimizer: dict | None = None,
                 scheduler: dict | None = None, compile: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_vit(attention, size, form, chunk_size, backend, net or {}, timm_name)
        if compile:
            self.net.compile()
        self.num_classes = int(self.net.num_classes)
        m = dict(mixup or {})
        self.mixup = None
        if m and (m.get("mixup_alpha", 0) > 0 or m.get("cutmix_alpha", 0) > 0):
            self.mixup = Mixup(num_classes=self.num_classes, **m)
        self.soft_ce = SoftTargetCrossEntropy()
        self.label_smoothing = label_smoothing
        kw = dict(task="multiclass", num_classes=self.num_classes)
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_{name}": torchmetrics.Accuracy(top_k=k, **kw)
            for stage in ("val", "test") for name, k in (("acc", 1), ("acc5", 5)) if k <= self.num_classes})
        self.tokens_per_sample: int | None = None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, C, H, W] -> logits [B, num_classes]."""
        return self.net(pixel_values)

    def _count_tokens(self, x: torch.Tensor) -> None:
        if self.tokens_per_sample is None:
            pe = getattr(self.net, "patch_embed", None)
            p = getattr(pe, "patch_size", (1, 1))
            self.tokens_per_sample = (x.shape[-2] // p[0]) * (x.shape[-1] // p[1]) + \
                int(getattr(self.net, "num_prefix_tokens", 0))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, y = batch["pixel_values"], batch["labels"]
        self._count_tokens(x)
        if self.mixup is not None and x.shape[0] % 2 == 0:
            x, soft = self.mixup(x, y)
            loss = self.soft_ce(self(x), soft)
        else:
            loss = F.cross_entropy(self(x), y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0],
                 sync_dist=True)
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        x, y = batch["pixel_values"], batch["labels"]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=x.shape[0], sync_dist=True)
        for name in ("acc", "acc5"):
            key = f"{stage}_{name}"
            if key in self.metrics:
                self.metrics[key](logits, y)
                self.log(f"{stage}/{name}", self.metrics[key], prog_bar=name == "acc", batch_size=x.shape[0])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")
