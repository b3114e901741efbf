"""The LION core: every form against the float64 parallel form (itself checked against the definition)."""
import functools
import itertools

import pytest
import torch

from lion.ops import (lion_attention, lion_attention_chunk, lion_attention_multiscan, lion_attention_parallel,
                      lion_attention_recurrent, snake_orders)

DECAYS = ("none", "head", "token")


def make_inputs(B, H, L, D=8, Dv=6, decay="token", dtype=torch.float64, seed=0, positive=True, low=-2.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(B, H, L, D, generator=g, dtype=torch.float64)
    k = torch.rand(B, H, L, D, generator=g, dtype=torch.float64)
    if not positive:
        q, k = q - 0.5, k - 0.5
    v = torch.randn(B, H, L, Dv, generator=g, dtype=torch.float64)
    if decay == "none":
        a = None
    elif decay == "head":
        a = torch.rand(H, generator=g, dtype=torch.float64) * low
    else:
        a = torch.rand(B, H, L, generator=g, dtype=torch.float64) * low
    cast = lambda t: None if t is None else t.to(dtype).requires_grad_()  # noqa: E731
    return cast(q), cast(k), cast(v), cast(a)


def definition(q, k, v, a, normalize=True, mask=None):
    """docs/MATH.md section 1 written as loops over (i, j), float64, padding by removal."""
    B, H, L, _ = q.shape
    y = torch.zeros(B, H, L, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        keep = [i for i in range(L) if mask is None or bool(mask[b, i])]
        for h in range(H):
            for i in keep:
                num, den = 0, 0
                for j in keep:
                    lo, hi = min(i, j), max(i, j)
                    if a is None:
                        s = 0.0
                    else:
                        ah = (a[h].expand(L) if a.dim() == 1 else a[b, h]).detach()
                        s = sum(float(ah[t]) for t in range(lo + 1, hi + 1) if t in keep)
                    w = float(q[b, h, i].detach() @ k[b, h, j].detach()) * torch.exp(torch.tensor(s, dtype=torch.float64))
                    num = num + w * v[b, h, j]
                    den = den + w
                y[b, h, i] = num / den if normalize else num
    return y


def outputs_and_grads(fn, q, k, v, a, mask=None, seed=1, **kw):
    y = fn(q, k, v, a, attention_mask=mask, **kw)
    real = y if mask is None else y * mask[:, None, :, None].to(y.dtype)
    w = torch.randn(real.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y.dtype)
    inputs = [t for t in (q, k, v, a) if t is not None]
    grads = torch.autograd.grad((real * w).sum(), inputs)
    return [real.detach()] + [g.detach() for g in grads]


def assert_close_rel(got, ref, tol):
    for x, r in zip(got, ref):
        err = (x.double() - r.double()).abs().max().item()
        scale = r.double().abs().max().item() + 1e-30
        assert err <= tol * scale + 1e-13, f"relative error {err / scale:.3e} > {tol:.1e}"


@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("normalize", [True, False])
def test_parallel_matches_definition(decay, normalize):
    mask = torch.tensor([[True] * 7, [False, True, True, False, True, True, False]])
    q, k, v, a = make_inputs(2, 2, 7, D=3, Dv=2, decay=decay)
    ref = definition(q, k, v, a, normalize, mask)
    got = lion_attention_parallel(q, k, v, a, normalize=normalize, attention_mask=mask)
    m = mask[:, None, :, None]
    torch.testing.assert_close(got * m, ref * m, rtol=1e-12, atol=1e-12)


FORMS = {
    "recurrent": lion_attention_recurrent,
    **{f"chunk{c}": functools.partial(lion_attention_chunk, chunk_size=c) for c in (1, 3, 16, 64, 512)},
}


@pytest.mark.parametrize("L", [1, 2, 17, 197, 300])
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("form", list(FORMS))
def test_forms_match_parallel_float64(form, decay, L):
    B, H = (1, 1) if L == 197 else (2, 2)
    for normalize in (True, False):
        q, k, v, a = make_inputs(B, H, L, decay=decay, seed=L)
        ref = outputs_and_grads(lion_attention_parallel, q, k, v, a, normalize=normalize)
        got = outputs_and_grads(FORMS[form], q, k, v, a, normalize=normalize)
        assert_close_rel(got, ref, 1e-10)


@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("form", ["parallel", "chunk", "recurrent"])
def test_float32_matches_float64(form, decay):
    L = 70
    q, k, v, a = make_inputs(2, 3, L, decay=decay, seed=7)
    ref = outputs_and_grads(lion_attention_parallel, q, k, v, a)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    a32 = None if a is None else a.detach().float().requires_grad_()
    got = outputs_and_grads(functools.partial(lion_attention, form=form, chunk_size=16), q32, k32, v32, a32)
    assert all(t.dtype == torch.float32 for t in got)
    assert_close_rel(got, ref, 1e-5)


def padded_copy(x, mask, L):
    """Scatter each row's real tokens of x [B, H, n, ...] into positions mask[b] of a longer tensor."""
    out = torch.randn(x.shape[0], x.shape[1], L, *x.shape[3:], dtype=x.dtype)  # garbage at pads
    for b in range(x.shape[0]):
        out[b][:, mask[b]] = x[b]
    return out


@pytest.mark.parametrize("where", ["left", "right", "inside"])
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("form", ["parallel", "chunk", "recurrent"])
def test_padding_equals_removal(form, decay, where):
    n, L = 9, 13
    q, k, v, a = make_inputs(1, 2, n, decay=decay, seed=3)
    mask = torch.zeros(1, L, dtype=torch.bool)
    idx = {"left": torch.arange(L - n, L), "right": torch.arange(n),
           "inside": torch.tensor([0, 1, 3, 4, 5, 8, 9, 10, 12])}[where]
    mask[0, idx] = True
    fn = functools.partial(lion_attention, form=form, chunk_size=4)
    qp, kp, vp = (padded_copy(t.detach(), mask, L).requires_grad_() for t in (q, k, v))
    ap = a
    if a is not None and a.dim() == 3:
        ap = padded_copy(a.detach()[..., None], mask, L)[..., 0].clamp_max(0).requires_grad_()
    y_ref = fn(q, k, v, a)
    y_pad = fn(qp, kp, vp, ap, attention_mask=mask)
    assert torch.isfinite(y_pad).all()
    torch.testing.assert_close(y_pad[:, :, mask[0]], y_ref, rtol=1e-10, atol=1e-12)
    # gradients at real tokens equal those of the unpadded problem; pad keys/values get none
    w = torch.randn(y_ref.shape, dtype=torch.float64)
    g_ref = torch.autograd.grad((y_ref * w).sum(), [q, k, v])
    g_pad = torch.autograd.grad((y_pad[:, :, mask[0]] * w).sum(), [qp, kp, vp])
    for gr, gp in zip(g_ref, g_pad):
        torch.testing.assert_close(gp[:, :, mask[0]], gr, rtol=1e-10, atol=1e-12)
    assert g_pad[1][:, :, ~mask[0]].abs().max() == 0 and g_pad[2][:, :, ~mask[0]].abs().max() == 0


@pytest.mark.parametrize("form", ["parallel", "chunk", "recurrent"])
@pytest.mark.parametrize("normalize", [True, False])
def test_multiscan_matches_definition(form, normalize):
    h, w, prefix = 3, 4, 1
    L = prefix + h * w
    q, k, v, _ = make_inputs(2, 2, L, seed=5)
    a1 = (-torch.rand(2, 2, L, dtype=torch.float64)).requires_grad_()
    a2 = (-torch.rand(2, dtype=torch.float64)).requires_grad_()
    orders = snake_orders(h, w, prefix)
    # definition: M = 1/2 (P1^T M1 P1 + P2^T M2 P2), masks built in scan order
    from lion.ops.naive import decay_mask
    M = 0
    for order, a in zip(orders, (a1, a2)):
        a_s = a[..., order] if a.dim() == 3 else a
        Ms = decay_mask(a_s, L, q.device, q.dtype)
        inv = torch.argsort(order)
        M = M + 0.5 * Ms[..., inv, :][..., :, inv]
    A = (q @ k.transpose(-1, -2)) * M
    ref = A @ v / A.sum(-1, keepdim=True) if normalize else A @ v
    got = lion_attention_multiscan(q, k, v, [a1, a2], orders, normalize=normalize, form=form, chunk_size=5)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    g_ref = torch.autograd.grad(ref.sum(), [q, k, v, a1, a2])
    g_got = torch.autograd.grad(got.sum(), [q, k, v, a1, a2])
    for x, r in zip(g_got, g_ref):
        torch.testing.assert_close(x, r, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("normalize,parts", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("kinds", ["head", "token", "mixed"])
def test_multiscan_one_block_matches_scan_by_scan(normalize, parts, pair, kinds, monkeypatch):
    """form="auto" runs all scans as one block with the summed mask (one core instead of one per scan): the same
    outputs, parts and gradients (decays included) as the scans one by one, float64, for per-head, per-token and
    mixed decays and pairs."""
    from lion.ops import multiscan
    h, w, prefix = 3, 4, 1
    L = prefix + h * w
    q, k, v, _ = make_inputs(2, 3, L, D=4, Dv=3, seed=6)
    shapes = {"head": [(3,)] * 3, "token": [(2, 3, L)] * 3, "mixed": [(2, 3, L), (3,), (3,)]}[kinds]
    a1, a2, b1 = ((-torch.rand(*shape, dtype=torch.float64) * 2).requires_grad_() for shape in shapes)
    decays = [(a1, b1), a2] if pair else [a1, a2]
    orders = snake_orders(h, w, prefix)
    inputs = [q, k, v, a1, a2] + ([b1] if pair else [])
    kw = dict(normalize=normalize, return_parts=parts)

    def run(form):
        out = lion_attention_multiscan(q, k, v, decays, orders, form=form, **kw)
        out = out if parts else (out,)
        loss = sum((o * torch.randn(o.shape, generator=torch.Generator().manual_seed(i), dtype=o.dtype)).sum()
                   for i, o in enumerate(out))
        return [o.detach() for o in out] + list(torch.autograd.grad(loss, inputs))
    used = []
    real = multiscan._block
    monkeypatch.setattr(multiscan, "_block", lambda *a_, **k_: used.append(1) or real(*a_, **k_))
    got = run("auto")
    assert used == [1]
    ref = run("parallel")
    assert len(used) == 1
    assert_close_rel(got, ref, 1e-10)


def test_snake_orders():
    rows, cols = snake_orders(2, 3, num_prefix_tokens=1)
    # grid (raster, +1 for the class token):  1 2 3 / 4 5 6
    assert rows.tolist() == [0, 1, 2, 3, 6, 5, 4]
    assert cols.tolist() == [0, 1, 4, 5, 2, 3, 6]


@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("form", ["parallel", "chunk", "recurrent"])
def test_bfloat16_error_bounded(form, decay):
    q, k, v, a = make_inputs(2, 2, 100, D=16, Dv=16, decay=decay, seed=11)
    ref = lion_attention_parallel(q, k, v, a)
    cast = lambda t: None if t is None else t.detach().bfloat16()  # noqa: E731
    y = lion_attention(cast(q), cast(k), cast(v), cast(a), form=form, chunk_size=32)
    assert y.dtype == torch.bfloat16
    # inputs rounded to bf16 (rel. 2^-9) plus output rounding: a few bf16 ulps of the output scale
    err = (y.double() - ref).abs().max() / ref.abs().max()
    assert err < 2e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("form", ["chunk", pytest.param("recurrent", marks=pytest.mark.slow)])  # a loop of 16384
def test_long_sequence_extreme_decay_is_finite(form, dtype):
    L = 16384
    g = torch.Generator().manual_seed(0)
    q = torch.rand(1, 2, L, 16, generator=g).to(dtype).requires_grad_()
    k = torch.rand(1, 2, L, 16, generator=g).to(dtype).requires_grad_()
    v = torch.randn(1, 2, L, 16, generator=g).to(dtype).requires_grad_()
    a = (-30 * torch.rand(1, 2, L, generator=g)).to(dtype)
    a[..., ::7] = 0  # long stretches of no decay beside stretches of very strong decay
    a.requires_grad_()
    y = lion_attention(q, k, v, a, form=form, chunk_size=64)
    y.float().square().sum().backward()
    for t in (y, q.grad, k.grad, v.grad, a.grad):
        assert torch.isfinite(t.float()).all()


@pytest.mark.slow
@pytest.mark.parametrize("form", ["parallel"])
def test_long_sequence_extreme_decay_is_finite_slow(form):
    L = 16384
    g = torch.Generator().manual_seed(0)
    q, k = (torch.rand(1, 1, L, 16, generator=g).requires_grad_() for _ in range(2))
    v = torch.randn(1, 1, L, 16, generator=g).requires_grad_()
    a = (-30 * torch.rand(1, 1, L, generator=g)).requires_grad_()
    y = lion_attention(q, k, v, a, form=form)
    y.square().sum().backward()
    for t in (y, q.grad, k.grad, v.grad, a.grad):
        assert torch.isfinite(t).all()


def test_long_sequence_float32_accuracy():
    """fp32 chunk form at L = 4096 with strong decays stays within 1e-5 of float64 (no long prefix sums)."""
    q, k, v, a = make_inputs(1, 1, 4096, D=8, Dv=8, decay="token", seed=2, low=-30.0)
    ref = lion_attention_chunk(q, k, v, a, chunk_size=64)
    got = lion_attention_chunk(*(t.detach().float() for t in (q, k, v, a)), chunk_size=64)
    assert ((got.double() - ref).abs().max() / ref.abs().max()) < 1e-5


def test_half_precision_returns_input_dtype_and_parts_in_float32():
    q, k, v, a = make_inputs(1, 2, 10, decay="head")
    q16, k16, v16, a16 = (t.detach().half() for t in (q, k, v, a))
    assert lion_attention(q16, k16, v16, a16).dtype == torch.float16
    num, den = lion_attention(q16, k16, v16, a16, return_parts=True)
    assert num.dtype == den.dtype == torch.float32 and den.shape == (1, 2, 10)
    ref_num, ref_den = lion_attention_parallel(q, k, v, a, return_parts=True)
    torch.testing.assert_close(num.double(), ref_num, rtol=5e-3, atol=5e-3)


def test_unnormalized_negative_scores_are_allowed():
    """Raw q.k (no feature map, the paper's MLM setting) can be negative; normalize=False must not clamp."""
    q, k, v, a = make_inputs(2, 2, 20, decay="token", positive=False)
    ref = definition(q, k, v, a, normalize=False)
    for form in ("parallel", "chunk", "recurrent"):
        got = lion_attention(q, k, v, a, form=form, chunk_size=6, normalize=False)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad, match", [
    (dict(form="flash"), "form='flash' is unknown"),
    (dict(chunk_size=0), "chunk_size must be a positive integer"),
    (dict(backend="cuda"), "backend='cuda' is unknown"),
    (dict(log_decay=torch.zeros(3)), r"log_decay must be None, \[H\]"),
    (dict(attention_mask=torch.ones(2, 4)), r"attention_mask must be \[B, L\]"),
])
def test_bad_arguments_raise_one_clear_error(bad, match):
    q, k, v, _ = make_inputs(2, 2, 5)
    kw = dict(bad)
    a = kw.pop("log_decay", None)
    with pytest.raises(ValueError, match=match):
        lion_attention(q, k, v, a, **kw)


@pytest.mark.parametrize("decay,D,cases", [
    ("none", 8, ((1, 16), (40, 16))),
    ("head", 8, ((16, 16), (32, 32), (33, 16))),             # one block up to 4 D
    ("token", 8, ((16, 16), (20, 20), (28, 28), (29, 16))),  # one block up to 3.5 D
])
def test_auto_form_follows_the_shape(decay, D, cases, monkeypatch):
    """form="auto" on the PyTorch path runs the chunk form, in one block for short sequences with decay; it is
    exact either way."""
    from lion.ops import attention
    for L, chunk in cases:
        q, k, v, a = make_inputs(1, 1, L, D=D, decay=decay)
        ran = []
        for name in ("parallel", "chunk"):  # record which form runs (the real functions still compute)
            real = getattr(attention, f"lion_attention_{name}")
            monkeypatch.setattr(attention, f"lion_attention_{name}",
                                lambda *args, _r=real, _n=name, **kw: ran.append((_n, kw.get("chunk_size")))
                                or _r(*args, **kw))
        assert attention.auto_form(L, a, D, 16) == ("chunk", chunk)
        ref = outputs_and_grads(lion_attention_parallel, q, k, v, a)
        got = outputs_and_grads(functools.partial(lion_attention, chunk_size=16), q, k, v, a)
        assert_close_rel(got, ref, 1e-10)
        assert ran == [("chunk", chunk)]
        monkeypatch.undo()


@pytest.mark.parametrize("group_tokens", [1, 10])
@pytest.mark.parametrize("decay", ["head", "token", "pair", "pair_head"])
@pytest.mark.parametrize("padded", [False, True])
def test_chunk_groups_and_short_tail_match_parallel(group_tokens, decay, padded, monkeypatch):
    """The chunk form's sweeps over groups of chunks (one chunk per group, or two) and its short last chunk
    (L = 37, C = 5: seven chunks and a chunk of 2) agree with the parallel form in float64, outputs and all
    gradients, with and without padding, for per-head, per-token and paired decays."""
    from lion.ops import chunk
    monkeypatch.setattr(chunk, "GROUP_TOKENS", group_tokens)
    B, H, L = 2, 3, 37
    q, k, v, a = make_inputs(B, H, L, D=4, Dv=3, decay="head" if decay in ("head", "pair_head") else "token",
                             seed=21)
    inputs = [q, k, v, a]
    if decay.startswith("pair"):
        b = (-torch.rand(a.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2)
        b.requires_grad_()
        inputs.append(b)
    mask = None
    if padded:
        mask = torch.ones(B, L, dtype=torch.bool)
        mask[0, 30:] = False
        mask[1, ::4] = False

    def fn(q, k, v, a, form, **kw):
        log_decay = (a, inputs[4]) if len(inputs) == 5 else a
        return lion_attention(q, k, v, log_decay, form=form, chunk_size=5, backend="torch", **kw)

    def run(form):
        y = fn(*inputs[:4], form, attention_mask=mask)
        real = y if mask is None else y * mask[:, None, :, None]
        w = torch.randn(real.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        return [real.detach()] + list(torch.autograd.grad((real * w).sum(), inputs))
    assert_close_rel(run("chunk"), run("parallel"), 1e-10)


@pytest.mark.parametrize("L", [4096])
def test_chunk_form_never_builds_an_L_by_L_tensor(L, monkeypatch):
    """Every tensor the chunk form saves for backward is O(L C) or O(N D Dv): none has L*L elements."""
    q, k, v, a = (t.detach().float().requires_grad_() for t in make_inputs(1, 1, L, D=8, Dv=8, decay="token")[:4])
    biggest = []

    def pack(t):
        biggest.append(t.numel())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = lion_attention_chunk(q, k, v, a, chunk_size=64)
    assert max(biggest) <= L * 64 * 2
    y.sum().backward()
