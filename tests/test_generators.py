"""ListOps and Pathfinder generators, through their command lines, checked by independent references:
a stack evaluator of the ListOps text, and a flood fill over the Pathfinder pixels."""
import csv
import hashlib
import statistics
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run_script(name, *args):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


# ---------------------------------------------------------------------------------------------- ListOps


def listops_reference(source: str):
    """Evaluate a ListOps expression from its text with an explicit stack; returns (value, n_tokens, max depth,
    argument counts)."""
    ops = {"[MIN": min, "[MAX": max, "[MED": lambda v: int(statistics.median(v)), "[SM": lambda v: sum(v) % 10}
    stack, n_tok, depth, arities = [[]], 0, 0, []
    for tok in source.split():
        if tok in "()":
            continue
        n_tok += 1
        if tok in ops:
            stack.append([tok])
            depth = max(depth, len(stack) - 1)
        elif tok == "]":
            op, *args = stack.pop()
            arities.append(len(args))
            stack[-1].append(ops[op](args))
        else:
            stack[-1].append(int(tok))
    assert len(stack) == 1 and len(stack[0]) == 1, "unbalanced expression"
    return stack[0][0], n_tok, depth, arities


def read_tsv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["Source", "Target"]
    return [(s, int(t)) for s, t in rows[1:]]


def test_listops_script_paper_settings_labels_match_reference(tmp_path):
    out = tmp_path / "listops"
    run_script("make_listops.py", "--out", out, "--n-train", 40, "--n-val", 8, "--n-test", 8,
               "--min-len", 500, "--max-len", 2000, "--seed", 3)
    splits = {s: read_tsv(out / f"basic_{s}.tsv") for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [40, 8, 8]
    sources = [s for rows in splits.values() for s, _ in rows]
    assert len(set(sources)) == len(sources), "duplicate expressions (within or across splits)"
    labels = []
    for rows in splits.values():
        for src, target in rows:
            value, n_tok, depth, arities = listops_reference(src)
            assert value == target
            assert 500 < n_tok < 2000
            assert depth <= 10 and all(2 <= a <= 10 for a in arities)
            labels.append(target)
    assert len(set(labels)) >= 5  # the targets spread over the digits
    # the same command reproduces the files byte for byte; another seed does not
    again = tmp_path / "again"
    run_script("make_listops.py", "--out", again, "--n-train", 40, "--n-val", 8, "--n-test", 8,
               "--min-len", 500, "--max-len", 2000, "--seed", 3)
    assert (again / "basic_train.tsv").read_bytes() == (out / "basic_train.tsv").read_bytes()


def test_listops_small_expressions_cover_every_operator():
    from lion.data.generators.listops import generate_listops

    rows = generate_listops(300, min_len=3, max_len=60, max_depth=4, max_args=5, seed=1, progress=False)
    seen_ops = set()
    for src, target in rows:
        value, n_tok, depth, arities = listops_reference(src)
        assert value == target and 3 < n_tok < 60 and depth <= 4 and all(2 <= a <= 5 for a in arities)
        seen_ops |= {t for t in src.split() if t.startswith("[")}
    assert seen_ops == {"[MIN", "[MAX", "[MED", "[SM"}
    with pytest.raises(ValueError, match="bad ListOps options"):
        generate_listops(1, min_len=10, max_len=5)


# ---------------------------------------------------------------------------------------------- Pathfinder


def marker_centres(img):
    """Centres of the lit 3x3 blocks (markers are (2r+1)^2 squares; thin dashes never fill a 3x3 block), grouped
    into 8-connected blobs: one pixel per marker."""
    lit = img > 0
    h, w = lit.shape
    core = np.zeros_like(lit)
    core[1:-1, 1:-1] = np.logical_and.reduce([lit[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx]
                                              for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    blobs, seen = [], set()
    for p in zip(*np.nonzero(core)):
        if p in seen:
            continue
        q, blob = deque([p]), []
        seen.add(p)
        while q:
            y, x = q.popleft()
            blob.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    n = (y + dy, x + dx)
                    if 0 <= n[0] < h and 0 <= n[1] < w and core[n] and n not in seen:
                        seen.add(n)
                        q.append(n)
        blobs.append(blob[0])
    return blobs


def components(img, link):
    """Label lit pixels by flood fill, linking pixels at Chebyshev distance <= link."""
    lit = img > 0
    h, w = lit.shape
    comp = -np.ones(lit.shape, int)
    n = 0
    for p in zip(*np.nonzero(lit)):
        if comp[p] >= 0:
            continue
        comp[p] = n
        q = deque([p])
        while q:
            y, x = q.popleft()
            for yy in range(max(0, y - link), min(h, y + link + 1)):
                for xx in range(max(0, x - link), min(w, x + link + 1)):
                    if lit[yy, xx] and comp[yy, xx] < 0:
                        comp[yy, xx] = n
                        q.append((yy, xx))
        n += 1
    return comp, n


def read_pathfinder(root):
    out = []
    for meta in sorted((root / "metadata").glob("*.npy"), key=lambda p: int(p.stem)):
        for line in meta.read_text().splitlines():
            f = line.split()
            out.append((np.asarray(Image.open(root / f[0] / f[1])), int(f[3]), int(f[6])))
    return out


@pytest.mark.parametrize("size,n", [(32, 40), (128, 6)])
def test_pathfinder_labels_match_flood_fill(tmp_path, size, n):
    out = tmp_path / f"pf{size}"
    run_script("make_pathfinder.py", "--out", out, "--n", n, "--size", size, "--contour-length", 14,
               "--seed", 5, "--batch-size", 16)
    samples = read_pathfinder(out)
    assert len(samples) == n
    labels = []
    for img, label, gap in samples:
        assert img.shape == (size, size) and img.dtype == np.uint8
        markers = marker_centres(img)
        assert len(markers) == 2, f"expected two markers, found {len(markers)}"
        comp, n_comp = components(img, link=gap + 1)
        joined = comp[markers[0]] == comp[markers[1]]
        assert joined == bool(label)
        assert n_comp >= 2  # at least the two long contours
        # a dashed contour: linking only touching pixels splits it into many pieces
        assert components(img, link=1)[1] > n_comp
        labels.append(label)
    assert 0 < sum(labels) < len(labels)


def test_pathfinder_script_resumes_and_reproduces(tmp_path):
    out = tmp_path / "pf"
    args = ("--out", out, "--n", 12, "--size", 32, "--seed", 1, "--batch-size", 5)
    run_script("make_pathfinder.py", *args)
    metas = sorted((out / "metadata").glob("*.npy"))
    assert [p.name for p in metas] == ["0.npy", "1.npy", "2.npy"]
    digest = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (out / "imgs" / "1").iterdir()}
    mtime0 = (out / "metadata" / "0.npy").stat().st_mtime_ns
    (out / "metadata" / "1.npy").unlink()  # as if the run had stopped inside batch 1
    for p in (out / "imgs" / "1").iterdir():
        p.unlink()
    run_script("make_pathfinder.py", *args)
    assert (out / "metadata" / "0.npy").stat().st_mtime_ns == mtime0  # finished batch kept
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (out / "imgs" / "1").iterdir()} == digest
    assert len((out / "metadata" / "2.npy").read_text().splitlines()) == 2
