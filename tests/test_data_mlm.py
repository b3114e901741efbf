"""Masked-LM data: hamlet.txt packed and padded, restartable shards, local files, the masking collator's statistics,
and a clear, fast failure for C4 without network."""
import json
import time

import numpy as np
import pytest
import torch

from lion.data import DataNotFoundError, MLMCollator, MLMDataModule
from lion.data.mlm import hamlet_path
from lion.models.bert import LionBertConfig, LionBertForMaskedLM

LOADER = dict(num_workers=0, pin_memory=False)


def hamlet_lines():
    return [ln.strip() for ln in hamlet_path().read_text(encoding="utf-8").splitlines() if ln.strip()]


def test_hamlet_packed_sequences_reproduce_the_text(tmp_path):
    dm = MLMDataModule(data_dir=tmp_path, source="hamlet", packing=True, val_every=10, batch_size=8, **LOADER)
    dm.prepare_data()
    dm.setup()
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) > 300 and len(val) > 25 and dm.seq_len == 128
    tok = dm.tokenizer
    rows = torch.stack([train[i]["input_ids"] for i in range(len(train))])
    assert (rows[:, 0] == tok.cls_token_id).all() and (rows[:, -1] == tok.sep_token_id).all()
    assert train[0]["attention_mask"].all()
    # the packed bodies, joined, are the training lines (every 10th held out), [SEP] between lines
    body = tok.decode(rows[:, 1:-1].flatten().tolist())
    text = " [SEP] ".join(ln for i, ln in enumerate(hamlet_lines()) if i % 10 != 9)
    norm = lambda s: "".join(s.lower().split())  # noqa: E731
    assert norm(text).startswith(norm(body)) and len(norm(body)) > 0.95 * len(norm(text))
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and batch["labels"].shape == (8, 128)
    dm.num_workers = 2  # the shards and the collator work in worker processes
    first = [next(iter(dm.val_dataloader())) for _ in range(2)]
    assert torch.equal(first[0]["input_ids"], first[1]["input_ids"])  # eval masks do not depend on the worker
    cfg = LionBertConfig(vocab_size=dm.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, form="parallel")
    out = LionBertForMaskedLM(cfg)(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_padded_mode_one_line_per_sequence(tmp_path):
    dm = MLMDataModule(data_dir=tmp_path, source="hamlet", packing=False, seq_len=16, val_every=10, batch_size=4,
                       **LOADER)
    dm.setup()
    lines = [ln for i, ln in enumerate(hamlet_lines()) if i % 10 == 9]
    tok = dm.tokenizer
    for i in range(5):
        item = dm.datasets["val"][i]
        n = int(item["attention_mask"].sum())
        want = tok(lines[i], add_special_tokens=False)["input_ids"][:14]
        assert item["input_ids"][:n].tolist() == [101, *want, 102]
        assert (item["input_ids"][n:] == tok.pad_token_id).all()


def test_shards_restart_where_they_stopped(tmp_path):
    kw = dict(data_dir=tmp_path, source="hamlet", packing=True, docs_per_shard=1000, **LOADER)
    dm = MLMDataModule(**kw)
    dm.prepare_data()
    split = dm.cache_dir / "train"
    meta = json.loads((split / "COMPLETE.json").read_text())
    assert len(meta["shards"]) == 6  # 5,113 training lines (every 20th held out) in shards of 1,000
    full = {s: np.load(split / f"{s}.npy") for s in meta["shards"]}
    mtimes = {s: (split / f"{s}.npy").stat().st_mtime_ns for s in meta["shards"]}
    # as if killed while writing shard 3: no COMPLETE.json, shards 3 and 4 gone, a temporary file left over
    (split / "COMPLETE.json").unlink()
    for s in ("shard_00003", "shard_00004"):
        (split / f"{s}.npy").unlink()
    (split / ".shard_00003.npy.tmp-1-abc").write_bytes(b"partial")
    (split / "shard_00005.npy").unlink()
    dm2 = MLMDataModule(**kw)
    dm2.setup()
    for s in meta["shards"]:
        assert np.array_equal(np.load(split / f"{s}.npy"), full[s])
    assert all((split / f"shard_0000{k}.npy").stat().st_mtime_ns == mtimes[f"shard_0000{k}"] for k in range(3))
    assert len(dm2.datasets["train"]) == meta["sequences"]
    # options are part of the key
    assert MLMDataModule(**{**kw, "seq_len": 64}).cache_dir != dm.cache_dir


def test_local_text_and_json_files(tmp_path):
    lines = hamlet_lines()
    (tmp_path / "a.txt").write_text("\n".join(lines[:300]))
    with open(tmp_path / "b.jsonl", "w") as f:
        for ln in lines[300:400]:
            f.write(json.dumps({"content": ln}) + "\n")
    (tmp_path / "v.txt").write_text("\n".join(lines[400:450]))
    dm = MLMDataModule(data_dir=tmp_path, text_files=[str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")],
                       val_files=str(tmp_path / "v.txt"), text_column="content", seq_len=32, batch_size=4, **LOADER)
    dm.setup()
    assert len(dm.datasets["train"]) == 400 and len(dm.datasets["val"]) == 50
    item = dm.datasets["train"][350]
    n = int(item["attention_mask"].sum())
    assert dm.tokenizer.decode(item["input_ids"][1:n - 1]) == dm.tokenizer.decode(
        dm.tokenizer(lines[350], add_special_tokens=False)["input_ids"][:30])
    with pytest.raises(DataNotFoundError, match="nope.txt"):
        MLMDataModule(data_dir=tmp_path, text_files=str(tmp_path / "nope.txt"), **LOADER).prepare_data()


def test_collator_masking_statistics():
    vocab, mask_id, special = 1000, 3, [0, 1, 2, 3]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (64, 128), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    attn = torch.ones_like(ids)
    attn[:, 100:] = 0
    ids[:, 100:] = 0
    items = [{"input_ids": ids[i], "attention_mask": attn[i], "index": i} for i in range(64)]
    torch.manual_seed(0)
    out = MLMCollator(vocab, mask_id, special, mlm_probability=0.3)(items)
    sel = out["labels"] != -100
    real = (attn.bool() & (ids > 3))
    assert not (sel & ~real).any()  # padding and special tokens never selected
    assert torch.equal(out["labels"][sel], ids[sel])  # labels are the original tokens
    assert torch.equal(out["input_ids"][~sel], ids[~sel])  # the rest is untouched
    rate = sel.sum().item() / real.sum().item()
    assert abs(rate - 0.3) < 0.02
    masked = (out["input_ids"] == mask_id) & sel
    kept = (out["input_ids"] == ids) & sel
    randomised = sel & ~masked & ~kept
    n = sel.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.03
    assert abs(kept.sum().item() / n - 0.1) < 0.025  # (a random draw equal to the original counts as kept)
    assert abs(randomised.sum().item() / n - 0.1) < 0.025
    assert (out["input_ids"][randomised] > 3).all()  # random replacements are never special tokens
    # evaluation masks are fixed by the batch's indices
    ev = MLMCollator(vocab, mask_id, special, mlm_probability=0.15, seed=0)
    a, b = ev(items), ev(items)
    assert torch.equal(a["input_ids"], b["input_ids"]) and abs((a["labels"] != -100).sum() / real.sum() - 0.15) < .02
    assert not torch.equal(ev(items[1:])["labels"], a["labels"][1:])
    with pytest.raises(ValueError, match="split of 1"):
        MLMCollator(vocab, mask_id, special, mask_replace_prob=0.9, random_replace_prob=0.2)


def test_c4_without_network_fails_fast(tmp_path, monkeypatch):
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    dm = MLMDataModule(data_dir=tmp_path, max_train_docs=100, **LOADER)
    t = time.time()
    with pytest.raises(DataNotFoundError) as e:
        dm.prepare_data()
    assert time.time() - t < 20
    assert "allenai/c4" in str(e.value) and "save_to_disk" in str(e.value) and "text_files" in str(e.value)
    assert not any((dm.cache_dir / "train").glob("shard_*"))


def test_rotten_tomatoes_pretraining_text_holds_no_evaluation_sentence(tmp_path):
    """source="rotten_tomatoes": masked-LM pre-training on the train part of the classification split only (its
    validation part is the MLM validation set), so fine-tuning on that split never tests on a pre-training sentence."""
    from lion.data.unlabeled import rotten_tomatoes_sentences

    dm = MLMDataModule(data_dir=tmp_path, source="rotten_tomatoes", packing=False, seq_len=32, batch_size=8,
                       **LOADER)
    train, val = list(dm._docs("train")), list(dm._docs("val"))
    assert train == rotten_tomatoes_sentences("train") and val == rotten_tomatoes_sentences("validation")
    assert len(train) == 10202 and len(val) == 1275
    assert list(dm._docs("train", start=5))[:3] == train[5:8]  # restartable shards
