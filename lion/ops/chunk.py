"""Chunkwise form of LION attention (docs/MATH.md section 2.3), in pure PyTorch.

Split L into N chunks of C tokens (the tail is padded with inert tokens: q = k = v = 0, log-decay 0). Inside chunk
n, with local inclusive prefix sums b_i = sum_{t=s..i} a_t and exclusive suffix sums d_i = sum_{t=i+1..e-1} a_t
(s, e the chunk's first and one-past-last token):

    intra:    the parallel form on the C x C block, mask exp(segsum(a)) (both triangles)
    forward:  F_n = exp(g_n) F_{n-1} + sum_j exp(d_j) k_j v_j^T        token i reads exp(b_i) q_i^T F_{n-1}
    backward: U_n = exp(g_n) U_{n+1} + sum_j exp(b_j) k_j v_j^T        token i reads exp(d_i) q_i^T U_{n+1}

where g_n = b_{e-1} is the chunk's total log-decay. Every exponent is a sum of log-decays <= 0 over a range that lies
inside one chunk (or is a product of such factors), so nothing overflows and no long prefix sum is ever differenced.
The normaliser rides along as a ones column of v. A pair of log-decays (forward, backward) puts the forward ones in
the forward states and below the block diagonal, the backward ones in the backward states and above it.

How it runs (the same math, arranged for a CPU):
- Without decay (LION-LIT) the mask is all ones and the whole form is plain linear attention, y = q (k^T v) /
  q (k^T 1): two small matmuls, O(L D Dv), recorded by autograd.
- With decay, `_ChunkLion` runs two sweeps over groups of chunks (left to right: the blocks and the forward states;
  right to left: the backward states), each group a few chunks wide, so the C x C blocks and the chunk states alive
  at any time are bounded by `GROUP_TOKENS`, not by L. Its backward is written by hand and fused: the scores
  q k^T and g v^T of a block are formed once for dq, dk, dv and the decay gradient, and four state sweeps (k v^T
  and q g^T, each in both directions) serve all of them. Only the inputs, the output and its normaliser are saved.
- A per-head decay (LION-D without padding) shares one C x C mask and one set of chunk weights across batch and
  chunks.
- With normalisation the division happens inside, so the numerator is never kept for backward.
"""
from __future__ import annotations

import functools

import torch

from lion.ops.naive import finish, prepare_inputs, safe_den, split_decays

# Tokens per group of chunks (at least one chunk): bounds the C x C blocks and chunk states alive at once; larger
# groups batch more work per matmul. Measured LION-S fwd+bwd, B=1 H=4 D=64 C=64, one thread of a 2-core x86_64
# CPU, time / extra peak memory against SDPA: 64 tokens 0.53 / 0.99 at L = 1K and 0.13 / 1.01 at 4K; 128 tokens
# 0.42 / 1.12 and 0.105 / 1.05; 256 tokens 0.39 / 1.37 and 0.092 / 1.12.
GROUP_TOKENS = 128


@functools.lru_cache(maxsize=32)
def _tri_masks(C: int, device, dtype):
    """(strictly lower, strictly upper, lower minus upper) C x C constants."""
    ones = torch.ones(C, C, device=device, dtype=dtype)
    low, up = torch.tril(ones, -1), torch.triu(ones, 1)
    return low, up, low - up


@functools.lru_cache(maxsize=32)
def _strict_upper(C: int, device):
    return torch.triu(torch.ones(C, C, dtype=torch.bool, device=device), 1)


def block_mask(a_f, a_b=None):
    """The C x C decay masks of chunks with log-decays a_f [..., C] (forward: below the diagonal) and a_b (backward:
    above it; None: symmetric) -> [..., C, C].

    As products of decays, never differences of sums: P[j, i] = lambda_{j+1} ... lambda_i (i > j) is a cumulative
    product along the row of lambda = exp(a) with ones at and left of the diagonal, so M = P_b + P_f^T - 1 (each P
    is 1 in the other triangle). Relative error ~C ulp; lambda = 0 (a = -inf) gives exact zeros."""
    up = _strict_upper(a_f.shape[-1], a_f.device)
    one = torch.ones((), dtype=a_f.dtype, device=a_f.device)
    pf = torch.where(up, torch.exp(a_f)[..., None, :], one).cumprod(-1)
    pb = pf if a_b is None else torch.where(up, torch.exp(a_b)[..., None, :], one).cumprod(-1)
    return (pb + pf.transpose(-1, -2)).sub_(1)


def _local_weights(a):
    """Per chunk a [..., N, C] -> exp(b) [..., N, C, 1] (inclusive prefix), exp(d) [..., N, C, 1] (exclusive
    suffix) and exp(g) [..., N] (the chunk's total); every exponent a sum of log-decays, none a difference."""
    b = torch.cumsum(a, dim=-1)
    rev = torch.flip(torch.cumsum(torch.flip(a, [-1]), -1), [-1])
    d = torch.cat([rev[..., 1:], torch.zeros_like(rev[..., :1])], dim=-1)
    return torch.exp(b)[..., None], torch.exp(d)[..., None], torch.exp(b[..., -1])


class _Group:
    """A run of whole chunks, tokens s..e-1 as g chunks of Cg tokens (the last group of a sequence whose length is
    not a multiple of C is one short chunk of the remainder: nothing is padded), with its decay weights."""

    def __init__(self, s, e, Cg, mask, wf, wb):
        self.s, self.e, self.C, self.g = s, e, Cg, (e - s) // Cg
        self._mask, self.wf, self.wb = mask, wf, wb

    @property
    def mask(self):
        """The C x C masks of the group's chunks, built when asked (per-token decays: not kept, so that nothing of
        size L x C outlives its use; a shared per-head mask is kept, it is one C x C block per head)."""
        m = self._mask
        return block_mask(*m) if isinstance(m, tuple) else m

    def chunked(self, x, ones=False):
        """x [B, H, L, X] -> this group's tokens as [B, H, g, Cg, X] (`ones`: with a ones column appended),
        contiguous: a slice of the sequence is not, and matmul would copy it for every product."""
        part = x[:, :, self.s:self.e]
        if ones:
            part = torch.cat([part, torch.ones_like(part[..., :1])], dim=-1)
        else:
            part = part.contiguous()
        return part.view(part.shape[0], part.shape[1], self.g, self.C, part.shape[-1])

    def weights(self, which):
        """(exp(b), exp(d), exp(g)) of the forward ("f") or backward ("b") log-decays."""
        return self.wf if which == "f" else self.wb


def _groups(a_f, a_b, B, H, L, C):
    """The groups of chunks of one call, in order, with their masks and weights. Per-token log-decays [B, H, L]
    give per-chunk masks; a per-head decay [H] gives one C x C pattern shared by every batch row and chunk."""
    per = max(1, GROUP_TOKENS // C)
    full = L // C
    spans = [(n0 * C, min(full, n0 + per) * C, C) for n0 in range(0, full, per)]
    if L % C:
        spans.append((full * C, L, L - full * C))
    shared = {}
    groups = []
    for s, e, Cg in spans:
        g = (e - s) // Cg
        if a_f.dim() == 1:  # one decay per head: the same pattern in every chunk of this size
            if Cg not in shared:
                af = a_f[None, :, None, None].expand(1, H, 1, Cg)
                ab = None if a_b is None else a_b[None, :, None, None].expand(1, H, 1, Cg)
                wf = _local_weights(af)
                shared[Cg] = (block_mask(af, ab), wf, wf if ab is None else _local_weights(ab))
            mask, wf, wb = shared[Cg]
            wf = wf[:2] + (wf[2].expand(1, H, g),)
            wb = wb[:2] + (wb[2].expand(1, H, g),)
        else:
            af = a_f[:, :, s:e].reshape(B, H, g, Cg)
            ab = None if a_b is None else a_b[:, :, s:e].reshape(B, H, g, Cg)
            mask, wf = (af, ab), _local_weights(af)
            wb = wf if ab is None else _local_weights(ab)
        groups.append(_Group(s, e, Cg, mask, wf, wb))
    return groups


def _sweep(delta, eg, carry, reverse):
    """Exclusive scan over the chunks of one group, continuing from `carry` [B', H, D, E] (None: zero): the state
    before chunk c (after it if reverse) of the decayed sum of delta [B', H, g, D, E]; eg [b, H, g] are the chunks'
    total decays. Returns (states [B', H, g, D, E], carry for the next group)."""
    g = delta.shape[2]
    states = [None] * g
    state = torch.zeros_like(delta[:, :, 0]) if carry is None else carry
    for c in (range(g - 1, -1, -1) if reverse else range(g)):
        states[c] = state
        state = torch.addcmul(delta[:, :, c], eg[:, :, c, None, None], state)
    return torch.stack(states, dim=2), state


def _forward(q, k, v, groups):
    """num_ext [B, H, L, Dv + 1] (numerator and normaliser) of the chunk form, without recording autograd."""
    B, H, L, D = q.shape
    out = None if len(groups) == 1 else q.new_empty(B, H, L, v.shape[-1] + 1)
    inter = len(groups) > 1 or groups[0].g > 1  # one chunk: the block is everything
    carry = None
    for gr in groups:  # left to right: the blocks and the forward states
        qc, kc, vc = gr.chunked(q), gr.chunked(k), gr.chunked(v, ones=True)
        scores = (qc @ kc.transpose(-1, -2)).mul_(gr.mask)
        o = scores @ vc
        del scores
        if inter:
            eb, ed, eg = gr.wf
            st, carry = _sweep((kc * ed).transpose(-1, -2) @ vc, eg, carry, reverse=False)
            o += (qc * eb) @ st
        if out is None:
            out = o.view(B, H, L, -1)
        else:
            out[:, :, gr.s:gr.e] = o.view(B, H, gr.e - gr.s, -1)
        del o
    if not inter:
        return out
    carry = None
    for gr in reversed(groups):  # right to left: the backward states
        qc, kc, vc = gr.chunked(q), gr.chunked(k), gr.chunked(v, ones=True)
        eb, ed, eg = gr.wb
        st, carry = _sweep((kc * eb).transpose(-1, -2) @ vc, eg, carry, reverse=True)
        out[:, :, gr.s:gr.e] += ((qc * ed) @ st).view(B, H, gr.e - gr.s, -1)
    return out


def _backward(q, k, v, gx, groups, symmetric, want_decay):
    """Gradients of sum(gx * num_ext) for gx [B, H, L, Dv + 1]: dq, dk, dv and dL/dc^F, dL/dc^B per token
    (c = cumsum of the forward / backward log-decays; see `_ChunkLion`)."""
    B, H, L, D = q.shape
    Dv = v.shape[-1]
    single = len(groups) == 1  # one group: its results are the gradients, no buffers
    out = None
    if not single:
        out = [q.new_empty(B, H, L, D), q.new_empty(B, H, L, D), q.new_empty(B, H, L, Dv)]
        if want_decay:
            out.append(q.new_empty(B, H, L))
            out.append(out[3] if symmetric else q.new_empty(B, H, L))

    def view(i, gr):
        x = out[i]
        return x[:, :, gr.s:gr.e].view(B, H, gr.g, gr.C, *x.shape[3:])

    inter = len(groups) > 1 or groups[0].g > 1  # one chunk: the block is everything
    kv_carry = qg_carry = None
    for gr in groups:  # left to right: blocks, then what reaches a token from the chunks before it
        qc, kc, vc, gc = gr.chunked(q), gr.chunked(k), gr.chunked(v, ones=True), gr.chunked(gx)
        # the blocks, two C x C temporaries at a time: masked q k^T (for dv, then W), g v^T (for W, then masked)
        mask = gr.mask
        s1 = (qc @ kc.transpose(-1, -2)).mul_(mask)
        gv = gc @ vc.transpose(-1, -2)
        dv = s1.transpose(-1, -2) @ gc[..., :Dv]
        dcf = dcb = None
        if want_decay:
            low, up, sign = _tri_masks(gr.C, q.device, q.dtype)
            w = s1.mul_(gv)  # W_ij = (q_i.k_j)(g_i.v_j) M_ij
            if symmetric:  # dc_t = sum_j W_tj sign(t - j) - sum_i W_it sign(i - t)
                ws = w.mul_(sign)
                dcf = dcb = ws.sum(-1) - ws.sum(-2)
                del ws
            else:
                wl, wu = w * low, w.mul_(up)
                dcf, dcb = wl.sum(-1) - wl.sum(-2), wu.sum(-2) - wu.sum(-1)
                del wl, wu
            del w
        del s1
        s2 = gv.mul_(mask)  # masked g v^T
        del mask
        dq, dk = s2 @ kc, s2.transpose(-1, -2) @ qc
        del s2, gv
        if inter:
            ebf, edf, egf = gr.wf
            ebb, edb, egb = gr.wb
            kv, kv_carry = _sweep((kc * edf).transpose(-1, -2) @ vc, egf, kv_carry, reverse=False)
            qg, qg_carry = _sweep((qc * edb).transpose(-1, -2) @ gc, egb, qg_carry, reverse=False)
            dq_in = (gc @ kv.transpose(-1, -2)).mul_(ebf)  # from the chunks before, through the forward decays
            dk_in = (vc @ qg.transpose(-1, -2)).mul_(ebb)  # from the queries before, through the backward decays
            dq += dq_in
            dk += dk_in
            dv += (kc @ qg[..., :Dv]).mul_(ebb)
            if want_decay:
                dcf += (qc * dq_in).sum(-1)
                dcb += (kc * dk_in).sum(-1)  # (the same tensor as dcf when symmetric)
            del dq_in, dk_in
        done = [dq, dk, dv]
        if want_decay:
            done += [dcf] if symmetric else [dcf, dcb]
        if single:
            out = [x.view(B, H, L, *x.shape[4:]) for x in done]
            if want_decay and symmetric:
                out.append(out[3])
        else:
            for i, x in enumerate(done):
                view(i, gr).copy_(x)
        del done, dq, dk, dv, dcf, dcb
    kv_carry = qg_carry = None
    for gr in (reversed(groups) if inter else ()):  # right to left: what reaches a token from the chunks after it
        qc, kc, vc, gc = gr.chunked(q), gr.chunked(k), gr.chunked(v, ones=True), gr.chunked(gx)
        ebf, edf, egf = gr.wf
        ebb, edb, egb = gr.wb
        kv, kv_carry = _sweep((kc * ebb).transpose(-1, -2) @ vc, egb, kv_carry, reverse=True)
        qg, qg_carry = _sweep((qc * ebf).transpose(-1, -2) @ gc, egf, qg_carry, reverse=True)
        dq_in = (gc @ kv.transpose(-1, -2)).mul_(edb)
        dk_in = (vc @ qg.transpose(-1, -2)).mul_(edf)
        view(0, gr).add_(dq_in)
        view(1, gr).add_(dk_in)
        view(2, gr).add_((kc @ qg[..., :Dv]).mul_(edf))
        if want_decay:
            view(4, gr).sub_((qc * dq_in).sum(-1))
            view(3, gr).sub_((kc * dk_in).sum(-1))
    if not want_decay:
        return out[0], out[1], out[2], None, None
    return tuple(out)


def _decay_grad(dc, a, L):
    """dL/da from dL/dc per token [B, H, Lp] (c = cumsum(a)): the reverse cumulative sum, reduced to a's shape."""
    if dc is None:
        return None
    da = torch.flip(torch.cumsum(torch.flip(dc, [-1]), -1), [-1])
    return da.sum((0, 2)) if a.dim() == 1 else da


class _ChunkLion(torch.autograd.Function):
    """The chunk form with decay and its hand-written backward (prepared inputs: accumulation dtype, padding
    applied). With eps (normalize) it returns y = num / safe_den(den, eps) and saves y and the guarded normaliser,
    otherwise (num, den). Each input gradient is itself a LION product (dq with M, dk and dv with M^T) and

        dL/dc^F_t = sum_{j < t} W_tj - sum_{i > t} W_it,   dL/dc^B_t = sum_{i < t} W_it - sum_{j > t} W_tj,
        W_ij = (q_i.k_j)(g_i.v_j) M_ij,   dL/da_t = sum_{s >= t} dL/dc_s,

    where the sums over other chunks are read off the state sweeps (q_t.dq_t from the chunks before it, ...)."""

    @staticmethod
    def forward(ctx, q, k, v, a_f, a_b, chunk_size, eps):
        B, H, L, _ = q.shape
        groups = _groups(a_f, a_b, B, H, L, chunk_size)
        out = _forward(q, k, v, groups)
        num, den = out[..., :-1], out[..., -1].contiguous()
        ctx.eps, ctx.groups = eps, groups
        if eps is None:
            ctx.save_for_backward(q, k, v, a_f, a_b)
            return num, den
        sden = safe_den(den, eps)
        y = num / sden[..., None]
        del out, num
        ctx.save_for_backward(q, k, v, a_f, a_b, y, den, sden)
        return y

    @staticmethod
    def backward(ctx, *grads):
        if ctx.eps is None:
            q, k, v, a_f, a_b = ctx.saved_tensors
            gnum, gden = grads
            gnum = torch.zeros_like(v) if gnum is None else gnum
            gden = torch.zeros_like(v[..., 0]) if gden is None else gden
            gx = torch.cat([gnum, gden[..., None]], dim=-1)
        else:
            q, k, v, a_f, a_b, y, den, sden = ctx.saved_tensors
            (gy,) = grads
            gx = y.new_empty(*y.shape[:-1], y.shape[-1] + 1)  # [gnum, gden], written in place
            gnum = torch.div(gy, sden[..., None], out=gx[..., :-1])
            # y = num / safe_den(den): the guard passes the gradient where |den| >= eps
            gx[..., -1] = torch.where(den.abs() >= ctx.eps, -(gnum * y).sum(-1),
                                      torch.zeros((), dtype=y.dtype, device=y.device))
            del gnum
        L = q.shape[2]
        want_decay = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        dq, dk, dv, dcf, dcb = _backward(q, k, v, gx, ctx.groups, a_b is None, want_decay)
        da_f = da_b = None
        if want_decay:
            if a_b is None:
                da_f = _decay_grad(dcf, a_f, L)
            else:
                da_f, da_b = _decay_grad(dcf, a_f, L), _decay_grad(dcb, a_b, L)
        return dq, dk, dv, da_f, da_b, None, None


class _BlockLion(torch.autograd.Function):
    """One block with an explicit mask: num = ((q k^T) * M) [v, 1], for a mask M [1 or B, H, L, L] that autograd
    built (small when shared by the batch: the multi-scan mask of per-head decays). Keeps the inputs and the mask;
    returns y = num / safe_den(den, eps) (eps given) or (num, den), and dL/dM summed to M's shape."""

    @staticmethod
    def forward(ctx, q, k, v, mask, eps):
        num = ((q @ k.transpose(-1, -2)).mul_(mask)) @ torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        den = num[..., -1].contiguous()
        ctx.eps = eps
        if eps is None:
            ctx.save_for_backward(q, k, v, mask)
            return num[..., :-1], den
        sden = safe_den(den, eps)
        y = num[..., :-1] / sden[..., None]
        ctx.save_for_backward(q, k, v, mask, y, den, sden)
        return y

    @staticmethod
    def backward(ctx, *grads):
        if ctx.eps is None:
            q, k, v, mask = ctx.saved_tensors
            gnum, gden = (g if g is not None else torch.zeros(()) for g in grads)
            gnum, gden = gnum.expand(v.shape), gden.expand(v.shape[:-1])
        else:
            q, k, v, mask, y, den, sden = ctx.saved_tensors
            gnum = grads[0] / sden[..., None]
            gden = torch.where(den.abs() >= ctx.eps, -(gnum * y).sum(-1), torch.zeros((), dtype=y.dtype,
                                                                                       device=y.device))
        gv = (gnum @ v.transpose(-1, -2)).add_(gden[..., None])  # [g, gden] . [v, 1]
        qk = q @ k.transpose(-1, -2)
        dmask = None
        if ctx.needs_input_grad[3]:
            dmask = qk * gv
            if mask.shape[0] == 1 and qk.shape[0] > 1:
                dmask = dmask.sum(0, keepdim=True)
        s1 = qk.mul_(mask)
        dv = s1.transpose(-1, -2) @ gnum
        del s1, qk
        s2 = gv.mul_(mask)
        return s2 @ k, s2.transpose(-1, -2) @ q, dv, dmask, None


def lion_attention_block(q, k, v, mask, *, normalize=True, return_parts=False, eps=1e-6):
    """LION attention in one block with a given mask M [1 or B, H, L, L] (prepared q, k, v: accumulation dtype,
    pad tokens zero): the parallel form with a fused backward that keeps only the inputs and M. Gradients reach M
    (and through it whatever built it). Returns y, or (num, den) with return_parts / normalize=False."""
    if normalize and not return_parts:
        return _BlockLion.apply(q, k, v, mask, eps)
    num, den = _BlockLion.apply(q, k, v, mask, None)
    return num, den


def _linear(q, k, v):
    """No decay: the mask is all ones and num = q (k^T v), den = q (k^T 1) exactly (pad tokens already zero)."""
    kv = k.transpose(-1, -2) @ v  # [B, H, D, Dv]
    return q @ kv, q @ k.sum(-2)[..., None]


class _LinearLion(torch.autograd.Function):
    """Normalised linear attention (no decay), y = q (k^T v) / safe_den(q (k^T 1)), with a hand-written backward
    that keeps the inputs, the D x Dv state and the normaliser, and recomputes the numerator (O(L D Dv)):
        gnum = gy / den,  gden = -(gy . y) / den,  dq = gnum kv^T + gden ks^T,  dkv = q^T gnum,  dks = q^T gden,
        dk = v dkv^T + dks,  dv = k dkv."""

    @staticmethod
    def forward(ctx, q, k, v, eps):
        kv, ks = k.transpose(-1, -2) @ v, k.sum(-2)
        den = (q @ ks[..., None])[..., 0]
        sden = safe_den(den, eps)
        y = (q @ kv).div_(sden[..., None])
        ctx.eps = eps
        ctx.save_for_backward(q, k, v, kv, ks, den, sden)
        return y

    @staticmethod
    def backward(ctx, gy):
        q, k, v, kv, ks, den, sden = ctx.saved_tensors
        gnum = gy / sden[..., None]
        y = (q @ kv).div_(sden[..., None])
        gden = torch.where(den.abs() >= ctx.eps, -(gnum * y).sum(-1), torch.zeros((), dtype=y.dtype,
                                                                                   device=y.device))
        del y
        dq = torch.baddbmm(gden[..., None].flatten(0, 1) * ks.flatten(0, 1)[:, None, :], gnum.flatten(0, 1),
                           kv.transpose(-1, -2).flatten(0, 1)).view_as(q)
        dkv = q.transpose(-1, -2) @ gnum  # [B, H, D, Dv]
        dks = (q.transpose(-1, -2) @ gden[..., None])[..., 0]  # [B, H, D]
        dk = (v @ dkv.transpose(-1, -2)).add_(dks[:, :, None, :])
        dv = k @ dkv
        return dq, dk, dv, None


def lion_attention_chunk(q, k, v, log_decay=None, *, chunk_size=64, normalize=True, attention_mask=None,
                         return_parts=False, eps=1e-6):
    """LION attention, chunkwise form. Same arguments and results as `lion_attention_parallel`, plus chunk_size.
    log_decay may be a pair (forward, backward): the forward states and the lower triangle of each block decay
    with the first, the backward states and the upper triangle with the second."""
    out_dtype = q.dtype
    q, k, v, a = prepare_inputs(q, k, v, log_decay, attention_mask)
    L = q.shape[2]
    if a is None:
        if normalize and not return_parts:
            return _LinearLion.apply(q, k, v, eps).to(out_dtype)
        num, den = _linear(q, k, v)
        return finish(num, den[..., 0], out_dtype, normalize, return_parts, eps)
    C = max(1, min(int(chunk_size), L))
    a_f, a_b = split_decays(a)
    if a_b is a_f:
        a_b = None
    if normalize and not return_parts:
        return _ChunkLion.apply(q, k, v, a_f, a_b, C, eps).to(out_dtype)
    num, den = _ChunkLion.apply(q, k, v, a_f, a_b, C, None)
    return finish(num, den, out_dtype, normalize, return_parts, eps)
