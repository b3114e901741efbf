"""Parallel form of LION attention: full linear attention with the L x L decay mask (docs/MATH.md sections 1, 2.1).

This is the oracle of the project: every other form and every kernel is tested against it in float64.
It materialises L x L matrices, so it is O(L^2) in memory; it is also the fastest form at short L on a CPU.

Shapes: q, k [B, H, L, D]; v [B, H, L, Dv]; log_decay None | [H] | [B, H, L] | a pair (forward, backward) of
[H] / [B, H, L] (the lower triangle i > j decays with the forward log-decays, the upper one with the backward
ones; one tensor is the pair (a, a)); attention_mask [B, L].
"""
from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def safe_den(den: torch.Tensor, eps: float) -> torch.Tensor:
    """Guard a denominator against zero without shifting it: |den| < eps becomes +-eps, all else is untouched."""
    return torch.where(den >= 0, den.clamp_min(eps), den.clamp_max(-eps))


def finish(num: torch.Tensor, den: torch.Tensor, out_dtype: torch.dtype, normalize: bool, return_parts: bool,
           eps: float):
    """The output step every PyTorch form shares: (num, den) as they are with return_parts, else num / den
    (guarded by `safe_den`) or num alone, in the caller's dtype."""
    if return_parts:
        return num, den
    y = num / safe_den(den, eps)[..., None] if normalize else num
    return y.to(out_dtype)


def is_pair(log_decay) -> bool:
    """Whether log_decay is a (forward, backward) pair rather than None or one tensor."""
    return isinstance(log_decay, (tuple, list))


def split_decays(a):
    """(forward, backward) log-decays of a prepared log-decay: (None, None), (a, a) or the pair itself."""
    if a is None:
        return None, None
    return tuple(a) if is_pair(a) else (a, a)


def prepare_inputs(q, k, v, log_decay, attention_mask):
    """Cast to the accumulation dtype and apply padding (docs/MATH.md section 1: pad keys/values are zero, pad decays are 0).

    Pad positions are selected away (torch.where), never multiplied by a 0/1 mask, so that whatever they hold, NaN
    and Inf included, cannot reach a real token; pad queries are zeroed too, so that pad outputs stay finite.
    Returns q, k, v and a log-decay that is None, [H] (no padding) or [B, H, L], or a pair (forward, backward) of
    those (both [B, H, L] unless both are [H] and there is no padding).
    """
    dt = acc_dtype(q.dtype)
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    if is_pair(log_decay):
        a = tuple(x.to(dt) for x in log_decay)
        if a[0].dim() != a[1].dim():  # one [H], one [B, H, L]: both per token
            shape = a[0].shape if a[0].dim() == 3 else a[1].shape
            a = tuple(x[None, :, None].expand(shape) if x.dim() == 1 else x for x in a)
    else:
        a = None if log_decay is None else log_decay.to(dt)
    if attention_mask is not None:
        B, H, L, _ = q.shape
        m = attention_mask.to(device=q.device, dtype=torch.bool)
        zero = torch.zeros((), dtype=dt, device=q.device)
        mk = m[:, None, :, None]
        q, k, v = torch.where(mk, q, zero), torch.where(mk, k, zero), torch.where(mk, v, zero)

        def pad_decay(x):
            if x.dim() == 1:
                x = x[None, :, None].expand(B, H, L)
            return torch.where(m[:, None, :], x, zero)
        if a is not None:
            a = tuple(pad_decay(x) for x in a) if is_pair(a) else pad_decay(a)
    return q, k, v, a


def segsum_lower(a: torch.Tensor) -> torch.Tensor:
    """Lower segment sums: out[..., i, j] = sum_{t = j+1 .. i} a[..., t] for i > j, 0 on and above the diagonal.

    Computed with a masked cumulative sum, so each entry only accumulates the values between j and i: no
    cancellation of large prefix sums (stable for long sequences in low precision, exact with -inf).
    a: [..., T] -> [..., T, T].
    """
    T = a.shape[-1]
    ones = torch.ones(T, T, dtype=torch.bool, device=a.device)
    # y[..., t, j] = a_t where t > j: a cumulative sum over t gives lower[i, j] = sum_{j < t <= i} a_t.
    y = a[..., :, None].expand(*a.shape, T).masked_fill(~torch.tril(ones, diagonal=-1), 0)
    return torch.cumsum(y, dim=-2).masked_fill_(~torch.tril(ones), 0)  # cumsum's backward needs no output


def segsum(a: torch.Tensor, a_bwd: torch.Tensor | None = None) -> torch.Tensor:
    """Segment sums of the mask's exponent (0 on the diagonal): out[..., i, j] = sum_{t = j+1 .. i} a[..., t] for
    i > j and sum_{t = i+1 .. j} b[..., t] for i < j, with b = a_bwd (default a: the symmetric segment sums)."""
    lower = segsum_lower(a)
    return lower + (lower if a_bwd is None else segsum_lower(a_bwd)).transpose(-1, -2)


def decay_mask(log_decay, L: int, device, dtype) -> torch.Tensor | None:
    """The mask M (docs/MATH.md section 1) as exp(segsum); None for no decay. [H] -> [1, H, L, L]; [B, H, L] -> [B, H, L, L].
    A pair (forward, backward) gives the lower triangle from the forward and the upper one from the backward
    log-decays (both [H], or both [B, H, L])."""
    if log_decay is None:
        return None
    a_f, a_b = split_decays(log_decay)
    if a_f.dim() == 1:
        idx = torch.arange(L, device=device, dtype=dtype)
        dist = idx[:, None] - idx[None, :]  # i - j
        lo = a_f[None, :, None, None] * dist
        up = lo if a_b is a_f else a_b[None, :, None, None] * dist
        # select, so that a log-decay of -inf gives exp(-inf) = 0 off the diagonal and 1 on it (no -inf * 0)
        expo = torch.where(dist > 0, lo, torch.where(dist < 0, -up, torch.zeros((), dtype=dtype, device=device)))
        return torch.exp(expo)
    return torch.exp(segsum(a_f, None if a_b is a_f else a_b))


def lion_attention_parallel(q, k, v, log_decay=None, *, normalize=True, attention_mask=None,
                            return_parts=False, eps=1e-6):
    """LION attention, parallel form: A = (Q K^T) * M; y = A V / A 1 (or A V unnormalised).

    Returns y [B, H, L, Dv] in q's dtype, or (num [B, H, L, Dv], den [B, H, L]) in the accumulation dtype.
    """
    out_dtype = q.dtype
    q, k, v, a = prepare_inputs(q, k, v, log_decay, attention_mask)
    L = q.shape[-2]
    scores = q @ k.transpose(-1, -2)
    mask = decay_mask(a, L, q.device, q.dtype)
    if mask is not None:
        scores = scores * mask
    return finish(scores @ v, scores.sum(-1), out_dtype, normalize, return_parts, eps)
