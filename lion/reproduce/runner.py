"""What runs inside one job (on a SLURM node, in a submitit local process, or in the local launcher's loop).

`JobRunner(spec)()` waits until the jobs it depends on have finished (on SLURM, `afterok` has already done so and
this is a check), runs the job's command (train.py, or make_tables.py for the table job) with its output appended
to the job's log, and records its phase in `<runs>/reproduce/jobs/<job>/runner.json`:

    waiting -> running -> finished | failed | preempted

train.py resumes by itself from its run directory (`checkpoints/last.ckpt`, or the `hpc_ckpt_*.ckpt` a pre-empted
Lightning run saved), so running the same command again continues a job that died.

Pre-emption and time-outs: submitit sends the job its signal (USR2, `signal_delay_s` before the end) and calls
`checkpoint()`. The runner stops train.py cleanly (SIGTERM, then SIGKILL after a grace period) and asks submitit to
requeue the same job (the same job id on SLURM, up to `max_num_timeout` times for time-outs); the requeued job starts
train.py again, which resumes from its last checkpoint. train.py ignores USR2 itself (only the runner acts on it),
so one process decides about the requeue, as Lightning's SLURM plugin does for a job it runs directly.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

try:  # submitit is only needed for the submitit launchers; the local launcher runs without it
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover
    Checkpointable, DelayedSubmission = object, None

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 60


class DependencyFailed(RuntimeError):
    pass


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def run_finished(run_dir: str | Path | None) -> bool:
    """The run left a metrics.json with status "finished" (lion.pipeline.train's last act)."""
    return run_dir is not None and read_json(Path(run_dir) / "metrics.json").get("status") == "finished"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _global_rank() -> int:
    for v in ("SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        if os.environ.get(v):
            return int(os.environ[v])
    return 0


class JobRunner(Checkpointable):
    """One job. `spec`: name, kind, command, cwd, log, job_dir, run_dir, out (table job), deps: [{name, run_dir,
    job_dir, out}], poll_s, wait_deps (False where the scheduler orders the jobs itself), env (extra variables)."""

    def __init__(self, spec: dict):
        self.spec = spec
        self._proc: subprocess.Popen | None = None
        self._preempted = False

    # ------------------------------------------------------------------------------------------ markers

    @property
    def marker(self) -> Path:
        return Path(self.spec["job_dir"]) / "runner.json"

    def _mark(self, phase: str, **extra) -> None:
        if _global_rank() != 0:
            return
        data = read_json(self.marker)
        if phase == "waiting":  # a new attempt: only the count of earlier ones is kept
            data = {k: v for k, v in data.items() if k in ("attempts", "preemptions")}
        data.update(phase=phase, host=socket.gethostname(), pid=os.getpid(), time=time.time(),
                    job_id=os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID"), **extra)
        write_json(self.marker, data)

    # ------------------------------------------------------------------------------------------ dependencies

    def _dep_done(self, dep: dict) -> bool:
        if dep.get("out"):  # not used: the table job is never a dependency
            return Path(dep["out"]).is_file()
        return run_finished(dep.get("run_dir"))

    def _dep_failed(self, dep: dict) -> str | None:
        m = read_json(Path(dep["job_dir"]) / "runner.json")
        if m.get("phase") == "failed":
            return f"{dep['name']} failed (exit {m.get('rc')}); see {Path(dep['job_dir']) / 'train.log'}"
        if m.get("phase") in ("waiting", "running") and m.get("host") == socket.gethostname() \
                and not pid_alive(m.get("pid")):
            return f"{dep['name']} died (its process {m.get('pid')} is gone)"
        return None

    def wait_for_deps(self) -> None:
        deps = self.spec.get("deps") or []
        poll = float(self.spec.get("poll_s", 2.0))
        while True:
            pending = [d for d in deps if not self._dep_done(d)]
            if not pending:
                return
            if not self.spec.get("wait_deps", True):
                names = ", ".join(d["name"] for d in pending)
                raise DependencyFailed(f"started before its dependencies finished: {names}")
            for d in pending:
                why = self._dep_failed(d)
                if why:
                    raise DependencyFailed(f"dependency {why}")
            time.sleep(poll)

    # ------------------------------------------------------------------------------------------ running

    def __call__(self) -> int:
        log = Path(self.spec["log"])
        if _global_rank() != 0:  # one task per GPU on SLURM: the other ranks' train.py write beside rank 0's log
            log = log.with_name(f"{log.stem}.rank{_global_rank()}{log.suffix}")
        log.parent.mkdir(parents=True, exist_ok=True)
        self._mark("waiting")
        try:
            self.wait_for_deps()
        except DependencyFailed as e:
            with open(log, "a") as f:
                f.write(f"[reproduce] not started: {e}\n")
            self._mark("failed", rc=None, error=str(e))
            raise
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1",
               "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), **(self.spec.get("env") or {})}
        cmd = [str(c) for c in self.spec["command"]]
        with open(log, "a") as f:
            f.write(f"\n[reproduce] {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}: "
                    + " ".join(cmd) + "\n")
            f.flush()
            self._proc = subprocess.Popen(cmd, cwd=self.spec.get("cwd") or ROOT, env=env, stdout=f,
                                          stderr=subprocess.STDOUT, preexec_fn=_ignore_usr2)
            self._mark("running", child_pid=self._proc.pid, attempts=read_json(self.marker).get("attempts", 0) + 1)
            try:
                rc = self._proc.wait()
            except BaseException:  # cancelled, or the requeue after a pre-emption: take train.py down too
                self._stop_child()
                if not self._preempted:
                    self._mark("failed", rc=None, error="interrupted")
                raise
        if rc != 0:
            self._mark("failed", rc=rc)
            tail = last_line(log)
            raise RuntimeError(f"{self.spec['name']}: exit {rc}; last line of {log}: {tail}")
        self._mark("finished", rc=0)
        return rc

    def _stop_child(self) -> None:
        """SIGTERM to train.py (Lightning stops after the current step), SIGKILL after GRACE_S. Safe inside a
        signal handler that interrupted `Popen.wait` (which holds the Popen's lock): no wait/poll, only the pid."""
        proc = self._proc
        if proc is None or not pid_alive(proc.pid):
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
            t0 = time.time()
            while pid_alive(proc.pid) and time.time() - t0 < GRACE_S:
                time.sleep(0.2)
            if pid_alive(proc.pid):
                os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def checkpoint(self, *args, **kwargs):
        """Pre-emption / time-out (submitit calls this on its signal): stop train.py, requeue this job."""
        self._preempted = True
        self._stop_child()
        self._mark("preempted", preemptions=read_json(self.marker).get("preemptions", 0) + 1)
        with open(self.spec["log"] if _global_rank() == 0 else os.devnull, "a") as f:
            f.write(f"[reproduce] {time.strftime('%Y-%m-%d %H:%M:%S')}: pre-empted or timed out; requeued, "
                    "train.py resumes from its last checkpoint\n")
        fresh = JobRunner(self.spec)
        return DelayedSubmission(fresh)


def _ignore_usr2() -> None:
    """In train.py's process, before exec: ignore USR2 (ignored signals stay ignored across exec; the runner handles
    it) and die with the runner (Linux PR_SET_PDEATHSIG), so a cancelled job leaves no training behind."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def last_line(path: str | Path, max_bytes: int = 65536) -> str:
    """The last non-empty line of a log (progress-bar carriage returns split lines too)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def main(argv=None) -> int:
    """`python -m lion.reproduce.runner JOB.json`: run one job from its job file (for schedulers without submitit)."""
    argv = sys.argv[1:] if argv is None else argv
    spec = read_json(Path(argv[0]))
    try:
        JobRunner(spec)()
    except (RuntimeError, DependencyFailed) as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
