"""Text tasks on LION BERT (lion.models.bert): masked-LM pre-training and GLUE-style sequence classification.

Batches (docs/DESIGN.md section 3):
    masked LM:      input_ids [B, L], attention_mask [B, L], labels [B, L] (-100 = not predicted; the data
                    collator masks 30% in training and 15% in evaluation)
    classification: input_ids, attention_mask, optional token_type_ids, labels [B] (long, float for STS-B)
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from lion.tasks.base import LionTask
from lion.run.checks import ConfigError

BERT_SIZES = ("base", "large", "custom")


def bert_config(attention: str, size: str, form: str, chunk_size: int, backend: str, net: dict | None, **extra):
    """LionBertConfig from a size preset (base, large; "custom": BERT defaults) and `net` overrides (null dropped)."""
    import lion.models  # noqa: F401  (registers the lion_bert Auto classes)
    from lion.models.bert import PRESETS, LionBertConfig

    if size not in BERT_SIZES:
        raise ConfigError(f"model.size={size!r} is not allowed; use one of: {', '.join(BERT_SIZES)}")
    kwargs = {**PRESETS.get(size, {}), **{k: v for k, v in (net or {}).items() if v is not None}, **extra}
    return LionBertConfig(attention=attention, form=form, chunk_size=chunk_size, backend=backend, **kwargs)


def _encoder_state(path: str) -> dict[str, torch.Tensor]:
    """Weights of a pre-training run: a lion checkpoint (.ckpt, keys 'net.*') or an exported model directory
    (model.safetensors / pytorch_model.bin). Keys returned as in the transformers model ('bert.*', 'cls.*')."""
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "model.safetensors").is_file():
            from safetensors.torch import load_file
            return load_file(str(p / "model.safetensors"))
        if (p / "pytorch_model.bin").is_file():
            return torch.load(p / "pytorch_model.bin", map_location="cpu", weights_only=True)
        raise ConfigError(f"model.pretrained={path!r} holds no model.safetensors or pytorch_model.bin; give the "
                          f"hf/ directory or a .ckpt of a masked-LM run")
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt)
    return {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")} or state


class MaskedLM(LionTask):
    """Masked-language-model pre-training of LION BERT; the MLM head scores only the masked positions.

    Args:
        attention: registry name. size: base | large | custom (sizes then all from `net`).
        form, chunk_size, backend: the LION mixer's form. net: LionBertConfig overrides (hidden_size,
            num_hidden_layers, num_attention_heads, intermediate_size, max_position_embeddings, vocab_size,
            hidden_dropout_prob, feature_map, normalize, ...); vocab_size and pad_token_id come from the data.
        optimizer, scheduler: see lion.tasks.base. compile: torch.compile the network.

    Logs: train/loss, val/loss, val/acc (MLM accuracy over the predicted positions), val/ppl.
    `export_pretrained(dir)` writes the transformers model (AutoModelForMaskedLM.from_pretrained(dir)).
    """

    data_keys = {"net.vocab_size": "vocab_size", "net.pad_token_id": "pad_token_id"}
    monitor = ("val/acc", "max")

    def __init__(self, attention: str = "lion-s", size: str = "base", form: str = "auto", chunk_size: int = 64,
                 backend: str = "auto", net: dict | None = None, family: str = "bert", optimizer: dict | None = None,
                 scheduler: dict | None = None, compile: bool = False):
        super().__init__()
        self.save_hyperparameters()
        from lion.models.bert import LionBertForMaskedLM

        self.net = LionBertForMaskedLM(bert_config(attention, size, form, chunk_size, backend, net))
        if compile:
            self.net.compile()
        self.metrics = nn.ModuleDict({f"{s}_{m}": torchmetrics.MeanMetric() for s in ("val", "test")
                                      for m in ("acc", "loss")})

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        """Logits [N, vocab] at the N positions with labels != -100, and those labels [N]."""
        h = self.net.bert(input_ids, attention_mask, token_type_ids, return_dict=True).last_hidden_state
        sel = labels != -100
        return self.net.cls(h[sel]), labels[sel]

    def _step(self, batch):
        logits, target = self(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                              batch["labels"])
        if target.numel() == 0:
            return logits.sum() * 0.0, logits, target
        return F.cross_entropy(logits.float(), target), logits, target

    def training_step(self, batch, batch_idx):
        loss, _, _ = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=batch["input_ids"].shape[0], sync_dist=True)
        return loss

    def _eval_step(self, batch, stage):
        loss, logits, target = self._step(batch)
        n = target.numel()
        if n == 0:
            return
        acc = (logits.argmax(-1) == target).float().mean()
        self.metrics[f"{stage}_acc"].update(acc, weight=n)
        self.metrics[f"{stage}_loss"].update(loss.detach(), weight=n)

    def _eval_end(self, stage):
        acc, loss = self.metrics[f"{stage}_acc"], self.metrics[f"{stage}_loss"]
        if acc.update_count == 0 and not self.trainer.world_size > 1:
            return
        a, lo = acc.compute(), loss.compute()
        self.log_dict({f"{stage}/acc": a, f"{stage}/loss": lo, f"{stage}/ppl": torch.exp(lo.clamp(max=50))},
                      prog_bar=stage == "val")
        acc.reset()
        loss.reset()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self._eval_end("val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self):
        self._eval_end("test")

    def export_pretrained(self, directory) -> None:
        """Save the transformers model (config + safetensors) for fine-tuning: model.pretrained=<directory>."""
        self.net.save_pretrained(str(directory))


# ---------------------------------------------------------------------------------------------- GLUE

METRICS = ("accuracy", "f1", "matthews_corrcoef", "pearson", "spearman")

# How one number per GLUE task is made from its metrics: the (split index, metric) pairs that are averaged. Split 0 is
# the first validation split (MNLI: matched), 1 the second (MNLI: mismatched).
# PAPER_SCORES: what the paper reports (the authors' glue.py averages every metric of every evaluator of a task:
# MNLI matched and mismatched accuracy, QQP accuracy and F1; their evaluators compute F1 alone for MRPC, Spearman
# alone for STS-B, MCC for CoLA, accuracy for the rest).
PAPER_SCORES: dict[str, tuple[tuple[int, str], ...]] = {
    "mnli": ((0, "accuracy"), (1, "accuracy")), "mrpc": ((0, "f1"),), "stsb": ((0, "spearman"),),
    "qqp": ((0, "accuracy"), (0, "f1")), "cola": ((0, "matthews_corrcoef"),), "sst2": ((0, "accuracy"),),
    "qnli": ((0, "accuracy"),), "rte": ((0, "accuracy"),)}
# GLUE_BENCHMARK_SCORES: the GLUE benchmark's own task score (Wang et al. 2019): the unweighted mean of the task's
# metrics (MRPC and QQP: F1 and accuracy; STS-B: Pearson and Spearman), MNLI the mean of matched and mismatched.
GLUE_BENCHMARK_SCORES: dict[str, tuple[tuple[int, str], ...]] = {
    **PAPER_SCORES, "mrpc": ((0, "f1"), (0, "accuracy")), "stsb": ((0, "pearson"), (0, "spearman"))}


def task_scores(task: str | None, values: dict[tuple[int, str], float]) -> dict[str, float]:
    """{"score": the paper's score, "glue_score": the GLUE benchmark's} from metric values {(split, metric): v}.
    A task outside GLUE (or a GLUE task missing a metric) scores the mean of the first split's metrics for both."""
    def mean(pairs):
        return sum(float(values[p]) for p in pairs) / len(pairs)

    fallback = [p for p in values if p[0] == 0]
    out = {}
    for key, table in (("score", PAPER_SCORES), ("glue_score", GLUE_BENCHMARK_SCORES)):
        pairs = table.get(task or "")
        if pairs and all(p in values for p in pairs):
            out[key] = mean(pairs)
        elif fallback:
            out[key] = mean(fallback)
    return out


def _metric(name: str, num_labels: int) -> torchmetrics.Metric:
    if name == "accuracy":
        return torchmetrics.Accuracy(task="multiclass", num_classes=max(num_labels, 2))
    if name == "f1":
        return torchmetrics.F1Score(task="binary")
    if name == "matthews_corrcoef":
        return torchmetrics.MatthewsCorrCoef(task="multiclass", num_classes=max(num_labels, 2))
    if name == "pearson":
        return torchmetrics.PearsonCorrCoef()
    if name == "spearman":
        return torchmetrics.SpearmanCorrCoef()
    raise ConfigError(f"model.metric_names contains {name!r}; allowed: {', '.join(METRICS)}")


def split_tag(name: str) -> str:
    """'validation_mismatched' -> 'mismatched'; 'validation' -> ''."""
    for prefix in ("validation_", "validation", "test_", "test", "val_", "val"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


class SequenceClassification(LionTask):
    """Fine-tuning LION BERT on a sentence(-pair) task: GLUE (all eight) or any text classification set.

    Args:
        attention, size, form, chunk_size, backend, net: as MaskedLM (net: LionBertConfig overrides).
        num_labels: classes (1 = regression, STS-B); from the data module.
        metric_names: from the data (GLUE: accuracy; f1 + accuracy for MRPC/QQP; matthews_corrcoef for CoLA;
            pearson + spearman for STS-B). val_split_names: one validation loader each (MNLI matched, mismatched).
        task_name: the GLUE task (from the data; only for the record).
        pretrained: a masked-LM run's checkpoint (.ckpt) or exported hf/ directory; its encoder is loaded and must
            match attention and sizes.

    Logs per split s (tag '' for the first/only split, else e.g. 'mismatched/'): val/<tag><metric>, val/<tag>acc
    (accuracy, when computed), val/<tag>loss; over all splits: val/score, the task's score as the paper computes it
    (PAPER_SCORES: MNLI mean of matched and mismatched accuracy, MRPC F1, STS-B Spearman, QQP mean of accuracy and F1,
    CoLA MCC, the rest accuracy), and val/glue_score, the GLUE benchmark's (GLUE_BENCHMARK_SCORES). The same under
    test/ for the test loaders.
    """

    data_keys = {"net.vocab_size": "vocab_size", "net.pad_token_id": "pad_token_id", "num_labels": "num_labels",
                 "metric_names": "metrics", "val_split_names": "val_split_names", "task_name": "task"}
    monitor = ("val/score", "max")

    def __init__(self, attention: str = "lion-s", size: str = "base", form: str = "auto", chunk_size: int = 64,
                 backend: str = "auto", net: dict | None = None, family: str = "bert", num_labels: int = 2,
                 metric_names=("accuracy",), val_split_names=("validation",), task_name: str | None = None,
                 pretrained: str | None = None, optimizer: dict | None = None, scheduler: dict | None = None,
                 compile: bool = False):
        super().__init__()
        self.save_hyperparameters()
        from lion.models.bert import LionBertForSequenceClassification

        extra = dict(num_labels=num_labels)
        if num_labels == 1:
            extra["problem_type"] = "regression"
        self.net = LionBertForSequenceClassification(bert_config(attention, size, form, chunk_size, backend, net,
                                                                 **extra))
        if pretrained:
            self.load_encoder(pretrained)
        if compile:
            self.net.compile()
        self.num_labels = num_labels
        self.metric_names = tuple(metric_names)
        self.tags = [split_tag(s) for s in (val_split_names or ("validation",))]
        self.metrics = nn.ModuleDict({
            f"{stage}_{i}_{m}": _metric(m, num_labels) for stage in ("val", "test") for i in range(len(self.tags))
            for m in self.metric_names})

    def load_encoder(self, path: str) -> None:
        """Load the `bert.*` weights of a pre-training run; the classifier (and pooler, if absent) start fresh."""
        state = _encoder_state(path)
        if not any(k.startswith("bert.") for k in state):  # a base-model folder (LionBertModel.save_pretrained)
            state = {f"bert.{k}": v for k, v in state.items()}
        state = {k: v for k, v in state.items() if k.startswith("bert.")}
        result = self.net.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(("classifier.", "bert.pooler."))]
        if missing or result.unexpected_keys:
            raise ConfigError(f"model.pretrained={path!r} does not fit this model (missing {missing[:3]}, unexpected "
                              f"{list(result.unexpected_keys)[:3]}); use the attention and size of the pre-training "
                              f"run")

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """logits [B, num_labels]."""
        return self.net(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        return_dict=True).logits

    def _loss(self, logits, labels):
        if self.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels.long())

    def training_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        loss = self._loss(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=batch["input_ids"].shape[0], sync_dist=True)
        return loss

    def _eval_step(self, batch, stage, idx):
        logits = self(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        y = batch["labels"]
        tag = f"{self.tags[idx]}/" if self.tags[idx] and idx > 0 else ""
        self.log(f"{stage}/{tag}loss", self._loss(logits, y), batch_size=y.shape[0], add_dataloader_idx=False,
                 sync_dist=True)
        pred = logits.squeeze(-1).float() if self.num_labels == 1 else logits.argmax(-1)
        for m in self.metric_names:
            metric = self.metrics[f"{stage}_{idx}_{m}"]
            metric.update(pred, y.float() if self.num_labels == 1 else y.long())

    def compute_scores(self, stage: str) -> dict[str, torch.Tensor]:
        """Every metric of every split of `stage` (then reset), the paper's score and the GLUE benchmark's."""
        out, values = {}, {}
        for idx, t in enumerate(self.tags):
            tag = f"{t}/" if t and idx > 0 else ""
            for m in self.metric_names:
                metric = self.metrics[f"{stage}_{idx}_{m}"]
                if metric.update_count == 0:
                    continue
                v = torch.as_tensor(metric.compute()).float()
                metric.reset()
                out[f"{stage}/{tag}{m}"] = v
                values[(idx, m)] = v
                if m == "accuracy":
                    out[f"{stage}/{tag}acc"] = v
        for key, v in task_scores(self.hparams.get("task_name"), values).items():
            out[f"{stage}/{key}"] = torch.as_tensor(v).float()
        return out

    def _eval_end(self, stage):
        out = self.compute_scores(stage)
        if out:
            self.log_dict(out, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, "val", dataloader_idx)

    def on_validation_epoch_end(self):
        self._eval_end("val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, "test", dataloader_idx)

    def on_test_epoch_end(self):
        self._eval_end("test")
