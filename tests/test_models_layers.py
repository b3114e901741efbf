"""LionAttention, SoftmaxAttention and the registry, against references written here from docs/MATH.md (float64)."""
import math

import pytest
import torch
import torch.nn.functional as F

from lion.models import ATTENTIONS, Encoder, LionAttention, SoftmaxAttention, build_attention, decay_parameter_names
from lion.models.layers import Block, initial_decays, silu_norm

LION_NAMES = [n for n in ATTENTIONS if n != "softmax"]


def snake_reference(h, w, prefix):
    """Scan orders written out by hand: row snake and column snake over an h x w raster, prefix tokens first."""
    rows = [r * w + (c if r % 2 == 0 else w - 1 - c) for r in range(h) for c in range(w)]
    cols = [(r if c % 2 == 0 else h - 1 - r) * w + c for c in range(w) for r in range(h)]
    return [list(range(prefix)) + [prefix + i for i in o] for o in (rows, cols)]


def mask_in_raster(lam, order):
    """M (docs/MATH.md section 1) for one scan: lam [B, H, L] in raster order, order[p] = raster index at scan position p.
    M_ij = prod of lam over the scan positions strictly after min(pos_i, pos_j) up to max(pos_i, pos_j)."""
    B, H, L = lam.shape
    order = torch.tensor(order)
    c = torch.cumsum(torch.log(lam[..., order]), dim=-1)  # in scan order
    ms = torch.exp(-(c[..., :, None] - c[..., None, :]).abs())
    m = torch.empty_like(ms)
    m[..., order[:, None], order[None, :]] = ms
    return m


def reference_lion(layer: LionAttention, x, attention_mask=None, grid=None, prefix=0, scale=None):
    """The layer's function from docs/MATH.md section 1, 3, 4, in float64 with explicit masks (scale None: 1 / sqrt(D))."""
    x = x.double()
    B, L, C = x.shape
    H, D = layer.num_heads, C // layer.num_heads
    W, b = layer.qkv.weight.double(), layer.qkv.bias.double()
    q, k, v = (x @ W.T + b).view(B, L, 3, H, D).permute(2, 0, 3, 1, 4)
    if layer.feature_map == "elu1":
        fm = lambda t: torch.where(t > 0, t + 1, torch.exp(t))  # noqa: E731
    elif layer.feature_map == "silu_norm":
        def fm(t):
            s = t / (1 + torch.exp(-t)) + 0.5
            return s / torch.sqrt((s * s).sum(-1, keepdim=True))
    else:
        fm = lambda t: t  # noqa: E731
    q, k = fm(q) * (1 / math.sqrt(D) if scale is None else scale), fm(k)
    S = layer.num_scans
    if layer.decay == "none":
        lams = [torch.ones(B, H, L, dtype=torch.float64)]
    elif layer.decay == "fixed":
        lams = [torch.sigmoid(layer.decay_logit.double()[s])[None, :, None].expand(B, H, L) for s in range(S)]
    else:
        g = torch.sigmoid(x @ layer.decay_proj.weight.double().T + layer.decay_proj.bias.double())  # [B, L, S*H]
        lams = [g[..., s * H:(s + 1) * H].permute(0, 2, 1) for s in range(S)]
    if attention_mask is not None:
        real = attention_mask.bool()
        k, v = k * real[:, None, :, None], v * real[:, None, :, None]
        lams = [torch.where(real[:, None, :], lam, torch.ones_like(lam)) for lam in lams]
    if S == 1:
        M = mask_in_raster(lams[0], list(range(L)))
    else:
        M = sum(mask_in_raster(lam, o) for lam, o in zip(lams, snake_reference(*grid, prefix))) / S
    A = (q @ k.transpose(-1, -2)) * M
    y = A @ v
    if layer.normalize:
        y = y / A.sum(-1, keepdim=True)
    y = y.transpose(1, 2).reshape(B, L, C)
    if isinstance(layer.norm, torch.nn.LayerNorm):
        y = F.layer_norm(y, (C,), layer.norm.weight.double(), layer.norm.bias.double(), layer.norm.eps)
    return y @ layer.proj.weight.double().T + layer.proj.bias.double()


def _randomise(layer):
    """Move every parameter off its initial value, so the reference sees non-trivial weights and decays."""
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return layer


@pytest.mark.parametrize("name", LION_NAMES)
@pytest.mark.parametrize("opts", [dict(), dict(feature_map="none", normalize=False, attn_norm=True),
                                  dict(feature_map="elu1", scale=0.5)])
def test_lion_layer_matches_reference(name, opts):
    torch.manual_seed(0)
    h, w, prefix, C = 3, 4, 1, 16
    L = prefix + h * w
    layer = _randomise(build_attention(name, C, 2, **opts)).double()
    x = torch.randn(2, L, C, dtype=torch.float64)
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[1, 9:] = False
    for m in (None, mask):
        y = layer(x, m, grid_size=(h, w), num_prefix_tokens=prefix)
        ref = reference_lion(layer, x, m, (h, w), prefix, scale=opts.get("scale"))
        real = torch.ones_like(mask) if m is None else m
        torch.testing.assert_close(y[real], ref[real], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", LION_NAMES)
def test_forms_agree_and_set_form(name):
    torch.manual_seed(1)
    layer = _randomise(build_attention(name, 32, 4, form="parallel"))
    x = torch.randn(2, 1 + 5 * 5, 32)
    mask = torch.ones(2, 26, dtype=torch.bool)
    mask[0, 20:] = False
    kw = dict(grid_size=(5, 5), num_prefix_tokens=1)
    ref = layer(x, mask, **kw)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    for form, chunk in [("chunk", 1), ("chunk", 7), ("chunk", 64), ("recurrent", None), ("auto", None)]:
        assert layer.set_form(form, chunk) is layer
        assert layer.form == form
        y = layer(x, mask, **kw)
        torch.testing.assert_close(y[mask], ref[mask], rtol=1e-5, atol=1e-5)
    assert all(torch.equal(v, layer.state_dict()[k]) for k, v in state.items())
    fresh = build_attention(name, 32, 4, form="recurrent")
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x, mask, **kw)[mask], ref[mask], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lion-s", "lion-s-ms"])
def test_selective_gate_receives_gradients(name):
    """The paper's code detached the LION-S gate; here w and b must train."""
    torch.manual_seed(2)
    layer = build_attention(name, 16, 2)
    x = torch.randn(2, 9, 16)
    layer(x, grid_size=(3, 3)).pow(2).sum().backward()
    for p in (layer.decay_proj.weight, layer.decay_proj.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the gradient of b is the one a finite difference gives (float64)
    layer = layer.double()
    x = x.double()
    layer.zero_grad()
    layer(x, grid_size=(3, 3)).pow(2).sum().backward()
    b = layer.decay_proj.bias
    eps = 1e-6
    with torch.no_grad():
        b[0] += eps
        up = layer(x, grid_size=(3, 3)).pow(2).sum()
        b[0] -= 2 * eps
        down = layer(x, grid_size=(3, 3)).pow(2).sum()
        b[0] += eps
    assert abs(b.grad[0].item() - (up - down).item() / (2 * eps)) < 1e-5 * max(1.0, abs(b.grad[0].item()))


def test_fixed_decay_receives_gradients():
    layer = build_attention("lion-d-ms", 16, 2)
    layer(torch.randn(1, 16, 16)).sum().backward()
    assert layer.decay_logit.grad.shape == (2, 2) and (layer.decay_logit.grad != 0).all()


def test_initial_decays_spread_over_heads():
    for H in (1, 3, 12):
        lam = initial_decays(H)
        horizon = 1 / (1 - lam)
        assert lam.shape == (H,) and (lam > 0).all() and (lam < 1).all()
        assert (horizon >= 4 - 1e-9).all() and (horizon <= 256 + 1e-9).all()
        if H > 1:  # geometric spacing: constant ratio of horizons
            r = horizon[1:] / horizon[:-1]
            torch.testing.assert_close(r, torch.full_like(r, 64 ** (1 / H)))
    layer = build_attention("lion-d", 24, 3)
    torch.testing.assert_close(torch.sigmoid(layer.decay_logit.double()[0]), initial_decays(3), rtol=1e-6, atol=0)
    layer = build_attention("lion-s-ms", 24, 3)
    torch.testing.assert_close(torch.sigmoid(layer.decay_proj.bias.double()), initial_decays(3).repeat(2),
                               rtol=1e-6, atol=0)


def test_feature_map_defaults():
    assert build_attention("lion-lit", 8, 2).feature_map == "elu1"
    assert build_attention("lion-d", 8, 2).feature_map == "silu_norm"
    assert build_attention("lion-s-ms", 8, 2).feature_map == "silu_norm"
    assert build_attention("lion-s", 8, 2, feature_map="none").feature_map == "none"


def test_softmax_matches_reference_with_padding():
    torch.manual_seed(3)
    layer = build_attention("softmax", 16, 2, form="chunk", chunk_size=8, feature_map="elu1")  # LION options ignored
    assert isinstance(layer, SoftmaxAttention)
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    layer = layer.double()
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool)
    q, k, v = (x @ layer.qkv.weight.T + layer.qkv.bias).view(2, 7, 3, 2, 8).permute(2, 0, 3, 1, 4)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(8)
    s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    ref = (s.softmax(-1) @ v).transpose(1, 2).reshape(2, 7, 16) @ layer.proj.weight.T + layer.proj.bias
    torch.testing.assert_close(layer(x, mask), ref)


def test_registry_errors_and_names():
    with pytest.raises(ValueError, match="unknown attention"):
        build_attention("lion-x", 8, 2)
    with pytest.raises(TypeError, match="unknown option"):
        build_attention("lion-s", 8, 2, chunk=4)
    with pytest.raises(ValueError, match="divisible"):
        build_attention("lion-s", 10, 3)
    with pytest.raises(ValueError, match="form"):
        build_attention("lion-d", 8, 2, form="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        build_attention("lion-d", 8, 2).set_form("chunk", 0)
    with pytest.raises(ValueError, match="grid_size"):
        build_attention("lion-d-ms", 8, 2)(torch.randn(1, 10, 8))  # 10 tokens: no square grid
    assert build_attention("LION_S_MS", 8, 2).num_scans == 2
    with pytest.raises(ValueError, match="two-scan"):
        LionAttention(8, 2, decay="none", num_scans=2)


def test_encoder_set_form_and_decay_names():
    enc = Encoder(16, 2, 2, "lion-s-ms", drop_path_rate=0.1)
    names = decay_parameter_names(enc)
    assert names == {f"blocks.{i}.attn.decay_proj.{p}" for i in range(2) for p in ("weight", "bias")}
    enc.set_form("recurrent", 4)
    assert all(b.attn.form == "recurrent" and b.attn.chunk_size == 4 for b in enc.blocks)
    twin = Encoder(16, 2, 2, "softmax", form="chunk")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(enc) - n(twin) == 2 * (16 + 1) * 2 * 2  # depth x (C + 1) x H x scans


def test_selective_gate_runs_in_float32_under_autocast():
    layer = build_attention("lion-s", 16, 2)
    x = torch.randn(2, 9, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = layer.log_decays(x)[0]
        y = layer(x)
    assert a.dtype == torch.float32 and y.dtype == torch.bfloat16 and torch.isfinite(y).all()


# ------------------------------------------------------------------------------------------------- paper options
def _symmetric_mask(a: torch.Tensor) -> torch.Tensor:
    """Literal docs/MATH.md mask of one [L] log-decay: exp(sum of a over (min(i,j), max(i,j)])."""
    L = a.shape[0]
    M = torch.ones(L, L, dtype=torch.float64)
    for i in range(L):
        for j in range(L):
            lo, hi = min(i, j), max(i, j)
            M[i, j] = torch.exp(a[lo + 1:hi + 1].sum())
    return M


@pytest.mark.parametrize("decay,normalize", [("selective", True), ("selective", False), ("fixed", True),
                                             ("none", False)])
def test_score_dropout_drops_the_masked_scores_in_training(decay, normalize):
    """y = dropout(A / A 1) V (or dropout(A) V) with the same dropout draw as a literal computation."""
    torch.manual_seed(0)
    layer = LionAttention(8, 2, decay=decay, score_dropout=0.4, normalize=normalize, feature_map="silu_norm")
    layer = layer.double().train()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    torch.manual_seed(7)
    y = layer(x, mask)
    B, L, C = x.shape
    q, k, v = layer.qkv(x).view(B, L, 3, 2, 4).permute(2, 0, 3, 1, 4)
    q, k = silu_norm(q) * layer.scale, silu_norm(k)
    a = layer.log_decays(x)[0]
    a = (torch.zeros(B, 2, L, dtype=torch.float64) if a is None else a if a.dim() == 3
         else a[None, :, None].expand(B, 2, L))
    keep = mask.to(torch.float64)
    A = torch.zeros(B, 2, L, L, dtype=torch.float64)
    for b in range(B):
        for h in range(2):
            A[b, h] = (q[b, h] @ k[b, h].t()) * _symmetric_mask(a[b, h]) * keep[b][None, :]
    torch.manual_seed(7)
    drop = torch.nn.functional.dropout(torch.ones_like(A), 0.4)
    num = (A * drop) @ (v * keep[:, None, :, None])
    ref = num / A.sum(-1, keepdim=True) if normalize else num
    ref = layer.proj(ref.transpose(1, 2).reshape(B, L, C))
    assert torch.allclose(y[mask.bool()], ref[mask.bool()], atol=1e-12)
    assert not torch.allclose(y, layer.eval()(x, mask))  # it did drop something
    # eval: dropout is the identity, every form gives the undropped output
    base = layer.eval()(x, mask)
    for form in ("chunk", "recurrent"):
        assert torch.allclose(layer.set_form(form, chunk_size=4)(x, mask)[mask.bool()], base[mask.bool()],
                              atol=1e-12)


def test_score_dropout_needs_the_parallel_form_in_training():
    layer = LionAttention(8, 2, decay="fixed", score_dropout=0.1, form="chunk").train()
    with pytest.raises(ValueError, match="score_dropout=0.1.*parallel form.*form='chunk'"):
        layer(torch.randn(1, 5, 8))
    layer.set_form("auto")(torch.randn(1, 5, 8)).sum().backward()  # auto trains in the parallel form
    assert layer.decay_logit.grad is not None
    two = LionAttention(8, 2, decay="fixed", num_scans=2, score_dropout=0.1).train()
    y = two(torch.randn(1, 5, 8), grid_size=(2, 2), num_prefix_tokens=1)
    assert y.shape == (1, 5, 8) and torch.isfinite(y).all()


def test_post_norm_block_and_mlp_without_inner_dropout():
    torch.manual_seed(0)
    attn = LionAttention(8, 2, decay="fixed")
    blk = Block(8, attn, mlp_ratio=2.0, drop=0.5, post_norm=True, mlp_inner_dropout=False).eval()
    x = torch.randn(2, 5, 8)
    h = blk.norm1(x + attn(x))
    assert torch.allclose(blk(x), blk.norm2(h + blk.mlp(h)), atol=1e-6)
    assert blk.mlp.drop1.p == 0.0 and blk.mlp.drop2.p == 0.5
    pre = Block(8, attn, mlp_ratio=2.0).eval()
    assert set(dict(pre.named_parameters())) == set(dict(blk.named_parameters()))  # same weights, other wiring


def test_new_mixer_options_are_checked():
    for kw, msg in ((dict(gate="tanh"), "gate='tanh'"), (dict(selective_mask="x"), "selective_mask='x'"),
                    (dict(decay_init="zero"), "decay_init='zero'"), (dict(score_dropout=1.0), "score_dropout"),
                    (dict(denominator_eps=-1.0), "denominator_eps")):
        with pytest.raises(ValueError, match=msg):
            LionAttention(8, 2, **kw)


@pytest.mark.parametrize("name", ["elu1", "silu_norm"])
@pytest.mark.parametrize("scale", [1.0, 0.125])
def test_feature_map_matches_its_definition_and_gradcheck(name, scale):
    """The memory-lean feature map (keeps only its input for backward) equals scale * phi(x) and its gradient is
    exact (float64 gradcheck, both signs of x)."""
    from lion.models.layers import _FEATURE_FNS, feature_map
    x = (torch.randn(2, 3, 5, 4, dtype=torch.float64) * 2).requires_grad_()
    torch.testing.assert_close(feature_map(x, name, scale), _FEATURE_FNS[name](x) * scale, rtol=1e-14, atol=1e-14)
    assert torch.autograd.gradcheck(lambda t: feature_map(t, name, scale), (x,))
