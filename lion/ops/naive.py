"""Parallel form of LION attention: full linear attention with the L x L decay mask (SPEC sections 1, 2.1).

This is the oracle of the project: every other form and every kernel is tested against it in float64.
It materialises L x L matrices, so it is O(L^2) in memory; it is also the fastest form at short L on a CPU.

Shapes: q, k [B, H, L, D]; v [B, H, L, Dv]; log_decay None | [H] | [B, H, L]; attention_mask [B, L].
"""
from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def safe_den(den: torch.Tensor, eps: float) -> torch.Tensor:
    """Guard a denominator against zero without shifting it: |den| < eps becomes +-eps, all else is untouched."""
    return torch.where(den >= 0, den.clamp_min(eps), den.clamp_max(-eps))


def prepare_inputs(q, k, v, log_decay, attention_mask):
    """Cast to the accumulation dtype and apply padding (SPEC 1: pad keys/values are zero, pad decays are 0).

    Returns q, k, v and a log-decay that is None, [H] (no padding) or [B, H, L].
    """
    dt = acc_dtype(q.dtype)
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    a = None if log_decay is None else log_decay.to(dt)
    if attention_mask is not None:
        B, H, L, _ = q.shape
        m = attention_mask.to(device=q.device, dtype=torch.bool)
        mf = m.to(dt)[:, None, :, None]
        k, v = k * mf, v * mf
        if a is not None:
            if a.dim() == 1:
                a = a[None, :, None].expand(B, H, L)
            a = torch.where(m[:, None, :], a, torch.zeros((), dtype=dt, device=a.device))
    return q, k, v, a


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Symmetric segment sums: out[..., i, j] = sum_{t = min(i,j)+1 .. max(i,j)} a[..., t]  (0 on the diagonal).

    Computed with a masked cumulative sum, so each entry only accumulates the values between i and j: no
    cancellation of large prefix sums (stable for long sequences in low precision). a: [..., T] -> [..., T, T].
    """
    T = a.shape[-1]
    ones = torch.ones(T, T, dtype=torch.bool, device=a.device)
    # y[..., t, j] = a_t where t > j: a cumulative sum over t gives lower[i, j] = sum_{j < t <= i} a_t.
    y = a[..., :, None].expand(*a.shape, T).masked_fill(~torch.tril(ones, diagonal=-1), 0)
    lower = torch.cumsum(y, dim=-2).masked_fill_(~torch.tril(ones), 0)  # cumsum's backward needs no output
    return lower + lower.transpose(-1, -2)


def decay_mask(log_decay, L: int, device, dtype) -> torch.Tensor | None:
    """The mask M (SPEC 1) as exp(segsum); None for no decay. [H] -> [1, H, L, L]; [B, H, L] -> [B, H, L, L]."""
    if log_decay is None:
        return None
    if log_decay.dim() == 1:
        idx = torch.arange(L, device=device, dtype=dtype)
        dist = (idx[:, None] - idx[None, :]).abs()
        return torch.exp(log_decay[None, :, None, None] * dist)
    return torch.exp(segsum(log_decay))


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
    num = scores @ v
    den = scores.sum(-1)
    if return_parts:
        return num, den
    y = num / safe_den(den, eps)[..., None] if normalize else num
    return y.to(out_dtype)
