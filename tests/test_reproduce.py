"""The proxy suite at its smallest setting, end to end on the CPU through train.py (16 real runs); a paper
experiment config trained for a few steps on generated ListOps and laid out by make_tables as Table C; and the
benchmark scripts' --quick modes."""
from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from markdown_tables import md_rows

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def script(name: str) -> dict:
    return runpy.run_path(str(SCRIPTS / f"{name}.py"), run_name=name)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """Run the proxy suite's smallest setting once: (exit code, runs dir, data dir, printed text)."""
    base = tmp_path_factory.mktemp("proxy")
    runs, data = base / "logs", base / "data"
    main = script("reproduce")["main"]
    rc = main(["--suite", "proxy", "--size", "smallest", "--device", "cpu", "--threads", "1",
               "--runs-dir", str(runs), "--data-dir", str(data)])
    return rc, runs, data


@pytest.mark.slow  # 16 trainings: about a minute on 2 cores
def test_proxy_suite_smallest_end_to_end(proxy):
    rc, runs, data = proxy
    logs = {p.name: p.read_text()[-3000:] for p in runs.glob("reproduce_*.log")}
    assert rc == 0, logs
    finished = [json.loads(p.read_text()) for p in runs.rglob("metrics.json")]
    cells = {(m["table"]["task"], m["table"]["row"]) for m in finished
             if m["status"] == "finished" and m["table"]["id"] == "P" and m["table"]["scale"] == "smallest"}
    assert cells == {(t, r) for t in ("mnist", "listops", "pathfinder", "rotten_tomatoes")
                     for r in ("softmax", "lion-lit", "lion-d", "lion-s")}
    for m in finished:  # every run trained a model of its own attention and evaluated it
        assert m["model"]["attention"] == m["table"]["row"]
        assert 0.0 <= m["metrics"]["test/acc"] <= 1.0
        assert m["throughput"]["train_samples_per_s"] > 0
    table = (runs / "proxy_smallest.md").read_text()
    assert "Hardware: CPU" in table
    acc = md_rows(table[table.index("| Model"):])
    assert set(acc) == {"Model", "Softmax", "LION-LIT", "LION-D", "LION-S"}
    for label, row in acc.items():
        if label != "Model":
            assert all(re.fullmatch(r"\d+\.\d", c) for c in row), (label, row)  # 4 tasks + mean, no gaps
    times = md_rows(table[table.index("Training time relative"):].split("\n", 2)[2])
    assert times["Softmax"] == ["x1.00"] * 4
    assert all(re.fullmatch(r"x\d+\.\d\d", c) for c in times["LION-S"])
    # generated data: the official ListOps TSV layout and Pathfinder metadata, with the options stamp
    assert (data / "proxy" / "listops_smallest" / "basic_train.tsv").is_file()
    assert json.loads((data / "proxy" / "pathfinder32_smallest" / "options.json").read_text())["n"] == 80


@pytest.mark.slow  # needs the proxy suite's generated data
def test_paper_config_runs_fill_table_c(proxy, tmp_path):
    """Two cells of Table C from real (tiny) runs of the paper configs; make_tables marks every other cell."""
    _, _, data = proxy
    listops = data / "proxy" / "listops_smallest"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "experiment=paper/lra_listops_softmax,paper/lra_listops_lion_s",
           "trainer=cpu", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data}", f"++data.root={listops}",
           "++data.seq_len=128", "++data.batch_size=8", "++model.net.dim=32", "++model.net.depth=1",
           "++model.net.num_heads=2", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
           "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0",
           "++callbacks.throughput.warmup_steps=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "tables.md"
    assert script("make_tables")["main"](["--runs", str(tmp_path / "logs"), "--out", str(out), "--tables", "AC"]) == 0
    text = out.read_text()
    c = md_rows(text[text.index("## Table C"):].split("\n", 2)[2])
    metrics = {json.loads(p.read_text())["table"]["row"]: json.loads(p.read_text())["metrics"]["test/acc"]
               for p in (tmp_path / "logs").rglob("metrics.json")}
    assert c["Transformer"][0] == f"{100 * metrics['softmax']:.1f}"
    assert c["LION-S"][0] == f"{100 * metrics['lion-s']:.1f}"
    assert c["LION-S"][5] == "not run (paper† 97.99, -)" and c["LION-D"][0] == "not run"
    assert "| LION-S♮ | - | not run | 79.9 |" in text


def test_reproduce_dry_run_and_bad_device(capsys):
    main = script("reproduce")["main"]
    assert main(["--suite", "proxy", "--size", "smallest", "--device", "cpu", "--dry-run", "--tasks", "mnist",
                 "--models", "lion-s", "softmax", "--seeds", "0", "1", "--", "trainer.max_epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "experiment=proxy/mnist_softmax,proxy/mnist_lion_s" in out and "seed=0,1" in out
    assert "++table.scale=smallest" in out and out.rstrip().endswith("trainer.max_epochs=2")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["--suite", "proxy", "--device", "gpu"])


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # a benchmark's smoke run
def test_bench_train_throughput_quick(tmp_path):
    results = script("bench_train_throughput")["main"](
        ["--quick", "--variants", "lion-s", "lion-d-ms", "--threads", "1", "--out-dir", str(tmp_path)])
    blob = json.loads((tmp_path / "train_throughput.json").read_text())
    assert blob["benchmark"] == "train_throughput" and is_png(tmp_path / "train_throughput.png")
    got = {(r["family"], r["model"]) for r in blob["results"]}
    assert got == {("vit", "softmax"), ("vit", "lion-s"), ("vit", "lion-d-ms"), ("bert", "softmax"),
                   ("bert", "lion-s")}  # the two-scan variant has no BERT form
    for r in results:
        assert r["status"] == "ok" and r["throughput"] > 0
        twin = next(t for t in results if t["family"] == r["family"] and t["model"] == "softmax")
        assert r["relative_time"] == pytest.approx(twin["throughput"] / r["throughput"])
    # same encoder, different mixer: the LION ViT has the twin's parameters plus its decay gate (H per block)
    vit = {r["model"]: r["params"] for r in results if r["family"] == "vit"}
    dim, heads, depth = 192, 3, 2
    assert vit["lion-s"] - vit["softmax"] == depth * (dim + 1) * heads


@pytest.mark.slow  # a benchmark's smoke run
def test_bench_resolution_quick(tmp_path):
    main = script("bench_resolution")["main"]
    results = main(["--quick", "--variants", "d", "--threads", "1", "--out-dir", str(tmp_path)])
    blob = json.loads((tmp_path / "resolution.json").read_text())
    assert blob["benchmark"] == "resolution" and is_png(tmp_path / "resolution.png")
    assert {(r["resolution"], r["tokens"]) for r in results} == {(32, 5), (64, 17)}  # (px / 16)^2 + class token
    assert {(r["model"], r["form"]) for r in results} == {("softmax", "sdpa"), ("lion-d", "parallel"),
                                                        ("lion-d", "chunk"), ("lion-d", "recurrent")}
    assert all(r["status"] == "ok" and r["ms"] > 0 for r in results)
    # a parallel form too large for --max-cpu-gib is skipped and shown so, never estimated
    skipped = main(["--quick", "--variants", "s", "--forms", "parallel", "--max-cpu-gib", "0", "--threads", "1",
                    "--out-dir", str(tmp_path / "skip")])
    lion = [r for r in skipped if r["model"] == "lion-s"]
    assert lion and all(r["status"].startswith("skipped") and r["ms"] is None for r in lion)
    assert script("bench_resolution")["is_oom"](RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not script("bench_resolution")["is_oom"](RuntimeError("shape mismatch"))
