"""Distillation of a pretrained softmax encoder into its LION twin (lion.convert) on unlabeled data.

The student is `linearize(teacher, attention)`: the teacher's embeddings, projections, MLPs and norms with a LION
mixer. A transformers / timm teacher is used through its exact softmax twin (`linearize(teacher, "softmax")`, equal
to the teacher to float rounding; a lion model is used as it is), so teacher and student have the same modules,
block for block, for BERT and ViT alike. It is
frozen, in eval mode, and not part of the checkpoints (they hold the student only; a resumed run rebuilds the
teacher from its spec).

Losses (`loss`), each the mean over the blocks of a relative squared error ||s - t||^2 / ||t||^2 over real tokens:

    "hidden":     the output of every block of the student, run on its own, against the teacher's;
    "attention":  every student mixer, fed the teacher's input of that mixer, against the teacher's mixer output
                  (layer-local: only the mixers train; no gradient flows between blocks);
    "both":       hidden_weight * hidden + attention_weight * attention.

Validation logs val/loss, val/hidden (relative error of the blocks' outputs, whatever the training loss) and val/cos:
the cosine similarity between teacher and student mean-pooled final token states (the sentence embedding of
sentence-transformers models; the mean of the tokens for ViTs), the metric the best checkpoint is picked by.
When the run ends, the student is exported to <run>/hf: a transformers folder for BERT (AutoModel.from_pretrained,
and model.pretrained=<run>/hf of a fine-tuning run), a timm weights file + arguments for ViTs
(lion.convert.load_vit). `compare_sentence_embeddings` measures val/cos on any texts for saved models.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from lion.tasks.base import LionTask

LOSSES = ("hidden", "attention", "both")


def _parts(model: nn.Module):
    """(encoder, kind) of a twin: kind "bert" (a LionBert* model) or "vit" (a LionViT, itself the encoder)."""
    bert = getattr(model, "bert", model)
    if hasattr(bert, "embeddings") and hasattr(bert, "encoder"):
        return bert, "bert"
    return model, "vit"


def embed(model: nn.Module, batch: dict):
    """(tokens [B, L, C] after the embeddings, attention_mask or None, mixer kwargs) of a twin for a batch."""
    body, kind = _parts(model)
    if kind == "bert":
        x = body.embeddings(batch["input_ids"], batch.get("token_type_ids"))
        return x, batch.get("attention_mask"), {}
    x, grid = body.embed(batch["pixel_values"])
    return x, None, dict(grid_size=grid, num_prefix_tokens=body.num_prefix_tokens)


def encoder_of(model: nn.Module):
    body, kind = _parts(model)
    return body.encoder if kind == "bert" else body


def run_blocks(model: nn.Module, batch: dict, capture_attention: bool = False):
    """Hidden states [input of block 0, output of every block], the final token states (after the final norm),
    the mask, and (with capture_attention) [(mixer args (input, mask), mixer output, mixer kwargs)] of every
    block."""
    x, mask, kw = embed(model, batch)
    enc = encoder_of(model)
    captured, hooks = [], []
    if capture_attention:
        for blk in enc.blocks:
            hooks.append(blk.attn.register_forward_hook(
                lambda m, args, kwargs, out: captured.append((args, out, kwargs)), with_kwargs=True))
    try:
        h, hidden = enc.forward_blocks(x, mask, return_hidden_states=True, **kw)
    finally:
        for hk in hooks:
            hk.remove()
    return hidden, enc.norm(h), mask, captured


def relative_error(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """sum ||s_i - t_i||^2 / sum ||t_i||^2 over the real tokens i (float32)."""
    d = (s.float() - t.float()).pow(2).sum(-1)
    n = t.float().pow(2).sum(-1)
    if mask is not None:
        m = mask.to(d.dtype)
        d, n = d * m, n * m
    return d.sum() / n.sum().clamp_min(1e-12)


def mean_pool(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return h.mean(1)
    m = mask.to(h.dtype)[..., None]
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class Distillation(LionTask):
    """Train the LION twin of `teacher` to match it on unlabeled data (data=unlabeled_*).

    Args:
        teacher: "minilm", a transformers BERT folder or hub id, "timm:<name>" (+ teacher_weights, timm_kwargs) or a
            lion image run (.ckpt / run directory); see lion.convert.load_teacher.
        attention: the student's mixer (lion-lit, lion-d, lion-s; lion-d-ms, lion-s-ms for ViTs).
        loss: "hidden", "attention" or "both" (module docstring); hidden_weight, attention_weight for "both".
        decay_init, decay_horizon, mixer: the twin's decay initialisation and mixer options (lion.convert).
        net: further twin constructor arguments (BERT: LionBertConfig fields; ViT: LionViT arguments).
        dropout: keep the student's dropout during distillation (False: the student trains in eval mode, so it
            matches the teacher's deterministic outputs; the exported config keeps its dropout rates).
        form, chunk_size, backend: the student's form.
        optimizer, scheduler: lion.tasks.base.
    """

    monitor = ("val/cos", "max")

    def __init__(self, teacher: str = "minilm", attention: str = "lion-s", loss: str = "both",
                 hidden_weight: float = 1.0, attention_weight: float = 1.0, decay_init: str = "default",
                 decay_horizon=None, mixer: dict | None = None, net: dict | None = None,
                 teacher_weights: str | None = None, timm_kwargs: dict | None = None, dropout: bool = False,
                 form: str = "auto", chunk_size: int = 64, backend: str = "auto", optimizer: dict | None = None,
                 scheduler: dict | None = None, compile: bool = False):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"model.loss={loss!r} is unknown; use one of {LOSSES}")
        self.save_hyperparameters()
        from lion.convert import linearize, load_teacher

        from lion.models.bert import LionBertPreTrainedModel
        from lion.models.vit import LionViT

        source = load_teacher(teacher, teacher_weights, timm_kwargs)
        # a lion model already has the student's modules (whatever its mixer); a foreign one is re-expressed exactly
        ref = (copy.deepcopy(source) if isinstance(source, (LionViT, LionBertPreTrainedModel))
               else linearize(source, "softmax")[0])
        self.net, self.report = linearize(source, attention, decay_init=decay_init, decay_horizon=decay_horizon,
                                          mixer=mixer, **(net or {}))
        self.net.train()
        if attention != "softmax":
            self.net.set_form(form, chunk_size, backend)
        ref.eval().requires_grad_(False)
        object.__setattr__(self, "_teacher", ref)  # not a submodule: never in the checkpoint or the optimizer
        self.loss_name, self.dropout = loss, bool(dropout)
        if compile:
            self.net.compile()
        self.metrics = nn.ModuleDict({f"{s}_{m}": torchmetrics.MeanMetric() for s in ("val", "test")
                                      for m in ("loss", "hidden", "cos")})

    # ---------------------------------------------------------------- modes
    def train(self, mode: bool = True):
        super().train(mode)
        if mode and not self.dropout:
            self.net.eval()  # dropout off: match the teacher's deterministic outputs
        return self

    @property
    def teacher(self) -> nn.Module:
        t = self._teacher
        p = next(self.net.parameters())
        if next(t.parameters()).device != p.device:
            t.to(p.device)
        return t

    # ---------------------------------------------------------------- losses
    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            t_hidden, t_final, mask, t_attn = run_blocks(self.teacher, batch,
                                                         capture_attention=self.loss_name != "hidden")
        out = {}
        if self.loss_name in ("hidden", "both") or not self.training:
            s_hidden, s_final, _, _ = run_blocks(self.net, batch)
            out["hidden"] = torch.stack([relative_error(s, t, mask) for s, t in zip(s_hidden[1:], t_hidden[1:])]
                                        ).mean()
            out["cos"] = F.cosine_similarity(mean_pool(s_final.float(), mask), mean_pool(t_final.float(), mask),
                                             dim=-1)
        if self.loss_name in ("attention", "both"):
            enc = encoder_of(self.net)
            errs = []
            for blk, (args, y_t, kw) in zip(enc.blocks, t_attn):
                y_s = blk.attn(*args, **kw)
                errs.append(relative_error(y_s, y_t, mask))
            out["attention"] = torch.stack(errs).mean()
        h = self.hparams
        out["loss"] = (out["hidden"] if self.loss_name == "hidden" else out["attention"] if self.loss_name ==
                       "attention" else h.hidden_weight * out["hidden"] + h.attention_weight * out["attention"])
        return out

    def _batch_size(self, batch: dict) -> int:
        return next(iter(batch.values())).shape[0]

    def training_step(self, batch, batch_idx):
        out = self.losses(batch)
        self.log("train/loss", out["loss"], prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=self._batch_size(batch), sync_dist=True)
        return out["loss"]

    def _eval_step(self, batch, stage):
        out = self.losses(batch)
        n = self._batch_size(batch)
        self.metrics[f"{stage}_loss"].update(out["loss"].detach(), weight=n)
        self.metrics[f"{stage}_hidden"].update(out["hidden"].detach(), weight=n)
        self.metrics[f"{stage}_cos"].update(out["cos"].detach())

    def _eval_end(self, stage):
        if self.metrics[f"{stage}_cos"].update_count == 0 and not self.trainer.world_size > 1:
            return
        vals = {f"{stage}/{m}": self.metrics[f"{stage}_{m}"].compute() for m in ("loss", "hidden", "cos")}
        self.log_dict(vals, prog_bar=stage == "val")
        for m in ("loss", "hidden", "cos"):
            self.metrics[f"{stage}_{m}"].reset()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self._eval_end("val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self):
        self._eval_end("test")

    # ---------------------------------------------------------------- export
    def export_pretrained(self, directory) -> None:
        """The student, loadable like any model of its family (lion.convert.save_twin)."""
        from lion.convert import save_twin, teacher_folder

        save_twin(self.net, directory, self.report, tokenizer_from=teacher_folder(self.hparams.teacher))


@torch.no_grad()
def compare_sentence_embeddings(teacher: nn.Module, students: dict[str, nn.Module], texts: list[str], tokenizer,
                                max_length: int = 128, batch_size: int = 64) -> dict[str, float]:
    """Mean cosine similarity between the teacher's and each student's mean-pooled sentence embeddings
    (sentence-transformers' pooling for all-MiniLM-L6-v2) over `texts`. Models are transformers-style encoders
    (input_ids, attention_mask -> last_hidden_state); all are put in eval mode."""
    sums = {k: 0.0 for k in students}
    for m in (teacher, *students.values()):
        m.eval()
    for i in range(0, len(texts), batch_size):
        b = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
        kw = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        t = mean_pool(teacher(**kw).last_hidden_state.float(), b["attention_mask"])
        for k, m in students.items():
            s = mean_pool(m(**kw).last_hidden_state.float(), b["attention_mask"])
            sums[k] += F.cosine_similarity(s, t, dim=-1).sum().item()
    return {k: v / len(texts) for k, v in sums.items()}
