"""Pieces of the training framework against independent references: parameter groups (by name rules), the
learning-rate schedule (closed forms), lr scaling, the resumable sampler (torch's DistributedSampler), GLUE metrics
(scikit-learn / scipy), MLM accuracy (a direct count), the EMA callback (the EMA recursion)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lion  # noqa: F401
from lion.tasks import ImageClassification, MaskedLM, SequenceClassification, WarmupSchedule, param_groups
from lion.run.resumable import ResumableDataLoader, ResumableSampler, resumable

TINY_VIT = dict(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=2, num_heads=2)


@pytest.mark.parametrize("attention", ["lion-s", "lion-d", "softmax"])
def test_param_groups_follow_the_name_rules(attention):
    task = ImageClassification(attention=attention, net={**TINY_VIT, "pos_embed": "learn"})
    decay, no_decay = param_groups(task, 0.05, ("pos_embed", "cls_token", "decay"))
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in task.named_parameters()}
    got_no = {names[id(p)] for p in no_decay["params"]}
    expect_no = {n for n, p in task.named_parameters()
                 if n.endswith(".bias") or "norm" in n.split(".")[-2] or n.endswith(("cls_token", "pos_embed"))
                 or "decay" in n}
    assert got_no == expect_no
    assert {names[id(p)] for p in decay["params"]} == set(names.values()) - expect_no
    if attention == "lion-s":  # the selective gate's weight matrix is kept out of weight decay
        assert any("decay" in n and n.endswith("weight") for n in got_no)


def test_param_groups_embedding_tables():
    emb = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4))
    decay, no_decay = param_groups(emb, 0.1)
    assert [p.shape for p in no_decay["params"]] == [(10, 4), (4,)]
    assert [p.shape for p in decay["params"]] == [(4, 4)]


def test_warmup_cosine_and_linear_closed_forms():
    s = WarmupSchedule("cosine", total=110, warmup=10, start=0.01, floor=0.1)
    assert s(0) == pytest.approx(0.01)
    assert s(5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s(110) == pytest.approx(0.1)
    lin = WarmupSchedule("linear", total=100, warmup=0, start=0.0, floor=0.02)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.51) and lin(100) == pytest.approx(0.02)
    assert WarmupSchedule("constant", 100, 10, 0.0, 0.0)(99) == 1.0


def test_lr_is_scaled_by_the_global_batch():
    task = ImageClassification(net=TINY_VIT, optimizer={"lr": 5e-4, "lr_scale_batch": 512})
    task.global_batch_size = 1024
    assert task.peak_lr() == pytest.approx(1e-3)
    task = ImageClassification(net=TINY_VIT, optimizer={"lr": 5e-4, "lr_scale_batch": None})
    task.global_batch_size = 1024
    assert task.peak_lr() == pytest.approx(5e-4)


# ---------------------------------------------------------------------------------------------- sampler


class _Range(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


@pytest.mark.parametrize("n,world,drop_last", [(103, 1, False), (103, 2, False), (103, 3, True), (8, 4, False)])
def test_sampler_matches_distributed_sampler(n, world, drop_last):
    for epoch in (0, 3):
        for rank in range(world):
            ref = torch.utils.data.DistributedSampler(_Range(n), num_replicas=world, rank=rank, shuffle=True,
                                                      seed=11, drop_last=drop_last)
            ours = ResumableSampler(_Range(n), num_replicas=world, rank=rank, shuffle=True, seed=11,
                                    drop_last=drop_last)
            ref.set_epoch(epoch)
            ours.set_epoch(epoch)
            assert list(ours) == list(ref) and len(ours) == len(ref)


def test_repeated_augmentation_sampler():
    n, world, r = 50, 2, 3
    per_rank = [ResumableSampler(_Range(n), num_replicas=world, rank=k, seed=0, repeats=r) for k in range(world)]
    idx = [list(s) for s in per_rank]
    assert all(len(i) == math.ceil(n / world) for i in idx)
    counts = np.bincount(np.concatenate(idx), minlength=n)
    assert counts.sum() == 2 * 25 and counts.max() <= r  # each image at most `repeats` times per epoch
    both = set(idx[0]) & set(idx[1])
    assert both  # repeats of one image land on different ranks (different augmentations)


def test_loader_resumes_mid_epoch():
    base = torch.utils.data.DataLoader(_Range(37), batch_size=5, shuffle=True)
    a = resumable(base, seed=4)
    assert isinstance(a, ResumableDataLoader)
    a.sampler.set_epoch(2)
    full = [b.tolist() for b in a]
    it = iter(a)
    for _ in range(3):
        next(it)
    state = a.state_dict()
    assert state == {"epoch": 2, "batches": 3, "batch_size": 5}
    b = resumable(torch.utils.data.DataLoader(_Range(37), batch_size=5, shuffle=True), seed=4)
    b.load_state_dict(state)
    b.sampler.set_epoch(2)
    assert [x.tolist() for x in b] == full[3:]
    b.sampler.set_epoch(3)  # the next epoch starts from its beginning
    assert len([x for x in b]) == len(full)
    custom = torch.utils.data.DataLoader(_Range(9), batch_sampler=[[0, 1], [2]])
    assert resumable(custom, seed=0) is custom


# ---------------------------------------------------------------------------------------------- metrics

BERT = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50,
            max_position_embeddings=32)


def _run_eval(task, preds_fn, labels, n_batches=3):
    task.on_validation_epoch_start()
    out = {}
    task.log_dict = lambda d, **kw: out.update({k: float(v) for k, v in d.items()})
    task.log = lambda k, v, **kw: out.__setitem__(k, float(v))
    for b in range(n_batches):
        sl = slice(b * len(labels) // n_batches, (b + 1) * len(labels) // n_batches)
        task.forward = lambda *a, _sl=sl, **k: preds_fn(_sl)
        task._eval_step({"input_ids": torch.zeros(len(labels[sl]), 4, dtype=torch.long),
                         "labels": labels[sl]}, "val", 0)
    task._eval_end("val")
    return out


@pytest.mark.parametrize("metrics", [("matthews_corrcoef",), ("f1", "accuracy")])
def test_glue_classification_metrics_match_sklearn(metrics):
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (60,), generator=g)
    logits = torch.randn(60, 2, generator=g) + 1.5 * torch.nn.functional.one_hot(y, 2)
    task = SequenceClassification(size="custom", net=BERT, num_labels=2, metric_names=metrics)
    out = _run_eval(task, lambda sl: logits[sl], y)
    pred = logits.argmax(-1).numpy()
    ref = {"matthews_corrcoef": matthews_corrcoef(y, pred), "f1": f1_score(y, pred),
           "accuracy": accuracy_score(y, pred)}
    for m in metrics:
        assert out[f"val/{m}"] == pytest.approx(ref[m], abs=1e-6)
    assert out["val/score"] == pytest.approx(np.mean([ref[m] for m in metrics]), abs=1e-6)


def test_stsb_regression_metrics_match_scipy():
    from scipy.stats import pearsonr, spearmanr

    g = torch.Generator().manual_seed(1)
    y = torch.rand(45, generator=g) * 5
    pred = y + torch.randn(45, generator=g)
    task = SequenceClassification(size="custom", net=BERT, num_labels=1, metric_names=("pearson", "spearman"))
    out = _run_eval(task, lambda sl: pred[sl, None], y)
    assert out["val/pearson"] == pytest.approx(pearsonr(pred, y)[0], abs=1e-5)
    assert out["val/spearman"] == pytest.approx(spearmanr(pred, y)[0], abs=1e-5)
    assert out["val/loss"] > 0


def test_mlm_accuracy_counts_predicted_positions_only():
    task = MaskedLM(size="custom", net=BERT).eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, 50, (4, 12), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, ::3] = ids[:, ::3]
    task.on_validation_epoch_start()
    out = {}
    task.log_dict = lambda d, **kw: out.update({k: float(v) for k, v in d.items()})
    with torch.no_grad():
        for b in range(2):
            task._eval_step({"input_ids": ids[2 * b:2 * b + 2], "attention_mask": torch.ones(2, 12, dtype=torch.long),
                             "labels": labels[2 * b:2 * b + 2]}, "val")
        task._eval_end("val")
        logits = task.net(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    sel = labels != -100
    ref_acc = (logits.argmax(-1)[sel] == labels[sel]).float().mean().item()
    ref_loss = torch.nn.functional.cross_entropy(logits[sel], labels[sel]).item()
    assert out["val/acc"] == pytest.approx(ref_acc, abs=1e-6)
    assert out["val/loss"] == pytest.approx(ref_loss, rel=1e-4)
    assert out["val/ppl"] == pytest.approx(math.exp(ref_loss), rel=1e-4)


# ---------------------------------------------------------------------------------------------- EMA


def test_ema_callback_follows_the_recursion_and_is_what_checkpoints_hold(tmp_path):
    """EMA weights after k steps = the recursion e <- d e + (1 - d) w over the raw weights after each step (from
    the first step on); validation sees them, the checkpoint's state_dict holds them, the raw ones are kept."""
    import lightning as L

    from lion.callbacks import EMA

    class Recorder(L.Callback):
        def __init__(self):
            self.raw = []

        def on_train_batch_end(self, trainer, pl_module, *args):
            self.raw.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    g = torch.Generator().manual_seed(0)
    data = [{"pixel_values": torch.randn(8, 1, 16, 16, generator=g), "labels": torch.randint(0, 10, (8,), generator=g)}
            for _ in range(4)]
    task = ImageClassification(net={**TINY_VIT, "drop_path_rate": 0.0}, optimizer={"lr": 1e-2},
                               scheduler={"name": "constant"})
    rec, ema = Recorder(), EMA(decay=0.7)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", callbacks=[rec, ema], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    trainer.fit(task, train_dataloaders=loader, val_dataloaders=torch.utils.data.DataLoader(data[:1], batch_size=None))
    ref = {k: v.clone() for k, v in rec.raw[0].items()}
    for raw in rec.raw[1:]:
        for k in ref:
            if ref[k].is_floating_point():
                ref[k] = 0.7 * ref[k] + 0.3 * raw[k]
    for k, v in task.state_dict().items():  # after fit the module holds the EMA weights
        torch.testing.assert_close(v, ref[k], msg=k)
    path = tmp_path / "x.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    for k, v in ckpt["state_dict"].items():
        torch.testing.assert_close(v, ref[k], msg=k)


def test_resume_picks_the_newest_of_last_and_slurm_hpc_checkpoints(tmp_path):
    import os

    from omegaconf import OmegaConf

    from lion.run.rundir import resume_checkpoint

    cfg = OmegaConf.create({"ckpt_path": None, "resume": True})
    assert resume_checkpoint(cfg, tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    last, hpc = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    torch.save({"state_dict": {}, "global_step": 10}, last)
    torch.save({"state_dict": {}, "global_step": 12}, hpc)
    assert resume_checkpoint(cfg, tmp_path) == str(hpc)  # SLURM's pre-emption checkpoint is further on
    torch.save({"state_dict": {}, "global_step": 12}, last)
    os.utime(hpc, (500, 500))
    assert resume_checkpoint(cfg, tmp_path) == str(last)  # same step: the newer file
    assert resume_checkpoint(OmegaConf.create({"ckpt_path": None, "resume": False}), tmp_path) is None
    assert resume_checkpoint(OmegaConf.create({"ckpt_path": str(hpc), "resume": True}), tmp_path) == str(hpc)


def test_throughput_survives_resume_and_rerun(tmp_path):
    """The Throughput meter counts every optimizer step after warm-up once; a fit resumed from a mid-run checkpoint
    reports the whole run (steps before and after the checkpoint), and fitting a finished run again keeps the
    numbers rather than reporting an empty measurement. Reference: the steps and samples the loop really ran."""
    import lightning as L

    from lion.callbacks import Throughput

    g = torch.Generator().manual_seed(0)
    data = [{"pixel_values": torch.randn(4, 1, 16, 16, generator=g), "labels": torch.randint(0, 10, (4,), generator=g)}
            for _ in range(5)]
    loader = torch.utils.data.DataLoader(data, batch_size=None)

    def fit(max_epochs, ckpt_path=None):
        task = ImageClassification(net={**TINY_VIT, "drop_path_rate": 0.0}, optimizer={"lr": 1e-3},
                                   scheduler={"name": "constant"})
        meter = Throughput(warmup_steps=2, log_every_n_steps=3)
        trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", callbacks=[meter], logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0)
        trainer.fit(task, train_dataloaders=loader, ckpt_path=ckpt_path, weights_only=True)
        return trainer, meter

    trainer, meter = fit(2)
    # 10 optimizer steps (no validation between the epochs); the step that ends at global_step k is timed when
    # k > warmup: steps 3..10 -> 8 steps, 32 samples
    assert meter.total[3] == 8 and meter.total[0] == 32
    full = meter.summary()
    assert full["step_time_s"] > 0 and meter.fit_seconds() > 0
    trainer.save_checkpoint(tmp_path / "end.ckpt")

    again, meter2 = fit(2, tmp_path / "end.ckpt")  # a finished run started again: no step runs
    assert again.global_step == 10
    assert meter2.total == meter.total and meter2.summary() == full
    assert meter2.fit_seconds() == pytest.approx(meter.fit_seconds(), abs=0.5)

    half, m_half = fit(1)  # stop after epoch 1, resume to epoch 2: the first fit's steps count too
    half.save_checkpoint(tmp_path / "half.ckpt")
    assert m_half.total[3] == 3
    _, m_rest = fit(2, tmp_path / "half.ckpt")
    # the resumed fit warms up again (steps 6, 7) and times 8..10: 3 + 3 steps, 24 samples
    assert m_rest.total[3] == 3 + 3 and m_rest.total[0] == 24
    assert m_rest.fit_seconds() > m_half.fit_seconds()
