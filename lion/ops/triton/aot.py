"""Compile the LION kernels for a CUDA architecture without a GPU (ahead of time), and report their resources.

    python -m lion.ops.triton.aot --arch 90 --dtype bf16                  # chunk kernels
    python -m lion.ops.triton.aot --kind tile_fwd,tile_bwd                # parallel-tile kernels (tile.py)

Triton ships ptxas, so a CPU-only machine can check that the kernels compile for sm_80 / sm_90 and see registers,
spills and shared memory per configuration. This catches GPU-only compile errors in CI (tests/test_triton_aot.py)
and guides the launch heuristics in ops.py; it says nothing about speed. Must run without TRITON_INTERPRET.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import tempfile

import triton

from lion.ops.triton.kernels import lion_bwd_kernel, lion_fwd_kernel
from lion.ops.triton.tile import lion_tile_bwd_kernel, lion_tile_bwd_prep_kernel, lion_tile_fwd_kernel

# kind -> (kernel, pointers in the input dtype, pointers in the accumulation dtype, default constexprs)
KERNELS = {
    "fwd": (lion_fwd_kernel, ("Q", "K", "V", "O", "YLO"), ("A", "A2", "DEN", "NUMS", "DENS"),
            dict(BC=64, BD=64, BV=64, RIGHT=True, LEFT=True, SCRATCH=True)),
    "bwd": (lion_bwd_kernel, ("Q", "K", "V", "DO", "Y", "YLO", "DQ", "DK", "DV_"),
            ("A", "A2", "DDEN", "DEN", "DA", "DA2", "DA3", "DA4"),
            dict(BC=64, BD=64, BV=64, RIGHT=True, LEFT=True, SCRATCH=True, HAS_GD=True)),
    "tile_fwd": (lion_tile_fwd_kernel, ("Q", "K", "V", "O", "YLO"), ("A", "A2", "DEN"),
                 dict(BM=64, BN=64, BD=64, BV=64)),
    "tile_bwd": (lion_tile_bwd_kernel, ("Q", "K", "V", "DO", "DQ", "DK", "DV_"),
                 ("A", "A2", "RR", "GD", "DC", "DC2", "DC3", "DC4"),
                 dict(BM=64, BN=32, BD=64, BV=64, SCALE=True, HAS_GD=True)),
    "tile_prep": (lion_tile_bwd_prep_kernel, ("DO", "Y", "YLO"), ("DEN", "RG"), dict(BR=64, BV=64)),
}


def _signature(kind, dtype, consts):
    acc = "fp64" if dtype == "fp64" else "fp32"
    fn, ptrs, acc_ptrs, _ = KERNELS[kind]
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name == "YLO":
            sig[name] = "*bf16"
        elif name in ptrs:
            sig[name] = f"*{dtype}"
        elif name in acc_ptrs:
            sig[name] = f"*{acc}"
        else:
            sig[name] = "fp32" if name == "eps" else "i32"
    return sig


def compile_kernel(kind: str, arch: int = 90, dtype: str = "bf16", num_warps: int = 8, num_stages: int = 3,
                   **consts) -> dict:
    """Compile one configuration; returns {"regs", "spill_bytes", "shared", "wgmma"} (regs/spills from ptxas -v).

    kind: a key of KERNELS ("fwd", "bwd" chunk; "tile_fwd", "tile_bwd", "tile_prep"); consts: the kernel's
    constexprs (BC or BM/BN, BD, BV, HAS_DECAY, PAIR (a pair of log-decays), ...; defaults fill the rest).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, _, _, defaults = KERNELS[kind]
    full = dict(HAS_DECAY=True, NORMALIZE=True, PARTS=False, RESID=dtype in ("bf16", "fp16"), PAIR=False,
                DOT={"fp32": 3, "fp64": 1}.get(dtype, 0), **defaults)
    # what Triton's launcher specialises on for contiguous inputs with L % 16 == 0: unit strides become constants,
    # pointers and the other integers are known multiples of 16
    full.update(sqd=1, skd=1, svd=1)
    full.update(consts)
    full = {name: val for name, val in full.items() if name in fn.arg_names}
    sig = _signature(kind, dtype, full)
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if sig[name] != "constexpr" and name != "eps" and name != "H"}
    src = ASTSource(fn, sig, constexprs=full, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                       options={"num_warps": num_warps, "num_stages": num_stages})
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    regs = spills = None
    if os.path.exists(ptxas):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "k.ptx"), "w") as f:
                f.write(k.asm["ptx"])
            gpu = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
            out = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", os.path.join(d, "k.ptx"), "-o",
                                  os.path.join(d, "k.o")], capture_output=True, text=True, check=True).stderr
        regs = max(int(x) for x in re.findall(r"Used (\d+) registers", out))
        spills = max(int(x) for x in re.findall(r"(\d+) bytes spill stores", out))
    return {"regs": regs, "spill_bytes": spills, "shared": k.metadata.shared, "wgmma": "wgmma" in k.asm["ptx"]}


def _block_consts(kind: str, blk: str) -> dict:
    """"BDxBVxBC" (chunk kernels) or "BDxBVxBMxBN" (tile kernels) -> constexprs."""
    n = list(map(int, blk.split("x")))
    if kind.startswith("tile"):
        return dict(BD=n[0], BV=n[1], BM=n[2], BN=n[3]) if kind != "tile_prep" else dict(BV=n[1])
    return dict(BD=n[0], BV=n[1], BC=n[2])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32", "fp64"])
    p.add_argument("--kind", default="fwd,bwd", help="comma-separated: fwd, bwd, tile_fwd, tile_bwd, tile_prep")
    p.add_argument("--blocks", default="64x64x64,64x32x64,64x64x32,128x64x64,128x128x32",
                   help="BDxBVxBC configurations of the chunk kernels")
    p.add_argument("--tile-blocks", default="64x64x64x64,64x64x64x32,64x64x128x64,64x64x32x32,128x128x64x32,"
                   "128x128x32x32", help="BDxBVxBMxBN configurations of the tile kernels")
    p.add_argument("--warps", default="4,8")
    p.add_argument("--stages", default="1,3")
    args = p.parse_args()
    print("| kind | blocks | warps | stages | regs | spill bytes | shared |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.kind.split(","):
        blocks = args.tile_blocks if kind.startswith("tile") else args.blocks
        for blk, w, st in itertools.product(blocks.split(","), map(int, args.warps.split(",")),
                                            map(int, args.stages.split(","))):
            r = compile_kernel(kind, args.arch, args.dtype, w, st, **_block_consts(kind, blk))
            print(f"| {kind} | {blk} | {w} | {st} | {r['regs']} | {r['spill_bytes']} | {r['shared']} |", flush=True)


if __name__ == "__main__":
    main()
