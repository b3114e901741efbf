"""Shared plumbing of the data modules: errors, the options-keyed atomic cache, hub access that never hangs,
and the DataLoader settings every module uses.

Cache layout: ``<data_dir>/cache/<name>-<hash of the preprocessing options>/`` holding the processed arrays and
``options.json``. A cache directory only ever appears by ``os.replace`` of a finished temporary directory, so a
crash or a corrupt input leaves no directory a later run would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class DataNotFoundError(FileNotFoundError):
    """Input data is missing: the message names what, where it was looked for, and how to get it."""


class CorruptDataError(ValueError):
    """An input file exists but cannot be read (truncated, wrong format)."""


def missing(what: str, looked: Sequence[str | os.PathLike] | str, how: str) -> DataNotFoundError:
    """Build the one message every module uses for missing data."""
    looked = [looked] if isinstance(looked, (str, os.PathLike)) else list(looked)
    where = "\n".join(f"  - {p}" for p in looked)
    return DataNotFoundError(f"{what} not found. Looked in:\n{where}\nTo get it: {how}")


def text_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of a UTF-8 text file (newlines kept, as `open(path, newline="")` gives them); a line that is not
    UTF-8 raises CorruptDataError naming the file, the line and the byte, instead of a bare UnicodeDecodeError."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorruptDataError(
                    f"{path}, line {line_no}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                    f"the file is corrupt or in another encoding: regenerate it, or convert it to UTF-8") from None


def first_existing(candidates: Sequence[Path], test: Callable[[Path], bool] = Path.exists) -> Path | None:
    for c in candidates:
        if test(Path(c)):
            return Path(c)
    return None


# ---------------------------------------------------------------------------------------------- cache


def options_hash(options: dict[str, Any]) -> str:
    """Stable 16-hex-digit hash of a JSON-able options dict (key order does not matter)."""
    blob = json.dumps(options, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_path(data_dir: str | os.PathLike, name: str, options: dict[str, Any]) -> Path:
    return Path(data_dir) / "cache" / f"{name}-{options_hash(options)}"


@contextlib.contextmanager
def atomic_dir(final: Path, options: dict[str, Any] | None = None) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``final``; on success write ``options.json`` and rename it to
    ``final``; on any exception remove it. If another process finished ``final`` first, ours is discarded."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if options is not None:
            (tmp / "options.json").write_text(json.dumps(options, sort_keys=True, indent=1, default=str))
        try:
            os.replace(tmp, final)
        except OSError:  # final exists and is non-empty: a concurrent writer won
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file via a temporary name and rename, so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_fingerprint(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of input files: part of a cache key, so editing the raw data rebuilds the cache."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
    return out


# ---------------------------------------------------------------------------------------------- hub


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the Hugging Face endpoint with a short timeout (no retries, never hangs)."""
    if hub_offline():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_hub_dataset(path: str, name: str | None = None, *, how: str, **kwargs):
    """``datasets.load_dataset`` for a hub id or a local path, failing fast with one clear message.

    A local directory saved with ``save_to_disk`` is loaded with ``load_from_disk`` (``name`` and ``kwargs`` do
    not apply); another local directory goes to ``load_dataset`` (data files, a script). For a hub id, an
    unreachable hub (3 s probe) is reported at once instead of after ``datasets``' retries; with
    ``HF_HUB_OFFLINE=1`` the local HF cache is used.
    """
    import datasets

    p = Path(os.path.expanduser(path))
    if p.exists():
        if (p / "dataset_dict.json").exists() or (p / "dataset_info.json").exists() or (p / "state.json").exists():
            return datasets.load_from_disk(str(p))
        try:
            return datasets.load_dataset(str(p), name, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise CorruptDataError(f"Could not load the dataset at {p} ({name=}): {type(e).__name__}: {e}") from e
    what = f"Dataset '{path}'" + (f" (config '{name}')" if name else "")
    if not hub_offline() and not hub_reachable():
        raise missing(what, [f"the Hugging Face Hub ({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}: "
                             f"unreachable, 3 s connect timeout)", f"local path {p} (does not exist)"],
                      f"{how} If it is in your Hugging Face cache already, set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1.")
    try:
        return datasets.load_dataset(path, name, **kwargs)
    except Exception as e:  # noqa: BLE001
        if isinstance(e, (ConnectionError, FileNotFoundError)) or "offline" in str(e).lower() or "reach" in str(e):
            raise missing(what, [f"the Hugging Face Hub / local HF cache (offline={hub_offline()})",
                                 f"local path {p} (does not exist)"], how) from e
        raise


# ---------------------------------------------------------------------------------------------- loaders


class BaseDataModule(L.LightningDataModule):
    """DataLoader settings shared by all modules. Lightning injects its DistributedSampler when distributed.

    Args:
        data_dir: root of raw data and of ``cache/``.
        batch_size: per-device training batch size; ``eval_batch_size`` defaults to it.
        num_workers, pin_memory (None = when CUDA is available), persistent_workers, prefetch_factor: DataLoader.
        drop_last: drop the last incomplete training batch.
        seed: seed of any split or generation the module does.
    """

    def __init__(self, data_dir: str = "data", batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 2, pin_memory: bool | None = None, persistent_workers: bool = False,
                 prefetch_factor: int | None = None, drop_last: bool = False, seed: int = 0):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data_dir = Path(os.path.expanduser(str(data_dir)))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self.drop_last = drop_last
        self.seed = seed
        self.collate_fn: Callable | None = None
        self.eval_collate_fn: Callable | None = None

    def resume_exactly(self, seed: int, repeats: int = 1) -> None:
        """Make the training loader resumable mid-epoch, exactly (lion.run.resumable): its order is seeded by
        (seed, epoch) and a resumed epoch skips the batches the checkpoint had served. The pipeline calls this."""
        self._resume_seed, self._resume_repeats = int(seed), int(repeats)

    def _loader(self, dataset: Dataset, train: bool, sampler=None, collate_fn: Callable | None = None) -> DataLoader:
        loader = self._plain_loader(dataset, train, sampler, collate_fn)
        if train and getattr(self, "_resume_seed", None) is not None:
            from lion.run.resumable import resumable

            loader = resumable(loader, seed=self._resume_seed, repeats=self._resume_repeats)
        return loader

    def _plain_loader(self, dataset: Dataset, train: bool, sampler=None,
                      collate_fn: Callable | None = None) -> DataLoader:
        collate = collate_fn or (self.collate_fn if train else (self.eval_collate_fn or self.collate_fn))
        g = torch.Generator()
        g.manual_seed(self.seed)
        return DataLoader(
            dataset, batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None, sampler=sampler, drop_last=train and self.drop_last,
            num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor, collate_fn=collate, generator=g if train else None,
        )

    # Modules that keep their splits in ``self.datasets`` ({"train", "val", "test"} -> Dataset) get these loaders.
    def train_dataloader(self):
        return self._loader(self._need("datasets")["train"], train=True)

    def val_dataloader(self):
        return self._loader(self._need("datasets")["val"], train=False)

    def test_dataloader(self):
        return self._loader(self._need("datasets")["test"], train=False)

    def _need(self, attr: str):
        value = getattr(self, attr, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() (or let the Trainer do it) before using {attr}")
        return value


def split_indices(n: int, split: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """The train / val / test indices of a packaged set of n items: a permutation seeded by `seed`, cut by the fractions
    `split` (the packaged image sets, sequential MNIST and Rotten Tomatoes: the same seed and fractions give the same parts)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_tr, n_va = int(round(split[0] * n)), int(round(split[1] * n))
    return {"train": perm[:n_tr], "val": perm[n_tr:n_tr + n_va], "test": perm[n_tr + n_va:]}
