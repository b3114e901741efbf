"""Inference time and extra peak memory of a LION ViT against image resolution, per form, beside the softmax twin.

The paper's memory figure (Table D, claims 3 and 4): the recurrent form's memory stays low as the resolution grows,
where attention that materialises L x L runs out of memory, and the chunk form is the fastest.

    python scripts/bench_resolution.py                                  # CPU-sized default
    python scripts/bench_resolution.py --device cuda --batch 64 --resolutions 224 512 1024 1536 2048 2496
    python scripts/bench_resolution.py --quick                          # tiny smoke run (2 blocks, 32-64 px)

One model per variant (`lion_{variant}_{size}_patch16_224` and `softmax_vit_{size}_patch16_224`), switched between
forms with `set_form` (same weights). Each cell is the median time of a no-grad forward pass after one warm-up call
(a call slower than --slow-s is timed once) and the extra peak memory it allocates beyond the model and the input
(lion.bench). The recurrent form is a Python loop over tokens (lion.ops.recurrent): its time is that of the
reference loop, its memory is the point. Out-of-memory is caught and shown as OOM; a form
that ran out of memory is not tried at larger resolutions; on the CPU a parallel-form call whose L x L score tensors
alone would exceed --max-cpu-gib is skipped rather than risking the kernel's OOM killer. Nothing is estimated into
the table. Writes a markdown table to stdout and `resolution.json` and `resolution.png` to --out-dir (the JSON is
read by scripts/make_tables.py for Table D).
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import textwrap
from contextlib import nullcontext
from pathlib import Path

import torch

import lion  # noqa: F401  (registers the models with timm)
import timm
from lion.bench import markdown_table, peak_memory_mib, time_fn

VARIANTS = {"lit": "lion-lit", "d": "lion-d", "s": "lion-s", "d_ms": "lion-d-ms", "s_ms": "lion-s-ms"}


def is_oom(e: BaseException) -> bool:
    msg = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in msg or "can't allocate memory" in msg \
        or "not enough memory" in msg


def build(name: str, args) -> torch.nn.Module:
    kw = dict(num_classes=1000)
    if args.depth:
        kw["depth"] = args.depth
    if not name.startswith("softmax"):
        kw["chunk_size"] = args.chunk_size
    return timm.create_model(name, **kw).eval().to(args.device)


def measure(model, x, args) -> dict:
    """Median ms and extra peak MiB of one no-grad forward; status 'OOM' when the device runs out of memory."""
    amp = torch.autocast(x.device.type, dtype=getattr(torch, args.dtype)) if args.dtype != "float32" else nullcontext()

    def fn():
        with torch.no_grad(), amp:
            return model(x)
    try:
        first = time_fn(fn, args.device, warmup=0, reps=1)  # warm-up; a slow call (recurrent loop) is timed once
        ms = first if first > 1e3 * args.slow_s else time_fn(fn, args.device, warmup=0, reps=args.reps)
        peak = peak_memory_mib(fn, args.device)
        return dict(status="ok", ms=ms, peak_mib=peak)
    except (RuntimeError, MemoryError) as e:
        if not is_oom(e):
            raise
        return dict(status="OOM", ms=None, peak_mib=None)
    finally:
        gc.collect()
        if x.is_cuda:
            torch.cuda.empty_cache()


def parallel_gib(batch: int, heads: int, tokens: int, scans: int) -> float:
    """Size of the L x L float32 tensors the parallel form holds at once (scores and mask, per scan)."""
    return 2 * scans * batch * heads * tokens * tokens * 4 / 2**30


def run(args) -> list[dict]:
    names = [("softmax", "sdpa", f"softmax_vit_{args.size}_patch16_224")]
    names += [(VARIANTS[v], f, f"lion_{v}_{args.size}_patch16_224") for v in args.variants for f in args.forms]
    models, results, failed = {}, [], set()
    for res in args.resolutions:
        x = torch.randn(args.batch, 3, res, res, device=args.device)
        tokens = (res // 16) ** 2 + 1
        for model_name, form, timm_name in names:
            row = dict(resolution=res, tokens=tokens, model=model_name, form=form)
            if timm_name not in models:
                models[timm_name] = build(timm_name, args)
            model = models[timm_name]
            if (model_name, form) in failed:
                results.append({**row, "status": "skipped (OOM at a smaller size)", "ms": None, "peak_mib": None})
                continue
            if form != "sdpa":
                model.set_form(form, args.chunk_size)
                heads = model.blocks[0].attn.num_heads
                scans = 2 if model_name.endswith("-ms") else 1
                need = parallel_gib(args.batch, heads, tokens, scans)
                if form == "parallel" and args.device == "cpu" and need > args.max_cpu_gib:
                    results.append({**row, "status": f"skipped (needs ~{need:.0f} GiB > --max-cpu-gib)", "ms": None,
                                    "peak_mib": None})
                    continue
            m = measure(model, x, args)
            if m["status"] == "OOM":
                failed.add((model_name, form))
            results.append({**row, **m})
            print(f"  {res:5d} px  {model_name:10s} {form:9s} {m['status']:4s} "
                  f"{m['ms'] if m['ms'] is None else round(m['ms'], 1)} ms  "
                  f"{m['peak_mib'] if m['peak_mib'] is None else round(m['peak_mib'])} MiB", flush=True)
        del x
    return results


def plot(results: list[dict], path: Path, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    series = sorted({(r["model"], r["form"]) for r in results})
    models = sorted({m for m, _ in series} - {"softmax"})
    colours = {m: f"C{i}" for i, m in enumerate(models)} | {"softmax": "k"}
    dashes = {"parallel": "-", "chunk": "--", "recurrent": ":", "sdpa": "-"}
    for ax, key, label in ((axes[0], "ms", "inference time (ms)"), (axes[1], "peak_mib", "extra peak memory (MiB)")):
        for model, form in series:
            pts = [r for r in results if (r["model"], r["form"]) == (model, form)]
            ok = [(r["resolution"], r[key]) for r in pts if r["status"] == "ok" and r[key] is not None]
            ax.plot([p[0] for p in ok], [max(p[1], 1e-3) for p in ok], dashes[form], marker="o", markersize=4,
                    color=colours[model], label=f"{model} {form}")
            oom = [r["resolution"] for r in pts if r["status"] == "OOM"]
            if oom:
                top = max([r[key] for r in results if r[key] is not None], default=1.0)
                ax.plot(oom, [top * 1.5] * len(oom), "x", color=colours[model], markersize=9)
        ax.set_xlabel("image resolution (px)")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(textwrap.fill(title + "   (x = out of memory)", 150), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny", choices=["tiny", "small", "base"])
    p.add_argument("--variants", nargs="+", default=["lit", "d", "s"], choices=list(VARIANTS))
    p.add_argument("--forms", nargs="+", default=["parallel", "chunk", "recurrent"],
                   choices=["parallel", "chunk", "recurrent"])
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--resolutions", type=int, nargs="+", default=[224, 448, 896])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--depth", type=int, default=0, help="override the number of blocks (0: the model's 12)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="autocast dtype (default: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--reps", type=int, default=3, help="timed calls (median)")
    p.add_argument("--slow-s", type=float, default=5.0,
                   help="a call slower than this (s) is timed once: its warm-up call is the measurement")
    p.add_argument("--max-cpu-gib", type=float, default=8.0, help="CPU only: skip parallel-form calls above this")
    p.add_argument("--out-dir", default="logs/bench", help="where resolution.json and resolution.png go")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 blocks, 32 and 64 px, batch 2, one repetition")
    args = p.parse_args(argv)
    if args.quick:
        args.resolutions, args.batch, args.depth, args.reps = [32, 64], 2, 2, 1
    for r in args.resolutions:
        if r < 16 or r % 16:
            p.error(f"--resolutions: {r} is not a positive multiple of the patch size 16")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; use --device cpu")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    settings = (f"ViT-{args.size}{f' depth {args.depth}' if args.depth else ''}, batch {args.batch}, {args.dtype}, "
                f"chunk {args.chunk_size}, torch {torch.__version__}")
    print(f"# Inference vs resolution: {device_name}; {settings}")
    results = run(args)
    rows = [[r["resolution"], r["tokens"], r["model"], r["form"], r["status"], r["ms"], r["peak_mib"]] for r in results]
    print()
    print(markdown_table(["px", "tokens", "model", "form", "status", "time (ms)", "extra peak (MiB)"], rows))

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blob = dict(benchmark="resolution", device=device_name, settings=settings, results=results)
    (out / "resolution.json").write_text(json.dumps(blob, indent=1))
    plot(results, out / "resolution.png", f"{device_name}; {settings}")
    print(f"\nwrote {out / 'resolution.json'} and {out / 'resolution.png'}")
    return results


if __name__ == "__main__":
    main()
