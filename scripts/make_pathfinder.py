#!/usr/bin/env python
"""Generate Long Range Arena Pathfinder / Path-X data in the official layout.

    python scripts/make_pathfinder.py --out data/lra_release/pathfinder32/curv_contour_length_14 \\
        --n 200000 --size 32 --contour-length 14 --seed 0 --workers 8
    python scripts/make_pathfinder.py --out data/lra_release/pathfinder128/curv_contour_length_14 \\
        --n 200000 --size 128 --contour-length 14 --seed 0 --workers 8

Writes ``imgs/<batch>/sample_<i>.png`` and ``metadata/<batch>.npy`` (text lines, field 3 = label). Rerunning
the same command resumes: finished batches are kept.
"""
import argparse
import importlib.util
import sys
from pathlib import Path


def _generator_module():
    """lion/data/generators/pathfinder.py needs only numpy, tqdm and PIL: load it by path, so the CLI starts in a
    fraction of a second instead of importing torch through the lion package."""
    path = Path(__file__).resolve().parents[1] / "lion" / "data" / "generators" / "pathfinder.py"
    spec = importlib.util.spec_from_file_location("_lion_generators_pathfinder", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # picklable for worker processes
    spec.loader.exec_module(module)
    return module


write_pathfinder = _generator_module().write_pathfinder


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (gets imgs/ and metadata/)")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--size", type=int, default=32, help="image side: 32 (Pathfinder) or 128 (Path-X)")
    p.add_argument("--contour-length", type=int, default=14, help="dashes per long contour (6, 9 or 14 in LRA)")
    p.add_argument("--paddle-length", type=int, default=None, help="pixels per dash (default scales with size)")
    p.add_argument("--gap", type=int, default=None, help="background pixels between dashes")
    p.add_argument("--num-distractors", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1000, help="images per imgs/<batch> folder")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    opts = {k: v for k, v in dict(paddle_length=a.paddle_length, gap=a.gap,
                                  num_distractors=a.num_distractors).items() if v is not None}
    out = write_pathfinder(a.out, a.n, size=a.size, contour_length=a.contour_length, seed=a.seed,
                           batch_size=a.batch_size, workers=a.workers, progress=not a.no_progress, **opts)
    print(out)


if __name__ == "__main__":
    main()
