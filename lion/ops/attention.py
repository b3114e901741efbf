"""`lion_attention`: the one entry point to the LION core. Validates inputs and dispatches to a form and backend."""
from __future__ import annotations

import functools

import torch

from lion.ops.chunk import lion_attention_chunk
from lion.ops.naive import is_pair, lion_attention_parallel
from lion.ops.recurrent import lion_attention_recurrent

FORMS = ("auto", "parallel", "chunk", "recurrent")
BACKENDS = ("auto", "torch", "triton")
# form="auto" on the PyTorch path, from the shape (measured fwd+bwd on one thread of a 2-core x86_64 CPU, B*H 4..32,
# head dim D 16..64, chunk 64, against the parallel form and the chunk form at other chunk sizes; bench_core.py):
# - no decay: the chunk form, which is then plain linear attention, q (k^T v): O(L D Dv), cheaper than the parallel
#   form's O(L^2 D) from L ~ D on;
# - with decay, the chunk form in one block of L tokens while L <= k D (the parallel form with a fused backward
#   that keeps only the inputs: 1.3-1.4x SDPA time at L = 197, D = 64, against 1.75-2.6x for the autograd parallel
#   form), with k = 4 for a per-head decay and 3.5 for a per-token decay (where its L x L mask costs more), and in
#   chunks of `chunk_size` beyond. The autograd parallel form is never chosen: it is the reference.
AUTO_ONE_BLOCK_PER_HEAD_DIM = {"head": 4.0, "token": 3.5}


def auto_form(L: int, log_decay, head_dim: int = 64, chunk_size: int = 64) -> tuple[str, int]:
    """(form, chunk size) that form="auto" runs on the PyTorch path for a sequence of length L, this log_decay
    (None, one tensor or a (forward, backward) pair: per token if either is), head dim and chunk size (see above)."""
    if log_decay is None:
        return "chunk", chunk_size
    dims = [x.dim() for x in (log_decay if is_pair(log_decay) else (log_decay,))]
    kind = "token" if 3 in dims else "head"
    if L <= max(chunk_size, AUTO_ONE_BLOCK_PER_HEAD_DIM[kind] * head_dim):
        return "chunk", max(L, 1)
    return "chunk", chunk_size


@functools.lru_cache(maxsize=None)
def _triton_entry():
    """The Triton entry point, or None when the kernels cannot be imported here."""
    try:
        from lion.ops.triton import lion_attention_triton
    except Exception:  # noqa: BLE001 - no triton, no driver, or an old version: fall back to PyTorch
        return None
    return lion_attention_triton


# Whether lion_attention checks that the log-decays are <= 0: "cpu" (default) checks CPU tensors only, where the
# check costs no device synchronisation; "always" checks CUDA tensors too (one host-device sync per call: for
# debugging); "never" checks nothing. Never checked while torch.compile traces (a data-dependent branch).
CHECK_LOG_DECAY_VALUES = "cpu"


def _decay_parts(log_decay):
    """[(name, tensor)] of the log-decays of a call: none, one, or the two of a pair."""
    if log_decay is None:
        return []
    if is_pair(log_decay):
        return list(zip(("log_decay[0] (forward)", "log_decay[1] (backward)"), log_decay))
    return [("log_decay", log_decay)]


def autocast_promote(q, k, v):
    """Under torch.autocast (for q's device type) q, k, v of different floating dtypes are promoted to the widest,
    as autocast does for its "promote" ops: a layer's fp32 feature map (e.g. a norm, which CUDA autocast runs in
    fp32) beside bf16 values is then not an error. Outside autocast nothing changes (check_dtypes decides)."""
    if q.dtype == k.dtype == v.dtype or not all(t.is_floating_point() for t in (q, k, v)):
        return q, k, v
    if torch.compiler.is_compiling() or not torch.is_autocast_enabled(q.device.type):
        return q, k, v
    dt = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    return q.to(dt), k.to(dt), v.to(dt)


def check_dtypes(q, k, v, log_decay, where="lion_attention"):
    """Raise one TypeError for non-floating inputs or q, k, v of different dtypes (no sync: dtypes only)."""
    named = [("q", q), ("k", k), ("v", v)] + _decay_parts(log_decay)
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{where}: {name} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{where}: {name} must be a floating-point tensor, got {t.dtype}; convert it with "
                            f"{name.split(' ')[0]}.float() (or .to(torch.bfloat16) / .half())")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{where}: q, k and v must have one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}; cast "
                        "them to one (e.g. k.to(q.dtype)); under torch.autocast they are promoted to the widest "
                        "(log_decay may keep its own floating dtype)")


def check_decay_values(log_decay, attention_mask):
    """Raise one ValueError when a log-decay at a real token is > 0 (a decay > 1); see CHECK_LOG_DECAY_VALUES."""
    mode = CHECK_LOG_DECAY_VALUES
    if mode == "never" or torch.compiler.is_compiling():
        return
    for name, a in _decay_parts(log_decay):
        if mode != "always" and a.device.type != "cpu":
            continue
        a = a.detach()
        if attention_mask is not None and a.dim() == 3:
            m = attention_mask.to(device=a.device, dtype=torch.bool)[:, None, :]
            a = torch.where(m, a, torch.zeros((), dtype=a.dtype, device=a.device))
        if bool((a > 0).any()):
            raise ValueError(f"lion_attention: {name} must be <= 0 (it is log lambda, lambda in [0, 1]), got a "
                             f"maximum of {a.max().item():.4g}; pass log(lambda) (e.g. torch.nn.functional."
                             "logsigmoid(gate)), not lambda itself")


def check_inputs(q, k, v, log_decay, attention_mask, form, chunk_size, backend):
    """Raise one ValueError (TypeError for dtypes) naming the argument, what it got and what it accepts."""
    if form not in FORMS:
        raise ValueError(f"lion_attention: form={form!r} is unknown; use one of {FORMS}")
    if backend not in BACKENDS:
        raise ValueError(f"lion_attention: backend={backend!r} is unknown; use one of {BACKENDS}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"lion_attention: chunk_size must be a positive integer, got {chunk_size!r}")
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"lion_attention: q and k must both be [B, H, L, D], got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    B, H, L, _ = q.shape
    if v.dim() != 4 or tuple(v.shape[:3]) != (B, H, L):
        raise ValueError(f"lion_attention: v must be [B, H, L, Dv] = [{B}, {H}, {L}, Dv], got {tuple(v.shape)}")
    if is_pair(log_decay):
        if len(log_decay) != 2 or not all(isinstance(x, torch.Tensor) for x in log_decay):
            raise ValueError("lion_attention: a log_decay pair must be a tuple of two tensors (forward, backward), "
                             f"got {type(log_decay).__name__} of "
                             f"{[type(x).__name__ for x in log_decay]}")
        for name, x in zip(("log_decay[0] (forward)", "log_decay[1] (backward)"), log_decay):
            if tuple(x.shape) not in ((H,), (B, H, L)):
                raise ValueError(f"lion_attention: {name} must be [H] = [{H}] or [B, H, L] = [{B}, {H}, {L}], "
                                 f"got {tuple(x.shape)}")
    elif log_decay is not None and tuple(log_decay.shape) not in ((H,), (B, H, L)):
        raise ValueError(f"lion_attention: log_decay must be None, [H] = [{H}], [B, H, L] = [{B}, {H}, {L}] or a "
                         f"pair (forward, backward) of those, got {tuple(log_decay.shape)}")
    if attention_mask is not None and tuple(attention_mask.shape) != (B, L):
        raise ValueError(f"lion_attention: attention_mask must be [B, L] = [{B}, {L}], got "
                         f"{tuple(attention_mask.shape)}")
    check_dtypes(q, k, v, log_decay)
    check_decay_values(log_decay, attention_mask)


def lion_attention(q, k, v, log_decay=None, *, form="auto", chunk_size=64, normalize=True, attention_mask=None,
                   backend="auto", return_parts=False, eps=1e-6):
    """LION bidirectional linear attention (docs/MATH.md sections 1 and 2).

    Args:
        q, k: [B, H, L, D] queries and keys (after the feature map and scale).
        v: [B, H, L, Dv] values.
        log_decay: None (LION-LIT), [H] (LION-D, one decay per head) or [B, H, L] (LION-S), log lambda <= 0; or a
            pair (forward, backward) of [H] / [B, H, L] log-decays, one per direction: below the diagonal (i > j)
            M_ij = exp(sum_{t=j+1..i} forward_t), above it (i < j) M_ij = exp(sum_{t=i+1..j} backward_t), M_ii = 1.
            One tensor a is the pair (a, a) (the symmetric mask); `paper_code_log_decays` gives the pair of the
            authors' LION-S code. The gradient of each has its shape.
        form: "parallel", "chunk", "recurrent" or "auto" (Triton's fused chunk kernel on CUDA; on the PyTorch path
            the chunk form, chosen by `auto_form`: in one block for short sequences with decay, plain linear
            attention without decay).
        chunk_size: C of the chunk form (any C >= 1; C >= L is the parallel form in one chunk).
        normalize: divide by the shared normaliser (the "scaled" LION); False returns the numerator.
        attention_mask: [B, L], True/1 for real tokens; padding is equivalent to removing the pad tokens.
        backend: "torch", "triton" (chunkwise, CUDA or TRITON_INTERPRET=1) or "auto" (Triton on CUDA if importable).
        return_parts: return (num [B, H, L, Dv], den [B, H, L]) before the division, in the accumulation dtype
            (float32, or float64 for float64 inputs); used to combine the scans of the multi-scan variants.
        eps: |den| is clamped to at least eps (keeping its sign); no constant is added.

    Raises one ValueError / TypeError naming the argument for bad shapes, non-floating or mixed-dtype q, k, v
    (under torch.autocast mixed floating dtypes are promoted to the widest instead), and
    log-decays > 0 at real tokens (checked on CPU tensors; on CUDA only with CHECK_LOG_DECAY_VALUES = "always",
    since the check synchronises). Whatever pad positions hold (NaN and Inf included) never reaches a real token.
    Returns:
        [B, H, L, Dv] in q's dtype (accumulated in float32 for half inputs), or (num, den) with return_parts.
    """
    if isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor):
        q, k, v = autocast_promote(q, k, v)
    check_inputs(q, k, v, log_decay, attention_mask, form, chunk_size, backend)
    kw = dict(normalize=normalize, attention_mask=attention_mask, return_parts=return_parts, eps=eps)
    use_triton = backend == "triton" or (backend == "auto" and q.is_cuda and form in ("auto", "chunk")
                                         and _triton_entry() is not None)
    if use_triton:
        if form not in ("auto", "chunk"):
            raise ValueError(f"lion_attention: backend='triton' computes the chunk form; got form={form!r}. Use "
                             "form='chunk' (or 'auto') with the Triton backend, or backend='torch' for this form")
        entry = _triton_entry()
        if entry is None:
            raise RuntimeError("lion_attention: backend='triton' but the Triton kernels could not be imported "
                               "(needs triton and a CUDA device, or TRITON_INTERPRET=1 set before importing lion); "
                               "use backend='torch'")
        return entry(q, k, v, log_decay, chunk_size=chunk_size, **kw)
    if form == "auto":
        form, chunk_size = auto_form(q.shape[2], log_decay, q.shape[3], chunk_size)
    if form == "parallel":
        return lion_attention_parallel(q, k, v, log_decay, **kw)
    if form == "chunk":
        return lion_attention_chunk(q, k, v, log_decay, chunk_size=chunk_size, **kw)
    return lion_attention_recurrent(q, k, v, log_decay, **kw)


def paper_code_log_decays(log_decay, order=None):
    """The (forward, backward) log-decay pair whose mask is the LION-S mask of the authors' public code.

    Their mask is the product of the decays from the key token j (inclusive) to the query token i (exclusive):
    M_ij = l_j ... l_{i-1} for i > j and l_{i+1} ... l_j for i < j. That is the forward log-decays shifted by one
    token (forward_t = a_{t-1}, forward_0 = 0) and the backward log-decays unshifted. Equal to the project's
    symmetric mask above the diagonal, and to it times l_j / l_i below it.

    log_decay: None, [H] (a constant decay: the shift changes nothing, returns (a, a)) or [B, H, L].
    order: for a multi-scan (`lion_attention_multiscan`), the scan's order (order[p] = raster index of the token at
        scan position p) with log_decay in raster order: the shift runs along the scan, and the pair comes back in
        raster order (what `lion_attention_multiscan` takes). None: the sequence order.
    Returns None or the pair, to pass as `lion_attention(..., log_decay=pair)`; gradients flow to log_decay.
    """
    if log_decay is None:
        return None
    if not isinstance(log_decay, torch.Tensor) or log_decay.dim() not in (1, 3):
        raise ValueError("paper_code_log_decays: log_decay must be None, [H] or [B, H, L], got "
                         f"{getattr(log_decay, 'shape', type(log_decay).__name__)}")
    if log_decay.dim() == 1:
        return log_decay, log_decay
    if order is not None:
        order = order.to(log_decay.device)
        forward = paper_code_log_decays(log_decay.index_select(-1, order))[0]
        return forward.index_select(-1, torch.argsort(order)), log_decay
    forward = torch.cat([torch.zeros_like(log_decay[..., :1]), log_decay[..., :-1]], dim=-1)
    return forward, log_decay
