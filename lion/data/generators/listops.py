"""ListOps (Nangia & Bowman 2018, as used by Long Range Arena): nested list operations over the digits 0-9.

An expression is an operator token (``[MIN``, ``[MAX``, ``[MED`` = integer part of the median, ``[SM`` = sum mod 10)
followed by 2..max_args arguments (digits or sub-expressions) and ``]``. Trees grow from the root: above
``max_depth`` every node is a digit; otherwise a node is an operator with probability ``op_prob`` (LRA: 0.25).
The length of an expression is its number of operator, digit and ``]`` tokens; samples are kept when
``min_len < length < max_len`` (LRA: 500 < length < 2000, depth 10, up to 10 arguments).

Files (the official ``listops-1000`` layout): ``basic_{train,val,test}.tsv`` with a ``Source\\tTarget`` header,
Source written with LRA's binary parenthesisation, e.g. ``( ( ( [MAX 2 ) 9 ) ] )``, Target the value 0-9.
"""
from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Union

from tqdm.auto import tqdm

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
Tree = Union[int, tuple]  # a digit, or (operator, [children])


def _grow(rng: random.Random, depth: int, max_depth: int, max_args: int, op_prob: float, budget: int):
    """Random tree and its token length; gives up (returns None) once the length exceeds ``budget``."""
    if depth >= max_depth or rng.random() >= op_prob:
        return rng.randrange(10), 1
    op = OPERATORS[rng.randrange(len(OPERATORS))]
    children, length = [], 2
    for _ in range(rng.randint(2, max_args)):
        sub = _grow(rng, depth + 1, max_depth, max_args, op_prob, budget - length)
        if sub is None:
            return None
        children.append(sub[0])
        length += sub[1]
        if length > budget:
            return None
    return (op, children), length


def evaluate(tree: Tree) -> int:
    if isinstance(tree, int):
        return tree
    op, children = tree
    vals = sorted(evaluate(c) for c in children)
    if op == "[MIN":
        return vals[0]
    if op == "[MAX":
        return vals[-1]
    if op == "[SM":
        return sum(vals) % 10
    n = len(vals)  # [MED: int(numpy.median), i.e. the floor of the mean of the middle two for even n
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) // 2


def to_string(tree: Tree) -> str:
    """LRA's text form: each argument closes one pair of parentheses, ``]`` the last one."""
    if isinstance(tree, int):
        return str(tree)
    op, children = tree
    s = op
    for c in children:
        s = f"( {s} {to_string(c)} )"
    return f"( {s} {END} )"


def generate_listops(n: int, *, min_len: int = 500, max_len: int = 2000, max_depth: int = 10, max_args: int = 10,
                     op_prob: float = 0.25, seed: int = 0, progress: bool = True,
                     exclude: set[str] | None = None) -> list[tuple[str, int]]:
    """``n`` distinct (source, target) pairs with ``min_len < length < max_len``.

    The search gives up on a tree as soon as it exceeds ``max_len`` tokens, so the paper's settings take a few
    ms per sample. ``exclude`` holds sources to avoid (e.g. those of another split).
    """
    if not 0 < op_prob < 1 or max_args < 2 or max_depth < 1 or min_len >= max_len - 1:
        raise ValueError(f"bad ListOps options: {op_prob=} {max_args=} {max_depth=} {min_len=} {max_len=}")
    rng = random.Random(seed)
    seen = set(exclude or ())
    out: list[tuple[str, int]] = []
    with tqdm(total=n, desc="listops", disable=not progress, unit="expr") as bar:
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 10_000 + 20_000 * max(n, 1) and not out:
                raise RuntimeError(f"no ListOps expression found with {min_len} < length < {max_len} at depth "
                                   f"{max_depth} and {max_args} arguments: loosen the options")
            grown = _grow(rng, 1, max_depth, max_args, op_prob, max_len - 1)
            if grown is None or not min_len < grown[1] < max_len:
                continue
            src = to_string(grown[0])
            if src in seen:
                continue
            seen.add(src)
            out.append((src, evaluate(grown[0])))
            bar.update()
    return out


def write_listops(out_dir: str | os.PathLike, n_train: int, n_val: int, n_test: int, *, seed: int = 0,
                  progress: bool = True, **options) -> dict[str, Path]:
    """Write ``basic_{train,val,test}.tsv`` (distinct expressions across splits); each file atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = generate_listops(n_train + n_val + n_test, seed=seed, progress=progress, **options)
    splits = {"train": rows[:n_train], "val": rows[n_train:n_train + n_val], "test": rows[n_train + n_val:]}
    paths = {}
    for split, data in splits.items():
        path = out_dir / f"basic_{split}.tsv"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["Source", "Target"])
            w.writerows(data)
        os.replace(tmp, path)
        paths[split] = path
    return paths
