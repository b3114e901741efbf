"""Distillation of a softmax teacher into its LION twin (lion/tasks/distill.py) on unlabeled data
(lion/data/unlabeled.py), end to end through train.py's pipeline with tiny teachers: a random 2-layer BERT saved as
a transformers folder (text file data) and a 1-block softmax ViT from timm (packaged MNIST images, no labels).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

import lion  # noqa: F401
from lion.data.common import DataNotFoundError
from lion.run.config import compose

TEXTS = ["the movie was a delight from start to finish", "a dull , lifeless exercise in style",
         "funny and moving", "i would not watch it again", "the actors are wonderful", "too long by half",
         "a small gem", "nothing works here", "an honest film about growing up", "bland"] * 4


@pytest.fixture(scope="module")
def bert_teacher(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(d)
    from lion.data.tokenizer import packaged_bert_vocab

    (d / "vocab.txt").write_bytes(packaged_bert_vocab().read_bytes())
    text = d / "texts.txt"
    text.write_text("\n".join(TEXTS) + "\n\n")
    return d, text


def _train(overrides):
    from lion.pipeline import train

    cfg = compose("train", overrides)
    return train(cfg), Path(cfg.paths.run_dir)


def test_text_distillation_end_to_end_and_resume(bert_teacher, tmp_path, monkeypatch):
    from lion.tasks.distill import Distillation

    folder, text = bert_teacher
    base = ["experiment=distill/minilm", f"model.teacher={folder}", f"data.source={text}", "data.batch_size=8",
            f"paths.data_dir={tmp_path}/data", "trainer.enable_progress_bar=false", "trainer.max_steps=4",
            "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", "model.attention=lion-d",
            "model.optimizer.lr=3e-3", "cpu_threads=1", "callbacks.last_checkpoint.every_n_train_steps=2"]
    step = Distillation.training_step

    class Crash(Exception):
        pass

    def crash_at_step_3(self, batch, batch_idx):
        if self.global_step == 3:
            raise Crash
        return step(self, batch, batch_idx)

    monkeypatch.setattr(Distillation, "training_step", crash_at_step_3)
    with pytest.raises(Crash):
        _train(base + [f"paths.log_dir={tmp_path}/a"])
    monkeypatch.setattr(Distillation, "training_step", step)
    payload, run_dir = _train(base + [f"paths.log_dir={tmp_path}/a"])  # the same command resumes from step 2
    assert payload["global_step"] == 4 and set(payload["metrics"]) >= {"val/cos", "val/loss", "val/hidden"}
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["lion_task"].endswith("Distillation")
    assert all(k.startswith(("net.", "metrics.")) for k in ckpt["state_dict"])  # the teacher is not saved
    _, straight = _train(base + [f"paths.log_dir={tmp_path}/b"])  # uninterrupted: the same weights
    other = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for k, v in ckpt["state_dict"].items():
        torch.testing.assert_close(other[k], v, rtol=0, atol=1e-6, msg=k)
    # the exported student (the best checkpoint by val/cos) loads like any lion_bert model
    student = transformers.AutoModel.from_pretrained(run_dir / "hf").eval()
    assert student.config.attention == "lion-d" and (run_dir / "hf" / "vocab.txt").is_file()
    from lion.pipeline import load_task

    task = load_task(run_dir / "checkpoints" / "best.ckpt")
    for k, v in task.net.state_dict().items():
        assert torch.equal(student.state_dict()[k], v), k
    teacher = transformers.AutoModel.from_pretrained(folder)
    assert not torch.equal(student.state_dict()["encoder.blocks.0.attn.qkv.weight"],
                           torch.cat([teacher.state_dict()[f"encoder.layer.0.attention.self.{n}.weight"]
                                      for n in ("query", "key", "value")]))


@pytest.mark.parametrize("loss", ["hidden", "attention", "both"])
def test_each_loss_decreases_on_a_fixed_batch(bert_teacher, loss):
    from lion.data.tokenizer import get_tokenizer
    from lion.tasks.distill import Distillation

    folder, _ = bert_teacher
    torch.manual_seed(0)
    task = Distillation(teacher=str(folder), attention="lion-s", loss=loss)
    task.train()
    assert not task.net.training  # dropout off while distilling (dropout=False)
    tok = get_tokenizer("bert-base-uncased")
    batch = dict(tok(TEXTS[:6], padding=True, return_tensors="pt"))
    opt = torch.optim.Adam(task.net.parameters(), lr=1e-3)
    first = None
    for _ in range(20):
        out = task.losses(batch)
        first = out["loss"].item() if first is None else first
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert task.losses(batch)["loss"].item() < 0.75 * first
    if loss == "attention":  # layer-local: only the mixers get gradients
        assert task.net.embeddings.word_embeddings.weight.grad is None
        assert task.net.encoder.blocks[0].mlp.fc1.weight.grad is None
    assert sum(1 for _ in task.parameters()) == sum(1 for _ in task.net.parameters())  # teacher not a parameter


def test_vit_distillation_end_to_end(tmp_path):
    base = ["experiment=distill/minilm", "data=unlabeled_images", "data.source=packaged:mnist5k",
            "data.max_samples=64", "data.batch_size=16", "data.image_size=28", "data.in_chans=1",
            "model.teacher=timm:softmax_vit_tiny_patch16_224",
            "model.timm_kwargs={depth: 1, img_size: 28, patch_size: 7, in_chans: 1, num_classes: 10}",
            "model.attention=lion-s", "model.loss=both", f"paths.log_dir={tmp_path}",
            f"paths.data_dir={tmp_path}/data", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "cpu_threads=1"]
    payload, run_dir = _train(base)
    assert payload["global_step"] == 2 and 0 < payload["metrics"]["val/cos"] <= 1.0001
    from lion.convert import load_vit

    student = load_vit(run_dir / "hf").eval()
    assert student.attention == "lion-s" and student(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    spec = json.loads((run_dir / "hf" / "timm_args.json").read_text())
    assert spec["model_name"] == "lion_s_tiny_patch16_224" and spec["kwargs"]["patch_size"] == 7


def test_unlabeled_sources(tmp_path):
    from PIL import Image

    from lion.data import UnlabeledDataModule

    with pytest.raises(DataNotFoundError, match="Unlabeled data"):
        UnlabeledDataModule(source=str(tmp_path / "nope.txt"))
    imgs = tmp_path / "imgs" / "sub"
    imgs.mkdir(parents=True)
    for i in range(5):
        Image.fromarray((torch.rand(20, 30, 3) * 255).byte().numpy()).save(imgs / f"{i}.png")
    dm = UnlabeledDataModule(source=str(tmp_path / "imgs"), image_size=16, batch_size=2, num_workers=0,
                             val_fraction=0.2)
    dm.setup()
    assert dm.kind == "images" and len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 1
    assert next(iter(dm.train_dataloader()))["pixel_values"].shape == (2, 3, 16, 16)
    rt = UnlabeledDataModule(source="rotten_tomatoes", batch_size=4, num_workers=0, max_samples=10)
    rt.setup()
    from lion.data import RottenTomatoesDataModule

    b = next(iter(rt.train_dataloader()))
    assert set(b) == {"input_ids", "attention_mask", "token_type_ids"} and len(rt.datasets["train"]) == 10
    # the Rotten Tomatoes test sentences are never distilled on
    ref = RottenTomatoesDataModule(data_dir=str(tmp_path), num_workers=0)
    test = set(ref._raw()["test"]["sentence"])
    full = UnlabeledDataModule(source="rotten_tomatoes", num_workers=0)
    full.setup()
    assert not test & (set(full.datasets["train"].items) | set(full.datasets["val"].items))


def test_compare_command(bert_teacher, tmp_path, capsys):
    import importlib.util

    folder, text = bert_teacher
    spec = importlib.util.spec_from_file_location("linearize", Path(__file__).parents[1] / "scripts" / "linearize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(folder), str(tmp_path / "soft"), "--attention", "softmax"]) == 0
    assert mod.main([str(folder), str(tmp_path / "lit"), "--attention", "lion-lit"]) == 0
    capsys.readouterr()
    assert mod.main(["--compare", str(folder), str(tmp_path / "soft"), str(tmp_path / "lit"), "--sentences",
                     str(text)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == len(TEXTS)
    assert abs(res["cosine"][str(tmp_path / "soft")] - 1) < 1e-5  # the softmax twin is the teacher
    assert res["cosine"][str(tmp_path / "lit")] < 0.999


def test_a_lion_teacher_is_used_as_it_is():
    from lion.tasks.distill import Distillation

    kw = dict(depth=1, img_size=28, patch_size=7, in_chans=1, num_classes=10)
    task = Distillation(teacher="timm:lion_d_tiny_patch16_224", timm_kwargs=kw, attention="lion-s")
    assert task._teacher.attention == "lion-d" and task.net.attention == "lion-s"  # not re-expressed as softmax
    x = {"pixel_values": torch.randn(2, 1, 28, 28)}
    assert torch.isfinite(task.losses(x)["loss"])
