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


def _block_mask(ac):
    """The C x C decay mask of every chunk, exp(segsum(a)) -> [B, H, N, C, C] (None without decay)."""
    return None if ac is None else segsum(ac).exp_()


def _intra(qc, kc, vc, mask):
    """Within each chunk: the parallel form on the C x C block with the two-sided mask. -> [B, H, N, C, E]
    Runs only inside _ChunkLion (no autograd recording), so it works in place."""
    scores = qc @ kc.transpose(-1, -2)  # [B, H, N, C, C]
    if mask is not None:
        scores.mul_(mask)
    return scores @ vc


def _inter(qc, kc, vc, ac):
    """Between chunks: forward states from the left, backward states from the right. -> [B, H, N, C, E]"""
    if ac is None:
        delta = kc.transpose(-1, -2) @ vc
        return qc @ (_chunk_states(delta, None, reverse=False) + _chunk_states(delta, None, reverse=True))
    b = torch.cumsum(ac, dim=-1)  # inclusive prefix sums inside the chunk
    rev = torch.flip(torch.cumsum(torch.flip(ac, [-1]), -1), [-1])
    d = torch.cat([rev[..., 1:], torch.zeros_like(rev[..., :1])], dim=-1)  # exclusive suffix sums
    g = b[..., -1]
    eb, ed = torch.exp(b)[..., None], torch.exp(d)[..., None]
    fwd = _chunk_states((kc * ed).transpose(-1, -2) @ vc, g, reverse=False)  # [B, H, N, D, E]
    out = (qc * eb) @ fwd
    del fwd
    bwd = _chunk_states((kc * eb).transpose(-1, -2) @ vc, g, reverse=True)
    return out + (qc * ed) @ bwd


def _chunk_core(qc, kc, vc, ac, mask=None):
    """num_i = sum_j (q_i . k_j) M_ij v_j for chunked q, k [B, H, N, C, D], v [B, H, N, C, E]."""
    if mask is None:
        mask = _block_mask(ac)
    out = _intra(qc, kc, vc, mask)
    return out.add_(_inter(qc, kc, vc, ac))


def _chunk_dlogdecay(qc, kc, vc, gc, ac, mask):
    """Gradient of the chunked log-decays [B, H, N, C] given g = d loss / d num.

    With W_ij = (q_i.k_j)(g_i.v_j) M_ij and c = cumsum(a): dL/dc_t = sum_j sign(t - j) (W_tj + W_jt), and
    dL/da_t = sum_{s >= t} dL/dc_s. Within a chunk W is a C x C block; from earlier chunks the sums are read off the
    forward states of k v^T and q g^T, from later chunks off the backward states.
    """
    B, H, N, C, _ = qc.shape
    W = (qc @ kc.transpose(-1, -2)).mul_(gc @ vc.transpose(-1, -2)).mul_(mask)
    ones = torch.ones(C, C, device=qc.device, dtype=qc.dtype)
    sign = torch.tril(ones, -1) - torch.triu(ones, 1)  # +1 where j < t, -1 where j > t
    dc = ((W + W.transpose(-1, -2)) * sign).sum(-1)
    del W
    b = torch.cumsum(ac, dim=-1)
    rev = torch.flip(torch.cumsum(torch.flip(ac, [-1]), -1), [-1])
    d = torch.cat([rev[..., 1:], torch.zeros_like(rev[..., :1])], dim=-1)
    g = b[..., -1]
    eb, ed = torch.exp(b)[..., None], torch.exp(d)[..., None]
    for w_state, w_read, reverse, sgn in ((ed, eb, False, 1.0), (eb, ed, True, -1.0)):
        kv = _chunk_states((kc * w_state).transpose(-1, -2) @ vc, g, reverse)
        qg = _chunk_states((qc * w_state).transpose(-1, -2) @ gc, g, reverse)
        dc = dc + sgn * w_read[..., 0] * ((((qc @ kv) * gc).sum(-1)) + (((kc @ qg) * vc).sum(-1)))
    dc = dc.reshape(B, H, N * C)
    return torch.flip(torch.cumsum(torch.flip(dc, [-1]), -1), [-1]).reshape(B, H, N, C)


class _ChunkLion(torch.autograd.Function):
    """The chunk core with a hand-written backward: only the inputs are saved, so training memory stays O(L C)
    for the blocks plus O(N D Dv) for the states. Since M is symmetric, each input gradient is itself a LION product:

        dq = core(g, v, k),   dk = core(v, g, q),   dv = core(k, q, g)   where core(x, y, z)_i = sum_j (x_i.y_j) M_ij z_j
    """

    @staticmethod
    def forward(ctx, qc, kc, vc, ac):
        ctx.save_for_backward(qc, kc, vc, ac)
        return _chunk_core(qc, kc, vc, ac)

    @staticmethod
    def backward(ctx, gc):
        qc, kc, vc, ac = ctx.saved_tensors
        gc = gc.contiguous()
        mask = _block_mask(ac)
        dq = _chunk_core(gc, vc, kc, ac, mask) if ctx.needs_input_grad[0] else None
        dk = _chunk_core(vc, gc, qc, ac, mask) if ctx.needs_input_grad[1] else None
        dv = _chunk_core(kc, qc, gc, ac, mask) if ctx.needs_input_grad[2] else None
        da = _chunk_dlogdecay(qc, kc, vc, gc, ac, mask) if ac is not None and ctx.needs_input_grad[3] else None
        return dq, dk, dv, da


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

    ac = None if a is None else a.reshape(B, H, N, C)
    num = _ChunkLion.apply(qc, kc, vc, ac)
    num = num.reshape(B, H, N * C, E)[:, :, :L]
    num, den = num[..., :-1], num[..., -1]
    if return_parts:
        return num, den
    y = num / safe_den(den, eps)[..., None] if normalize else num
    return y.to(out_dtype)
