"""Tokenizer, Rotten Tomatoes and GLUE data modules (GLUE from local copies in the GLUE schema, filled with real
Rotten Tomatoes sentences; the hub path is checked to fail fast and clearly without network)."""
import bz2
import time

import pandas as pd
import pytest
import torch

from lion.data import GLUE_TASKS, DataNotFoundError, GLUEDataModule, RottenTomatoesDataModule, get_tokenizer
from lion.data.text import rotten_tomatoes_path
from lion.data.tokenizer import packaged_bert_vocab
from lion.models.bert import LionBertConfig, LionBertForSequenceClassification

LOADER = dict(num_workers=0, pin_memory=False)


def no_hub(monkeypatch):
    """Not in offline mode, but the hub endpoint refuses connections (as on a machine without network)."""
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


def test_tokenizer_offline_is_bert_base_uncased(monkeypatch, tmp_path):
    no_hub(monkeypatch)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    get_tokenizer.cache_clear()
    t = time.time()
    tok = get_tokenizer("bert-base-uncased")
    assert time.time() - t < 30
    # published bert-base-uncased ids
    assert len(tok) == 30522
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == \
        (0, 100, 101, 102, 103)
    assert tok("Hello World!")["input_ids"] == [101, 7592, 2088, 999, 102]
    assert tok.convert_ids_to_tokens(tok("unaffable")["input_ids"]) == ["[CLS]", "una", "##ffa", "##ble", "[SEP]"]
    by_path = get_tokenizer(str(packaged_bert_vocab()))
    assert by_path("Hello World!")["input_ids"] == [101, 7592, 2088, 999, 102]
    with pytest.raises(DataNotFoundError, match="some-org/unknown-model"):
        get_tokenizer("some-org/unknown-model")
    get_tokenizer.cache_clear()


def test_rotten_tomatoes_end_to_end(tmp_path):
    dm = RottenTomatoesDataModule(data_dir=tmp_path, batch_size=8, max_length=64, **LOADER)
    dm.prepare_data()
    dm.setup()
    with bz2.open(rotten_tomatoes_path(), "rt") as f:
        raw = pd.read_csv(f)
    raw = raw[raw.category.isin(["fresh", "rotten"]) & raw.text.notna()]
    raw = raw[raw.text.str.strip() != ""]
    assert sum(len(v) for v in dm.datasets.values()) == raw.text.nunique()
    # snippet without spaces, lower case (ASCII only: BERT strips accents) -> 1 if fresh
    label_of = {"".join(t.lower().split()): int(c == "fresh") for t, c in zip(raw.text, raw.category) if t.isascii()}
    assert (dm.num_labels, dm.num_classes, dm.vocab_size, dm.is_regression) == (2, 2, 30522, False)
    checked = 0
    for batch in dm.val_dataloader():
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        assert batch["input_ids"].shape[1] % 8 == 0 and batch["labels"].dtype == torch.long
        for ids, mask, y in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            n = int(mask.sum())
            assert ids[0] == 101 and ids[n - 1] == 102 and (ids[n:] == 0).all()
            key = "".join(dm.tokenizer.decode(ids[1:n - 1]).split())
            if n < 64 and key in label_of:  # not truncated, no [UNK]: the label is the snippet's category
                assert label_of[key] == y.item()
                checked += 1
        if checked >= 200:
            break
    assert checked >= 200
    cfg = LionBertConfig(vocab_size=dm.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, num_labels=2, form="parallel")
    model = LionBertForSequenceClassification(cfg)
    out = model(**next(iter(dm.train_dataloader())))
    out.loss.backward()
    assert torch.isfinite(out.loss)


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    """Local GLUE copies (save_to_disk, one folder per task) in the GLUE schema, with real sentences."""
    import datasets

    from lion.data.text import load_rotten_tomatoes

    texts, labels = load_rotten_tomatoes()
    root = tmp_path_factory.mktemp("glue")

    def pairs(lo, n, label_fn):
        return {"sentence1": texts[lo:lo + n], "sentence2": texts[lo + n:lo + 2 * n],
                "label": [label_fn(i) for i in range(n)], "idx": list(range(n))}

    stsb = {s: datasets.Dataset.from_dict(pairs(lo, 12, lambda i: float(i % 6) * 0.9))
            for s, lo in (("train", 0), ("validation", 100), ("test", 200))}
    datasets.DatasetDict(stsb).save_to_disk(str(root / "stsb"))
    mnli = {}
    for s, lo in (("train", 300), ("validation_matched", 400), ("validation_mismatched", 500),
                  ("test_matched", 600), ("test_mismatched", 700)):
        p = pairs(lo, 10, lambda i: i % 3)
        mnli[s] = datasets.Dataset.from_dict({"premise": p["sentence1"], "hypothesis": p["sentence2"],
                                              "label": p["label"], "idx": p["idx"]})
    datasets.DatasetDict(mnli).save_to_disk(str(root / "mnli"))
    sst2 = {s: datasets.Dataset.from_dict({"sentence": texts[lo:lo + 16], "label": labels[lo:lo + 16].tolist(),
                                           "idx": list(range(16))})
            for s, lo in (("train", 800), ("validation", 900), ("test", 1000))}
    datasets.DatasetDict(sst2).save_to_disk(str(root / "sst2"))
    return root, texts


def test_glue_pairs_regression_and_mnli_two_val_sets(tmp_path, glue_dir):
    root, texts = glue_dir
    dm = GLUEDataModule(task="stsb", data_dir=tmp_path, source=str(root), batch_size=4, **LOADER)
    dm.setup()
    assert (dm.num_labels, dm.is_regression, dm.metrics) == (1, True, ("pearson", "spearman"))
    b = next(iter(dm.val_dataloader()))
    assert b["labels"].dtype == torch.float32 and b["labels"].tolist() == pytest.approx([0.0, 0.9, 1.8, 2.7])
    # [CLS] a [SEP] b [SEP], segment ids 0 then 1
    tok = dm.tokenizer
    a_ids = tok(texts[100], add_special_tokens=False)["input_ids"]
    b_ids = tok(texts[112], add_special_tokens=False)["input_ids"]
    n = int(b["attention_mask"][0].sum())
    assert b["input_ids"][0, :n].tolist() == [101, *a_ids, 102, *b_ids, 102]
    assert b["token_type_ids"][0, :n].tolist() == [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)

    dm = GLUEDataModule(task="mnli", data_dir=tmp_path, source=str(root), batch_size=4, **LOADER)
    dm.setup()
    vals = dm.val_dataloader()
    assert dm.val_split_names == ("validation_matched", "validation_mismatched") and len(vals) == 2
    assert [len(v.dataset) for v in vals] == [10, 10] and dm.num_labels == 3
    assert next(iter(vals[1]))["labels"].tolist() == [0, 1, 2, 0]
    cfg = LionBertConfig(vocab_size=dm.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, num_labels=3, form="parallel")
    out = LionBertForSequenceClassification(cfg)(**next(iter(dm.train_dataloader())))
    out.loss.backward()
    assert torch.isfinite(out.loss)

    dm = GLUEDataModule(task="SST-2", data_dir=tmp_path, source=str(root), batch_size=16, max_length=16,
                        pad_to_max_length=True, **LOADER)
    dm.setup()
    assert next(iter(dm.test_dataloader()))["input_ids"].shape == (16, 16)


def test_glue_tasks_table_and_missing_hub(tmp_path, monkeypatch):
    assert sorted(GLUE_TASKS) == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"]
    assert GLUE_TASKS["cola"]["metrics"] == ("matthews_corrcoef",)
    with pytest.raises(ValueError, match="wnli2"):
        GLUEDataModule(task="wnli2", data_dir=tmp_path)
    no_hub(monkeypatch)
    t = time.time()
    with pytest.raises(DataNotFoundError) as e:
        GLUEDataModule(task="rte", data_dir=tmp_path, **LOADER).prepare_data()
    assert time.time() - t < 20
    msg = str(e.value)
    assert "nyu-mll/glue" in msg and "rte" in msg and "save_to_disk" in msg and "unreachable" in msg
    assert not list((tmp_path / "cache").glob("glue_rte-*")) if (tmp_path / "cache").exists() else True
