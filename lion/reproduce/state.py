"""Where each job of a graph stands, from its run directory, its runner's marker and its launcher.

    <runs>/reproduce/state.json          job name -> {launcher, job_id, folder, submitted}: written by the command
    <runs>/reproduce/jobs/<job>/runner.json   the runner's phase (waiting, running, finished, failed, preempted)
    <runs>/reproduce/jobs/<job>/train.log     the job's output (every attempt, appended)
    <runs>/reproduce/local.lock          the pid of a `--launcher local` command while it runs

States: done (metrics.json says finished; the table job: its markdown is newer than every run), running, queued
(submitted, waiting for the scheduler or for its dependencies), failed (with the last line of the log), not
submitted.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lion.reproduce.graph import Graph, Job
from lion.reproduce.runner import last_line, pid_alive, read_json, run_finished, write_json

SLURM_QUEUED = {"PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                "STAGE_OUT", "SIGNALING", "SPECIAL_EXIT"}
SLURM_RUNNING = {"RUNNING", "COMPLETING"}


def state_dir(runs_dir: Path) -> Path:
    return Path(runs_dir) / "reproduce"


def job_dir(runs_dir: Path, job: Job) -> Path:
    return state_dir(runs_dir) / "jobs" / job.key


def log_path(runs_dir: Path, job: Job) -> Path:
    return job_dir(runs_dir, job) / "train.log"


class State:
    """state.json: the submissions of every command run on this runs directory (job name -> entry)."""

    def __init__(self, runs_dir: Path):
        self.path = state_dir(runs_dir) / "state.json"
        self.jobs: dict[str, dict] = read_json(self.path).get("jobs", {})

    def save(self) -> None:
        write_json(self.path, {"jobs": self.jobs})

    @contextmanager
    def lock(self):
        """Serialise commands that submit on the same runs directory."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / ".submit.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self.jobs = read_json(self.path).get("jobs", {})
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Status:
    state: str            # done | running | queued | failed | not submitted
    detail: str = ""      # metric; or the log's last line and path
    job_id: str | None = None


def local_lock_holder(runs_dir: Path) -> int | None:
    """The pid of a live `--launcher local` command on this runs directory (None: nobody holds it)."""
    d = read_json(state_dir(runs_dir) / "local.lock")
    if d.get("host") == socket.gethostname() and pid_alive(d.get("pid")):
        return int(d["pid"])
    return None


def metric_text(job: Job) -> str:
    m = read_json(job.run_dir / "metrics.json")
    metrics = m.get("metrics") or {}
    name = job.info.get("metric")
    keys = [k for k in (name, (name or "").replace("val/", "test/"), "test/acc", "val/acc") if k]
    shown = [f"{k}={metrics[k]:.4f}" for k in dict.fromkeys(keys) if isinstance(metrics.get(k), (int, float))]
    return ", ".join(shown[:2]) or "no metric"


def table_done(graph: Graph, job: Job) -> bool:
    if job.out is None or not job.out.is_file():
        return False
    runs = [graph.jobs[d].run_dir / "metrics.json" for d in job.deps if graph.jobs[d].kind == "train"]
    newest = max((p.stat().st_mtime for p in runs if p.is_file()), default=0.0)
    return all(run_finished(graph.jobs[d].run_dir) for d in job.deps if graph.jobs[d].kind == "train") and \
        job.out.stat().st_mtime >= newest


def run_locked(run_dir: Path | None) -> bool:
    """A process is training this run now: it holds the run directory's lock (`<run_dir>/.lock`, flock)."""
    if run_dir is None or not (Path(run_dir) / ".lock").is_file():
        return False
    try:
        with open(Path(run_dir) / ".lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _slurm_state(job_id: str, folder: str) -> str:
    try:
        import submitit
        return str(submitit.SlurmJob(folder=folder, job_id=job_id).state).upper()
    except Exception:  # noqa: BLE001 - no sacct here, or a purged job
        try:
            out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
            return out.splitlines()[0].upper() if out else "UNKNOWN"
        except (OSError, subprocess.SubprocessError):
            return "UNKNOWN"


def _local_controller_alive(job_id: str) -> bool:
    """submitit's local job id is its controller's pid; alive and running submitit's controller."""
    try:
        pid = int(job_id)
    except (TypeError, ValueError):
        return False
    if not pid_alive(pid):
        return False
    try:
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def job_status(graph: Graph, job: Job, entry: dict | None) -> Status:
    runs_dir = graph.runs_dir
    log = log_path(runs_dir, job)
    if job.kind == "train" and run_finished(job.run_dir):
        return Status("done", metric_text(job), (entry or {}).get("job_id"))
    if job.kind == "table" and table_done(graph, job):
        return Status("done", str(job.out), (entry or {}).get("job_id"))
    marker = read_json(job_dir(runs_dir, job) / "runner.json")
    phase = marker.get("phase")
    here = marker.get("host") == socket.gethostname()
    failed = Status("failed", f"{last_line(log) or '(empty log)'} [{log}]", (entry or {}).get("job_id"))
    if entry is None:
        if phase == "running" and here and pid_alive(marker.get("pid")):  # started by hand with the runner
            return Status("running", "", None)
        return failed if phase in ("failed", "preempted", "running", "waiting") else Status("not submitted")
    launcher, job_id = entry.get("launcher"), str(entry.get("job_id"))
    if job.kind == "train" and run_locked(job.run_dir):
        return Status("running", "", job_id)
    if launcher == "slurm":
        s = _slurm_state(job_id, entry.get("folder", ""))
        if s in SLURM_QUEUED:
            return Status("queued", s.lower(), job_id)
        if s in SLURM_RUNNING:
            return Status("queued" if phase == "waiting" else "running", "", job_id)
        if s == "UNKNOWN" and phase in ("waiting", "running"):
            return Status("running" if phase == "running" else "queued", "slurm state unknown", job_id)
        if s == "UNKNOWN" and phase is None:
            return Status("queued", "slurm state unknown", job_id)
        failed.detail = f"slurm {s.lower()}: " + failed.detail
        return failed
    if launcher == "submitit-local":
        if _local_controller_alive(job_id):
            alive = pid_alive(marker.get("pid")) if here else True
            return Status("running" if phase == "running" and alive else "queued", "", job_id)
        return failed
    if launcher == "local":
        holder = local_lock_holder(runs_dir)
        if holder is not None and str(holder) == job_id.split("-")[-1]:
            if phase == "running" and pid_alive(marker.get("pid")):
                return Status("running", "", job_id)
            if phase in (None, "waiting", "finished"):
                return Status("queued", "", job_id)
        return failed if phase else Status("not submitted")
    return failed if phase else Status("not submitted")


def statuses(graph: Graph, state: State | None = None) -> dict[str, Status]:
    state = state or State(graph.runs_dir)
    return {name: job_status(graph, job, state.jobs.get(name)) for name, job in graph.jobs.items()}


def status_lines(graph: Graph, st: dict[str, Status]) -> list[str]:
    """One line per cell (its seeds summarised), then the table job."""
    lines = []
    width = max((len(n) for n in graph.jobs), default=10)
    for name, job in graph.jobs.items():
        s = st[name]
        text = f"{name:<{width}}  {s.state:<13}"
        if s.job_id and s.state in ("running", "queued"):
            text += f" job {s.job_id}"
        if s.detail:
            text += f"  {s.detail}"
        lines.append(text.rstrip())
    lines.append("cells:")
    for cell, jobs in graph.cells().items():
        states = [st[j.name].state for j in jobs]
        if all(x == "done" for x in states):
            summary = f"done ({len(jobs)}/{len(jobs)} seeds)"
        else:
            summary = ", ".join(f"{states.count(x)} {x}" for x in ("failed", "running", "queued", "not submitted",
                                                                   "done") if x in states)
        lines.append(f"  {cell:<{width - 2}}  {summary}")
    counts: dict[str, int] = {}
    for s in st.values():
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append("total: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return lines


def dump_status(graph: Graph, st: dict[str, Status]) -> str:
    return json.dumps({n: {"state": s.state, "detail": s.detail, "job_id": s.job_id} for n, s in st.items()},
                      indent=1)


def hold_local_lock(runs_dir: Path) -> None:
    write_json(state_dir(runs_dir) / "local.lock", {"pid": os.getpid(), "host": socket.gethostname()})


def release_local_lock(runs_dir: Path) -> None:
    p = state_dir(runs_dir) / "local.lock"
    if read_json(p).get("pid") == os.getpid():
        p.unlink(missing_ok=True)
