"""train.py / eval.py end to end on the CPU: the run directory contract, evaluation in every form, exact resume after
SIGKILL, the SLURM launcher through submitit's local executor, and (slow) 2-process DDP against one process.

Runs use the real MNIST-5k data module with a shrunken LION-S ViT and a few batches per epoch.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
import torch
from omegaconf import OmegaConf

from lion.run.config import CONFIG_DIR, compose

ROOT = CONFIG_DIR.parent
TINY = ["model.net.embed_dim=32", "model.net.depth=2", "model.net.num_heads=2", "data.batch_size=32",
        "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def _cli(script, args, cwd, timeout=600, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """The default config, shortened: 2 epochs of 4 batches, in-process."""
    from lion.pipeline import train

    logs = tmp_path_factory.mktemp("logs")
    cfg = compose("train", [f"paths.log_dir={logs}", f"paths.data_dir={data_dir}", *TINY, "trainer.max_epochs=2",
                            "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                            "trainer.limit_test_batches=2", "callbacks.last_checkpoint.every_n_train_steps=3"])
    payload = train(cfg)
    return Path(cfg.paths.run_dir), payload


def test_run_directory_contract(trained):
    run_dir, payload = trained
    assert run_dir.name == "mnist_lion_s-s0"
    for rel in ("config.yaml", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "checkpoints/best.txt",
                "csv/metrics.csv", "metrics.json"):
        assert (run_dir / rel).is_file(), rel
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m == payload
    assert m["status"] == "finished" and m["experiment"] == "mnist_lion_s" and m["table"] is None
    assert m["model"]["attention"] == "lion-s" and m["model"]["size"] == "tiny"
    n = sum(p.numel() for p in torch.load(run_dir / "checkpoints/best.ckpt", weights_only=True)["state_dict"].values())
    assert m["model"]["params"] == n
    for key in ("val/acc", "test/acc", "val/loss", "test/loss"):
        assert 0.0 <= m["metrics"][key] < 10
    assert set(m["throughput"]) == {"train_samples_per_s", "train_tokens_per_s", "step_time_s"}
    assert m["device"] == "cpu" and m["seed"] == 0 and m["global_step"] == 8
    cfg = OmegaConf.load(run_dir / "config.yaml")  # tokens per image: patches + class token
    tokens = (cfg.data.image_size // cfg.model.net.patch_size) ** 2 + 1
    assert m["throughput"]["train_tokens_per_s"] == pytest.approx(tokens * m["throughput"]["train_samples_per_s"])
    rows = list(csv.DictReader(open(run_dir / "csv/metrics.csv")))
    assert any(r.get("train/loss_step") for r in rows) and any(r.get("val/acc") for r in rows)
    assert any(k.startswith("lr-") for k in rows[0])
    # checkpoints load without unpickling code
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert ckpt["lion_task"] == "lion.tasks.image.ImageClassification"
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 8


def test_running_a_finished_run_again_keeps_its_numbers(trained, tmp_path_factory, data_dir):
    """The same command on a finished run trains no step and reports the run's own throughput and fit time (kept in
    the checkpoint), not an empty measurement, and the same metrics."""
    from lion.pipeline import train

    run_dir, first = trained
    assert first["throughput"]["step_time_s"] is not None
    cfg = OmegaConf.load(run_dir / "config.yaml")
    again = train(cfg)
    assert again["global_step"] == first["global_step"]
    assert again["throughput"] == first["throughput"]
    assert again["fit_seconds"] == pytest.approx(first["fit_seconds"], abs=1.0)
    assert again["metrics"] == pytest.approx(first["metrics"], rel=1e-6)
    assert json.loads((run_dir / "metrics.json").read_text())["throughput"] == first["throughput"]


def test_eval_all_forms_same_accuracy(trained):
    """eval.py in the parallel, chunk (C=5, not dividing L=50) and recurrent forms gives the accuracy train.py
    measured on the best checkpoint."""
    from lion.pipeline import evaluate

    run_dir, payload = trained
    results = {}
    for form in ("parallel", "chunk", "recurrent"):
        cfg = compose("eval", [f"ckpt_path={run_dir}/checkpoints/best.ckpt", f"model.form={form}",
                               "model.chunk_size=5", f"paths.log_dir={run_dir.parent.parent}",
                               "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false"])
        results[form] = evaluate(cfg)
        assert (run_dir / "eval" / f"test-{form}-c5.json").is_file()
    ref = payload["metrics"]
    for form, r in results.items():
        assert r["form"] == form and r["chunk_size"] == 5
        assert r["metrics"]["test/acc"] == ref["test/acc"], form
        assert r["metrics"]["test/loss"] == pytest.approx(ref["test/loss"], rel=1e-4, abs=1e-5), form


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def test_resume_after_sigkill_matches_uninterrupted(tmp_path, data_dir):
    """Kill a run (SIGKILL) in the middle of its second epoch, start the same command again: it resumes from
    last.ckpt and ends with exactly the metrics of a run that was never stopped. Drop path and mixup are on, so the
    random streams (torch, numpy) must continue where they were."""
    args = [f"paths.data_dir={data_dir}", *TINY, "trainer.max_epochs=2", "trainer.limit_train_batches=12",
            "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "model.net.drop_path_rate=0.2",
            "+model.mixup={mixup_alpha:0.8,cutmix_alpha:1.0,label_smoothing:0.1}",
            "callbacks.last_checkpoint.every_n_train_steps=2", "seed=7"]
    ref = _cli("train.py", [f"paths.log_dir={tmp_path}/ref", *args], tmp_path)
    out_ref, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out_ref[-3000:]

    run_dir = tmp_path / "killed" / "runs" / "mnist_lion_s-s7"
    last = run_dir / "checkpoints" / "last.ckpt"
    p = _cli("train.py", [f"paths.log_dir={tmp_path}/killed", *args], tmp_path)
    killed_at = None
    deadline = time.time() + 600
    while p.poll() is None and time.time() < deadline:
        if last.is_file():
            step = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
            if step >= 16:  # epoch 2 (steps 13..24), mid-epoch
                os.kill(p.pid, signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.05)
    p.communicate(timeout=60)
    assert killed_at is not None and killed_at < 24, "the run ended before it could be killed mid-epoch"
    assert not (run_dir / "metrics.json").exists()

    again = _cli("train.py", [f"paths.log_dir={tmp_path}/killed", *args], tmp_path)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    assert "resuming from" in out and "last.ckpt" in out
    resumed, reference = _metrics(run_dir), _metrics(tmp_path / "ref" / "runs" / "mnist_lion_s-s7")
    assert resumed.keys() == reference.keys()
    for k in reference:
        assert resumed[k] == pytest.approx(reference[k], rel=1e-6, abs=1e-7), k
    a = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ref/runs/mnist_lion_s-s7/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)


def test_slurm_launcher_runs_through_submitit_local(tmp_path, data_dir):
    """launcher=submitit_local is launcher=slurm with submitit's local executor: a multirun whose job runs in
    its own process and leaves a finished run directory (with the hash of the job's overrides in its run id)."""
    args = ["-m", "launcher=submitit_local", f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}", *TINY,
            "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "model.optimizer.lr=0.002", "hydra.launcher.timeout_min=10"]
    p = _cli("train.py", args, tmp_path)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-3000:]
    runs = sorted((tmp_path / "runs").glob("mnist_lion_s-s0-*/metrics.json"))
    assert len(runs) == 1, out[-3000:]
    assert json.loads(runs[0].read_text())["status"] == "finished"
    assert OmegaConf.load(runs[0].parent / "config.yaml").model.optimizer.lr == 0.002
    assert list((tmp_path / "runs" / ".submitit").rglob("*_result.pkl"))  # went through submitit


@pytest.mark.slow
def test_ddp_gloo_matches_single_process(tmp_path, data_dir):
    """2 CPU processes (gloo) x 16 images per step = 1 process x 32: the same loss curve and the same weights
    (no dropout, no mixup, no random shifts; the training sampler shards one permutation over the ranks)."""
    common = [f"paths.data_dir={data_dir}", *[a for a in TINY if not a.startswith("data.batch_size")],
              "data.max_shift=0",
              "trainer.max_epochs=1", "trainer.limit_train_batches=6", "trainer.limit_val_batches=2",
              "trainer.limit_test_batches=2", "global_batch_size=32", "seed=3"]
    single = _cli("train.py", [f"paths.log_dir={tmp_path}/one", "data.batch_size=32", *common], tmp_path)
    out1, _ = single.communicate(timeout=900)
    assert single.returncode == 0, out1[-3000:]
    ddp = _cli("train.py", [f"paths.log_dir={tmp_path}/two", "trainer=ddp_cpu", "data.batch_size=16", *common],
               tmp_path)
    out2, _ = ddp.communicate(timeout=900)
    assert ddp.returncode == 0, out2[-3000:]

    def losses(d):
        rows = list(csv.DictReader(open(d / "runs/mnist_lion_s-s3/csv/metrics.csv")))
        return [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]

    l1, l2 = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(l1) == len(l2) == 6
    assert l2 == pytest.approx(l1, rel=1e-4, abs=1e-5)
    a = torch.load(tmp_path / "one/runs/mnist_lion_s-s3/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "two/runs/mnist_lion_s-s3/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_wandb_offline_resume_continues_the_same_run(tmp_path, data_dir, monkeypatch):
    """logger=wandb_offline: the run id is stored in wandb_id.txt and a resumed run logs to the same wandb run."""
    from lion.pipeline import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    base = [f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}", "logger=wandb_offline", *TINY,
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    from lion.callbacks import LastCheckpoint

    class Crash(Exception):
        pass

    save = LastCheckpoint.on_train_epoch_end

    def save_then_crash(self, trainer, pl_module):  # the first run dies right after epoch 0's last.ckpt
        save(self, trainer, pl_module)
        raise Crash

    cfg = compose("train", base + ["trainer.max_epochs=2"])
    LastCheckpoint.on_train_epoch_end = save_then_crash
    try:
        with pytest.raises(Crash):
            train(cfg)
    finally:
        LastCheckpoint.on_train_epoch_end = save
        import wandb
        wandb.finish()
    train(cfg)  # the same command resumes (a changed recipe value would be refused: test_faults.py)
    run_dir = tmp_path / "runs" / "mnist_lion_s-s0"
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(run_id) for f in folders)
    rows = list(csv.DictReader(open(run_dir / "csv/metrics.csv")))
    assert sorted({int(r["epoch"]) for r in rows if r.get("val/acc")}) == [0, 1]


@pytest.mark.parametrize("debug", ["fdr", "limit", "overfit", "profiler"])
def test_debug_configs_run(debug, tmp_path, data_dir):
    from lion.pipeline import train

    cfg = compose("train", [f"debug={debug}", f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}", *TINY,
                            "trainer.max_epochs=2", "trainer.detect_anomaly=false", "trainer.limit_train_batches=3",
                            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"])
    payload = train(cfg)
    assert payload["status"] == "finished" and payload["global_step"] >= 1
    run_dir = Path(cfg.paths.run_dir)
    assert run_dir.name.startswith("debug-")
    if debug == "profiler":
        assert list(run_dir.glob("*profile*"))
    if debug == "fdr":
        assert not (run_dir / "checkpoints" / "last.ckpt").exists()
