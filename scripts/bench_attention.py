"""Benchmark the fused LION kernels against SDPA, the PyTorch chunk path and flash-linear-attention's two-pass
composition, at the anchor shapes (ANCHOR_SHAPES below: B=8 or 256, H=12, D=64, L from 197 to 16384), and report
the targets K1-K5 (and N1 with --accuracy).

    python scripts/bench_attention.py --out results/bench_attention.json       # GPU: anchor shapes, bf16
    python scripts/bench_attention.py --quick                                  # CPU smoke run (tiny shapes)
    python scripts/bench_attention.py --sweep --shapes 8,12,4096,64            # launch-setting sweep for LION-S
    python scripts/bench_attention.py --accuracy                               # N1: bf16 error vs float64
    python scripts/bench_attention.py --crossover-only                         # short L: tile vs chunk kernels

Each cell is a median over --reps calls after --warmup calls (CUDA events on a GPU): "fwd" is an inference forward
(no_grad), "fwd+bwd" a forward and a backward with a fixed output gradient, "peak MiB" the extra memory allocated by
one fwd+bwd call. Ratios are against SDPA (default backend) measured in the same run. The crossover table (on by
default; --no-crossover skips it) times the two Triton kernel families at short L, each forced, next to the
choice that TUNING["short_kernel"] = "auto" makes and the time of the auto path. A method that cannot run
prints why ("OOM", "unsupported: ...", "unmeasured: fla not installed"); nothing is estimated. On a CPU the Triton
kernels run in the interpreter: those times are smoke-test numbers, not kernel speeds.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

if not torch.cuda.is_available():  # the kernels run in Triton's interpreter on CPU tensors; set before importing
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch.nn.functional as F  # noqa: E402

from lion.bench import markdown_table, peak_memory_mib  # noqa: E402
from lion.ops import lion_attention  # noqa: E402

try:
    from lion.ops.triton import TUNING, lion_attention_triton
    from lion.ops.triton import ops as triton_ops
    TRITON_ERROR = None
except Exception as e:  # noqa: BLE001 - report instead of failing the whole benchmark
    lion_attention_triton, TUNING, triton_ops, TRITON_ERROR = None, {}, None, f"{type(e).__name__}: {e}"

ANCHOR_SHAPES = [(8, 12, 197, 64), (8, 12, 1024, 64), (8, 12, 4096, 64), (8, 12, 16384, 64),
                 (256, 12, 197, 64), (256, 12, 128, 64)]
QUICK_SHAPES = [(1, 2, 40, 16), (2, 2, 70, 16)]
CROSSOVER_LENGTHS = (64, 128, 197, 256, 512, 1024)
CROSSOVER_BATCHES = (8, 256)
QUICK_CROSSOVER = [(1, 2, 20, 16)]
VARIANTS = {"LIT": None, "D": "head", "S": "token"}
SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")
# (id, what, shape, method, metric, reference method, target, stretch)
TARGETS = [("K1", "LION-S fwd+bwd vs SDPA", (256, 12, 197, 64), "LION-S triton", "fwd+bwd", "SDPA default", 1.0, 0.8),
           ("K2", "LION-S fwd+bwd vs SDPA", (8, 12, 4096, 64), "LION-S triton", "fwd+bwd", "SDPA default", 0.2, 0.1),
           ("K3", "LION-S fwd+bwd vs SDPA", (8, 12, 16384, 64), "LION-S triton", "fwd+bwd", "SDPA default", 0.05,
            0.03),
           ("K4", "LION-S fwd vs fla 2-pass", (8, 12, 4096, 64), "LION-S triton", "fwd", "fla 2-pass S", 0.75, 0.5),
           ("K5", "peak memory fwd+bwd vs SDPA", (8, 12, 4096, 64), "LION-S triton", "peak", "SDPA default", 1.25,
            1.0)]


# ----------------------------------------------------------------------------------------------------- inputs

def make_inputs(B, H, L, D, decay, device, dtype, seed=0, low=None):
    """q, k positive (as after LION's feature maps), v normal, log-decays logsigmoid(normal) (or U[low, 0])."""
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(B, H, L, D, generator=g) / D ** 0.5
    k = torch.rand(B, H, L, D, generator=g)
    v = torch.randn(B, H, L, D, generator=g)
    shape = {None: None, "head": (H,), "token": (B, H, L)}[decay]
    a = None
    if shape is not None:
        a = torch.rand(*shape, generator=g) * low if low is not None else F.logsigmoid(
            torch.randn(*shape, generator=g) + 3)
    return [None if t is None else t.to(device=device, dtype=dtype if t is not a else torch.float32)
            .requires_grad_() for t in (q, k, v, a)]


# ---------------------------------------------------------------------------------------------------- methods

def sdpa(backend=None):
    def fn(q, k, v, a):
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v)
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(getattr(SDPBackend, backend)):
            return F.scaled_dot_product_attention(q, k, v)
    return fn


def lion_triton(chunk_size):
    def fn(q, k, v, a):
        if lion_attention_triton is None:
            raise RuntimeError(f"unmeasured: Triton kernels unavailable ({TRITON_ERROR})")
        return lion_attention_triton(q, k, v, a, chunk_size=chunk_size)
    return fn


def lion_torch(chunk_size):
    def fn(q, k, v, a):
        return lion_attention(q, k, v, a, form="chunk", backend="torch", chunk_size=chunk_size)
    return fn


def fla_two_pass(q, k, v, a):
    """Bidirectional LION-S (unnormalised) from two causal flash-linear-attention passes minus the diagonal."""
    if not q.is_cuda:  # fla's kernels need a GPU driver ("0 active drivers" on a CPU machine, even installed)
        raise RuntimeError("unmeasured: fla needs a CUDA device")
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"unmeasured: fla not importable ({type(e).__name__})") from None
    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # fla layout [B, L, H, D]
    g = a.transpose(1, 2).contiguous()                                 # [B, L, H]
    y_fwd, _ = chunk_simple_gla(qt, kt, vt, g=g, scale=1.0)
    # reversed sequence: position p reads the decay of original token L - p (the first one never enters)
    g_rev = torch.cat([torch.zeros_like(g[:, :1]), g.flip(1)[:, :-1]], dim=1)
    y_bwd, _ = chunk_simple_gla(qt.flip(1), kt.flip(1), vt.flip(1), g=g_rev, scale=1.0)
    y = y_fwd + y_bwd.flip(1) - (qt * kt).sum(-1, keepdim=True) * vt
    return y.transpose(1, 2)


def methods(args, device):
    out = [("SDPA default", None, sdpa())]
    out += [(f"SDPA {b.split('_')[0].lower()}", None, sdpa(b)) for b in SDPA_BACKENDS]
    out += [(f"LION-{n} triton", d, lion_triton(args.chunk)) for n, d in VARIANTS.items()]
    out += [(f"LION-{n} torch chunk", d, lion_torch(args.torch_chunk)) for n, d in VARIANTS.items()]
    out += [("fla 2-pass S", "token", fla_two_pass)]
    if args.methods:
        keep = [m.strip().lower() for m in args.methods.split(",")]
        out = [m for m in out if any(m[0].lower().startswith(k) for k in keep) or m[0] == "SDPA default"]
    return out


# --------------------------------------------------------------------------------------------------- measuring

def timed_ms(fn, device, warmup, reps):
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def failure(e: BaseException) -> str:
    """A short label for a cell that could not be measured."""
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return "OOM"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if msg.startswith("unmeasured"):
        return msg[:60]
    if "No viable backend" in msg or "No available kernel" in msg:
        return "unsupported here"
    return f"failed: {type(e).__name__}: {msg[:40]}"


def measure(fn, inputs, device, args):
    """{"fwd": ms, "fwd+bwd": ms, "peak": MiB} (a string instead of a number where the call failed)."""
    leaves = [t for t in inputs if t is not None]
    res = {}
    try:
        with torch.no_grad():
            y = fn(*inputs)
        grad_out = torch.randn_like(y)
        del y

        def fwd():
            with torch.no_grad():
                return fn(*inputs)

        def fwd_bwd():
            return torch.autograd.grad(fn(*inputs), leaves, grad_out)

        res["fwd"] = timed_ms(fwd, device, args.warmup, args.reps)
        res["fwd+bwd"] = timed_ms(fwd_bwd, device, args.warmup, args.reps)
        res["peak"] = peak_memory_mib(fwd_bwd, device)
    except Exception as e:  # noqa: BLE001 - every failure becomes a labelled cell
        for key in ("fwd", "fwd+bwd", "peak"):
            res.setdefault(key, failure(e))
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return res


def check_error(fn, inputs, ref_fn):
    """Largest relative (Frobenius) error of output and gradients of fn against ref_fn on the same inputs."""
    def outputs(f):
        leaves = [t for t in inputs if t is not None]
        y = f(*inputs)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(y.device)
        return [y.float()] + [g.float() for g in torch.autograd.grad((y.float() * w).sum(), leaves)]
    try:
        got, want = outputs(fn), outputs(ref_fn)
        return max(((x - y).norm() / y.norm().clamp_min(1e-30)).item() for x, y in zip(got, want))
    except Exception as e:  # noqa: BLE001
        return failure(e)


def ratio(x, y):
    return x / y if isinstance(x, float) and isinstance(y, float) and y > 0 else None


# ------------------------------------------------------------------------------------------------------ parts

def run_table(args, device, dtype, shapes):
    rows = []
    for shape in shapes:
        B, H, L, D = shape
        cache = {}
        base = None
        for name, decay, fn in methods(args, device):
            if decay not in cache:
                cache[decay] = make_inputs(B, H, L, D, decay, device, dtype)
            inputs = cache[decay]
            res = measure(fn, inputs, device, args)
            if name == "SDPA default":
                base = res
            err = None
            if args.check and "triton" in name:  # the same inputs through the PyTorch chunk path (fp32 inside)
                err = check_error(fn, inputs, lion_torch(64))
            elif args.check and name.startswith("fla") and lion_attention_triton is not None:
                err = check_error(fn, inputs, lambda q, k, v, a: lion_attention_triton(q, k, v, a, normalize=False))
            rows.append({"shape": list(shape), "method": name, **res, "check": err,
                         "fwd/SDPA": ratio(res["fwd"], base["fwd"]),
                         "fwd+bwd/SDPA": ratio(res["fwd+bwd"], base["fwd+bwd"]),
                         "peak/SDPA": ratio(res["peak"], base["peak"])})
            print(f"  {shape} {name}: {res}", file=sys.stderr, flush=True)
    return rows


def targets(rows):
    def cell(shape, method, metric):
        return next((r[metric] for r in rows if tuple(r["shape"]) == shape and r["method"] == method), None)
    out = []
    for tid, what, shape, method, metric, ref, target, stretch in TARGETS:
        r = ratio(cell(shape, method, metric), cell(shape, ref, metric))
        verdict = None if r is None else ("stretch met" if r <= stretch else "met" if r <= target else "missed")
        out.append({"id": tid, "what": what, "shape": list(shape), "ratio": r, "target": target,
                    "stretch": stretch, "verdict": verdict})
    return out


@contextlib.contextmanager
def tuning(**tune):
    """TUNING changed inside the block (forward and backward both run inside it)."""
    old = dict(TUNING)
    TUNING.update(tune)
    try:
        yield
    finally:
        TUNING.clear()
        TUNING.update(old)


def auto_choices(inputs, chunk):
    """The kernels "auto" chose for this shape after one fwd+bwd ((fwd, bwd); "-" where none was cached, e.g. in
    the interpreter, which never times and takes the chunk kernels)."""
    q, _, v, a = inputs
    out = []
    for direction in ("fwd", "bwd"):
        key = triton_ops.kernel_key(direction, q, v, None if a is None else a.detach(), True, False, chunk)
        out.append(triton_ops._CHOICES.get(key, "-"))
    return tuple(out)


def run_crossover(args, device, dtype, shapes):
    """Short L: the tile and the chunk kernels, each forced, and the "auto" path (LION-S and LION-D)."""
    rows = []
    if lion_attention_triton is None:
        return rows
    for shape in shapes:
        B, H, L, D = shape
        for variant in ("S", "D"):
            try:
                inputs = make_inputs(B, H, L, D, VARIANTS[variant], device, dtype)
            except Exception as e:  # noqa: BLE001 - e.g. OOM at B = 256, L = 1024
                rows.append({"shape": list(shape), "variant": f"LION-{variant}", "error": failure(e)})
                continue
            res = {}
            for kind in ("tile", "chunk", "auto"):
                with tuning(short_kernel=kind):
                    res[kind] = measure(lion_triton(args.chunk), inputs, device, args)
            err = None
            if args.check:
                with tuning(short_kernel="tile"):
                    err = check_error(lion_triton(args.chunk), inputs, lion_torch(64))
            choice = auto_choices(inputs, args.chunk)
            rows.append({"shape": list(shape), "variant": f"LION-{variant}",
                         **{f"{k} {m}": res[k][m] for k in res for m in ("fwd", "fwd+bwd", "peak")},
                         "tile/chunk fwd": ratio(res["tile"]["fwd"], res["chunk"]["fwd"]),
                         "tile/chunk fwd+bwd": ratio(res["tile"]["fwd+bwd"], res["chunk"]["fwd+bwd"]),
                         "auto fwd choice": choice[0], "auto bwd choice": choice[1], "tile check": err})
            del inputs
            print(f"  crossover {shape} LION-{variant}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def crossover_table(rows):
    headers = ["B, H, L, D", "variant", "tile fwd ms", "chunk fwd ms", "tile/chunk fwd", "tile fwd+bwd ms",
               "chunk fwd+bwd ms", "tile/chunk fwd+bwd", "auto: fwd, bwd kernel", "auto fwd ms",
               "auto fwd+bwd ms", "tile check"]
    out = []
    for r in rows:
        shape = " ".join(map(str, r["shape"]))
        if "error" in r:
            out.append([shape, r["variant"], r["error"]] + [""] * (len(headers) - 3))
            continue
        out.append([shape, r["variant"], r["tile fwd"], r["chunk fwd"], r["tile/chunk fwd"], r["tile fwd+bwd"],
                    r["chunk fwd+bwd"], r["tile/chunk fwd+bwd"], f"{r['auto fwd choice']}, {r['auto bwd choice']}",
                    r["auto fwd"], r["auto fwd+bwd"], r["tile check"]])
    return markdown_table(headers, out)


def run_sweep(args, device, dtype, shapes):
    """One launch setting at a time around the defaults, for LION-S: which settings to make the defaults."""
    options = [("defaults", {}, args.chunk)] + [(f"chunk={c}", {}, c) for c in (32, 64, 128) if c != args.chunk]
    options += [(f"fwd_block_v={b}", {"fwd_block_v": b}, args.chunk) for b in (32, 64)]
    options += [(f"fwd_warps={w}", {"fwd_warps": w}, args.chunk) for w in (4, 8)]
    options += [(f"bwd_chunk={c}", {"bwd_chunk": c}, args.chunk) for c in (16, 32, 64)]
    options += [(f"bwd_warps={w}", {"bwd_warps": w}, args.chunk) for w in (4, 8)]
    options += [("split=True", {"split": True}, args.chunk)]
    options += [("tile", {"short_kernel": "tile"}, args.chunk)]
    options += [(f"tile fwd {bm}x{bn}", {"short_kernel": "tile", "tile_fwd_blocks": (bm, bn)}, args.chunk)
                for bm, bn in ((32, 32), (128, 64), (128, 128))]
    options += [(f"tile bwd {bm}x{bn}", {"short_kernel": "tile", "tile_bwd_blocks": (bm, bn)}, args.chunk)
                for bm, bn in ((32, 32), (64, 64), (128, 32))]
    options += [(f"tile warps={w}", {"short_kernel": "tile", "tile_fwd_warps": w, "tile_bwd_warps": w}, args.chunk)
                for w in (4, 8)]
    rows = []
    for shape in shapes:
        inputs = make_inputs(*shape, "token", device, dtype)
        for name, tune, chunk in options:
            old = dict(TUNING)
            TUNING.update(tune)
            try:
                res = measure(lion_triton(chunk), inputs, device, args)
                err = check_error(lion_triton(chunk), inputs, lion_torch(64)) if args.check else None
            finally:
                TUNING.clear()
                TUNING.update(old)
            rows.append({"shape": list(shape), "setting": name, **res, "check": err})
            print(f"  sweep {shape} {name}: {res}", file=sys.stderr, flush=True)
    return rows


def run_accuracy(args, device, lengths):
    """N1: LION-S in bf16 with log-decays in [-20, 0] against float64, next to SDPA in bf16 against float64."""
    rows = []
    for L in lengths:
        B, H, D = 1, 4, 64
        inputs64 = make_inputs(B, H, L, D, "token", device, torch.float64, seed=5, low=-20.0)
        inputs16 = [None if t is None else t.detach().to(torch.bfloat16 if t.dim() == 4 else torch.float32)
                    .requires_grad_() for t in inputs64]
        inputs64 = [None if t is None else t.detach().double().requires_grad_() for t in inputs16]  # same values

        def errs(fn16, fn64, n_inputs):
            leaves16, leaves64 = inputs16[:n_inputs], inputs64[:n_inputs]
            try:
                y16, y64 = fn16(*inputs16), fn64(*inputs64)
                w = torch.randn(y64.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(device)
                g16 = torch.autograd.grad((y16.double() * w).sum(), leaves16)
                g64 = torch.autograd.grad((y64 * w).sum(), leaves64)
                return [((x.double() - y).norm() / y.norm()).item() for x, y in zip([y16, *g16], [y64, *g64])]
            except Exception as e:  # noqa: BLE001
                return failure(e)
        lion = errs(lion_triton(args.chunk), lion_torch(64), 4)
        soft = errs(sdpa(), sdpa(), 3)
        worst = ratio(max(lion), max(soft)) if isinstance(lion, list) and isinstance(soft, list) else None
        rows.append({"L": L, "LION-S bf16 err (y, dq, dk, dv, da)": lion, "SDPA bf16 err (y, dq, dk, dv)": soft,
                     "max LION / max SDPA": worst})
        print(f"  accuracy L={L}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def environment(device, dtype):
    env = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
           "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""), "device": str(device)}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["gpu"] = None
        env["note"] = "CPU: Triton kernels run in the interpreter; times are smoke-test numbers"
    try:
        import fla
        env["fla"] = getattr(fla, "__version__", "unknown")
    except Exception:  # noqa: BLE001
        env["fla"] = None
    return env


def fmt_err(x):
    if isinstance(x, list):
        return ", ".join(f"{e:.2e}" for e in x)
    return x


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes, few repetitions (CPU smoke test)")
    p.add_argument("--shapes", default=None, help='B,H,L,D;B,H,L,D;... (default: ANCHOR_SHAPES)')
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--chunk", type=int, default=64, help="chunk_size of the Triton kernels")
    p.add_argument("--torch-chunk", type=int, default=64, help="chunk_size of the PyTorch chunk path")
    p.add_argument("--methods", default=None,
                   help="comma-separated name prefixes, e.g. 'LION-S,fla' (SDPA default always runs)")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the error column (Triton vs the PyTorch chunk path on the same inputs)")
    p.add_argument("--sweep", action="store_true", help="also sweep the kernels' launch settings for LION-S")
    p.add_argument("--accuracy", action="store_true", help="also measure N1 (bf16 error vs float64, vs SDPA)")
    p.add_argument("--no-crossover", dest="crossover", action="store_false",
                   help="skip the short-L table of the tile vs the chunk kernels")
    p.add_argument("--crossover-only", action="store_true", help="only the short-L tile vs chunk table")
    p.add_argument("--crossover-lengths", default=None, help="comma-separated L (default 64,128,197,256,512,1024)")
    p.add_argument("--crossover-batches", default=None, help="comma-separated B (default 8,256); H=12, D=64")
    p.add_argument("--out", default=None, help="write everything as JSON here")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    if args.shapes:
        shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
    elif args.quick or device.type == "cpu":
        shapes = QUICK_SHAPES
    else:
        shapes = ANCHOR_SHAPES
    if args.quick:
        args.reps, args.warmup = min(args.reps, 2), min(args.warmup, 1)
    env = environment(device, dtype)
    print(f"# LION attention benchmark\n\n{json.dumps(env)}\n")

    result = {"env": env, "args": vars(args)}
    if args.crossover or args.crossover_only:
        if args.quick or device.type == "cpu":
            cross_shapes = QUICK_CROSSOVER
        else:
            lengths = [int(x) for x in args.crossover_lengths.split(",")] if args.crossover_lengths else \
                CROSSOVER_LENGTHS
            batches = [int(x) for x in args.crossover_batches.split(",")] if args.crossover_batches else \
                CROSSOVER_BATCHES
            cross_shapes = [(B, 12, L, 64) for B in batches for L in lengths]
        result["crossover"] = run_crossover(args, device, dtype, cross_shapes)
        print("## Short L: parallel-tile vs chunk kernels (each forced) and the auto choice\n")
        print(crossover_table(result["crossover"]))
        print("\n'tile/chunk' < 1: the tile kernel is faster. 'auto': the kernels TUNING['short_kernel'] = 'auto' "
              "chose for the forward and the backward ('-': nothing timed, e.g. the interpreter) and the time of "
              "that path. 'tile check': tile output and gradients vs the PyTorch chunk path.\n")
    if args.crossover_only:
        return finish(result, args)

    rows = run_table(args, device, dtype, shapes)
    headers = ["B, H, L, D", "method", "fwd ms", "fwd+bwd ms", "peak MiB", "fwd / SDPA", "fwd+bwd / SDPA",
               "peak / SDPA", "max rel err (check)"]
    def once(r, key):  # a failure label is printed once per row
        return "" if isinstance(r[key], str) and r[key] == r["fwd"] else r[key]
    print(markdown_table(headers, [[" ".join(map(str, r["shape"])), r["method"], r["fwd"], once(r, "fwd+bwd"),
                                    once(r, "peak"), r["fwd/SDPA"], r["fwd+bwd/SDPA"], r["peak/SDPA"],
                                    once(r, "check")] for r in rows]))
    print("\n'check': LION Triton rows against the PyTorch chunk path (fp32 inside) on the same inputs, output and "
          "gradients; the fla row against the unnormalised Triton kernel.\n")
    tg = targets(rows)
    print(markdown_table(["id", "measure", "B, H, L, D", "ratio", "target", "stretch", "verdict"],
                         [[t["id"], t["what"], " ".join(map(str, t["shape"])), t["ratio"], t["target"], t["stretch"],
                           t["verdict"]] for t in tg]))
    result.update(rows=rows, targets=tg)

    if args.sweep:
        sweep_shapes = shapes if args.shapes or args.quick or device.type == "cpu" else \
            [(256, 12, 197, 64), (8, 12, 4096, 64), (8, 12, 16384, 64)]
        result["sweep"] = run_sweep(args, device, dtype, sweep_shapes)
        print("\n## Launch settings, LION-S (one change at a time from the defaults)\n")
        print(markdown_table(["B, H, L, D", "setting", "fwd ms", "fwd+bwd ms", "peak MiB", "check"],
                             [[" ".join(map(str, r["shape"])), r["setting"], r["fwd"], r["fwd+bwd"], r["peak"],
                               r["check"]] for r in result["sweep"]]))
    if args.accuracy:
        lengths = [s[2] for s in shapes] if (args.quick or device.type == "cpu") else [197, 1024, 4096, 16384]
        result["accuracy"] = run_accuracy(args, device, sorted(set(lengths)))
        print("\n## N1: bf16 vs float64, log-decays in [-20, 0], B=1 H=4 D=64 (relative Frobenius errors)\n")
        print(markdown_table(["L", "LION-S (y, dq, dk, dv, da)", "SDPA (y, dq, dk, dv)", "max LION / max SDPA"],
                             [[r["L"], fmt_err(r["LION-S bf16 err (y, dq, dk, dv, da)"]),
                               fmt_err(r["SDPA bf16 err (y, dq, dk, dv)"]), r["max LION / max SDPA"]]
                              for r in result["accuracy"]]))
    return finish(result, args)


def finish(result, args):
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
