"""GPU-hours of a job graph, from measurements only; "unknown" where there is none (never a guess).

Per training job, the first of:
1. measured: the job's own finished run (`fit_seconds` x its GPUs, from metrics.json);
2. same cell: a finished run of the same cell with another seed on a GPU (same config, same schedule);
3. throughput: a GPU measurement of the same model (family, attention, size) in samples/s, from the
   `throughput.train_samples_per_s` of a finished run's metrics.json or a `scripts/bench_train_throughput.py`
   JSON, and a job whose length in samples the config fixes (`trainer.max_steps` x global batch). Epoch-based
   jobs need the data set's size, which the config does not say: they stay unknown at this step.
Measurements on a CPU never estimate GPU time. Each estimate names its source.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lion.reproduce.graph import Graph, Job


@dataclass
class Estimate:
    gpu_hours: float | None
    source: str           # "measured", "seed 19 of this cell on 1x NVIDIA H100 ...", "unknown: ..."

    def text(self) -> str:
        return f"{self.gpu_hours:.1f} GPU-h ({self.source})" if self.gpu_hours is not None else self.source


def gpus_of(device: str | None) -> int | None:
    """'8x NVIDIA H100 80GB HBM3' -> 8; 'NVIDIA ...' -> 1; 'cpu' / None -> None (not a GPU measurement)."""
    if not device or device.strip().lower() in ("cpu", "mps"):
        return None
    m = re.match(r"\s*(\d+)x\s", device)
    return int(m.group(1)) if m else 1


@dataclass
class Measurements:
    runs: list[dict]      # finished metrics.json payloads (with "_path")
    bench: list[dict]     # bench_train_throughput results (with "device", "_path")

    @classmethod
    def scan(cls, dirs: list[Path]) -> "Measurements":
        runs, bench = [], []
        for d in dirs:
            d = Path(d)
            if not d.is_dir():
                continue
            for p in d.rglob("*.json"):
                try:
                    blob = json.loads(p.read_text())
                except (OSError, ValueError, UnicodeDecodeError):
                    continue
                if not isinstance(blob, dict):
                    continue
                if p.name == "metrics.json" and blob.get("status") == "finished":
                    runs.append({**blob, "_path": str(p)})
                elif blob.get("benchmark") == "train_throughput" and isinstance(blob.get("results"), list):
                    for r in blob["results"]:
                        if isinstance(r, dict):
                            bench.append({**r, "device": blob.get("device"), "_path": str(p)})
        return cls(runs, bench)


def _same_cell(run: dict, job: Job) -> bool:
    t = run.get("table") or {}
    return f"{t.get('id')}/{t.get('row')}/{t.get('scale')}/{t.get('task')}" == job.cell


def _device_ok(device: str | None, like: str | None) -> bool:
    return gpus_of(device) is not None and (not like or like.lower() in str(device).lower())


def estimate_job(job: Job, meas: Measurements, device_like: str | None = None) -> Estimate:
    if job.kind != "train":
        return Estimate(0.0, "no GPU")
    gpus = job.resources.get("gpus_per_node", 0) * job.resources.get("nodes", 1)
    own = next((r for r in meas.runs if Path(r["_path"]).parent == job.run_dir), None)
    if own is not None and own.get("fit_seconds") and gpus_of(own.get("device")):
        return Estimate(own["fit_seconds"] / 3600 * gpus_of(own["device"]), f"measured on {own['device']}")
    if gpus == 0:
        return Estimate(0.0, "CPU job")
    same = [r for r in meas.runs if _same_cell(r, job) and r.get("fit_seconds") and _device_ok(r.get("device"),
                                                                                             device_like)]
    if same:
        r = max(same, key=lambda r: r["fit_seconds"])
        return Estimate(r["fit_seconds"] / 3600 * gpus_of(r["device"]),
                        f"seed {r.get('seed')} of this cell on {r['device']}")
    steps, batch = job.info.get("max_steps") or -1, job.info.get("global_batch")
    if steps <= 0 or not batch:
        return Estimate(None, "unknown (epoch-based: no run of this cell measured yet)")
    model = (job.info.get("family"), job.info.get("attention"), job.info.get("size"))
    samples = steps * batch
    for r in meas.runs:
        m = r.get("model") or {}
        tput = (r.get("throughput") or {}).get("train_samples_per_s")
        fam = str(r.get("experiment") or "")
        if (m.get("attention"), m.get("size")) == model[1:] and tput and _device_ok(r.get("device"), device_like) \
                and (model[0] != "bert" or "mlm" in fam or "glue" in fam):
            g = gpus_of(r["device"])
            return Estimate(samples / tput / 3600 * g, f"{tput:.0f} samples/s of {Path(r['_path']).parent.name} "
                                                       f"on {r['device']}")
    for b in meas.bench:
        if (b.get("family"), b.get("model"), b.get("size")) == model and b.get("status", "ok") == "ok" \
                and b.get("throughput") and _device_ok(b.get("device"), device_like):
            return Estimate(samples / b["throughput"] / 3600,
                            f"{b['throughput']:.0f} {b.get('unit', 'samples/s')} per GPU, bench on {b['device']}")
    return Estimate(None, "unknown (no GPU throughput measured for this model)")


def estimate_graph(graph: Graph, dirs: list[Path], device_like: str | None = None) -> dict[str, Estimate]:
    meas = Measurements.scan(dirs)
    return {n: estimate_job(j, meas, device_like) for n, j in graph.jobs.items()}


def cell_totals(graph: Graph, est: dict[str, Estimate]) -> tuple[dict[str, Estimate], Estimate]:
    """Per cell (its seeds summed) and in total; a sum with an unknown part is unknown, with the known part said."""
    cells: dict[str, Estimate] = {}
    for cell, jobs in graph.cells().items():
        parts = [est[j.name] for j in jobs]
        known = [p.gpu_hours for p in parts if p.gpu_hours is not None]
        if len(known) == len(parts):
            srcs = sorted({p.source for p in parts})
            cells[cell] = Estimate(sum(known), srcs[0] if len(srcs) == 1 else "; ".join(srcs))
        else:
            cells[cell] = Estimate(None, "unknown" + (f" ({len(known)}/{len(parts)} seeds known: {sum(known):.1f} "
                                                      "GPU-h)" if known else ""))
    known = [c.gpu_hours for c in cells.values() if c.gpu_hours is not None]
    if len(known) == len(cells):
        total = Estimate(sum(known), "sum of the cells")
    else:
        total = Estimate(None, f"unknown: {len(cells) - len(known)} of {len(cells)} cells have no measurement"
                               + (f"; the other {len(known)} cells: {sum(known):.1f} GPU-h" if known else ""))
    return cells, total
