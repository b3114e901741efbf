"""`scripts/reproduce.py --suite paper`: the job graphs of Tables A, B and C built from the experiment configs, and a
miniature Table B (one tiny pre-training on Hamlet, two GLUE-style tasks made of Rotten Tomatoes snippets, two
seeds) run end to end through submitit's local executor: dependencies, --status, a job killed midway and resumed
alone by the same command, and the table at the end."""
from __future__ import annotations

import json
import os
import re
import runpy
import signal
import time
from pathlib import Path

import pytest
from markdown_tables import md_rows

ROOT = Path(__file__).resolve().parents[1]


def reproduce(argv: list[str]) -> int:
    return runpy.run_path(str(ROOT / "scripts" / "reproduce.py"), run_name="reproduce")["main"](argv)


def glue_like(root: Path) -> Path:
    """Two GLUE tasks in the GLUE schema (save_to_disk copies) made of real Rotten Tomatoes snippets: SST-2 (one
    sentence, its review label) and RTE (two sentences; label: do both snippets share their review label)."""
    import datasets

    from lion.data.text import load_rotten_tomatoes

    texts, labels = load_rotten_tomatoes()
    labels = [int(x) for x in labels]
    sizes = {"train": 96, "validation": 32, "test": 32}
    lo = 0
    sst2, rte = {}, {}
    for split, n in sizes.items():
        sst2[split] = datasets.Dataset.from_dict({"sentence": texts[lo:lo + n], "label": labels[lo:lo + n],
                                                  "idx": list(range(n))})
        a, b = slice(lo + 2000, lo + 2000 + n), slice(lo + 4000, lo + 4000 + n)
        rte[split] = datasets.Dataset.from_dict({
            "sentence1": texts[a], "sentence2": texts[b],
            "label": [int(x != y) for x, y in zip(labels[a], labels[b])], "idx": list(range(n))})
        lo += n
    datasets.DatasetDict(sst2).save_to_disk(str(root / "sst2"))
    datasets.DatasetDict(rte).save_to_disk(str(root / "rte"))
    return root


TINY = ["trainer=cpu", "++model.net.hidden_size=32", "++model.net.num_hidden_layers=1",
        "++model.net.num_attention_heads=2",
        "++model.net.intermediate_size=64", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "callbacks.throughput.warmup_steps=1", "cpu_threads=1"]


def mini_overrides(path: Path, glue_dir: Path, glue_batches: int) -> Path:
    import yaml

    plan = {
        "B/*/*/mlm": ["data.source=hamlet", "data.packing=true", "data.max_train_docs=null", "data.num_workers=0",
                      "data.persistent_workers=false", "data.batch_size=8", "global_batch_size=null",
                      "trainer.max_steps=-1", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                      "trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=1",
                      "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"],
        "B/*/*/[rs][ts]*": [f"data.source={glue_dir}", "data.num_workers=0", "data.batch_size=4",
                            "data.max_length=32", "trainer.max_epochs=1",
                            f"trainer.limit_train_batches={glue_batches}",
                            "callbacks.last_checkpoint.every_n_train_steps=2",
                            "model.optimizer.lr=1e-3"],
        "B/*/*/*": TINY,
    }
    path.write_text(yaml.safe_dump(plan))
    return path


def status_of(argv: list[str], capsys) -> dict[str, tuple[str, str]]:
    """job name -> (state, rest of the line) from --status."""
    capsys.readouterr()
    assert reproduce(argv + ["--status"]) == 0
    out = {}
    for line in capsys.readouterr().out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and "/" in parts[0] and not line.startswith(" "):  # job lines (not the cell summary)
            state = "not submitted" if parts[1] == "not" else parts[1]
            out[parts[0]] = (state, parts[2] if len(parts) > 2 else "")
    return out


def wait_until(cond, timeout: float, what: str, poll: float = 0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def marker(runs: Path, job: str) -> dict:
    try:
        return json.loads((runs / "reproduce" / "jobs" / job.replace("/", "__") / "runner.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_mini_table_b_submitit_local_kill_preempt_resume(tmp_path, capsys, monkeypatch):
    """One pre-training, two GLUE-style tasks x two seeds through submitit's local executor (each job its own
    process, as on SLURM). One fine-tuning is killed midway (SIGKILL of its train.py), another pre-empted (the
    scheduler's USR2 to its job: stopped, requeued by submitit, resumed from last.ckpt). The same command again
    resubmits only the killed job, which resumes from its last checkpoint; then the table is written."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "logs"
    plan = mini_overrides(tmp_path / "mini.yaml", glue_like(tmp_path / "glue"), 24)
    argv = ["--suite", "paper", "--cells", "B/lion-s/base/sst2", "B/lion-s/base/rte", "--max-seeds", "2",
            "--runs-dir", str(runs), "--data-dir", str(tmp_path / "data"), "--overrides-file", str(plan),
            "--launcher", "submitit-local", "--poll-s", "0.5"]
    pre, killed, preempted = "B/lion-s/base/mlm/s0", "B/lion-s/base/sst2/s19", "B/lion-s/base/rte/s8364"
    glue = [f"B/lion-s/base/{t}/s{s}" for t in ("rte", "sst2") for s in (19, 8364)]
    assert reproduce(argv) == 0
    state = json.loads((runs / "reproduce" / "state.json").read_text())["jobs"]
    assert set(state) == {pre, *glue, "table/B"} and all(e["launcher"] == "submitit-local" for e in state.values())

    st = status_of(argv, capsys)  # the fine-tunings wait for the pre-training: queued
    assert all(st[g][0] == "queued" for g in glue), st
    assert st[pre][0] in ("queued", "running") and st["table/B"][0] == "queued"

    def training(job):
        m = marker(runs, job)
        run_dir = runs / "runs" / f"paper_glue_{job.split('/')[3]}_lion_s_base-{job.split('/')[4]}"
        return m if m.get("phase") == "running" and (run_dir / "checkpoints" / "last.ckpt").is_file() else None

    held = {}

    def hold_both():  # stop each victim's train.py midway, as soon as it has a checkpoint
        for job in (killed, preempted):
            m = training(job) if job not in held else None
            if m:
                os.kill(m["child_pid"], signal.SIGSTOP)
                held[job] = m
        return len(held) == 2

    wait_until(hold_both, 400, "both victims to write a checkpoint", poll=0.02)
    st = status_of(argv, capsys)
    assert st[killed][0] == "running" and st[preempted][0] == "running" and st[pre][0] == "done", st
    os.kill(held[killed]["child_pid"], signal.SIGKILL)  # the job dies midway (OOM killer, node failure)
    os.kill(held[preempted]["pid"], signal.SIGUSR2)  # what SLURM sends before pre-empting or timing out a job
    time.sleep(0.5)
    os.kill(held[preempted]["child_pid"], signal.SIGCONT)  # its SIGTERM from the runner is delivered now

    def settled():
        s = status_of(argv, capsys)
        return s if not any(v[0] in ("queued", "running") for v in s.values()) else None

    st = wait_until(settled, 400, "every job to end", poll=1.0)
    assert st[killed][0] == "failed" and str(runs / "reproduce" / "jobs") in st[killed][1], st[killed]
    assert "exit -9" in st["table/B"][1] or "failed" in st["table/B"][1]  # its dependency failed
    for job in [pre, *glue]:
        if job != killed:
            assert st[job][0] == "done" and re.search(r"val/\w+=\d\.\d{4}", st[job][1]), (job, st[job])
    assert marker(runs, preempted).get("preemptions") == 1 and marker(runs, preempted)["attempts"] == 2
    log = (runs / "reproduce" / "jobs" / preempted.replace("/", "__") / "train.log").read_text()
    assert "pre-empted or timed out; requeued" in log and "resuming from" in log.split("requeued")[1]
    assert not (runs / "reproduce" / "table_B.md").exists()

    done_before = {p: p.stat().st_mtime for p in runs.glob("runs/*/metrics.json")}
    capsys.readouterr()
    assert reproduce(argv + ["--wait"]) == 0  # the same command: only the killed job (and the table) again
    out = capsys.readouterr().out
    submitted = re.findall(r"\[reproduce\] (\S+): submitted", out)
    assert sorted(submitted) == sorted([killed, "table/B"]), out
    assert "5 done and skipped" not in out and "4 done and skipped" in out
    for p, t in done_before.items():
        assert p.stat().st_mtime == t, p  # finished runs untouched
    log = (runs / "reproduce" / "jobs" / killed.replace("/", "__") / "train.log").read_text()
    second = log.split("[reproduce]")[-1]
    assert "resuming from" in second and "last.ckpt" in second

    st = status_of(argv, capsys)
    assert all(v[0] == "done" for v in st.values()), st
    table = (runs / "reproduce" / "table_B.md").read_text()
    glue_rows = md_rows(table, "GLUE per task (base")
    assert re.fullmatch(r"\d+\.\d ± \d+\.\d \(n=2\)", glue_rows["LION-S"][3]), glue_rows  # RTE
    assert re.fullmatch(r"\d+\.\d ± \d+\.\d \(n=2\)", glue_rows["LION-S"][4]), glue_rows  # SST-2
    assert glue_rows["BERT"][3] == "not run"
    main_rows = md_rows(table, "### base")
    assert re.fullmatch(r"\d+\.\d\d", main_rows["LION-S"][1]) and main_rows["LION-S"][4].startswith("partial")
    assert "| LION-S | - | not run | 69.16 |" in table  # large: the paper's number beside an empty cell


# ------------------------------------------------------------------------------------------------ graphs (fast)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The job graph of Table B's large RTE cells (and the pre-trainings they need)."""
    from lion.reproduce.graph import build_graph

    runs = tmp_path_factory.mktemp("runs")
    return {"B": build_graph(patterns=["B/*/large/rte"], runs_dir=runs)}, runs


def test_rte_cells_wait_for_their_pretraining(graphs):
    from lion.results.tables import load_paper

    b, runs = graphs[0]["B"], graphs[1]
    seeds = load_paper()["tables"]["B"]["glue"]["rte"]["seeds"]
    assert list(b.cells()) == [f"B/{r}/large/{t}" for t in ("mlm", "rte")
                               for r in ("softmax", "lion-lit", "lion-d", "lion-s")]
    for row in ("softmax", "lion-lit", "lion-d", "lion-s"):
        pre = b.jobs[f"B/{row}/large/mlm/s0"]
        assert pre.run_dir == runs / "runs" / f"paper_mlm_{row.replace('-', '_')}_large-s0" and not pre.deps
        jobs = b.cells()[f"B/{row}/large/rte"]
        assert [j.seed for j in jobs] == seeds  # the config's seed sweep
        for j in jobs:
            assert j.deps == [pre.name] and j.info["pretrained"] == str(pre.run_dir / "hf")
            assert list(b.jobs).index(pre.name) < list(b.jobs).index(j.name)
            assert j.command()[2:5] == ["experiment=paper/glue_rte", f"model.attention={row}", "model.size=large"]
            assert j.command()[-1] == f"seed={j.seed}" and f"paths.log_dir={runs}" in j.command()
    table = list(b.jobs.values())[-1]
    assert table.kind == "table" and set(table.deps) == {j.name for j in b.train_jobs()}
    assert table.command()[-4:] == ["--tables", "B", "--out", str(runs / "reproduce" / "table_B.md")]


@pytest.mark.slow
def test_table_graphs_cover_every_cell_and_seed(tmp_path):
    from lion.reproduce.graph import build_graph
    from lion.results.tables import load_paper

    runs = tmp_path
    g = {t: build_graph(tables=[t], runs_dir=runs) for t in "ABC"}
    paper = load_paper()["tables"]
    a = g["A"].cells()
    assert set(a) == {f"A/{r}/{s}/imagenet" for r in paper["A"]["rows"] for s in ("tiny", "small", "base")}
    c = g["C"].cells()
    assert set(c) == {f"C/{r}/lra/{t}" for r in paper["C"]["rows"] for t in paper["C"]["tasks"]}
    b = g["B"]
    cells = b.cells()
    assert len(cells) == 4 * 2 * 9  # rows x sizes x (pre-training + 8 GLUE tasks)
    for cell, jobs in cells.items():
        _, row, size, task = cell.split("/")
        if task == "mlm":
            assert [j.seed for j in jobs] == [0] and not jobs[0].deps
            continue
        assert [j.seed for j in jobs] == paper["B"]["glue"][task]["seeds"], cell  # the config's seed sweep
        for j in jobs:  # after the pre-training of its row and size, whose hf/ export it starts from
            pre = b.jobs[f"B/{row}/{size}/mlm/s0"]
            assert j.deps == [pre.name] and j.info["pretrained"] == str(pre.run_dir / "hf")
            assert list(b.jobs).index(pre.name) < list(b.jobs).index(j.name)
            assert j.command()[2:] [:3] == [f"experiment=paper/glue_{task}", f"model.attention={row}",
                                            f"model.size={size}"] and j.command()[-1] == f"seed={j.seed}"
    assert len(b.train_jobs()) == 8 + 4 * 2 * sum(len(v["seeds"]) for v in paper["B"]["glue"].values())
    for t, graph in g.items():
        table = list(graph.jobs.values())[-1]
        assert table.kind == "table" and set(table.deps) == {j.name for j in graph.train_jobs()}
        assert table.command()[-4:] == ["--tables", t, "--out", str(runs / "reproduce" / f"table_{t}.md")]
        for j in graph.train_jobs():  # resources from the configs: one node, one GPU (trainer=gpu)
            assert (j.resources["nodes"], j.resources["gpus_per_node"], j.resources["tasks_per_node"]) == (1, 1, 1)
            assert j.resources["timeout_min"] == 2880 and j.run_dir.parent == runs / "runs"


@pytest.mark.slow
def test_dry_run_prints_graph_commands_and_unknown_hours(capsys, tmp_path):
    assert reproduce(["--suite", "paper", "--table", "C", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "24 training jobs" in out and "python train.py experiment=paper/lra_listops_lion_s" in out
    assert "after: all 24 jobs above" in out and "python scripts/make_tables.py" in out
    assert out.count("unknown") >= 25 and "Total: unknown: 24 of 24 cells have no measurement" in out
    assert not re.search(r"\d GPU-h", out)  # nothing measured, nothing estimated


def test_slurm_dependencies_and_resources(graphs):
    from lion.reproduce.launch import sbatch_header, slurm_params_of

    b = graphs[0]["B"]
    job = b.jobs["B/lion-d/large/rte/s717"]
    p = slurm_params_of(job, {"partition": "gpu", "account": "lab"}, deps=["1001"])
    assert p["dependency"] == "afterok:1001" and p["gpus_per_node"] == 1 and p["ntasks_per_node"] == 1
    assert (p["partition"], p["account"], p["time"], p["signal_delay_s"]) == ("gpu", "lab", 2880, 120)
    header = sbatch_header(b, job, {"partition": "gpu"})
    header = header.replace("'", "")
    assert "#SBATCH --dependency=afterok:<B/lion-d/large/mlm/s0>" in header
    assert "#SBATCH --kill-on-invalid-dep=yes" in header and "#SBATCH --time=2880" in header
    assert "#SBATCH --signal=USR2@120" in header and "#SBATCH --partition=gpu" in header
    assert "#SBATCH --gpus-per-node=1" in header and "#SBATCH --ntasks-per-node=1" in header
    pre = b.jobs["B/lion-d/large/mlm/s0"]
    assert "dependency" not in slurm_params_of(pre, {}, deps=[])


def test_estimate_from_measurements_only(graphs, tmp_path):
    """GPU-hours from a finished seed of the same cell, or from a GPU throughput of the model for a step-based run;
    a CPU measurement or an epoch-based run without one stays unknown."""
    from lion.reproduce.estimate import cell_totals, estimate_graph

    b = graphs[0]["B"]
    meas = tmp_path / "meas"
    one = b.jobs["B/lion-s/large/rte/s19"]
    (meas / "a").mkdir(parents=True)
    (meas / "a" / "metrics.json").write_text(json.dumps({
        "status": "finished", "table": {"id": "B", "row": "lion-s", "scale": "large", "task": "rte"},
        "model": {"attention": "lion-s", "size": "large"}, "device": "NVIDIA H100 80GB HBM3", "seed": 19,
        "fit_seconds": 1800.0, "throughput": {"train_samples_per_s": 100.0}, "metrics": {}}))
    (meas / "b").mkdir()
    (meas / "b" / "metrics.json").write_text(json.dumps({  # a CPU run of the same cell: never a GPU estimate
        "status": "finished", "table": {"id": "B", "row": "lion-d", "scale": "large", "task": "rte"},
        "model": {"attention": "lion-d", "size": "large"}, "device": "cpu", "seed": 19, "fit_seconds": 60.0,
        "metrics": {}}))
    (meas / "bench.json").write_text(json.dumps({"benchmark": "train_throughput", "device": "2x NVIDIA H100",
                                                "results": [{"family": "bert", "size": "large", "model": "softmax",
                                                             "status": "ok", "throughput": 1000.0,
                                                             "unit": "seq/s"}]}))
    est = estimate_graph(b, [meas])
    assert est[one.name].gpu_hours == pytest.approx(0.5)
    assert "seed 19 of this cell" in est["B/lion-s/large/rte/s717"].source
    assert est["B/lion-d/large/rte/s19"].gpu_hours is None
    mlm = b.jobs["B/softmax/large/mlm/s0"]  # 70,000 steps x 4096 sequences at 1000 seq/s per GPU
    assert est[mlm.name].gpu_hours == pytest.approx(70000 * 4096 / 1000 / 3600)
    assert est["B/lion-s/large/mlm/s0"].gpu_hours is None  # no throughput of that model
    cells, total = cell_totals(b, est)
    assert cells["B/lion-s/large/rte"].gpu_hours == pytest.approx(0.5 * 5)  # five seeds
    assert total.gpu_hours is None and "unknown" in total.source


def test_selection_errors_name_the_fix(graphs, capsys):
    base = ["--suite", "paper", "--runs-dir", str(graphs[1]), "--dry-run"]
    with pytest.raises(SystemExit):
        reproduce(base + ["--cells", "B/lion-x/base/cola"])
    assert "matches no cell" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce(base + ["--table", "D"])
    assert "scripts/bench_" in capsys.readouterr().err
    # a fine-tuning alone brings its pre-training along
    assert reproduce(base + ["--cells", "B/softmax/large/rte"]) == 0
    out = capsys.readouterr().out
    assert "B/softmax/large/mlm/s0  [1 node x 1 GPU, 2880 min]  est: unknown" in out
    assert "after: B/softmax/large/mlm/s0" in out and "B/lion-s" not in out


def test_local_launcher_leaves_a_running_graph_alone(graphs, capsys):
    """A second `--launcher local` command on a runs directory whose lock a live process holds starts nothing."""
    runs = graphs[1]
    lock = runs / "reproduce" / "local.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    import socket
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # this process: alive
    try:
        argv = ["--suite", "paper", "--cells", "B/*/large/rte", "--runs-dir", str(runs), "--launcher", "local"]
        assert reproduce(argv) == 0
        assert f"already going on (pid {os.getpid()})" in capsys.readouterr().out
        assert not (runs / "reproduce" / "jobs").exists() and not (runs / "runs").exists()
        st = status_of(argv, capsys)
        assert len(st) == 4 + 4 * 5 + 1 and all(v[0] == "not submitted" for v in st.values()), st
    finally:
        lock.unlink()


@pytest.mark.slow
def test_mini_table_b_local_launcher(tmp_path, capsys, monkeypatch):
    """The miniature Table B (one seed) in order on this machine; the same command again skips every job."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "logs"
    plan = mini_overrides(tmp_path / "mini.yaml", glue_like(tmp_path / "glue"), 6)
    argv = ["--suite", "paper", "--cells", "B/lion-s/base/sst2", "B/lion-s/base/rte", "--max-seeds", "1",
            "--runs-dir", str(runs), "--data-dir", str(tmp_path / "data"), "--overrides-file", str(plan)]
    assert reproduce(argv) == 0
    out = capsys.readouterr().out
    order = re.findall(r"\[reproduce\] (\S+): running", out)
    assert order == ["B/lion-s/base/mlm/s0", "B/lion-s/base/rte/s19", "B/lion-s/base/sst2/s19"]
    table = (runs / "reproduce" / "table_B.md").read_text()
    glue_rows = md_rows(table, "GLUE per task (base")
    assert re.fullmatch(r"\d+\.\d", glue_rows["LION-S"][3]) and re.fullmatch(r"\d+\.\d", glue_rows["LION-S"][4])
    assert not (runs / "reproduce" / "local.lock").exists()  # released
    mtimes = {p: p.stat().st_mtime for p in runs.glob("runs/*/metrics.json")}
    assert len(mtimes) == 3
    assert reproduce(argv) == 0
    assert "running" not in capsys.readouterr().out
    assert {p: p.stat().st_mtime for p in runs.glob("runs/*/metrics.json")} == mtimes
    st = status_of(argv, capsys)
    assert all(v[0] == "done" for v in st.values()), st


def test_runner_failure_and_dependency_states(graphs, tmp_path):
    """The runner's phases drive --status: a command that fails is 'failed' with its log's last line and path; a job
    waiting on it stops with the dependency named; a live process is 'running'."""
    import sys

    from lion.reproduce.graph import Graph
    from lion.reproduce.launch import runner_spec
    from lion.reproduce.runner import DependencyFailed, JobRunner
    from lion.reproduce.state import State, statuses

    b = graphs[0]["B"]
    g = Graph(jobs=b.jobs, tables=b.tables, runs_dir=tmp_path)
    pre, fine = g.jobs["B/lion-s/large/mlm/s0"], g.jobs["B/lion-s/large/rte/s19"]
    spec = runner_spec(g, pre, "submitit-local", 0.05)
    spec["command"] = [sys.executable, "-c", "import sys; print('step 3: loss nan, stopping'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match="exit 3"):
        JobRunner(spec)()
    st = statuses(g, State(tmp_path))
    assert st[pre.name].state == "failed"
    assert st[pre.name].detail == f"step 3: loss nan, stopping [{tmp_path}/reproduce/jobs/{pre.key}/train.log]"
    assert st[fine.name].state == "not submitted"
    with pytest.raises(DependencyFailed, match="B/lion-s/large/mlm/s0 failed \\(exit 3\\)"):
        JobRunner(runner_spec(g, fine, "submitit-local", 0.05))()
    assert "not started: dependency" in (tmp_path / "reproduce" / "jobs" / fine.key / "train.log").read_text()
    # a job started by hand with the runner and still alive: running
    spec = runner_spec(g, g.jobs["B/lion-d/large/mlm/s0"], "local", 0.05)
    spec["command"] = [sys.executable, "-c", "import time; time.sleep(30)"]
    import threading
    runner = JobRunner(spec)

    def run():
        with pytest.raises(RuntimeError, match="exit -9"):  # killed below
            runner()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: runner._proc is not None, 20, "the command to start")
    try:
        assert statuses(g, State(tmp_path))["B/lion-d/large/mlm/s0"].state == "running"
    finally:
        runner._proc.kill()
        t.join(10)
