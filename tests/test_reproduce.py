"""The proxy suite's command line (its smoke run end to end: tests/test_proxy_suite.py); a paper experiment config
trained for a few steps on generated ListOps and laid out by make_tables as Table C; and the benchmark scripts'
--quick modes."""
from __future__ import annotations

import json
import os
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
    """The proxy suite's generated ListOps at its smallest size (no training): the data dir."""
    from lion.reproduce.proxy import prepare_data

    data = tmp_path_factory.mktemp("proxy") / "data"
    prepare_data("listops", "smallest", data)
    return data


@pytest.mark.slow  # two trainings
def test_paper_config_runs_fill_table_c(proxy, tmp_path):
    """Two cells of Table C from real (tiny) runs of the paper configs; make_tables marks every other cell."""
    data = proxy
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
                 "rotten_tomatoes_pt", "--models", "lion-s", "softmax", "--seeds", "0", "1", "--",
                 "trainer.max_epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "experiment=proxy/mnist_softmax,proxy/mnist_lion_s seed=0" in out and "seed=1" in out
    assert "++table.scale=smallest" in out and out.rstrip().endswith("trainer.max_epochs=2")
    # fine-tuning brings its pre-training along (seed 0 only) and runs after it
    assert out.count("# mlm/s") == 1 and "# rotten_tomatoes_pt/s1  after mlm/s0" in out
    assert "run_id=${experiment_name}-s${seed}" in out and "cpu_threads=1" in out
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


def test_bench_core_quick(tmp_path, capsys):
    """The core benchmark's smoke run: every case of each length measured, ratios against the SDPA row of the same
    run, the parallel form skipped (never estimated) beyond --max-parallel-len."""
    out = tmp_path / "core.json"
    script("bench_core")["main"](["--quick", "--forms", "auto", "parallel", "chunk", "--modes", "fwd+bwd",
                                  "--max-parallel-len", "64", "--json", str(out)])
    blob = json.loads(out.read_text())
    got = {(r["L"], r["kind"]) for r in blob["results"]}
    assert got == {(64, "sdpa"), (64, "auto"), (64, "parallel"), (64, "chunk"), (256, "sdpa"), (256, "auto"),
                   (256, "chunk")}
    assert all(r["ms"] > 0 and r["peak_mib"] is not None for r in blob["results"])
    lines = [ln.strip("|").split("|") for ln in capsys.readouterr().out.split("### fwd+bwd", 1)[1].splitlines()
             if ln.startswith("| ")]
    rows = {(int(c[0]), c[1].strip()): [x.strip() for x in c[2:]] for c in lines[1:]}
    assert rows[(256, "parallel")] == ["unmeasured"] * 6  # skipped, never estimated
    ms = {(r["L"], r["kind"]): r["ms"] for r in blob["results"]}
    for (L, kind), row in rows.items():
        if kind != "parallel" or L == 64:  # time / SDPA is this case's time over the same run's SDPA time
            assert float(row[4]) == pytest.approx(ms[(L, kind)] / ms[(L, "sdpa")], rel=0.01), (L, kind, row)


@pytest.mark.slow  # torch.compile on the CPU: tens of seconds
@pytest.mark.parametrize("L", [40, 100])  # one block, and chunks of 16 with a short last one
def test_bench_core_compiled_case_matches_eager(L):
    """--forms compiled times lion_attention (form auto) under torch.compile: the same values and gradients as the
    eager call, in float64."""
    from lion.ops import lion_attention

    make = script("bench_core")["make"]
    call = lambda q, k, v, a: lion_attention(q, k, v, a, form="auto", chunk_size=16, backend="torch")  # noqa: E731
    compiled = torch.compile(call, dynamic=False)
    out = {}
    for name, fn in (("eager", call), ("compiled", compiled)):
        inputs = make(2, 2, L, 16, "token", "cpu", torch.float64, True)
        y = fn(*inputs)
        y.pow(2).sum().backward()
        out[name] = [y.detach()] + [t.grad for t in inputs]
    for e, c in zip(out["eager"], out["compiled"]):
        torch.testing.assert_close(c, e)
