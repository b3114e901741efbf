"""The job graph of paper tables, built from the experiment configs alone.

A *cell* is one (table id, row, scale, task) of a paper table: the `table:` node of an experiment config under
`configs/experiment/paper/`. A config whose `table.row` / `table.scale` are interpolations (`${model.attention}`,
`${model.size}`: the GLUE configs) stands for every row and scale of its table (`lion/results/paper.yaml`), chosen
by setting the interpolated keys. A *job* is one cell and one seed: one `train.py` run with its own run directory.
Seeds are the config's seed sweep (`hydra.sweeper.params.seed`) or its `seed`.

Dependencies come from the configs too: a job whose `model.pretrained` is the `hf/` export (or a checkpoint) of
another job's run directory runs after that job (Table B: every GLUE fine-tuning after the pre-training of its row
and size). Resources: nodes and GPUs from `trainer.num_nodes` / `trainer.devices` / `trainer.accelerator`; the time
limit, CPUs and SLURM options from `configs/launcher/slurm.yaml` (a key the job config's own `hydra.launcher` node
has wins).

Cells are discovered by composing configs (lion.run.config), never by reading YAML text.
"""
from __future__ import annotations

import fnmatch
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[2]
SLURM_KEYS = ("timeout_min", "cpus_per_task", "mem_gb", "partition", "account", "qos", "constraint",
              "signal_delay_s", "max_num_timeout", "setup", "additional_parameters")


class GraphError(ValueError):
    """A selection or a config that cannot make a job graph; the message names the cause and the fix."""


def cell_id(table: dict | DictConfig) -> str:
    """'B/lion-s/base/cola': table id / row / scale / task."""
    return f"{table['id']}/{table['row']}/{table['scale']}/{table['task']}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


@dataclass
class Job:
    name: str                      # cell id and seed: 'B/lion-s/base/cola/s19'; the table job: 'table/B'
    kind: str                      # 'train' | 'table'
    cell: str                      # cell id ('' for the table job)
    experiment: str | None
    seed: int | None
    overrides: list[str]           # train.py arguments after experiment=...
    run_dir: Path | None
    deps: list[str] = field(default_factory=list)
    resources: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)   # model, steps, batch, metric: for --status and the estimate
    out: Path | None = None        # the table job's markdown

    @property
    def key(self) -> str:
        """File-system name of the job (its folder under <runs>/reproduce/jobs/)."""
        return slug(self.name.replace("/", "__"))

    def command(self) -> list[str]:
        if self.kind == "table":
            return [sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--runs", str(self.info["runs_dir"]),
                    "--tables", "".join(self.info["tables"]), "--out", str(self.out)]
        return [sys.executable, str(ROOT / "train.py"), f"experiment={self.experiment}", *self.overrides]


@dataclass
class Graph:
    jobs: dict[str, Job]           # in topological order (dependencies first); the table job last
    tables: list[str]
    runs_dir: Path

    def train_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.kind == "train"]

    def cells(self) -> dict[str, list[Job]]:
        out: dict[str, list[Job]] = {}
        for j in self.train_jobs():
            out.setdefault(j.cell, []).append(j)
        return out


# ------------------------------------------------------------------------------------------------ discovery

_DISCOVERED: dict[str, dict] = {}


def _compose(names_overrides: list[tuple[str, list[str]]]) -> list[DictConfig]:
    """Compose several train configs in one Hydra context (with the `hydra` node, for the sweep and launcher)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lion.run.config import CONFIG_DIR

    out = []
    was = GlobalHydra.instance().is_initialized()
    if was:  # composing inside a running Hydra app (or a test that left one): use a fresh context
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for name, overrides in names_overrides:
            try:
                out.append(compose("train", overrides=[f"experiment={name}", *overrides], return_hydra_config=True))
            except Exception as e:  # noqa: BLE001 - Hydra's errors are many; name the config and the overrides
                raise GraphError(f"experiment={name} with overrides {overrides} does not compose: {e}") from None
    return out


def config_fingerprint() -> str:
    """Hash of the config tree (every file's path, size and modification time)."""
    import hashlib

    from lion.run.config import CONFIG_DIR

    h = hashlib.sha1()
    for p in sorted(Path(CONFIG_DIR).rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(CONFIG_DIR)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def discover(prefix: str = "paper/", cache: Path | None = None) -> dict[str, dict]:
    """Experiment option -> {'table': unresolved table node (dict of strings), 'seeds': [...]} for every config
    under `configs/experiment/<prefix>` that has a `table:` node. Composed once per process, and kept in `cache`
    (a JSON file) for as long as no file of the config tree changes."""
    import json

    from lion.run.config import group_options

    fp = None
    if cache is not None and not any(n.startswith(prefix) for n in _DISCOVERED):
        fp = config_fingerprint()
        try:
            blob = json.loads(Path(cache).read_text())
            if blob.get("fingerprint") == fp and blob.get("prefix") == prefix:
                _DISCOVERED.update(blob["cells"])
        except (OSError, ValueError, KeyError):
            pass

    # cells are the direct options paper/<cell>; sub-folders (paper/recipe/...) hold what the cells share
    names = [n for n in group_options("experiment") if n.startswith(prefix) and "/" not in n[len(prefix):]
             and n not in _DISCOVERED]
    if names:
        for name, cfg in zip(names, _compose([(n, []) for n in names])):
            table = cfg.get("table")
            if table is None or not isinstance(table, DictConfig):
                _DISCOVERED[name] = {}
                continue
            if not {"id", "row", "scale", "task"} <= set(table):
                _DISCOVERED[name] = {}
                continue
            # row and scale given as '${key}' are chosen on the command line (expanded over the paper table's rows
            # and scales); everything else is the config's own value
            raw = {}
            for k in ("id", "row", "scale", "task"):
                v = table._get_node(k)._value()
                if not (k in ("row", "scale") and isinstance(v, str) and _INTERP.match(v)):
                    v = str(_resolved(cfg, f"table.{k}"))
                raw[k] = v
            _DISCOVERED[name] = {"table": raw, "seeds": config_seeds(cfg)}
        if cache is not None:
            try:
                Path(cache).parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(cache).with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps({"fingerprint": fp or config_fingerprint(), "prefix": prefix,
                                           "cells": {n: d for n, d in _DISCOVERED.items() if n.startswith(prefix)}}))
                os.replace(tmp, cache)
            except OSError:
                pass
    return {n: d for n, d in _DISCOVERED.items() if n.startswith(prefix) and d}


def config_seeds(cfg: DictConfig) -> list[int]:
    """The seeds of a config: its seed sweep (hydra.sweeper.params.seed, 'a,b,c'), else its seed."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None)
    sweep = params.get("seed") if params is not None else None
    if sweep is not None:
        text = str(sweep)
        m = re.fullmatch(r"\s*range\((\d+)\s*,\s*(\d+)\)\s*", text)
        if m:
            return list(range(int(m.group(1)), int(m.group(2))))
        return [int(s) for s in text.split(",") if s.strip()]
    return [int(cfg.seed)]


_INTERP = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def expand_cells(paper: dict, cache: Path | None = None) -> list[tuple[str, str, list[str]]]:
    """(cell id, experiment option, overrides choosing the cell) for every cell of every discovered config.
    A templated table node (row or scale = '${key}') is expanded over the rows / scales of its paper table."""
    out = []
    for name, d in sorted(discover(cache=cache).items()):
        t = d["table"]
        spec = paper.get(str(t["id"]))
        choices: list[list[tuple[str, str, str]]] = []   # per field: [(value, override key, override)]
        for fld, spec_key in (("row", "rows"), ("scale", "scales")):
            value = str(t[fld])
            m = _INTERP.match(value)
            if m:
                if spec is None:
                    raise GraphError(f"experiment={name}: table {t['id']} is not in lion/results/paper.yaml, so its "
                                     f"templated {fld} {value} cannot be expanded")
                choices.append([(v, m.group(1), f"{m.group(1)}={v}") for v in spec[spec_key]])
            else:
                choices.append([(value, "", "")])
        for row, _, o1 in choices[0]:
            for scale, _, o2 in choices[1]:
                cid = f"{t['id']}/{row}/{scale}/{t['task']}"
                out.append((cid, name, [o for o in (o1, o2) if o]))
    return out


# ------------------------------------------------------------------------------------------------ building


def _int_or(value: Any, default=None):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def slurm_defaults() -> dict:
    """The SLURM options of configs/launcher/slurm.yaml (composed once): time limit, CPUs, partition, ..."""
    if "_slurm" not in _DISCOVERED:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        from lion.run.config import CONFIG_DIR

        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=["launcher=slurm"], return_hydra_config=True)
        launcher = cfg.hydra.launcher
        _DISCOVERED["_slurm"] = {k: OmegaConf.to_container(launcher[k], resolve=True)
                                 if isinstance(launcher.get(k), (DictConfig,)) or OmegaConf.is_list(launcher.get(k))
                                 else launcher.get(k) for k in SLURM_KEYS if k in launcher}
    return dict(_DISCOVERED["_slurm"])


def resources_of(cfg: DictConfig, slurm: dict, gpus_per_node_all: int) -> dict:
    """Nodes, GPUs per node (= tasks per node: one process per GPU) and the SLURM options of one job."""
    tr = cfg.trainer
    accel = str(tr.get("accelerator", "auto"))
    devices = tr.get("devices", 1)
    nodes = _int_or(tr.get("num_nodes"), 1) or 1
    if accel == "cpu":
        gpus, note = 0, ""
    else:
        n = _int_or(devices)
        if n is None or n < 0:  # -1 / "auto": every GPU of the node
            gpus, note = gpus_per_node_all, f"trainer.devices={devices}: a whole node ({gpus_per_node_all} GPUs)"
        else:
            gpus, note = n, ""
    res = {"nodes": nodes, "gpus_per_node": gpus, "tasks_per_node": max(gpus, 1)}
    own = OmegaConf.select(cfg, "hydra.launcher", default=None)
    for k, v in slurm.items():
        if own is not None and k in own:
            node = own[k]
            v = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) or OmegaConf.is_list(node) \
                else node
        res[k] = v
    if note:
        res["note"] = note
    return res


def _resolved(cfg: DictConfig, key: str, default=None):
    try:
        return OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - an unresolvable key is reported as missing
        return default


def job_info(cfg: DictConfig) -> dict:
    """What --status and the GPU-hour estimate need: model, schedule, batch, metric."""
    devices = _int_or(_resolved(cfg, "trainer.devices"), 1)
    nodes = _int_or(_resolved(cfg, "trainer.num_nodes"), 1) or 1
    micro = _int_or(_resolved(cfg, "data.batch_size"))
    gbs = _int_or(_resolved(cfg, "global_batch_size"))
    return {
        "attention": _resolved(cfg, "model.attention"), "size": _resolved(cfg, "model.size"),
        "family": _resolved(cfg, "model.family") or str(_resolved(cfg, "model._target_", "")).rsplit(".", 1)[-1],
        "max_steps": _int_or(_resolved(cfg, "trainer.max_steps"), -1),
        "max_epochs": _int_or(_resolved(cfg, "trainer.max_epochs"), -1),
        "global_batch": gbs or (micro * max(devices or 1, 1) * nodes if micro else None),
        "metric": _resolved(cfg, "optimized_metric"),
        "experiment_name": _resolved(cfg, "experiment_name"),
        "pretrained": _resolved(cfg, "model.pretrained"),
        "accelerator": _resolved(cfg, "trainer.accelerator"),
    }


def load_overrides_file(path: str | Path | None) -> list[tuple[str, list[str]]]:
    """A YAML mapping 'cell pattern' -> list of train.py overrides (fnmatch on the cell id, e.g. 'B/*/*/mlm')."""
    if not path:
        return []
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise GraphError(f"{path}: expected a mapping 'cell pattern' -> list of overrides, e.g. "
                         "{'B/*/*/mlm': ['data.source=hamlet']}")
    return [(str(k), [str(o) for o in v]) for k, v in data.items()]


def select(cells: list[tuple[str, str, list[str]]], tables: list[str], patterns: list[str]) -> list[str]:
    """Cell ids of the requested tables and / or cell patterns (fnmatch on 'id/row/scale/task' or the config
    name); one clear error when a pattern matches nothing."""
    ids = [c for c, _, _ in cells]
    chosen = [c for c in ids if c.split("/")[0] in tables]
    for p in patterns:
        hit = [c for c, name, _ in cells if fnmatch.fnmatchcase(c, p) or fnmatch.fnmatchcase(name, p)]
        if not hit:
            raise GraphError(f"--cells {p!r} matches no cell; cells look like 'B/lion-s/base/cola' "
                             f"(table/row/scale/task) or 'paper/mlm_lion_s_base'; e.g. {', '.join(ids[:3])}")
        chosen += hit
    return list(dict.fromkeys(chosen))


def _compose_cells(cids: list[str], by_id: dict, cell_overrides):
    """(cell id, composed config) for each cell, in turn. The cells of one templated config that share their other
    overrides are composed once and told apart by setting the templated keys in place (plain values, as on the
    command line): use each config before taking the next."""
    groups: dict[tuple, list[str]] = {}
    for cid in cids:
        name, chosen = by_id[cid]
        rest = tuple(o for o in cell_overrides(cid) if o not in chosen)
        groups.setdefault((name, rest), []).append(cid)
    keys = list(groups)
    for (name, rest), cfg in zip(keys, _compose([(name, list(rest)) for name, rest in keys])):
        for cid in groups[(name, rest)]:
            for o in by_id[cid][1]:
                k, v = o.split("=", 1)
                OmegaConf.update(cfg, k, v, merge=False)
            yield cid, cfg


def build_graph(tables: list[str] = (), patterns: list[str] = (), runs_dir: str | Path = "logs",
                data_dir: str | Path | None = None, overrides: list[str] = (), overrides_file: str | Path | None = None,
                seeds: list[int] | None = None, max_seeds: int | None = None, gpus_per_node: int = 8,
                slurm: dict | None = None, table_out: str | Path | None = None) -> Graph:
    """The job graph of the requested tables / cells (plus every job they depend on), in topological order."""
    from lion.results.tables import load_paper

    paper = load_paper()["tables"]
    for t in tables:
        if t not in ("A", "B", "C"):
            raise GraphError(f"--table {t!r}: the paper tables with runs are A, B and C (D is benchmarks: "
                             "scripts/bench_*.py)")
    if not tables and not patterns:
        raise GraphError("nothing selected: give --table A|B|C or --cells PATTERN")
    runs_dir = Path(runs_dir).resolve()
    cells = expand_cells(paper, cache=runs_dir / "reproduce" / "cells.json")
    chosen = select(cells, list(tables), list(patterns))
    by_id = {c: (name, ov) for c, name, ov in cells}
    scoped = load_overrides_file(overrides_file)
    slurm_opts = {**slurm_defaults(), **(slurm or {})}
    base = [f"paths.log_dir={runs_dir}"] + ([f"paths.data_dir={Path(data_dir).resolve()}"] if data_dir else [])

    def cell_overrides(cid: str) -> list[str]:
        extra = [o for pat, ovs in scoped if fnmatch.fnmatchcase(cid, pat) for o in ovs]
        return by_id[cid][1] + base + extra + list(overrides)

    # producers (cells whose run directory another job may start from): the untemplated cells of the tables
    # involved; composed with their overrides so their run directories are the ones the jobs will write.
    involved = {c.split("/")[0] for c in chosen}
    candidates = [c for c in by_id if c.split("/")[0] in involved and (c in chosen or not by_id[c][1])]
    jobs: dict[str, Job] = {}
    producers: dict[Path, str] = {}
    for cid, cfg in _compose_cells(candidates, by_id, cell_overrides):
        cell_seeds = list(seeds) if seeds else config_seeds(cfg)
        if max_seeds:
            cell_seeds = cell_seeds[:max_seeds]
        res = resources_of(cfg, slurm_opts, gpus_per_node)
        for s in cell_seeds:
            c = cfg
            c.seed = int(s)
            run_dir = Path(str(_resolved(c, "paths.run_dir"))).resolve()
            name = f"{cid}/s{s}"
            jobs[name] = Job(name=name, kind="train", cell=cid, experiment=by_id[cid][0], seed=int(s),
                             overrides=cell_overrides(cid) + [f"seed={s}"], run_dir=run_dir,
                             resources=dict(res), info=job_info(c))
            producers[run_dir / "hf"] = name
            producers[run_dir] = name

    # dependencies: model.pretrained inside another job's run directory
    for job in jobs.values():
        pre = job.info.get("pretrained")
        if not pre:
            continue
        p = Path(str(pre)).expanduser()
        p = p if p.is_absolute() else (ROOT / p)
        p = p.resolve()
        owner = producers.get(p) or next((producers[q] for q in p.parents if q in producers), None)
        if owner and owner != job.name:
            job.deps.append(owner)
        elif not p.exists():
            job.info["missing_pretrained"] = str(p)

    # keep the chosen cells and what they need
    keep: set[str] = set()
    stack = [n for n, j in jobs.items() if j.cell in chosen]
    while stack:
        n = stack.pop()
        if n not in keep:
            keep.add(n)
            stack += jobs[n].deps
    missing = [j for n, j in jobs.items() if n in keep and j.info.get("missing_pretrained")]
    if missing:
        j = missing[0]
        raise GraphError(f"{j.name}: model.pretrained={j.info['missing_pretrained']} does not exist and no job of "
                         f"this graph writes it; select its pre-training cell too, or point model.pretrained at a "
                         f"finished model (-- model.pretrained=PATH)")
    order = {}
    for tid, spec in paper.items():  # the paper's order: table, task, scale, row
        for i, t in enumerate(spec.get("tasks") or []):
            order[(tid, "task", t)] = i
        for i, t in enumerate(spec.get("scales") or []):
            order[(tid, "scale", t)] = i
        for i, t in enumerate(spec.get("rows") or {}):
            order[(tid, "row", t)] = i

    def rank(n: str):
        tid, row, scale, task = jobs[n].cell.split("/")
        return (tid, order.get((tid, "task", task), 99), order.get((tid, "scale", scale), 99),
                order.get((tid, "row", row), 99), list(jobs).index(n))

    ordered = _topological({n: jobs[n] for n in sorted((n for n in jobs if n in keep), key=rank)})
    ids = sorted({n.split("/")[0] for n in ordered})
    out = Path(table_out) if table_out else runs_dir / "reproduce" / f"table_{''.join(ids)}.md"
    ordered["table/" + "".join(ids)] = Job(
        name="table/" + "".join(ids), kind="table", cell="", experiment=None, seed=None, overrides=[], run_dir=None,
        deps=list(ordered), resources={"nodes": 1, "gpus_per_node": 0, "tasks_per_node": 1, "timeout_min": 10,
                                       "cpus_per_task": 1},
        info={"runs_dir": runs_dir, "tables": ids}, out=out.resolve())
    return Graph(jobs=ordered, tables=ids, runs_dir=runs_dir)


def _topological(jobs: dict[str, Job]) -> dict[str, Job]:
    """Dependencies first; otherwise the order of the cells (table, row, scale, task) and seeds."""
    out: dict[str, Job] = {}
    visiting: set[str] = set()

    def visit(n: str):
        if n in out:
            return
        if n in visiting:
            raise GraphError(f"dependency cycle through {n}")
        visiting.add(n)
        for d in jobs[n].deps:
            visit(d)
        out[n] = jobs[n]

    for n in jobs:
        visit(n)
    return out
