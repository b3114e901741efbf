"""A pair (forward, backward) of log-decays: the lower triangle of the mask decays with the first, the upper one with
the second. Every form and backend against a float64 literal of that definition, forward and gradients to q, k, v
and both decays; and the authors' LION-S mask (via `paper_code_log_decays`) against their product rule."""
import functools
import os

import pytest
import torch

from lion.ops import lion_attention, lion_attention_multiscan, paper_code_log_decays, snake_orders
from tests.test_ops import padded_copy

TRITON = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()


def pair_inputs(B, H, L, D=4, Dv=3, kinds=("token", "token"), seed=0, low=-1.5):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(B, H, L, D, generator=g, dtype=torch.float64)
    k = torch.rand(B, H, L, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, L, Dv, generator=g, dtype=torch.float64)
    decays = [low * torch.rand(*((H,) if kind == "head" else (B, H, L)), generator=g, dtype=torch.float64)
              for kind in kinds]
    return [t.requires_grad_() for t in (q, k, v, *decays)]


def literal_mask(a_f, a_b, B, H, L, keep=None):
    """M[b, h, i, j], written entry by entry: below the diagonal exp of the forward log-decays of the tokens after j
    up to and including i, above it exp of the backward log-decays of the tokens after i up to and including j, 1 on
    the diagonal; tokens outside `keep[b]` (padding) are removed before anything is summed. Differentiable."""
    rows = []
    for b in range(B):
        kept = list(range(L)) if keep is None else [t for t in range(L) if keep[b][t]]
        for h in range(H):
            f = a_f[h].expand(L) if a_f.dim() == 1 else a_f[b, h]
            bw = a_b[h].expand(L) if a_b.dim() == 1 else a_b[b, h]
            for i in range(L):
                for j in range(L):
                    if i > j:
                        terms = [f[t] for t in kept if j < t <= i]
                    elif i < j:
                        terms = [bw[t] for t in kept if i < t <= j]
                    else:
                        terms = []
                    rows.append(torch.exp(sum(terms, torch.zeros((), dtype=torch.float64))))
    return torch.stack(rows).view(B, H, L, L)


def literal(q, k, v, a_f, a_b, normalize=True, keep=None):
    B, H, L, _ = q.shape
    A = (q @ k.transpose(-1, -2)) * literal_mask(a_f, a_b, B, H, L, keep)
    if keep is not None:
        A = A * keep[:, None, None, :].to(A.dtype)  # pad keys removed
    num = A @ v
    return num / A.sum(-1, keepdim=True) if normalize else num


def run(fn, inputs, w, keep=None):
    """Output (real rows only) and gradients to every input of sum(y * w)."""
    y = fn(*inputs)
    if keep is not None:
        y = torch.where(keep[:, None, :, None], y, torch.zeros((), dtype=y.dtype))
    grads = torch.autograd.grad((y * w).sum(), inputs, allow_unused=True)  # L = 1: the literal uses no decay
    return [y.detach()] + [torch.zeros_like(x) if g is None else g.detach() for x, g in zip(inputs, grads)]


def assert_all_close(got, ref, rtol=1e-10, atol=1e-12):
    names = ["y", "dq", "dk", "dv", "da_fwd", "da_bwd"]
    for name, x, r in zip(names, got, ref):
        torch.testing.assert_close(x.double(), r.double(), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


TORCH_FORMS = {
    "parallel": dict(form="parallel"),
    "chunk1": dict(form="chunk", chunk_size=1),
    "chunk3": dict(form="chunk", chunk_size=3),
    "chunk64": dict(form="chunk", chunk_size=64),
    "recurrent": dict(form="recurrent"),
}


@pytest.mark.parametrize("kinds", [("token", "token"), ("head", "head"), ("head", "token")])
@pytest.mark.parametrize("form", list(TORCH_FORMS))
@pytest.mark.parametrize("L", [1, 2, 7])
def test_pair_matches_literal_torch(form, kinds, L):
    B, H = (2, 2) if L > 1 else (1, 1)
    q, k, v, a_f, a_b = pair_inputs(B, H, L, kinds=kinds, seed=L)
    w = torch.randn(B, H, L, v.shape[-1], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for normalize in (True, False):
        ref = run(lambda *x: literal(*x, normalize=normalize), [q, k, v, a_f, a_b], w)
        fn = functools.partial(lion_attention, backend="torch", normalize=normalize, **TORCH_FORMS[form])
        got = run(lambda q, k, v, a_f, a_b: fn(q, k, v, (a_f, a_b)), [q, k, v, a_f, a_b], w)
        assert_all_close(got, ref)


@pytest.mark.parametrize("form", ["parallel", "chunk3", "recurrent"])
@pytest.mark.parametrize("where", ["left", "right", "inside"])
def test_pair_padding_matches_literal_torch(form, where):
    """Padding removes the pad tokens from both directions: their keys, values and both of their own decays."""
    B, H, L = 2, 2, 8
    q, k, v, a_f, a_b = pair_inputs(B, H, L, seed=4)
    keep = torch.ones(B, L, dtype=torch.bool)
    keep[1] = {"left": torch.arange(L) >= 3, "right": torch.arange(L) < 5,
               "inside": torch.tensor([1, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool)}[where]
    w = torch.randn(B, H, L, v.shape[-1], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = run(lambda *x: literal(*x, keep=keep), [q, k, v, a_f, a_b], w, keep)
    fn = functools.partial(lion_attention, backend="torch", attention_mask=keep, **TORCH_FORMS[form])
    got = run(lambda q, k, v, a_f, a_b: fn(q, k, v, (a_f, a_b)), [q, k, v, a_f, a_b], w, keep)
    assert_all_close(got, ref)
    # pad tokens: no gradient to their keys, values or decays, and finite outputs
    for g in got[2:]:
        assert g[1][..., ~keep[1]].abs().max() == 0 if g.dim() == 3 else g[1][:, ~keep[1]].abs().max() == 0
    assert torch.isfinite(fn(q, k, v, (a_f, a_b))).all()


@pytest.mark.parametrize("form", list(TORCH_FORMS))
def test_equal_pair_is_the_symmetric_mask(form):
    """(a, a) is exactly one tensor a, and the gradient of a is the sum of the pair's two gradients."""
    q, k, v, a, _ = pair_inputs(2, 2, 9, seed=6)
    fn = functools.partial(lion_attention, backend="torch", **TORCH_FORMS[form])
    y1 = fn(q, k, v, a)
    b = a.detach().clone().requires_grad_()
    c = a.detach().clone().requires_grad_()
    y2 = fn(q, k, v, (b, c))
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-14)
    (ga,) = torch.autograd.grad(y1.square().sum(), [a])
    gb, gc = torch.autograd.grad(y2.square().sum(), [b, c])
    torch.testing.assert_close(ga, gb + gc, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("form", ["parallel", "chunk", "recurrent"])
def test_pair_return_parts(form):
    q, k, v, a_f, a_b = pair_inputs(1, 2, 6, seed=8)
    num, den = lion_attention(q, k, v, (a_f, a_b), form=form, chunk_size=4, backend="torch", return_parts=True)
    A = (q @ k.transpose(-1, -2)) * literal_mask(a_f, a_b, 1, 2, 6)
    torch.testing.assert_close(num, A @ v, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(den, A.sum(-1), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("form", ["parallel", "chunk", "recurrent"])
def test_pair_multiscan_matches_literal(form):
    h, w, prefix = 2, 3, 1
    L = prefix + h * w
    q, k, v, a_f, a_b = pair_inputs(2, 2, L, seed=9)
    a2 = (-torch.rand(2, dtype=torch.float64)).requires_grad_()
    orders = snake_orders(h, w, prefix)
    M = 0
    for order, (f, b) in zip(orders, ((a_f, a_b), (a2, a2))):
        f_s = f[..., order] if f.dim() == 3 else f
        b_s = b[..., order] if b.dim() == 3 else b
        inv = torch.argsort(order)
        M = M + 0.5 * literal_mask(f_s, b_s, 2, 2, L)[..., inv, :][..., :, inv]
    A = (q @ k.transpose(-1, -2)) * M
    ref = A @ v / A.sum(-1, keepdim=True)
    got = lion_attention_multiscan(q, k, v, [(a_f, a_b), a2], orders, form=form, chunk_size=3, backend="torch")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    inputs = [q, k, v, a_f, a_b, a2]
    for x, r in zip(torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(ref.sum(), inputs)):
        torch.testing.assert_close(x, r, rtol=1e-9, atol=1e-11)


def authors_mask(lam):
    """The authors' LION-S mask in words: entry (i, j) multiplies the decays of the tokens from the key j (included)
    to the query i (excluded) when the query comes later, and those strictly after the query i up to the key j
    (included) when the key comes later; 1 on the diagonal. lam [L] -> [L, L], by plain Python products."""
    L = len(lam)
    M = [[1.0] * L for _ in range(L)]
    for i in range(L):
        for j in range(L):
            p = 1.0
            for t in (range(j, i) if i > j else range(i + 1, j + 1)):
                p *= float(lam[t])
            M[i][j] = p
    return torch.tensor(M, dtype=torch.float64)


@pytest.mark.parametrize("form", ["parallel", "chunk", "recurrent"])
def test_paper_code_log_decays_give_the_authors_mask(form):
    B, H, L = 2, 2, 7
    q, k, v, a, _ = pair_inputs(B, H, L, seed=10)
    lam = a.detach().exp()
    M = torch.stack([torch.stack([authors_mask(lam[b, h]) for h in range(H)]) for b in range(B)])
    A = (q @ k.transpose(-1, -2)) * M
    ref = A @ v / A.sum(-1, keepdim=True)
    got = lion_attention(q, k, v, paper_code_log_decays(a), form=form, chunk_size=3, backend="torch")
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-13)
    # not the project's symmetric mask (the two conventions differ below the diagonal)
    assert (lion_attention(q, k, v, a, form=form, chunk_size=3, backend="torch") - ref).abs().max() > 1e-3
    # and the gradient reaches the decays (through both directions)
    (ga,) = torch.autograd.grad(got.sum(), [a])
    assert torch.isfinite(ga).all() and ga.abs().max() > 0


def test_paper_code_log_decays_values_and_scan_order():
    a = -torch.rand(1, 1, 5, dtype=torch.float64)
    f, b = paper_code_log_decays(a)
    assert f[0, 0].tolist() == [0.0] + a[0, 0, :-1].tolist() and b is a
    h = -torch.rand(3)
    assert paper_code_log_decays(h) == (h, h) and paper_code_log_decays(None) is None
    # along a scan: the shift follows the scan order, the pair comes back in raster order
    order = torch.tensor([0, 2, 1, 4, 3])
    f, b = paper_code_log_decays(a, order=order)
    f_scan = f[..., order]
    assert f_scan[0, 0].tolist() == [0.0] + a[..., order][0, 0, :-1].tolist() and b is a
    with pytest.raises(ValueError, match="paper_code_log_decays: log_decay must be None"):
        paper_code_log_decays(torch.zeros(2, 3))


def test_pair_bad_shapes_raise_one_clear_error():
    q, k, v, a_f, a_b = pair_inputs(2, 2, 5)
    with pytest.raises(ValueError, match=r"log_decay\[1\] \(backward\) must be \[H\] = \[2\] or \[B, H, L\]"):
        lion_attention(q, k, v, (a_f, a_b[..., :3]))
    with pytest.raises(ValueError, match="pair must be a tuple of two tensors"):
        lion_attention(q, k, v, (a_f, a_b, a_b))


# ------------------------------------------------------------------------------------------------ Triton kernels

@pytest.fixture
def triton_kernel():
    """Force one Triton kernel family (and small tile blocks, so that L = 40 has blocks on both sides of each
    diagonal tile); restore the settings afterwards."""
    from lion.ops.triton import TUNING
    from lion.ops.triton import ops
    old = dict(TUNING)
    ops._CHOICES.clear()

    def use(name):
        TUNING.update(short_kernel=name, tile_fwd_blocks=(32, 16), tile_bwd_blocks=(32, 16))
    yield use
    TUNING.clear()
    TUNING.update(old)
    ops._CHOICES.clear()


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("kernel", ["chunk", "tile"])
@pytest.mark.parametrize("kinds, L", [(("token", "token"), 40), (("head", "token"), 17), (("head", "head"), 1)])
def test_pair_matches_literal_triton(triton_kernel, kernel, kinds, L):
    """Both kernel families, forward and backward: several chunks (16) / tiles (32 x 16), L not a multiple of
    either, L = 1."""
    triton_kernel(kernel)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    B, H = (1, 2) if L > 1 else (1, 1)
    q, k, v, a_f, a_b = pair_inputs(B, H, L, D=16, Dv=16, kinds=kinds, seed=L)
    w = torch.randn(B, H, L, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = run(lambda *x: literal(*x), [q, k, v, a_f, a_b], w)
    leaves = [t.detach().to(dev).requires_grad_() for t in (q, k, v, a_f, a_b)]
    got = run(lambda q, k, v, a_f, a_b: lion_attention(q, k, v, (a_f, a_b), backend="triton", chunk_size=16),
              leaves, w.to(dev))
    assert_all_close([x.cpu() for x in got], ref)


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("kernel", ["chunk", "tile"])
@pytest.mark.parametrize("parts", [False, True])
def test_pair_padding_and_parts_triton(triton_kernel, kernel, parts):
    """Padding (pad tokens' keys, values and both own decays removed) and return_parts on the kernels, against
    the PyTorch parallel form (itself checked against the literal above), gradients included."""
    triton_kernel(kernel)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    B, H, L = 2, 2, 37
    q, k, v, a_f, a_b = pair_inputs(B, H, L, D=16, Dv=8, seed=12)
    keep = torch.ones(B, L, dtype=torch.bool)
    keep[0, 30:] = False
    keep[1, :3] = False
    keep[1, 15:20] = False
    g = torch.Generator().manual_seed(4)

    def outputs(fn, inputs, mask):
        out = fn(*inputs[:3], (inputs[3], inputs[4]), attention_mask=mask, return_parts=parts)
        outs = out if parts else (out,)
        m = mask.to(torch.float64).cpu()[:, None, :]
        outs = [(o.double().cpu() * (m[..., None] if o.dim() == 4 else m)) for o in outs]
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64)).sum() for o in outs)
        return [o.detach() for o in outs] + [x.cpu() for x in torch.autograd.grad(loss, inputs)]
    ref = outputs(functools.partial(lion_attention, form="parallel", backend="torch"), [q, k, v, a_f, a_b], keep)
    g.manual_seed(4)
    leaves = [t.detach().to(dev).requires_grad_() for t in (q, k, v, a_f, a_b)]
    got = outputs(functools.partial(lion_attention, backend="triton", chunk_size=16), leaves, keep.to(dev))
    for x, r in zip(got, ref):
        torch.testing.assert_close(x, r, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
def test_pair_multiscan_triton(triton_kernel):
    """Two scans, one with the authors' pair along its own order, on the chunk kernels: the PyTorch result."""
    triton_kernel("chunk")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    h, w, prefix = 4, 5, 1
    L = prefix + h * w
    q, k, v, a, a2 = pair_inputs(1, 2, L, D=16, Dv=16, seed=13)
    orders = snake_orders(h, w, prefix)

    def both(fn, inputs):
        q, k, v, a, a2 = inputs
        decays = [paper_code_log_decays(a, order=orders[0]), a2]
        y = fn(q, k, v, decays, orders, chunk_size=16)
        return [y.detach().cpu()] + [g.cpu() for g in torch.autograd.grad(y.square().sum(), inputs)]
    ref = both(functools.partial(lion_attention_multiscan, backend="torch", form="chunk"), [q, k, v, a, a2])
    leaves = [t.detach().to(dev).requires_grad_() for t in (q, k, v, a, a2)]
    got = both(functools.partial(lion_attention_multiscan, backend="triton"), leaves)
    assert_all_close(got, ref)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kernel", ["chunk", "tile"])
def test_gpu_pair_bf16_against_float64(triton_kernel, kernel):
    """Real sizes in bf16 (D = 64, L = 197, the authors' LION-S pair): output and gradients within bf16 tolerance
    of the float64 PyTorch parallel form (relative Frobenius error < 2e-2)."""
    triton_kernel(kernel)
    from lion.ops.triton import TUNING
    TUNING.update(tile_fwd_blocks=None, tile_bwd_blocks=None)
    q, k, v, a, _ = pair_inputs(2, 4, 197, D=64, Dv=64, seed=1, low=-1.0)
    pair = paper_code_log_decays(a)
    ref = run(lambda q, k, v, f, b: lion_attention(q, k, v, (f, b), form="parallel", backend="torch"),
              [q, k, v, *pair], torch.ones(2, 4, 197, 64, dtype=torch.float64))
    leaves = [t.detach().cuda().bfloat16().requires_grad_() for t in (q, k, v)]
    leaves += [t.detach().cuda().float().requires_grad_() for t in pair]
    got = run(lambda q, k, v, f, b: lion_attention(q, k, v, (f, b), backend="triton"), leaves,
              torch.ones(2, 4, 197, 64, device="cuda"))
    for x, r in zip(got, ref):
        assert torch.isfinite(x).all()
        assert ((x.double().cpu() - r).norm() / r.norm()).item() < 2e-2
