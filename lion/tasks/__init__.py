"""Task modules (LightningModules): the head, loss and metrics of each task around a LION backbone.

    ImageClassification      ViTs in timm, DeiT recipe (mixup/cutmix, label smoothing, EMA)   lion.tasks.image
    MaskedLM                 LION BERT pre-training, MLM accuracy                            lion.tasks.text
    SequenceClassification   LION BERT fine-tuning on GLUE (task metrics, MNLI m/mm)          lion.tasks.text
    LRAClassification        Long Range Arena, single sequence and retrieval                 lion.tasks.lra
    Distillation             a LION twin learning from its softmax teacher (docs/DISTILL.md)  lion.tasks.distill

All share lion.tasks.base.LionTask: AdamW with no-decay groups, lr scaling by the global batch, warm-up + cosine or
linear schedules, `set_form(form, chunk_size)`.
"""
from lion.tasks.base import LionTask, WarmupSchedule, param_groups
from lion.tasks.image import ImageClassification, vit_name
from lion.tasks.lra import LRAClassification
from lion.tasks.distill import Distillation
from lion.tasks.text import MaskedLM, SequenceClassification

# The allow-list of task classes a checkpoint may name (its `lion_task` key): a checkpoint is data, so it selects a
# class from this table by name and never has a dotted path imported. A new task is one entry here.
TASKS: dict[str, type[LionTask]] = {cls.__name__: cls for cls in (ImageClassification, MaskedLM,
                                                                  SequenceClassification, LRAClassification,
                                                                  Distillation)}


def task_class(name: str) -> type[LionTask]:
    """The task class a checkpoint names: 'ImageClassification' or the dotted path earlier versions wrote
    ('lion.tasks.image.ImageClassification'); anything else is refused."""
    short = str(name).rsplit(".", 1)[-1]
    cls = TASKS.get(short)
    if cls is None or (short != name and name != f"{cls.__module__}.{cls.__qualname__}"):
        raise ValueError(f"the checkpoint names the task {name!r}, which is not one of lion's tasks "
                         f"({', '.join(sorted(TASKS))}); only checkpoints written by lion's train.py can be loaded")
    return cls


__all__ = ["TASKS", "task_class", "LionTask", "WarmupSchedule", "param_groups", "ImageClassification", "vit_name",
           "MaskedLM", "SequenceClassification", "LRAClassification", "Distillation"]
