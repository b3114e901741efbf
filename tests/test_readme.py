"""Every command in the README's bash blocks runs as written from a fresh checkout, with small overrides.

Each command is classified; a README command this test does not know fails it, so the README and the test move
together:
- `python train.py ...`: every one composes and passes the config checks; the cheap ones (the default, its softmax
  twin, listops_small after generating a few expressions with the README's generator) train for one short epoch;
- `python eval.py ...`: evaluates the checkpoint of the default run (`<run_id>` filled in);
- `python scripts/make_*.py ...`: run with the README's flags and smaller sizes;
- other scripts: `--help` (their measurements are the benchmarks' business);
- `pip install ...`, `python -m pytest`, and the GPU-only device check are what CI itself runs or needs a GPU.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lion.run.config import CONFIG_DIR, compose

ROOT = CONFIG_DIR.parent
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", "model.net.embed_dim=16",
         "model.net.depth=1", "model.net.num_heads=2", "cpu_threads=1"]
CHEAP_TRAIN = {"", "model.attention=softmax", "experiment=listops_small"}
NEEDS_GPU_OR_CLUSTER = ("trainer=gpu", "trainer=ddp", "launcher=slurm", "data.root=/data/imagenet")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip() if not line.strip().startswith("OUT=") else line.split(" #")[0]
            line = line.strip()
            if line:
                out.extend(part.strip() for part in line.split("&&"))
    return list(dict.fromkeys(out))  # each distinct command once


COMMANDS = readme_commands()


def _args(cmd: str, script: str) -> list[str]:
    words = shlex.split(cmd)
    return [w for w in words[words.index(script) + 1:] if w != "-m" and "..." not in w]


def test_every_readme_command_is_known():
    unknown = [c for c in COMMANDS if not c.startswith(("pip install", "python -m pytest", "python train.py",
                                                         "python eval.py", "python scripts/", "OUT="))]
    assert not unknown, f"README commands this test does not run: {unknown}"
    assert any(c == "python train.py" for c in COMMANDS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def default_run(workdir):
    from lion.pipeline import train

    cfg = compose("train", [f"paths.log_dir={workdir / 'logs'}", f"paths.data_dir={workdir / 'data'}", *SHORT])
    train(cfg)
    return Path(cfg.paths.run_dir)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.startswith("python train.py")])
def test_train_commands_compose_and_the_cheap_ones_train(cmd, workdir, default_run):
    from lion.pipeline import train
    from lion.run.checks import check_config

    args = _args(cmd, "train.py")
    base = [f"paths.log_dir={workdir / 'logs'}", f"paths.data_dir={workdir / 'data'}"]
    optional = [a for a in args if a.startswith(("hparams_search=", "hydra.sweeper"))]
    if optional:
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optional sweep extra")
    cfg = compose("train", base + [a for a in args if not a.startswith("hydra.")])
    if not any(a in NEEDS_GPU_OR_CLUSTER for a in args) and "data.root=/data/imagenet" not in args:
        check_config(cfg)
    key = " ".join(args)
    if key not in CHEAP_TRAIN:
        return
    extra = []
    if "experiment=listops_small" in args:
        root = workdir / "listops_small"
        gen = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_listops.py"), "--out", str(root),
                              "--n-train", "40", "--n-val", "8", "--n-test", "8", "--min-len", "10", "--max-len",
                              "60", "--no-progress"], capture_output=True, text=True, timeout=300)
        assert gen.returncode == 0, gen.stderr[-2000:]
        extra = [f"data.root={root}", "model.net.dim=16", "model.net.depth=1"]
        short = [s for s in SHORT if not s.startswith("model.net.")]
    else:
        short = SHORT
    if key == "":
        assert (default_run / "metrics.json").is_file()
        return
    payload = train(compose("train", base + args + short + extra))
    assert payload["status"] == "finished"


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.startswith("python eval.py")])
def test_eval_commands(cmd, workdir, default_run):
    from lion.pipeline import evaluate

    args = [a.replace("logs/runs/<run_id>", str(default_run)) for a in _args(cmd, "eval.py")]
    payload = evaluate(compose("eval", [f"paths.log_dir={workdir / 'logs'}", *args]))
    assert payload["metrics"] and (default_run / "eval").is_dir()


def _shrunk(args: list[str], workdir: Path) -> list[str]:
    small = {"--n-train": "20", "--n-val": "4", "--n-test": "4", "--n": "8", "--size": "32"}
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a in small and i + 1 < len(args):
            out += [a, small[a]]
            i += 2
            continue
        if a == "--out" and i + 1 < len(args):
            out += [a, str(workdir / "gen" / args[i + 1])]
            i += 2
            continue
        out.append(a)
        i += 1
    return out + ["--no-progress"]


# the benchmarks' --help imports torch and the models (about 6 s each): slow; their smoke runs are slow tests too
@pytest.mark.parametrize("cmd", [pytest.param(c, marks=pytest.mark.slow) if "/bench_" in c else c
                                 for c in COMMANDS if c.startswith("python scripts/")])
def test_script_commands(cmd, workdir):
    words = shlex.split(cmd)
    script = ROOT / words[1]
    assert script.is_file(), f"README names {words[1]}, which does not exist"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if script.name in ("make_listops.py", "make_pathfinder.py"):
        args = _shrunk(words[2:], workdir)
        if script.name == "make_listops.py":
            args += ["--min-len", "10", "--max-len", "60"]
        p = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600, env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        out = Path(args[args.index("--out") + 1])
        assert any(out.rglob("*")), f"{cmd} wrote nothing"
        return
    p = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300,
                       env=env)
    assert p.returncode == 0 and "usage" in p.stdout.lower(), p.stderr[-2000:]


def test_device_check_is_the_gpu_script():
    assert any(c.startswith("OUT=") and "scripts/device_check.sh" in c for c in COMMANDS)
    assert (ROOT / "scripts" / "device_check.sh").is_file()
