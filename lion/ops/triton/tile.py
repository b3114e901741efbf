"""Parallel-tile Triton kernels of the LION core for short sequences (docs/MATH.md section 2.1 computed block by block).

Flash-attention layout without a softmax: no running maximum and no sequential dependence between blocks. The
forward runs one program per (batch*head, query block); it holds its query block and loops over all key blocks,

    A = (q k^T) * M    (M_ij = exp(sum_{min(i,j) < t <= max(i,j)} a_t), the two-sided decay mask of docs/MATH.md section 1)
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

A pair of log-decays (PAIR; A2 the backward ones): a program sees the log-decays of the lower triangle towards its
left and those of the upper triangle towards its right: a query block the forward ones on its left and the backward
ones on its right, a key block (the transposed tiles) the backward ones on its left and the forward ones on its
right; the diagonal tile takes the lower triangle from the left ones. dL/dc is kept as two parts, left and right.
Log-decays are clamped where their exp underflows (kernels._load_decay): -inf and -1e20 give 0, never NaN.

Block sizes: the program's own block BM (its diagonal tile is BM x BM), the other side's blocks BN, BN dividing
BM (both powers of two); BD >= D and BV >= Dv hold the whole head (no value split: A is computed once per tile
pair). Dots, rounding and dtypes follow kernels.py (_mm, DOT): bf16/fp16 tensor cores with fp32 accumulation, fp32
as tf32x3 on GPUs, fp64 exact. Grid sizes are 1-D (no 65535 limit). Launch settings and the measured choice
between these kernels and the chunk kernels: ops.py.
"""
import triton
import triton.language as tl

from lion.ops.triton.kernels import (_chunk_decay, _diag_exponent, _head_ptrs, _load_decay, _mm, _round, _rows,
                                     _store_rows)


@triton.jit
def _suffix(a, idx):
    """Exclusive suffix sums within a block, sum_{u > i} a_u, as a masked row sum (no differences)."""
    return tl.sum(tl.where(idx[None, :] > idx[:, None], a[None, :], 0.0), 1)


@triton.jit
def _own_decay(a_bh, t_o, L, ACC: tl.constexpr):
    """The own block's inclusive prefix sums b [BM] and exclusive suffix sums s [BM] of the log-decays."""
    a = _load_decay(a_bh, t_o, L, ACC)
    return tl.cumsum(a, 0), _suffix(a, t_o)


@triton.jit
def _exponent(bo, so, a_bh, a2_bh, t, end, L, off, MODE: tl.constexpr, ACC: tl.constexpr, PAIR: tl.constexpr):
    """log M [BM, BN] between the own block (bo, so: the prefix / suffix sums of the log-decays at a_bh) and the
    other block t, and the other block's total log-decay (the caller adds it to the running sum `off`).
    MODE 0: t is the own block: below the diagonal the log-decays at a_bh (bo), above it those at a2_bh (the same
    unless PAIR; M_ii = 1 exactly); 1: a block right of it; 2: a block left of it, t running right to left from
    end - 1 (the caller passes the log-decays of that side). Log-decays are clamped (kernels._load_decay): -inf and
    -1e20 give the zeros they should, never NaN."""
    if MODE == 0:
        if PAIR:
            E = _diag_exponent(bo, _chunk_decay(a2_bh, t, L, ACC)[0], t, t)
        else:
            E = -tl.abs(bo[:, None] - bo[None, :])
        g = off
    elif MODE == 2:
        sh = tl.where(t + 1 < end, _load_decay(a_bh, t + 1, L, ACC), 0.0)
        g = tl.sum(_load_decay(a_bh, t, L, ACC), 0)
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
def _fwd_tile(acc, den, off, q, bo, so, k_bh, v_bh, a_bh, a2_bh, t, end, skl, skd, svl, svd, offs_d, offs_v, L, D,
              DV, MODE: tl.constexpr, HAS_DECAY: tl.constexpr, DOT: tl.constexpr, PAIR: tl.constexpr):
    """One key block t of the forward: acc += A v, den += A 1."""
    DT = q.dtype
    ACC = acc.dtype
    k = _rows(k_bh, t, skl, skd, offs_d, L, D)
    v = _rows(v_bh, t, svl, svd, offs_v, L, DV)
    s = _mm(q, tl.trans(k), DT, DOT)  # [BM, BN]
    if HAS_DECAY:
        E, g = _exponent(bo, so, a_bh, a2_bh, t, end, L, off, MODE, ACC, PAIR)
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
    """The key blocks right (MODE 1) or left (MODE 2) of the own block; bo, so, a_bh: that side's log-decays."""
    offs_n = tl.arange(0, BN)
    off = tl.sum(tl.zeros((BN,), dtype=acc.dtype), 0)  # running log-decay of the blocks in between
    for n in range(0, _sweep(o0, L, BM, BN, MODE)):
        t, end = _other(o0, n, offs_n, BM, BN, MODE)
        acc, den, off = _fwd_tile(acc, den, off, q, bo, so, k_bh, v_bh, a_bh, a_bh, t, end, skl, skd, svl, svd,
                                  offs_d, offs_v, L, D, DV, MODE, HAS_DECAY, DOT, False)
    return acc, den


@triton.jit
def _sides(al_bh, ar_bh, t_o, L, ACC: tl.constexpr, BM: tl.constexpr, HAS_DECAY: tl.constexpr,
           PAIR: tl.constexpr):
    """The own block's prefix and suffix sums of the log-decays seen towards the left (al) and the right (ar)."""
    bl = tl.zeros((BM,), dtype=ACC)
    sl = bl
    if HAS_DECAY:
        bl, sl = _own_decay(al_bh, t_o, L, ACC)
    br, sr = bl, sl
    if HAS_DECAY and PAIR:
        br, sr = _own_decay(ar_bh, t_o, L, ACC)
    return bl, sl, br, sr


@triton.jit
def lion_tile_fwd_kernel(
    Q, K, V, A, A2, O, DEN, YLO,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, D, DV, eps,
    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    HAS_DECAY: tl.constexpr, NORMALIZE: tl.constexpr, PARTS: tl.constexpr, RESID: tl.constexpr,
    DOT: tl.constexpr, PAIR: tl.constexpr = False,
):
    """Forward. Grid (B*H*cdiv(L, BM),): program p handles head p // NQ, query block p % NQ.

    Q, K [B, H, L, D], V [B, H, L, DV] (any strides); A [B, H, L] log-decays (contiguous, accumulation dtype): the
    forward ones (keys left of a query), A2 the backward ones (keys right of it; A itself unless PAIR);
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
    a2_bh = A2 + bh * L if PAIR else a_bh  # one pointer unless PAIR: fewer registers
    offs_d = tl.arange(0, BD)
    offs_v = tl.arange(0, BV)
    o0 = m * BM
    t_o = o0 + tl.arange(0, BM)
    q = _rows(q_bh, t_o, sql, sqd, offs_d, L, D)
    bl, sl, br, sr = _sides(a_bh, a2_bh, t_o, L, ACC, BM, HAS_DECAY, PAIR)
    acc = tl.zeros((BM, BV), dtype=ACC)
    den = tl.zeros((BM,), dtype=ACC)
    acc, den, _ = _fwd_tile(acc, den, tl.sum(den, 0), q, bl, sl, k_bh, v_bh, a_bh, a2_bh, t_o, o0, skl, skd, svl,
                            svd, offs_d, offs_v, L, D, DV, 0, HAS_DECAY, DOT, PAIR)  # the diagonal tile [BM, BM]
    acc, den = _fwd_sweep(acc, den, q, br, sr, o0, k_bh, v_bh, a2_bh, skl, skd, svl, svd, offs_d, offs_v,
                          L, D, DV, BM, BN, 1, HAS_DECAY, DOT)
    acc, den = _fwd_sweep(acc, den, q, bl, sl, o0, k_bh, v_bh, a_bh, skl, skd, svl, svd, offs_d, offs_v,
                          L, D, DV, BM, BN, 2, HAS_DECAY, DOT)
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
def _dcontrib(dcl, dcr, P, t_o, t, MODE: tl.constexpr, PAIR: tl.constexpr):
    """dL/dc from one tile (rows t_o of the program's block, columns t): dcl += sum_{j < t} P_tj (the other token
    left: the left log-decays' gradient), dcr -= sum_{j > t} P_tj (right); unless PAIR, both into dcl."""
    if MODE == 0:
        if PAIR:
            dcl += tl.sum(tl.where(t_o[:, None] > t[None, :], P, 0.0), 1)
            dcr -= tl.sum(tl.where(t_o[:, None] < t[None, :], P, 0.0), 1)
        else:
            dcl += tl.sum(tl.where(t_o[:, None] > t[None, :], P, tl.where(t_o[:, None] < t[None, :], -P, 0.0)), 1)
    elif MODE == 1:
        if PAIR:
            dcr -= tl.sum(P, 1)
        else:
            dcl -= tl.sum(P, 1)
    else:
        dcl += tl.sum(P, 1)
    return dcl, dcr


@triton.jit
def _dq_tile(dq, dcl, dcr, off, q, do, r, gd, bo, so, t_o, k_bh, v_bh, a_bh, a2_bh, t, end, skl, skd, svl, svd,
             offs_d, offs_v, L, D, DV, MODE: tl.constexpr, HAS_DECAY: tl.constexpr, SCALE: tl.constexpr,
             HAS_GD: tl.constexpr, DOT: tl.constexpr, PAIR: tl.constexpr):
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
        E, g = _exponent(bo, so, a_bh, a2_bh, t, end, L, off, MODE, ACC, PAIR)
        dA = dA * tl.exp(E)  # dL/d(q k^T)
        dcl, dcr = _dcontrib(dcl, dcr, dA * _mm(q, tl.trans(k), DT, DOT), t_o, t, MODE, PAIR)
        off += g
    dq += _mm(dA, k, DT, DOT)
    return dq, dcl, dcr, off


@triton.jit
def _dkdv_tile(dk, dv, dcl, dcr, off, k, v, bo, so, t_o, q_bh, a_bh, a2_bh, do_bh, r_bh, gd_bh, t, end, sql, sqd,
               offs_d, offs_v, L, D, DV, MODE: tl.constexpr, HAS_DECAY: tl.constexpr, SCALE: tl.constexpr,
               HAS_GD: tl.constexpr, DOT: tl.constexpr, PAIR: tl.constexpr):
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
        E, g = _exponent(bo, so, a_bh, a2_bh, t, end, L, off, MODE, ACC, PAIR)
        M = tl.exp(E)
        dA = dA * M
        dcl, dcr = _dcontrib(dcl, dcr, dA * s, t_o, t, MODE, PAIR)
        s = s * M
        off += g
    if SCALE:
        s = s * r[None, :]
    dk += _mm(dA, q, DT, DOT)
    dv += _mm(s, do, DT, DOT)
    return dk, dv, dcl, dcr, off


@triton.jit
def _dq_sweep(dq, dcl, dcr, q, do, r, gd, bo, so, t_o, o0, k_bh, v_bh, a_bh, skl, skd, svl, svd, offs_d, offs_v,
              L, D, DV, BM: tl.constexpr, BN: tl.constexpr, MODE: tl.constexpr, HAS_DECAY: tl.constexpr,
              SCALE: tl.constexpr, HAS_GD: tl.constexpr, DOT: tl.constexpr, PAIR: tl.constexpr):
    offs_n = tl.arange(0, BN)
    off = tl.sum(tl.zeros((BN,), dtype=dq.dtype), 0)
    for n in range(0, _sweep(o0, L, BM, BN, MODE)):
        t, end = _other(o0, n, offs_n, BM, BN, MODE)
        dq, dcl, dcr, off = _dq_tile(dq, dcl, dcr, off, q, do, r, gd, bo, so, t_o, k_bh, v_bh, a_bh, a_bh, t, end,
                                     skl, skd, svl, svd, offs_d, offs_v, L, D, DV, MODE, HAS_DECAY, SCALE, HAS_GD,
                                     DOT, PAIR)
    return dq, dcl, dcr


@triton.jit
def _dkdv_sweep(dk, dv, dcl, dcr, k, v, bo, so, t_o, o0, q_bh, a_bh, do_bh, r_bh, gd_bh, sql, sqd, offs_d, offs_v,
                L, D, DV, BM: tl.constexpr, BN: tl.constexpr, MODE: tl.constexpr, HAS_DECAY: tl.constexpr,
                SCALE: tl.constexpr, HAS_GD: tl.constexpr, DOT: tl.constexpr, PAIR: tl.constexpr):
    offs_n = tl.arange(0, BN)
    off = tl.sum(tl.zeros((BN,), dtype=dk.dtype), 0)
    for n in range(0, _sweep(o0, L, BM, BN, MODE)):
        t, end = _other(o0, n, offs_n, BM, BN, MODE)
        dk, dv, dcl, dcr, off = _dkdv_tile(dk, dv, dcl, dcr, off, k, v, bo, so, t_o, q_bh, a_bh, a_bh, do_bh, r_bh,
                                           gd_bh, t, end, sql, sqd, offs_d, offs_v, L, D, DV, MODE, HAS_DECAY,
                                           SCALE, HAS_GD, DOT, PAIR)
    return dk, dv, dcl, dcr


@triton.jit
def lion_tile_bwd_kernel(
    Q, K, V, A, A2, DO, RR, GD, DQ, DK, DV_, DC, DC2, DC3, DC4,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, D, DV,
    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    HAS_DECAY: tl.constexpr, SCALE: tl.constexpr, HAS_GD: tl.constexpr, DOT: tl.constexpr,
    PAIR: tl.constexpr = False,
):
    """Backward. Grid (2*B*H*NB,), NB = cdiv(L, BM): per head and block m, program 2m computes dq of query block
    m, program 2m + 1 dk and dv of key block m (side by side: they read the same rows).

    A / A2: the forward / backward log-decays (A2 = A unless PAIR). A query sees the forward ones towards its left
    and the backward ones towards its right; a key the backward ones towards its left (the queries before it) and
    the forward ones towards its right. DO [B, H, L, DV] = dL/dy (or dL/dnum) contiguous; RR, GD [B, H, L]:
    r = 1/den and gd = dL/dden (SCALE, from lion_tile_bwd_prep_kernel), or GD = dL/dden of return_parts (HAS_GD
    without SCALE); DQ, DK [B, H, L, D], DV_ [B, H, L, DV] contiguous, input dtype; DC..DC4 [B, H, L] accumulation
    dtype: the parts of dL/dc (HAS_DECAY) of the forward (DC, DC3) and the backward (DC2, DC4) log-decays, from the
    dq (DC, DC2) and the dk, dv (DC3, DC4) programs; unless PAIR only DC and DC4 are written (one part each).
    """
    ACC = DC.dtype.element_ty
    NB = tl.cdiv(L, BM)
    pid = tl.program_id(0)
    part = pid % 2
    m = (pid // 2) % NB
    bh = (pid // (2 * NB)).to(tl.int64)
    q_bh, k_bh, v_bh = _head_ptrs(Q, K, V, bh, H, sqb, sqh, skb, skh, svb, svh)
    a_bh = A + bh * L
    a2_bh = A2 + bh * L if PAIR else a_bh  # one pointer unless PAIR: fewer registers
    do_bh = DO + bh * L * DV
    r_bh = RR + bh * L
    gd_bh = GD + bh * L
    offs_d = tl.arange(0, BD)
    offs_v = tl.arange(0, BV)
    o0 = m * BM
    t_o = o0 + tl.arange(0, BM)
    dcl = tl.zeros((BM,), dtype=ACC)
    if PAIR:
        dcr = tl.zeros((BM,), dtype=ACC)
    else:  # one log-decay: everything goes into dcl; a scalar placeholder keeps registers free
        dcr = tl.sum(dcl, 0)
    bl, sl, br, sr = _sides(a_bh, a2_bh, t_o, L, ACC, BM, HAS_DECAY, PAIR)
    if part == 0:  # dq of query block m: loop over key blocks (left: forward log-decays, right: backward)
        q = _rows(q_bh, t_o, sql, sqd, offs_d, L, D)
        do = _rows(do_bh, t_o, DV, 1, offs_v, L, DV)
        r = tl.full((BM,), 1.0, ACC)
        gd = tl.zeros((BM,), dtype=ACC)
        if SCALE:
            r = tl.load(r_bh + t_o, mask=t_o < L, other=0.0)
        if HAS_GD:
            gd = tl.load(gd_bh + t_o, mask=t_o < L, other=0.0)
        dq = tl.zeros((BM, BD), dtype=ACC)
        dq, dcl, dcr, _ = _dq_tile(dq, dcl, dcr, tl.sum(dcl, 0), q, do, r, gd, bl, sl, t_o, k_bh, v_bh, a_bh, a2_bh,
                                   t_o, o0, skl, skd, svl, svd, offs_d, offs_v, L, D, DV, 0, HAS_DECAY, SCALE, HAS_GD,
                                   DOT, PAIR)
        dq, dcl, dcr = _dq_sweep(dq, dcl, dcr, q, do, r, gd, br, sr, t_o, o0, k_bh, v_bh, a2_bh, skl, skd, svl, svd,
                                 offs_d, offs_v, L, D, DV, BM, BN, 1, HAS_DECAY, SCALE, HAS_GD, DOT, PAIR)
        dq, dcl, dcr = _dq_sweep(dq, dcl, dcr, q, do, r, gd, bl, sl, t_o, o0, k_bh, v_bh, a_bh, skl, skd, svl, svd,
                                 offs_d, offs_v, L, D, DV, BM, BN, 2, HAS_DECAY, SCALE, HAS_GD, DOT, PAIR)
        _store_rows(DQ + bh * L * D, dq, t_o, D, offs_d, L, D, DOT)
        if HAS_DECAY:
            tl.store(DC + bh * L + t_o, dcl, mask=t_o < L)
            if PAIR:
                tl.store(DC2 + bh * L + t_o, dcr, mask=t_o < L)
    else:  # dk, dv of key block m: loop over query blocks (left: backward log-decays, right: forward)
        if PAIR:
            bl, sl, br, sr = br, sr, bl, sl
        k = _rows(k_bh, t_o, skl, skd, offs_d, L, D)
        v = _rows(v_bh, t_o, svl, svd, offs_v, L, DV)
        dk = tl.zeros((BM, BD), dtype=ACC)
        dv = tl.zeros((BM, BV), dtype=ACC)
        dk, dv, dcl, dcr, _ = _dkdv_tile(dk, dv, dcl, dcr, tl.sum(dcl, 0), k, v, bl, sl, t_o, q_bh, a2_bh, a_bh,
                                         do_bh, r_bh, gd_bh, t_o, o0, sql, sqd, offs_d, offs_v, L, D, DV, 0,
                                         HAS_DECAY, SCALE, HAS_GD, DOT, PAIR)
        dk, dv, dcl, dcr = _dkdv_sweep(dk, dv, dcl, dcr, k, v, br, sr, t_o, o0, q_bh, a_bh, do_bh, r_bh, gd_bh,
                                       sql, sqd, offs_d, offs_v, L, D, DV, BM, BN, 1, HAS_DECAY, SCALE, HAS_GD, DOT,
                                       PAIR)
        dk, dv, dcl, dcr = _dkdv_sweep(dk, dv, dcl, dcr, k, v, bl, sl, t_o, o0, q_bh, a2_bh, do_bh, r_bh, gd_bh,
                                       sql, sqd, offs_d, offs_v, L, D, DV, BM, BN, 2, HAS_DECAY, SCALE, HAS_GD, DOT,
                                       PAIR)
        _store_rows(DK + bh * L * D, dk, t_o, D, offs_d, L, D, DOT)
        _store_rows(DV_ + bh * L * DV, dv, t_o, DV, offs_v, L, DV, DOT)
        if HAS_DECAY:
            tl.store(DC4 + bh * L + t_o, dcl, mask=t_o < L)
            if PAIR:
                tl.store(DC3 + bh * L + t_o, dcr, mask=t_o < L)
