"""Crash consistency of a training run: kill it with SIGKILL at random moments, resume it each time with the same
command, and check that it ends bit-identical to a run that was never stopped.

    python scripts/crash_consistency.py --kills 20 --tmpdir /dev/shm

1. A reference run trains uninterrupted (a small LION-S ViT on MNIST-5k, checkpoints every optimizer step, so many
   kills land in the middle of a checkpoint write).
2. The same command is started again and again in another log folder; each attempt is SIGKILLed at a random moment
   after it has started training, until `--kills` kills have been made; then it runs to the end.
3. The final weights (`last.ckpt`'s state_dict and optimizer state) must be bit-identical and `metrics.json`'s
   metrics exactly equal. `$TMPDIR` is pointed at `--tmpdir` (another filesystem: /dev/shm) for every process,
   which is where Lightning's own writer used to stage checkpoints.

Prints one line per attempt and a verdict; exit status 0 only if everything matched.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(log_dir: Path, data_dir: Path, epochs: int, batches: int) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), f"paths.log_dir={log_dir}", f"paths.data_dir={data_dir}",
            "model.net.embed_dim=32", "model.net.depth=2", "model.net.num_heads=2", "model.net.drop_path_rate=0.1",
            "data.batch_size=32", f"trainer.max_epochs={epochs}", f"trainer.limit_train_batches={batches}",
            "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1", "callbacks.last_checkpoint.every_n_train_steps=1", "cpu_threads=1",
            "seed=3"]


def _step(last: Path) -> int:
    import torch

    try:
        return int(torch.load(last, weights_only=True, mmap=True)["global_step"])
    except Exception:  # noqa: BLE001 - not there yet, or being replaced
        return -1


def run(cmd: list[str], env: dict, last: Path, kill_at_step: int | None, extra_delay: float) -> tuple[int, bool, str]:
    """Run `cmd`; if `kill_at_step` is set, SIGKILL it `extra_delay` seconds after its last.ckpt reached that step
    (checkpoints are written every step, so a short delay often lands inside the next write).
    Returns (exit status, killed, last output line)."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    t = threading.Thread(target=lambda: [lines.append(x.rstrip()) for x in p.stdout], daemon=True)
    t.start()
    killed = False
    if kill_at_step is not None:
        while p.poll() is None and _step(last) < kill_at_step:
            time.sleep(0.02)
        time.sleep(extra_delay)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            killed = True
    p.wait()
    t.join(5)
    return p.returncode, killed, (lines[-1] if lines else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--tmpdir", default="/dev/shm", help="$TMPDIR of every process (another filesystem)")
    ap.add_argument("--out", default=None, help="work folder (default: a new folder under /tmp)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batches", type=int, default=60, help="training batches per epoch")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = ap.parse_args()

    import tempfile

    import torch

    out = Path(args.out or tempfile.mkdtemp(prefix="lion-crash-"))
    data_dir = out / "data"
    tmp = Path(args.tmpdir) / f"lion-crash-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    rng = random.Random(args.seed)

    code, _, last = run(command(out / "ref", data_dir, args.epochs, args.batches), env, out / "none", None, 0.0)
    if code != 0:
        print(f"reference run failed ({code}): {last}")
        return 1
    ref_dir = next((out / "ref" / "runs").glob("*"))
    total_steps = _step(ref_dir / "checkpoints" / "last.ckpt")
    print(f"reference run: {total_steps} steps")

    # kill moments: distinct random steps spread over the run, in order (a few at the end hit the final
    # validation, test and metrics writing); each attempt is killed at the next one
    n_end = max(1, args.kills // 8)
    targets = sorted(rng.sample(range(1, total_steps), min(3 * args.kills, total_steps - 1)))  # with spares
    kills, attempts, done, in_write = 0, 0, 0, 0
    cmd = command(out / "killed", data_dir, args.epochs, args.batches)
    run_dir = out / "killed" / "runs" / ref_dir.name
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    while True:
        attempts += 1
        target = None
        ahead = [t for t in targets if t > done]
        if kills < args.kills - n_end and ahead:
            # a random step ahead of the run (every third candidate, so that several kills fall in each stretch),
            # plus a delay of up to 0.3 s that often lands inside the next checkpoint write
            target = ahead[min(len(ahead) - 1, rng.randint(0, 2))]
        elif kills < args.kills:
            target = total_steps  # the last kills hit the final validation, test and metrics writing
        delay = rng.uniform(0.0, 0.3)
        code, killed, last = run(cmd, env, last_ckpt, target, delay)
        step = _step(last_ckpt) if last_ckpt.is_file() else "-"
        if step == -1:
            step = "UNREADABLE"
        if isinstance(step, int):
            done = step
        if killed:
            kills += 1
            partial = list((run_dir / "checkpoints").glob(".*.tmp-*")) if run_dir.is_dir() else []
            in_write += bool(partial)
            print(f"attempt {attempts}: killed {delay:.2f} s after step {target}; last.ckpt now at step {step}"
                  + (" (inside a checkpoint write: a partial temporary file was left)" if partial else ""))
            continue
        print(f"attempt {attempts}: ran to the end (exit {code}), last.ckpt at step {step}")
        if code != 0:
            print(f"FAIL: the final attempt exited {code}: {last}")
            return 1
        if kills >= args.kills:
            break

    ref_dir = next((out / "ref" / "runs").glob("*"))
    a = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    weights_equal = a["state_dict"].keys() == b["state_dict"].keys() and all(
        torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    opt_equal = all(torch.equal(x, y) for sa, sb in zip(a["optimizer_states"], b["optimizer_states"])
                    for k in sa["state"] for x, y in zip(sa["state"][k].values(), sb["state"][k].values())
                    if torch.is_tensor(x))
    ma = json.loads((ref_dir / "metrics.json").read_text())["metrics"]
    mb = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    corrupt = sorted(p.name for p in (run_dir / "checkpoints").glob("*.corrupt-*"))
    stray = [f for f in tmp.rglob("*") if f.is_file() and f.stat().st_size > 2**20]
    print(f"kills: {kills} in {attempts} attempts ({in_write} inside a checkpoint write); steps: "
          f"{a['global_step']} (reference) / {b['global_step']}")
    print(f"weights bit-identical: {weights_equal}; optimizer state bit-identical: {opt_equal}; "
          f"metrics equal: {ma == mb}")
    print(f"metrics: {json.dumps(mb, sort_keys=True)}")
    print(f"checkpoints set aside as damaged: {corrupt or 'none'}; large files left in $TMPDIR: {len(stray)}")
    ok = weights_equal and opt_equal and ma == mb and a["global_step"] == b["global_step"] and not stray
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
