"""Training throughput of each LION model relative to its softmax twin, measured in the same run (the paper's
"Train. time" column of Tables A and B).

    python scripts/bench_train_throughput.py                            # CPU-sized default (ViT-tiny, BERT mini)
    python scripts/bench_train_throughput.py --device cuda --vit-sizes small base --bert-sizes large \
        --batch 128 --bert-batch 64                                     # the paper's shapes, bf16 autocast
    python scripts/bench_train_throughput.py --quick                    # tiny smoke run

A step is forward + loss + backward + AdamW update, under bf16 autocast where the device supports it (CUDA with
bf16; float32 on the CPU unless --precision says otherwise), on random inputs of the real shape: 224 px images and
1000 classes for the ViTs (`lion_{variant}_{size}_patch16_224`, `softmax_vit_{size}_patch16_224`), 128-token
masked-LM batches for BERT (`lion_bert` with `attention=...`; the softmax twin is `attention="softmax"`), and
ListOps-style token batches of --lra-lengths tokens for the LRA classifier (`lion.models.lra`, dim 128, depth 4).
The models of one family and size are built together and timed in interleaved rounds, so that a change in clock
speed or machine load hits all alike; throughput = batch / median step time after warm-up. "Train. time" = twin throughput / model throughput, so x1.40
means 40% slower than the softmax twin. Out-of-memory is caught and shown as OOM, never estimated. Writes a markdown
table to stdout and `train_throughput.json` and `train_throughput.png` to --out-dir (the JSON feeds Table D of
scripts/make_tables.py).
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import textwrap
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

import lion  # noqa: F401  (registers the models with timm and transformers)
import timm
from lion.bench import markdown_table, peak_memory_mib, time_fn

VIT_VARIANTS = {"softmax": "softmax_vit", "lion-lit": "lion_lit", "lion-d": "lion_d", "lion-d-ms": "lion_d_ms",
                "lion-s": "lion_s", "lion-s-ms": "lion_s_ms"}
BERT_VARIANTS = ("softmax", "lion-lit", "lion-d", "lion-s")
LRA_VARIANTS = {"softmax": "softmax", "lion-lit": "lion-lit", "lion-d": "lion-d", "lion-s": "lion-s"}
BERT_SIZES = {  # mini/tiny are CPU-sized shapes for the default and --quick runs
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def is_oom(e: BaseException) -> bool:
    msg = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in msg or "can't allocate memory" in msg


def vit_case(attention: str, size: str, args):
    """(model, step inputs, loss fn): a ViT on [B, 3, img, img] images and 1000 classes."""
    kw = dict(num_classes=1000)
    if args.depth:
        kw["depth"] = args.depth
    if attention != "softmax":
        kw.update(form=args.form, chunk_size=args.chunk_size)
    model = timm.create_model(f"{VIT_VARIANTS[attention]}_{size}_patch16_224", **kw)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=args.device)
    y = torch.randint(0, 1000, (args.batch,), device=args.device)
    return model, lambda m: F.cross_entropy(m(x), y), args.batch, (args.img_size // 16) ** 2 + 1


def lra_case(attention: str, size: str, args):
    """(model, loss fn): the LRA classifier (lion.models.lra defaults: dim 128, depth 4, 4 heads, mean pooling,
    learned positions) on random ListOps-style token batches of L = size tokens, 10 classes."""
    from lion.models.lra import LRAClassifier
    L = int(size)
    kw = {} if attention == "softmax" else dict(form=args.form, chunk_size=args.chunk_size)
    if args.depth:
        kw["depth"] = args.depth
    model = LRAClassifier(10, vocab_size=32, seq_len=L, attention=LRA_VARIANTS[attention], **kw)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 32, (args.lra_batch, L), generator=g).to(args.device)
    y = torch.randint(0, 10, (args.lra_batch,), generator=g).to(args.device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    return model, lambda m: F.cross_entropy(m(ids, mask), y), args.lra_batch, L


def bert_case(attention: str, size: str, args):
    """(model, loss fn): LION BERT masked LM (or its softmax twin) on random 128-token batches, 15% predicted."""
    from transformers import AutoConfig, AutoModelForMaskedLM
    shape = dict(BERT_SIZES[size])
    if args.depth:
        shape["num_hidden_layers"] = args.depth
    extra = {} if attention == "softmax" else dict(form=args.form, chunk_size=args.chunk_size)
    config = AutoConfig.for_model("lion_bert", attention=attention, vocab_size=args.vocab_size,
                                  max_position_embeddings=max(512, args.seq_len), **shape, **extra)
    model = AutoModelForMaskedLM.from_config(config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, args.vocab_size, (args.bert_batch, args.seq_len), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    ids, labels = ids.to(args.device), labels.to(args.device)
    mask = torch.ones_like(ids)
    return model, lambda m: m(input_ids=ids, attention_mask=mask, labels=labels).loss, args.bert_batch, args.seq_len


class Case:
    """One model of a comparison group with its optimizer and its train step."""

    def __init__(self, family, size, attention, args):
        build = {"vit": vit_case, "bert": bert_case, "lra": lra_case}[family]
        model, self.loss_fn, self.batch, self.tokens = build(attention, size, args)
        self.family, self.size, self.attention = family, size, attention
        self.params = sum(p.numel() for p in model.parameters())
        self.model = model.to(args.device).train()
        if args.compile:  # as model.compile=true in training (torch.compile of the network in place), static shapes
            self.model.compile(dynamic=False)
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        self.amp = (lambda: torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16)) \
            if args.precision == "bf16" else nullcontext
        self.status, self.times, self.peak = "ok", [], None

    def step(self):
        with self.amp():
            loss = self.loss_fn(self.model)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def guarded(self, fn):
        """Run fn(); on out-of-memory mark the case OOM (it is not run again)."""
        if self.status != "ok":
            return
        try:
            fn()
        except (RuntimeError, MemoryError) as e:
            if not is_oom(e):
                raise
            self.status = "OOM"
            self.opt.zero_grad(set_to_none=True)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def run_group(family: str, size: str, attentions: list[str], args) -> list[dict]:
    """Build the twin and the LION models of one family and size, then time them in interleaved rounds (so drift
    in clock speed or machine load affects all alike); throughput from the median step time over all rounds."""
    cases = [Case(family, size, a, args) for a in attentions]
    for c in cases:  # warm-up, then the extra peak memory of one step (beyond weights, grads and AdamW state)
        c.guarded(lambda: time_fn(c.step, args.device, warmup=args.warmup, reps=1))
        c.guarded(lambda: setattr(c, "peak", peak_memory_mib(c.step, args.device)))
    for _ in range(args.rounds):
        for c in cases:
            c.guarded(lambda: c.times.append(time_fn(c.step, args.device, warmup=0, reps=args.steps)))
    results = []
    for c in cases:
        ms = statistics.median(c.times) if c.status == "ok" and c.times else None
        results.append(dict(family=family, size=size, model=c.attention, params=c.params, tokens=c.tokens,
                            unit="img/s" if family == "vit" else "seq/s", status=c.status, step_ms=ms,
                            throughput=None if ms is None else c.batch / (ms / 1e3), peak_mib=c.peak))
    twin = results[0]["throughput"]
    for r in results:
        r["relative_time"] = twin / r["throughput"] if twin and r["throughput"] else None
        tput = "-" if r["throughput"] is None else f"{r['throughput']:.1f}"
        print(f"  {family} {size:5s} {r['model']:10s} {r['status']:4s} {tput} {r['unit']}", flush=True)
    del cases
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return results


def run(args) -> list[dict]:
    results = []
    for size in args.vit_sizes:
        results += run_group("vit", size, ["softmax"] + args.variants, args)
    for size in args.bert_sizes:
        results += run_group("bert", size, ["softmax"] + [v for v in args.variants if v in BERT_VARIANTS], args)
    for L in args.lra_lengths:
        results += run_group("lra", str(L), ["softmax"] + [v for v in args.variants if v in LRA_VARIANTS], args)
    return results


def plot(results: list[dict], paper: dict, path: Path, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["family"], r["size"]) for r in results))
    models = list(dict.fromkeys(r["model"] for r in results if r["model"] != "softmax"))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(groups) * max(len(models), 1) / 3), 4.5))
    width = 0.8 / max(len(models), 1)
    for j, model in enumerate(models):
        xs, ys = [], []
        for i, (fam, size) in enumerate(groups):
            r = next((r for r in results if (r["family"], r["size"], r["model"]) == (fam, size, model)), None)
            if r is None:
                continue
            x = i + (j - (len(models) - 1) / 2) * width
            if r["relative_time"] is None:
                ax.text(x, 0.05, r["status"], rotation=90, ha="center", va="bottom", fontsize=7)
            else:
                xs.append(x)
                ys.append(r["relative_time"])
            p = paper.get(f"{fam}_{size}", {}).get(model)
            if p is not None:
                ax.plot([x], [p], "k_", markersize=12, markeredgewidth=2)
        ax.bar(xs, ys, width=width, label=model, color=f"C{j}")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(groups)), [f"{f}-{s}" for f, s in groups])
    ax.set_ylabel("training time relative to the softmax twin")
    ax.legend(fontsize=8, title="black bars: paper", title_fontsize=7)
    ax.set_title(textwrap.fill(title, 110), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vit-sizes", nargs="*", default=["tiny"], choices=["tiny", "small", "base"])
    p.add_argument("--bert-sizes", nargs="*", default=["mini"], choices=list(BERT_SIZES))
    p.add_argument("--variants", nargs="+", default=["lion-lit", "lion-d", "lion-d-ms", "lion-s", "lion-s-ms"],
                   choices=[v for v in VIT_VARIANTS if v != "softmax"])
    p.add_argument("--batch", type=int, default=8, help="ViT batch")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--bert-batch", type=int, default=8)
    p.add_argument("--lra-lengths", type=int, nargs="*", default=[256, 1024],
                   help="sequence lengths of the LRA classifier group (none: skip it)")
    p.add_argument("--lra-batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--depth", type=int, default=0, help="override the number of blocks/layers (0: the model's)")
    p.add_argument("--form", default="auto", choices=["auto", "parallel", "chunk", "recurrent"])
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default=None, choices=["bf16", "fp32"],
                   help="bf16 autocast (default where the device supports it: CUDA with bf16) or fp32")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds over the models of a group (interleaved timing)")
    p.add_argument("--out-dir", default="logs/bench", help="where train_throughput.json and .png go")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile every model, the twin too (as model.compile=true does); compile time is "
                        "spent in the warm-up steps and not timed")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 blocks, 32 px, tiny BERT, batch 2, 1 step")
    args = p.parse_args(argv)
    if args.quick:
        args.vit_sizes, args.bert_sizes = args.vit_sizes[:1] or ["tiny"], ["tiny"] if args.bert_sizes else []
        args.batch = args.bert_batch = 2
        args.img_size, args.seq_len, args.vocab_size, args.depth = 32, 32, 1000, 2
        args.lra_lengths, args.lra_batch = [64] if args.lra_lengths else [], 2
        args.warmup, args.steps, args.rounds = 1, 1, 1
    if args.img_size % 16:
        p.error(f"--img-size {args.img_size} is not a multiple of the patch size 16")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; use --device cpu")
    cuda = args.device.startswith("cuda")
    args.precision = args.precision or ("bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    device_name = torch.cuda.get_device_name(args.device) if cuda else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    settings = (f"{args.precision}, ViT batch {args.batch} at {args.img_size} px, BERT batch {args.bert_batch} x "
                f"{args.seq_len} tokens, LRA batch {args.lra_batch} x {args.lra_lengths} tokens, form {args.form}, chunk {args.chunk_size}"
                f"{f', depth {args.depth}' if args.depth else ''}{', torch.compile' if args.compile else ''}, AdamW, "
                f"torch {torch.__version__}")
    print(f"# Training throughput: {device_name}; {settings}")
    results = run(args)

    from lion.results.tables import load_paper
    paper = load_paper()["tables"]["D"]["train_time"]
    rows = []
    for r in results:
        pr = paper.get(f"{r['family']}_{r['size']}", {}).get(r["model"])
        rows.append([r["family"], r["size"], r["model"], f"{r['params'] / 1e6:.1f}M", r["status"], r["throughput"],
                     r["unit"], r["step_ms"], r["peak_mib"],
                     "-" if r["relative_time"] is None else f"x{r['relative_time']:.2f}",
                     "-" if pr is None else f"x{pr:.2f}"])
    print()
    print(markdown_table(["family", "size", "model", "params", "status", "throughput", "unit", "step (ms)",
                          "extra peak (MiB)", "train. time", "paper"], rows))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blob = dict(benchmark="train_throughput", device=device_name, settings=settings, results=results)
    (out / "train_throughput.json").write_text(json.dumps(blob, indent=1))
    plot(results, paper, out / "train_throughput.png", f"{device_name}; {settings}")
    print(f"\nwrote {out / 'train_throughput.json'} and {out / 'train_throughput.png'}")
    return results


if __name__ == "__main__":
    main()
