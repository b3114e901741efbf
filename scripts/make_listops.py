#!/usr/bin/env python
"""Generate Long Range Arena ListOps data in the official layout (``basic_{train,val,test}.tsv``).

    python scripts/make_listops.py --out data/lra_release/listops-1000 --n-train 96000 --n-val 2000 \\
        --n-test 2000 --min-len 500 --max-len 2000 --seed 0

Defaults follow the LRA generator: depth 10, up to 10 arguments, 500 < length < 2000 tokens.
"""
import argparse
import importlib.util
import sys
from pathlib import Path


def _generator_module():
    """lion/data/generators/listops.py needs only numpy, tqdm and PIL: load it by path, so the CLI starts in a
    fraction of a second instead of importing torch through the lion package."""
    path = Path(__file__).resolve().parents[1] / "lion" / "data" / "generators" / "listops.py"
    spec = importlib.util.spec_from_file_location("_lion_generators_listops", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # picklable for worker processes
    spec.loader.exec_module(module)
    return module


write_listops = _generator_module().write_listops


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (gets basic_{train,val,test}.tsv)")
    p.add_argument("--n-train", type=int, default=96_000)
    p.add_argument("--n-val", type=int, default=2_000)
    p.add_argument("--n-test", type=int, default=2_000)
    p.add_argument("--min-len", type=int, default=500, help="keep expressions longer than this (tokens)")
    p.add_argument("--max-len", type=int, default=2000, help="keep expressions shorter than this (tokens)")
    p.add_argument("--max-depth", type=int, default=10)
    p.add_argument("--max-args", type=int, default=10)
    p.add_argument("--op-prob", type=float, default=0.25, help="probability that a node is an operator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    paths = write_listops(a.out, a.n_train, a.n_val, a.n_test, seed=a.seed, progress=not a.no_progress,
                          min_len=a.min_len, max_len=a.max_len, max_depth=a.max_depth, max_args=a.max_args,
                          op_prob=a.op_prob)
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
