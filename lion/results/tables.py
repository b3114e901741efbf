"""Turn finished runs into the paper's tables, with the paper's numbers beside the project's.

    from lion.results.tables import make_tables
    print(make_tables("logs/"))                      # every table, from every metrics.json under logs/

Inputs (docs/DESIGN.md, "Run directory"): each run writes `metrics.json` with `status`, `table` (`id`, `row`,
`scale`, `task`), `model.params`, `metrics`, `throughput`, `device` and `seed`. A cell of the project's table is the
group of finished runs with the same (id, row, scale, task); several seeds are averaged and their count shown. The
benchmark scripts (`scripts/bench_train_throughput.py`, `scripts/bench_resolution.py`) write JSON files with a
`benchmark` key that Table D reads. The paper's numbers and the table layouts come from `lion/results/paper.yaml`.

Rules: a run that is absent is shown as "not run", a metric a run lacks as "no metric"; nothing is estimated or
carried over from the paper. Accuracies in [0, 1] (torchmetrics' convention) are shown in percent. "Train. time" is
the softmax twin's training throughput divided by the row's, both from runs of the same table cell column; when the
two were measured on different devices the ratio is marked with an asterisk.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

MISSING, NO_METRIC = "not run", "no metric"

# Where each reported quantity is looked up in a run's "metrics" (first key present wins). The test split is the
# evaluation of the checkpoint train.py reports (the best one, or the final weights where the recipe picks none:
# the GLUE runs); runs without a test split fall back to val. A name not listed here is looked up as test/<name>,
# then val/<name> (e.g. "mismatched/accuracy").
METRIC_KEYS = {
    "top1": ["test/acc", "test/acc1", "test/top1", "val/acc", "val/acc1", "val/top1"],
    "acc": ["test/acc", "val/acc"],
    "mlm_acc": ["test/mlm_acc", "val/mlm_acc", "test/acc", "val/acc"],
    "score": ["test/score", "val/score"],             # GLUE: the paper's task score (lion.tasks.text.PAPER_SCORES)
    "glue_score": ["test/glue_score", "val/glue_score"],  # GLUE: the GLUE benchmark's task score
    "accuracy": ["test/accuracy", "val/accuracy", "test/acc", "val/acc"],
    "f1": ["test/f1", "val/f1"],
    "matthews_corrcoef": ["test/matthews_corrcoef", "val/matthews_corrcoef", "test/mcc", "val/mcc"],
    "pearson": ["test/pearson", "val/pearson"],
    "spearman": ["test/spearman", "val/spearman"],
}
THROUGHPUT_KEYS = ["train_samples_per_s", "train_tokens_per_s"]


# ------------------------------------------------------------------------------------------------ loading


def load_paper(path: str | Path | None = None) -> dict:
    """The paper's numbers and table layouts (`lion/results/paper.yaml`, shipped as package data)."""
    if path is None:
        text = resources.files("lion.results").joinpath("paper.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@dataclass
class Run:
    """One finished (or unfinished) run, read from its metrics.json."""
    path: Path
    status: str
    table: dict | None
    metrics: dict
    throughput: dict
    device: str | None
    seed: int | None
    params: int | None
    mtime: float

    @property
    def key(self) -> tuple | None:
        t = self.table
        if not t:
            return None
        return (str(t.get("id")), str(t.get("row")), str(t.get("scale")), str(t.get("task")))


@dataclass
class Collection:
    """The runs found under a directory, and what could not be used (for the footnotes)."""
    runs: list[Run] = field(default_factory=list)
    unfinished: list[Run] = field(default_factory=list)
    untabled: list[Run] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    benchmarks: list[dict] = field(default_factory=list)


def read_run(path: Path) -> Run:
    """Parse one metrics.json; raises ValueError naming the file and the problem."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read it as JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
    table = d.get("table")
    if table is not None and not (isinstance(table, dict) and {"id", "row", "scale", "task"} <= set(table)):
        raise ValueError(f"{path}: 'table' must be null or have keys id, row, scale, task; got {table!r}")
    model = d.get("model") or {}
    return Run(path=path, status=str(d.get("status", "unknown")), table=table, metrics=d.get("metrics") or {},
               throughput=d.get("throughput") or {}, device=d.get("device"), seed=d.get("seed"),
               params=model.get("params") if isinstance(model, dict) else None, mtime=path.stat().st_mtime)


def collect(root: str | Path) -> Collection:
    """Every metrics.json (runs) and benchmark JSON (a dict with a 'benchmark' key) under root, recursively."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs directory {root} does not exist; pass the directory your runs write to "
                                "(paths.log_dir, e.g. logs/)")
    col = Collection()
    for path in sorted(root.rglob("metrics.json")):
        try:
            run = read_run(path)
        except ValueError as e:
            col.unreadable.append((path, str(e)))
            continue
        if run.status != "finished":
            col.unfinished.append(run)
        elif run.key is None:
            col.untabled.append(run)
        else:
            col.runs.append(run)
    for path in sorted(root.rglob("*.json")):
        if path.name == "metrics.json":
            continue
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(d, dict) and "benchmark" in d and isinstance(d.get("results"), list):
            col.benchmarks.append({**d, "_path": str(path)})
    return col


def group_runs(runs: list[Run]) -> dict[tuple, list[Run]]:
    """(id, row, scale, task) -> runs, one per seed (the newest file wins when a seed was run twice)."""
    by_seed: dict[tuple, Run] = {}
    for r in sorted(runs, key=lambda r: r.mtime):
        by_seed[(r.key, r.seed if r.seed is not None else str(r.path))] = r
    groups: dict[tuple, list[Run]] = {}
    for (key, _), r in by_seed.items():
        groups.setdefault(key, []).append(r)
    return groups


# ------------------------------------------------------------------------------------------------ values


def as_percent(x: float) -> float:
    """Metrics in [-1, 1] (fractions, correlations) to percent; larger values are taken as percent already."""
    return 100.0 * x if abs(x) <= 1.0 else x


def metric_of(run: Run, name: str) -> float | None:
    for k in METRIC_KEYS.get(name, [f"test/{name}", f"val/{name}"]):
        v = run.metrics.get(k)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return as_percent(float(v))
    return None


def throughput_of(run: Run) -> float | None:
    for k in THROUGHPUT_KEYS:
        v = run.throughput.get(k)
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    return None


@dataclass
class Seeds:
    """The values of one quantity over the seeds of a group: n, mean and sample standard deviation."""
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass
class Cell(Seeds):
    """Mean over seeds of one quantity; n = number of runs that had it, runs = number of runs in the group."""
    runs: int

    def fmt(self, digits: int = 1) -> str:
        if self.runs == 0:
            return MISSING
        if not self.values:
            return NO_METRIC
        s = f"{self.mean:.{digits}f}"
        if self.n > 1:
            s += f" ± {self.std:.{digits}f} (n={self.n})"
        return s


def cell(groups: dict, key: tuple, fn) -> Cell:
    runs = groups.get(key, [])
    return Cell([v for v in (fn(r) for r in runs) if v is not None], len(runs))


def fmt_num(x, digits: int = 1, suffix: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return f"{x:.{digits}f}{suffix}"


def fmt_delta(ours: float | None, paper) -> str:
    if ours is None or not isinstance(paper, (int, float)):
        return "-"
    return f"{ours - paper:+.1f}"


def fmt_ratio(x) -> str:
    return f"x{x:.2f}" if isinstance(x, (int, float)) else "-"


def fmt_params(n) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    return f"{n / 1e6:.1f}M"


def params_of(groups: dict, key: tuple) -> str:
    ps = [r.params for r in groups.get(key, []) if isinstance(r.params, (int, float))]
    return fmt_params(ps[0]) if ps else "-"


def train_time(groups: dict, key: tuple, twin_key: tuple) -> str:
    """Twin throughput / row throughput (means over seeds); '*' when the devices differ."""
    row, twin = groups.get(key, []), groups.get(twin_key, [])
    t_row = [v for v in map(throughput_of, row) if v]
    t_twin = [v for v in map(throughput_of, twin) if v]
    if not row:
        return MISSING
    if not t_row:
        return "no throughput"
    if not t_twin:
        return "no twin run"
    ratio = statistics.fmean(t_twin) / statistics.fmean(t_row)
    devices = {r.device for r in row + twin}
    return f"x{ratio:.2f}" + ("*" if len(devices) > 1 else "")


def md(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ tables


def table_a(groups: dict, spec: dict) -> str:
    """ImageNet: per scale, one row per model: params, top-1 (ours, paper, diff), train. time (ours, paper)."""
    task = spec["tasks"][0]
    out = [f"## {spec['title']}"]
    for scale in spec["scales"]:
        paper = (spec.get("paper") or {}).get(scale, {})
        rows = []
        for row, label in spec["rows"].items():
            key, twin_key = ("A", row, scale, task), ("A", spec["twin"], scale, task)
            c = cell(groups, key, lambda r: metric_of(r, spec["metric"]))
            p = paper.get(row, {})
            rows.append([label, params_of(groups, key), c.fmt(), fmt_num(p.get("top1")), fmt_delta(c.mean, p.get("top1")),
                         train_time(groups, key, twin_key), fmt_ratio(p.get("train_time"))])
        for name, by_scale in (spec.get("paper_only_rows") or {}).items():
            if scale in by_scale:
                p = by_scale[scale]
                rows.append([f"{name} (paper only)", p.get("params", "-"), "not reproduced", fmt_num(p.get("top1")),
                             "-", "-", fmt_ratio(p.get("train_time"))])
        out += [f"\n### {scale}\n",
                md(["Model", "Params", "Top-1", "Top-1 (paper)", "Diff", "Train. time", "Train. time (paper)"], rows)]
    return "\n".join(out)


def glue_score(run: Run, score_of: list[str], key: str = "score") -> float | None:
    """The run's GLUE task score: its `key` metric ("score": the paper's definition, "glue_score": the GLUE
    benchmark's), else the mean of the metrics in `score_of`."""
    score = metric_of(run, key)
    if score is not None:
        return score
    vals = [metric_of(run, k) for k in score_of]
    return statistics.fmean(vals) if vals and all(v is not None for v in vals) else None


def table_b(groups: dict, spec: dict) -> str:
    """MLM and GLUE: per scale, MLM acc (ours, paper, diff), GLUE mean (ours, paper, diff), train. time; then the
    per-task GLUE scores (mean over seeds) as the paper computes them (the GLUE column), and as the GLUE benchmark
    defines them (paper.yaml B.glue: score_of, glue_score_of)."""
    glue = spec["glue"]
    out = [f"## {spec['title']}"]
    for scale in spec["scales"]:
        paper = (spec.get("paper") or {}).get(scale, {})
        rows, task_rows, bench_rows = [], [], []
        for row, label in spec["rows"].items():
            mlm_key = ("B", row, scale, "mlm")
            mlm = cell(groups, mlm_key, lambda r: metric_of(r, "mlm_acc"))
            per_task = {t: cell(groups, ("B", row, scale, t), lambda r, t=t: glue_score(r, glue[t]["score_of"]))
                        for t in spec["glue_tasks"]}
            done = [c.mean for c in per_task.values() if c.mean is not None]
            if len(done) == len(per_task):
                glue_mean, glue_txt = statistics.fmean(done), f"{statistics.fmean(done):.1f}"
            elif done:
                glue_mean, glue_txt = None, f"partial: {statistics.fmean(done):.1f} ({len(done)}/{len(per_task)} tasks)"
            else:
                glue_mean, glue_txt = None, MISSING
            p = paper.get(row, {})
            rows.append([label, params_of(groups, mlm_key), mlm.fmt(2), fmt_num(p.get("mlm_acc"), 2),
                         fmt_delta(mlm.mean, p.get("mlm_acc")), glue_txt, fmt_num(p.get("glue"), 2),
                         fmt_delta(glue_mean, p.get("glue")), train_time(groups, mlm_key, ("B", spec["twin"], scale, "mlm")),
                         fmt_ratio(p.get("train_time"))])
            task_rows.append([label] + [c.fmt() for c in per_task.values()])
            bench = [cell(groups, ("B", row, scale, t),
                          lambda r, t=t: glue_score(r, glue[t].get("glue_score_of", glue[t]["score_of"]), "glue_score"))
                     for t in spec["glue_tasks"]]
            done_b = [c.mean for c in bench if c.mean is not None]
            bench_rows.append([label] + [c.fmt() for c in bench] +
                              [f"{statistics.fmean(done_b):.1f}" if len(done_b) == len(bench) else
                               (f"partial ({len(done_b)}/{len(bench)})" if done_b else MISSING)])
        for name, by_scale in (spec.get("paper_only_rows") or {}).items():
            if scale in by_scale:
                p = by_scale[scale]
                rows.append([f"{name} (paper only)", "-", "not reproduced", fmt_num(p.get("mlm_acc"), 2), "-",
                             "not reproduced", fmt_num(p.get("glue"), 2), "-", "-",
                             fmt_ratio(p.get("train_time"))])
        out += [f"\n### {scale}\n",
                md(["Model", "Params", "MLM acc.", "MLM acc. (paper)", "Diff", "GLUE", "GLUE (paper)", "Diff",
                    "Train. time", "Train. time (paper)"], rows),
                f"\nGLUE per task ({scale}), the paper's scores (the GLUE column above averages these; mean of): "
                + ", ".join(f"{t} {'+'.join(glue[t]['score_of'])}" for t in spec["glue_tasks"]) + "\n",
                md(["Model"] + [t.upper() for t in spec["glue_tasks"]], task_rows),
                f"\nGLUE per task ({scale}), the GLUE benchmark's scores (mean of): "
                + ", ".join(f"{t} {'+'.join(glue[t].get('glue_score_of', glue[t]['score_of']))}"
                            for t in spec["glue_tasks"]) + "\n",
                md(["Model"] + [t.upper() for t in spec["glue_tasks"]] + ["GLUE"], bench_rows)]
    return "\n".join(out)


def table_tasks(groups: dict, spec: dict, tid: str, scale: str) -> str:
    """Tasks as columns (Table C): accuracy per task and its mean, then training time per task relative to
    the softmax twin. Paper numbers, where there are any, inside the cell."""
    paper = (spec.get("paper") or {}).get(scale, {})
    mark = "†" if spec.get("unverified") else ""
    acc_rows, time_rows = [], []
    for row, label in spec["rows"].items():
        cells = {t: cell(groups, (tid, row, scale, t), lambda r: metric_of(r, spec["metric"])) for t in spec["tasks"]}
        p = paper.get(row, {})
        line = [label]
        for t, c in cells.items():
            s = c.fmt()
            if t in p:
                s += f" (paper{mark} {p[t]:.2f}, {fmt_delta(c.mean, p[t])})"
            line.append(s)
        done = [c.mean for c in cells.values() if c.mean is not None]
        avg = f"{statistics.fmean(done):.1f}" if len(done) == len(cells) else (
            f"partial: {statistics.fmean(done):.1f} ({len(done)}/{len(cells)})" if done else MISSING)
        if "avg" in p:
            avg += f" (paper{mark} {p['avg']:.2f}" + (f", {fmt_delta(statistics.fmean(done), p['avg'])})"
                                                      if len(done) == len(cells) else ")")
        acc_rows.append(line + [avg])
        time_rows.append([label] + [train_time(groups, (tid, row, scale, t), (tid, spec["twin"], scale, t))
                                    for t in spec["tasks"]])
    heads = [(spec.get("task_labels") or {}).get(t, t) for t in spec["tasks"]]
    out = [md(["Model"] + heads + ["Avg"], acc_rows), "\nTraining time relative to the softmax twin:\n",
           md(["Model"] + heads, time_rows)]
    if mark and paper:
        out.append("\n† third-party summaries of the paper, unverified.")
    return "\n".join(out)


def table_c(groups: dict, spec: dict) -> str:
    return f"## {spec['title']}\n\n" + table_tasks(groups, spec, "C", spec["scales"][0])


def table_p(root: str | Path, col: Collection, spec: dict, scales=None) -> str:
    """The proxy suite (lion.results.proxy): per scale with runs, the results table, the claims computed from the
    runs, training time relative to the softmax twin and the data facts of the suite's suite.json."""
    from lion.results.proxy import report

    out = [f"## {spec['title']}"]
    present = {r.key[2] for r in col.runs if r.key[0] == "P"}
    for scale in scales or spec["scales"]:
        if scale in present or scales is not None:
            out.append("\n#" + report(root, scale, col))
    if len(out) == 1:
        out.append("\nnot run: `python scripts/reproduce.py --suite proxy`")
    return "\n".join(out)


def table_d(benchmarks: list[dict], spec: dict) -> str:
    """Efficiency, from the benchmark scripts' JSON files: training time relative to the softmax twin (with the
    paper's ratios), and inference time and memory against resolution per form."""
    out = [f"## {spec['title']}", "\nClaim 1 (the three forms compute the same function) is checked by the test "
           "suite (tests/test_ops.py and the model tests), not by a run.\n"]
    train = [b for b in benchmarks if b.get("benchmark") == "train_throughput"]
    out.append("### Training time relative to the softmax twin (same run, same device)\n")
    if not train:
        out.append(f"{MISSING}: `python scripts/bench_train_throughput.py --json-out <runs dir>/bench/train.json`")
    for b in train:
        rows = []
        for r in b["results"]:
            paper = (spec.get("train_time") or {}).get(f"{r['family']}_{r['size']}", {}).get(r["model"])
            rel = r.get("relative_time")
            rows.append([r["family"], r["size"], r["model"], r.get("status", "ok"),
                         fmt_num(r.get("throughput"), 1), r.get("unit", ""),
                         f"x{rel:.2f}" if isinstance(rel, (int, float)) else "-",
                         f"x{paper:.2f}" if paper is not None else "-"])
        out += [f"\n{b.get('device', '?')}, {b.get('settings', '')} ({b['_path']})\n",
                md(["Family", "Size", "Model", "Status", "Throughput", "Unit", "Train. time", "Train. time (paper)"],
                   rows)]
    res = [b for b in benchmarks if b.get("benchmark") == "resolution"]
    out.append("\n### Inference time and extra peak memory against resolution\n")
    if not res:
        out.append(f"{MISSING}: `python scripts/bench_resolution.py --json-out <runs dir>/bench/resolution.json`")
    for b in res:
        rows = []
        for r in b["results"]:
            rows.append([r["resolution"], r.get("tokens", "-"), r["model"], r["form"], r.get("status", "ok"),
                         fmt_num(r.get("ms"), 1), fmt_num(r.get("peak_mib"), 0)])
        out += [f"\n{b.get('device', '?')}, {b.get('settings', '')} ({b['_path']})\n",
                md(["Resolution", "Tokens", "Model", "Form", "Status", "Time (ms)", "Extra peak (MiB)"], rows)]
        fastest = fastest_forms(b["results"])
        if fastest:
            out += ["\nClaim 4 (chunk form fastest for LION-LIT and LION-D), fastest LION form per resolution:\n",
                    md(["Resolution", "Model", "Fastest form"], fastest)]
    return "\n".join(out)


def fastest_forms(results: list[dict]) -> list[list]:
    best: dict[tuple, tuple] = {}
    for r in results:
        if r.get("status", "ok") != "ok" or r.get("form") in (None, "softmax") or r.get("ms") is None:
            continue
        k = (r["resolution"], r["model"])
        if k not in best or r["ms"] < best[k][0]:
            best[k] = (r["ms"], r["form"])
    return [[res, model, form] for (res, model), (_, form) in sorted(best.items())]


# ------------------------------------------------------------------------------------------------ entry point

BUILDERS = {"A": table_a, "B": table_b, "C": table_c}


def footnotes(col: Collection, known_ids: set[str]) -> str:
    notes = []
    if col.unfinished:
        notes.append(f"{len(col.unfinished)} run(s) not finished, left out: " +
                     ", ".join(f"{r.path.parent} ({r.status})" for r in col.unfinished[:10]))
    if col.untabled:
        notes.append(f"{len(col.untabled)} finished run(s) without a `table:` node, left out.")
    if col.unreadable:
        notes.append("unreadable metrics.json, left out: " + "; ".join(msg for _, msg in col.unreadable[:10]))
    other = sorted({r.table["id"] for r in col.runs} - known_ids)
    if other:
        notes.append(f"runs with table ids not in paper.yaml, left out: {other}")
    devices = sorted({str(r.device) for r in col.runs})
    notes.append(f"{len(col.runs)} finished run(s) used; devices: {', '.join(devices) or '-'}.")
    notes.append("'not run' = no finished run for that cell; '±' = standard deviation over n seeds; "
                 "'*' = the model and its softmax twin ran on different devices.")
    return "\n".join(f"- {n}" for n in notes)


def make_tables(root: str | Path, tables: str | list[str] = "ABCDP", paper: str | Path | None = None) -> str:
    """Markdown for the requested tables (letters among A, B, C, D, P) from the runs under root."""
    spec = load_paper(paper)["tables"]
    col = collect(root)
    groups = group_runs(col.runs)
    parts = [f"# Results from {root}"]
    for tid in tables:
        if tid not in spec:
            raise ValueError(f"unknown table {tid!r}; choose among {sorted(spec)}")
        if tid == "D":
            parts.append(table_d(col.benchmarks, spec["D"]))
        elif tid == "P":
            parts.append(table_p(root, col, spec["P"]))
        else:
            parts.append(BUILDERS[tid](groups, spec[tid]))
    parts.append("## Notes\n\n" + footnotes(col, set(spec)))
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="Write the paper's tables (A-D, and the proxy suite P) from finished "
                                "runs, with the paper's numbers beside the project's.")
    p.add_argument("--runs", required=True, help="directory searched recursively for metrics.json (and benchmark JSON)")
    p.add_argument("--out", help="write the markdown here (default: print it)")
    p.add_argument("--tables", default="ABCDP", help="which tables, e.g. AC (default ABCDP)")
    p.add_argument("--paper", help="another paper-numbers file (default: lion/results/paper.yaml)")
    args = p.parse_args(argv)
    try:
        text = make_tables(args.runs, list(args.tables.upper()), args.paper)
    except (FileNotFoundError, ValueError) as e:
        print(f"make_tables: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0
