"""Fused Triton kernels of the chunkwise LION core (docs/MATH.md section 2.3), forward and backward.

Layout of the computation (one program per (batch*head [, value block]), sequential over chunks):

    loop R (right to left): carry the backward state  S^B = sum_{j right of the chunk} exp(..) k_j [v_j; 1]^T
                            and write each chunk's inter-chunk contribution from the right to a scratch buffer
    loop L (left to right): carry the forward state   S^F = sum_{j left of the chunk} exp(..) k_j [v_j; 1]^T,
                            compute the intra-chunk block (both triangles of the mask), add the three parts and
                            write the output (or num / den)

Inside chunk n, with local inclusive prefix sums b_i = sum_{t = s..i} a_t and the chunk total g = b_{last}:
intra M_ij = exp(-|b_i - b_j|); token i reads the forward state with weight exp(b_i) and the backward state with
exp(g - b_i); key j enters the forward state with exp(g - b_j) and the backward state with exp(b_j); both states
decay by exp(g) per chunk. Every exponent is <= 0: nothing overflows and no long prefix sum is differenced.

A pair of log-decays (forward a^F, backward a^B: lion.ops.lion_attention) is the same computation with a^F in loop L's
state and below the intra block's diagonal, a^B in loop R's state and above it (PAIR; A2 points at a^B, else at a).
Log-decays are clamped from below where their exp underflows to 0 (_load_decay): -inf (lambda = 0) and -1e20 then
give exactly the zeros of the PyTorch forms instead of inf - inf = NaN or a cancelled prefix sum.

Why sequential over chunks rather than a separate state pass: the states never touch memory (registers only), so
the forward reads q, k, v twice and writes one fp32 scratch row per token; a chunk-parallel design stores a D x Dv
state per chunk and direction (2-4x more bytes at D = C = 64). Parallelism is B*H x value blocks in the forward and
2*B*H in the backward (one program for dq, one for dk and dv); see ops.py for the launch heuristics.

The backward runs the same two loops in two programs per head, one for dq and one for dk, dv: with g = dL/dnum
and gd = dL/dden,
    dq_i = sum_j M_ij (g_i . v_j + gd_i) k_j        (states over k [v; 1]^T, like the forward)
    dk_j = sum_i M_ij (g_i . v_j + gd_i) q_i        (states over q [g; gd]^T)
    dv_j = sum_i M_ij (q_i . k_j) g_i               (the same states, transposed)
and the log-decay gradient from dL/dc_t = q_t.(dq^<_t - dq^>_t) - k_t.(dk^<_t - dk^>_t) (c = cumsum(a); < and >
the strictly lower / upper parts), da_t = sum_{s >= t} dL/dc_s = -sum_{s < t} dL/dc_s (the total is 0 since a_0
never enters), accumulated left to right in loop L; each program sums its share and the host adds the two. With a
pair, the parts from the lower triangle (keys left of a query) are the forward log-decays' gradient, those from the
upper triangle the backward ones': each program keeps the two shares apart (four in all, added by the host).

Triton compatibility (>= 3.0): masked tl.load/store with pointer arithmetic, tl.dot (input_precision "ieee" /
"tf32x3"), tl.trans, tl.cumsum, tl.sum, tl.where, tl.debug_barrier, plain `for` loops and one runtime `if` on the
program id; no atomics, block pointers, TMA descriptors or warp specialisation. tests/test_triton_aot.py compiles both
kernels for sm_90 on a CPU-only machine. Known risk: Triton 3.4 to 3.7.0 miscompiles some gated backward kernels on
Hopper; check results on such a stack against the reference (pytest -m gpu tests/test_triton.py, and the check column
of scripts/bench_attention.py) before trusting speed numbers.
"""
import triton
import triton.language as tl


@triton.jit
def _round(x, DT: tl.constexpr, EMU: tl.constexpr):
    """x cast to DT. EMU (interpreter only): round fp32 -> bf16 to nearest even by hand, as GPUs do; the Triton
    interpreter truncates that conversion."""
    if EMU:
        if DT == tl.bfloat16:
            u = x.to(tl.float32).to(tl.uint32, bitcast=True)
            u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
            x = u.to(tl.float32, bitcast=True)
    return x.to(DT)


@triton.jit
def _mm(a, b, DT: tl.constexpr, DOT: tl.constexpr):
    """a @ b with float32 (float64) accumulation.

    DOT = 0: operands rounded to DT (bf16/fp16 tensor cores); 1: exact ("ieee": fp64, and fp32 in the interpreter);
    2: like 0 but computed in fp32 after the rounding (the Triton interpreter multiplies raw bf16 bits in tl.dot);
    3: fp32 on GPUs as three tf32 tensor-core products ("tf32x3", about fp32 accuracy; "ieee" would fall back to
    FMA loops that spill heavily).
    """
    if DOT == 1:
        return tl.dot(a.to(DT), b.to(DT), input_precision="ieee")
    elif DOT == 3:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="tf32x3")
    elif DOT == 2:
        return tl.dot(_round(a, DT, True).to(tl.float32), _round(b, DT, True).to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a.to(DT), b.to(DT))


@triton.jit
def _rows(base, t, stride_l, stride_d, cols, L, N):
    """Load rows t (< L) and columns cols (< N) of a [L, N] matrix; zeros outside."""
    ptrs = base + t[:, None] * stride_l + cols[None, :] * stride_d
    return tl.load(ptrs, mask=(t[:, None] < L) & (cols[None, :] < N), other=0.0)


@triton.jit
def _store_rows(base, x, t, stride_l, cols, L, N, DOT: tl.constexpr):
    ptrs = base + t[:, None] * stride_l + cols[None, :]
    tl.store(ptrs, _round(x, base.dtype.element_ty, DOT == 2), mask=(t[:, None] < L) & (cols[None, :] < N))


@triton.jit
def _head_ptrs(Q, K, V, bh, H, sqb, sqh, skb, skh, svb, svh):
    """Base pointers of q, k, v of head bh = b * H + h (strided inputs)."""
    b = bh // H
    h = bh % H
    return Q + b * sqb + h * sqh, K + b * skb + h * skh, V + b * svb + h * svh


@triton.jit
def _load_decay(A_bh, t, L, ACC: tl.constexpr):
    """Log-decays at rows t (0 past L), clamped from below where their exp underflows to 0 in ACC (-110 in fp32,
    -750 in fp64): then -inf (lambda = 0) and -1e20 give exactly the zeros they give in the PyTorch forms, and no
    inf - inf or cancellation of -1e20 against itself can occur in the prefix-sum differences below."""
    a = tl.load(A_bh + t, mask=t < L, other=0.0).to(ACC)
    if ACC == tl.float64:
        a = tl.maximum(a, -750.0)
    else:
        a = tl.maximum(a, -110.0)
    return a


@triton.jit
def _chunk_decay(A_bh, t, L, ACC: tl.constexpr):
    """Local inclusive prefix sums b [BC] of the chunk's (clamped) log-decays and their total g (0 past L)."""
    a = _load_decay(A_bh, t, L, ACC)
    return tl.cumsum(a, 0), tl.sum(a, 0)


@triton.jit
def _decays(A_bh, t, L, ACC: tl.constexpr):
    """One chunk's log-decays as (b, g - b, g): inclusive prefix sums, exclusive suffix sums, total. Every factor
    exp(...) of the state weights is <= 1; one whose range holds a clamped log-decay is 0, as it should be."""
    b, g = _chunk_decay(A_bh, t, L, ACC)
    return b, g - b, g


@triton.jit
def _diag_exponent(bl, bu, rows, cols):
    """log M [R, C] of a block on the diagonal from the prefix sums bl / bu of the (clamped) log-decays of the lower
    / upper triangle: rows > cols bl_row - bl_col, rows < cols bu_col - bu_row, 0 on the diagonal."""
    return tl.where(rows[:, None] > cols[None, :], bl[:, None] - bl[None, :],
                    tl.where(rows[:, None] < cols[None, :], bu[None, :] - bu[:, None], 0.0))


@triton.jit
def _chunk_mask(al_bh, au_bh, t, L, ACC: tl.constexpr, PAIR: tl.constexpr):
    """The intra-chunk mask [BC, BC] (rows and columns t): below the diagonal from the log-decays at al_bh, above
    it from those at au_bh (the same ones unless PAIR: then exp(-|b_i - b_j|), M_ii = 1 exactly)."""
    bl, _ = _chunk_decay(al_bh, t, L, ACC)
    if PAIR:
        bu, _ = _chunk_decay(au_bh, t, L, ACC)
        E = _diag_exponent(bl, bu, t, t)
    else:
        E = -tl.abs(bl[:, None] - bl[None, :])
    return tl.exp(E)


@triton.jit
def _right_seed(k_bh, v_bh, a_bh, t, skl, skd, svl, svd, offs_d, offs_v, L, D, DV, DT: tl.constexpr,
                ACC: tl.constexpr, DOT: tl.constexpr, HAS_DECAY: tl.constexpr):
    """Loop R's first state, from the last chunk t alone: S = sum_j exp(b_j) k_j v_j^T [BD, BV] and
    z = sum_j exp(b_j) k_j [BD] (b the chunk's local prefix sums of the log-decays; no weights without decay)."""
    kw = _rows(k_bh, t, skl, skd, offs_d, L, D)
    v = _rows(v_bh, t, svl, svd, offs_v, L, DV)
    if HAS_DECAY:
        bcum, _ = _chunk_decay(a_bh, t, L, ACC)
        kw = kw.to(ACC) * tl.exp(bcum)[:, None]
    return _mm(tl.trans(kw), v, DT, DOT), tl.sum(kw.to(ACC), 0)


@triton.jit
def lion_fwd_kernel(
    Q, K, V, A, A2, O, DEN, NUMS, DENS, YLO,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, D, DV, eps,
    BC: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    HAS_DECAY: tl.constexpr, NORMALIZE: tl.constexpr, PARTS: tl.constexpr, RESID: tl.constexpr,
    RIGHT: tl.constexpr, LEFT: tl.constexpr, SCRATCH: tl.constexpr, DOT: tl.constexpr, PAIR: tl.constexpr = False,
):
    """Forward. Grid (B*H*NV,), NV = cdiv(DV, BV): program p handles head p // NV, value block p % NV.

    Q, K [B, H, L, D] and V [B, H, L, DV] (any strides); A [B, H, L] log-decays (contiguous, accumulation dtype):
    the forward ones (keys left of a query, loop L's state, the intra block below the diagonal); A2 the backward
    ones (keys right of a query, loop R's state, above the diagonal): A itself unless PAIR;
    O [B, H, L, DV] contiguous: y in the input dtype, or num in the accumulation dtype when PARTS;
    DEN [B, H, L] the denominator (accumulation dtype); NUMS [B, H, L, DV] / DENS [B, H, L] scratch for the
    contributions from the right (written by loop R, read by loop L; NUMS may alias O when PARTS).
    RIGHT / LEFT: run loop R / loop L (both in one launch, or one per launch); SCRATCH: loop L adds loop R's results
    (false when there is a single chunk). RESID: also store YLO [B, H, L, DV] (bf16) = y - round(y), so that the
    backward sees y to ~16 bits: its dL/dden = -(dy . y) / den cancels against dy . v when attention is peaked.
    """
    DT = Q.dtype.element_ty
    ACC = DEN.dtype.element_ty
    NV = tl.cdiv(DV, BV)
    pid = tl.program_id(0).to(tl.int64)
    bh = pid // NV
    pid_v = pid % NV
    q_bh, k_bh, v_bh = _head_ptrs(Q, K, V, bh, H, sqb, sqh, skb, skh, svb, svh)
    a_bh = A + bh * L
    a2_bh = A2 + bh * L
    o_bh = O + bh * L * DV
    ylo_bh = YLO + bh * L * DV
    nums_bh = NUMS + bh * L * DV
    dens_bh = DENS + bh * L
    den_bh = DEN + bh * L
    offs_c = tl.arange(0, BC)
    offs_d = tl.arange(0, BD)
    offs_v = pid_v * BV + tl.arange(0, BV)
    NC = tl.cdiv(L, BC)

    LR = (NC - 1) * BC  # loop R writes rows [0, LR): nothing lies right of the last chunk
    if RIGHT:  # loop R: contributions of all tokens right of each chunk
        t = LR + offs_c  # the last chunk only seeds the state
        S, z = _right_seed(k_bh, v_bh, a2_bh, t, skl, skd, svl, svd, offs_d, offs_v, L, D, DV, DT, ACC, DOT,
                           HAS_DECAY)
        for i in range(1, NC):
            t = (NC - 1 - i) * BC + offs_c
            q = _rows(q_bh, t, sql, sqd, offs_d, L, D)
            k = _rows(k_bh, t, skl, skd, offs_d, L, D)
            v = _rows(v_bh, t, svl, svd, offs_v, L, DV)
            num = _mm(q, S, DT, DOT)
            den = tl.sum(q.to(ACC) * z[None, :], 1)
            if HAS_DECAY:
                bcum, sfx, g = _decays(a2_bh, t, L, ACC)
                wq = tl.exp(sfx)
                num = num * wq[:, None]
                den = den * wq
                S = S * tl.exp(g)
                z = z * tl.exp(g)
                kw = k.to(ACC) * tl.exp(bcum)[:, None]
            else:
                kw = k
            _store_rows(nums_bh, num, t, DV, offs_v, L, DV, DOT)
            tl.store(dens_bh + t, den, mask=t < L)
            S += _mm(tl.trans(kw), v, DT, DOT)
            z += tl.sum(kw.to(ACC), 0)
        tl.debug_barrier()

    if LEFT:  # loop L: intra-chunk block + contributions from the left + (scratch) contributions from the right
        S = tl.zeros((BD, BV), dtype=ACC)
        z = tl.zeros((BD,), dtype=ACC)
        for n in range(0, NC):
            t = n * BC + offs_c
            q = _rows(q_bh, t, sql, sqd, offs_d, L, D)
            k = _rows(k_bh, t, skl, skd, offs_d, L, D)
            v = _rows(v_bh, t, svl, svd, offs_v, L, DV)
            s = _mm(q, tl.trans(k), DT, DOT)  # [BC, BC]
            num = _mm(q, S, DT, DOT)
            den = tl.sum(q.to(ACC) * z[None, :], 1)
            if HAS_DECAY:
                bcum, sfx, g = _decays(a_bh, t, L, ACC)
                s = s * _chunk_mask(a_bh, a2_bh, t, L, ACC, PAIR)
                wq = tl.exp(bcum)
                num = num * wq[:, None]
                den = den * wq
                S = S * tl.exp(g)
                z = z * tl.exp(g)
                kw = k.to(ACC) * tl.exp(sfx)[:, None]
            else:
                kw = k
            if DOT == 0 or DOT == 2:  # A is rounded to DT for the dot: sum the same rounded weights (y = convex comb.)
                s = _round(s, DT, DOT == 2).to(ACC)
            num += _mm(s, v, DT, DOT)
            den += tl.sum(s, 1)
            if SCRATCH:
                num += _rows(nums_bh, t, DV, 1, offs_v, LR, DV)
                den += tl.load(dens_bh + t, mask=t < LR, other=0.0)
            S += _mm(tl.trans(kw), v, DT, DOT)
            z += tl.sum(kw.to(ACC), 0)
            tl.store(den_bh + t, den, mask=(t < L) & (pid_v == 0))
            if NORMALIZE and not PARTS:  # sign-keeping clamp |den| >= eps (lion.ops.naive.safe_den)
                num = num / tl.where(den >= 0, tl.maximum(den, eps), tl.minimum(den, -eps))[:, None]
                if RESID:
                    hi = _round(num, DT, DOT == 2).to(ACC)
                    _store_rows(ylo_bh, num - hi, t, DV, offs_v, L, DV, DOT)
                    num = hi
            _store_rows(o_bh, num, t, DV, offs_v, L, DV, DOT)


@triton.jit
def _load_grads(do_bh, y_bh, ylo_bh, den_bh, dden_bh, t, offs_v, L, DV, eps, ACC: tl.constexpr,
                NORMALIZE: tl.constexpr, PARTS: tl.constexpr, HAS_GD: tl.constexpr, RESID: tl.constexpr):
    """One chunk of the output gradient, as (do [BC, BV] as stored, r [BC], gd [BC]) with dL/dnum = r * do and
    dL/dden = gd. do stays unscaled so that dots with it round nothing but their other operand."""
    do = _rows(do_bh, t, DV, 1, offs_v, L, DV)
    r = tl.full((do.shape[0],), 1.0, ACC)
    gd = tl.zeros((do.shape[0],), dtype=ACC)
    if PARTS:
        if HAS_GD:
            gd = tl.load(dden_bh + t, mask=t < L, other=0.0).to(ACC)
    elif NORMALIZE:  # y = num / dd, dd = safe_den(den): dnum = dy / dd, dden = -(dy . y) / dd where |den| >= eps
        den = tl.load(den_bh + t, mask=t < L, other=1.0)
        dd = tl.where(den >= 0, tl.maximum(den, eps), tl.minimum(den, -eps))
        y = _rows(y_bh, t, DV, 1, offs_v, L, DV).to(ACC)
        if RESID:
            y += _rows(ylo_bh, t, DV, 1, offs_v, L, DV).to(ACC)
        r = 1.0 / dd
        gd = tl.where(tl.abs(den) >= eps, -tl.sum(do.to(ACC) * y, 1) * r, 0.0)
    return do, r, gd


@triton.jit
def _bwd_dq(q_bh, k_bh, v_bh, al_bh, ar_bh, do_bh, y_bh, ylo_bh, den_bh, dden_bh, dq_bh, dal_bh, dar_bh,
            sql, sqd, skl, skd, svl, svd, L, D, DV, eps,
            BC: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr, HAS_DECAY: tl.constexpr,
            NORMALIZE: tl.constexpr, PARTS: tl.constexpr, HAS_GD: tl.constexpr, RESID: tl.constexpr,
            RIGHT: tl.constexpr, LEFT: tl.constexpr, SCRATCH: tl.constexpr, DOT: tl.constexpr, PAIR: tl.constexpr):
    """dq_i = sum_j M_ij (g_i . v_j + gd_i) k_j, with the states S = sum k v^T, z = sum k of the forward; and the
    q-side parts of the log-decay gradients: keys left of the query (log-decays al: the forward ones) into dal_bh,
    keys right of it (ar: the backward ones) into dar_bh, each as -sum_{s<t} of its dL/dc."""
    DT = q_bh.dtype.element_ty
    ACC = den_bh.dtype.element_ty
    SCALE: tl.constexpr = NORMALIZE and not PARTS
    offs_c = tl.arange(0, BC)
    offs_d = tl.arange(0, BD)
    offs_v = tl.arange(0, BV)
    NC = tl.cdiv(L, BC)
    LR = (NC - 1) * BC  # loop R writes rows [0, LR)
    if RIGHT:  # loop R: keys right of the chunk (upper triangle)
        t = LR + offs_c  # the last chunk only seeds the state
        S, z = _right_seed(k_bh, v_bh, ar_bh, t, skl, skd, svl, svd, offs_d, offs_v, L, D, DV, DT, ACC, DOT,
                           HAS_DECAY)
        for i in range(1, NC):
            t = (NC - 1 - i) * BC + offs_c
            k = _rows(k_bh, t, skl, skd, offs_d, L, D)
            v = _rows(v_bh, t, svl, svd, offs_v, L, DV)
            do, r, gd = _load_grads(do_bh, y_bh, ylo_bh, den_bh, dden_bh, t, offs_v, L, DV, eps, ACC, NORMALIZE,
                                    PARTS, HAS_GD, RESID)
            dq = _mm(do, tl.trans(S), DT, DOT)
            if SCALE:
                dq = dq * r[:, None]
            if HAS_GD:
                dq += gd[:, None] * z[None, :]
            kw = k
            if HAS_DECAY:
                bcum, sfx, gt = _decays(ar_bh, t, L, ACC)
                dq = dq * tl.exp(sfx)[:, None]
                q = _rows(q_bh, t, sql, sqd, offs_d, L, D).to(ACC)
                tl.store(dar_bh + t, -tl.sum(q * dq, 1), mask=t < L)
                S = S * tl.exp(gt)
                z = z * tl.exp(gt)
                kw = k.to(ACC) * tl.exp(bcum)[:, None]
            _store_rows(dq_bh, dq, t, D, offs_d, L, D, DOT)
            S += _mm(tl.trans(kw), v, DT, DOT)
            if HAS_GD:
                z += tl.sum(kw.to(ACC), 0)
        tl.debug_barrier()
    if LEFT:  # loop L: the chunk itself (both triangles) and keys left of it, plus loop R's partial sums
        S = tl.zeros((BD, BV), dtype=ACC)
        z = tl.zeros((BD,), dtype=ACC)
        prefix = tl.sum(tl.zeros((BC,), dtype=ACC), 0)  # sum of dL/dc over the chunks already done
        prefix_r = prefix
        for n in range(0, NC):
            t = n * BC + offs_c
            k = _rows(k_bh, t, skl, skd, offs_d, L, D)
            v = _rows(v_bh, t, svl, svd, offs_v, L, DV)
            do, r, gd = _load_grads(do_bh, y_bh, ylo_bh, den_bh, dden_bh, t, offs_v, L, DV, eps, ACC, NORMALIZE,
                                    PARTS, HAS_GD, RESID)
            dA = _mm(do, tl.trans(v), DT, DOT)  # dL/dA = g v^T + gd, then times M: dL/ds
            dqf = _mm(do, tl.trans(S), DT, DOT)
            if SCALE:
                dA = dA * r[:, None]
                dqf = dqf * r[:, None]
            if HAS_GD:
                dA += gd[:, None]
                dqf += gd[:, None] * z[None, :]
            kw = k
            if HAS_DECAY:
                bcum, sfx, gt = _decays(al_bh, t, L, ACC)
                dA = dA * _chunk_mask(al_bh, ar_bh, t, L, ACC, PAIR)
                dqf = dqf * tl.exp(bcum)[:, None]
                q = _rows(q_bh, t, sql, sqd, offs_d, L, D).to(ACC)
                dc = tl.sum(q * dqf, 1)
                S = S * tl.exp(gt)
                z = z * tl.exp(gt)
                kw = k.to(ACC) * tl.exp(sfx)[:, None]
            dq = _mm(dA, k, DT, DOT) + dqf  # the intra-chunk part of dL/dc comes from the dk, dv program
            if SCRATCH:
                dq += _rows(dq_bh, t, D, 1, offs_d, LR, D).to(ACC)
            if HAS_DECAY and PAIR:  # da_t = -sum_{s < t} dL/dc_s (this program's shares: left and right)
                tl.store(dal_bh + t, -(prefix + tl.cumsum(dc, 0) - dc), mask=t < L)
                prefix += tl.sum(dc, 0)
                if SCRATCH:
                    dcr = tl.load(dar_bh + t, mask=t < LR, other=0.0)
                    tl.store(dar_bh + t, -(prefix_r + tl.cumsum(dcr, 0) - dcr), mask=t < L)
                    prefix_r += tl.sum(dcr, 0)
                else:
                    tl.store(dar_bh + t, tl.zeros((BC,), dtype=ACC), mask=t < L)
            elif HAS_DECAY:  # one log-decay: one share (dar_bh is dal_bh, loop R's scratch)
                if SCRATCH:
                    dc += tl.load(dar_bh + t, mask=t < LR, other=0.0)
                tl.store(dal_bh + t, -(prefix + tl.cumsum(dc, 0) - dc), mask=t < L)
                prefix += tl.sum(dc, 0)
            _store_rows(dq_bh, dq, t, D, offs_d, L, D, DOT)
            S += _mm(tl.trans(kw), v, DT, DOT)
            if HAS_GD:
                z += tl.sum(kw.to(ACC), 0)


@triton.jit
def _bwd_dkdv(q_bh, k_bh, v_bh, al_bh, ar_bh, do_bh, y_bh, ylo_bh, den_bh, dden_bh, dk_bh, dv_bh, dal_bh, dar_bh,
              sql, sqd, skl, skd, svl, svd, L, D, DV, eps,
              BC: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr, HAS_DECAY: tl.constexpr,
              NORMALIZE: tl.constexpr, PARTS: tl.constexpr, HAS_GD: tl.constexpr, RESID: tl.constexpr,
              RIGHT: tl.constexpr, LEFT: tl.constexpr, SCRATCH: tl.constexpr, DOT: tl.constexpr, PAIR: tl.constexpr):
    """dk_j = sum_i M_ij (g_i . v_j + gd_i) q_i and dv_j = sum_i M_ij (q_i . k_j) g_i, with the states
    G = sum q g^T, gz = sum q gd; and the k-side and intra-chunk parts of the log-decay gradients. al / ar: the
    forward / backward log-decays, as in _bwd_dq (the mask's lower / upper triangle); a key's queries on its right
    see the forward ones (loop R, gradient share into dal_bh), those on its left the backward ones (loop L, into
    dar_bh)."""
    DT = q_bh.dtype.element_ty
    ACC = den_bh.dtype.element_ty
    SCALE: tl.constexpr = NORMALIZE and not PARTS
    offs_c = tl.arange(0, BC)
    offs_d = tl.arange(0, BD)
    offs_v = tl.arange(0, BV)
    NC = tl.cdiv(L, BC)
    LR = (NC - 1) * BC  # loop R writes rows [0, LR)
    if RIGHT:  # loop R: queries right of the chunk (lower triangle)
        t = LR + offs_c  # the last chunk only seeds the state
        qw = _rows(q_bh, t, sql, sqd, offs_d, L, D).to(ACC)
        do, r, gd = _load_grads(do_bh, y_bh, ylo_bh, den_bh, dden_bh, t, offs_v, L, DV, eps, ACC, NORMALIZE,
                                PARTS, HAS_GD, RESID)
        if HAS_DECAY:
            bcum, gt = _chunk_decay(al_bh, t, L, ACC)
            qw = qw * tl.exp(bcum)[:, None]
        gz = tl.sum(qw * gd[:, None], 0)
        if SCALE:
            qw = qw * r[:, None]
        G = _mm(tl.trans(qw), do, DT, DOT)
        for i in range(1, NC):
            t = (NC - 1 - i) * BC + offs_c
            q = _rows(q_bh, t, sql, sqd, offs_d, L, D)
            k = _rows(k_bh, t, skl, skd, offs_d, L, D)
            v = _rows(v_bh, t, svl, svd, offs_v, L, DV)
            do, r, gd = _load_grads(do_bh, y_bh, ylo_bh, den_bh, dden_bh, t, offs_v, L, DV, eps, ACC, NORMALIZE,
                                    PARTS, HAS_GD, RESID)
            dk = _mm(v, tl.trans(G), DT, DOT)
            if HAS_GD:
                dk += gz[None, :]
            dv = _mm(k, G, DT, DOT)
            qw = q.to(ACC)
            if HAS_DECAY:
                bcum, sfx, gt = _decays(al_bh, t, L, ACC)
                wb = tl.exp(sfx)[:, None]
                dk = dk * wb
                dv = dv * wb
                tl.store(dal_bh + t, -tl.sum(k.to(ACC) * dk, 1), mask=t < L)
                G = G * tl.exp(gt)
                gz = gz * tl.exp(gt)
                qw = qw * tl.exp(bcum)[:, None]
            _store_rows(dk_bh, dk, t, D, offs_d, L, D, DOT)
            _store_rows(dv_bh, dv, t, DV, offs_v, L, DV, DOT)
            if HAS_GD:
                gz += tl.sum(qw * gd[:, None], 0)
            if SCALE:
                qw = qw * r[:, None]
            G += _mm(tl.trans(qw), do, DT, DOT)
        tl.debug_barrier()
    if LEFT:  # loop L: the chunk itself and queries left of it, plus loop R's partial sums
        G = tl.zeros((BD, BV), dtype=ACC)
        gz = tl.zeros((BD,), dtype=ACC)
        prefix = tl.sum(tl.zeros((BC,), dtype=ACC), 0)
        prefix_l = prefix
        for n in range(0, NC):
            t = n * BC + offs_c
            q = _rows(q_bh, t, sql, sqd, offs_d, L, D)
            k = _rows(k_bh, t, skl, skd, offs_d, L, D)
            v = _rows(v_bh, t, svl, svd, offs_v, L, DV)
            do, r, gd = _load_grads(do_bh, y_bh, ylo_bh, den_bh, dden_bh, t, offs_v, L, DV, eps, ACC, NORMALIZE,
                                    PARTS, HAS_GD, RESID)
            s = _mm(q, tl.trans(k), DT, DOT)     # q k^T
            dA = _mm(do, tl.trans(v), DT, DOT)   # g v^T (+ gd): dL/dA
            if SCALE:
                dA = dA * r[:, None]
            if HAS_GD:
                dA += gd[:, None]
            dkf = _mm(v, tl.trans(G), DT, DOT)
            if HAS_GD:
                dkf += gz[None, :]
            dvf = _mm(k, G, DT, DOT)
            qw = q.to(ACC)
            if HAS_DECAY:
                bcum, sfx, gt = _decays(ar_bh, t, L, ACC)
                M = _chunk_mask(al_bh, ar_bh, t, L, ACC, PAIR)
                dA = dA * M   # dL/ds
                P = dA * s    # dL/dlog(M): below the diagonal the forward decays', above it the backward ones'
                s = s * M     # A
                wf = tl.exp(bcum)[:, None]
                dkf = dkf * wf
                dvf = dvf * wf
                if PAIR:
                    Pl = tl.where(offs_c[:, None] > offs_c[None, :], P, 0.0)
                    Pu = tl.where(offs_c[:, None] < offs_c[None, :], P, 0.0)
                    dcl = tl.sum(Pl, 1) - tl.sum(Pl, 0)
                    dcr = tl.sum(Pu, 0) - tl.sum(Pu, 1) + tl.sum(k.to(ACC) * dkf, 1)
                else:  # one share: signed +1 below the diagonal, -1 above it
                    P = P * (tl.where(offs_c[:, None] > offs_c[None, :], 1.0, 0.0) -
                             tl.where(offs_c[:, None] < offs_c[None, :], 1.0, 0.0))
                    dcl = tl.sum(P, 1) - tl.sum(P, 0) + tl.sum(k.to(ACC) * dkf, 1)
                G = G * tl.exp(gt)
                gz = gz * tl.exp(gt)
                qw = qw * tl.exp(sfx)[:, None]
            if SCALE:
                s = s * r[:, None]
            dk = _mm(tl.trans(dA), q, DT, DOT) + dkf
            dv = _mm(tl.trans(s), do, DT, DOT) + dvf
            if SCRATCH:
                dk += _rows(dk_bh, t, D, 1, offs_d, LR, D).to(ACC)
                dv += _rows(dv_bh, t, DV, 1, offs_v, LR, DV).to(ACC)
                if HAS_DECAY:
                    dcl += tl.load(dal_bh + t, mask=t < LR, other=0.0)
            if HAS_DECAY:  # one log-decay: one share, in dal_bh (loop R's scratch)
                tl.store(dal_bh + t, -(prefix_l + tl.cumsum(dcl, 0) - dcl), mask=t < L)
                prefix_l += tl.sum(dcl, 0)
                if PAIR:
                    tl.store(dar_bh + t, -(prefix + tl.cumsum(dcr, 0) - dcr), mask=t < L)
                    prefix += tl.sum(dcr, 0)
            _store_rows(dk_bh, dk, t, D, offs_d, L, D, DOT)
            _store_rows(dv_bh, dv, t, DV, offs_v, L, DV, DOT)
            if HAS_GD:
                gz += tl.sum(qw * gd[:, None], 0)
            if SCALE:
                qw = qw * r[:, None]
            G += _mm(tl.trans(qw), do, DT, DOT)


@triton.jit
def lion_bwd_kernel(
    Q, K, V, A, A2, DO, DDEN, Y, YLO, DEN, DQ, DK, DV_, DA, DA2, DA3, DA4,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, D, DV, eps,
    BC: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
    HAS_DECAY: tl.constexpr, NORMALIZE: tl.constexpr, PARTS: tl.constexpr, HAS_GD: tl.constexpr,
    RESID: tl.constexpr, RIGHT: tl.constexpr, LEFT: tl.constexpr, SCRATCH: tl.constexpr, DOT: tl.constexpr,
    PAIR: tl.constexpr = False,
):
    """Backward. Grid (2*B*H,): program 2*bh computes dq, program 2*bh + 1 dk and dv of head bh, each holding its
    D x DV states in registers (BD >= D, BV >= DV); the pair runs side by side and shares the inputs through L2.

    DO [B, H, L, DV] gradient of the op's first output (contiguous); DDEN [B, H, L] gradient of den (PARTS);
    Y the forward output (+ YLO its residual when RESID), DEN the forward den; DQ, DK [B, H, L, D],
    DV_ [B, H, L, DV] contiguous outputs in the input dtype (loop R stores its partial sums there, loop L adds the
    rest); A / A2 the forward / backward log-decays (A2 = A unless PAIR); DA..DA4 [B, H, L] accumulation dtype:
    the shares of the log-decay gradients, DA / DA2 of the forward / backward ones from the dq program, DA3 / DA4
    from the dk, dv program (the host sums them; loop R uses its share as scratch for its part of dL/dc). Unless
    PAIR, DA2 is DA and DA4 is DA3: one share per program.
    """
    pid = tl.program_id(0).to(tl.int64)
    bh = pid // 2
    part = pid % 2
    q_bh, k_bh, v_bh = _head_ptrs(Q, K, V, bh, H, sqb, sqh, skb, skh, svb, svh)
    if part == 0:
        _bwd_dq(q_bh, k_bh, v_bh, A + bh * L, A2 + bh * L, DO + bh * L * DV, Y + bh * L * DV, YLO + bh * L * DV,
                DEN + bh * L, DDEN + bh * L, DQ + bh * L * D, DA + bh * L, DA2 + bh * L,
                sql, sqd, skl, skd, svl, svd, L, D, DV, eps,
                BC, BD, BV, HAS_DECAY, NORMALIZE, PARTS, HAS_GD, RESID, RIGHT, LEFT, SCRATCH, DOT, PAIR)
    else:
        _bwd_dkdv(q_bh, k_bh, v_bh, A + bh * L, A2 + bh * L, DO + bh * L * DV, Y + bh * L * DV, YLO + bh * L * DV,
                  DEN + bh * L, DDEN + bh * L, DK + bh * L * D, DV_ + bh * L * DV, DA3 + bh * L, DA4 + bh * L,
                  sql, sqd, skl, skd, svl, svd, L, D, DV, eps,
                  BC, BD, BV, HAS_DECAY, NORMALIZE, PARTS, HAS_GD, RESID, RIGHT, LEFT, SCRATCH, DOT, PAIR)
