"""`scripts/reproduce.py --suite paper`: build a table's job graph, then print it (--dry-run), report it (--status),
run it here in order (--launcher local) or submit it through submitit (--launcher slurm, or submitit-local: the same
path with submitit's local executor), and write the table when every cell is done. Docs: docs/CLUSTER.md.

Running the same command again is idempotent: done jobs are skipped, queued and running ones left alone (their job
ids are in <runs>/reproduce/state.json), failed, pre-empted and never-submitted ones (re)submitted: train.py resumes
them from their run directory. A queued job whose dependency is resubmitted is cancelled and resubmitted after it.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from lion.reproduce.graph import ROOT, Graph, GraphError, Job, build_graph
from lion.reproduce.runner import JobRunner
from lion.reproduce.state import (State, Status, hold_local_lock, job_dir, local_lock_holder, log_path,
                                  release_local_lock, status_lines, statuses, table_done)

LAUNCHERS = ("local", "slurm", "submitit-local")


# ------------------------------------------------------------------------------------------------ printing


def shown(cmd: list[str]) -> str:
    """A command as a user types it: `python` for this interpreter, paths inside the checkout relative to it."""
    out = []
    for c in cmd:
        c = "python" if c == sys.executable else c.replace(str(ROOT) + "/", "")
        out.append(shlex.quote(c))
    return " ".join(out)


def resource_text(job: Job) -> str:
    r = job.resources
    gpu = f"{r['gpus_per_node']} GPU" + ("s" if r["gpus_per_node"] != 1 else "") if r["gpus_per_node"] else "CPU"
    text = f"{r['nodes']} node{'s' if r['nodes'] > 1 else ''} x {gpu}, {r.get('timeout_min')} min"
    return text + (f" ({r['note']})" if r.get("note") else "")


def sbatch_header(graph: Graph, job: Job, slurm_params: dict) -> str:
    """The #SBATCH lines submitit would write for this job (dependencies as <job name> placeholders)."""
    try:
        from submitit.slurm.slurm import _make_sbatch_string
    except ImportError:
        return ""
    params = slurm_params_of(job, slurm_params, deps=[f"<{d}>" for d in job.deps])
    text = _make_sbatch_string(command="...", folder=str(graph.runs_dir / "reproduce" / "submitit" / "%j"), **params)
    return "\n".join(ln for ln in text.splitlines() if ln.startswith("#SBATCH"))


def dry_run(graph: Graph, args, est_dirs: list[Path]) -> str:
    from lion.reproduce.estimate import cell_totals, estimate_graph

    est = estimate_graph(graph, est_dirs, args.device_like)
    cells, total = cell_totals(graph, est)
    train = graph.train_jobs()
    title = f"Table{'s' if len(graph.tables) > 1 else ''} {', '.join(graph.tables)}"
    lines = [f"# {title}: {len(graph.cells())} cells, {len(train)} training jobs "
             f"(+ the table job), launcher {args.launcher}", ""]
    for name, job in graph.jobs.items():
        after = ", ".join(job.deps) if job.kind == "train" else f"all {len(job.deps)} jobs above"
        lines.append(f"{name}  [{resource_text(job)}]" + (f"  after: {after}" if job.deps else "")
                     + (f"  est: {est[name].text()}" if job.kind == "train" else ""))
        lines.append("    " + shown(job.command()))
        if args.launcher == "slurm" and args.sbatch and job.kind == "train":
            header = sbatch_header(graph, job, args.slurm)
            lines += ["    " + ln.replace(str(ROOT) + "/", "") for ln in header.splitlines()]
    lines += ["", "GPU-hours per cell (seeds summed; measurements only, never a guess):"]
    width = max((len(c) for c in cells), default=10)
    for cell, e in cells.items():
        n = len(graph.cells()[cell])
        lines.append(f"  {cell:<{width}}  {n} seed{'s' if n > 1 else ' '}  "
                     + (f"{e.gpu_hours:.1f} GPU-h ({e.source})" if e.gpu_hours is not None else e.source))
    lines.append(f"Total: " + (f"{total.gpu_hours:.1f} GPU-h" if total.gpu_hours is not None else total.source))
    lines.append(f"Measurements searched: {', '.join(shown([str(d)]) for d in est_dirs)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ running


def runner_spec(graph: Graph, job: Job, launcher: str, poll_s: float) -> dict:
    deps = [{"name": d, "run_dir": str(graph.jobs[d].run_dir), "job_dir": str(job_dir(graph.runs_dir, graph.jobs[d]))}
            for d in job.deps]
    return {"name": job.name, "kind": job.kind, "command": job.command(), "cwd": str(ROOT),
            "log": str(log_path(graph.runs_dir, job)), "job_dir": str(job_dir(graph.runs_dir, job)),
            "run_dir": str(job.run_dir) if job.run_dir else None, "out": str(job.out) if job.out else None,
            "deps": deps, "poll_s": poll_s, "wait_deps": launcher != "slurm"}


def write_table(graph: Graph, job: Job) -> int:
    """Run the table job here (make_tables.py on the runs directory)."""
    log = log_path(graph.runs_dir, job)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        rc = subprocess.run(job.command(), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc == 0:
        print(f"[reproduce] every cell is done: table written to {job.out}", flush=True)
    else:
        print(f"[reproduce] make_tables failed (exit {rc}); see {log}", file=sys.stderr)
    return rc


def run_local(graph: Graph, args) -> int:
    """Every job of the graph here, one after the other (dependencies first); done jobs skipped."""
    holder = local_lock_holder(graph.runs_dir)
    if holder is not None:
        print(f"[reproduce] a local run of this graph is already going on (pid {holder}); left alone. Follow it "
              f"with --status", flush=True)
        return 0
    hold_local_lock(graph.runs_dir)
    state = State(graph.runs_dir)
    try:
        st = statuses(graph, state)
        todo = [n for n, s in st.items() if s.state != "done"]
        with state.lock():
            for n in todo:
                state.jobs[n] = {"launcher": "local", "job_id": f"local-{os.getpid()}", "submitted": time.time()}
            state.save()
        failed: list[str] = []
        for name in todo:
            job = graph.jobs[name]
            blocked = [d for d in job.deps if d in failed]
            if job.kind == "table":
                if blocked:
                    break
                if write_table(graph, job) != 0:
                    failed.append(name)
                continue
            if blocked:
                print(f"[reproduce] {name}: skipped, its dependency {blocked[0]} failed", flush=True)
                failed.append(name)
                continue
            print(f"[reproduce] {name}: running (log {log_path(graph.runs_dir, job)})", flush=True)
            t0 = time.time()
            try:
                JobRunner(runner_spec(graph, job, "local", args.poll_s))()
                print(f"[reproduce] {name}: done in {time.time() - t0:.0f} s", flush=True)
            except Exception as e:  # noqa: BLE001 - one failed job does not stop the others
                print(f"[reproduce] {name}: FAILED: {e}", flush=True)
                failed.append(name)
        return 1 if failed else 0
    finally:
        release_local_lock(graph.runs_dir)


def slurm_params_of(job: Job, slurm: dict, deps: list[str]) -> dict:
    """submitit.SlurmExecutor parameters of one job (afterok on the job ids it waits for)."""
    r = {**job.resources, **slurm}
    params = dict(job_name=f"lion:{job.name}", time=int(r.get("timeout_min") or 60), nodes=int(r["nodes"]),
                  ntasks_per_node=int(r["tasks_per_node"]), cpus_per_task=r.get("cpus_per_task"),
                  gpus_per_node=int(r["gpus_per_node"]) or None, partition=r.get("partition"),
                  account=r.get("account"), qos=r.get("qos"), constraint=r.get("constraint"),
                  signal_delay_s=int(r.get("signal_delay_s") or 120), setup=list(r.get("setup") or []) or None,
                  mem=f"{r['mem_gb']}GB" if r.get("mem_gb") else None)
    extra = dict(r.get("additional_parameters") or {})
    if deps:
        params["dependency"] = "afterok:" + ":".join(deps)
        extra.setdefault("kill_on_invalid_dep", "yes")
    if extra:
        params["additional_parameters"] = extra
    return {k: v for k, v in params.items() if v is not None}


def _executor(kind: str, folder: Path, job: Job, slurm: dict, deps: list[str]):
    import submitit

    if kind == "slurm":
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=int(job.resources.get("max_num_timeout") or 3))
        ex.update_parameters(**slurm_params_of(job, slurm, deps))
    else:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=int(job.resources.get("timeout_min") or 60), tasks_per_node=1,
                             gpus_per_node=0 if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" else
                             min(job.resources["gpus_per_node"], _visible_gpus()),
                             signal_delay_s=int(job.resources.get("signal_delay_s") or 30))
    return ex


def _visible_gpus() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def cancel(entry: dict) -> None:
    if entry.get("launcher") == "slurm":
        subprocess.run(["scancel", str(entry["job_id"])], check=False)
    elif entry.get("launcher") == "submitit-local":
        try:
            os.kill(int(entry["job_id"]), signal.SIGINT)
        except (ProcessLookupError, ValueError):
            pass


def submit(graph: Graph, args) -> int:
    """Submit every job that is not done, queued or running, with its dependencies; returns 0."""
    kind = args.launcher
    folder = graph.runs_dir / "reproduce" / "submitit" / "%j"
    state = State(graph.runs_dir)
    with state.lock():
        st = statuses(graph, state)
        resubmit = {n for n, s in st.items() if s.state in ("failed", "not submitted")}
        changed = True
        while changed:  # a queued job waiting on a job that is submitted again: cancel it, submit it after
            changed = False
            for n, s in st.items():
                if s.state == "queued" and n not in resubmit and any(d in resubmit for d in graph.jobs[n].deps):
                    cancel(state.jobs.get(n, {}))
                    print(f"[reproduce] {n}: cancelled (its dependency is submitted again)", flush=True)
                    resubmit.add(n)
                    changed = True
        table = next(j for j in graph.jobs.values() if j.kind == "table")
        if all(st[n].state == "done" for n, j in graph.jobs.items() if j.kind == "train"):
            resubmit.discard(table.name)
            if not table_done(graph, table):
                write_table(graph, table)
        ids: dict[str, str] = {n: str(state.jobs[n]["job_id"]) for n, s in st.items()
                               if s.state in ("queued", "running") and n not in resubmit and n in state.jobs}
        for name, job in graph.jobs.items():
            if name not in resubmit:
                continue
            deps = [ids[d] for d in job.deps if st[d].state != "done" and d in ids]
            ex = _executor(kind, folder, job, args.slurm, deps)
            spec = runner_spec(graph, job, kind, args.poll_s)
            Path(spec["job_dir"]).mkdir(parents=True, exist_ok=True)
            (Path(spec["job_dir"]) / "runner.json").unlink(missing_ok=True)  # this attempt's phases only
            sub = ex.submit(JobRunner(spec))
            ids[name] = str(sub.job_id)
            state.jobs[name] = {"launcher": kind, "job_id": str(sub.job_id), "folder": str(folder),
                                "submitted": time.time(), "previous": st[name].state}
            state.save()
            after = f" after {', '.join(job.deps)}" if deps else ""
            print(f"[reproduce] {name}: submitted, job {sub.job_id}{after} ({st[name].state} before)", flush=True)
        for n, s in st.items():
            if n not in resubmit and s.state != "done":
                print(f"[reproduce] {n}: {s.state}, left alone (job {s.job_id})", flush=True)
        skipped = sum(1 for s in st.values() if s.state == "done")
        print(f"[reproduce] {len(resubmit)} submitted, {skipped} done and skipped", flush=True)
    return 0


def wait(graph: Graph, poll_s: float, timeout_s: float | None = None) -> dict[str, Status]:
    """Until no job is queued or running; then the table when every cell is done."""
    t0 = time.time()
    while True:
        st = statuses(graph)
        if not any(s.state in ("queued", "running") for s in st.values()):
            break
        if timeout_s is not None and time.time() - t0 > timeout_s:
            break
        time.sleep(poll_s)
    table = next(j for j in graph.jobs.values() if j.kind == "table")
    if all(st[n].state == "done" for n, j in graph.jobs.items() if j.kind == "train") and not table_done(graph, table):
        write_table(graph, table)
        st = statuses(graph)
    return st


# ------------------------------------------------------------------------------------------------ entry point


def parse_kv(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise GraphError(f"--slurm {it!r}: expected KEY=VALUE, e.g. partition=gpu")
        k, v = it.split("=", 1)
        out[k.strip()] = int(v) if v.isdigit() else v
    return out


def main(argv: list[str], overrides: list[str]) -> int:
    p = argparse.ArgumentParser(prog="reproduce.py --suite paper", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=["paper"], default="paper")
    p.add_argument("--table", nargs="+", default=[], type=str.upper, help="A, B and / or C")
    p.add_argument("--cells", nargs="+", default=[],
                   help="cells (patterns): 'B/lion-s/base/cola' (table/row/scale/task) or an experiment option, "
                        "'paper/mlm_lion_s_base'; their dependencies come along")
    p.add_argument("--launcher", choices=LAUNCHERS, default="local")
    p.add_argument("--dry-run", action="store_true", help="print the graph, the commands and the GPU-hour estimate")
    p.add_argument("--status", action="store_true", help="one line per job: done, running, queued, failed")
    p.add_argument("--wait", action="store_true", help="after submitting, wait until no job is queued or running")
    p.add_argument("--runs-dir", default="logs", help="paths.log_dir of the runs (default logs)")
    p.add_argument("--data-dir", default=None, help="paths.data_dir (default: the configs' own)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="these seeds for every cell")
    p.add_argument("--max-seeds", type=int, default=None, help="the first N seeds of each cell's seed list")
    p.add_argument("--overrides-file", default=None,
                   help="YAML: cell pattern -> list of train.py overrides (e.g. tiny models for a trial run)")
    p.add_argument("--slurm", nargs="+", default=[], metavar="KEY=VALUE",
                   help="SLURM options for every job: partition, account, qos, constraint, timeout_min, "
                        "cpus_per_task, mem_gb (default: configs/launcher/slurm.yaml)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs of a node, for trainer.devices=-1 (default 8)")
    p.add_argument("--sbatch", action="store_true", help="with --dry-run --launcher slurm: the #SBATCH lines too")
    p.add_argument("--device-like", default=None,
                   help="estimate only from measurements whose device name contains this (e.g. H100)")
    p.add_argument("--measurements", nargs="+", default=None,
                   help="directories searched for metrics.json and benchmark JSON (default: the runs dir)")
    p.add_argument("--poll-s", type=float, default=10.0, help="seconds between checks of dependencies and --wait")
    p.add_argument("--timeout-s", type=float, default=None, help="give up --wait after this long")
    args = p.parse_args(argv)
    try:
        args.slurm = parse_kv(args.slurm)
        graph = build_graph(tables=args.table, patterns=args.cells, runs_dir=args.runs_dir, data_dir=args.data_dir,
                            overrides=overrides, overrides_file=args.overrides_file, seeds=args.seeds,
                            max_seeds=args.max_seeds, gpus_per_node=args.gpus_per_node, slurm=args.slurm)
    except GraphError as e:
        p.error(str(e))
    if args.dry_run:
        dirs = [Path(d).resolve() for d in (args.measurements or [graph.runs_dir])]
        print(dry_run(graph, args, dirs))
        return 0
    if args.status:
        st = statuses(graph)
        print("\n".join(status_lines(graph, st)))
        return 0
    if args.launcher == "local":
        return run_local(graph, args)
    rc = submit(graph, args)
    if args.wait:
        st = wait(graph, args.poll_s, args.timeout_s)
        print("\n".join(status_lines(graph, st)))
        rc = 0 if all(s.state == "done" for s in st.values()) else 1
    return rc
