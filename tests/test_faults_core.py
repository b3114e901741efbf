"""Fault injection on the LION core: what a user (or a bad batch) can hand to `lion_attention` must either be
handled exactly or stopped with one clear error. Each test reproduced a failure of the core before its fix."""
import functools
import os

import pytest
import torch

from lion.ops import lion_attention

TRITON = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def inputs(B=2, H=2, L=9, D=4, Dv=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(B, H, L, D, generator=g, dtype=torch.float64).to(dtype)
    k = torch.rand(B, H, L, D, generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn(B, H, L, Dv, generator=g, dtype=torch.float64).to(dtype)
    a = -torch.rand(B, H, L, generator=g, dtype=torch.float64).to(dtype)
    return q, k, v, a


@pytest.mark.parametrize("form", ["parallel", "chunk", "recurrent"])
def test_nan_and_inf_in_padded_positions_cannot_leak(form):
    """Padding equals removal whatever the pad positions hold: NaN and Inf in q, k, v and the pad tokens' own
    log-decays change nothing at real tokens (forward and gradients), and every output stays finite."""
    q, k, v, a = inputs()
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False
    mask[1, [0, 4]] = False
    poison = [t.clone() for t in (q, k, v, a)]
    for t, val in zip(poison, (float("nan"), float("inf"), float("-inf"), float("nan"))):
        t.transpose(1, 2)[~mask] = val  # [B, L, H, ...] view: every head of each pad token
    fn = functools.partial(lion_attention, form=form, chunk_size=4, backend="torch", attention_mask=mask)
    leaves = [t.requires_grad_() for t in poison]
    y = fn(*leaves)
    assert torch.isfinite(y).all()
    for b in range(2):  # each row against its pad-free sequence
        keep = mask[b]
        ref_in = [t[b:b + 1, :, keep].detach().requires_grad_() for t in (q, k, v, a)]
        ref = lion_attention(*ref_in, form=form, chunk_size=4, backend="torch")
        torch.testing.assert_close(y[b:b + 1, :, keep], ref, rtol=1e-12, atol=1e-12)
        w = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(b))
        g_ref = torch.autograd.grad((ref * w).sum(), ref_in)
        g_got = torch.autograd.grad((y[b:b + 1, :, keep] * w).sum(), leaves, retain_graph=True)
        for gg, gr in zip(g_got, g_ref):
            assert torch.isfinite(gg).all()
            torch.testing.assert_close(gg[b:b + 1, :, keep], gr, rtol=1e-10, atol=1e-12)


def test_positive_log_decay_is_a_clear_error():
    """log lambda > 0 (e.g. lambda passed instead of log lambda) raises one ValueError naming the argument, the
    value and the fix; a positive value at a pad position is ignored like everything else there."""
    q, k, v, a = inputs()
    with pytest.raises(ValueError, match=r"log_decay must be <= 0 .*got a maximum of 0\.5.*log"):
        lion_attention(q, k, v, a.abs() * 0 + 0.5)
    with pytest.raises(ValueError, match=r"log_decay\[1\] \(backward\) must be <= 0"):
        lion_attention(q, k, v, (a, a.abs()))
    with pytest.raises(ValueError, match=r"log_decay must be <= 0"):
        lion_attention(q, k, v, torch.tensor([-0.1, 20.0], dtype=torch.float64))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[:, -1] = False
    a_pad = a.clone()
    a_pad[:, :, -1] = 3.0
    assert torch.isfinite(lion_attention(q, k, v, a_pad, attention_mask=mask)).all()
    # -inf (lambda = 0) is a valid log-decay
    assert torch.isfinite(lion_attention(q, k, v, torch.full_like(a, float("-inf")))).all()


def test_non_floating_inputs_are_a_clear_error():
    """Integer q (silently truncated output before) raises one TypeError naming the argument and the fix."""
    q, k, v, a = inputs()
    with pytest.raises(TypeError, match=r"lion_attention: q must be a floating-point tensor, got torch\.int64"):
        lion_attention(q.long(), k, v, a)
    with pytest.raises(TypeError, match=r"v must be a floating-point tensor, got torch\.int32"):
        lion_attention(q, k, v.int(), a)
    with pytest.raises(TypeError, match=r"log_decay must be a floating-point tensor, got torch\.int64"):
        lion_attention(q, k, v, a.long())


def test_mismatched_dtypes_are_a_clear_error():
    """Mixed fp16 / fp32 q and k (silently computed and returned in fp16 before) raise one TypeError naming the
    dtypes and the fix; log-decays may keep their own (e.g. float32) dtype."""
    q, k, v, a = inputs(dtype=torch.float32)
    with pytest.raises(TypeError, match=r"q, k and v must have one dtype, got q torch\.float16, k torch\.float32"):
        lion_attention(q.half(), k, v.half(), a)
    y = lion_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), a)
    assert y.dtype == torch.bfloat16
    # under autocast (where a fp32 feature map may meet bf16 values) the three are promoted to the widest
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lion_attention(q, k, v.bfloat16(), a)
        want = lion_attention(q, k, v.bfloat16().float(), a)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, want, rtol=0, atol=0)


@pytest.mark.parametrize("low", [float("-inf"), -1e20])
def test_zero_decays_are_exact_in_every_torch_form(low):
    """lambda = 0 (log-decay -inf, or -1e20) per token and per head: every PyTorch form is finite and agrees with
    the others, forward and gradients (the per-head parallel form gave NaN: -inf * 0 on the diagonal)."""
    q, k, v, a = inputs(1, 2, 20, seed=5)
    a[..., [0, 3, 4, 9, 15]] = low
    for decay in (a, torch.tensor([low, -0.5], dtype=torch.float64)):
        res = {}
        for form in ("parallel", "chunk", "recurrent"):
            leaves = [t.clone().requires_grad_() for t in (q, k, v, decay)]
            y = lion_attention(*leaves, form=form, chunk_size=4, backend="torch")
            w = torch.arange(3, dtype=torch.float64)
            res[form] = [y] + list(torch.autograd.grad((y * w).sum(), leaves))
            assert all(torch.isfinite(t).all() for t in res[form]), form
        for form in ("chunk", "recurrent"):
            for x, r in zip(res[form], res["parallel"]):
                torch.testing.assert_close(x, r, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("kernel", ["chunk", "tile"])
@pytest.mark.parametrize("low", [float("-inf"), -1e20, -200.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triton_handles_zero_decays_like_torch(kernel, low, dtype):
    """log-decays of -inf (lambda = 0), -1e20 and -200 at some tokens: the Triton kernels give what the PyTorch
    forms give (no NaN), forward and gradients, within a chunk / tile, at their borders and across them."""
    from lion.ops.triton import TUNING, lion_attention_triton
    L = 40
    q, k, v, a = (t.to(DEV) for t in inputs(1, 2, L, D=16, Dv=16, seed=3))
    for t in (0, 5, 6, 15, 16, 33):  # a run of two, the last token of a chunk of 16, the first of the next
        a[:, :, t] = low
    a[:, 1, 20:] = low  # one head: every token from 20 on
    leaves = [t.detach().clone().to(dtype).requires_grad_() for t in (q, k, v, a)]
    ref_leaves = [t.detach().cpu().clone().to(dtype).double().requires_grad_() for t in (q, k, v, a)]
    old = dict(TUNING)
    try:  # tiles of 16 x 16: blocks on both sides of each diagonal tile
        TUNING.update(short_kernel=kernel, tile_fwd_blocks=(16, 16), tile_bwd_blocks=(16, 16))
        y = lion_attention_triton(*leaves, chunk_size=16)
    finally:
        TUNING.clear()
        TUNING.update(old)
    ref = lion_attention(*ref_leaves, form="parallel", backend="torch")
    w = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = [y] + list(torch.autograd.grad((y * w.to(DEV)).sum(), leaves))
    want = [ref] + list(torch.autograd.grad((ref * w).sum(), ref_leaves))
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for name, x, r in zip(("y", "dq", "dk", "dv", "da"), got, want):
        assert torch.isfinite(x).all(), f"{name} has NaN/Inf"
        err = (x.cpu().double() - r).abs().max().item()
        assert err <= tol * r.abs().max().item() + 1e-12, f"{name}: max error {err:.3e}"
