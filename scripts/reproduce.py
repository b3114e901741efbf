"""Reproduction suites. `--suite paper`: the paper's Tables A, B, C as one job graph per table (every cell x seed,
GLUE after its pre-training), run here or on SLURM, resumable, with --dry-run, --status and the table at the end:

    python scripts/reproduce.py --suite paper --table B --dry-run                  # graph, commands, GPU-hours
    python scripts/reproduce.py --suite paper --table B --launcher slurm --slurm partition=gpu account=abc
    python scripts/reproduce.py --suite paper --table B --status
    python scripts/reproduce.py --suite paper --cells 'B/lion-s/large/*' --launcher local

(lion/reproduce/, docs/CLUSTER.md).

`--suite proxy`: LION-LIT, LION-D, LION-S and the softmax twin trained on four small real
tasks (MNIST-5k images, generated ListOps, generated Pathfinder-32, Rotten Tomatoes text), ending in one table of
accuracy and training time relative to the softmax twin, so that a change to the core is judged in minutes.

    python scripts/reproduce.py --suite proxy                          # on a GPU: --size full (~10 min, estimate)
    python scripts/reproduce.py --suite proxy --device cpu             # on a CPU: --size medium, about an hour
    python scripts/reproduce.py --suite proxy --size smallest          # smoke run: a few steps of tiny models
    python scripts/reproduce.py --suite proxy --tasks mnist listops --models lion-s softmax --seeds 0 1 2

Sizes: `full` is what the experiment configs say (configs/experiment/proxy/<task>_<model>.yaml); `medium` (the
default on a CPU) trains the same models on less and shorter data for fewer epochs (MEDIUM below); `smallest`
trains one-block models for four steps (SMALLEST), a check that everything runs. Each size has its own runs, its
own generated data and its own table.

Each (task, model) is trained by train.py (one Hydra multirun per task, so its four models run one after the other
in one process on the same device; the cheap tasks first). ListOps and Pathfinder are generated first
(lion.data.generators) under <data-dir>/proxy/. Runs land in <runs-dir>/runs/<run_id>/ and resume when the same
command is run again; the table is built from their metrics.json (lion.results.tables, table P) and also written to
<runs-dir>/proxy_<size>.md. Extra arguments after `--` go to every train.py call, e.g. `-- trainer.max_epochs=2`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("mnist", "listops", "pathfinder", "rotten_tomatoes")
MODELS = ("softmax", "lion-lit", "lion-d", "lion-s")

# Generated data per size: generator options (the folder is <data-dir>/proxy/<task>_<size>).
DATA = {
    "full": {"listops": dict(n_train=5000, n_val=500, n_test=500, min_len=100, max_len=500),
             "pathfinder": dict(n=6000, size=32, contour_length=14)},
    "medium": {"listops": dict(n_train=4000, n_val=400, n_test=400, min_len=50, max_len=250),
               "pathfinder": dict(n=3000, size=32, contour_length=14)},
    "smallest": {"listops": dict(n_train=64, n_val=16, n_test=16, min_len=20, max_len=120),
                 "pathfinder": dict(n=80, size=32, contour_length=14)},
}
FOLDER = {"listops": "listops_{size}", "pathfinder": "pathfinder32_{size}"}
RUN_ORDER = ("mnist", "rotten_tomatoes", "listops", "pathfinder")  # cheapest first

# The medium setting (about an hour on 2 CPU cores): the full models, shorter ListOps, fewer epochs.
MEDIUM = {
    "mnist": [],
    "listops": ["data.seq_len=256", "trainer.max_epochs=6"],
    "pathfinder": ["trainer.max_epochs=5"],
    "rotten_tomatoes": ["trainer.max_epochs=2"],
}

# The smallest setting: a few steps of one-block models (the full setting is the experiment configs themselves).
SMALLEST_COMMON = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
                   "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1",
                   "callbacks.throughput.warmup_steps=1", "data.batch_size=8"]
SMALLEST = {
    "mnist": ["model.net.embed_dim=32", "model.net.depth=1", "model.net.num_heads=2"],
    "listops": ["model.net.dim=32", "model.net.depth=1", "model.net.num_heads=2", "data.seq_len=128"],
    "pathfinder": ["model.net.dim=32", "model.net.depth=1", "model.net.num_heads=2"],
    "rotten_tomatoes": ["model.net.hidden_size=32", "model.net.num_hidden_layers=1",
                        "model.net.num_attention_heads=2", "model.net.intermediate_size=64", "data.max_length=64"],
}


def slug(model: str) -> str:
    return model.replace("-", "_")


def prepare_data(task: str, size: str, data_dir: Path) -> Path | None:
    """Generate the ListOps / Pathfinder data of this size once; returns its folder (None: nothing to generate).
    A folder is trusted only with its `options.json`, written last; one made with other options is rebuilt."""
    if task not in FOLDER:
        return None
    opts = DATA[size][task]
    out = data_dir / "proxy" / FOLDER[task].format(size=size)
    stamp = out / "options.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == opts:
        return out
    if out.exists():
        shutil.rmtree(out)
    from lion.data.generators import write_listops, write_pathfinder
    print(f"[proxy] generating {task} data ({size}) in {out}", flush=True)
    tty = sys.stdout.isatty()  # no progress bar in a log file
    if task == "listops":
        o = dict(opts)
        write_listops(out, o.pop("n_train"), o.pop("n_val"), o.pop("n_test"), seed=0, progress=tty, **o)
    else:
        o = dict(opts)
        write_pathfinder(out, o.pop("n"), seed=0, workers=min(8, os.cpu_count() or 1), progress=tty, **o)
    stamp.write_text(json.dumps(opts))
    return out


def train_command(task: str, models: list[str], args, data_root: Path | None) -> list[str]:
    cmd = [sys.executable, str(ROOT / "train.py"), "-m",
           "experiment=" + ",".join(f"proxy/{task}_{slug(m)}" for m in models),
           f"seed={','.join(map(str, args.seeds))}",
           f"trainer={'gpu' if args.device == 'gpu' else 'cpu'}",
           f"paths.log_dir={args.runs_dir}", f"paths.data_dir={args.data_dir}"]
    # Hydra composes a multirun's base config before the experiments are swept in, so keys that only the
    # experiments have are given with "++" (set whether or not the key exists yet).
    task_overrides = [f"table.scale={args.size}"] + ([f"data.root={data_root}"] if data_root is not None else [])
    if args.size == "smallest":
        task_overrides += SMALLEST_COMMON + SMALLEST[task]
    elif args.size == "medium":
        task_overrides += MEDIUM[task]
    return cmd + [f"++{o}" for o in task_overrides] + args.overrides


def run_task(task: str, cmd: list[str], log: Path, verbose: bool, threads: int = 0) -> tuple[int, float]:
    """Run one train.py multirun; its output goes to `log` (and to the terminal with --verbose)."""
    t0 = time.time()
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1",
           "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        for line in proc.stdout:
            f.write(line)
            if verbose:
                sys.stdout.write(line)
        rc = proc.wait()
    return rc, time.time() - t0


def device_line(device: str, threads: int = 0) -> str:
    import torch
    if device == "gpu" and torch.cuda.is_available():
        hw = torch.cuda.get_device_name(0)
    else:
        hw = (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"{threads or torch.get_num_threads()} threads per run")
    return f"{hw}; torch {torch.__version__}; Python {platform.python_version()}"


def proxy_table(runs_dir: Path, size: str, tasks: list[str], models: list[str]) -> str:
    """Table P of the finished proxy runs of this size (tasks and models restricted to the requested ones)."""
    from lion.results.tables import collect, group_runs, load_paper, table_p
    spec = dict(load_paper()["tables"]["P"])
    spec["tasks"] = [t for t in spec["tasks"] if t in tasks]
    spec["rows"] = {k: v for k, v in spec["rows"].items() if k in models}
    col = collect(runs_dir)
    runs = [r for r in col.runs if r.key[0] == "P" and r.key[2] == size]
    return table_p(group_runs(runs), spec, scales=[size])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    if "--suite=paper" in argv or any(a == "--suite" and b == "paper" for a, b in zip(argv, argv[1:])):
        sys.path.insert(0, str(ROOT))
        from lion.reproduce.launch import main as paper_main
        return paper_main(argv, overrides)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", required=True, choices=["proxy", "paper"],
                   help="paper: the job graph of the paper's tables (python scripts/reproduce.py --suite paper -h)")
    p.add_argument("--size", default=None, choices=["smallest", "medium", "full"],
                   help="default: full on a GPU, medium on a CPU")
    p.add_argument("--device", default=None, choices=["cpu", "gpu"], help="default: gpu when CUDA is available")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--runs-dir", default="logs/proxy", help="paths.log_dir of the runs (default logs/proxy)")
    p.add_argument("--data-dir", default="data", help="paths.data_dir (generated data go to <data-dir>/proxy/)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per run (OMP_NUM_THREADS; 0: torch's default). 1 is fastest for the tiny models "
                        "of --size smallest on a busy machine")
    p.add_argument("--verbose", action="store_true", help="stream train.py's output (it always goes to a log file)")
    p.add_argument("--dry-run", action="store_true", help="print the train.py commands and stop")
    args = p.parse_args(argv)
    args.overrides = overrides
    if args.device is None:
        import torch
        args.device = "gpu" if torch.cuda.is_available() else "cpu"
    elif args.device == "gpu":
        import torch
        if not torch.cuda.is_available():
            p.error("--device gpu: no CUDA device is visible; use --device cpu")
    args.size = args.size or ("full" if args.device == "gpu" else "medium")
    args.runs_dir = Path(args.runs_dir).resolve()
    args.data_dir = Path(args.data_dir).resolve()
    models = ["softmax"] + [m for m in args.models if m != "softmax"] if "softmax" in args.models else args.models

    args.runs_dir.mkdir(parents=True, exist_ok=True)
    print(f"[proxy] size {args.size}, device {args.device}: {device_line(args.device, args.threads)}", flush=True)
    failed, seconds = [], {}
    for task in sorted(args.tasks, key=RUN_ORDER.index):
        root = prepare_data(task, args.size, args.data_dir) if not args.dry_run else None
        cmd = train_command(task, models, args, root)
        if args.dry_run:
            print(" ".join(cmd))
            continue
        log = args.runs_dir / f"reproduce_{task}_{args.size}.log"
        print(f"[proxy] {task}: training {', '.join(models)} (log: {log})", flush=True)
        rc, seconds[task] = run_task(task, cmd, log, args.verbose, args.threads)
        status = "done" if rc == 0 else f"FAILED (exit {rc})"
        print(f"[proxy] {task}: {status} in {seconds[task]:.0f} s", flush=True)
        if rc != 0:
            failed.append(task)
            tail = log.read_text().splitlines()[-15:]
            print("\n".join("    " + line for line in tail), file=sys.stderr)
    if args.dry_run:
        return 0

    table = proxy_table(args.runs_dir, args.size, args.tasks, models)
    header = (f"# Proxy suite ({args.size}), {time.strftime('%Y-%m-%d %H:%M')}\n\n"
              f"Hardware: {device_line(args.device, args.threads)}. Wall time per task (s): "
              + ", ".join(f"{t} {s:.0f}" for t, s in seconds.items()) + f"; total {sum(seconds.values()):.0f} s.\n")
    text = header + "\n" + table + "\n"
    out = args.runs_dir / f"proxy_{args.size}.md"
    out.write_text(text)
    print("\n" + text + f"\n(written to {out})")
    if failed:
        print(f"[proxy] failed tasks: {', '.join(failed)}; see the logs above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
