"""The proxy suite at its smoke size, end to end through train.py (every task and row, one seed), and its claims
table: computed from the runs (a changed metric in a copied run changes the verdict), with the statistics rules of
lion.results.proxy."""
from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import pytest
from markdown_tables import md_rows

from lion.reproduce.proxy import TASK_ROWS, run_id
from lion.results.proxy import CLOSE, Stat, report, verdict

ROOT = Path(__file__).resolve().parents[1]


def reproduce_main():
    return runpy.run_path(str(ROOT / "scripts" / "reproduce.py"), run_name="reproduce")["main"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smallest size once, one seed: (exit code, runs dir, results dir, data dir)."""
    base = tmp_path_factory.mktemp("proxy")
    runs, results, data = base / "logs", base / "results", base / "data"
    rc = reproduce_main()(["--suite", "proxy", "--size", "smallest", "--device", "cpu", "--seeds", "0",
                           "--runs-dir", str(runs), "--results-dir", str(results), "--data-dir", str(data)])
    return rc, runs, results, data


def claims(text: str) -> dict[str, str]:
    """'Tested as' -> verdict, from the claims table of a report."""
    part = text[text.index("### Claims"):]
    rows = md_rows(part, "| Tested as")
    return {label: cells[-1] for label, cells in rows.items() if label != "Tested as (A vs B)"}


def test_smoke_size_end_to_end(smoke):
    rc, runs, results, data = smoke
    logs = {p.name: p.read_text()[-2000:] for p in (runs / "logs").glob("*.log")}
    assert rc == 0, logs
    for task, rows in TASK_ROWS.items():  # every cell trained, evaluated and copied (no checkpoint) to results
        for row in rows:
            rid = run_id(task, row, "smallest", 0)
            m = json.loads((results / "runs" / rid / "metrics.json").read_text())
            assert m["status"] == "finished" and m["table"] == {"id": "P", "row": row, "scale": "smallest",
                                                                "task": task}
            assert m["model"]["attention"] == row and 0.0 <= m["metrics"]["test/acc"] <= 1.0
            assert (results / "runs" / rid / "csv" / "metrics.csv").is_file()
    assert not list(results.rglob("*.ckpt")) and list(runs.rglob("*.ckpt"))
    # the fine-tuning runs started from their row's pre-training export
    cfg = (results / "runs" / run_id("rotten_tomatoes_pt", "lion-d", "smallest", 0) / "config.yaml").read_text()
    assert f"runs/{run_id('mlm', 'lion-d', 'smallest', 0)}/hf" in cfg
    suite = json.loads((results / "suite.json").read_text())
    assert suite["generators"]["pathfinder"]["size"] == 32 and suite["wall_seconds"] > 0
    assert 0 < suite["data"]["mnist"]["majority_acc"] < 1 and suite["data"]["mnist"]["n_test"] == 500
    text = (results / "proxy_smallest.md").read_text()
    for png in ("proxy_smallest_accuracy.png", "proxy_smallest_curves.png"):
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in text
    assert "n=200, size=32, contour_length=6" in text  # the generator's parameters are printed
    verdicts = claims(text)
    assert "LION-D above LION-LIT" in verdicts and "LION-S♮ (two scans) at or above LION-S" in verdicts
    assert set(verdicts.values()) <= {"holds", "does not hold", "within noise",
                                      "not tested (column at the majority class)"}
    # the same report from the results folder alone, through make_tables
    out = results / "tables.md"
    assert runpy.run_path(str(ROOT / "scripts" / "make_tables.py"), run_name="m")["main"](
        ["--runs", str(results), "--tables", "P", "--out", str(out)]) == 0
    assert claims(out.read_text()) == verdicts


def test_claims_verdict_follows_the_runs(smoke, tmp_path):
    """Copy the smoke results, change one metric, and the claim's verdict changes with it."""
    _, _, results, _ = smoke
    copy = tmp_path / "copy"
    shutil.copytree(results, copy)

    def set_acc(row: str, acc: float) -> None:
        p = copy / "runs" / run_id("mnist", row, "smallest", 0) / "metrics.json"
        m = json.loads(p.read_text())
        m["metrics"]["test/acc"] = acc
        p.write_text(json.dumps(m))

    set_acc("lion-d", 0.95)
    set_acc("lion-lit", 0.30)
    assert claims(report(copy, "smallest"))["LION-D above LION-LIT"] == "holds"
    set_acc("lion-d", 0.30)
    set_acc("lion-lit", 0.95)
    assert claims(report(copy, "smallest"))["LION-D above LION-LIT"] == "does not hold"
    # a column whose best row is not 5 points above the majority class is not shown and its claims are not tested
    maj = json.loads((copy / "suite.json").read_text())["data"]["mnist"]["majority_acc"]
    for row in TASK_ROWS["mnist"]:
        set_acc(row, maj)
    text = report(copy, "smallest")
    assert claims(text)["LION-D above LION-LIT"] == "not tested (column at the majority class)"
    assert "**not learned**" in text


def test_verdict_rules():
    a = Stat([80.0, 81.0, 82.0], 500)
    b = Stat([70.0, 71.0, 72.0], 500)
    assert verdict("above", a, b)[0] == "holds" and verdict("above", b, a)[0] == "does not hold"
    noisy = Stat([60.0, 80.0, 100.0], 500)
    assert verdict("at_or_above", noisy, a)[0] == "within noise"
    assert verdict("close", Stat([80.0, 80.5, 81.0], 500), Stat([81.0, 81.5, 82.0], 500))[0] == "holds"
    assert verdict("close", a, b)[0] == "does not hold"  # 10 points apart, tight seeds
    v, d, noise = verdict("above", Stat([95.0], 100), Stat([80.0], 100))  # one seed: the test set's binomial noise
    assert v == "holds" and d == pytest.approx(15.0) and noise == pytest.approx(2 * (4.75 + 16.0) ** 0.5)
    assert verdict("above", Stat([90.0], 100), Stat([80.0], 100))[0] == "within noise"  # 10 < 2 sqrt(9 + 16)
    assert verdict("close", Stat([], 10), b)[0] == "not run"
    assert CLOSE == 2.0
