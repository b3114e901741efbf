"""Chunkwise form of LION attention (SPEC section 2.3), in pure PyTorch.

Split L into N chunks of C tokens (the tail is padded with inert tokens: k = v = 0, log-decay 0). Inside chunk n,
with local inclusive prefix sums b_i = sum_{t=s..i} a_t and exclusive suffix sums d_i = sum_{t=i+1..e-1} a_t
(s, e the chunk's first and one-past-last token):

    intra:    the parallel form on the C x C block, mask exp(segsum(a)) (both triangles)
    forward:  F_n = exp(g_n) F_{n-1} + sum_j exp(d_j) k_j v_j^T        token i reads exp(b_i) q_i^T F_{n-1}
    backward: U_n = exp(g_n) U_{n+1} + sum_j exp(b_j) k_j v_j^T        token i reads exp(d_i) q_i^T U_{n+1}

where g_n = b_{e-1} is the chunk's total log-decay. Every exponent is a sum of log-decays <= 0 over a range that lies
inside one chunk (or is a product of such factors), so nothing overflows and no long prefix sum is ever differenced.
Memory: O(L C) for the blocks and O(N D Dv) for the chunk states; no L x L tensor. The normaliser rides along as a
ones column of v.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lion.ops.naive import prepare_inputs, safe_den, segsum


def _chunk_states(delta, g, reverse: bool):
    """Exclusive scan over chunks: out[n] = sum over chunks m before n (after n if reverse) of decayed delta[m].

    delta [B, H, N, D, E], g None | [B, H, N] (chunk total log-decays). Returns [B, H, N, D, E].
    """
    if g is None:  # no decay: a plain exclusive cumulative sum
        if reverse:
            delta = torch.flip(delta, [2])
        out = torch.cumsum(delta, dim=2) - delta
        return torch.flip(out, [2]) if reverse else out
    N = delta.shape[2]
    order = range(N - 1, -1, -1) if reverse else range(N)
    decay = torch.exp(g)
    state = torch.zeros_like(delta[:, :, 0])
    outs = [None] * N
    for n in order:
        outs[n] = state
        state = decay[:, :, n, None, None] * state + delta[:, :, n]
    return torch.stack(outs, dim=2)


def lion_attention_chunk(q, k, v, log_decay=None, *, chunk_size=64, normalize=True, attention_mask=None,
                         return_parts=False, eps=1e-6):
    """LION attention, chunkwise form. Same arguments and results as `lion_attention_parallel`, plus chunk_size."""
    out_dtype = q.dtype
    q, k, v, a = prepare_inputs(q, k, v, log_decay, attention_mask)
    B, H, L, D = q.shape
    C = max(1, min(int(chunk_size), L))
    N = -(-L // C)
    pad = N * C - L
    v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    if a is not None and a.dim() == 1:
        a = a[None, :, None].expand(B, H, L)
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        a = None if a is None else F.pad(a, (0, pad))
    E = v.shape[-1]
    qc, kc, vc = q.view(B, H, N, C, D), k.view(B, H, N, C, D), v.view(B, H, N, C, E)

    scores = qc @ kc.transpose(-1, -2)  # [B, H, N, C, C]
    if a is None:
        g = None
        kF = kB = kc
    else:
        ac = a.reshape(B, H, N, C)
        scores = scores * torch.exp(segsum(ac))
        b = torch.cumsum(ac, dim=-1)
        rev = torch.flip(torch.cumsum(torch.flip(ac, [-1]), -1), [-1])
        d = torch.cat([rev[..., 1:], torch.zeros_like(rev[..., :1])], dim=-1)
        g = b[..., -1]
        eb, ed = torch.exp(b)[..., None], torch.exp(d)[..., None]
        kF, kB = kc * ed, kc * eb
    num = scores @ vc

    fwd_states = _chunk_states(kF.transpose(-1, -2) @ vc, g, reverse=False)  # [B, H, N, D, E]
    bwd_states = _chunk_states(kB.transpose(-1, -2) @ vc, g, reverse=True)
    if a is None:
        num = num + qc @ (fwd_states + bwd_states)
    else:
        num = num + (qc * eb) @ fwd_states + (qc * ed) @ bwd_states

    num = num.reshape(B, H, N * C, E)[:, :, :L]
    num, den = num[..., :-1], num[..., -1]
    if return_parts:
        return num, den
    y = num / safe_den(den, eps)[..., None] if normalize else num
    return y.to(out_dtype)
