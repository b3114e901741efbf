"""Benchmark the LION core's PyTorch forms against each other and against SDPA, on the current device.

    python scripts/bench_core.py                       # CPU default: B=1 H=2 D=64, L in 256 1024 4096
    python scripts/bench_core.py --lengths 197 4096 --batch 8 --heads 12 --device cuda --dtype bfloat16
    python scripts/bench_core.py --quick               # tiny smoke run

Prints one markdown table per mode (fwd: inference under no_grad; fwd+bwd: training) with time, extra peak memory,
and ratios against the parallel form and against torch's scaled_dot_product_attention measured in the same run.
Forms that cannot run (the parallel form beyond --max-parallel-len) are shown as skipped, never estimated.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

# torch and lion are imported after the arguments are parsed, so --help answers at once

DECAYS = {"lit": None, "d": "head", "s": "token"}


def make(B, H, L, D, decay, device, dtype, grad):
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    t = lambda *s: torch.rand(*s, generator=g).to(device=device, dtype=dtype).requires_grad_(grad)  # noqa: E731
    q, k, v = t(B, H, L, D), t(B, H, L, D), t(B, H, L, D)
    a = None
    if decay == "head":
        a = (-torch.rand(H, generator=g)).to(device=device, dtype=dtype).requires_grad_(grad)
    elif decay == "token":
        a = (-torch.rand(B, H, L, generator=g)).to(device=device, dtype=dtype).requires_grad_(grad)
    return q, k, v, a


def case_fn(kind, inputs, chunk_size, train):
    import torch
    import torch.nn.functional as F

    from lion.ops import lion_attention

    q, k, v, a = inputs
    if kind == "sdpa":
        call = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    elif kind == "compiled":  # the same lion_attention call (form auto), traced and compiled by torch.compile
        f = torch.compile(lambda q, k, v, a: lion_attention(q, k, v, a, form="auto", chunk_size=chunk_size,
                                                            backend="torch"), dynamic=False)
        call = lambda: f(q, k, v, a)  # noqa: E731
    else:
        call = lambda: lion_attention(q, k, v, a, form=kind, chunk_size=chunk_size, backend="torch")  # noqa: E731
    if not train:
        def fn():
            with torch.no_grad():
                return call()
        return fn

    def fn_train():
        y = call()
        y.float().sum().backward()
        for t in (q, k, v, a):
            if t is not None:
                t.grad = None
        return None
    return fn_train


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--variant", choices=list(DECAYS), default="s")
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--group-tokens", type=int, default=0,
                   help="tokens per group of chunks of the PyTorch chunk form (0: lion.ops.chunk.GROUP_TOKENS)")
    p.add_argument("--forms", nargs="+", default=["parallel", "chunk", "recurrent"],
                   choices=["auto", "parallel", "chunk", "recurrent", "compiled"],
                   help="compiled: form auto under torch.compile (inductor; compile time is spent in the warm-up "
                        "and printed, not timed)")
    p.add_argument("--max-parallel-len", type=int, default=8192, help="skip the parallel form beyond this L")
    p.add_argument("--max-recurrent-len", type=int, default=16384)
    p.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--reps", type=int, default=1, help="timed calls per case per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the cases of one L")
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    p.add_argument("--quick", action="store_true", help="tiny shapes, one repetition (smoke test)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    import torch

    from lion.bench import markdown_table, peak_memory_mib, time_fn
    from lion.ops import chunk

    if args.group_tokens:
        chunk.GROUP_TOKENS = args.group_tokens

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        args.lengths, args.dim, args.reps, args.rounds = [64, 256], 16, 1, 1
    dtype = getattr(torch, args.dtype)
    print(f"device={args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, dtype {args.dtype}, B={args.batch} H={args.heads} D={args.dim} "
          f"LION-{args.variant.upper()} C={args.chunk_size}, chunk-form groups of {getattr(chunk, 'GROUP_TOKENS', '-')} tokens")
    results = []
    for mode in args.modes:
        train = mode == "fwd+bwd"
        rows = []
        for L in args.lengths:
            # every case of this L is built, warmed up and measured for memory first, then timed in interleaved
            # rounds (one timing of each case per round), so that drift in clock speed or load hits all alike
            cases = {}
            for kind in ["sdpa"] + args.forms:
                limit = {"parallel": args.max_parallel_len, "recurrent": args.max_recurrent_len}.get(kind, 1 << 30)
                if L > limit:
                    cases[kind] = None
                    continue
                inputs = make(args.batch, args.heads, L, args.dim, DECAYS[args.variant], args.device, dtype, train)
                fn = case_fn(kind, inputs, args.chunk_size, train)
                t0 = time.perf_counter()
                fn()  # warm-up (and compilation)
                if kind == "compiled":
                    print(f"  compiled L={L} {mode}: first call {time.perf_counter() - t0:.1f} s", flush=True)
                cases[kind] = dict(fn=fn, times=[], mem=peak_memory_mib(fn, args.device))
            for _ in range(args.rounds):
                for c in cases.values():
                    if c is not None:
                        c["times"].append(time_fn(c["fn"], args.device, warmup=0, reps=args.reps))
            measured = {kind: (None, None) if c is None else (statistics.median(c["times"]), c["mem"])
                        for kind, c in cases.items()}
            for kind, (ms, mem) in measured.items():
                if ms is not None:
                    results.append(dict(mode=mode, L=L, kind=kind, ms=ms, peak_mib=mem))
            sd_ms, sd_mem = measured["sdpa"]
            par_ms, par_mem = measured.get("parallel", (None, None))
            for kind, (ms, mem) in measured.items():
                ratio = lambda x, y: None if x is None or not y else x / y  # noqa: E731
                rows.append([L, kind, ms, mem, ratio(ms, par_ms), ratio(mem, par_mem), ratio(ms, sd_ms),
                             ratio(mem, sd_mem)])
            del cases
        print(f"\n### {mode}\n")
        print(markdown_table(["L", "form", "ms", "peak MiB", "time / parallel", "mem / parallel", "time / SDPA",
                              "mem / SDPA"], rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results), f, indent=1)


if __name__ == "__main__":
    main()
