"""Task modules (LightningModules): the head, loss and metrics of each task around a LION backbone.

    ImageClassification      ViTs in timm, DeiT recipe (mixup/cutmix, label smoothing, EMA)   lion.tasks.image
    MaskedLM                 LION BERT pre-training, MLM accuracy                            lion.tasks.text
    SequenceClassification   LION BERT fine-tuning on GLUE (task metrics, MNLI m/mm)          lion.tasks.text
    LRAClassification        Long Range Arena, single sequence and retrieval                 lion.tasks.lra

All share lion.tasks.base.LionTask: AdamW with no-decay groups, lr scaling by the global batch, warm-up + cosine or
linear schedules, `set_form(form, chunk_size)`.
"""
from lion.tasks.base import LionTask, WarmupSchedule, param_groups
from lion.tasks.image import ImageClassification, vit_name
from lion.tasks.lra import LRAClassification
from lion.tasks.text import MaskedLM, SequenceClassification

__all__ = ["LionTask", "WarmupSchedule", "param_groups", "ImageClassification", "vit_name", "MaskedLM",
           "SequenceClassification", "LRAClassification"]
