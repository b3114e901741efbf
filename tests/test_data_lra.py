"""The six LRA data modules on real data in the official layouts: generated ListOps and Pathfinder, Rotten Tomatoes
snippets written as AAN pairs and as an aclImdb folder, MNIST digits written as CIFAR-10 pickles. Each batch is
checked against the raw files read independently, and goes through one LRA model training step."""
import csv
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lion.data import (CorruptDataError, DataNotFoundError, ListOpsDataModule, LRAImageDataModule,
                       LRARetrievalDataModule, LRATextDataModule, PathfinderDataModule, PathXDataModule)
from lion.data.generators.listops import write_listops
from lion.data.generators.pathfinder import write_pathfinder
from lion.data.text import load_rotten_tomatoes
from lion.models.lra import create_lra_model

LOADER = dict(batch_size=4, num_workers=0, pin_memory=False)


def train_step(model, batch, keys):
    """One optimiser step; returns the loss (finite) and checks every parameter got a gradient."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(*[batch[k] for k in keys])
    loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    opt.step()
    return loss


def tiny(task, **kw):
    return create_lra_model(task, dim=16, depth=1, num_heads=2, attention="lion-s", form="chunk", chunk_size=64,
                            **kw)


def cache_dirs(data_dir, prefix):
    return sorted(p.name for p in (data_dir / "cache").glob(f"*{prefix}*")) if (data_dir / "cache").exists() else []


# ---------------------------------------------------------------------------------------------- ListOps


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lra") / "lra_release" / "listops-1000"
    write_listops(out, 12, 4, 4, min_len=20, max_len=300, seed=0, progress=False)
    return out


def test_listops_batches_match_tsv(listops_dir, tmp_path):
    dm = ListOpsDataModule(data_dir=tmp_path, lra_dir=listops_dir.parent, seq_len=300, **LOADER)
    dm.prepare_data()
    dm.setup()
    with open(listops_dir / "basic_val.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape == (4, 300) and batch["input_ids"].dtype == torch.long
    assert dm.vocab_size == 17 and dm.num_classes == 10 and dm.pad_token_id == 0
    for i, (src, tgt) in enumerate(rows[:4]):
        tokens = [t for t in src.split() if t not in "()"]
        n = int(batch["attention_mask"][i].sum())
        assert n == len(tokens)
        assert [dm.vocab[j] for j in batch["input_ids"][i, :n].tolist()] == tokens
        assert (batch["input_ids"][i, n:] == 0).all()
        assert batch["labels"][i].item() == int(tgt)
    train_step(tiny("listops", vocab_size=dm.vocab_size, seq_len=300), next(iter(dm.train_dataloader())),
               ["input_ids", "attention_mask"])


def test_listops_cache_keyed_by_options_and_inputs(listops_dir, tmp_path, monkeypatch):
    kw = dict(data_dir=tmp_path, root=listops_dir, **LOADER)
    ListOpsDataModule(seq_len=300, **kw).prepare_data()
    ListOpsDataModule(seq_len=200, **kw).prepare_data()
    assert len(cache_dirs(tmp_path, "lra_listops")) == 2  # one per seq_len
    # same options: the cache is reused, nothing is rebuilt
    monkeypatch.setattr(ListOpsDataModule, "_build", lambda *a: pytest.fail("cache not reused"))
    ListOpsDataModule(seq_len=300, **kw).prepare_data()
    monkeypatch.undo()
    # new input file contents: a new cache
    copy = tmp_path / "copy"
    copy.mkdir()
    for s in ("train", "val", "test"):
        (copy / f"basic_{s}.tsv").write_bytes((listops_dir / f"basic_{s}.tsv").read_bytes())
    dm = ListOpsDataModule(data_dir=tmp_path, root=copy, seq_len=300, **LOADER)
    dm.setup()
    before = dm.cache_dir
    with open(copy / "basic_test.tsv", "a") as f:
        f.write("( [MAX 1 2 ] )\t2\n")
    assert ListOpsDataModule(data_dir=tmp_path, root=copy, seq_len=300, **LOADER).cache_dir != before


def test_listops_missing_and_corrupt(listops_dir, tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        ListOpsDataModule(data_dir=tmp_path, **LOADER).prepare_data()
    msg = str(e.value)
    assert "basic_train.tsv" in msg and str(tmp_path / "lra_release" / "listops-1000") in msg
    assert "scripts/make_listops.py" in msg and "lra_release.gz" in msg
    bad = tmp_path / "bad"
    bad.mkdir()
    for s in ("train", "val", "test"):
        (bad / f"basic_{s}.tsv").write_bytes((listops_dir / f"basic_{s}.tsv").read_bytes())
    data = (bad / "basic_val.tsv").read_bytes()
    (bad / "basic_val.tsv").write_bytes(data[: len(data) - 40].rsplit(b"\t", 1)[0])  # cut inside a line
    with pytest.raises(CorruptDataError, match=r"basic_val.tsv, line \d+"):
        ListOpsDataModule(data_dir=tmp_path, root=bad, **LOADER).prepare_data()
    assert list((tmp_path / "cache").iterdir()) == []  # no cache, no temporary leftovers


# ---------------------------------------------------------------------------------------------- Pathfinder


@pytest.fixture(scope="module")
def pathfinder_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lra") / "lra_release" / "pathfinder32" / "curv_contour_length_14"
    write_pathfinder(out, 20, size=32, seed=0, batch_size=8, progress=False)
    return out


def test_pathfinder_batches_match_png(pathfinder_dir, tmp_path):
    dm = PathfinderDataModule(data_dir=tmp_path, lra_dir=pathfinder_dir.parents[1], **LOADER)
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 16, "val": 2, "test": 2}
    assert (dm.seq_len, dm.vocab_size, dm.num_classes, dm.image_size) == (1024, 256, 2, 32)
    lines = [ln.split() for m in ("0", "1", "2") for ln in (pathfinder_dir / "metadata" / f"{m}.npy")
             .read_text().splitlines()]
    batch = next(iter(dm.test_dataloader()))  # test = the last 10%: samples 18, 19
    for i, f in enumerate(lines[18:20]):
        pixels = np.asarray(Image.open(pathfinder_dir / f[0] / f[1]), np.int64).reshape(-1)
        assert torch.equal(batch["input_ids"][i], torch.from_numpy(pixels))
        assert batch["labels"][i].item() == int(f[3])
    assert batch["attention_mask"].all()
    train_step(tiny("pathfinder"), next(iter(dm.train_dataloader())), ["input_ids", "attention_mask"])


def test_pathfinder_corrupt_png_and_missing(pathfinder_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(pathfinder_dir, bad)
    png = bad / "imgs" / "1" / "sample_3.png"
    png.write_bytes(png.read_bytes()[:30])  # truncated download
    with pytest.raises(CorruptDataError, match="sample_3.png"):
        PathfinderDataModule(data_dir=tmp_path, root=bad, **LOADER).prepare_data()
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(DataNotFoundError) as e:
        PathXDataModule(data_dir=tmp_path, **LOADER).prepare_data()
    msg = str(e.value)
    assert "pathfinder128/curv_contour_length_14" in msg and "make_pathfinder.py" in msg and "--size 128" in msg


def test_pathx_reads_128px(tmp_path):
    out = tmp_path / "lra_release" / "pathfinder128" / "curv_contour_length_14"
    write_pathfinder(out, 10, size=128, seed=0, batch_size=10, progress=False)
    dm = PathXDataModule(data_dir=tmp_path, batch_size=2, num_workers=0)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (2, 16384) and dm.seq_len == 16384 and dm.image_size == 128
    assert batch["input_ids"].max() == 255


# ---------------------------------------------------------------------------------------------- Retrieval, Text


@pytest.fixture(scope="module")
def snippets():
    texts, labels = load_rotten_tomatoes()
    return [" ".join(t.split()) for t in texts[:60]], labels[:60]  # AAN lines hold no tabs or newlines


def test_retrieval_reads_aan_tsv(tmp_path, snippets):
    texts, _ = snippets
    tsv = tmp_path / "lra_release" / "tsv_data"
    tsv.mkdir(parents=True)
    pairs = {}
    for split, lo in (("train", 0), ("eval", 20), ("test", 40)):
        rows = [(float(j % 2), f"doc{lo + j}", f"doc{lo + j + 1}", texts[lo + j], texts[lo + j + 1])
                for j in range(0, 18, 2)]
        pairs[split] = rows
        with open(tsv / f"new_aan_pairs.{split}.tsv", "w") as f:
            for r in rows:
                f.write("\t".join(str(x) for x in r) + "\n")
    dm = LRARetrievalDataModule(data_dir=tmp_path, seq_len=64, **LOADER)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input_ids_1", "attention_mask_1", "input_ids_2", "attention_mask_2", "labels"}
    for i, (label, _, _, t1, t2) in enumerate(pairs["eval"][:4]):
        for k, t in (("_1", t1), ("_2", t2)):
            raw = list(t.encode("utf-8")[:64])
            n = int(batch[f"attention_mask{k}"][i].sum())
            assert (batch[f"input_ids{k}"][i, :n] - 1).tolist() == raw
        assert batch["labels"][i].item() == int(label)
    model = create_lra_model("retrieval", dim=16, depth=1, num_heads=2, seq_len=64, vocab_size=dm.vocab_size)
    train_step(model, next(iter(dm.train_dataloader())),
               ["input_ids_1", "attention_mask_1", "input_ids_2", "attention_mask_2"])
    # a truncated row
    (tsv / "new_aan_pairs.test.tsv").write_text("1.0\tdoc1\tdoc2\tonly one text\n")
    with pytest.raises(CorruptDataError, match=r"new_aan_pairs.test.tsv, line 1"):
        LRARetrievalDataModule(data_dir=tmp_path, seq_len=32, **LOADER).prepare_data()


def test_text_reads_aclimdb_bytes(tmp_path, snippets):
    texts, labels = snippets
    acl = tmp_path / "aclImdb"
    for split, part in (("train", slice(0, 30)), ("test", slice(30, 60))):
        for j, (t, y) in enumerate(zip(texts[part], labels[part])):
            d = acl / split / ("pos" if y else "neg")
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{j}_1.txt").write_text(t, encoding="utf-8")
    dm = LRATextDataModule(data_dir=tmp_path, source=str(acl), seq_len=96, val_fraction=0.2, **LOADER)
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 24, "val": 6, "test": 30}
    expect = {t.encode("utf-8")[:96]: int(y) for t, y in zip(texts, labels)}
    for batch in dm.test_dataloader():
        for ids, mask, y in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            raw = bytes((ids[mask.bool()] - 1).tolist())
            assert expect[raw] == y.item()
    train_step(tiny("text", vocab_size=dm.vocab_size, seq_len=96), next(iter(dm.train_dataloader())),
               ["input_ids", "attention_mask"])


def test_text_hub_unreachable_fails_fast(tmp_path, monkeypatch):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # closed port: the probe fails at once
    t = time.time()
    with pytest.raises(DataNotFoundError) as e:
        LRATextDataModule(data_dir=tmp_path, **LOADER).prepare_data()
    assert time.time() - t < 10
    assert "stanfordnlp/imdb" in str(e.value) and "save_to_disk" in str(e.value)


# ---------------------------------------------------------------------------------------------- Image


def write_cifar(root, x, y):
    """x uint8 [N, 32, 32, 3] into the CIFAR-10 python pickles (5 train batches + test)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    parts = np.array_split(np.arange(len(x) - 10), 5)
    for i, idx in enumerate(parts, start=1):
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": flat[idx], "labels": y[idx].tolist()}, f)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({"data": flat[-10:], "labels": y[-10:].tolist()}, f)


def test_image_grayscale_from_cifar_pickles(tmp_path):
    from lion.data.images import load_digits

    x8, y = load_digits()
    x8, y = x8[:60], y[:60]
    rgb = np.stack([np.kron(x8, np.ones((4, 4), np.uint8))] * 3, -1)  # 32 x 32, R = G = B
    rgb[..., 0] = 255 - rgb[..., 0]  # make the channels differ: gray = .2989 (255 - v) + .7010 v
    write_cifar(tmp_path / "cifar10", rgb, y)
    dm = LRAImageDataModule(data_dir=tmp_path, val_fraction=0.2, **LOADER)
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 40, "val": 10, "test": 10}
    batch = next(iter(dm.test_dataloader()))
    v = np.kron(x8[50:54], np.ones((4, 4))).reshape(4, -1)
    expect = np.rint(0.2989 * (255 - v) + (0.5870 + 0.1140) * v)
    assert np.abs(batch["input_ids"].numpy() - expect).max() <= 1
    assert batch["labels"].tolist() == y[50:54].tolist()
    train_step(tiny("image"), next(iter(dm.train_dataloader())), ["input_ids", "attention_mask"])
    with open(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CorruptDataError, match="data_batch_3"):
        LRAImageDataModule(data_dir=tmp_path, val_fraction=0.1, **LOADER).prepare_data()
    with pytest.raises(DataNotFoundError, match="CIFAR10"):
        LRAImageDataModule(data_dir=tmp_path / "nothing", **LOADER).prepare_data()


def test_sequential_mnist_is_the_image_tasks_digits_pixel_by_pixel(tmp_path):
    """source="mnist5k": 784 pixel tokens per digit, row by row, and the same digits in each split as the MNIST image
    module with the same seed (so the image and the sequence columns of the proxy suite see the same data)."""
    from lion.data import MNISTDataModule
    from lion.data.images import load_mnist5k

    dm = LRAImageDataModule(data_dir=tmp_path, source="mnist5k", seed=3, **LOADER)
    dm.setup()
    assert dm.seq_len == 784 and {k: len(v) for k, v in dm.datasets.items()} == {"train": 4000, "val": 500,
                                                                                 "test": 500}
    img = MNISTDataModule(data_dir=tmp_path, seed=3, **LOADER)
    img.setup()
    seq_batch, img_batch = next(iter(dm.test_dataloader())), next(iter(img.test_dataloader()))
    assert seq_batch["labels"].tolist() == img_batch["labels"].tolist()
    x, y = load_mnist5k()
    test = np.random.default_rng(3).permutation(len(x))[4500:]  # the last 10% of the seeded permutation
    expect = x[test[:len(seq_batch["labels"])]].reshape(len(seq_batch["labels"]), -1)
    assert (seq_batch["input_ids"].numpy() == expect).all()  # raw 0..255 pixels, row by row
    assert seq_batch["labels"].tolist() == y[test[:len(seq_batch["labels"])]].tolist()
    with pytest.raises(ValueError, match="sequential MNIST: seq_len is 28\\*28 = 784"):
        LRAImageDataModule(data_dir=tmp_path, source="mnist5k", seq_len=1024, **LOADER)
