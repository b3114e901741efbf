"""Host side of the fused LION kernels: launch heuristics, a torch.library custom op with autograd, and the entry
point `lion_attention_triton` (same semantics as `lion.ops.lion_attention`).

Two kernel families compute the same function: the chunk kernels (kernels.py, sequential over chunks, any L) and
the parallel-tile kernels (tile.py, flash-attention-like, O(L^2 D) work, for short L). The forward and the backward
each pick one inside the op (`choose_kernel`): TUNING["short_kernel"] = "chunk" / "tile" forces one; "auto" (the
default) times both on the first call per shape bucket on CUDA and keeps the faster (chunk above
TUNING["tile_max_len"], and always under TRITON_INTERPRET). Both forwards save the same tensors (y, den, y's
rounding residual), so either backward can follow either forward.

Shapes: q, k [B, H, L, D]; v [B, H, L, Dv]; log_decay None | [H] | [B, H, L] | a (forward, backward) pair of those;
attention_mask [B, L].
D and Dv up to 128 (smaller head dims are padded inside the kernel). Inputs float16 / bfloat16 (tensor-core dots,
float32 accumulation), float32 (dots as tf32x3 on GPUs: about fp32 accuracy) or float64 (float64 throughout).
CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 was set before this module was imported.

`torch.library.custom_op` (torch >= 2.4) makes the kernels opaque to torch.compile with a fake implementation, so
`torch.compile(fullgraph=True)` traces a layer that uses them without a graph break. (No `from __future__ import
annotations` here: custom_op reads the type annotations to build the op schema.)
"""
import functools
import logging
import os
from typing import Optional

import torch
import triton
import triton.testing

from lion.ops.attention import autocast_promote, check_dtypes
from lion.ops.naive import is_pair
from lion.ops.triton.kernels import lion_bwd_kernel, lion_fwd_kernel
from lion.ops.triton.tile import lion_tile_bwd_kernel, lion_tile_bwd_prep_kernel, lion_tile_fwd_kernel

MAX_HEAD_DIM = 128
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _version(v: str) -> tuple[int, int]:
    return tuple(int("".join(c for c in x if c.isdigit()) or 0) for x in v.split(".")[:2])


def interpreter_problem(triton_version: str, numpy_version: str) -> Optional[str]:
    """A known break of the Triton interpreter with these versions, as the fix to apply; None when there is none.
    Triton <= 3.6's interpreter fails inside `range()` over a scalar tensor on numpy >= 2.4 ("only 0-dimensional
    arrays can be converted to Python scalars"; measured with Triton 3.6.0: numpy 2.3.5 works, 2.4.0 fails; Triton
    3.7.1 and 3.8 work). GPU runs do not use the interpreter and are unaffected."""
    if _version(triton_version) <= (3, 6) and _version(numpy_version) >= (2, 4):
        return (f"the Triton {triton_version} interpreter (TRITON_INTERPRET=1) fails with numpy {numpy_version}: "
                "pip install 'numpy<2.4' or 'triton>=3.7' (GPU runs are unaffected)")
    return None

# Launch settings; None = the heuristics in _forward / _backward, chosen from register and spill counts of sm_90
# compiles (python -m lion.ops.triton.aot): with D = Dv = 64 the forward (chunk 64, 32 or 64 value columns, 8 warps)
# and the backward (chunk 32, 4 warps: two programs per SM) compile without spilling; D = 128 spills a little in the
# backward (136 bytes at chunk 16). Speed is unmeasured: scripts/bench_attention.py --sweep on a GPU decides.
# The benchmark script sweeps these; results never depend on them.
#   fwd_block_v: value columns per forward program; fwd_warps / bwd_warps: num_warps; bwd_chunk: backward chunk;
#   split: run loop R and loop L as two launches instead of one program with a barrier between them.
#   short_kernel: "auto" | "tile" | "chunk" (see choose_kernel); tile_max_len: "auto" never considers the tile
#   kernels above this L (their work grows as L^2); tile_fwd_blocks / tile_bwd_blocks: (BM, BN) of the tile
#   kernels (own block, other side's block; powers of two >= 16, BN <= BM); tile_fwd_warps / tile_bwd_warps.
TUNING = {"fwd_block_v": None, "fwd_warps": None, "bwd_chunk": None, "bwd_warps": None, "split": False,
          "short_kernel": "auto", "tile_max_len": 1024, "tile_fwd_blocks": None, "tile_fwd_warps": None,
          "tile_bwd_blocks": None, "tile_bwd_warps": None}
SHORT_KERNELS = ("auto", "tile", "chunk")
log = logging.getLogger(__name__)


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _chunk_block(chunk_size: int, L: int) -> int:
    """The kernel's chunk: chunk_size rounded up to a power of two in [16, 128], no larger than L needs."""
    return min(_block(min(chunk_size, 128)), _block(L))


def _dot_mode(dtype) -> int:
    """kernels._mm: 0 half tensor cores, 1 exact, 2 half emulated by the interpreter, 3 fp32 as tf32x3 (GPU)."""
    if dtype == torch.float64 or (dtype == torch.float32 and INTERPRET):
        return 1
    if dtype == torch.float32:
        return 3
    return 2 if INTERPRET else 0


@functools.lru_cache(maxsize=None)
def _num_sms(device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def _strides(*ts):
    return [s for t in ts for s in t.stride()]


def _resid(q, normalize: bool, parts: bool) -> bool:
    """Whether the forward saves y's rounding residual for the backward (normalised half-precision outputs)."""
    return normalize and not parts and q.dtype in (torch.float16, torch.bfloat16)


def _forward(q, k, v, a, a2, normalize: bool, parts: bool, chunk_size: int, eps: float):
    """a: the (forward) log-decays [B, H, L] or None; a2: the backward ones of a pair, or None (symmetric).
    Returns (o, den, ylo): o = y [B, H, L, Dv] in q's dtype (num in the accumulation dtype when parts);
    den [B, H, L]; ylo [B, H, L, Dv] bf16 = y - o where _resid(), else empty."""
    B, H, L, D = q.shape
    Dv = v.shape[-1]
    acc = _acc_dtype(q.dtype)
    BD = _block(D)
    wide = BD > 64 or q.element_size() >= 4  # large heads, fp32/fp64 tiles: half the chunk
    BC = _chunk_block(min(chunk_size, 32) if wide else chunk_size, L)
    BV = TUNING["fwd_block_v"] or _block(Dv)
    if TUNING["fwd_block_v"] is None:  # split the value columns while there are too few programs to fill the GPU
        while BV > 32 and B * H * triton.cdiv(Dv, BV) < 2 * _num_sms(q.device):
            BV //= 2
    right = triton.cdiv(L, BC) > 1
    den = torch.empty(B, H, L, device=q.device, dtype=acc)
    o = torch.empty(B, H, L, Dv, device=q.device, dtype=acc if parts else q.dtype)
    nums = o if (parts or not right) else torch.empty(B, H, L, Dv, device=q.device, dtype=acc)
    dens = torch.empty(B, H, L, device=q.device, dtype=acc) if right else den
    resid = _resid(q, normalize, parts)
    ylo = torch.empty(B, H, L, Dv, device=q.device, dtype=torch.bfloat16) if resid else o.new_empty(0)
    a_arg = den if a is None else a
    warps = TUNING["fwd_warps"] or (4 if BD <= 32 and BV <= 32 else 8)
    grid = (B * H * triton.cdiv(Dv, BV),)
    passes = [(True, False), (False, True)] if (TUNING["split"] and right) else [(right, True)]
    for do_right, do_left in passes:
        lion_fwd_kernel[grid](
            q, k, v, a_arg, a_arg if a2 is None else a2, o, den, nums, dens, ylo if resid else o, *_strides(q, k, v),
            H, L, D, Dv, eps, BC=BC, BD=BD, BV=BV, HAS_DECAY=a is not None, NORMALIZE=normalize, PARTS=parts,
            RESID=resid, RIGHT=do_right, LEFT=do_left, SCRATCH=right, DOT=_dot_mode(q.dtype), PAIR=a2 is not None,
            num_warps=warps)
    return o, den, ylo


def _decay_shares(a, a2, den):
    """The buffer of the backward kernels' log-decay gradient shares: [4, B, H, L] for a pair (forward and
    backward, from the query and the key side), [2, B, H, L] for one log-decay (query side, key side), else empty."""
    if a is None:
        return den.new_empty(0)
    return den.new_empty((2 if a2 is None else 4, *den.shape))


def _share_args(da, a, a2, den):
    """The four share pointers of the backward kernels (DA, DA2, DA3, DA4 / DC..DC4): one log-decay writes one
    share per program (DA2 = DA, DA4 = DA3)."""
    if a is None:
        return (den,) * 4
    return tuple(da.unbind(0)) if a2 is not None else (da[0], da[0], da[1], da[1])


def _decay_grads(da, a, a2):
    """The log-decay gradients from the kernels' shares (_decay_shares): (da, empty) for one log-decay,
    (da_forward, da_backward) for a pair (forward from the query and the key side: shares 0 and 2, backward: 1
    and 3), (empty, empty) without decay."""
    if a is None:
        return da, da.new_empty(0)
    if a2 is None:
        return da.sum(0), da.new_empty(0)
    return da[0] + da[2], da[1] + da[3]


def _backward(do, dden, q, k, v, a, a2, o, ylo, den, normalize: bool, parts: bool, chunk_size: int, eps: float):
    """Returns (dq, dk, dv, da, da2); da [B, H, L] in the accumulation dtype (empty when a is None), da2 the
    gradient of the backward log-decays of a pair (else empty)."""
    B, H, L, D = q.shape
    Dv = v.shape[-1]
    BD, BV = _block(D), _block(Dv)
    if TUNING["bwd_chunk"]:
        BC = _chunk_block(TUNING["bwd_chunk"], L)
    else:  # two D x Dv states per program live in registers: small chunks keep the C x C tiles from spilling
        BC = min(_chunk_block(chunk_size, L), 32 if BD * BV <= 64 * 64 and q.element_size() <= 2 else 16)
    right = triton.cdiv(L, BC) > 1
    dq = torch.empty(B, H, L, D, device=q.device, dtype=q.dtype)
    dk = torch.empty(B, H, L, D, device=q.device, dtype=q.dtype)
    dv = torch.empty(B, H, L, Dv, device=q.device, dtype=q.dtype)
    da = _decay_shares(a, a2, den)
    has_gd = (parts and dden is not None) or (normalize and not parts)
    do = do.contiguous()
    dden = dden.contiguous() if (parts and dden is not None) else den
    # a pair of log-decays carries two more gradient shares: at 4 warps it spills (32 bytes, sm_90, D = Dv = 64,
    # chunk 32); 8 warps do not (speed unmeasured)
    warps = TUNING["bwd_warps"] or (4 if BD * BV <= 64 * 64 and a2 is None else 8)
    passes = [(True, False), (False, True)] if (TUNING["split"] and right) else [(right, True)]
    for do_right, do_left in passes:
        lion_bwd_kernel[(2 * B * H,)](
            q, k, v, den if a is None else a, den if a is None else (a if a2 is None else a2), do, dden, o,
            ylo if ylo.numel() else o, den, dq, dk, dv, *_share_args(da, a, a2, den),
            *_strides(q, k, v), H, L, D, Dv, eps,
            BC=BC, BD=BD, BV=BV, HAS_DECAY=a is not None, NORMALIZE=normalize, PARTS=parts, HAS_GD=has_gd,
            RESID=ylo.numel() > 0, RIGHT=do_right, LEFT=do_left, SCRATCH=right, DOT=_dot_mode(q.dtype),
            PAIR=a2 is not None, num_warps=warps)
    return (dq, dk, dv, *_decay_grads(da, a, a2))


# ---------------------------------------------------------------------------------------------------------------
# parallel-tile kernels (tile.py)

def tile_defaults(kind: str, BD: int, BV: int, element_size: int):
    """Default (BM, BN, num_warps) of the tile kernels ("fwd" / "bwd") for padded head dims BD, BV, from sm_90
    compiles (python -m lion.ops.triton.aot --kind tile_fwd,tile_bwd), none of which spills: bf16/fp16 at
    D = Dv = 64 forward (64, 64) 4 warps (171 registers), backward (64, 32) 4 warps (236); D = 128 forward
    (64, 32) at 8 warps, both (183 and 254 registers; a 32-row backward would not use wgmma). fp32 (tf32x3 dots)
    needs much smaller tiles: forward (32, 16) or (16, 16), backward (16, 16), 8 warps. In the interpreter block
    sizes only cost time: the half-precision ones."""
    small = BD <= 64 and BV <= 64
    if element_size <= 2 or INTERPRET:
        blocks = ((64, 64) if small else (64, 32)) if kind == "fwd" else (64, 32)
        return (*blocks, 4 if small else 8)
    return (*(((32, 16) if small else (16, 16)) if kind == "fwd" else (16, 16)), 8)


def _tile_config(kind: str, q, Dv: int):
    """(BM, BN, num_warps) of the tile kernels for this call: TUNING's, else tile_defaults with the own block
    halved while B*H*cdiv(L, BM) programs would not fill the GPU twice."""
    B, H, L, D = q.shape
    given = TUNING[f"tile_{kind}_blocks"]
    BM, BN, warps = tile_defaults(kind, _block(D), _block(Dv), q.element_size())
    if given is not None:
        BM, BN = given
        if BM < 16 or BN < 16 or BM & (BM - 1) or BN & (BN - 1) or BN > BM:
            raise ValueError(f"TUNING['tile_{kind}_blocks'] = {given!r}: need powers of two >= 16 with BN <= BM")
    BM = min(BM, _block(L))
    BN = min(BN, BM)
    if given is None:
        while BM > 32 and B * H * triton.cdiv(L, BM) < 2 * _num_sms(q.device):  # (32, 32) spills nowhere
            BM //= 2
        BN = min(BN, BM)
    return BM, BN, TUNING[f"tile_{kind}_warps"] or warps


def _tile_forward(q, k, v, a, a2, normalize: bool, parts: bool, eps: float):
    """The tile forward; same outputs as _forward (chunk): (o, den, ylo)."""
    B, H, L, D = q.shape
    Dv = v.shape[-1]
    acc = _acc_dtype(q.dtype)
    BM, BN, warps = _tile_config("fwd", q, Dv)
    den = torch.empty(B, H, L, device=q.device, dtype=acc)
    o = torch.empty(B, H, L, Dv, device=q.device, dtype=acc if parts else q.dtype)
    resid = _resid(q, normalize, parts)
    ylo = torch.empty(B, H, L, Dv, device=q.device, dtype=torch.bfloat16) if resid else o.new_empty(0)
    lion_tile_fwd_kernel[(B * H * triton.cdiv(L, BM),)](
        q, k, v, den if a is None else a, den if a is None else (a if a2 is None else a2), o, den,
        ylo if resid else o, *_strides(q, k, v), H, L, D, Dv, eps,
        BM=BM, BN=BN, BD=_block(D), BV=_block(Dv), HAS_DECAY=a is not None, NORMALIZE=normalize, PARTS=parts,
        RESID=resid, DOT=_dot_mode(q.dtype), PAIR=a2 is not None, num_warps=warps)
    return o, den, ylo


def _tile_backward(do, dden, q, k, v, a, a2, o, ylo, den, normalize: bool, parts: bool, eps: float):
    """The tile backward; same results as _backward (chunk): (dq, dk, dv, da, da2)."""
    B, H, L, D = q.shape
    Dv = v.shape[-1]
    BM, BN, warps = _tile_config("bwd", q, Dv)
    scale = normalize and not parts
    has_gd = (parts and dden is not None) or scale
    do = do.contiguous()
    if scale:  # r = 1 / den and gd = dL/dden per row, once (not per tile)
        rg = torch.empty(2, B, H, L, device=q.device, dtype=den.dtype)
        N, BR = B * H * L, 64
        lion_tile_bwd_prep_kernel[(triton.cdiv(N, BR),)](
            do, o, ylo if ylo.numel() else o, den, rg, N, Dv, eps, BR=BR, BV=_block(Dv), RESID=ylo.numel() > 0,
            num_warps=4)
        rr, gd = rg[0], rg[1]
    else:
        rr, gd = den, (dden.contiguous() if has_gd else den)
    dq = torch.empty(B, H, L, D, device=q.device, dtype=q.dtype)
    dk = torch.empty(B, H, L, D, device=q.device, dtype=q.dtype)
    dv = torch.empty(B, H, L, Dv, device=q.device, dtype=q.dtype)
    dc = _decay_shares(a, a2, den)
    lion_tile_bwd_kernel[(2 * B * H * triton.cdiv(L, BM),)](
        q, k, v, den if a is None else a, den if a is None else (a if a2 is None else a2), do, rr, gd, dq, dk, dv,
        *_share_args(dc, a, a2, den),
        *_strides(q, k, v), H, L, D, Dv, BM=BM, BN=BN, BD=_block(D), BV=_block(Dv), HAS_DECAY=a is not None,
        SCALE=scale, HAS_GD=has_gd, DOT=_dot_mode(q.dtype), PAIR=a2 is not None, num_warps=warps)
    if a is None:
        return dq, dk, dv, dc, dc.new_empty(0)
    # dL/dc, c = cumsum(a) (per direction); da_t = sum_{s >= t} dL/dc_s = -sum_{s < t} dL/dc_s
    return (dq, dk, dv, *(x if x.numel() == 0 else x - x.cumsum(-1) for x in _decay_grads(dc, a, a2)))


# ---------------------------------------------------------------------------------------------------------------
# measured choice between the two kernel families

_CHOICES: dict = {}  # kernel_key(...) -> "tile" | "chunk", filled by choose_kernel in "auto" mode


def kernel_key(direction: str, q, v, a, normalize: bool, parts: bool, chunk_size: int, has_dden: bool = False,
               pair: bool = False):
    """What the speed of either kernel depends on: direction ("fwd" / "bwd"), device, dtype, D, Dv, decay or not
    (per head is per token to the kernels: the entry point expands it), normalize / parts, the chunk kernel's
    chunk, and B*H and L rounded up to powers of two."""
    B, H, L, D = q.shape
    return (direction, str(q.device), str(q.dtype).replace("torch.", ""), D, v.shape[-1],
            "none" if a is None else ("pair" if pair else "decay"), bool(normalize), bool(parts), bool(has_dden),
            _chunk_block(chunk_size, L), triton.next_power_of_2(B * H), triton.next_power_of_2(L))


def _do_bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=5, rep=20, return_mode="median")


def _timer(device):
    """The timing function of "auto" on this device, or None where nothing may be timed: the interpreter (tests
    stay deterministic), non-CUDA tensors, and CUDA graph capture (nothing may synchronise there)."""
    if INTERPRET or device.type != "cuda" or torch.cuda.is_current_stream_capturing():
        return None
    return _do_bench


def choose_kernel(key, L: int, candidates: dict, timer=None) -> str:
    """"tile" or "chunk" for this call.

    TUNING["short_kernel"] "tile" / "chunk" forces a family (any L). "auto": the chunk kernel above
    TUNING["tile_max_len"]; else the cached choice for `key`; else, with no `timer`, the chunk kernel (nothing
    cached); else timer(candidates[name]) (ms; each candidate a zero-argument call of that kernel on the real
    inputs) for both, the faster cached and logged once (INFO, logger lion.ops.triton.ops).
    """
    mode = TUNING["short_kernel"]
    if mode not in SHORT_KERNELS:
        raise ValueError(f"TUNING['short_kernel'] = {mode!r} is unknown; use one of {SHORT_KERNELS}")
    if mode != "auto":
        return mode
    if L > TUNING["tile_max_len"]:
        return "chunk"
    if key not in _CHOICES:
        if timer is None:
            return "chunk"
        times = {name: float(timer(fn)) for name, fn in candidates.items()}
        _CHOICES[key] = min(times, key=times.get)
        log.info("lion triton: %s kernel for %s (%s)", _CHOICES[key], key,
                 ", ".join(f"{n} {t:.4g} ms" for n, t in times.items()))
    return _CHOICES[key]


def _forward_any(q, k, v, a, a2, normalize: bool, parts: bool, chunk_size: int, eps: float):
    """The forward of the op: the tile or the chunk kernel (choose_kernel)."""
    candidates = {"tile": functools.partial(_tile_forward, q, k, v, a, a2, normalize, parts, eps),
                  "chunk": functools.partial(_forward, q, k, v, a, a2, normalize, parts, chunk_size, eps)}
    key = kernel_key("fwd", q, v, a, normalize, parts, chunk_size, pair=a2 is not None)
    return candidates[choose_kernel(key, q.shape[2], candidates, _timer(q.device))]()


def _backward_any(do, dden, q, k, v, a, a2, o, ylo, den, normalize: bool, parts: bool, chunk_size: int,
                  eps: float):
    """The backward of the op: the tile or the chunk kernel, chosen independently of the forward."""
    candidates = {"tile": functools.partial(_tile_backward, do, dden, q, k, v, a, a2, o, ylo, den, normalize, parts,
                                            eps),
                  "chunk": functools.partial(_backward, do, dden, q, k, v, a, a2, o, ylo, den, normalize, parts,
                                             chunk_size, eps)}
    key = kernel_key("bwd", q, v, a, normalize, parts, chunk_size, dden is not None, pair=a2 is not None)
    return candidates[choose_kernel(key, q.shape[2], candidates, _timer(q.device))]()


# ---------------------------------------------------------------------------------------------------------------
# autograd: a torch.library custom op where available (torch >= 2.4), else a plain autograd.Function

def _setup_context(ctx, inputs, output):
    q, k, v, a, a2, normalize, parts, chunk_size, eps = inputs
    o, den, ylo = output
    ctx.save_for_backward(q, k, v, a, a2, o, ylo, den)
    ctx.cfg = (normalize, parts, chunk_size, eps)


def _grads(ctx, do, dden, dylo, bwd):
    q, k, v, a, a2, o, ylo, den = ctx.saved_tensors
    normalize, parts, chunk_size, eps = ctx.cfg
    if do is None:
        do = torch.zeros_like(o)
    dq, dk, dv, da, da2 = bwd(do, dden if parts else None, q, k, v, a, a2, o, ylo, den, normalize, parts,
                              chunk_size, eps)
    return (dq, dk, dv, (da if a is not None else None), (da2 if a2 is not None else None),
            None, None, None, None)


# torch.library.custom_op (torch >= 2.4; the project needs 2.5): torch.compile traces through the kernels
@torch.library.custom_op("lion::chunk_attention_fwd", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: Optional[torch.Tensor],
            a2: Optional[torch.Tensor], normalize: bool, parts: bool, chunk_size: int, eps: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward_any(q, k, v, a, a2, normalize, parts, chunk_size, eps)



@_fwd_op.register_fake
def _(q, k, v, a, a2, normalize, parts, chunk_size, eps):
    B, H, L, _ = q.shape
    acc = _acc_dtype(q.dtype)
    o = q.new_empty(B, H, L, v.shape[-1], dtype=acc if parts else q.dtype)
    ylo = q.new_empty(B, H, L, v.shape[-1], dtype=torch.bfloat16) if _resid(q, normalize, parts) else \
        o.new_empty(0)
    return o, q.new_empty(B, H, L, dtype=acc), ylo



@torch.library.custom_op("lion::chunk_attention_bwd", mutates_args=())
def _bwd_op(do: torch.Tensor, dden: Optional[torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            a: Optional[torch.Tensor], a2: Optional[torch.Tensor], o: torch.Tensor, ylo: torch.Tensor,
            den: torch.Tensor, normalize: bool, parts: bool, chunk_size: int, eps: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward_any(do, dden, q, k, v, a, a2, o, ylo, den, normalize, parts, chunk_size, eps)



@_bwd_op.register_fake
def _(do, dden, q, k, v, a, a2, o, ylo, den, normalize, parts, chunk_size, eps):
    da = den.new_empty(den.shape) if a is not None else den.new_empty(0)
    da2 = den.new_empty(den.shape) if a2 is not None else den.new_empty(0)
    return q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape, dtype=q.dtype), da, da2



_fwd_op.register_autograd(lambda ctx, do, dden, dylo: _grads(ctx, do, dden, dylo, _bwd_op),
                          setup_context=_setup_context)



def _apply(q, k, v, a, a2, normalize, parts, chunk_size, eps):
    return _fwd_op(q, k, v, a, a2, normalize, parts, chunk_size, eps)


# ---------------------------------------------------------------------------------------------------------------

def _check(q, k, v, log_decay, attention_mask, chunk_size):
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or tuple(v.shape[:3]) != tuple(q.shape[:3]):
        raise ValueError(f"lion_attention_triton: q, k must be [B, H, L, D] and v [B, H, L, Dv]; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, L, D = q.shape
    if D > MAX_HEAD_DIM or v.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"lion_attention_triton: head dims up to {MAX_HEAD_DIM} are supported, got D={D}, "
                         f"Dv={v.shape[-1]}; split the heads further or use backend='torch'")
    check_dtypes(q, k, v, log_decay, where="lion_attention_triton")
    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    if q.dtype not in floats:
        raise TypeError(f"lion_attention_triton: q, k, v must be float16, bfloat16, float32 or float64; got "
                        f"{q.dtype}; cast them, or use backend='torch'")
    if not (q.device == k.device == v.device):
        raise ValueError(f"lion_attention_triton: q, k, v are on different devices ({q.device}, {k.device}, "
                         f"{v.device})")
    if q.device.type != "cuda" and not (INTERPRET and q.device.type == "cpu"):
        raise ValueError(f"lion_attention_triton: needs CUDA tensors (got {q.device}); on the CPU set "
                         "TRITON_INTERPRET=1 before importing lion (slow, for tests) or use backend='torch'")
    for x in (log_decay if is_pair(log_decay) else (log_decay,)):
        if x is not None and tuple(x.shape) not in ((H,), (B, H, L)):
            raise ValueError(f"lion_attention_triton: log_decay must be None, [H] = [{H}] or [B, H, L] = [{B}, {H}, "
                             f"{L}] (or a pair of those), got {tuple(x.shape)}")
    if attention_mask is not None and tuple(attention_mask.shape) != (B, L):
        raise ValueError(f"lion_attention_triton: attention_mask must be [B, L] = [{B}, {L}], got "
                         f"{tuple(attention_mask.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"lion_attention_triton: chunk_size must be a positive integer, got {chunk_size!r}")


def lion_attention_triton(q, k, v, log_decay=None, *, chunk_size=64, normalize=True, attention_mask=None,
                          return_parts=False, eps=1e-6):
    """LION attention with the fused Triton kernels; semantics of `lion.ops.lion_attention`. The chunk kernels
    (docs/MATH.md section 2.3) or, at short L, the parallel-tile kernels compute it: see choose_kernel and TUNING["short_kernel"].

    Args:
        q, k: [B, H, L, D]; v: [B, H, L, Dv] (D, Dv <= 128; any strides; one floating dtype).
        log_decay: None (LIT), [H] (D) or [B, H, L] (S), log lambda <= 0 (down to -inf: lambda = 0); or a pair
            (forward, backward) of those, the lower / upper triangle of the mask (lion.ops.lion_attention); each
            gradient has its input's shape.
        chunk_size: the chunk kernels' chunk, rounded up to a power of two in [16, 128] (results do not depend on
            it; the tile kernels ignore it).
        normalize: y = num / den (den clamped to |den| >= eps keeping its sign), else y = num.
        attention_mask: [B, L] bool/int, True = real token; pad keys and their decays are removed.
        return_parts: return (num [B, H, L, Dv], den [B, H, L]) in float32 (float64 for float64 inputs).
    Returns:
        y [B, H, L, Dv] in q's dtype, or (num, den).
    """
    if isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor):
        q, k, v = autocast_promote(q, k, v)
    _check(q, k, v, log_decay, attention_mask, chunk_size)
    if INTERPRET and not q.is_cuda:
        import numpy
        problem = interpreter_problem(triton.__version__, numpy.__version__)
        if problem:
            raise RuntimeError(f"lion_attention_triton: {problem}")
    B, H, L, _ = q.shape
    acc = _acc_dtype(q.dtype)
    pad = None if attention_mask is None else ~attention_mask.to(device=q.device, dtype=torch.bool)

    def per_token(x):  # [B, H, L] contiguous in the accumulation dtype, pad tokens' own log-decays 0
        if x is None:
            return None
        x = x.to(acc)
        if x.dim() == 1:
            x = x[None, :, None].expand(B, H, L)
        if pad is not None:
            x = x.masked_fill(pad[:, None, :], 0)
        return x.contiguous()
    pair = is_pair(log_decay)
    a = per_token(log_decay[0] if pair else log_decay)
    a2 = per_token(log_decay[1]) if pair and log_decay[1] is not log_decay[0] else None
    if pad is not None:  # selected away (not multiplied): NaN / Inf at pad positions cannot reach a real token
        q = q.masked_fill(pad[:, None, :, None], 0)
        k = k.masked_fill(pad[:, None, :, None], 0)
        v = v.masked_fill(pad[:, None, :, None], 0)
    o, den, _ = _apply(q, k, v, a, a2, bool(normalize), bool(return_parts), int(chunk_size), float(eps))
    return (o, den) if return_parts else o
