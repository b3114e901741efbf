"""scripts/make_tables.py on directories of finished-run metrics.json files written here with known values: the
tables must show the project's numbers (seed means worked out by hand below), the paper's numbers (lion/results/paper.yaml),
their difference, training time relative to the softmax twin, and "not run" for absent cells."""
from __future__ import annotations

import json
import os
import runpy
from importlib import resources
from pathlib import Path

import pytest
from markdown_tables import md_rows

ROOT = Path(__file__).resolve().parents[1]
make_tables_main = runpy.run_path(str(ROOT / "scripts" / "make_tables.py"), run_name="make_tables")["main"]


def write_run(root: Path, name: str, tid, row, scale, task, metrics, *, tput=100.0, seed=0, status="finished",
              device="cpu", params=5_000_000, mtime=None):
    d = root / "runs" / name
    d.mkdir(parents=True, exist_ok=True)
    blob = {"status": status, "experiment": name,
            "table": None if tid is None else {"id": tid, "row": row, "scale": scale, "task": task},
            "model": {"attention": row, "size": scale, "params": params}, "metrics": metrics,
            "throughput": {"train_samples_per_s": tput, "train_tokens_per_s": None, "step_time_s": 1.0},
            "device": device, "seed": seed}
    (d / "metrics.json").write_text(json.dumps(blob))
    if mtime is not None:
        os.utime(d / "metrics.json", (mtime, mtime))


def render(root: Path, tables="ABCDP") -> str:
    out = root / "tables.md"
    assert make_tables_main(["--runs", str(root), "--out", str(out), "--tables", tables]) == 0
    return out.read_text()


def section(text: str, heading: str) -> str:
    """The text from `heading` to the next heading of the same or higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    ends = [i for i in (rest.find("\n" + "#" * n + " ") for n in range(1, len(level) + 1)) if i >= 0]
    return rest[:min(ends)] if ends else rest


rows = md_rows


def test_paper_numbers_are_shipped_and_match_paper_md():
    """Spot checks of paper.yaml against the tables of the paper (v1), transcribed here by hand."""
    assert resources.files("lion.results").joinpath("paper.yaml").is_file()
    from lion.results.tables import load_paper
    t = load_paper()["tables"]
    assert t["A"]["paper"]["base"]["softmax"]["top1"] == 81.8
    assert t["A"]["paper"]["base"]["lion-d-ms"] == {"params": "86M", "top1": 80.2, "train_time": 1.48}
    assert t["A"]["paper"]["base"]["lion-s"]["train_time"] == 1.46
    assert t["A"]["paper_only_rows"]["Vim"]["base"]["train_time"] == 10.86
    assert t["B"]["paper"]["large"]["lion-s"] == {"mlm_acc": 69.16, "glue": 81.58, "train_time": 1.32}
    assert t["B"]["paper"]["large"]["softmax"]["glue"] == 82.95
    assert t["B"]["glue"]["cola"]["seeds"] == [19, 8364, 717, 10536]
    assert t["B"]["glue"]["mnli"]["batch_size"] == 48 and t["B"]["glue"]["mrpc"]["weight_decay"] == 8e-6
    assert t["C"]["paper"]["lra"]["lion-d"] == {"pathx": 97.28, "avg": 85.63}
    assert "tiny" not in t["A"]["paper"] and "base" not in t["B"]["paper"]


def test_table_a_seeds_paper_and_missing(tmp_path):
    # base: DeiT twin 100 img/s on one seed; LION-S two seeds (77.0, 78.0) at 80 img/s -> 77.5 +- 0.7, x1.25
    write_run(tmp_path, "deit-b", "A", "softmax", "base", "imagenet", {"test/acc": 0.80, "val/acc": 0.5}, tput=100)
    write_run(tmp_path, "s-b-1", "A", "lion-s", "base", "imagenet", {"test/acc": 0.77}, tput=80, seed=1)
    write_run(tmp_path, "s-b-2", "A", "lion-s", "base", "imagenet", {"test/acc": 0.78}, tput=80, seed=2)
    # an unfinished run of the same cell must not enter the mean
    write_run(tmp_path, "s-b-3", "A", "lion-s", "base", "imagenet", {"test/acc": 0.10}, seed=3, status="running")
    # the same seed run twice: the newer file wins (old value 0.10 would change the mean)
    write_run(tmp_path, "d-t-old", "A", "lion-d", "tiny", "imagenet", {"val/acc": 0.10}, seed=0, mtime=1_000_000)
    write_run(tmp_path, "d-t-new", "A", "lion-d", "tiny", "imagenet", {"val/acc": 0.70}, seed=0, tput=50,
              device="NVIDIA H200", mtime=2_000_000)
    write_run(tmp_path, "deit-t", "A", "softmax", "tiny", "imagenet", {"val/acc": 0.72}, tput=100)
    write_run(tmp_path, "lit-s", "A", "lion-lit", "small", "imagenet", {"train/loss": 1.0})  # no accuracy
    text = render(tmp_path)

    base = rows(section(text, "### base"))
    assert base["DeiT"][:5] == ["5.0M", "80.0", "81.8", "-1.8", "x1.00"]
    assert base["LION-S"][1:6] == ["77.5 ± 0.7 (n=2)", "76.3", "+1.2", "x1.25", "x1.46"]
    assert base["LION-LIT"][1:6] == ["not run", "74.7", "-", "not run", "x0.73"]
    assert base["Vim (paper only)"][1:3] == ["not reproduced", "81.9"]
    tiny = rows(section(text, "### tiny"))
    assert tiny["LION-D"][1:5] == ["70.0", "-", "-", "x2.00*"]  # newest seed-0 run; different device -> '*'
    assert tiny["LION-S♮"][1] == "not run"
    assert rows(section(text, "### small"))["LION-LIT"][1] == "no metric"
    assert "1 run(s) not finished" in text


def test_table_b_glue_mean_and_partial(tmp_path):
    glue = {"mnli": {"val/accuracy": 0.84, "val/mismatched/accuracy": 0.80}, "qnli": {"val/accuracy": 0.90},
            "qqp": {"val/f1": 0.88, "val/accuracy": 0.90}, "rte": {"val/acc": 0.70}, "sst2": {"test/accuracy": 0.92},
            "mrpc": {"val/score": 0.89, "val/f1": 0.10, "val/glue_score": 0.85},
            "cola": {"val/matthews_corrcoef": 0.55},
            "stsb": {"val/pearson": 0.89, "val/spearman": 0.87}}
    for task, m in glue.items():
        write_run(tmp_path, f"bert-{task}", "B", "softmax", "large", task, m)
    # two seeds on RTE for LION-S: mean of 0.60 and 0.70; the other tasks absent -> partial mean only
    write_run(tmp_path, "s-rte-1", "B", "lion-s", "large", "rte", {"val/acc": 0.60}, seed=19)
    write_run(tmp_path, "s-rte-2", "B", "lion-s", "large", "rte", {"val/acc": 0.70}, seed=8364)
    write_run(tmp_path, "bert-mlm", "B", "softmax", "large", "mlm", {"val/mlm_acc": 0.70}, tput=200)
    write_run(tmp_path, "s-mlm", "B", "lion-s", "large", "mlm", {"val/mlm_acc": 0.6916}, tput=160)
    text = render(tmp_path, "B")
    large = section(text, "### large")
    main = rows(large)
    # GLUE mean by hand, the paper's task scores (MNLI mean of matched and mismatched, QQP mean of F1 and accuracy,
    # MRPC its score, STS-B Spearman): ((84 + 80) / 2 + 90 + (88 + 90) / 2 + 70 + 92 + 89 + 55 + 87) / 8 = 81.75
    assert main["BERT"][1:9] == ["70.00", "69.88", "+0.1", "81.8", "82.95", "-1.2", "x1.00", "x1.00"]
    assert main["LION-S"][1:4] == ["69.16", "69.16", "+0.0"]
    assert main["LION-S"][4] == "partial: 65.0 (1/8 tasks)" and main["LION-S"][6] == "-"
    assert main["LION-S"][7] == "x1.25"
    assert main["LION-D"][1] == "not run"
    paper_part = large[large.index("the paper's scores"):]
    assert "mnli accuracy+mismatched/accuracy" in paper_part and "mrpc f1" in paper_part
    assert "stsb spearman" in paper_part
    per_task = rows(paper_part)
    assert per_task["BERT"][0] == "82.0" and per_task["BERT"][7] == "87.0"  # MNLI m+mm; STS-B: Spearman
    assert per_task["BERT"][2] == "89.0" and per_task["BERT"][5] == "89.0"  # QQP mean of F1, acc; MRPC its score
    assert per_task["LION-S"][3] == "65.0 ± 7.1 (n=2)"
    bench_part = large[large.index("the GLUE benchmark's scores"):]
    assert "mrpc f1+accuracy" in bench_part and "stsb pearson+spearman" in bench_part
    bench = rows(bench_part)
    # the benchmark's: MRPC its glue_score 85, STS-B (89 + 87) / 2; mean (82+90+89+70+92+85+55+88) / 8 = 81.375
    assert bench["BERT"][5] == "85.0" and bench["BERT"][7] == "88.0" and bench["BERT"][8] == "81.4"
    assert rows(section(text, "### base"))["LION-LIT"][1] == "not run"


def test_table_c_paper_marks_and_average(tmp_path):
    accs = {"listops": 0.40, "text": 0.85, "retrieval": 0.80, "image": 0.60, "pathfinder": 0.85, "pathx": 0.95}
    for task, a in accs.items():
        write_run(tmp_path, f"d-{task}", "C", "lion-d", "lra", task, {"test/acc": a}, tput=90)
        write_run(tmp_path, f"t-{task}", "C", "softmax", "lra", task, {"test/acc": a - 0.1}, tput=180)
    write_run(tmp_path, "nt", None, None, None, None, {"test/acc": 0.99})  # no table node: ignored
    text = render(tmp_path, "C")
    acc = rows(section(text, "## Table C. Long Range Arena"))
    # average by hand: (40 + 85 + 80 + 60 + 85 + 95) / 6 = 74.1666
    assert acc["LION-D"][5] == "95.0 (paper† 97.28, -2.3)"
    assert acc["LION-D"][6] == "74.2 (paper† 85.63, -11.5)"
    assert acc["Transformer"][6] == "64.2"
    assert acc["LION-S"][5] == "not run (paper† 97.99, -)"
    assert acc["LION-LIT"][0] == "not run"
    times = rows(text[text.index("Training time relative"):])
    assert times["LION-D"] == ["x2.00"] * 6
    assert "1 finished run(s) without a `table:` node" in text


def test_table_d_from_benchmark_json_and_bad_inputs(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "train_throughput.json").write_text(json.dumps({
        "benchmark": "train_throughput", "device": "cpu", "settings": "s", "results": [
            {"family": "vit", "size": "base", "model": "lion-d", "status": "ok", "throughput": 10.0,
             "unit": "img/s", "relative_time": 1.5}]}))
    (bench / "resolution.json").write_text(json.dumps({
        "benchmark": "resolution", "device": "cpu", "settings": "s", "results": [
            {"resolution": 224, "tokens": 197, "model": "lion-d", "form": "chunk", "status": "ok", "ms": 3.0,
             "peak_mib": 10.0},
            {"resolution": 224, "tokens": 197, "model": "lion-d", "form": "parallel", "status": "ok", "ms": 5.0,
             "peak_mib": 90.0},
            {"resolution": 2048, "tokens": 16385, "model": "softmax", "form": "sdpa", "status": "OOM", "ms": None,
             "peak_mib": None}]}))
    (tmp_path / "runs" / "broken").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / "metrics.json").write_text("{not json")
    text = render(tmp_path, "D")
    d = rows(section(text, "### Training time relative to the softmax twin (same run, same device)"))
    assert d["vit"] == ["base", "lion-d", "ok", "10.0", "img/s", "x1.50", "x1.39"]
    res = section(text, "### Inference time and extra peak memory against resolution")
    assert "| 2048 | 16385 | softmax | sdpa | OOM | - | - |" in res
    assert "| 224 | lion-d | chunk |" in res  # fastest form
    assert "unreadable metrics.json" in text and "broken" in text


def test_empty_directory_marks_everything_missing(tmp_path, capsys):
    text = render(tmp_path)
    for heading in ("## Table A.", "## Table B.", "## Table C.", "## Table D."):
        assert heading in text
    assert "| LION-S♮ | - | not run | 79.9 | - | not run | x1.68 |" in text
    assert "not run: `python scripts/reproduce.py --suite proxy`" in text
    assert make_tables_main(["--runs", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_tables_main([])
