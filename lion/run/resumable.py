"""A training DataLoader that resumes mid-epoch exactly, on one process or many.

Lightning saves the `state_dict()` of a training DataLoader in every checkpoint and hands it back through
`load_state_dict()` on resume. `resumable(loader, seed)` rebuilds a plain DataLoader (same dataset, batch size,
collate function, workers) around `ResumableSampler`:

- the order of epoch e is a permutation seeded by (seed, e) alone, so a restarted process sees the same order;
- it is sharded over ranks like `DistributedSampler` (Lightning leaves a DistributedSampler in place);
- `repeats > 1` is repeated augmentation (Hoffer et al. 2020, DeiT): each index appears `repeats` times per epoch,
  spread over the ranks, and each rank keeps ceil(N / world) of them so an epoch keeps its length;
- after `load_state_dict` the first epoch skips the batches the checkpoint had consumed, without loading them.

The loader also owns its generator (re-seeded per epoch), so creating an iterator never draws from the global RNG:
with the RNG state restored by `lion.callbacks.ExactResume`, a resumed run repeats the uninterrupted one bit for bit
(exact for num_workers=0 or deterministic transforms; with random augmentation in worker processes the resumed
epoch's augmentations differ, its order does not).
Loaders with a custom sampler or batch sampler, or an IterableDataset, are returned unchanged.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, RandomSampler
from torch.utils.data import SequentialSampler


class ResumableSampler(DistributedSampler):
    """Indices of one rank for one epoch: shuffled by (seed, epoch) or in order, optionally repeated."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, repeats: int = 1):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        if repeats < 1:
            raise ValueError(f"ResumableSampler: repeats must be >= 1, got {repeats}")
        self.repeats = repeats
        if repeats > 1:  # each rank keeps ceil(N / world) of the N * repeats repeated indices
            self.num_samples = math.ceil(len(dataset) / num_replicas)
            self.total_size = self.num_samples * num_replicas
        self.start = 0  # samples of this rank to skip in the next iteration (set on resume)
        self._resume_epoch = None

    def set_epoch(self, epoch: int) -> None:
        if self._resume_epoch is not None and epoch != self._resume_epoch:
            self.start, self._resume_epoch = 0, None  # the resumed epoch is over: start the next from 0
        super().set_epoch(epoch)

    def indices(self) -> list[int]:
        """All indices of this rank for the current epoch (before skipping)."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.repeats > 1:
            order = order.repeat_interleave(self.repeats)
            need = math.ceil(order.numel() / self.num_replicas) * self.num_replicas
            order = torch.cat([order, order[: need - order.numel()]])
            return order[self.rank::self.num_replicas][: self.num_samples].tolist()
        if self.drop_last:
            order = order[: self.total_size]
        else:
            pad = self.total_size - n
            order = torch.cat([order, order.repeat(math.ceil(pad / max(n, 1)))[:pad]]) if pad > 0 else order
        return order[self.rank:self.total_size:self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self.indices()[start:])


class ResumableDataLoader(DataLoader):
    """DataLoader over a `ResumableSampler` whose `state_dict` records how many batches of the epoch were served."""

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = seed
        self._served = 0

    @property
    def _sampler(self) -> ResumableSampler:
        return self.batch_sampler.sampler if self.batch_sampler is not None else self.sampler

    def __iter__(self):
        if self.generator is not None:  # worker seeds depend on (seed, epoch) only
            self.generator.manual_seed(self.seed * 1_000_003 + self._sampler.epoch)
        skipped = self._sampler.start // max(self.batch_size or 1, 1)
        self._served = skipped
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": int(self._sampler.epoch), "batches": int(self._served), "batch_size": int(self.batch_size)}

    def load_state_dict(self, state: dict) -> None:
        s = self._sampler
        if state.get("batch_size") != self.batch_size:
            raise ValueError(f"cannot resume mid-epoch: the checkpoint was written with batch size "
                             f"{state.get('batch_size')}, this run uses {self.batch_size}; resume with the same "
                             f"data.batch_size and devices")
        s.start = state["batches"] * self.batch_size
        s._resume_epoch = state["epoch"]
        s.set_epoch(state["epoch"])


def world() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, or (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def resumable(loader: DataLoader, seed: int, repeats: int = 1) -> DataLoader:
    """Rebuild `loader` around a ResumableSampler, or return it unchanged if its sampling is custom."""
    if isinstance(loader, ResumableDataLoader) or not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, IterableDataset) or loader.batch_size is None:
        return loader
    bs = loader.batch_sampler
    if type(bs) is not BatchSampler or type(loader.sampler) not in (RandomSampler, SequentialSampler):
        return loader
    num_replicas, rank = world()
    sampler = ResumableSampler(loader.dataset, num_replicas=num_replicas, rank=rank,
                               shuffle=isinstance(loader.sampler, RandomSampler), seed=seed,
                               drop_last=loader.drop_last, repeats=repeats)
    kwargs = dict(batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                  collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                  timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                  persistent_workers=loader.persistent_workers, generator=torch.Generator(), seed=seed)
    if loader.num_workers > 0:
        kwargs.update(prefetch_factor=loader.prefetch_factor, multiprocessing_context=loader.multiprocessing_context)
    return ResumableDataLoader(loader.dataset, **kwargs)
