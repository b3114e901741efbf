"""Chunkwise form of LION attention (docs/MATH.md section 2.3), in pure PyTorch.

Split L into N chunks of C tokens (the tail is padded with inert tokens: k = v = 0, log-decay 0). Inside chunk n,
with local inclusive prefix sums b_i = sum_{t=s..i} a_t and exclusive suffix sums d_i = sum_{t=i+1..e-1} a_t
(s, e the chunk's first and one-past-last token):

    intra:    the parallel form on the C x C block, mask exp(segsum(a)) (both triangles)
    forward:  F_n = exp(g_n) F_{n-1} + sum_j exp(d_j) k_j v_j^T        token i reads exp(b_i) q_i^T F_{n-1}
    backward: U_n = exp(g_n) U_{n+1} + sum_j exp(b_j) k_j v_j^T        token i reads exp(d_i) q_i^T U_{n+1}

where g_n = b_{e-1} is the chunk's total log-decay. Every exponent is a sum of log-decays <= 0 over a range that lies
inside one chunk (or is a product of such factors), so nothing overflows and no long prefix sum is ever differenced.
Memory: O(L C) for the blocks and O(N D Dv) for the chunk states; no L x L tensor. The normaliser rides along as a
ones column of v. A pair of log-decays (forward, backward) puts the forward ones in the forward states and below the
block diagonal, the backward ones in the backward states and above it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lion.ops.naive import finish, prepare_inputs, segsum, split_decays


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


def _block_mask(ac, acb=None):
    """The C x C decay mask of every chunk, exp(segsum(a)) -> [B, H, N, C, C] (None without decay); with acb the
    backward log-decays of a pair (upper triangle), else symmetric."""
    return None if ac is None else segsum(ac, acb).exp_()


def _intra(qc, kc, vc, mask):
    """Within each chunk: the parallel form on the C x C block with the two-sided mask. -> [B, H, N, C, E]
    Runs only inside _ChunkLion (no autograd recording), so it works in place."""
    scores = qc @ kc.transpose(-1, -2)  # [B, H, N, C, C]
    if mask is not None:
        scores.mul_(mask)
    return scores @ vc


def _weights(ac):
    """Per chunk: exp of the inclusive prefix sums b_i, of the exclusive suffix sums d_i and the total g of the
    log-decays (every exponent a sum of log-decays, none a difference)."""
    b = torch.cumsum(ac, dim=-1)  # inclusive prefix sums inside the chunk
    rev = torch.flip(torch.cumsum(torch.flip(ac, [-1]), -1), [-1])
    d = torch.cat([rev[..., 1:], torch.zeros_like(rev[..., :1])], dim=-1)  # exclusive suffix sums
    return torch.exp(b)[..., None], torch.exp(d)[..., None], b[..., -1]


def _inter(qc, kc, vc, ac, acb=None):
    """Between chunks: forward states from the left (log-decays ac), backward states from the right (acb, default
    ac). -> [B, H, N, C, E]"""
    if ac is None:
        delta = kc.transpose(-1, -2) @ vc
        return qc @ (_chunk_states(delta, None, reverse=False) + _chunk_states(delta, None, reverse=True))
    eb, ed, g = _weights(ac)
    fwd = _chunk_states((kc * ed).transpose(-1, -2) @ vc, g, reverse=False)  # [B, H, N, D, E]
    out = (qc * eb) @ fwd
    del fwd
    if acb is not None:
        eb, ed, g = _weights(acb)
    bwd = _chunk_states((kc * eb).transpose(-1, -2) @ vc, g, reverse=True)
    return out + (qc * ed) @ bwd


def _chunk_core(qc, kc, vc, ac, acb=None, mask=None):
    """num_i = sum_j (q_i . k_j) M_ij v_j for chunked q, k [B, H, N, C, D], v [B, H, N, C, E]; M from the
    forward log-decays ac (lower triangle) and the backward ones acb (upper; None: symmetric)."""
    if mask is None:
        mask = _block_mask(ac, acb)
    out = _intra(qc, kc, vc, mask)
    return out.add_(_inter(qc, kc, vc, ac, acb))


def _chunk_dlogdecay(qc, kc, vc, gc, ac, acb, mask):
    """Gradients of the chunked forward and backward log-decays [B, H, N, C] given g = d loss / d num.

    With W_ij = (q_i.k_j)(g_i.v_j) M_ij, c^F = cumsum(a^F), c^B = cumsum(a^B) (log M_ij = c^F_i - c^F_j below the
    diagonal, c^B_j - c^B_i above it):
        dL/dc^F_t = sum_{j < t} W_tj - sum_{i > t} W_it        dL/dc^B_t = sum_{i < t} W_it - sum_{j > t} W_tj
    and dL/da_t = sum_{s >= t} dL/dc_s. Within a chunk W is a C x C block; from earlier chunks the sums are read
    off the forward states (of k v^T with the forward decays, of q g^T with the backward ones), from later chunks
    off the backward states. Returns (da^F, da^B), or (da, None) for symmetric decays (acb None: their sum).
    """
    B, H, N, C, _ = qc.shape
    W = (qc @ kc.transpose(-1, -2)).mul_(gc @ vc.transpose(-1, -2)).mul_(mask)
    ones = torch.ones(C, C, device=qc.device, dtype=qc.dtype)
    low = torch.tril(ones, -1)
    Wt = W.transpose(-1, -2)
    dcf = (W * low).sum(-1) - (Wt * low.t()).sum(-1)
    dcb = (Wt * low).sum(-1) - (W * low.t()).sum(-1)
    del W, Wt
    wf = _weights(ac)
    wb = wf if acb is None else _weights(acb)
    # (states over, decays, reverse, sign, which gradient): kv read by q dotted with g; qg read by k dotted with v
    for x, y, u, z, (eb, ed, g), reverse, sgn, into in (
            (kc, vc, qc, gc, wf, False, 1.0, "f"), (kc, vc, qc, gc, wb, True, -1.0, "b"),
            (qc, gc, kc, vc, wb, False, 1.0, "b"), (qc, gc, kc, vc, wf, True, -1.0, "f")):
        w_state, w_read = (eb, ed) if reverse else (ed, eb)
        st = _chunk_states((x * w_state).transpose(-1, -2) @ y, g, reverse)
        term = sgn * w_read[..., 0] * ((u @ st) * z).sum(-1)
        if into == "f":
            dcf = dcf + term
        else:
            dcb = dcb + term
    del st

    def rev_cumsum(dc):
        dc = dc.reshape(B, H, N * C)
        return torch.flip(torch.cumsum(torch.flip(dc, [-1]), -1), [-1]).reshape(B, H, N, C)
    if acb is None:
        return rev_cumsum(dcf + dcb), None
    return rev_cumsum(dcf), rev_cumsum(dcb)


class _ChunkLion(torch.autograd.Function):
    """The chunk core with a hand-written backward: only the inputs are saved, so training memory stays O(L C)
    for the blocks plus O(N D Dv) for the states. Each input gradient is itself a LION product, with the
    transposed mask M^T (the same decays with the two directions swapped; M itself when symmetric):

        dq = core(g, v, k; M),   dk = core(v, g, q; M^T),   dv = core(k, q, g; M^T)
    where core(x, y, z; M)_i = sum_j (x_i.y_j) M_ij z_j. acb: the backward log-decays of a pair, None if symmetric.
    """

    @staticmethod
    def forward(ctx, qc, kc, vc, ac, acb):
        ctx.save_for_backward(qc, kc, vc, ac, acb)
        return _chunk_core(qc, kc, vc, ac, acb)

    @staticmethod
    def backward(ctx, gc):
        qc, kc, vc, ac, acb = ctx.saved_tensors
        gc = gc.contiguous()
        mask = _block_mask(ac, acb)
        if acb is None:
            ac_t, acb_t, mask_t = ac, None, mask
        else:  # M^T: the forward decays now run the upper triangle
            ac_t, acb_t, mask_t = acb, ac, mask.transpose(-1, -2)
        dq = _chunk_core(gc, vc, kc, ac, acb, mask) if ctx.needs_input_grad[0] else None
        dk = _chunk_core(vc, gc, qc, ac_t, acb_t, mask_t) if ctx.needs_input_grad[1] else None
        dv = _chunk_core(kc, qc, gc, ac_t, acb_t, mask_t) if ctx.needs_input_grad[2] else None
        da = dab = None
        if ac is not None and (ctx.needs_input_grad[3] or ctx.needs_input_grad[4]):
            da, dab = _chunk_dlogdecay(qc, kc, vc, gc, ac, acb, mask)
        return dq, dk, dv, da, dab


def lion_attention_chunk(q, k, v, log_decay=None, *, chunk_size=64, normalize=True, attention_mask=None,
                         return_parts=False, eps=1e-6):
    """LION attention, chunkwise form. Same arguments and results as `lion_attention_parallel`, plus chunk_size.
    log_decay may be a pair (forward, backward): the forward states and the lower triangle of each block decay
    with the first, the backward states and the upper triangle with the second."""
    out_dtype = q.dtype
    q, k, v, a = prepare_inputs(q, k, v, log_decay, attention_mask)
    B, H, L, D = q.shape
    C = max(1, min(int(chunk_size), L))
    N = -(-L // C)
    pad = N * C - L
    v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    a_f, a_b = split_decays(a)
    if a_b is a_f:
        a_b = None

    def per_chunk(x):
        if x is None:
            return None
        if x.dim() == 1:
            x = x[None, :, None].expand(B, H, L)
        return (F.pad(x, (0, pad)) if pad else x).reshape(B, H, N, C)
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    E = v.shape[-1]
    qc, kc, vc = q.view(B, H, N, C, D), k.view(B, H, N, C, D), v.view(B, H, N, C, E)
    num = _ChunkLion.apply(qc, kc, vc, per_chunk(a_f), per_chunk(a_b))
    num = num.reshape(B, H, N * C, E)[:, :, :L]
    return finish(num[..., :-1], num[..., -1], out_dtype, normalize, return_parts, eps)
