"""Task modules (LightningModules): the head, loss and metrics of each task around a LION backbone.

    ImageClassification     ViTs with the DeiT recipe                      (lion.tasks.image)
"""
from lion.tasks.base import LionTask, param_groups
from lion.tasks.image import ImageClassification

__all__ = ["LionTask", "param_groups", "ImageClassification"]
