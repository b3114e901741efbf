"""Multi-scan ("natural", docs/MATH.md section 4) LION: several scan orders over the same tokens, masks averaged.

    M = 1/S sum_s P_s^T M_s P_s,   y_i = sum_j (q_i.k_j) M_ij v_j / sum_j (q_i.k_j) M_ij

Each scan is one complete bidirectional pass in its own order (any form, any backend); numerators and denominators
are brought back to raster order and summed before the division.
"""
from __future__ import annotations

from typing import Sequence

import torch

from lion.ops.attention import AUTO_ONE_BLOCK_PER_HEAD_DIM, _triton_entry, lion_attention
from lion.ops.chunk import lion_attention_block
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


def _one_shared_block(q, log_decays, attention_mask, kwargs) -> bool:
    """Whether form="auto" runs the scans as one block with their summed mask: per-head decays only (the mask of
    each scan is then the same for every batch row), no padding, the PyTorch path, and L in the one-block regime
    of `lion.ops.attention.auto_form`."""
    if kwargs.get("form", "auto") != "auto" or attention_mask is not None:
        return False
    backend = kwargs.get("backend", "auto")
    if backend == "triton" or (backend == "auto" and q.is_cuda and _triton_entry() is not None):
        return False
    flat = [x for a in log_decays for x in (a if is_pair(a) else (a,))]
    if any(x is None or x.dim() != 1 for x in flat):
        return False
    L, D = q.shape[2], q.shape[3]
    return L <= max(kwargs.get("chunk_size", 64), AUTO_ONE_BLOCK_PER_HEAD_DIM["head"] * D)


def _shared_block(q, k, v, log_decays, orders, normalize, return_parts, eps):
    """All scans at once: M = sum_s P_s^T M_s P_s in raster order ([1, H, L, L], built by autograd, so the decays
    get their gradients through it), then one block. The same sums of numerators and denominators as scan by scan."""
    out_dtype = q.dtype
    dt = acc_dtype(q.dtype)
    L = q.shape[2]
    mask = None
    for order, a in zip(orders, log_decays):
        inverse = torch.argsort(order.to(q.device))
        m = decay_mask(tuple(x.to(dt) for x in a) if is_pair(a) else a.to(dt), L, q.device, dt)
        m = m.index_select(-2, inverse).index_select(-1, inverse)
        mask = m if mask is None else mask + m
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
    if _one_shared_block(q, log_decays, attention_mask, kwargs):
        return _shared_block(q, k, v, log_decays, orders, normalize, return_parts, eps)
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
