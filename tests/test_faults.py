"""Fault injection: what an attacker, a kill, a full disk or a slip of the keyboard does to a run, one test per
failure mode (the core's own faults, padding and bad inputs, are in test_faults_core.py).

Each test reproduces a failure seen on an earlier version (code run from a checkpoint, a truncated last.ckpt, a
run_id that deleted files outside logs/, a copied run using the original's best.ckpt, bare tracebacks for damaged
files, two processes on one run, a silent resume with another seed, tracebacks for bad values, data errors naming
no file) and checks the behaviour that replaced it.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lion.run.config import CONFIG_DIR, compose

ROOT = CONFIG_DIR.parent
TINY = ["model.net.embed_dim=16", "model.net.depth=1", "model.net.num_heads=2", "data.batch_size=32",
        "trainer.enable_progress_bar=false", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    """One tiny finished run (in-process), shared by the tests that need real checkpoints."""
    from lion.pipeline import train

    logs = tmp_path_factory.mktemp("logs")
    cfg = compose("train", [f"paths.log_dir={logs}", f"paths.data_dir={data_dir}", *TINY])
    payload = train(cfg)
    return Path(cfg.paths.run_dir), payload, cfg


# ------------------------------------------------------------------------------ 1. no code from a checkpoint
def test_checkpoint_cannot_choose_the_class_to_run(tmp_path):
    """A weights-only checkpoint naming subprocess.Popen with a shell command: loading it must refuse, and the
    command must not run."""
    from lion.pipeline import load_task

    marker = tmp_path / "pwned"
    ckpt = {"lion_task": "subprocess.Popen", "state_dict": {},
            "hyper_parameters": {"args": f"touch {marker}", "shell": True}}
    path = tmp_path / "evil.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="not one of lion's tasks"):
        load_task(path)
    time.sleep(0.2)
    assert not marker.exists()


def test_run_directory_config_cannot_choose_the_data_class(tmp_path, finished_run):
    """eval.py rebuilds the data module from <run>/config.yaml: a `_target_` there that is not one of lion's data
    modules is refused before anything is instantiated."""
    import shutil

    from lion.pipeline import evaluate

    run_dir, _, _ = finished_run
    copy = tmp_path / "runs" / "evil"
    shutil.copytree(run_dir, copy)
    marker = tmp_path / "pwned"
    cfg = OmegaConf.load(copy / "config.yaml")
    cfg.data = {"_target_": "subprocess.Popen", "args": f"touch {marker}", "shell": True}
    (copy / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    ev = compose("eval", [f"ckpt_path={copy / 'checkpoints' / 'best.ckpt'}", f"paths.log_dir={tmp_path}"])
    with pytest.raises(ValueError, match="not one of lion's data modules"):
        evaluate(ev)
    time.sleep(0.2)
    assert not marker.exists()


def test_cifar_batch_cannot_run_code(tmp_path):
    """The LRA Image reader unpickles CIFAR-10 batches: a pickle naming a callable is refused."""
    from lion.data import CorruptDataError
    from lion.data.lra import LRAImageDataModule

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(CorruptDataError, match="refused"):
        LRAImageDataModule._unpickle(path)
    assert not marker.exists()
    good = tmp_path / "good"  # a real CIFAR-shaped batch still loads
    import numpy as np
    good.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}))
    x, y = LRAImageDataModule._unpickle(good)
    assert x.shape == (2, 32, 32, 3) and y.tolist() == [1, 2]


# ------------------------------------------------------------------------------ 2. a killed save
_SAVER = textwrap.dedent("""
    import sys, torch, lightning as L
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    try:
        from lion.pipeline import _atomic_checkpoints
        _atomic_checkpoints(trainer)
    except ImportError:
        pass
    io = trainer.strategy.checkpoint_io
    big = {"state_dict": {"w": torch.full((32 * 2**20,), float(sys.argv[2]))}, "global_step": int(sys.argv[2])}
    print("ready", flush=True)
    while True:
        io.save_checkpoint(big, sys.argv[1])
""")


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm as a second filesystem")
def test_sigkill_during_checkpoint_writes_keeps_a_loadable_file(tmp_path):
    """A process saving a 128 MB checkpoint in a loop, with $TMPDIR on another filesystem, SIGKILLed at several
    moments: the path always holds a complete checkpoint, and no partial file is left outside the run directory."""
    import random

    target = tmp_path / "last.ckpt"
    tmpdir = Path("/dev/shm") / f"lion-test-{os.getpid()}"
    tmpdir.mkdir(exist_ok=True)
    try:
        torch.save({"state_dict": {"w": torch.zeros(1)}, "global_step": 0}, target)
        rng = random.Random(0)
        for i in range(3):
            p = subprocess.Popen([sys.executable, "-c", _SAVER, str(target), str(i + 1)], env=_env(TMPDIR=str(tmpdir)),
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert p.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 1.5))
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            ckpt = torch.load(target, weights_only=True, mmap=True)  # raises on a truncated file
            assert ckpt["state_dict"]["w"].numel() in (1, 32 * 2**20)
            left = [f for f in tmpdir.rglob("*") if f.is_file() and f.stat().st_size > 2**20]
            assert left == [], "a partial checkpoint was left in $TMPDIR"
    finally:
        import shutil
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_full_disk_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """ENOSPC in the middle of writing: the previous file is intact, no temporary file remains, and the error names
    the file and the fix."""
    from lion.run.checkpoint import AtomicCheckpointIO

    target = tmp_path / "best.ckpt"
    io_ = AtomicCheckpointIO()
    io_.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, target)
    real_fsync = os.fsync

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="no space left .*best.ckpt.*previous file is intact"):
        io_.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, target)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert torch.load(target, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]


# ------------------------------------------------------------------------------ 3. run_id is a name, not a path
def test_run_id_cannot_escape_the_log_folder(tmp_path):
    """`run_id=../../outside resume=false` once deleted the checkpoints of a folder outside logs/."""
    outside = tmp_path / "outside"
    (outside / "checkpoints").mkdir(parents=True)
    (outside / "checkpoints" / "keep.ckpt").write_bytes(b"precious")
    (outside / "metrics.json").write_text("{}")
    logs = tmp_path / "a" / "logs"
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), f"paths.log_dir={logs}", "run_id=../../../outside",
                        "resume=false", "model.form=bogus"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0
    assert "run_id='../../../outside' is not a plain name" in p.stderr + p.stdout
    assert (outside / "checkpoints" / "keep.ckpt").read_bytes() == b"precious"
    assert (outside / "metrics.json").is_file()


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "/abs", ""])
def test_run_id_must_be_a_plain_name(bad):
    from lion.run.checks import ConfigError
    from lion.run.rundir import check_run_id

    with pytest.raises(ConfigError, match="plain name"):
        check_run_id(bad)
    assert check_run_id("glue_cola_lion_s-s0-1a2b3c4d") == "glue_cola_lion_s-s0-1a2b3c4d"


def test_nothing_is_deleted_before_the_config_is_validated(tmp_path, data_dir):
    """resume=false with a value rejected only when the model is built: the existing run keeps its files."""
    from lion.pipeline import train
    from lion.run.checks import ConfigError

    cfg = compose("train", [f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}", *TINY])
    run_dir = Path(cfg.paths.run_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "keep.txt").write_text("x")
    bad = compose("train", [f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}", *TINY, "resume=false",
                            "model.net.num_heads=3"])  # 16 is not divisible by 3: fails while building the model
    with pytest.raises((ConfigError, ValueError, AssertionError)):
        train(bad)
    assert (run_dir / "checkpoints" / "keep.txt").is_file()


# ------------------------------------------------------------------------------ 4. paths relative to the run
def test_copied_run_uses_its_own_best_checkpoint(tmp_path):
    """The checkpoint callback's state names files relative to its directory, so a copy of a run directory resolves
    them inside the copy (also for the absolute paths earlier versions stored)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lion.callbacks import RunCheckpoint

    a, b = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    cb = RunCheckpoint(dirpath=str(a), filename="best", monitor="val/acc", mode="max")
    cb.best_model_path = str(a / "best.ckpt")
    cb.best_k_models = {str(a / "best.ckpt"): torch.tensor(0.5)}
    state = cb.state_dict()
    assert state["best_model_path"] == "best.ckpt" and state["dirpath"] == "."
    assert cb.state_key == ModelCheckpoint(dirpath=str(a), filename="best", monitor="val/acc", mode="max").state_key

    copy = RunCheckpoint(dirpath=str(b), filename="best", monitor="val/acc", mode="max")
    copy.load_state_dict(state)
    assert copy.best_model_path == str(b / "best.ckpt")
    assert list(copy.best_k_models) == [str(b / "best.ckpt")]

    old = ModelCheckpoint(dirpath=str(a), filename="best", monitor="val/acc", mode="max")  # earlier versions
    old.best_model_path = str(a / "best.ckpt")
    copy2 = RunCheckpoint(dirpath=str(b), filename="best", monitor="val/acc", mode="max")
    copy2.load_state_dict(old.state_dict())
    assert copy2.best_model_path == str(b / "best.ckpt")


def test_run_files_hold_relative_paths(finished_run):
    run_dir, payload, _ = finished_run
    assert payload["best_ckpt"] == "checkpoints/best.ckpt"
    assert json.loads((run_dir / "metrics.json").read_text())["best_ckpt"] == "checkpoints/best.ckpt"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    text = repr(ckpt.get("callbacks", {}))
    assert str(run_dir) not in text, "an absolute path of the run directory is stored in last.ckpt"


# ------------------------------------------------------------------------------ 5. damaged files
def test_damaged_last_checkpoint_is_set_aside_and_the_run_resumes_from_the_next(tmp_path):
    from lion.run.rundir import resume_checkpoint

    ck = tmp_path / "checkpoints"
    ck.mkdir()
    torch.save({"state_dict": {}, "global_step": 4}, ck / "best.ckpt")
    torch.save({"state_dict": {}, "global_step": 9}, ck / "last.ckpt")
    data = (ck / "last.ckpt").read_bytes()
    (ck / "last.ckpt").write_bytes(data[: len(data) // 2])  # truncated
    cfg = OmegaConf.create({"ckpt_path": None, "resume": True})
    assert resume_checkpoint(cfg, tmp_path) == str(ck / "best.ckpt")
    names = sorted(p.name for p in ck.iterdir())
    assert names[0] == "best.ckpt" and names[1].startswith("last.ckpt.corrupt-")


def test_damaged_checkpoint_given_by_the_user_names_the_file(tmp_path):
    from lion.pipeline import load_task
    from lion.run.checks import RunError
    from lion.run.rundir import resume_checkpoint

    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RunError, match=r"x\.ckpt.*cannot be loaded"):
        resume_checkpoint(OmegaConf.create({"ckpt_path": str(bad), "resume": True}), tmp_path)
    with pytest.raises(RunError, match=r"x\.ckpt.*cannot be loaded"):
        load_task(bad)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(RunError, match="empty"):
        load_task(empty)


def test_garbage_in_the_metrics_csv_does_not_block_resuming(tmp_path):
    from lion.run.rundir import trim_csv

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,val/acc\n0,4,0.5\n1,9,0.6\n1,12,0.7\n")
    with open(path, "ab") as f:
        f.write(b"\xff\xfe\x00garbage,,\n1,1x,0.1\n")
    trim_csv(path, max_step=9)
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    assert rows == [["epoch", "step", "val/acc"], ["0", "4", "0.5"], ["1", "9", "0.6"]]


# ------------------------------------------------------------------------------ 6. one process per run
def test_second_process_on_a_run_stops_and_a_dead_holder_is_taken_over(tmp_path):
    from lion.run.checks import RunError
    from lion.run.rundir import RunLock

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from lion.run.rundir import RunLock
        RunLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(120)
    """)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match=rf"in use by pid {holder.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the holder died: its lock is stale and taken over
        pass


def test_train_refuses_a_run_held_by_another_process(tmp_path, data_dir):
    from lion.pipeline import train
    from lion.run.checks import RunError
    from lion.run.rundir import RunLock

    cfg = compose("train", [f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}", *TINY])
    with RunLock(Path(cfg.paths.run_dir)):
        with pytest.raises(RunError, match="in use by"):
            train(cfg)


# ------------------------------------------------------------------------------ 7. a run's identity
@pytest.mark.parametrize("override,key", [("seed=1", "seed"), ("model.optimizer.lr=0.01", "model.optimizer.lr"),
                                          ("trainer.max_epochs=3", "trainer.max_epochs"),
                                          ("data.batch_size=16", "data.batch_size")])
def test_same_run_id_with_another_recipe_value_stops(tmp_path, override, key):
    from lion.run.checks import RunError, check_same_run

    base = ["run_id=fixed", f"paths.log_dir={tmp_path}"]
    saved = OmegaConf.create(OmegaConf.to_container(compose("train", base), resolve=True))
    check_same_run(saved, compose("train", base + ["model.form=chunk", "data.num_workers=1", "trainer.devices=1"]),
                   tmp_path)  # how it computes may change
    with pytest.raises(RunError, match=rf"{key}=.*this command has {key}=.*run_id=<new name>"):
        check_same_run(saved, compose("train", base + [override]), tmp_path)


# ------------------------------------------------------------------------------ 10. values and data errors
@pytest.mark.parametrize("override,key", [
    ("trainer.max_epochs=1.5", "trainer.max_epochs"), ("model.optimizer.lr=-1", "model.optimizer.lr"),
    ("data.image_size=-5", "data.image_size"), ("data.num_workers=-1", "data.num_workers"),
    ("data.batch_size=abc", "data.batch_size"), ("model.optimizer.betas=[0.9]", "model.optimizer.betas"),
    ("trainer.devices=0", "trainer.devices"), ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches"),
    ("model.optimizer.weight_decay=-0.1", "model.optimizer.weight_decay"), ("cpu_threads=0", "cpu_threads")])
def test_bad_values_stop_with_one_line_naming_the_key(tmp_path, override, key):
    from lion.run.checks import ConfigError, check_config

    cfg = compose("train", [f"paths.log_dir={tmp_path}", override])
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{key}=") and "must be" in msg


def test_bad_value_on_an_existing_run_reports_the_value_and_leaves_no_directory(tmp_path, data_dir):
    from lion.pipeline import train
    from lion.run.checks import ConfigError, RunError

    cfg = compose("train", [f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}", *TINY, "run_id=r1"])
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(ConfigError) as e:
        train(compose("train", [f"paths.log_dir={tmp_path}", *TINY, "run_id=r1", "model.optimizer.lr=-1"]))
    assert not isinstance(e.value, RunError) and "model.optimizer.lr=-1" in str(e.value)
    fresh = compose("train", [f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}", *TINY, "run_id=r2",
                              "model.net.num_heads=3"])
    with pytest.raises(Exception):
        train(fresh)
    assert not Path(fresh.paths.run_dir).exists(), "a rejected run left its directory behind"


def test_cli_bad_value_is_one_line_and_exit_2(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), f"paths.log_dir={tmp_path}/logs",
                        "trainer.max_epochs=1.5"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2
    assert "config error: trainer.max_epochs=1.5: must be an integer >= -1" in p.stderr
    assert "Traceback" not in p.stderr
    assert not any((tmp_path / "logs" / "runs").glob("*")), "the rejected command left a run directory"


def test_listops_decode_error_names_file_and_line(tmp_path):
    from lion.data import CorruptDataError, ListOpsDataModule

    root = tmp_path / "lra_release" / "listops-1000"
    root.mkdir(parents=True)
    good = "Source\tTarget\n( [MAX 1 2 ] )\t2\n"
    for split in ("train", "val", "test"):
        (root / f"basic_{split}.tsv").write_text(good)
    with open(root / "basic_train.tsv", "ab") as f:
        f.write(b"( [MIN 3 \xff ] )\t3\n")
    dm = ListOpsDataModule(data_dir=str(tmp_path / "cache"), lra_dir=str(tmp_path / "lra_release"), seq_len=32,
                           batch_size=2)
    with pytest.raises(CorruptDataError, match=r"basic_train\.tsv, line 3: not UTF-8 text \(byte 0xff"):
        dm.prepare_data()


def test_partial_writes_of_a_killed_save_are_removed_on_resume(tmp_path, data_dir):
    """A SIGKILL inside a checkpoint write leaves `.last.ckpt.tmp-<pid>-<id>` next to an intact last.ckpt; the
    next run of the same command removes it (it holds the run's lock) and resumes from last.ckpt."""
    from lion.pipeline import train

    cfg = compose("train", [f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}", *TINY])
    train(cfg)
    ck = Path(cfg.paths.run_dir) / "checkpoints"
    junk = ck / ".last.ckpt.tmp-999-abcdef"
    junk.write_bytes(b"\x00" * 1000)
    payload = train(cfg)
    assert payload["status"] == "finished" and not junk.exists()


def test_damaged_run_config_names_the_file(tmp_path):
    from lion.run.checks import RunError
    from lion.run.rundir import load_run_config

    bad = tmp_path / "config.yaml"
    bad.write_bytes(b"model: {attention: [lion-s\n\xff\xfe")
    with pytest.raises(RunError, match=r"config\.yaml cannot be read"):
        load_run_config(bad)
