"""Recurrent form of LION attention: a forward and a backward scan over tokens (docs/MATH.md section 2.2).

    forward:  S^F_i = l_i S^F_{i-1} + k_i v_i^T          backward: S^B_i = l_{i+1} S^B_{i+1} + k_i v_i^T
    num_i = q_i^T (S^F_i + S^B_i - k_i v_i^T)

The normaliser z rides along as an extra column of ones appended to v, so one state [D, Dv + 1] per head carries both.
The backward pass is written by hand (not recorded by autograd), so training memory is O(D Dv) state per head plus
output-sized buffers, never a state per token. Its derivation, with W_ij = (q_i.k_j)(g_i.v_j) M_ij:

    dq_i = (S^F_i + S^B_i - k_i v_i^T) g_i
    dk_j = (R^F_j + R^B_j - q_j g_j^T) v_j        R: the same scans over q_i g_i^T (M is symmetric)
    dv_j = (R^F_j + R^B_j - q_j g_j^T)^T k_j
    dL/dc_t = q_t.(S^F_t g_t) - q_t.(S^B_t g_t) + k_t.(R^F_t v_t) - k_t.(R^B_t v_t)    (c = cumsum(a))
    dL/da_t = sum_{s >= t} dL/dc_s

This form is for long-sequence inference with constant memory and for checking the others; it is a Python loop over
tokens, so it is slow on any device.
"""
from __future__ import annotations

import torch

from lion.ops.naive import finish, prepare_inputs, split_decays


def _scan(x, y, lam, reverse: bool, read: tuple):
    """Run S_t = lam_t S_{t-1} + x_t y_t^T (or its mirror image) and read each state at t.

    x [B, H, L, D], y [B, H, L, E], lam None | [B, H, L] (the multiplier applied when entering t; for the reverse
    scan the caller passes the multiplier of t + 1 shifted into place). `read` is a tuple of (u [B,H,L,D] or
    [B,H,L,E], side) with side "left" (u_t^T S_t -> [E]) or "right" (S_t u_t -> [D]). Returns one output per read.
    """
    B, H, L, D = x.shape
    E = y.shape[-1]
    S = x.new_zeros(B, H, D, E)
    outs = [u.new_zeros(B, H, L, E if side == "left" else D) for u, side in read]
    steps = range(L - 1, -1, -1) if reverse else range(L)
    for t in steps:
        if lam is not None:
            S.mul_(lam[:, :, t, None, None])
        S.add_(x[:, :, t, :, None] * y[:, :, t, None, :])
        for out, (u, side) in zip(outs, read):
            if side == "left":
                out[:, :, t] = (u[:, :, t, None, :] @ S).squeeze(-2)
            else:
                out[:, :, t] = (S @ u[:, :, t, :, None]).squeeze(-1)
    return outs


def _multipliers(a):
    """Per-step multipliers for both scans: forward enters t with l_t, backward enters t with l_{t+1}."""
    if a is None:
        return None, None
    lam = torch.exp(a)
    lam_b = torch.cat([lam[..., 1:], torch.ones_like(lam[..., :1])], dim=-1)
    return lam, lam_b


class _RecurrentLion(torch.autograd.Function):
    """num = bidirectional-scan attention of q, k over v (v already carries the ones column). a: the forward
    log-decays; ab: the backward ones of a pair (None: symmetric, ab = a). The scans over k v^T run forward with a
    and backward with ab; the scans over q g^T of the backward pass see the transposed mask, so they run forward
    with ab and backward with a."""

    @staticmethod
    def forward(ctx, q, k, v, a, ab):
        lam, _ = _multipliers(a)
        _, lam_b = _multipliers(a if ab is None else ab)
        (fwd,) = _scan(k, v, lam, False, ((q, "left"),))
        (bwd,) = _scan(k, v, lam_b, True, ((q, "left"),))
        num = fwd + bwd - (q * k).sum(-1, keepdim=True) * v
        ctx.save_for_backward(q, k, v, a, ab)
        return num

    @staticmethod
    def backward(ctx, g):
        q, k, v, a, ab = ctx.saved_tensors
        lam, lam_fb = _multipliers(a)
        lam_bf, lam_b = (lam, lam_fb) if ab is None else _multipliers(ab)
        g = g.contiguous()
        dqF, rowF = _dq_and_row(k, v, q, g, lam, False)
        dqB, rowB = _dq_and_row(k, v, q, g, lam_b, True)
        dkF, dvF, colF = _dkv_and_col(q, g, k, v, lam_bf, False)
        dkB, dvB, colB = _dkv_and_col(q, g, k, v, lam_fb, True)
        vg = (v * g).sum(-1, keepdim=True)
        qk = (q * k).sum(-1, keepdim=True)
        dq = dqF + dqB - k * vg
        dk = dkF + dkB - q * vg
        dv = dvF + dvB - g * qk
        da = dab = None

        def rev_cumsum(dc):
            return torch.flip(torch.cumsum(torch.flip(dc, [-1]), -1), [-1])
        if a is not None and (ctx.needs_input_grad[3] or ctx.needs_input_grad[4]):
            if ab is None:
                da = rev_cumsum(rowF - rowB + colF - colB)
            else:  # dL/dc^F: keys left of a query, queries right of a key; dL/dc^B the other two
                da, dab = rev_cumsum(rowF - colB), rev_cumsum(colF - rowB)
        return dq, dk, dv, da, dab


def _dq_and_row(k, v, q, g, lam, reverse):
    """S over k v^T read on the right by g: dq_t = S_t g_t, and row_t = q_t . dq_t."""
    (dq,) = _scan(k, v, lam, reverse, ((g, "right"),))
    return dq, (q * dq).sum(-1)


def _dkv_and_col(q, g, k, v, lam, reverse):
    """R over q g^T: dk_t = R_t v_t, dv_t = R_t^T k_t, and col_t = k_t . dk_t."""
    dk, dv = _scan(q, g, lam, reverse, ((v, "right"), (k, "left")))
    return dk, dv, (k * dk).sum(-1)


def lion_attention_recurrent(q, k, v, log_decay=None, *, normalize=True, attention_mask=None,
                             return_parts=False, eps=1e-6):
    """LION attention, recurrent form. Same arguments and results as `lion_attention_parallel`; with a pair of
    log-decays (forward, backward) the forward scan decays with the first and the backward scan with the second."""
    out_dtype = q.dtype
    q, k, v, a = prepare_inputs(q, k, v, log_decay, attention_mask)
    B, H, L, _ = q.shape
    a_f, a_b = split_decays(a)

    def per_token(x):
        if x is None:
            return None
        return (x[None, :, None].expand(B, H, L) if x.dim() == 1 else x).contiguous()
    v_aug = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    out = _RecurrentLion.apply(q.contiguous(), k.contiguous(), v_aug, per_token(a_f),
                               None if a_b is a_f else per_token(a_b))
    return finish(out[..., :-1], out[..., -1], out_dtype, normalize, return_parts, eps)
