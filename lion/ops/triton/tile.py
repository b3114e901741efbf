"""Parallel-tile Triton kernels of the LION core for short sequences (SPEC 2.1 computed block by block).

Flash-attention layout without a softmax: no running maximum and no sequential dependence between blocks. The
forward runs one program per (batch*head, query block); it holds its query block and loops over all key blocks,

    A = (q k^T) * M    (M_ij = exp(sum_{min(i,j) < t <= max(i,j)} a_t), the two-sided decay mask of SPEC 1)
    num += A v,  den += A 1

and stores y = num / safe_den(den) (or num, den). The backward runs one program per (batch*head, query block) for
dq and one per (batch*head, key block) for dk and dv, each looping over all blocks of the other side and
recomputing A; nothing L x L is stored. With g_i = dL/dnum_i, gd_i = dL/dden_i and dA_ij = (g_i . v_j + gd_i) M_ij:

    dq_i = sum_j dA_ij k_j,   dk_j = sum_i dA_ij q_i,   dv_j = sum_i A_ij g_i
    dL/dc_t = sum_j P_tj sign(t - j) + sum_i P_it sign(t - i),   P = dA * (q k^T) = dL/dlog M,   c = cumsum(a)

(the first sum in the dq program, the second in the dk/dv program); the host turns dL/dc into the log-decay
gradient da_t = -sum_{s<t} dL/dc_s (the total of dL/dc is 0: a_0 never enters).

The mask without a long prefix sum, with every exponent a sum of log-decays of one sign where it can be: for a
program's own block (start o0, prefix sums b_i = sum_{o0..i} a, suffix sums s_i = sum_{i < t < o0 + BM} a) and a
block j of the other side,
    the diagonal tile (j in the own block):  -|b_i - b_j|     (one [BM, BM] tile; M_ii = 1 exactly)
    a block right of it:                     s_i + off + b'_j   off = sum of the log-decays of the blocks between
    a block left of it:                      b_i + off + s'_j   (loaded right to left, so s' is a prefix sum)
(b', s' the other block's local prefix / suffix sums). Only the diagonal tile differences two prefix sums, within
one block: the rounding of the chunk kernels' intra-chunk mask (kernels.py); every other exponent is a sum of
terms of one sign, rounded like the oracle's segment sums. Padding needs nothing here: the host zeroes pad keys,
values and decays.

Block sizes: the program's own block BM (its diagonal tile is BM x BM), the other side's blocks BN, BN dividing
BM (both powers of two); BD >= D and BV >= Dv hold the whole head (no value split: A is computed once per tile
pair). Dots, rounding and dtypes follow kernels.py (_mm, DOT): bf16/fp16 tensor cores with fp32 accumulation, fp32
as tf32x3 on GPUs, fp64 exact. Grid sizes are 1-D (no 65535 limit). Launch settings and the measured choice
between these kernels and the chunk kernels: ops.py.
"""
import triton
import triton.language as tl

from lion.ops.triton.kernels import _chunk_decay, _head_ptrs, _mm, _round, _rows, _store_rows


@triton.jit
def _suffix(a, idx):
    """Exclusive suffix sums within a block, sum_{u > i} a_u, as a masked row sum (no differences)."""
    return tl.sum(tl.where(idx[None, :] > idx[:, None], a[None, :], 0.0), 1)


@triton.jit
def _own_decay(a_bh, t_o, L, ACC: tl.constexpr):
    """The own block's inclusive prefix sums b [BM] and exclusive suffix sums s [BM] of the log-decays."""
    a = tl.load(a_bh + t_o, mask=t_o < L, other=0.0).to(ACC)
    return tl.cumsum(a, 0), _suffix(a, t_o)


@triton.jit
def _exponent(bo, so, a_bh, t, end, L, off, MODE: tl.constexpr, ACC: tl.constexpr):
    """log M [BM, BN] between the own block (bo, so) and the other block t, and the other block's total
    log-decay (the caller adds it to the running sum `off`). MODE 0: t is the own block (the same prefix sums on
    both sides: M_ii = 1 exactly); 1: a block right of it; 2: a block left of it, t running right to left from
    end - 1."""
    if MODE == 0:
        E = -tl.abs(bo[:, None] - bo[None, :])
        g = off
    elif MODE == 2:
        sh = tl.load(a_bh + t + 1, mask=(t + 1 < end) & (t + 1 < L), other=0.0).to(ACC)
        g = tl.sum(tl.load(a_bh + t, mask=t < L, other=0.0).to(ACC), 0)
        E = bo[:, None] + (off + tl.cumsum(sh, 0))[None, :]  # cumsum of the shifted, reversed block: suffixes
    else:
        bk, g = _chunk_decay(a_bh, t, L, ACC)
        E = so[:, None] + (off + bk)[None, :]
    return E, g


@triton.jit
def _sweep(o0, L, BM: tl.constexpr, BN: tl.constexpr, MODE: tl.constexpr):
    """How many other-side blocks a program visits in MODE 1 (right of its own block) or 2 (left of it)."""
    if MODE == 1:
        n = tl.maximum(tl.cdiv(L - o0 - BM, BN), 0)
    else:
        n = o0 // BN
    return n


@triton.jit
def _other(o0, n, offs_n, BM: tl.constexpr, BN: tl.constexpr, MODE: tl.constexpr):
    """Rows t of the n-th other-side block in MODE, and the end of the block (left blocks run right to left)."""
    if MODE == 1:
        t = o0 + BM + n * BN + offs_n
    else:
        t = o0 - n * BN - 1 - offs_n
    return t, o0 - n * BN


@triton.jit
def _fwd_tile(acc, den, off, q, bo, so, k_bh, v_bh, a_bh, t, end, skl, skd, svl, svd, offs_d, offs_v, L, D, DV,
              MODE: tl.constexpr, HAS_DECAY: tl.constexpr, DOT: tl.constexpr):
    """One key block t of the forward: acc += A v, den += A 1."""
    DT = q.dtype
    ACC = acc.dtype
    k = _rows(k_bh, t, skl, skd, offs_d, L, D)
    v = _rows(v_bh, t, svl, svd, offs_v, L, DV)
    s = _mm(q, tl.trans(k), DT, DOT)  # [BM, BN]
    if HAS_DECAY:
        E, g = _exponent(bo, so, a_bh, t, end, L, off, MODE, ACC)
        s = s * tl.exp(E)
        off += g
    if DOT == 0 or DOT == 2:  # A is rounded to DT for the dot: sum the same rounded weights (y = convex comb.)
        s = _round(s, DT, DOT == 2).to(ACC)
    acc += _mm(s, v, DT, DOT)
    den += tl.sum(s, 1)
    return acc, den, off


@triton.jit
def _fwd_sweep(acc, den, q, bo, so, o0, k_bh, v_bh, a_bh, skl, skd, svl, svd, offs_d, offs_v, L, D, DV,
               BM: tl.constexpr, BN: tl.constexpr, MODE: tl.constexpr, HAS_DECAY: tl.constexpr,
               DOT: tl.constexpr):
    offs_n = tl.arange(0, BN)
    off = tl.sum(tl.zeros((BN,), dtype=acc.dtype), 0)  # running log-decay of the blocks in between
    for n in range(0, _sweep(o0, L, BM, BN, MODE)):
        t, end = _other(o0, n, offs_n, BM, BN, MODE)
        acc, den, off = _fwd_tile(acc, den, off, q, bo, so, k_bh, v_bh, a_bh, t, end, skl, skd, svl, svd,
                                  offs_d, offs_v, L, D, DV, MODE, HAS_DECAY, DOT)
    return acc, den


@triton.jit
def lion_tile_fwd_kernel(
    Q, K, V, A, O, DEN, YLO,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, D, DV, eps,
    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    HAS_DECAY: tl.constexpr, NORMALIZE: tl.constexpr, PARTS: tl.constexpr, RESID: tl.constexpr,
    DOT: tl.constexpr,
):
    """Forward. Grid (B*H*cdiv(L, BM),): program p handles head p // NQ, query block p % NQ.

    Q, K [B, H, L, D], V [B, H, L, DV] (any strides); A [B, H, L] log-decays (contiguous, accumulation dtype);
    O [B, H, L, DV] contiguous: y in the input dtype, or num in the accumulation dtype when PARTS; DEN [B, H, L];
    YLO [B, H, L, DV] bf16 = y - round(y) when RESID. Same outputs as kernels.lion_fwd_kernel, so that either
    backward can follow either forward.
    """
    DT = Q.dtype.element_ty
    ACC = DEN.dtype.element_ty
    NQ = tl.cdiv(L, BM)
    pid = tl.program_id(0)
    m = pid % NQ
    bh = (pid // NQ).to(tl.int64)
    q_bh, k_bh, v_bh = _head_ptrs(Q, K, V, bh, H, sqb, sqh, skb, skh, svb, svh)
    a_bh = A + bh * L
    offs_d = tl.arange(0, BD)
    offs_v = tl.arange(0, BV)
    o0 = m * BM
    t_o = o0 + tl.arange(0, BM)
    q = _rows(q_bh, t_o, sql, sqd, offs_d, L, D)
    bo = tl.zeros((BM,), dtype=ACC)
    so = bo
    if HAS_DECAY:
        bo, so = _own_decay(a_bh, t_o, L, ACC)
    acc = tl.zeros((BM, BV), dtype=ACC)
    den = tl.zeros((BM,), dtype=ACC)
    acc, den, _ = _fwd_tile(acc, den, tl.sum(den, 0), q, bo, so, k_bh, v_bh, a_bh, t_o, o0, skl, skd, svl, svd,
                            offs_d, offs_v, L, D, DV, 0, HAS_DECAY, DOT)  # the diagonal tile [BM, BM]
    for MODE in tl.static_range(1, 3):
        acc, den = _fwd_sweep(acc, den, q, bo, so, o0, k_bh, v_bh, a_bh, skl, skd, svl, svd, offs_d, offs_v,
                              L, D, DV, BM, BN, MODE, HAS_DECAY, DOT)
    tl.store(DEN + bh * L + t_o, den, mask=t_o < L)
    if NORMALIZE and not PARTS:  # sign-keeping clamp |den| >= eps (lion.ops.naive.safe_den)
        acc = acc / tl.where(den >= 0, tl.maximum(den, eps), tl.minimum(den, -eps))[:, None]
        if RESID:
            hi = _round(acc, DT, DOT == 2).to(ACC)
            _store_rows(YLO + bh * L * DV, acc - hi, t_o, DV, offs_v, L, DV, DOT)
            acc = hi
    _store_rows(O + bh * L * DV, acc, t_o, DV, offs_v, L, DV, DOT)


@triton.jit
def lion_tile_bwd_prep_kernel(DO, Y, YLO, DEN, RG, N, DV, eps,
                              BR: tl.constexpr, BV: tl.constexpr, RESID: tl.constexpr):
    """For normalised outputs: per row (N = B*H*L rows) RG[0] = r = 1 / safe_den(den) and RG[1] = gd = dL/dden =
    -(dy . y) r (0 where the clamp is active), so that dL/dnum = r dy. Y (+ YLO) the forward output, DO = dL/dy."""
    ACC = DEN.dtype.element_ty
    rows = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    cols = tl.arange(0, BV)
    do = _rows(DO, rows, DV, 1, cols, N, DV).to(ACC)
    y = _rows(Y, rows, DV, 1, cols, N, DV).to(ACC)
    if RESID:
        y += _rows(YLO, rows, DV, 1, cols, N, DV).to(ACC)
    den = tl.load(DEN + rows, mask=rows < N, other=1.0)
    r = 1.0 / tl.where(den >= 0, tl.maximum(den, eps), tl.minimum(den, -eps))
    gd = tl.where(tl.abs(den) >= eps, -tl.sum(do * y, 1) * r, 0.0)
    tl.store(RG + rows, r, mask=rows < N)
    tl.store(RG + N + rows, gd, mask=rows < N)


@triton.jit
def _dcontrib(dc, P, t_o, t):
    """dc += sum_j P_tj sign(t - j) over the tile (rows t_o of the program's block, columns t)."""
    return dc + tl.sum(tl.where(t_o[:, None] > t[None, :], P, tl.where(t_o[:, None] < t[None, :], -P, 0.0)), 1)


@triton.jit
def _dq_tile(dq, dc, off, q, do, r, gd, bo, so, t_o, k_bh, v_bh, a_bh, t, end, skl, skd, svl, svd, offs_d,
             offs_v, L, D, DV, MODE: tl.constexpr, HAS_DECAY: tl.constexpr, SCALE: tl.constexpr,
             HAS_GD: tl.constexpr, DOT: tl.constexpr):
    """One key block t for the program's query block: dq += dA k, and the row part of dL/dc."""
    DT = q.dtype
    ACC = dq.dtype
    k = _rows(k_bh, t, skl, skd, offs_d, L, D)
    v = _rows(v_bh, t, svl, svd, offs_v, L, DV)
    dA = _mm(do, tl.trans(v), DT, DOT)  # [BM, BN]: g v^T (+ gd) = dL/dA
    if SCALE:
        dA = dA * r[:, None]
    if HAS_GD:
        dA += gd[:, None]
    if HAS_DECAY:
        E, g = _exponent(bo, so, a_bh, t, end, L, off, MODE, ACC)
        dA = dA * tl.exp(E)  # dL/d(q k^T)
        dc = _dcontrib(dc, dA * _mm(q, tl.trans(k), DT, DOT), t_o, t)
        off += g
    dq += _mm(dA, k, DT, DOT)
    return dq, dc, off


@triton.jit
def _dkdv_tile(dk, dv, dc, off, k, v, bo, so, t_o, q_bh, a_bh, do_bh, r_bh, gd_bh, t, end, sql, sqd, offs_d,
               offs_v, L, D, DV, MODE: tl.constexpr, HAS_DECAY: tl.constexpr, SCALE: tl.constexpr,
               HAS_GD: tl.constexpr, DOT: tl.constexpr):
    """One query block t for the program's key block (tiles transposed: [keys, queries]): dk += dA^T q,
    dv += A^T g, and the column part of dL/dc."""
    DT = k.dtype
    ACC = dk.dtype
    q = _rows(q_bh, t, sql, sqd, offs_d, L, D)
    do = _rows(do_bh, t, DV, 1, offs_v, L, DV)
    s = _mm(k, tl.trans(q), DT, DOT)    # [BM, BN] = (q k^T)^T
    dA = _mm(v, tl.trans(do), DT, DOT)  # (g v^T)^T before the scale
    if SCALE:
        r = tl.load(r_bh + t, mask=t < L, other=0.0)
        dA = dA * r[None, :]
    if HAS_GD:
        dA += tl.load(gd_bh + t, mask=t < L, other=0.0)[None, :]
    if HAS_DECAY:
        E, g = _exponent(bo, so, a_bh, t, end, L, off, MODE, ACC)
        M = tl.exp(E)
        dA = dA * M
        dc = _dcontrib(dc, dA * s, t_o, t)
        s = s * M
        off += g
    if SCALE:
        s = s * r[None, :]
    dk += _mm(dA, q, DT, DOT)
    dv += _mm(s, do, DT, DOT)
    return dk, dv, dc, off


@triton.jit
def _dq_sweep(dq, dc, q, do, r, gd, bo, so, t_o, o0, k_bh, v_bh, a_bh, skl, skd, svl, svd, offs_d, offs_v,
              L, D, DV, BM: tl.constexpr, BN: tl.constexpr, MODE: tl.constexpr, HAS_DECAY: tl.constexpr,
              SCALE: tl.constexpr, HAS_GD: tl.constexpr, DOT: tl.constexpr):
    offs_n = tl.arange(0, BN)
    off = tl.sum(tl.zeros((BN,), dtype=dq.dtype), 0)
    for n in range(0, _sweep(o0, L, BM, BN, MODE)):
        t, end = _other(o0, n, offs_n, BM, BN, MODE)
        dq, dc, off = _dq_tile(dq, dc, off, q, do, r, gd, bo, so, t_o, k_bh, v_bh, a_bh, t, end, skl, skd, svl,
                               svd, offs_d, offs_v, L, D, DV, MODE, HAS_DECAY, SCALE, HAS_GD, DOT)
    return dq, dc


@triton.jit
def _dkdv_sweep(dk, dv, dc, k, v, bo, so, t_o, o0, q_bh, a_bh, do_bh, r_bh, gd_bh, sql, sqd, offs_d, offs_v,
                L, D, DV, BM: tl.constexpr, BN: tl.constexpr, MODE: tl.constexpr, HAS_DECAY: tl.constexpr,
                SCALE: tl.constexpr, HAS_GD: tl.constexpr, DOT: tl.constexpr):
    offs_n = tl.arange(0, BN)
    off = tl.sum(tl.zeros((BN,), dtype=dk.dtype), 0)
    for n in range(0, _sweep(o0, L, BM, BN, MODE)):
        t, end = _other(o0, n, offs_n, BM, BN, MODE)
        dk, dv, dc, off = _dkdv_tile(dk, dv, dc, off, k, v, bo, so, t_o, q_bh, a_bh, do_bh, r_bh, gd_bh, t, end,
                                     sql, sqd, offs_d, offs_v, L, D, DV, MODE, HAS_DECAY, SCALE, HAS_GD, DOT)
    return dk, dv, dc


@triton.jit
def lion_tile_bwd_kernel(
    Q, K, V, A, DO, RR, GD, DQ, DK, DV_, DC, DC2,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, D, DV,
    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    HAS_DECAY: tl.constexpr, SCALE: tl.constexpr, HAS_GD: tl.constexpr, DOT: tl.constexpr,
):
    """Backward. Grid (2*B*H*NB,), NB = cdiv(L, BM): per head and block m, program 2m computes dq of query block
    m, program 2m + 1 dk and dv of key block m (side by side: they read the same rows).

    DO [B, H, L, DV] = dL/dy (or dL/dnum) contiguous; RR, GD [B, H, L]: r = 1/den and gd = dL/dden (SCALE, from
    lion_tile_bwd_prep_kernel), or GD = dL/dden of return_parts (HAS_GD without SCALE); DQ, DK [B, H, L, D],
    DV_ [B, H, L, DV] contiguous, input dtype; DC, DC2 [B, H, L] accumulation dtype: the row and column parts
    of dL/dc (HAS_DECAY).
    """
    ACC = DC.dtype.element_ty
    NB = tl.cdiv(L, BM)
    pid = tl.program_id(0)
    part = pid % 2
    m = (pid // 2) % NB
    bh = (pid // (2 * NB)).to(tl.int64)
    q_bh, k_bh, v_bh = _head_ptrs(Q, K, V, bh, H, sqb, sqh, skb, skh, svb, svh)
    a_bh = A + bh * L
    do_bh = DO + bh * L * DV
    r_bh = RR + bh * L
    gd_bh = GD + bh * L
    offs_d = tl.arange(0, BD)
    offs_v = tl.arange(0, BV)
    o0 = m * BM
    t_o = o0 + tl.arange(0, BM)
    bo = tl.zeros((BM,), dtype=ACC)
    so = bo
    if HAS_DECAY:
        bo, so = _own_decay(a_bh, t_o, L, ACC)
    dc = tl.zeros((BM,), dtype=ACC)
    if part == 0:  # dq of query block m: loop over key blocks
        q = _rows(q_bh, t_o, sql, sqd, offs_d, L, D)
        do = _rows(do_bh, t_o, DV, 1, offs_v, L, DV)
        r = tl.full((BM,), 1.0, ACC)
        gd = tl.zeros((BM,), dtype=ACC)
        if SCALE:
            r = tl.load(r_bh + t_o, mask=t_o < L, other=0.0)
        if HAS_GD:
            gd = tl.load(gd_bh + t_o, mask=t_o < L, other=0.0)
        dq = tl.zeros((BM, BD), dtype=ACC)
        dq, dc, _ = _dq_tile(dq, dc, tl.sum(dc, 0), q, do, r, gd, bo, so, t_o, k_bh, v_bh, a_bh, t_o, o0, skl, skd,
                             svl, svd, offs_d, offs_v, L, D, DV, 0, HAS_DECAY, SCALE, HAS_GD, DOT)
        for MODE in tl.static_range(1, 3):
            dq, dc = _dq_sweep(dq, dc, q, do, r, gd, bo, so, t_o, o0, k_bh, v_bh, a_bh, skl, skd, svl, svd,
                               offs_d, offs_v, L, D, DV, BM, BN, MODE, HAS_DECAY, SCALE, HAS_GD, DOT)
        _store_rows(DQ + bh * L * D, dq, t_o, D, offs_d, L, D, DOT)
        if HAS_DECAY:
            tl.store(DC + bh * L + t_o, dc, mask=t_o < L)
    else:  # dk, dv of key block m: loop over query blocks
        k = _rows(k_bh, t_o, skl, skd, offs_d, L, D)
        v = _rows(v_bh, t_o, svl, svd, offs_v, L, DV)
        dk = tl.zeros((BM, BD), dtype=ACC)
        dv = tl.zeros((BM, BV), dtype=ACC)
        dk, dv, dc, _ = _dkdv_tile(dk, dv, dc, tl.sum(dc, 0), k, v, bo, so, t_o, q_bh, a_bh, do_bh, r_bh, gd_bh, t_o,
                                   o0, sql, sqd, offs_d, offs_v, L, D, DV, 0, HAS_DECAY, SCALE, HAS_GD, DOT)
        for MODE in tl.static_range(1, 3):
            dk, dv, dc = _dkdv_sweep(dk, dv, dc, k, v, bo, so, t_o, o0, q_bh, a_bh, do_bh, r_bh, gd_bh, sql, sqd,
                                     offs_d, offs_v, L, D, DV, BM, BN, MODE, HAS_DECAY, SCALE, HAS_GD, DOT)
        _store_rows(DK + bh * L * D, dk, t_o, D, offs_d, L, D, DOT)
        _store_rows(DV_ + bh * L * DV, dv, t_o, DV, offs_v, L, DV, DOT)
        if HAS_DECAY:
            tl.store(DC2 + bh * L + t_o, dc, mask=t_o < L)
