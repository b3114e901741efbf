"""The proxy suite's report: results table, the paper's claims with a verdict computed from the runs, training time
relative to the softmax twin, and plots.

    from lion.results.proxy import report, write_report
    print(report("results/proxy_medium", "medium"))     # markdown, from every metrics.json under the folder
    write_report("results/proxy_medium", "medium")      # + proxy_medium.md and the PNGs next to it

Inputs: the finished runs of table P at one scale (`metrics.json`, and `csv/metrics.csv` for the validation curves)
and, when present, the suite's `suite.json` (written by `scripts/reproduce.py --suite proxy`): per task the split
sizes and the majority-class accuracy of the test split, the generator parameters, the device and the wall time.

Statistics. A cell is the mean over its seeds, shown as `mean ± std (n=k)`. The noise of a difference between two
cells is `se = sqrt(s_a^2 / n_a + s_b^2 / n_b)` with `s` the standard deviation over seeds; a cell of one seed has
no such estimate, so its `s` is the binomial standard deviation of an accuracy `p` measured on `N` test items,
`sqrt(p (1 - p) / N)` (the test-set part of the noise only). A claim "A above B" **holds** when `A - B > 2 se`,
**does not hold** when `A - B < -2 se`, and is **within noise** otherwise ("at or above" is the same test: within
noise is consistent with "at"); "A close to B" holds when `|A - B| <= CLOSE` points, does not hold when
`|A - B| - 2 se > CLOSE`, and is within noise otherwise. A task's column is *learned* when its best row beats the
majority-class accuracy by `MARGIN` points; otherwise its numbers are not shown and its claims are "not tested".
"""
from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from lion.results.tables import Collection, Seeds, collect, group_runs, load_paper, md, metric_of, throughput_of

MARGIN = 5.0   # points above the majority class that a column's best row must reach to be shown
CLOSE = 2.0    # points: "A close to B"
Z = 2.0        # differences beyond Z standard errors are not noise


@dataclass(frozen=True)
class Claim:
    group: str      # the paper's claim it belongs to (the number of the issue's list)
    task: str
    a: str          # row, or (for "pretraining") the row whose pre-trained and scratch runs are compared
    b: str
    kind: str       # "above" | "at_or_above" | "close"
    text: str
    task_b: str | None = None   # the second cell's task when it differs (pre-trained vs from scratch)


def _claims() -> list[Claim]:
    out = [
        Claim("1. images (ViT, 7 x 7 patches)", "mnist", "lion-d", "lion-lit", "above", "LION-D above LION-LIT"),
        Claim("1. images (ViT, 7 x 7 patches)", "mnist", "lion-s", "lion-lit", "above", "LION-S above LION-LIT"),
        Claim("1. images (ViT, 7 x 7 patches)", "mnist", "lion-d-ms", "lion-d", "at_or_above",
              "LION-D♮ (two scans) at or above LION-D"),
        Claim("1. images (ViT, 7 x 7 patches)", "mnist", "lion-s-ms", "lion-s", "at_or_above",
              "LION-S♮ (two scans) at or above LION-S"),
        Claim("1. images (ViT, 7 x 7 patches)", "mnist", "lion-s", "softmax", "close",
              f"LION-S close to the softmax ViT (within {CLOSE:.0f} points)"),
    ]
    for r in ("lion-d", "lion-s"):
        for b in ("softmax", "lion-lit"):
            out.append(Claim("2. long range (sMNIST, 784 tokens)", "smnist", r, b, "at_or_above",
                             f"{LABEL[r]} at or above {LABEL[b]}"))
    for t in ("listops", "pathfinder"):
        for r in ("lion-d", "lion-s"):
            out.append(Claim(f"3. generated LRA ({TASK_LABEL[t]})", t, r, "softmax", "at_or_above",
                             f"{LABEL[r]} at or above the softmax twin"))
    for r in ("softmax", "lion-lit", "lion-d", "lion-s"):
        out.append(Claim("4. masked-LM pre-training helps", "rotten_tomatoes_pt", r, r, "above",
                         f"{LABEL[r]}: pre-trained above from scratch", task_b="rotten_tomatoes"))
    for r in ("lion-lit", "lion-d", "lion-s"):
        out.append(Claim("4. masked-LM pre-training helps", "rotten_tomatoes_pt", r, "softmax", "close",
                         f"pre-trained {LABEL[r]} close to the pre-trained softmax BERT (within {CLOSE:.0f} points)"))
    return out


_SPEC = load_paper()["tables"]["P"]
LABEL = dict(_SPEC["rows"])
TASK_LABEL = dict(_SPEC["task_labels"])
CLAIMS = _claims()


# ------------------------------------------------------------------------------------------------ numbers


@dataclass
class Stat(Seeds):
    """A cell of the suite: its accuracies over seeds and the size of its test split (for one-seed noise)."""
    n_test: int | None

    def spread(self) -> float | None:
        """Standard deviation of one measurement (percent points): over seeds, else the test set's binomial one."""
        if self.std is not None:
            return self.std
        if self.mean is not None and self.n_test:
            p = min(max(self.mean / 100.0, 0.0), 1.0)
            return 100.0 * math.sqrt(p * (1 - p) / self.n_test)
        return None

    def fmt(self) -> str:
        if not self.values:
            return "not run"
        return f"{self.mean:.1f}" + (f" ± {self.std:.1f}" if self.std is not None else "") + f" (n={self.n})"


def suite_facts(root: Path, size: str) -> dict:
    """The suite.json of this size under root (the newest when several), or {}."""
    found = []
    for p in Path(root).rglob("suite.json"):
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(d, dict) and d.get("proxy_suite") and d.get("size") == size:
            found.append((p.stat().st_mtime, d))
    return max(found, key=lambda x: x[0])[1] if found else {}


class Results:
    """The finished table-P runs of one scale, with the suite's facts."""

    def __init__(self, root: str | Path, size: str, col: Collection | None = None):
        self.root, self.size = Path(root), size
        col = col if col is not None else collect(root)
        self.runs = [r for r in col.runs if r.key[0] == "P" and r.key[2] == size]
        self.groups = group_runs(self.runs)
        self.facts = suite_facts(self.root, size)

    def n_test(self, task: str) -> int | None:
        return (self.facts.get("data", {}).get(task) or {}).get("n_test")

    def majority(self, task: str) -> float | None:
        m = (self.facts.get("data", {}).get(task) or {}).get("majority_acc")
        return 100.0 * m if isinstance(m, (int, float)) else None

    def stat(self, task: str, row: str) -> Stat:
        runs = self.groups.get(("P", row, self.size, task), [])
        return Stat([v for v in (metric_of(r, _SPEC["metric"]) for r in runs) if v is not None], self.n_test(task))

    def tasks(self) -> list[str]:
        return [t for t in _SPEC["tasks"] if any(k[3] == t for k in self.groups)]

    def learned(self, task: str) -> bool | None:
        """Best row >= majority + MARGIN; None when the majority-class accuracy is unknown."""
        maj, best = self.majority(task), self.best(task)
        if maj is None or best is None:
            return None
        return best >= maj + MARGIN

    def best(self, task: str) -> float | None:
        return max((s.mean for s in (self.stat(task, r) for r in LABEL) if s.mean is not None), default=None)


def verdict(kind: str, a: Stat, b: Stat) -> tuple[str, float | None, float | None]:
    """(verdict, difference A - B, 2 standard errors of it) in percent points."""
    if a.mean is None or b.mean is None:
        return "not run", None, None
    d = a.mean - b.mean
    sa, sb = a.spread(), b.spread()
    se = math.sqrt((sa or 0.0) ** 2 / a.n + (sb or 0.0) ** 2 / b.n)
    noise = Z * se
    if kind in ("above", "at_or_above"):
        v = "holds" if d > noise else "does not hold" if d < -noise else "within noise"
    elif kind == "close":
        v = "holds" if abs(d) <= CLOSE else "does not hold" if abs(d) - noise > CLOSE else "within noise"
    else:
        raise ValueError(f"unknown claim kind {kind!r}")
    return v, d, noise


def claim_rows(res: Results) -> list[dict]:
    rows = []
    for c in CLAIMS:
        tasks = {c.task, c.task_b or c.task}
        if not all(any(k[3] == t for k in res.groups) for t in tasks):
            continue
        a, b = res.stat(c.task, c.a), res.stat(c.task_b or c.task, c.b)
        v, d, noise = verdict(c.kind, a, b)
        if any(res.learned(t) is False for t in tasks) and v != "not run":
            v = "not tested (column at the majority class)"
        rows.append({"claim": c, "verdict": v, "diff": d, "noise": noise, "a": a.mean, "b": b.mean})
    return rows


# ------------------------------------------------------------------------------------------------ markdown


def _time_ratio(res: Results, task: str, row: str) -> str:
    row_runs = res.groups.get(("P", row, res.size, task), [])
    twin = res.groups.get(("P", _SPEC["twin"], res.size, task), [])
    t_row = [v for v in map(throughput_of, row_runs) if v]
    t_twin = [v for v in map(throughput_of, twin) if v]
    if not row_runs:
        return "-"
    if not t_row or not t_twin:
        return "no throughput"
    return f"x{statistics.fmean(t_twin) / statistics.fmean(t_row):.2f}"


def results_table(res: Results) -> str:
    tasks = res.tasks()
    heads = ["Model"] + [TASK_LABEL.get(t, t) for t in tasks]
    body = []
    for row, label in LABEL.items():
        line = [label]
        for t in tasks:
            if row not in _task_rows(res, t):
                line.append("-")
            elif res.learned(t) is False:
                line.append("(not learned)")
            else:
                line.append(res.stat(t, row).fmt())
        body.append(line)
    body.append(["Majority class"] + [f"{res.majority(t):.1f}" if res.majority(t) is not None else "unknown"
                                      for t in tasks])
    return md(heads, body)


def _task_rows(res: Results, task: str) -> list[str]:
    return [r for r in LABEL if ("P", r, res.size, task) in res.groups]


def column_notes(res: Results) -> list[str]:
    notes = []
    for t in res.tasks():
        maj, best, ok = res.majority(t), res.best(t), res.learned(t)
        if ok is None:
            notes.append(f"{TASK_LABEL.get(t, t)}: majority-class accuracy unknown (no suite.json), shown unchecked.")
        elif not ok:
            notes.append(f"{TASK_LABEL.get(t, t)}: **not learned** at this size: the best row ({best:.1f}) is not "
                         f"{MARGIN:.0f} points above the majority class ({maj:.1f}); its numbers are not shown and "
                         f"its claims are not tested.")
    return notes


def claims_table(res: Results) -> str:
    body = []
    for r in claim_rows(res):
        c = r["claim"]
        if r["diff"] is None:
            measured = "-"
        else:
            measured = f"{r['a']:.1f} vs {r['b']:.1f}: {r['diff']:+.1f} (noise ±{r['noise']:.1f})"
        body.append([c.text, c.group, measured, r["verdict"]])
    return md(["Tested as (A vs B)", "Paper's claim", "Measured (A vs B: difference, noise = 2 s.e.)", "Verdict"],
              body)


def time_table(res: Results) -> str:
    tasks = res.tasks()
    body = [[label] + [_time_ratio(res, t, row) if row in _task_rows(res, t) else "-" for t in tasks]
            for row, label in LABEL.items()]
    return md(["Model"] + [TASK_LABEL.get(t, t) for t in tasks], body)


def facts_table(res: Results) -> str:
    data, gens = res.facts.get("data", {}), res.facts.get("generators", {})
    body = []
    for t in res.tasks():
        f = data.get(t) or {}
        split = "/".join(str(f.get(k, "?")) for k in ("n_train", "n_val", "n_test")) if f else "unknown"
        gen = ", ".join(f"{k}={v}" for k, v in (gens.get(t) or {}).items()) or "-"
        maj = f"{100 * f['majority_acc']:.1f}" if "majority_acc" in f else "unknown"
        body.append([TASK_LABEL.get(t, t), split, f.get("classes", "?") if f else "?", maj, gen])
    return md(["Task", "train / val / test", "classes", "majority class (test, %)", "generator parameters"], body)


def mlm_line(res: Results) -> str | None:
    cells = [(LABEL[r], res.stat("mlm", r)) for r in LABEL if ("P", r, res.size, "mlm") in res.groups]
    if not cells:
        return None
    return ("Masked-LM pre-training (masked-token accuracy on the held-out text, 15% masking, seed 0): " +
            ", ".join(f"{label} {s.fmt()}" for label, s in cells) + ".")


def report(root: str | Path, size: str, col: Collection | None = None, images: dict | None = None) -> str:
    """The markdown report of the proxy runs of `size` under `root` (see the module docstring)."""
    res = Results(root, size, col)
    f = res.facts
    out = [f"## Proxy suite ({size})"]
    if not res.runs:
        return "\n".join(out + ["", f"not run: `python scripts/reproduce.py --suite proxy --size {size}`"])
    meta = []
    if f.get("device"):
        meta.append(f"Device: {f['device']}.")
    if f.get("commit"):
        meta.append(f"Commit {f['commit']}.")
    if f.get("wall_seconds") is not None:
        n = len(f.get("sessions", [])) or 1
        meta.append(f"Wall time {f['wall_seconds'] / 60:.1f} min"
                    + (f" over {n} invocations (resumed)" if n > 1 else "") + ".")
    if f.get("command"):
        meta.append(f"Command: `{f['command']}`.")
    if meta:
        out += ["", " ".join(meta)]
    out += ["", f"Test accuracy (%), mean ± std over seeds (n = number of seeds); a column is shown when its best row "
                f"is at least {MARGIN:.0f} points above the majority class (last row).", "", results_table(res)]
    notes = column_notes(res)
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    line = mlm_line(res)
    if line:
        out += ["", line]
    out += ["", "### Claims\n\nEach claim is computed from the runs above: holds / does not hold when the difference "
                f"is beyond {Z:.0f} standard errors (over seeds) in the claimed / opposite direction, within noise "
                f"otherwise; \"close\" means within {CLOSE:.0f} points.", "", claims_table(res)]
    device = str(f.get("device", ""))
    where = "CPU times" if device.startswith("CPU") or not device else "GPU times"
    out += ["", f"### Training time relative to the softmax twin ({where})", "",
            "The softmax twin's training throughput divided by the row's (samples/s, means over seeds); "
            + ("measured on a CPU, so these ratios say nothing about a GPU." if where == "CPU times" else ""), "",
            time_table(res)]
    out += ["", "### Data", "", facts_table(res)]
    if images:
        out += ["", "### Plots", ""] + [f"![{k}]({v})" for k, v in images.items()]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ plots


def _curve(path: Path) -> dict[int, float]:
    """epoch -> validation accuracy (%) from a run's csv/metrics.csv."""
    out: dict[int, float] = {}
    if not path.is_file():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key in ("val/acc", "val/score"):
                v = row.get(key)
                if v not in (None, "") and row.get("epoch") not in (None, ""):
                    try:
                        out[int(float(row["epoch"]))] = 100.0 * float(v)
                    except ValueError:
                        pass
                    break
    return out


def plot(res: Results, out_dir: Path, prefix: str) -> dict[str, str]:
    """accuracy (bars with error bars, per task and row) and validation curves (mean over seeds); returns
    {title: file name}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = res.tasks()
    files = {}
    if not tasks:
        return files
    ncol = min(4, len(tasks))
    nrow = math.ceil(len(tasks) / ncol)
    colors = {r: c for r, c in zip(LABEL, plt.rcParams["axes.prop_cycle"].by_key()["color"])}

    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    for ax, t in zip(axes.flat, tasks):
        rows = _task_rows(res, t)
        stats = [res.stat(t, r) for r in rows]
        x = range(len(rows))
        ax.bar(x, [s.mean or 0 for s in stats], yerr=[s.std or 0 for s in stats], capsize=3,
               color=[colors[r] for r in rows])
        if res.majority(t) is not None:
            ax.axhline(res.majority(t), color="k", ls="--", lw=1, label="majority class")
            ax.legend(fontsize=7, loc="lower right")
        lo = min([s.mean for s in stats if s.mean is not None] + [res.majority(t) or 100])
        ax.set_ylim(max(0, lo - 10), min(100, max((s.mean or 0) + (s.std or 0) for s in stats) + 5))
        ax.set_xticks(list(x), [LABEL[r] for r in rows], rotation=45, ha="right", fontsize=7)
        ax.set_title(TASK_LABEL.get(t, t), fontsize=9)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
    files["Test accuracy per task and row (mean ± std over seeds; dashed: majority class)"] = \
        _save(fig, axes, len(tasks), out_dir / f"{prefix}_accuracy.png")

    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    for ax, t in zip(axes.flat, tasks):
        for r in _task_rows(res, t):
            curves = [_curve(run.path.parent / "csv" / "metrics.csv")
                      for run in res.groups.get(("P", r, res.size, t), [])]
            curves = [c for c in curves if c]
            if not curves:
                continue
            epochs = sorted(set.intersection(*(set(c) for c in curves)))
            ax.plot(epochs, [statistics.fmean(c[e] for c in curves) for e in epochs], marker=".",
                    label=LABEL[r], color=colors[r])
        ax.set_title(TASK_LABEL.get(t, t), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("validation accuracy (%)", fontsize=8)
        ax.legend(fontsize=6)
    files["Validation accuracy per epoch (mean over seeds)"] = _save(fig, axes, len(tasks),
                                                                     out_dir / f"{prefix}_curves.png")
    return files


def _save(fig, axes, used: int, path: Path) -> str:
    """Blank the unused panels, write the figure as PNG and close it; returns the file name."""
    import matplotlib.pyplot as plt

    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def write_report(results_dir: str | Path, size: str) -> Path:
    """<results_dir>/proxy_<size>.md with the plots beside it (PNG); returns the markdown's path."""
    results_dir = Path(results_dir)
    col = collect(results_dir)
    res = Results(results_dir, size, col)
    images = plot(res, results_dir, f"proxy_{size}") if res.runs else {}
    path = results_dir / f"proxy_{size}.md"
    from lion.data.common import atomic_write_bytes
    atomic_write_bytes(path, (f"# Proxy suite, {size}\n" + report(results_dir, size, col, images).split("\n", 1)[1]).encode())
    return path
