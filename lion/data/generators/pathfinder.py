"""Pathfinder (Linsley et al. 2018, as used by Long Range Arena): are the two marked dots joined by a dashed path?

Every image holds two long dashed contours of ``contour_length`` dashes ("paddles"), a few short distractor
contours, and two square markers. Positive (label 1): the markers sit on the two ends of one long contour.
Negative (label 0): one marker on an end of each long contour. Both classes are drawn the same way (two long
contours, then the distractors), so only the path decides the label.

Geometry guarantees that make the label a property of the pixels (the tests check it by flood fill):
consecutive dashes of one contour are at Chebyshev distance 2..gap+1 (``gap`` background pixels between them);
pixels of different contours are at Chebyshev distance >= gap+2. Linking lit pixels at distance <= gap+1 thus
connects exactly the contours. A contour avoids its own earlier dashes by the same margin.

Files (the official layout of ``pathfinder{32,128}/curv_contour_length_{L}``): ``imgs/<batch>/sample_<i>.png``
(8-bit grayscale) and ``metadata/<batch>.npy``, a text file (despite the suffix) with one line per image:
``imgs/<batch> sample_<i>.png <i> <label> <contour_length> <paddle_length> <gap> <num_distractors>``;
readers use fields 0, 1 (path) and 3 (label) as LRA's input pipeline does.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


@dataclasses.dataclass
class PathfinderConfig:
    """Options; ``None`` fields scale with ``size`` (the values at 32 px are LRA-like, Path-X uses 128)."""

    size: int = 32
    contour_length: int = 14          # dashes per long contour (LRA's hard split: 14)
    paddle_length: int | None = None  # lit pixels along one dash: 2 at 32 px, 5 at 128 px
    gap: int | None = None            # background pixels between dashes: 1 at 32 px, 2 at 128 px
    marker_radius: int | None = None  # markers are (2r+1)^2 squares: r=1 at 32 px, 2 at 128 px
    num_distractors: int | None = None
    distractor_length: int | None = None  # dashes per distractor: contour_length // 3
    max_turn: float = 0.8             # largest change of direction between dashes (radians)
    border: int = 1

    def __post_init__(self):
        s = self.size / 32
        if self.size < 16:
            raise ValueError(f"Pathfinder size must be >= 16, got {self.size}")
        self.paddle_length = self.paddle_length or round(1 + s)
        self.gap = self.gap if self.gap is not None else (1 if s < 3 else 2)
        self.marker_radius = self.marker_radius or (1 if s < 3 else 2)
        self.num_distractors = self.num_distractors if self.num_distractors is not None else round(3 * s - 1)
        self.distractor_length = self.distractor_length or max(2, self.contour_length // 3)
        if self.gap < 1 or self.paddle_length < 1 or self.contour_length < 1:
            raise ValueError(f"bad Pathfinder options: {self}")

    @property
    def link(self) -> int:
        """Largest Chebyshev distance between lit pixels of one contour's consecutive dashes."""
        return self.gap + 1

    @property
    def sep(self) -> int:
        """Smallest Chebyshev distance between pixels of different contours."""
        return self.gap + 2


Pixels = list  # list of (row, col) int tuples; pure Python is ~10x faster than numpy on these tiny sets


def _dash(y: float, x: float, dy: float, dx: float, length: int) -> Pixels:
    """Pixels of a straight dash of ``length`` pixels from (y, x) along the unit vector (dy, dx)."""
    out = []
    for i in range(2 * length - 1):  # half-pixel steps; points run along a line, so duplicates are consecutive
        p = (round(y + 0.5 * i * dy), round(x + 0.5 * i * dx))
        if not out or out[-1] != p:
            out.append(p)
    return out


def _cheb(a: Pixels, b: Pixels) -> int:
    """Smallest Chebyshev distance between two pixel sets."""
    return min(max(abs(p[0] - q[0]), abs(p[1] - q[1])) for p in a for q in b)


class _Canvas:
    """Pixels of finished contours, and for each the zone (Chebyshev distance < sep) other contours must avoid."""

    def __init__(self, cfg: PathfinderConfig):
        self.cfg, self.size = cfg, cfg.size
        self.pixels: dict[int, list[Pixels]] = {}
        self.zone: dict[int, bytearray] = {}
        r = cfg.sep - 1
        self.offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]

    def dilate(self, px: Pixels) -> set[int]:
        """Flat indices of all canvas pixels within Chebyshev sep-1 of ``px``."""
        s = self.size
        return {(y + dy) * s + x + dx for y, x in px for dy, dx in self.offsets
                if 0 <= y + dy < s and 0 <= x + dx < s}

    def inside(self, px: Pixels, pad: int) -> bool:
        lo, hi = self.cfg.border + pad, self.size - 1 - self.cfg.border - pad
        return all(lo <= y <= hi and lo <= x <= hi for y, x in px)

    def others(self, cid: int) -> bytearray:
        """Union of the zones of all contours but ``cid``."""
        out = np.zeros(self.size * self.size, np.uint8)
        for c, z in self.zone.items():
            if c != cid:
                out |= np.frombuffer(z, np.uint8)
        return bytearray(out.tobytes())

    def add(self, cid: int, pieces: list[Pixels]):
        self.pixels.setdefault(cid, []).extend(pieces)
        z = self.zone.setdefault(cid, bytearray(self.size * self.size))
        for px in pieces:
            for i in self.dilate(px):
                z[i] = 1

    def image(self) -> np.ndarray:
        img = np.zeros((self.size, self.size), np.uint8)
        for pieces in self.pixels.values():
            for px in pieces:
                for y, x in px:
                    img[y, x] = 255
        return img


def _grow_contour(rng: random.Random, canvas: _Canvas, cid: int, n_dashes: int, tries: int = 8):
    """Place a dashed contour of ``n_dashes`` (a random walk of dashes with backtracking) on ``canvas``; returns
    its list of dash pixel lists, or None after ``tries`` fresh starts."""
    cfg, s = canvas.cfg, canvas.size
    pad = cfg.marker_radius  # keep room for a marker at either end
    blocked = canvas.others(cid)
    step, reach = cfg.gap + 1, cfg.paddle_length - 1

    def free(px, own):
        return all(not blocked[y * s + x] and not own[y * s + x] for y, x in px)

    for _ in range(tries):
        y0 = rng.randrange(cfg.border + pad, s - cfg.border - pad)
        x0 = rng.randrange(cfg.border + pad, s - cfg.border - pad)
        theta = rng.uniform(0, 2 * math.pi)
        dy, dx = math.sin(theta), math.cos(theta)
        dash = _dash(y0, x0, dy, dx, cfg.paddle_length)
        own = [0] * (s * s)  # how many of this contour's dashes claim each pixel's zone
        if not canvas.inside(dash, pad) or not free(dash, own):
            continue
        # stack of (pixels, direction, continuous end point); invariant: ``own`` holds the zones of the dashes
        # 0 .. len(stack) - 2, i.e. all but the newest, which the next dash must touch
        stack = [(dash, theta, (y0 + reach * dy, x0 + reach * dx))]
        budget = 4 * n_dashes
        while 0 < len(stack) < n_dashes and budget > 0:
            prev, theta, (ey, ex) = stack[-1]
            for _turn in range(6):
                th = theta + rng.uniform(-cfg.max_turn, cfg.max_turn)
                dy, dx = math.sin(th), math.cos(th)
                sy, sx = ey + step * dy, ex + step * dx
                px = _dash(sy, sx, dy, dx, cfg.paddle_length)
                if canvas.inside(px, pad) and free(px, own) and 2 <= _cheb(px, prev) <= cfg.link:
                    for i in canvas.dilate(prev):
                        own[i] += 1
                    stack.append((px, th, (sy + reach * dy, sx + reach * dx)))
                    break
            else:  # dead end: step back one dash
                budget -= 1
                stack.pop()
                if stack:
                    for i in canvas.dilate(stack[-1][0]):
                        own[i] -= 1
        if len(stack) == n_dashes:
            return [d for d, _, _ in stack]
    return None


def _marker(center: tuple[int, int], r: int) -> Pixels:
    return [(center[0] + dy, center[1] + dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def generate_pathfinder_sample(rng: np.random.Generator | random.Random | int, cfg: PathfinderConfig, label: int,
                               max_attempts: int = 200) -> tuple[np.ndarray, dict]:
    """One image ``uint8 [size, size]`` (0 background, 255 lit) with the given label, and its description
    (``markers``: the two marker centres (row, col); ``num_distractors`` placed)."""
    if not isinstance(rng, random.Random):
        rng = random.Random(int(rng.integers(2**62)) if isinstance(rng, np.random.Generator) else int(rng))
    r = cfg.marker_radius
    for _ in range(max_attempts):
        canvas = _Canvas(cfg)
        mains = []
        for cid in (0, 1):
            dashes = _grow_contour(rng, canvas, cid, cfg.contour_length)
            if dashes is None:
                break
            canvas.add(cid, dashes)
            mains.append(dashes)
        if len(mains) < 2:
            continue
        # ends of the long contours: first pixel of the first dash, last pixel of the last dash
        ends = [(m[0][0], m[-1][-1]) for m in mains]
        if label == 1:
            chosen = [(0, ends[0][0]), (0, ends[0][1])]
        else:
            chosen = [(0, ends[0][rng.randrange(2)]), (1, ends[1][rng.randrange(2)])]
        markers = [_marker(c, r) for _, c in chosen]
        if _cheb(markers[0], markers[1]) < 2:  # two markers must stay two separate squares
            continue
        # a marker touches its own contour's end and keeps sep from every other contour
        zones = {cid: canvas.others(cid) for cid in (0, 1)}
        if not all(canvas.inside(m, 0) and not any(zones[cid][y * cfg.size + x] for y, x in m)
                   for (cid, _), m in zip(chosen, markers)):
            continue
        for (cid, _), m in zip(chosen, markers):
            canvas.add(cid, [m])
        n_dis = 0
        for j in range(cfg.num_distractors):
            dashes = _grow_contour(rng, canvas, 2 + j, cfg.distractor_length, tries=4)
            if dashes is not None:
                canvas.add(2 + j, dashes)
                n_dis += 1
        return canvas.image(), {"label": int(label), "markers": [tuple(int(v) for v in c) for _, c in chosen],
                                "num_distractors": n_dis, "marker_radius": r}
    raise RuntimeError(f"could not place two contours of {cfg.contour_length} dashes in {max_attempts} attempts at "
                       f"size {cfg.size}: lower contour_length or paddle_length")


def _write_png(path: Path, img: np.ndarray):
    from PIL import Image

    Image.fromarray(img, mode="L").save(path)


def _write_batch(out_dir: Path, b: int, count: int, seed: int, cfg: PathfinderConfig, on_image=None) -> int:
    """Write batch ``b`` (its own seed, so batches are independent and reruns reproduce them)."""
    rng = random.Random(f"pathfinder-{seed}-{b}")
    img_dir = out_dir / "imgs" / str(b)
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        label = rng.randrange(2)
        img, info = generate_pathfinder_sample(rng, cfg, label)
        _write_png(img_dir / f"sample_{i}.png", img)
        lines.append(f"imgs/{b} sample_{i}.png {i} {label} {cfg.contour_length} {cfg.paddle_length} "
                     f"{cfg.gap} {info['num_distractors']}\n")
        if on_image is not None:
            on_image(1)
    meta_path = out_dir / "metadata" / f"{b}.npy"
    tmp = meta_path.with_name(f".{b}.npy.tmp-{os.getpid()}")
    tmp.write_text("".join(lines))
    os.replace(tmp, meta_path)  # last: a batch with metadata is complete
    return count


def write_pathfinder(out_dir: str | os.PathLike, n: int, *, size: int = 32, contour_length: int = 14,
                     seed: int = 0, batch_size: int = 1000, workers: int = 1, progress: bool = True,
                     **options) -> Path:
    """Write ``n`` samples (labels from a seeded coin, so about balanced) in the official layout under ``out_dir``.

    Restartable: a batch whose metadata file exists is skipped (its metadata is written last, atomically), and
    each batch has its own seed, so a rerun or a different ``workers`` count produces the same files.
    """
    cfg = PathfinderConfig(size=size, contour_length=contour_length, **options)
    out_dir = Path(out_dir)
    (out_dir / "metadata").mkdir(parents=True, exist_ok=True)
    jobs = [(b, min(batch_size, n - b * batch_size)) for b in range(math.ceil(n / batch_size))]
    with tqdm(total=n, desc=f"pathfinder{size}", disable=not progress, unit="img") as bar:
        todo = []
        for b, count in jobs:
            if (out_dir / "metadata" / f"{b}.npy").exists():
                bar.update(count)
            else:
                todo.append((out_dir, b, count, seed, cfg))
        if workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers) as pool:
                for count in pool.imap_unordered(_star_write_batch, todo):
                    bar.update(count)
        else:
            for job in todo:
                _write_batch(*job, on_image=bar.update)
    return out_dir


def _star_write_batch(job) -> int:
    return _write_batch(*job)
