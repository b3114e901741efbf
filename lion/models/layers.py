"""Building blocks shared by every model family: the LION mixer, its softmax twin, the MLP and the pre-norm block.

Shapes: x [B, L, C] with C = num_heads * head_dim; attention_mask [B, L], True/1 for real tokens.

    LionAttention     q, k, v projections -> feature map -> LION core (lion.ops) -> optional LayerNorm -> proj
    SoftmaxAttention  the same projections -> scaled_dot_product_attention -> proj
    Mlp               fc1 -> act -> drop -> fc2 -> drop
    Block             x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x)))

Parameter names follow timm's VisionTransformer (`qkv`, `proj`, `norm1`, `mlp.fc1`, ...), so a softmax twin with
learned position embeddings loads timm ViT weights. The decay parameters are `decay_logit` (LION-D, one logit
theta per scan and head: lambda = sigmoid(theta)) and `decay_proj` (LION-S, a `DecayGate` Linear from the layer
input to one logit per scan and head: lambda_i = sigmoid(w . x_i + b)).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from lion.ops import FORMS, BACKENDS, lion_attention, lion_attention_multiscan, snake_orders

DECAYS = ("none", "fixed", "selective")
FEATURE_MAPS = ("auto", "elu1", "silu_norm", "none")


def elu1(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1 > 0: the Linear Transformer's feature map (LION-LIT)."""
    return F.elu(x) + 1


def silu_norm(x: torch.Tensor) -> torch.Tensor:
    """Normalised shifted SiLU over the head dim: (silu(x) + 0.5) / ||silu(x) + 0.5||_2 (LION-D, LION-S).

    silu(x) >= -0.279, so every entry is positive and the norm never vanishes.
    """
    y = F.silu(x) + 0.5
    return y / y.norm(dim=-1, keepdim=True)


def _at_least_f32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def _identity(x):
    return x


_FEATURE_FNS = {"elu1": elu1, "silu_norm": silu_norm, "none": _identity}


def check_form(form, chunk_size, backend="auto", owner="set_form"):
    """Raise one ValueError naming the bad value and the allowed ones."""
    if form not in FORMS:
        raise ValueError(f"{owner}: form={form!r} is unknown; use one of {FORMS}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{owner}: chunk_size must be a positive integer, got {chunk_size!r}")
    if backend not in BACKENDS:
        raise ValueError(f"{owner}: backend={backend!r} is unknown; use one of {BACKENDS}")


def initial_decays(num_heads: int, horizon: Sequence[float] = (4.0, 256.0)) -> torch.Tensor:
    """Initial decay lambda_h per head, float64 [H], spread over the heads.

    The memory horizon 1 / (1 - lambda_h) (the number of tokens over which the mask falls by a factor e, roughly)
    is spaced geometrically from horizon[0] to horizon[1] across the heads, at the centres of H equal bins in log
    space: with the default (4, 256) a 3-head model starts at lambda = (0.875, 0.969, 0.992) and a 12-head
    model covers 0.79 ... 0.995, so some heads start local (a few patches) and some global (the whole 14 x 14 grid), as
    in RetNet's multi-scale decay. Every lambda stays learnable.
    """
    lo, hi = (float(h) for h in horizon)
    if not 1.0 < lo <= hi:
        raise ValueError(f"decay_horizon must be (lo, hi) with 1 < lo <= hi (in tokens), got {tuple(horizon)}")
    t = (torch.arange(num_heads, dtype=torch.float64, device="cpu") + 0.5) / num_heads
    return 1.0 - 1.0 / (lo * (hi / lo) ** t)


def initial_logits(num_heads: int, num_scans: int = 1, horizon: Sequence[float] = (4.0, 256.0)) -> torch.Tensor:
    """theta = logit(lambda) of `initial_decays`, repeated per scan: float64 [num_scans * num_heads]."""
    lam = initial_decays(num_heads, horizon)
    return (torch.log(lam) - torch.log1p(-lam)).repeat(num_scans)


@torch.no_grad()
def _write(param: torch.Tensor, value: torch.Tensor, copy_=None):
    if param.is_meta:
        return
    value = value.view_as(param).to(param.dtype)
    (copy_ or (lambda t, v: t.copy_(v)))(param, value)


class DecayGate(nn.Linear):
    """The LION-S gate: x [B, L, C] -> logits [B, L, num_scans * H]; lambda = sigmoid(logit).

    A Linear whose bias starts at the logits of `initial_decays`, so each head starts at its own decay and the
    weights make it depend on the token.
    """

    def __init__(self, dim: int, num_heads: int, num_scans: int = 1, horizon: Sequence[float] = (4.0, 256.0)):
        super().__init__(dim, num_scans * num_heads)
        self.num_heads, self.num_scans, self.horizon = num_heads, num_scans, tuple(horizon)
        self.reset_bias()

    def reset_bias(self, copy_=None):
        _write(self.bias, initial_logits(self.num_heads, self.num_scans, self.horizon), copy_)


class LionAttention(nn.Module):
    """LION bidirectional linear attention as a token mixer (SPEC section 3, multi-scan: section 4).

    Args:
        dim: model width C; num_heads: H (C must divide by H).
        decay: "none" (LION-LIT), "fixed" (LION-D: one learnable lambda_h = sigmoid(theta_h) per head) or
            "selective" (LION-S: lambda_ih = sigmoid(w_h . x_i + b_h) from the layer input x, in log space).
        num_scans: 1, or 2 for the natural variants (row and column snake over the patch grid, each scan with its
            own decay parameters; needs `grid_size` in forward or a square grid).
        feature_map: "elu1", "silu_norm", "none" or "auto" (elu1 for LIT, silu_norm for D and S, the paper's
            vision defaults).
        normalize: divide by the shared normaliser (True: the paper's vision code; its masked-LM code used False).
        scale: multiplier on q after the feature map; None means head_dim ** -0.5 (cancels when normalize=True).
        attn_norm: LayerNorm over C after attention, before the output projection (the paper's masked-LM LION-LIT).
        qkv_bias, proj_bias: biases of the projections. proj_drop: dropout after the output projection.
        form, chunk_size, backend: how the core computes (see `lion.ops.lion_attention`); change them later with
            `set_form` without touching the weights.
        decay_horizon: (lo, hi) memory horizons in tokens that set the initial decays, see `initial_decays`.
        norm_eps: epsilon of the attention LayerNorm.

    forward(x [B, L, C], attention_mask [B, L] | None, grid_size (h, w) | None, num_prefix_tokens) -> [B, L, C].
    """

    def __init__(self, dim: int, num_heads: int = 8, *, decay: str = "selective", num_scans: int = 1,
                 feature_map: str = "auto", normalize: bool = True, scale: float | None = None,
                 attn_norm: bool = False, qkv_bias: bool = True, proj_bias: bool = True, proj_drop: float = 0.0,
                 form: str = "auto", chunk_size: int = 64, backend: str = "auto",
                 decay_horizon: Sequence[float] = (4.0, 256.0), norm_eps: float = 1e-6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"LionAttention: dim={dim} must be divisible by num_heads={num_heads}")
        if decay not in DECAYS:
            raise ValueError(f"LionAttention: decay={decay!r} is unknown; use one of {DECAYS}")
        if num_scans not in (1, 2):
            raise ValueError(f"LionAttention: num_scans must be 1 or 2, got {num_scans!r}")
        if num_scans == 2 and decay == "none":
            raise ValueError("LionAttention: the two-scan variant needs a decay ('fixed' or 'selective'); without "
                             "decay every scan order gives the same mask, use num_scans=1")
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"LionAttention: feature_map={feature_map!r} is unknown; use one of {FEATURE_MAPS}")
        check_form(form, chunk_size, backend, owner="LionAttention")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.decay, self.num_scans = decay, num_scans
        self.feature_map = ("elu1" if decay == "none" else "silu_norm") if feature_map == "auto" else feature_map
        self.normalize = bool(normalize)
        self.scale = self.head_dim ** -0.5 if scale is None else float(scale)
        self.form, self.chunk_size, self.backend = form, chunk_size, backend
        self.decay_horizon = tuple(float(h) for h in decay_horizon)
        initial_decays(num_heads, self.decay_horizon)  # validate now, not at the first init

        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if decay == "fixed":
            self.decay_logit = nn.Parameter(torch.empty(num_scans, num_heads))
        elif decay == "selective":
            self.decay_proj = DecayGate(dim, num_heads, num_scans, self.decay_horizon)
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if attn_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self._orders = {}
        self.reset_decay_parameters()

    def extra_repr(self) -> str:
        return (f"heads={self.num_heads}, decay={self.decay}, scans={self.num_scans}, feature_map={self.feature_map}, "
                f"normalize={self.normalize}, scale={self.scale:.4g}, form={self.form}, chunk_size={self.chunk_size}")

    @torch.no_grad()
    def reset_decay_parameters(self, copy_=None):
        """Set the decay logits so lambda_h spreads over the heads (`initial_decays`); LION-S keeps its gate weights.

        `copy_(param, value)` writes a value (default: in place); Hugging Face passes its init-aware copy.
        """
        if self.decay == "fixed":
            _write(self.decay_logit, initial_logits(self.num_heads, self.num_scans, self.decay_horizon), copy_)
        elif self.decay == "selective":
            self.decay_proj.reset_bias(copy_)

    def set_form(self, form: str, chunk_size: int | None = None, backend: str | None = None):
        """Change how the core computes (outputs unchanged up to rounding). Returns self."""
        chunk_size = self.chunk_size if chunk_size is None else chunk_size
        backend = self.backend if backend is None else backend
        check_form(form, chunk_size, backend)
        self.form, self.chunk_size, self.backend = form, chunk_size, backend
        return self

    def log_decays(self, x: torch.Tensor) -> list:
        """One log-decay per scan: None (LIT), [H] (D) or [B, H, L] (S), in raster (input) order, in float32 (float64
        for a float64 model).

        The gate of LION-S is computed from x in float32 outside autocast (it is tiny: H outputs per token) and
        stays in the graph, so w and b train.
        """
        if self.decay == "none":
            return [None] * self.num_scans
        if self.decay == "fixed":
            return list(F.logsigmoid(_at_least_f32(self.decay_logit)).unbind(0))
        B, L, _ = x.shape
        with torch.autocast(x.device.type, enabled=False):
            w, b = self.decay_proj.weight, self.decay_proj.bias
            logits = F.linear(_at_least_f32(x), _at_least_f32(w), _at_least_f32(b))
        a = F.logsigmoid(logits).view(B, L, self.num_scans, self.num_heads)
        return list(a.permute(2, 0, 3, 1).unbind(0))  # num_scans x [B, H, L]

    def scan_orders(self, L: int, grid_size, num_prefix_tokens: int, device) -> list:
        """Row and column snake orders for an h x w grid after `num_prefix_tokens` tokens (cached per shape)."""
        if grid_size is None:
            side = math.isqrt(max(L - num_prefix_tokens, 0))
            if side * side != L - num_prefix_tokens:
                raise ValueError(f"LionAttention (two-scan): cannot infer the 2-D grid of {L} tokens with "
                                 f"{num_prefix_tokens} prefix tokens; pass grid_size=(h, w) to forward")
            grid_size = (side, side)
        h, w = (int(s) for s in grid_size)
        if num_prefix_tokens + h * w != L:
            raise ValueError(f"LionAttention (two-scan): grid_size={grid_size} with {num_prefix_tokens} prefix "
                             f"tokens needs L = {num_prefix_tokens + h * w} tokens, got L = {L}")
        key = (h, w, num_prefix_tokens, str(device))
        if key not in self._orders:
            self._orders[key] = snake_orders(h, w, num_prefix_tokens, device=device)
        return self._orders[key]

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, grid_size=None,
                num_prefix_tokens: int = 0) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        fmap = _FEATURE_FNS[self.feature_map]
        q, k = fmap(q) * self.scale, fmap(k)
        kw = dict(form=self.form, chunk_size=self.chunk_size, backend=self.backend, normalize=self.normalize,
                  attention_mask=attention_mask)
        log_decays = self.log_decays(x)
        if self.num_scans == 1:
            y = lion_attention(q, k, v, log_decays[0], **kw)
        else:
            orders = self.scan_orders(L, grid_size, num_prefix_tokens, x.device)
            y = lion_attention_multiscan(q, k, v, log_decays, orders, **kw)
        y = self.norm(y.transpose(1, 2).reshape(B, L, C))
        return self.proj_drop(self.proj(y))


class SoftmaxAttention(nn.Module):
    """Softmax attention (PyTorch SDPA) with the same projections as LionAttention: the twin of every LION model.

    forward(x [B, L, C], attention_mask [B, L] | None, **ignored) -> [B, L, C]; pad keys are masked out.
    """

    def __init__(self, dim: int, num_heads: int = 8, *, qkv_bias: bool = True, proj_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SoftmaxAttention: dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.attn_drop = float(attn_drop)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, attn_drop={self.attn_drop}"

    def set_form(self, form: str, chunk_size: int | None = None, backend: str | None = None):
        """Softmax attention has one form; the arguments are validated and otherwise ignored. Returns self."""
        check_form(form, 1 if chunk_size is None else chunk_size, backend or "auto")
        return self

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, grid_size=None,
                num_prefix_tokens: int = 0) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if attention_mask is None else attention_mask.to(torch.bool)[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(B, L, C)))


class Mlp(nn.Module):
    """Two-layer MLP: [..., C] -> [..., hidden] -> [..., out]."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer=nn.GELU, drop: float = 0.0, bias: bool = True):
        super().__init__()
        hidden_features, out_features = hidden_features or in_features, out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block around a given token mixer `attn` (LionAttention or SoftmaxAttention).

    The MLP is dim -> mlp_hidden (default int(dim * mlp_ratio)) -> dim.

    forward(x [B, L, C], attention_mask, **mixer_kwargs (grid_size, num_prefix_tokens)) -> [B, L, C].
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, norm_layer=nn.LayerNorm, act_layer=nn.GELU, mlp_hidden: int | None = None):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, mlp_hidden or int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, **mixer_kwargs) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), attention_mask, **mixer_kwargs))
        return x + self.drop_path2(self.mlp(self.norm2(x)))
