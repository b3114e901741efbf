"""Reproduction suites. `--suite paper`: the paper's Tables A, B, C as one job graph per table (every cell x seed,
GLUE after its pre-training), run here or on SLURM, resumable, with --dry-run, --status and the table at the end:

    python scripts/reproduce.py --suite paper --table B --dry-run                  # graph, commands, GPU-hours
    python scripts/reproduce.py --suite paper --table B --launcher slurm --slurm partition=gpu account=abc
    python scripts/reproduce.py --suite paper --table B --status
    python scripts/reproduce.py --suite paper --cells 'B/lion-s/large/*' --launcher local

(lion/reproduce/, docs/CLUSTER.md).

`--suite proxy`: evidence on small real tasks that the LION variants learn what the paper says they learn, with
each of the paper's claims printed beside what was measured (lion/reproduce/proxy.py, lion/results/proxy.py):
MNIST-5k in the paper's ViT setting (7 x 7 patch tokens, no position embedding for LION; LIT, D, S, the two-scan
D♮ and S♮, softmax), pixel-level sequential MNIST (784 tokens), generated ListOps and Pathfinder-32 (full size
only), and Rotten Tomatoes from scratch and fine-tuned from a masked-LM pre-training on its own train text. 3 seeds
per cell.

    python scripts/reproduce.py --suite proxy --device cpu            # --size medium: about 95 minutes on 2 CPU cores
    python scripts/reproduce.py --suite proxy                         # on a GPU: --size full
    python scripts/reproduce.py --suite proxy --size smallest         # smoke run: about a minute
    python scripts/reproduce.py --suite proxy --tasks mnist smnist --models lion-d softmax --seeds 0 1

Sizes: `full` is what the experiment configs say (configs/experiment/proxy/<task>_<model>.yaml); `medium` (the
default on a CPU) is the setting for 2 CPU cores (lion.reproduce.proxy.MEDIUM); `smallest` trains one-block models
for three steps, a check that everything runs (its numbers mean nothing). Each size has its own runs, data and
report. Runs (with checkpoints) go to <runs-dir>/runs/<run_id>/, their small files (metrics.json, config.yaml,
csv/metrics.csv) are copied to <results-dir>/runs/<run_id>/, and the report (results table, claims table, training
time relative to the softmax twin, plots) to <results-dir>/proxy_<size>.md; `scripts/make_tables.py --runs
<results-dir> --tables P` rebuilds it. The same command resumes: finished runs are skipped. Extra arguments after
`--` go to every train.py call, e.g. `-- trainer.max_epochs=2`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lion.reproduce.proxy import DEFAULT_TASKS, MODELS, SIZES, TASKS  # noqa: E402


def main(argv=None) -> int:
    argv_in = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    if "--suite=paper" in argv or any(a == "--suite" and b == "paper" for a, b in zip(argv, argv[1:])):
        from lion.reproduce.launch import main as paper_main
        return paper_main(argv, overrides)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", required=True, choices=["proxy", "paper"],
                   help="paper: the job graph of the paper's tables (python scripts/reproduce.py --suite paper -h)")
    p.add_argument("--size", default=None, choices=SIZES, help="default: full on a GPU, medium on a CPU")
    p.add_argument("--device", default=None, choices=["cpu", "gpu"], help="default: gpu when CUDA is available")
    p.add_argument("--tasks", nargs="+", default=None, choices=TASKS,
                   help="default: every task (medium: all but pathfinder); rotten_tomatoes_pt brings its "
                        "pre-training task mlm along")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=None,
                   help="train.py processes at once (default: 1 on a GPU; on a CPU one per 1-thread run that fits "
                        "the cores, at most 2)")
    p.add_argument("--runs-dir", default="logs/proxy", help="paths.log_dir of the runs (default logs/proxy)")
    p.add_argument("--results-dir", default=None,
                   help="where the runs' small files and the report go (default results/proxy_<size>)")
    p.add_argument("--data-dir", default="data", help="paths.data_dir (generated data go to <data-dir>/proxy/)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads per run (cpu_threads, OMP_NUM_THREADS; default 1: the fastest per core for these "
                        "small models; 0: torch's default)")
    p.add_argument("--dry-run", action="store_true", help="print the train.py commands and stop")
    args = p.parse_args(argv)
    args.overrides, args.argv = overrides, list(sys.argv[1:] if argv_in is None else argv_in)
    if args.device is None:
        import torch
        args.device = "gpu" if torch.cuda.is_available() else "cpu"
    elif args.device == "gpu":
        import torch
        if not torch.cuda.is_available():
            p.error("--device gpu: no CUDA device is visible; use --device cpu")
    if args.jobs is not None and args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads < 0:
        p.error(f"--threads must be >= 0, got {args.threads}")
    args.size = args.size or ("full" if args.device == "gpu" else "medium")
    args.tasks = list(args.tasks or DEFAULT_TASKS[args.size])
    if args.jobs is None:
        args.jobs = 1 if args.device == "gpu" else max(1, min(2, (os.cpu_count() or 1) // max(1, args.threads)))
    args.runs_dir = Path(args.runs_dir).resolve()
    args.data_dir = Path(args.data_dir).resolve()
    args.results_dir = Path(args.results_dir or f"results/proxy_{args.size}").resolve()
    from lion.reproduce.proxy import run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
