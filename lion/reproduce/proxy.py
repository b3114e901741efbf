"""The proxy suite: CPU-sized evidence that the LION variants learn what the paper says they learn.

One job graph of small real tasks, every (task, row) a config `configs/experiment/proxy/<task>_<row>.yaml` (its
recipe under `proxy/recipe/` plus the attention), trained by `train.py` for every seed:

| task | what it tests | rows |
|---|---|---|
| mnist | the paper's ViT setting: MNIST-5k, 7 x 7 patches, no position embedding for LION | LIT, D, S, D♮, S♮, sm. |
| smnist | long range on real data: pixel-level sequential MNIST (784 tokens) | LIT, D, S, softmax |
| listops, pathfinder | generated LRA tasks (Pathfinder: full size only, see DEFAULT_TASKS) | LIT, D, S, softmax |
| mlm | masked-LM pre-training on the packaged Rotten Tomatoes train text (seed 0 only) | LIT, D, S, softmax |
| rotten_tomatoes(_pt) | sentiment from scratch, and fine-tuned from that pre-training | LIT, D, S, softmax |

`run(args)` generates the data once per size, writes what the table needs to know about each task (generator
parameters, split sizes, the majority-class accuracy of each test split) to `<results>/suite.json`, trains every
(task, seed) group as one `train.py` multirun (its rows one after the other in one process; `--jobs` groups at
once; each fine-tuning group after its pre-training group), copies each finished run's small files (metrics.json,
config.yaml, csv/metrics.csv: no checkpoint) to `<results>/runs/<run_id>/`, and ends with the report of
`lion.results.proxy` (results table, claims table, plots). Run ids are `<experiment>-s<seed>` with the size in the
experiment name, so the same command resumes: finished runs are skipped, interrupted ones resume from their last
checkpoint.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lion.reproduce.runner import read_json, run_finished

ROOT = Path(__file__).resolve().parents[2]
LION_ROWS = ("lion-lit", "lion-d", "lion-s")
TWO_SCAN_ROWS = ("lion-d-ms", "lion-s-ms")
MODELS = ("softmax",) + LION_ROWS + TWO_SCAN_ROWS
TASK_ROWS = {
    "mnist": ("softmax",) + LION_ROWS + TWO_SCAN_ROWS,
    "smnist": ("softmax",) + LION_ROWS,
    "listops": ("softmax",) + LION_ROWS,
    "pathfinder": ("softmax",) + LION_ROWS,
    "mlm": ("softmax",) + LION_ROWS,
    "rotten_tomatoes": ("softmax",) + LION_ROWS,
    "rotten_tomatoes_pt": ("softmax",) + LION_ROWS,
}
TASKS = tuple(TASK_ROWS)
PRETRAIN = {"rotten_tomatoes_pt": "mlm"}   # task -> the task whose seed-0 runs it starts from (same row)
PRETRAIN_SEED = 0
# Start order: the pre-training first (fine-tuning waits for it), then the longest groups, so that the runs at once
# finish together.
RUN_ORDER = ("mlm", "smnist", "pathfinder", "mnist", "listops", "rotten_tomatoes_pt", "rotten_tomatoes")

# Generated data per size: generator options (the folder is <data-dir>/proxy/<FOLDER>). Pathfinder: LRA's short
# contours (6 dashes at 32 px).
DATA = {
    "full": {"listops": dict(n_train=10000, n_val=1000, n_test=1000, min_len=50, max_len=250, max_depth=10,
                             max_args=10),
             "pathfinder": dict(n=50000, size=32, contour_length=6)},
    "medium": {"listops": dict(n_train=4000, n_val=500, n_test=1000, min_len=50, max_len=250, max_depth=10,
                               max_args=10),
               "pathfinder": dict(n=10000, size=32, contour_length=6)},
    "smallest": {"listops": dict(n_train=64, n_val=16, n_test=32, min_len=20, max_len=120, max_depth=10,
                                 max_args=10),
                 "pathfinder": dict(n=200, size=32, contour_length=6)},
}
FOLDER = {"listops": "listops_{size}", "pathfinder": "pathfinder32_{size}"}

# Per-size overrides of the recipes (full: the recipes themselves, sized for one GPU and not measured yet).
# Medium: the setting for 2 CPU cores (2 runs at once, 1 thread each, 3 seeds; measured in docs/REPRODUCE.md), chosen
# by short calibration runs on that machine: MNIST at its recipe's 12 epochs, ListOps on 4,000 expressions for 6
# epochs, sMNIST for 3, Rotten Tomatoes for 2, 2 epochs of masked-LM pre-training.
MEDIUM = {
    "mnist": ["trainer.max_epochs=12"],
    "smnist": ["trainer.max_epochs=3"],
    "listops": ["trainer.max_epochs=6"],
    "pathfinder": ["trainer.max_epochs=5"],
    "mlm": ["trainer.max_epochs=2"],
    "rotten_tomatoes": ["trainer.max_epochs=2"],
    "rotten_tomatoes_pt": ["trainer.max_epochs=2"],
}
# Tasks a size runs unless --tasks says otherwise. Medium leaves Pathfinder out: on the 2-core CPU no row, the softmax
# twin included, left the majority class within what the budget allows (measured, docs/REPRODUCE.md).
DEFAULT_TASKS = {
    "full": TASKS,
    "medium": tuple(t for t in TASKS if t != "pathfinder"),
    "smallest": TASKS,
}
SMALLEST_COMMON = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
                   "trainer.limit_test_batches=2", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1",
                   "callbacks.throughput.warmup_steps=1", "data.batch_size=8", "trainer.enable_progress_bar=false"]
_BERT_TINY = ["model.net.hidden_size=16", "model.net.num_hidden_layers=1", "model.net.num_attention_heads=2",
              "model.net.intermediate_size=32", "model.net.max_position_embeddings=128"]
SMALLEST = {
    "mnist": ["model.net.embed_dim=16", "model.net.depth=1", "model.net.num_heads=2"],
    "smnist": ["model.net.dim=16", "model.net.depth=1", "model.net.num_heads=2"],
    "listops": ["model.net.dim=16", "model.net.depth=1", "model.net.num_heads=2", "data.seq_len=128"],
    "pathfinder": ["model.net.dim=16", "model.net.depth=1", "model.net.num_heads=2"],
    "mlm": _BERT_TINY + ["data.seq_len=32"],
    "rotten_tomatoes": _BERT_TINY + ["data.max_length=32"],
    "rotten_tomatoes_pt": _BERT_TINY + ["data.max_length=32"],
}
SIZES = ("smallest", "medium", "full")


def slug(model: str) -> str:
    return model.replace("-", "_")


def run_id(task: str, row: str, size: str, seed: int) -> str:
    """The run directory's name: the recipe's experiment_name (`proxy_<task>_<row>_<size>`) and the seed."""
    return f"proxy_{task}_{slug(row)}_{size}-s{seed}"


# ------------------------------------------------------------------------------------------------ data


def data_root(task: str, size: str, data_dir: Path) -> Path | None:
    return data_dir / "proxy" / FOLDER[task].format(size=size) if task in FOLDER else None


def prepare_data(task: str, size: str, data_dir: Path) -> Path | None:
    """Generate the ListOps / Pathfinder data of this size once; returns its folder (None: nothing to generate).
    A folder is trusted only with its `options.json`, written last; one made with other options is rebuilt."""
    if task not in FOLDER:
        return None
    opts = DATA[size][task]
    out = data_root(task, size, data_dir)
    stamp = out / "options.json"
    if read_json(stamp) == opts:
        return out
    if out.exists():
        shutil.rmtree(out)
    from lion.data.generators import write_listops, write_pathfinder
    print(f"[proxy] generating {task} data ({size}) in {out}", flush=True)
    tty = sys.stdout.isatty()  # no progress bar in a log file
    o = dict(opts)
    if task == "listops":
        write_listops(out, o.pop("n_train"), o.pop("n_val"), o.pop("n_test"), seed=0, progress=tty, **o)
    else:
        write_pathfinder(out, o.pop("n"), seed=0, workers=min(8, os.cpu_count() or 1), progress=tty, **o)
    from lion.data.common import atomic_write_bytes
    atomic_write_bytes(stamp, json.dumps(opts).encode())  # written last: the stamp marks finished data
    return out


def task_overrides(task: str, size: str, data_dir: Path) -> list[str]:
    """What the suite adds to a cell of `task` at this size (given with '++' on the command line)."""
    out = [f"table.scale={size}"]
    root = data_root(task, size, data_dir)
    if root is not None:
        out.append(f"data.root={root}")
    if size == "smallest":
        out += SMALLEST_COMMON + SMALLEST[task]
    elif size == "medium":
        out += MEDIUM[task]
    return out


def data_facts(task: str, size: str, runs_dir: Path, data_dir: Path) -> dict:
    """Split sizes and the majority-class accuracy of the test split (the accuracy of always answering its most
    frequent label: the bar a column must clear), read from the data module the cells train on."""
    if task == "mlm":
        return {}
    from collections import Counter

    import hydra
    from omegaconf import OmegaConf

    from lion.run.config import compose
    cfg = compose("train", [f"experiment=proxy/{task}_softmax", f"paths.log_dir={runs_dir}",
                            f"paths.data_dir={data_dir}"] + [f"++{o}" for o in task_overrides(task, size, data_dir)])
    node = OmegaConf.to_container(cfg.data, resolve=True)
    node.update(num_workers=0)
    dm = hydra.utils.instantiate(node)
    dm.prepare_data()
    dm.setup("fit")
    counts, sizes = Counter(), {}
    for split, make in (("train", dm.train_dataloader), ("val", dm.val_dataloader), ("test", dm.test_dataloader)):
        loader = make()
        loader = loader[0] if isinstance(loader, (list, tuple)) else loader
        sizes[split] = len(loader.dataset)
        if split == "test":
            for batch in loader:
                counts.update(int(v) for v in batch["labels"].flatten().tolist())
    n = sum(counts.values())
    top = max(counts.values())
    return {"n_train": sizes["train"], "n_val": sizes["val"], "n_test": sizes["test"], "classes": len(counts),
            "majority_acc": top / n}


# ------------------------------------------------------------------------------------------------ jobs


@dataclass
class Group:
    """One train.py multirun: the rows of one task for one seed."""
    task: str
    seed: int
    rows: list[str]
    deps: list[str] = field(default_factory=list)   # names of groups that must finish first

    @property
    def name(self) -> str:
        return f"{self.task}/s{self.seed}"


def plan(tasks: list[str], models: list[str], seeds: list[int]) -> list[Group]:
    """The groups to train, in the order they start (pre-training first, then the costly tasks)."""
    groups = []
    for task in sorted(tasks, key=RUN_ORDER.index):
        rows = [r for r in TASK_ROWS[task] if r in models]
        if not rows:
            continue
        task_seeds = [PRETRAIN_SEED] if task == "mlm" else seeds
        for seed in task_seeds:
            deps = [f"{PRETRAIN[task]}/s{PRETRAIN_SEED}"] if task in PRETRAIN else []
            groups.append(Group(task, seed, rows, deps))
    return groups


def add_pretraining(tasks: list[str]) -> list[str]:
    """A fine-tuning task needs its pre-training task: add it (in front) when it was not asked for."""
    need = [PRETRAIN[t] for t in tasks if t in PRETRAIN and PRETRAIN[t] not in tasks]
    return list(dict.fromkeys(need + list(tasks)))


def finished(runs_dir: Path, rid: str) -> bool:
    return run_finished(runs_dir / "runs" / rid)


def group_command(group: Group, rows: list[str], args) -> list[str]:
    cmd = [sys.executable, str(ROOT / "train.py"), "-m",
           "experiment=" + ",".join(f"proxy/{group.task}_{slug(r)}" for r in rows), f"seed={group.seed}",
           f"trainer={'gpu' if args.device == 'gpu' else 'cpu'}",
           f"paths.log_dir={args.runs_dir}", f"paths.data_dir={args.data_dir}",
           # one run directory per (cell, seed) whatever the sweep: the size is in the experiment name
           "run_id=${experiment_name}-s${seed}"]
    cmd.append(f"cpu_threads={args.threads or 'null'}")
    # Hydra composes a multirun's base config before the experiments are swept in, so keys that only the
    # experiments have are given with "++" (set whether or not the key exists yet).
    return cmd + [f"++{o}" for o in task_overrides(group.task, args.size, args.data_dir)] + args.overrides


def collect_run(runs_dir: Path, results_dir: Path, rid: str) -> None:
    """Copy a finished run's small files (no checkpoint) to <results>/runs/<run_id>/."""
    from lion.data.common import atomic_write_bytes

    src, dst = runs_dir / "runs" / rid, results_dir / "runs" / rid
    for rel in ("metrics.json", "config.yaml", "csv/metrics.csv"):
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dst / rel, (src / rel).read_bytes())  # a kill mid-copy keeps the previous file


def run_group(group: Group, args, log: Path) -> tuple[int, float, list[str]]:
    """Train the unfinished rows of a group; returns (exit code, seconds, rows trained)."""
    todo = [r for r in group.rows if not finished(args.runs_dir, run_id(group.task, r, args.size, group.seed))]
    if not todo:
        return 0, 0.0, []
    cmd = group_command(group, todo, args)
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1",
           "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    t0 = time.time()
    with open(log, "a") as f:
        f.write(" ".join(cmd) + "\n\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.time() - t0, todo


def execute(groups: list[Group], args) -> tuple[list[str], dict[str, float]]:
    """Run the groups, `args.jobs` at once, each after its dependencies; returns (failed groups, seconds)."""
    pending = list(groups)
    running: dict[str, threading.Thread] = {}
    done, failed, seconds = set(), [], {}
    lock = threading.Condition()
    logs = args.runs_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def work(g: Group) -> None:
        log = logs / f"{g.task}_{args.size}_s{g.seed}.log"
        try:
            rc, secs, rows = run_group(g, args, log)
        except Exception as e:  # noqa: BLE001 - one failed group does not stop the others
            rc, secs, rows = 1, 0.0, []
            print(f"[proxy] {g.name}: could not start ({e})", flush=True)
        for r in g.rows:
            rid = run_id(g.task, r, args.size, g.seed)
            if finished(args.runs_dir, rid):
                collect_run(args.runs_dir, args.results_dir, rid)
        with lock:
            seconds[g.name] = secs
            if rc == 0:
                done.add(g.name)
                print(f"[proxy] {g.name}: " + (f"trained {', '.join(rows)} in {secs:.0f} s" if rows else
                                                 "already finished"), flush=True)
            else:
                failed.append(g.name)
                tail = log.read_text(errors="replace").splitlines()[-12:] if log.is_file() else []
                print(f"[proxy] {g.name}: FAILED (exit {rc}; log {log})\n" + "\n".join("    " + t for t in tail),
                      flush=True)
            del running[g.name]
            lock.notify_all()

    with lock:
        while pending or running:
            blocked = [g for g in pending if any(d in failed for d in g.deps)]
            for g in blocked:
                pending.remove(g)
                failed.append(g.name)
                print(f"[proxy] {g.name}: skipped, its pre-training {g.deps[0]} failed", flush=True)
            ready = [g for g in pending if all(d in done for d in g.deps)]
            while ready and len(running) < args.jobs:
                g = ready.pop(0)
                pending.remove(g)
                print(f"[proxy] {g.name}: {', '.join(g.rows)}", flush=True)
                running[g.name] = threading.Thread(target=work, args=(g,), daemon=True)
                running[g.name].start()
            if pending or running:
                lock.wait(timeout=5)
    return failed, seconds


# ------------------------------------------------------------------------------------------------ main


def device_line(device: str, threads: int = 0, jobs: int = 1) -> str:
    import torch
    if device == "gpu" and torch.cuda.is_available():
        hw = torch.cuda.get_device_name(0)
    else:
        hw = (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {jobs} run(s) at once, "
              f"{threads or 'torch default'} thread(s) per run")
    return f"{hw}; torch {torch.__version__}; Python {platform.python_version()}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_suite(args, tasks: list[str], facts: dict, extra: dict, session: dict | None = None) -> Path:
    """<results>/suite.json: what the report needs beyond the runs. `sessions` keeps every invocation's start and
    wall time (a resumed suite adds one), `wall_seconds` is their sum."""
    path = args.results_dir / "suite.json"
    old = read_json(path)
    sessions = [x for x in old.get("sessions", []) if not session or x.get("started") != session.get("started")]
    if session:
        sessions.append(session)
    suite = {"proxy_suite": 1, "size": args.size, "device": device_line(args.device, args.threads, args.jobs),
             "seeds": list(args.seeds), "jobs": args.jobs, "tasks": tasks,
             "generators": {t: DATA[args.size][t] for t in tasks if t in DATA[args.size]},
             "overrides": {t: task_overrides(t, args.size, Path("<data-dir>"))[1:] for t in tasks},
             "data": {**old.get("data", {}), **facts}, "sessions": sessions,
             "wall_seconds": round(sum(x.get("wall_seconds", 0.0) for x in sessions), 1), **extra}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    from lion.data.common import atomic_write_bytes
    atomic_write_bytes(path, json.dumps(suite, indent=1).encode())  # a kill mid-write keeps the previous suite.json
    return path


def run(args) -> int:
    """The proxy suite (scripts/reproduce.py --suite proxy); see the module docstring."""
    from lion.results.proxy import write_report

    tasks = add_pretraining(args.tasks)
    groups = plan(tasks, args.models, args.seeds)
    if args.dry_run:
        for g in groups:
            print(f"# {g.name}" + (f"  after {', '.join(g.deps)}" if g.deps else ""))
            print(" ".join(group_command(g, g.rows, args)))
        return 0
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    print(f"[proxy] size {args.size}, {len(groups)} groups, runs in {args.runs_dir}, results in {args.results_dir}; "
          f"{device_line(args.device, args.threads, args.jobs)}", flush=True)
    t0 = time.time()
    facts = {}
    for task in tasks:
        prepare_data(task, args.size, args.data_dir)
        if task != "mlm":
            facts[task] = data_facts(task, args.size, args.runs_dir, args.data_dir)
    commit = git_commit()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    command = " ".join(["python", "scripts/reproduce.py"] + args.argv)

    def record(wall: float, failed: list[str] | None = None, seconds: dict | None = None) -> None:
        session = {"started": started, "commit": commit, "wall_seconds": round(wall, 1)}
        if seconds is not None:
            session["group_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
        extra = {"commit": commit, "command": command, **({"failed": failed} if failed is not None else {})}
        write_suite(args, tasks, facts, extra, session)

    record(0.0)
    failed, seconds = execute(groups, args)
    wall = time.time() - t0
    record(wall, failed, seconds)
    out = write_report(args.results_dir, args.size)
    print(f"\n{out.read_text()}\n(written to {out}; wall time {wall / 60:.1f} min)", flush=True)
    if failed:
        print(f"[proxy] failed groups: {', '.join(failed)}; see their logs in {args.runs_dir / 'logs'}",
              file=sys.stderr)
        return 1
    return 0
