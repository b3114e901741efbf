"""scripts/bench_attention.py runs on the CPU in --quick mode (main table and the short-L tile vs chunk table) and
reports what it could not measure."""
import importlib.util
import json
import os

import pytest

pytest.importorskip("triton")


@pytest.mark.slow  # a benchmark's smoke run under the Triton interpreter (~13 s)
def test_bench_attention_quick(tmp_path, capsys):
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "bench_attention.py")
    spec = importlib.util.spec_from_file_location("bench_attention", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--shapes", "1,2,20,16", "--methods", "LION-S triton,fla", "--reps", "1",
                "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"SDPA default", "LION-S triton", "fla 2-pass S"}
    for name in ("SDPA default", "LION-S triton"):
        assert all(isinstance(rows[name][k], float) and rows[name][k] > 0 for k in ("fwd", "fwd+bwd"))
    assert rows["SDPA default"]["fwd/SDPA"] == 1.0
    assert isinstance(rows["LION-S triton"]["check"], float) and rows["LION-S triton"]["check"] < 3e-2
    if isinstance(rows["fla 2-pass S"]["fwd"], str):  # fla absent: labelled, never estimated
        assert rows["fla 2-pass S"]["fwd"].startswith("unmeasured")
    assert "| K1 |" in printed and "unmeasured" in printed  # anchor shapes were not run: targets stay unmeasured
    assert [t["verdict"] for t in result["targets"]] == [None] * 5
    # the short-L table: both kernel families timed (each forced), their ratio, the auto path and its choice
    cross = {r["variant"]: r for r in result["crossover"]}
    assert set(cross) == {"LION-S", "LION-D"}
    for r in cross.values():
        for k in ("tile fwd", "chunk fwd", "tile fwd+bwd", "chunk fwd+bwd", "auto fwd", "auto fwd+bwd"):
            assert isinstance(r[k], float) and r[k] > 0, (k, r[k])
        assert r["tile/chunk fwd"] == r["tile fwd"] / r["chunk fwd"]
        assert r["tile check"] < 3e-2
        choices = {"-"} if os.environ.get("TRITON_INTERPRET") == "1" else {"tile", "chunk"}
        assert r["auto fwd choice"] in choices and r["auto bwd choice"] in choices
    assert "parallel-tile vs chunk" in printed


def test_installed_fla_without_cuda_is_skipped_not_failed(monkeypatch):
    """fla installed on a CPU machine: its kernels would fail with '0 active drivers'; the row is labelled
    unmeasured before fla is called."""
    import sys
    import types

    import torch

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "bench_attention.py")
    spec = importlib.util.spec_from_file_location("bench_attention_fla", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def chunk_simple_gla(*args, **kwargs):
        raise RuntimeError("0 active drivers ([]). There should only be one.")

    fake = types.ModuleType("fla.ops.simple_gla")
    fake.chunk_simple_gla = chunk_simple_gla
    for name in ("fla", "fla.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "fla.ops.simple_gla", fake)
    q = torch.rand(1, 2, 8, 4)
    with pytest.raises(RuntimeError, match="unmeasured: fla needs a CUDA device"):
        bench.fla_two_pass(q, q, q, -torch.rand(1, 2, 8))
