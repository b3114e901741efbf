"""Multi-scan ("natural", docs/MATH.md section 4) LION: several scan orders over the same tokens, masks averaged.

    M = 1/S sum_s P_s^T M_s P_s,   y_i = sum_j (q_i.k_j) M_ij v_j / sum_j (q_i.k_j) M_ij

Each scan is one complete bidirectional pass in its own order (any form, any backend); numerators and denominators
are brought back to raster order and summed before the division.
"""
from __future__ import annotations

from typing import Sequence

import torch

from lion.ops.attention import AUTO_ONE_BLOCK_PER_HEAD_DIM, _triton_entry, lion_attention
from lion.ops.chunk import block_mask, lion_attention_block
from lion.ops.naive import acc_dtype, decay_mask, is_pair, safe_den


def snake_orders(h: int, w: int, num_prefix_tokens: int = 0, device=None) -> list[torch.Tensor]:
    """The two snake scans of an h x w patch grid (raster order in, scan order out), prefix tokens kept first.

    Row snake: even rows left to right, odd rows right to left. Column snake: the same over columns (even columns top
    to bottom, odd columns bottom to top). Returns [row_order, col_order], LongTensors of length prefix + h * w
    where order[p] is the raster index of the token at scan position p.
    """
    grid = torch.arange(h * w, device=device).view(h, w)
    rows = grid.clone()
    rows[1::2] = rows[1::2].flip(-1)
    cols = grid.t().clone()
    cols[1::2] = cols[1::2].flip(-1)
    prefix = torch.arange(num_prefix_tokens, device=device)
    return [torch.cat([prefix, o.reshape(-1) + num_prefix_tokens]) for o in (rows, cols)]


def _one_block(q, log_decays, attention_mask, kwargs) -> bool:
    """Whether form="auto" runs the scans as one block with their summed mask: every scan with a decay, no
    padding, the PyTorch path, and L in the one-block regime of `lion.ops.attention.auto_form`."""
    if kwargs.get("form", "auto") != "auto" or attention_mask is not None:
        return False
    backend = kwargs.get("backend", "auto")
    if backend == "triton" or (backend == "auto" and q.is_cuda and _triton_entry() is not None):
        return False
    flat = [x for a in log_decays for x in (a if is_pair(a) else (a,))]
    if any(x is None for x in flat):
        return False
    kind = "token" if any(x.dim() == 3 for x in flat) else "head"
    L, D = q.shape[2], q.shape[3]
    return L <= max(kwargs.get("chunk_size", 64), AUTO_ONE_BLOCK_PER_HEAD_DIM[kind] * D)


class _ScanMasks(torch.autograd.Function):
    """M = sum_s P_s^T M_s P_s in raster order [B, H, L, L] from per-token log-decays (one [B, H, L] tensor or a
    (forward, backward) pair per scan, raster order), built as products of decays (`block_mask`), with the decay
    gradients by hand from dL/dM: with W = dL/dM_s * M_s in scan order and c = cumsum(a),
        dL/dc^F_t = sum_{j < t} W_tj - sum_{i > t} W_it,   dL/dc^B_t = sum_{i < t} W_it - sum_{j > t} W_tj."""

    @staticmethod
    def forward(ctx, orders, *decays):
        ctx.orders, ctx.pairs = orders, [d is not None for d in decays[1::2]]
        ctx.save_for_backward(*[d for d in decays if d is not None])
        mask = None
        for s, order in enumerate(orders):
            m = _scan_mask(decays[2 * s], decays[2 * s + 1], order)
            mask = m.contiguous() if mask is None else mask.add_(m)
        return mask

    @staticmethod
    def backward(ctx, dmask):
        saved = list(ctx.saved_tensors)
        grads = []
        for order, pair in zip(ctx.orders, ctx.pairs):
            a_f = saved.pop(0)
            a_b = saved.pop(0) if pair else None
            inverse = torch.argsort(order)
            m = _scan_mask(a_f, a_b, order, raster=False)  # scan order
            w = _permuted_t(dmask, order)  # (dL/dM_s)^T in scan order
            w = w.transpose(-1, -2).mul_(m) if a_b is not None else w.mul_(m)  # symmetric M_s: W^T serves
            del m
            C = w.shape[-1]
            ones = torch.ones(C, C, dtype=w.dtype, device=w.device)
            low, up = torch.tril(ones, -1), torch.triu(ones, 1)

            def rev_cumsum(dc):
                return torch.flip(torch.cumsum(torch.flip(dc, [-1]), -1), [-1]).index_select(-1, inverse)
            if a_b is None:
                ws = w.mul_(low - up)
                grads += [rev_cumsum(ws.sum(-1) - ws.sum(-2)), None]
            else:
                wl, wu = w * low, w.mul_(up)
                grads += [rev_cumsum(wl.sum(-1) - wl.sum(-2)), rev_cumsum(wu.sum(-2) - wu.sum(-1))]
        return (None, *grads)


def _permuted_t(m, index):
    """(m[..., index, :][..., :, index])^T for m [..., L, L], as two row gathers around a transposed view (a
    column gather is several times slower)."""
    return m.index_select(-2, index).transpose(-1, -2).index_select(-2, index)


def _scan_mask(a_f, a_b, order, raster=True):
    """One scan's mask from raster-order log-decays: [B, H, L, L] in raster order (or in scan order)."""
    m = block_mask(a_f.index_select(-1, order), None if a_b is None else a_b.index_select(-1, order))
    if not raster:
        return m
    m = _permuted_t(m, torch.argsort(order))
    return m if a_b is None else m.transpose(-1, -2)  # a symmetric mask is its own transpose


def _summed_mask(log_decays, orders, B, L, device, dt):
    """The scans' summed mask in raster order: [1, H, L, L] (per-head decays only, built by autograd) or
    [B, H, L, L] (`_ScanMasks`)."""
    orders = [o.to(device) for o in orders]
    parts = [tuple(x.to(dt) for x in a) if is_pair(a) else (a.to(dt), None) for a in log_decays]
    if all(x.dim() == 1 for p in parts for x in p if x is not None):
        mask = None
        for order, (a_f, a_b) in zip(orders, parts):
            inverse = torch.argsort(order)
            m = decay_mask(a_f if a_b is None else (a_f, a_b), L, device, dt)
            m = m.index_select(-2, inverse).index_select(-1, inverse)
            mask = m if mask is None else mask + m
        return mask
    H = next(x.shape[-2] for p in parts for x in p if x is not None and x.dim() == 3)
    flat = []
    for a_f, a_b in parts:  # per-head decays of a mixed call: the same decay at every token
        flat += [x if x is None or x.dim() == 3 else x[None, :, None].expand(B, H, L) for x in (a_f, a_b)]
    return _ScanMasks.apply(orders, *flat)


def _block(q, k, v, log_decays, orders, normalize, return_parts, eps):
    """All scans at once: M = sum_s P_s^T M_s P_s in raster order, then one block. The same sums of numerators and
    denominators as scan by scan, one core instead of one per scan."""
    out_dtype = q.dtype
    dt = acc_dtype(q.dtype)
    B, _, L, _ = q.shape
    mask = _summed_mask(log_decays, orders, B, L, q.device, dt)
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    if normalize and not return_parts:
        return lion_attention_block(q, k, v, mask, eps=eps).to(out_dtype)
    num, den = lion_attention_block(q, k, v, mask, return_parts=True)
    if return_parts:
        return num, den
    return (num / len(orders)).to(out_dtype)


def lion_attention_multiscan(q, k, v, log_decays: Sequence[torch.Tensor | None], orders: Sequence[torch.Tensor], *,
                             normalize=True, attention_mask=None, return_parts=False, eps=1e-6, **kwargs):
    """LION attention averaged over scan orders.

    q, k [B, H, L, D], v [B, H, L, Dv], attention_mask [B, L]: in raster order.
    orders[s]: LongTensor [L], orders[s][p] = raster index of the token at scan position p.
    log_decays[s]: None, [H] or [B, H, L] (in raster order: token i's own log-decay) for scan s, or a pair
        (forward, backward) of those (each in raster order; the directions are those of scan s). For the authors'
        LION-S mask in scan s use `paper_code_log_decays(a, order=orders[s])`.
    kwargs: form, chunk_size, backend, as for `lion_attention`.
    Returns [B, H, L, Dv] in q's dtype, or (num, den) summed over scans (divide by len(orders) for the mean mask).
    """
    if len(orders) != len(log_decays) or len(orders) == 0:
        raise ValueError(f"lion_attention_multiscan: need one log_decay per order, got {len(log_decays)} log_decays "
                         f"and {len(orders)} orders")
    L = q.shape[2]
    if _one_block(q, log_decays, attention_mask, kwargs):
        return _block(q, k, v, log_decays, orders, normalize, return_parts, eps)
    num = den = None
    for order, a in zip(orders, log_decays):
        order = order.to(q.device)
        if order.shape != (L,):
            raise ValueError(f"lion_attention_multiscan: each order must be a permutation of length L={L}, got "
                             f"shape {tuple(order.shape)}")
        inverse = torch.argsort(order)
        if is_pair(a):
            a_s = tuple(x.index_select(-1, order) if x.dim() == 3 else x for x in a)
        else:
            a_s = a.index_select(-1, order) if a is not None and a.dim() == 3 else a
        m_s = attention_mask.index_select(-1, order) if attention_mask is not None else None
        n_s, d_s = lion_attention(q.index_select(2, order), k.index_select(2, order), v.index_select(2, order), a_s,
                                  attention_mask=m_s, return_parts=True, eps=eps, **kwargs)
        n_s, d_s = n_s.index_select(2, inverse), d_s.index_select(2, inverse)
        num = n_s if num is None else num + n_s
        den = d_s if den is None else den + d_s
    if return_parts:
        return num, den
    y = num / safe_den(den, eps)[..., None] if normalize else num / len(orders)
    return y.to(q.dtype)
